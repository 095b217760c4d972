"""Offline simulator of CMD-format 2D multifield maps: log-normal matter in a 25 Mpc/h box plus baryonic responses.

Each simulation is a periodic (25 Mpc/h)^3 box on an N^3 grid (N = map size):

1. **Matter.** A field with a log-normal one-point PDF and the HMcode-2020 (dark matter only) P(k) of
   (Omega_m, sigma_8) from CAMB (:mod:`cosmobench.multifield.power`): the classic log-normal construction gives
   phases and cell ranks, then iterative amplitude-adjusted Fourier transforms match the box's power to a Gaussian
   realisation of P(k) while keeping the PDF (:func:`lognormal_density`). The mean density is Omega_m rho_crit, so
   the projected total mass carries Omega_m as in the real maps.
2. **Baryons** (hydro suites only), per grid cell, with the cosmic baryon fraction f_b = Omega_b / Omega_m:
   a fraction f_ej = f_max A_AGN1^a A_SN1^b / (1 + (Delta_h / (1 + delta))^p) of the gas in halo-like cells is
   ejected and redistributed by a Gaussian kernel of radius R = R_0 A_AGN2^c A_SN2^d (mass conserving); a
   fraction kappa of the dark matter follows it (adiabatic relaxation), which suppresses the total-matter power on
   small scales as feedback does in CAMELS; stars form a fraction eps A_SN1^e A_AGN1^g of the gas in cells denser
   than Delta_* (zero elsewhere, so Mstar maps have zeros); temperature is a photo-heated IGM T_0 Delta_g^0.55 plus
   virial heating in halo cells plus feedback heating proportional to the ejected gas; HI is optically thin
   photo-ionisation equilibrium plus a self-shielded fraction in star-forming cells, destroyed by feedback
   heating; metals are a yield times the stars, partly carried out by winds of radius R_Z A_SN2^h.
3. **Maps.** 15 maps per simulation as in CMD: 3 projection axes x 5 slabs of 5 Mpc/h (cells split exactly by
   their overlap with each slab). Mass fields are surface densities in (Msun/h)/(Mpc/h)^2; T and Z are
   mass-weighted along the line of sight (K, dimensionless); P = rho_gas k_B T / (mu m_p) is volume-weighted, in
   h^2 Msun (km/s)^2 / kpc^3.

Suites differ in their response laws (coefficients in the literal registry :data:`SUITES`, inspired by the
feedback models of IllustrisTNG, SIMBA and Astrid; only the fraction of gas moved beyond 1 Mpc at the fiducial
parameters, ~40 % in SIMBA and ~10 % in IllustrisTNG and Astrid, and the signs of its A_AGN1 and A_SN1 responses are
calibrated to CAMELS, Gebhardt et al. 2024: :func:`baryon_spread`); ``Nbody_*`` suites are the
gravity-only twins with the same initial conditions and parameters as their hydro twin (Mtot only). Parameters
are a Latin hypercube over each suite's prior, uniform in Omega_m and sigma_8, log-uniform in the astrophysical
parameters. Limits: log-normal statistics (no filaments, no halo profiles, no velocities), grid resolution equal
to the map resolution, sub-grid baryon physics replaced by density-dependent recipes; see docs/multifield.md.
"""

from __future__ import annotations

import functools
import shutil
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from ..core.executor import map_tasks
from ..core.io import atomic_path, read_json, write_json
from ..core.seeds import rng
from .cmd import _ASTRID_BOX, _CMD_BOX, LOG_PARAMS, MAPS_PER_SIM, map_path, params_path
from .power import CMD_FIXED, PowerTable

__all__ = [
    "BOX",
    "SLAB",
    "SIM_FIELDS",
    "Response",
    "Suite",
    "SUITES",
    "get_suite",
    "latin_hypercube",
    "lognormal_values",
    "lognormal_density",
    "project",
    "baryonic_fields",
    "baryon_spread",
    "simulate_sim",
    "simulate_suite",
]

BOX = 25.0  #: box side, Mpc/h
SLAB = 5.0  #: slab depth, Mpc/h
N_SLABS = 5
RHO_CRIT = 2.77536627e11  #: critical density, (Msun/h) / (Mpc/h)^3
#: Fields the simulator makes for hydro suites (N-body suites: Mtot only).
SIM_FIELDS = ("Mtot", "Mcdm", "Mgas", "Mstar", "HI", "T", "P", "Z")
_KB_OVER_MUMP = 1.380649e-23 / (0.59 * 1.67262192e-27) / 1e6  # (km/s)^2 per K, fully ionised gas (mu = 0.59)
_X_H = 0.76  # hydrogen mass fraction
_T_IGM, _GAMMA_IGM = 5.0e3, 1.55  # z = 0 photo-heated IGM: T = T_0 Delta^(gamma - 1)
_YIELD, _Z_FLOOR = 0.02, 1.0e-5  # metal yield per stellar mass, pre-enrichment floor
SPREAD_DISTANCE = CMD_FIXED["h"]  #: 1 Mpc in Mpc/h, the distance of Gebhardt et al.'s (2024) baryon spread


@dataclass(frozen=True, kw_only=True)
class Response:
    """Coefficients of one suite's baryonic response law (all at A = 1; exponents of the A parameters).

    Attributes
    ----------
    eject_max, eject_agn1, eject_sn1 : float
        Ejected gas fraction in halo cells: eject_max * A_AGN1^eject_agn1 * A_SN1^eject_sn1 (capped at 0.9).
    halo_delta, halo_slope : float
        Halo indicator 1 / (1 + (halo_delta / (1 + delta))^halo_slope).
    radius, radius_agn2, radius_sn2 : float
        Ejection radius radius * A_AGN2^radius_agn2 * A_SN2^radius_sn2, Mpc/h (clipped to [0.05, 6]).
    dm_coupling : float
        Fraction of the dark matter of a cell displaced in proportion to its ejected gas.
    star_eff, star_sn1, star_agn1, star_delta : float
        Stellar fraction of the gas, star_eff * A_SN1^star_sn1 * A_AGN1^star_agn1 (capped at 0.9), ramping from 0
        at 1 + delta = star_delta to full at 3 star_delta.
    virial_temp : float
        Virial temperature of halo cells at 1 + delta = halo_delta, K (scales as (1 + delta)^(2/3)).
    heat_temp, heat_agn1, heat_sn1 : float
        Feedback temperature of the ejected gas, heat_temp * A_AGN1^heat_agn1 * A_SN1^heat_sn1, K.
    hi_shielded : float
        Neutral fraction of the gas in star-forming cells without feedback heating.
    wind_metals, metal_radius, metal_sn2 : float
        Fraction of metals carried by winds and their radius metal_radius * A_SN2^metal_sn2, Mpc/h.
    """

    eject_max: float
    eject_agn1: float
    eject_sn1: float
    halo_delta: float
    halo_slope: float
    radius: float
    radius_agn2: float
    radius_sn2: float
    dm_coupling: float
    star_eff: float
    star_sn1: float
    star_agn1: float
    star_delta: float
    virial_temp: float
    heat_temp: float
    heat_agn1: float
    heat_sn1: float
    hi_shielded: float
    wind_metals: float
    metal_radius: float
    metal_sn2: float


@dataclass(frozen=True, kw_only=True)
class Suite:
    """A simulated suite: prior box, response law (``None`` = gravity only) and initial-condition stream."""

    name: str
    priors: tuple[tuple[float, float], ...]
    response: Response | None
    ics: str

    @property
    def fields(self) -> tuple[str, ...]:
        return SIM_FIELDS if self.response is not None else ("Mtot",)


_TNG = Response(  # kinetic AGN winds at low accretion: moderate ejection over ~0.7 Mpc/h
    eject_max=0.237,
    eject_agn1=0.35,
    eject_sn1=-0.15,
    halo_delta=30.0,
    halo_slope=2.0,
    radius=0.7,
    radius_agn2=-0.25,
    radius_sn2=0.35,
    dm_coupling=0.2,
    star_eff=0.10,
    star_sn1=-0.5,
    star_agn1=-0.15,
    star_delta=30.0,
    virial_temp=3.0e5,
    heat_temp=3.0e6,
    heat_agn1=0.5,
    heat_sn1=0.2,
    hi_shielded=0.2,
    wind_metals=0.4,
    metal_radius=0.5,
    metal_sn2=0.6,
)
_SIMBA = Response(  # bipolar jets in massive haloes: strong ejection over Mpc scales, speed set by A_AGN2
    eject_max=0.64,
    eject_agn1=0.25,
    eject_sn1=-0.2,
    halo_delta=10.0,
    halo_slope=3.0,
    radius=1.0,
    radius_agn2=0.6,
    radius_sn2=0.2,
    dm_coupling=0.15,
    star_eff=0.08,
    star_sn1=-0.7,
    star_agn1=-0.3,
    star_delta=50.0,
    virial_temp=6.5e4,
    heat_temp=1.0e7,
    heat_agn1=0.3,
    heat_sn1=0.1,
    hi_shielded=0.3,
    wind_metals=0.6,
    metal_radius=0.8,
    metal_sn2=0.4,
)
_ASTRID = Response(  # weak AGN effect on matter, strong SN winds
    eject_max=0.333,
    eject_agn1=0.2,
    eject_sn1=0.35,
    halo_delta=20.0,
    halo_slope=1.5,
    radius=0.45,
    radius_agn2=0.4,
    radius_sn2=0.5,
    dm_coupling=0.1,
    star_eff=0.15,
    star_sn1=-0.4,
    star_agn1=-0.1,
    star_delta=20.0,
    virial_temp=3.0e5,
    heat_temp=2.0e6,
    heat_agn1=0.3,
    heat_sn1=0.4,
    hi_shielded=0.15,
    wind_metals=0.5,
    metal_radius=0.3,
    metal_sn2=0.8,
)

#: The simulated suites. Add one with a new :class:`Response`; ``ics`` names the stream of initial conditions and
#: parameters, shared by a hydro suite and its N-body twin.
SUITES: dict[str, Suite] = {
    "TNGlike": Suite(name="TNGlike", priors=_CMD_BOX, response=_TNG, ics="TNGlike"),
    "SIMBAlike": Suite(name="SIMBAlike", priors=_CMD_BOX, response=_SIMBA, ics="SIMBAlike"),
    "Astridlike": Suite(name="Astridlike", priors=_ASTRID_BOX, response=_ASTRID, ics="Astridlike"),
    "Nbody_TNGlike": Suite(name="Nbody_TNGlike", priors=_CMD_BOX, response=None, ics="TNGlike"),
    "Nbody_SIMBAlike": Suite(name="Nbody_SIMBAlike", priors=_CMD_BOX, response=None, ics="SIMBAlike"),
    "Nbody_Astridlike": Suite(name="Nbody_Astridlike", priors=_ASTRID_BOX, response=None, ics="Astridlike"),
}


def get_suite(name: str) -> Suite:
    """The registered suite ``name``; unknown names raise ``ValueError`` listing the valid ones."""
    if name not in SUITES:
        raise ValueError(f"unknown simulated suite {name!r}; expected one of {sorted(SUITES)}")
    return SUITES[name]


def latin_hypercube(n: int, priors: Sequence[Sequence[float]], generator: np.random.Generator) -> np.ndarray:
    """``n`` Latin-hypercube points in a prior box, shape (n, 6).

    Each parameter has exactly one point in each of ``n`` equal-probability strata; Omega_m and sigma_8 are
    uniform, the astrophysical parameters log-uniform (``LOG_PARAMS``).
    """
    priors = np.asarray(priors, dtype=np.float64)
    u = (
        np.stack([generator.permutation(n) for _ in range(len(priors))], axis=1) + generator.random((n, len(priors)))
    ) / n
    lo, hi = priors[:, 0], priors[:, 1]
    log = np.asarray(LOG_PARAMS)
    return np.where(log, lo * (hi / lo) ** u, lo + (hi - lo) * u)


@functools.lru_cache(maxsize=4)
def _kgrid(n: int, box: float) -> np.ndarray:
    """|k| on the rfft grid of an n^3 box, h/Mpc, shape (n, n, n // 2 + 1)."""
    k = 2 * np.pi * np.fft.fftfreq(n, d=box / n)
    kz = 2 * np.pi * np.fft.rfftfreq(n, d=box / n)
    return np.sqrt(k[:, None, None] ** 2 + k[None, :, None] ** 2 + kz[None, None, :] ** 2)


@functools.lru_cache(maxsize=4)
def _normal_quantiles(cells: int) -> np.ndarray:
    """Stratified standard-normal sample Phi^-1((i + 1/2) / cells), i = 0 ... cells - 1, increasing."""
    from scipy import special

    return special.ndtri((np.arange(cells) + 0.5) / cells)


def lognormal_values(variance: float, cells: int) -> np.ndarray:
    """The ``cells`` stratified quantiles of a log-normal of mean 1 whose *sample* variance is ``variance``.

    Values exp(s nu_i) / mean, nu_i the stratified normal quantiles, with s solved so that the variance of the
    ``cells`` values (not of the continuous distribution) is ``variance``; a box then carries its target variance
    exactly instead of in expectation (the upper tail of a log-normal with ln(1 + variance) ~ 5-6 is not sampled by
    a 64^3 grid, which is why a plain log-normal realisation falls short of its P(k); docs/multifield.md).

    Returns
    -------
    ndarray, shape (cells,), increasing, mean exactly 1.
    """
    from scipy import optimize

    nu = _normal_quantiles(cells)

    def excess(s: float) -> float:
        x = np.exp(s * (nu - nu[-1]))  # shifted by the largest exponent: no overflow
        return np.log(np.mean(x**2) / np.mean(x) ** 2) - np.log1p(variance)

    s = optimize.brentq(excess, 1e-6, 20.0, xtol=1e-8)
    x = np.exp(s * (nu - nu[-1]))
    return x / x.mean()


def lognormal_density(
    pk: np.ndarray, n: int, generator: np.random.Generator, *, box: float = BOX, iterations: int = 10, workers: int = 1
) -> np.ndarray:
    """One realisation of 1 + delta on an n^3 periodic grid with a log-normal one-point PDF and power spectrum ``pk``.

    A log-normal field (Coles & Jones 1991) whose variance is that of a 0.4 Mpc/h cell under HMcode (150-680 at
    64^3) has its power in a tail that one box does not sample: a realisation carries 0.2-0.9 of its target P(k),
    less at larger sigma_8. Here the field is built in two steps instead:

    1. the classic log-normal construction (xi_G = ln(1 + xi), a Gaussian G with P_G = FT[xi_G], negative modes
       clipped) gives the phases and the ranks of the cells;
    2. iterative amplitude-adjusted Fourier transform (IAAFT, Schreiber & Schmitz 1996, Phys. Rev. Lett. 77, 635):
       alternately set the Fourier amplitudes to those of a Gaussian realisation of ``pk`` drawn from the same white
       noise (|W_k| sqrt(P(k) N^3 / V), so the box keeps the cosmic variance of its initial conditions) and rank-map
       the cells onto :func:`lognormal_values` with the grid variance of ``pk``; after each rank map the amplitudes
       are corrected shell by shell (|k| rounded to the fundamental mode) by the ratio of target to realised power,
       so the rank map's whitening is compensated. The field ends on a rank map: positive, log-normal one-point
       PDF, mean exactly 1; its shell power is that of the Gaussian realisation within a few per cent above
       |k| ~ 1 h/Mpc and within 10-20 % in the few-mode shells below (measured at 64^3, 10 iterations).

    Parameters
    ----------
    pk : ndarray, shape (n, n, n // 2 + 1)
        Target P(|k|) of delta on the rfft grid, (Mpc/h)^3 (the k = 0 entry is ignored).
    n : int
    generator : numpy Generator
    box : float
        Box side, Mpc/h.
    iterations : int
        IAAFT iterations (0: rank-mapped log-normal without spectral matching).

    Returns
    -------
    ndarray, shape (n, n, n), float64, positive, mean exactly 1.
    """
    from scipy import fft

    volume, cells = box**3, n**3
    pk = np.array(pk, dtype=np.float64)
    pk[0, 0, 0] = 0.0
    half = np.ones(pk.shape)  # rfft half-space: conjugate pairs count twice
    half[..., 1 : (n + 1) // 2] = 2.0
    values = lognormal_values(float(np.sum(half * pk)) / volume, cells)
    xi = fft.irfftn(pk, s=(n, n, n), workers=workers) * cells / volume
    pk_g = np.maximum(fft.rfftn(np.log1p(np.maximum(xi, -0.99)), workers=workers).real * volume / cells, 0.0)
    pk_g[0, 0, 0] = 0.0
    white = fft.rfftn(generator.standard_normal((n, n, n)), workers=workers)
    field = fft.irfftn(white * np.sqrt(pk_g * cells / volume), s=(n, n, n), workers=workers)

    def rank_map(x: np.ndarray) -> np.ndarray:
        out = np.empty(cells)
        out[np.argsort(x, axis=None)] = values
        return out.reshape(n, n, n)

    density = rank_map(field)
    amplitude = np.abs(white) * np.sqrt(pk * cells / volume)
    shell = np.rint(_kgrid(n, box) * box / (2 * np.pi)).astype(np.intp).ravel()
    target = np.bincount(shell, (half * amplitude**2).ravel())
    gain = np.ones_like(target)
    for it in range(iterations):
        f = fft.rfftn(density, workers=workers)
        if it:
            realised = np.bincount(shell, (half * np.abs(f) ** 2).ravel(), minlength=len(target))
            gain *= np.sqrt(np.divide(target, realised, out=np.ones_like(target), where=realised > 0))
        f *= amplitude * gain[shell].reshape(f.shape) / np.maximum(np.abs(f), 1e-300)  # target amplitude, same phase
        f[0, 0, 0] = cells
        density = rank_map(fft.irfftn(f, s=(n, n, n), workers=workers))
    return density


def _smooth(field: np.ndarray, radius: float, box: float = BOX, workers: int = 1) -> np.ndarray:
    """Periodic 3-D Gaussian smoothing with standard deviation ``radius`` Mpc/h.

    The kernel is sampled in real space (periodic distances) and normalised to unit sum, so the result is positive
    and conserves mass exactly even when ``radius`` is below the cell size (a Fourier-space Gaussian truncated at
    the Nyquist frequency would ring and go negative).
    """
    from scipy import fft

    n = field.shape[0]
    x = np.minimum(np.arange(n), n - np.arange(n)) * box / n
    g = np.exp(-0.5 * (x / radius) ** 2)
    kernel = g[:, None, None] * g[None, :, None] * g[None, None, :]
    kernel /= kernel.sum()
    out = fft.irfftn(
        fft.rfftn(field, workers=workers) * fft.rfftn(kernel, workers=workers), s=field.shape, workers=workers
    )
    return np.maximum(out, 0.0)  # removes rounding-level negatives only


def _slab_weights(n: int, box: float = BOX) -> np.ndarray:
    """Overlap (Mpc/h) of each of the n cells with each of the 5 slabs, shape (5, n)."""
    edges = np.arange(n + 1) * box / n
    slabs = np.arange(N_SLABS + 1) * SLAB
    lo = np.maximum(edges[None, :-1], slabs[:-1, None])
    hi = np.minimum(edges[None, 1:], slabs[1:, None])
    return np.maximum(hi - lo, 0.0)


def project(field: np.ndarray, *, box: float = BOX) -> np.ndarray:
    """Line-of-sight integrals over the 15 slabs (3 axes x 5 slabs of 5 Mpc/h), shape (15, n, n).

    Map ``axis * 5 + j`` integrates ``field`` (per Mpc/h along the line of sight) over [5 j, 5 j + 5) Mpc/h along
    ``axis``; cells straddling a slab edge are split by overlap, so the 5 slabs of an axis sum to the full box.
    """
    w = _slab_weights(field.shape[0], box)
    return np.concatenate([np.tensordot(w, np.moveaxis(field, axis, 0), axes=(1, 0)) for axis in range(3)])


def _ejection(one_plus_delta: np.ndarray, params: np.ndarray, r: Response) -> tuple[np.ndarray, np.ndarray, float]:
    """Halo indicator and ejected gas fraction per cell (shape of ``one_plus_delta``), and ejection radius (Mpc/h)."""
    _, _, a_sn1, a_agn1, a_sn2, a_agn2 = (float(p) for p in params)
    halo = 1.0 / (1.0 + (r.halo_delta / one_plus_delta) ** r.halo_slope)
    f_ej = min(r.eject_max * a_agn1**r.eject_agn1 * a_sn1**r.eject_sn1, 0.9) * halo
    radius = float(np.clip(r.radius * a_agn2**r.radius_agn2 * a_sn2**r.radius_sn2, 0.05, 6.0))
    return halo, f_ej, radius


def baryon_spread(
    one_plus_delta: np.ndarray, params: np.ndarray, response: Response, *, distance: float = SPREAD_DISTANCE
) -> float:
    """Fraction of the gas moved farther than ``distance`` (Mpc/h) by feedback, the metric of Gebhardt et al. 2024.

    The ejected gas of a cell is displaced by an isotropic Gaussian of standard deviation R per axis, so its
    displacement follows a Maxwell distribution: P(r > a) = erfc(a / (sqrt(2) R)) + sqrt(2 / pi) (a / R)
    exp(-a^2 / (2 R^2)). The spread is the mass-weighted ejected fraction times that probability.

    Parameters
    ----------
    one_plus_delta : ndarray, shape (n, n, n)
        Gravity-only density in units of the mean.
    params : ndarray, shape (6,)
    response : Response
    distance : float
        Mpc/h; default 1 Mpc = 0.6711 Mpc/h, Gebhardt et al.'s threshold.
    """
    from scipy import special

    _, f_ej, radius = _ejection(one_plus_delta, params, response)
    x = distance / radius
    far = special.erfc(x / np.sqrt(2)) + np.sqrt(2 / np.pi) * x * np.exp(-(x**2) / 2)
    return float(np.sum(f_ej * one_plus_delta) / np.sum(one_plus_delta) * far)


def baryonic_fields(
    one_plus_delta: np.ndarray, params: np.ndarray, response: Response, *, workers: int = 1
) -> dict[str, np.ndarray]:
    """3-D baryonic fields of a hydro suite from the gravity-only density.

    Parameters
    ----------
    one_plus_delta : ndarray, shape (n, n, n)
        Gravity-only matter density in units of the mean.
    params : ndarray, shape (6,)
        Omega_m, sigma_8, A_SN1, A_AGN1, A_SN2, A_AGN2.
    response : Response

    Returns
    -------
    dict of ndarray (n, n, n)
        ``cdm``, ``gas``, ``star``, ``hi``, ``metals`` in units of the mean matter density, ``T`` in K.
    """
    omega_m, _, a_sn1, a_agn1, a_sn2, _ = (float(p) for p in params)
    r = response
    f_b = CMD_FIXED["omega_b"] / omega_m
    d = one_plus_delta
    halo, f_ej, radius = _ejection(d, params, r)
    ejected = _smooth(f_ej * d, radius, workers=workers)  # redistributed ejecta per unit matter, same mean
    gas0 = f_b * ((1 - f_ej) * d + ejected)
    cdm = (1 - f_b) * ((1 - r.dm_coupling * f_ej) * d + r.dm_coupling * ejected)
    sf = np.clip(np.log(d / r.star_delta) / np.log(3.0), 0.0, 1.0)
    eps = min(r.star_eff * a_sn1**r.star_sn1 * a_agn1**r.star_agn1, 0.9)
    star = eps * sf * gas0
    gas = gas0 - star
    gas_rel = gas / gas.mean()
    t_fb = r.heat_temp * a_agn1**r.heat_agn1 * a_sn1**r.heat_sn1 * (f_b * ejected / np.maximum(gas0, 1e-30))
    temp = _T_IGM * gas_rel ** (_GAMMA_IGM - 1) + r.virial_temp * halo * (d / r.halo_delta) ** (2 / 3) + t_fb
    x_thin = 2.0e-6 * gas_rel * (temp / 1.0e4) ** -0.7
    x_hi = np.minimum(x_thin + r.hi_shielded * sf * np.exp(-t_fb / 1.0e6), 1.0)
    wind = min(r.wind_metals * a_sn1**0.5, 0.95)
    metal_radius = float(np.clip(r.metal_radius * a_sn2**r.metal_sn2, 0.05, 6.0))
    metals = _YIELD * ((1 - wind) * star + _smooth(wind * star, metal_radius, workers=workers))
    return {"cdm": cdm, "gas": gas, "star": star, "hi": _X_H * x_hi * gas, "metals": metals, "T": temp}


def simulate_sim(
    suite: Suite | str,
    params: np.ndarray,
    *,
    npix: int,
    seed: int,
    index: int,
    power: PowerTable,
    fields: Sequence[str] | None = None,
    workers: int = 1,
) -> dict[str, np.ndarray]:
    """The 15 maps of each field of one simulation.

    Parameters
    ----------
    suite : Suite or str
    params : ndarray, shape (6,)
    npix : int
        Map side in pixels (the 3-D grid is npix^3).
    seed, index : int
        Dataset seed and simulation index; the initial conditions come from ``rng(seed, suite.ics, index,
        "ics")``, shared with the suite's twin.
    power : PowerTable
    fields : sequence of str, optional
        Default: every field of the suite.

    Returns
    -------
    dict field -> ndarray (15, npix, npix) float32, CMD units.
    """
    suite = get_suite(suite) if isinstance(suite, str) else suite
    fields = tuple(fields) if fields is not None else suite.fields
    unknown = sorted(set(fields) - set(suite.fields))
    if unknown:
        raise ValueError(f"suite {suite.name} has no fields {unknown}; it has {list(suite.fields)}")
    omega_m, sigma8 = float(params[0]), float(params[1])
    pk = power(_kgrid(npix, BOX), omega_m, sigma8)
    d = lognormal_density(pk, npix, rng(seed, suite.ics, index, "ics"), workers=workers)
    rho_mean = omega_m * RHO_CRIT
    if suite.response is None:
        return {"Mtot": (project(d) * rho_mean).astype(np.float32)}
    b = baryonic_fields(d, params, suite.response, workers=workers)
    maps: dict[str, np.ndarray] = {}
    gas_column = None
    for field in fields:
        if field == "Mtot":
            out = project(b["cdm"] + b["gas"] + b["star"]) * rho_mean
        elif field in ("Mcdm", "Mgas", "Mstar", "HI"):
            key = {"Mcdm": "cdm", "Mgas": "gas", "Mstar": "star", "HI": "hi"}[field]
            out = project(b[key]) * rho_mean
        elif field in ("T", "Z"):
            gas_column = project(b["gas"]) if gas_column is None else gas_column
            weighted = b["gas"] * b["T"] if field == "T" else b["metals"] + _Z_FLOOR * b["gas"]
            out = project(weighted) / gas_column
        else:  # P: volume-weighted mean of rho_gas k_B T / (mu m_p), rho in h^2 Msun / kpc^3
            out = project(b["gas"] * rho_mean / 1e9 * _KB_OVER_MUMP * b["T"]) / SLAB
        maps[field] = out.astype(np.float32)
    return maps


def _chunk_path(chunk_dir: Path, index: int) -> Path:
    return chunk_dir / f"sim{index:05d}.npz"


def _simulate_to_chunk(
    index: int,
    *,
    suite: str,
    params: np.ndarray,
    npix: int,
    seed: int,
    power: PowerTable,
    fields: tuple[str, ...],
    chunk_dir: Path,
) -> None:
    path = _chunk_path(chunk_dir, index)
    if path.exists():
        return
    maps = simulate_sim(suite, params[index], npix=npix, seed=seed, index=index, power=power, fields=fields)
    with atomic_path(path) as tmp, open(tmp, "wb") as fh:
        np.savez(fh, **maps)


def simulate_suite(
    out_dir: Path | str,
    suite: str,
    *,
    n_sims: int,
    npix: int = 64,
    seed: int = 0,
    fields: Sequence[str] | None = None,
    power: PowerTable,
    set_name: str = "LH",
    executor: str = "serial",
    workers: int = 1,
    progress: bool = True,
) -> dict:
    """Write one suite in the CMD layout: ``params_{set}_{suite}.txt`` and ``Maps_{field}_{suite}_{set}_z=0.00.npy``.

    Simulations are written one by one to ``out_dir/.chunks/<suite>/`` (so an interrupted run resumes), then
    gathered into the memory-mapped CMD arrays (written atomically) and the chunks removed. Finished files are
    skipped on rerun.

    Returns
    -------
    dict
        ``suite``, ``n_sims``, ``npix``, ``fields``, ``files``.
    """
    spec = get_suite(suite)
    fields = tuple(fields) if fields is not None else spec.fields
    fields = tuple(f for f in fields if f in spec.fields)
    if not fields:
        raise ValueError(f"none of the requested fields exist in suite {suite} (it has {list(spec.fields)})")
    if npix < 8 or npix & (npix - 1):
        raise ValueError(f"npix must be a power of two >= 8 (the o3_err CNN halves it repeatedly), got {npix}")
    out_dir = Path(out_dir)
    params = latin_hypercube(n_sims, spec.priors, rng(seed, spec.ics, "latin_hypercube"))
    ppath = params_path(out_dir, suite, set_name)
    targets = {f: map_path(out_dir, f, suite, set_name) for f in fields}
    manifest_path = out_dir / f"simulation_{suite}.json"
    manifest = {
        "suite": asdict(spec),
        "n_sims": n_sims,
        "npix": npix,
        "seed": seed,
        "set": set_name,
        "box_mpc_h": BOX,
        "slab_mpc_h": SLAB,
        "power": power.kind,
        "simulator": "cosmobench.multifield.simulate v2",
    }
    if manifest_path.exists():
        old = read_json(manifest_path)
        clash = [k for k in ("n_sims", "npix", "seed", "set") if old.get(k) != manifest[k]]
        if clash:
            raise ValueError(
                f"{out_dir} already holds suite {suite} simulated with different "
                f"{', '.join(f'{k}={old.get(k)}' for k in clash)}; choose another out_dir or delete it"
            )
    done = ppath.exists() and all(_complete(p, n_sims, npix) for p in targets.values())
    if not done:
        with atomic_path(ppath) as tmp:
            np.savetxt(
                tmp, params, fmt="%.6f", header=" ".join(("Omega_m", "sigma_8", "A_SN1", "A_AGN1", "A_SN2", "A_AGN2"))
            )
        chunk_dir = out_dir / ".chunks" / f"{suite}_seed{seed}_n{n_sims}_npix{npix}"
        chunk_dir.mkdir(parents=True, exist_ok=True)
        task = functools.partial(
            _simulate_to_chunk,
            suite=suite,
            params=params,
            npix=npix,
            seed=seed,
            power=power,
            fields=fields,
            chunk_dir=chunk_dir,
        )
        map_tasks(
            task,
            list(range(n_sims)),
            executor=executor,
            workers=workers,
            desc=f"simulate {suite}",
            unit="sim",
            progress=progress,
        )
        for field, path in targets.items():
            if _complete(path, n_sims, npix):
                continue
            with atomic_path(path) as tmp:
                arr = np.lib.format.open_memmap(
                    tmp, mode="w+", dtype=np.float32, shape=(n_sims * MAPS_PER_SIM, npix, npix)
                )
                for i in range(n_sims):
                    with np.load(_chunk_path(chunk_dir, i)) as chunk:
                        arr[i * MAPS_PER_SIM : (i + 1) * MAPS_PER_SIM] = chunk[field]
                arr.flush()
                del arr
        shutil.rmtree(chunk_dir)
        old_fields = read_json(manifest_path).get("fields", []) if manifest_path.exists() else []
        write_json(manifest_path, {**manifest, "fields": sorted(set(old_fields) | set(fields))})
    return {
        "suite": suite,
        "n_sims": n_sims,
        "npix": npix,
        "fields": list(fields),
        "files": [str(p) for p in targets.values()],
    }


def _complete(path: Path, n_sims: int, npix: int) -> bool:
    if not path.exists():
        return False
    try:
        arr = np.load(path, mmap_mode="r")
    except (OSError, ValueError):
        return False
    return arr.shape == (n_sims * MAPS_PER_SIM, npix, npix) and arr.dtype == np.float32
