"""Matter power spectrum P(k; Omega_m, sigma_8) at z = 0 from CAMB with HMcode-2020, tabulated and cached.

The CMD cosmology varies only Omega_m and sigma_8; Omega_b = 0.049, h = 0.6711, n_s = 0.9624 are fixed. The
transfer function depends on Omega_m alone, so :func:`build_power_table` runs CAMB's Boltzmann solver once per
Omega_m node and gets every sigma_8 node from the same transfers by rescaling A_s (``power_spectra_from_transfer``,
a few milliseconds each); HMcode is re-applied at every node, so the non-linear spectrum is exact at the nodes.
:class:`PowerTable` interpolates log P cubically in (Omega_m, sigma_8) and linearly in log k, with power-law
extrapolation outside the tabulated k range. An 8 x 7 table costs 15-50 s of CAMB and is cached on disk (npz)
keyed by its settings, once per dataset. Units: k in h/Mpc, P in (Mpc/h)^3.
"""

from __future__ import annotations

import functools
import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..core.io import CorruptFileError, atomic_path

__all__ = [
    "CMD_FIXED",
    "PowerTable",
    "camb_matter_power",
    "build_power_table",
    "load_or_build_power_table",
    "sigma_r",
    "slab_power",
    "map_band_power",
    "slab_band_power",
]

#: Fixed cosmological parameters of CAMELS/CMD (flat LambdaCDM, w = -1, massless neutrinos).
CMD_FIXED = {"omega_b": 0.049, "h": 0.6711, "n_s": 0.9624}
#: Default table nodes: CMD's prior with a 5 % margin; Omega_m log-spaced (P changes fastest at low Omega_m).
DEFAULT_OMEGA_M = np.geomspace(0.095, 0.525, 8)
DEFAULT_SIGMA8 = np.linspace(0.58, 1.02, 7)


def camb_matter_power(
    omega_m: float, sigma8: np.ndarray | list[float], *, kmax: float = 100.0, nonlinear: bool = True
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Linear and non-linear (HMcode-2020, dark matter only) P(k) at z = 0 for several sigma_8 at one Omega_m.

    Parameters
    ----------
    omega_m : float
        Total matter density parameter (CDM + baryons, no neutrinos).
    sigma8 : array_like, shape (ns,)
        Target sigma_8 values; A_s is rescaled so that CAMB's sigma_8 matches each to 1e-6.
    kmax : float
        Largest wavenumber computed by CAMB, h/Mpc.
    nonlinear : bool
        Also return HMcode-2020 spectra (otherwise the non-linear output equals the linear one).

    Returns
    -------
    k : ndarray, shape (nk,), h/Mpc
    p_lin, p_nl : ndarray, shape (ns, nk), (Mpc/h)^3
    """
    import camb

    h, omega_b, n_s = CMD_FIXED["h"], CMD_FIXED["omega_b"], CMD_FIXED["n_s"]
    if not 0.05 <= omega_m <= 1.0:
        raise ValueError(f"omega_m={omega_m} is outside [0.05, 1]; CMD's prior is [0.1, 0.5]")
    pars = camb.CAMBparams()
    pars.set_cosmology(
        H0=100 * h, ombh2=omega_b * h**2, omch2=(omega_m - omega_b) * h**2, mnu=0.0, num_massive_neutrinos=0, nnu=3.046
    )
    as_ref = 2.0e-9
    pars.InitPower.set_params(As=as_ref, ns=n_s)
    pars.set_matter_power(redshifts=[0.0], kmax=kmax, nonlinear=nonlinear)
    pars.NonLinearModel.set_params(halofit_version="mead2020")
    pars.WantCls = False
    results = camb.get_transfer_functions(pars)
    results.power_spectra_from_transfer()
    sigma8_ref = float(results.get_sigma8_0())
    p_lin, p_nl = [], []
    for s8 in np.atleast_1d(np.asarray(sigma8, dtype=float)):
        init = camb.InitialPowerLaw()
        init.set_params(As=as_ref * (s8 / sigma8_ref) ** 2, ns=n_s)
        results.power_spectra_from_transfer(init)
        k, _, pl = results.get_linear_matter_power_spectrum(hubble_units=True, k_hunit=True)
        _, _, pn = results.get_nonlinear_matter_power_spectrum(hubble_units=True, k_hunit=True)
        p_lin.append(pl[0])
        p_nl.append(pn[0] if nonlinear else pl[0])
    return np.asarray(k), np.asarray(p_lin), np.asarray(p_nl)


def sigma_r(k: np.ndarray, pk: np.ndarray, radius: float = 8.0) -> float:
    """RMS of the density field in top-hat spheres of ``radius`` Mpc/h, from P(k) on a log-k grid."""
    x = k * radius
    w = 3 * (np.sin(x) - x * np.cos(x)) / x**3
    integrand = k**3 * pk * w**2 / (2 * np.pi**2)
    return float(np.sqrt(np.trapezoid(integrand, np.log(k))))


def slab_power(
    pk: Callable[[np.ndarray], np.ndarray], k_perp: np.ndarray, *, box: float, slab: float, n: int
) -> np.ndarray:
    """2-D power of the density contrast projected over a slab of a periodic box, from the 3-D P(k).

    The contrast averaged over ``slab`` along z, delta_2D = (1/slab) int delta dz, has
    P_2D(k_perp) = (1/box) sum_{k_z} P(sqrt(k_perp^2 + k_z^2)) sinc^2(k_z slab / 2) over the box's modes
    k_z = 2 pi m / box, |m| <= n / 2 (those of an n^3 grid).

    Parameters
    ----------
    pk : callable
        P(k) of the 3-D contrast, k in h/Mpc (any shape), (Mpc/h)^3.
    k_perp : ndarray, any shape, h/Mpc
    box, slab : float
        Box side and slab depth, Mpc/h.
    n : int
        Grid size along the line of sight.

    Returns
    -------
    ndarray, shape of ``k_perp``, (Mpc/h)^2.
    """
    kz = 2 * np.pi * np.arange(-(n // 2), n // 2 + 1) / box
    window = np.sinc(kz * slab / (2 * np.pi)) ** 2  # np.sinc(x) = sin(pi x) / (pi x)
    k_perp = np.asarray(k_perp, dtype=float)
    return np.sum(pk(np.sqrt(k_perp[..., None] ** 2 + kz**2)) * window, axis=-1) / box


def _band_average(npix: int, edges: np.ndarray, box: float) -> tuple[np.ndarray, np.ndarray]:
    """|k| on the rfft2 grid of an npix^2 map, h/Mpc, and the (nbands, npix, npix // 2 + 1) averaging weights.

    Row i of the weights averages over the modes with edges[i] <= |k| < edges[i + 1], each of +-k counted (the
    rfft half-plane holds one of each conjugate pair, except in the k_y = 0 and Nyquist columns).
    """
    kx = 2 * np.pi * np.fft.fftfreq(npix, d=box / npix)
    ky = 2 * np.pi * np.fft.rfftfreq(npix, d=box / npix)
    k = np.hypot(kx[:, None], ky[None, :])
    weight = np.full(k.shape, 2.0)
    weight[:, 0] = 1.0
    if npix % 2 == 0:
        weight[:, -1] = 1.0
    band = np.digitize(k, edges) - 1
    nbands = len(edges) - 1
    sel = (band >= 0) & (band < nbands)
    avg = np.zeros((nbands,) + k.shape)
    avg[(band[sel],) + np.nonzero(sel)] = weight[sel]
    counts = avg.sum(axis=(1, 2))
    if np.any(counts == 0):
        raise ValueError(f"some bands of {np.asarray(edges).tolist()} hold no mode of a {npix}^2 map of side {box}")
    return k, avg / counts[:, None, None]


def map_band_power(maps: np.ndarray, edges: np.ndarray, *, box: float, other: np.ndarray | None = None) -> np.ndarray:
    """Auto- (or cross-) power spectra of periodic square maps, averaged in annuli of |k|.

    Each map's mean is removed; P(k) = Re(F_a F_b^*) / box^2 with F the discrete Fourier transform times the
    pixel area, normalised so that the sum of P(k) / box^2 over all modes is the map's variance (Parseval): a white
    field of variance s^2 has P = s^2 (box / npix)^2, and A cos(k_0 . x) has P = A^2 box^2 / 4 at +-k_0. A band's
    value is the mean over its modes (each of +-k counted).

    Parameters
    ----------
    maps : ndarray, shape (..., npix, npix)
    edges : ndarray, shape (nbands + 1,), h/Mpc, increasing
        Band [edges[i], edges[i + 1]); a band without modes raises ``ValueError``.
    box : float
        Map side, Mpc/h.
    other : ndarray, shape of ``maps``, optional
        Second field for a cross spectrum.

    Returns
    -------
    ndarray, shape (..., nbands), (map unit)^2 (Mpc/h)^2.
    """
    npix = maps.shape[-1]
    if maps.shape[-2] != npix or (other is not None and other.shape != maps.shape):
        raise ValueError(f"expected square maps of one shape, got {maps.shape} and {getattr(other, 'shape', None)}")
    _, avg = _band_average(npix, edges, box)

    def transform(x: np.ndarray) -> np.ndarray:
        x = np.asarray(x, dtype=np.float64)
        return np.fft.rfft2(x - x.mean(axis=(-2, -1), keepdims=True)) * (box / npix) ** 2

    fa = transform(maps)
    fb = fa if other is None else transform(other)
    return np.tensordot((fa * fb.conj()).real / box**2, avg, axes=([-2, -1], [1, 2]))


def slab_band_power(
    pk: Callable[[np.ndarray], np.ndarray], edges: np.ndarray, *, npix: int, box: float, slab: float
) -> np.ndarray:
    """Expected :func:`map_band_power` of the contrast of slab maps: :func:`slab_power` averaged over each band's modes.

    Parameters
    ----------
    pk : callable
        3-D P(k) of the density contrast, (Mpc/h)^3, k in h/Mpc.
    edges : ndarray, shape (nbands + 1,), h/Mpc
    npix : int
        Map side in pixels (and grid size along the line of sight).
    box, slab : float
        Box side and slab depth, Mpc/h.

    Returns
    -------
    ndarray, shape (nbands,), (Mpc/h)^2.
    """
    k, avg = _band_average(npix, edges, box)
    return np.tensordot(avg, slab_power(pk, k, box=box, slab=slab, n=npix), axes=([1, 2], [0, 1]))


@dataclass(frozen=True)
class PowerTable:
    """log P(k) tabulated on an (Omega_m, sigma_8) grid; call it to interpolate.

    Attributes
    ----------
    k : ndarray, shape (nk,), h/Mpc, increasing
    omega_m, sigma8 : ndarray, shapes (no,), (ns,), increasing grid nodes
    log_pk : ndarray, shape (no, ns, nk), ln of P in (Mpc/h)^3
    kind : str
        ``"nonlinear"`` (HMcode-2020) or ``"linear"``.
    """

    k: np.ndarray
    omega_m: np.ndarray
    sigma8: np.ndarray
    log_pk: np.ndarray
    kind: str = "nonlinear"

    @functools.cached_property
    def _interpolator(self):
        """Cubic (linear with fewer than 4 nodes) interpolator of log P over (Omega_m, sigma_8), built once."""
        from scipy.interpolate import RegularGridInterpolator

        method = "cubic" if min(len(self.omega_m), len(self.sigma8)) >= 4 else "linear"
        return RegularGridInterpolator((self.omega_m, self.sigma8), self.log_pk, method=method)

    def __call__(self, k: np.ndarray, omega_m: float, sigma8: float) -> np.ndarray:
        """P(k) in (Mpc/h)^3 at ``k`` (any shape, h/Mpc; zeros give zero) for one cosmology."""
        for name, value, grid in (("omega_m", omega_m, self.omega_m), ("sigma8", sigma8, self.sigma8)):
            if not grid[0] - 1e-9 <= value <= grid[-1] + 1e-9:
                raise ValueError(
                    f"{name}={value} is outside the power table [{grid[0]}, {grid[-1]}]; "
                    "rebuild the table with a wider range"
                )
        log_pk = self._interpolator([[omega_m, sigma8]])[0]
        k = np.asarray(k, dtype=float)
        out = np.zeros_like(k)
        pos = k > 0
        logk = np.log(k[pos])
        lk = np.log(self.k)
        val = np.interp(logk, lk, log_pk)
        lo_slope = (log_pk[1] - log_pk[0]) / (lk[1] - lk[0])
        hi_slope = (log_pk[-1] - log_pk[-2]) / (lk[-1] - lk[-2])
        val = np.where(logk < lk[0], log_pk[0] + lo_slope * (logk - lk[0]), val)
        val = np.where(logk > lk[-1], log_pk[-1] + hi_slope * (logk - lk[-1]), val)
        out[pos] = np.exp(val)
        return out


def build_power_table(
    omega_m: np.ndarray | None = None,
    sigma8: np.ndarray | None = None,
    *,
    kmax: float = 100.0,
    kind: str = "nonlinear",
) -> PowerTable:
    """Tabulate P(k) over an (Omega_m, sigma_8) grid with one CAMB transfer run per Omega_m node.

    Parameters
    ----------
    omega_m, sigma8 : array_like, optional
        Grid nodes; default :data:`DEFAULT_OMEGA_M` (8, log-spaced) and :data:`DEFAULT_SIGMA8` (7), covering
        CMD's prior ([0.1, 0.5] and [0.6, 1.0]) with a margin.
    kmax : float
        Largest k computed by CAMB, h/Mpc (beyond it P is extrapolated as a power law).
    kind : {"nonlinear", "linear"}
        HMcode-2020 dark-matter-only spectrum, or the linear one.
    """
    if kind not in ("nonlinear", "linear"):
        raise ValueError(f"kind must be 'nonlinear' or 'linear', got {kind!r}")
    omega_m = DEFAULT_OMEGA_M if omega_m is None else np.asarray(omega_m, dtype=float)
    sigma8 = DEFAULT_SIGMA8 if sigma8 is None else np.asarray(sigma8, dtype=float)
    if np.any(np.diff(omega_m) <= 0) or np.any(np.diff(sigma8) <= 0):
        raise ValueError("power-table nodes must be strictly increasing")
    # CAMB chooses its k sampling per cosmology: resample every row onto one log-spaced grid.
    k = np.logspace(-4, np.log10(kmax), 300)
    rows = []
    for om in omega_m:
        kc, p_lin, p_nl = camb_matter_power(float(om), sigma8, kmax=kmax, nonlinear=kind == "nonlinear")
        pk = p_nl if kind == "nonlinear" else p_lin
        rows.append([np.interp(np.log(k), np.log(kc), np.log(p)) for p in pk])
    return PowerTable(k=k, omega_m=omega_m, sigma8=sigma8, log_pk=np.asarray(rows), kind=kind)


def _table_key(omega_m, sigma8, kmax, kind) -> str:
    spec = {
        "omega_m": np.round(omega_m, 6).tolist(),
        "sigma8": np.round(sigma8, 6).tolist(),
        "kmax": kmax,
        "kind": kind,
        "fixed": CMD_FIXED,
        "version": 1,
    }
    return hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:16]


def load_or_build_power_table(
    cache_dir: Path | str,
    omega_m: np.ndarray | None = None,
    sigma8: np.ndarray | None = None,
    *,
    kmax: float = 100.0,
    kind: str = "nonlinear",
) -> PowerTable:
    """Read the table from ``cache_dir/power_table_<hash>.npz`` or build and cache it (atomically)."""
    omega_m = DEFAULT_OMEGA_M if omega_m is None else np.asarray(omega_m, dtype=float)
    sigma8 = DEFAULT_SIGMA8 if sigma8 is None else np.asarray(sigma8, dtype=float)
    path = Path(cache_dir) / f"power_table_{_table_key(omega_m, sigma8, kmax, kind)}.npz"
    if path.exists():
        try:
            with np.load(path) as data:
                return PowerTable(
                    k=data["k"],
                    omega_m=data["omega_m"],
                    sigma8=data["sigma8"],
                    log_pk=data["log_pk"],
                    kind=str(data["kind"]),
                )
        except (OSError, KeyError, ValueError) as err:
            raise CorruptFileError(f"{path} is not a readable power table ({err}); delete it to rebuild") from err
    table = build_power_table(omega_m, sigma8, kmax=kmax, kind=kind)
    with atomic_path(path) as tmp, open(tmp, "wb") as fh:
        np.savez(fh, k=table.k, omega_m=table.omega_m, sigma8=table.sigma8, log_pk=table.log_pk, kind=table.kind)
    return table
