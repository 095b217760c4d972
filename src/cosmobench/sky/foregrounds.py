"""Galactic foregrounds: synthetic components that need no download, and one entry point for both backends.

Each component is a :class:`~cosmobench.sky.components.Component` built from explicit arrays (an amplitude
template at a reference frequency and spectral-parameter maps, scalars allowed), so users can pass their own;
``random(nside, rng, ...)`` draws a synthetic realisation:

- :class:`ThermalDust`: modified black body, per-pixel beta and T, polarised.
- :class:`TwoComponentDust`: two modified black bodies (cold and hot dust), the dust of the "alt" model.
- :class:`Synchrotron`: power law (optionally curved), per-pixel beta, polarised.
- :class:`FreeFree`: power law in intensity.
- :class:`SpinningDust`: AME with a peaked spinning-dust spectrum and a per-pixel peak frequency (default).
- :class:`AME`: AME as a log-normal spectrum in intensity (the broad SED of the "alt" model).

Synthetic morphology = a Galactic latitude profile (with an inner-Galaxy enhancement along the plane) times
exp(sigma G), G a Gaussian field with a power-law spectrum, optionally times a network of filaments (the zero
set of another Gaussian field). Polarisation angles follow a large-scale magnetic field plus a random spin-2
field with E > B (plus, with filaments, a part across the filaments). The defaults reproduce the real-sky
statistics measured on PySM's d1/s1/f1/a1 at nside 64 (:mod:`cosmobench.sky.realism`, ``docs/foregrounds.md``).
Named parametrisations live in :data:`FOREGROUND_MODELS`: "default", for out-of-distribution test splits
"alt" (other emission laws and correlations) and "filament" (another morphology generator), and "perturbed" (the
default's parameters moved by about their spreads: a validation split's, to calibrate error bars on).
:func:`make_foregrounds` builds either backend by name.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Mapping, Sequence

import numpy as np
from scipy import constants

from . import sht, units
from .components import Component
from .units import unit_factor

__all__ = [
    "ThermalDust",
    "TwoComponentDust",
    "Synchrotron",
    "FreeFree",
    "AME",
    "SpinningDust",
    "SYNTHETIC_COMPONENTS",
    "COMPONENTS",
    "register_component",
    "FOREGROUND_BACKENDS",
    "FOREGROUND_MODELS",
    "DUST_MODELS",
    "AME_MODELS",
    "foreground_model",
    "synthetic_foregrounds",
    "make_foregrounds",
    "foreground_rng",
    "gaussian_field",
    "latitude_profile",
]

FOREGROUND_BACKENDS = ("synthetic", "pysm3")
SYNTHETIC_COMPONENTS = ("dust", "synchrotron", "freefree", "ame")
PYSM_DEFAULT_PRESETS = {"dust": "d1", "synchrotron": "s1", "freefree": "f1", "ame": "a1"}

H_OVER_K = constants.h * 1e9 / constants.k  # K per GHz
S_HIGH = 0.75  # median |sin b| over |b| > 30 deg (the area is uniform in sin b)
S_PLANE = 0.5 * np.sin(np.radians(5.0))  # median |sin b| over |b| < 5 deg
SMOOTH_LMAX = 256  # band limit of spectral-parameter, polarisation-angle and polarisation-fraction fields
# structure fields have unit variance over ell <= NORM_LMAX (the multipoles of nside 64) at every nside, so a shallow
# spectrum keeps its large-scale amplitude when the resolution grows
NORM_LMAX = 191
MORPHOLOGIES = ("lognormal", "filament")
FILAMENT_ELL_FLAT = 5.0  # the filament field's spectrum is flat below this multipole (filaments up to ~30 deg long)


def _ghz(freq) -> float:
    """A scalar frequency (Quantity or number in GHz) as float GHz."""
    if hasattr(freq, "unit"):
        import astropy.units as u

        freq = freq.to_value(u.GHz, equivalencies=u.spectral())
    value = np.asarray(freq, dtype=np.float64)
    if value.ndim:
        raise ValueError("emission takes one frequency; integrate bandpasses with cosmobench.sky.instrument")
    if not value > 0:
        raise ValueError(f"frequency must be positive, got {float(value)} GHz")
    return float(value)


def _param(value, npix: int, name: str) -> np.ndarray:
    """A spectral parameter as a float64 scalar array or a (npix,) map."""
    arr = np.array(value, dtype=np.float64)
    if arr.ndim and arr.shape != (npix,):
        raise ValueError(f"{name} must be a scalar or a map of shape ({npix},), got shape {arr.shape}")
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{name} has non-finite values")
    return arr


def _template(maps, ncomp: int, freq_ref_ghz: float, unit: str, name: str) -> np.ndarray:
    """An amplitude template converted to uK_RJ at ``freq_ref_ghz``, shape (ncomp, npix)."""
    arr = np.asarray(maps, dtype=np.float64)
    arr = arr[None] if arr.ndim == 1 else arr
    if arr.ndim != 2 or arr.shape[0] != ncomp:
        raise ValueError(f"{name} template must have {ncomp} row(s) ({'IQU' if ncomp == 3 else 'I'}), got {arr.shape}")
    sht.nside_of(arr)
    return arr * unit_factor(freq_ref_ghz, unit, "uK_RJ")  # a new array: the caller's maps are not shared


def _iqu_quantity(iqu: np.ndarray):
    return iqu << units.uK_RJ


# --------------------------------------------------------------------------------------------- morphology


@functools.lru_cache(maxsize=2)
def _geometry(nside: int) -> tuple[np.ndarray, np.ndarray]:
    """cos(colatitude) = sin(b) and longitude l (rad) of every pixel, Galactic, RING."""
    import healpy as hp

    theta, phi = hp.pix2ang(nside, np.arange(sht.npix(nside)))
    z = np.cos(theta)
    for a in (z, phi):
        a.setflags(write=False)
    return z, phi


def gaussian_field(
    nside: int,
    rng: np.random.Generator,
    *,
    alpha: float,
    ell_flat: float = 1.0,
    lmax: int | None = None,
    norm_lmax: int | None = None,
) -> np.ndarray:
    """A Gaussian random field with C_ell ~ (max(ell, ell_flat))^-alpha for ell >= 1 (unit variance, see norm_lmax).

    Parameters
    ----------
    nside : int
    rng : numpy.random.Generator
    alpha : float
        Spectral slope.
    ell_flat : float
        Below this multipole the spectrum is flat.
    lmax : int, optional
        Band limit (default and maximum 3 nside - 1).
    norm_lmax : int, optional
        The spectrum is normalised so that the multipoles up to ``norm_lmax`` (default ``lmax``) carry unit
        variance; the field's variance is then below 1 if ``lmax < norm_lmax``, above 1 if ``lmax > norm_lmax``.

    Returns
    -------
    ndarray, shape (npix,)
    """
    return sht.alm2map(_field_alm(nside, rng, alpha, ell_flat, lmax, norm_lmax), nside)


def _field_alm(
    nside: int, rng: np.random.Generator, alpha: float, ell_flat: float, lmax: int | None, norm_lmax: int | None
) -> np.ndarray:
    """alm of :func:`gaussian_field`, shape (nalm,), band limit min(lmax, 3 nside - 1)."""
    lmax = sht.default_lmax(nside) if lmax is None else min(int(lmax), sht.default_lmax(nside))
    norm_lmax = lmax if norm_lmax is None else int(norm_lmax)
    ell = np.arange(max(lmax, norm_lmax) + 1, dtype=np.float64)
    cl = np.zeros(ell.size)
    cl[1:] = np.maximum(ell[1:], ell_flat) ** -alpha
    cl /= np.sum((2 * ell[: norm_lmax + 1] + 1) * cl[: norm_lmax + 1]) / (4 * np.pi)
    return sht.synalm(cl[: lmax + 1], lmax, rng)


def _spin2_field(nside: int, rng: np.random.Generator, *, alpha: float, eb_ratio: float, lmax: int) -> np.ndarray:
    """Complex Q + iU of a Gaussian spin-2 field, C_EE ~ ell^-alpha, C_BB = eb_ratio C_EE, bandlimit ``lmax``.

    Normalised so that the multipoles ell <= NORM_LMAX carry E|Q + iU|^2 = 1 (the same power per multipole at
    every nside).
    """
    lmax = min(lmax, sht.default_lmax(nside))
    ell = np.arange(max(lmax, NORM_LMAX) + 1, dtype=np.float64)
    ee = np.zeros(ell.size)
    ee[2:] = ell[2:] ** -alpha
    ee /= np.sum((2 * ell[: NORM_LMAX + 1] + 1) * ee[: NORM_LMAX + 1] * (1 + eb_ratio)) / (4 * np.pi)
    ee = ee[: lmax + 1]
    cls = np.stack([np.zeros_like(ee), ee, eb_ratio * ee, np.zeros_like(ee)])
    _, q, u = sht.alm2map(sht.synalm(cls, lmax, rng), nside, lmax)
    return q + 1j * u


def latitude_profile(
    nside: int, high: float, plane: float, *, plane_width: float, lon_contrast: float = 0.0, lon_width: float = 0.2
) -> np.ndarray:
    """A smooth Galactic profile whose medians over |b| > 30 deg and |b| < 5 deg are ``high`` and ``plane``.

    ``P = A ((S_HIGH + s0) / (|sin b| + s0))^k exp(lon_contrast cos(l) exp(-(sin b / lon_width)^2))``:
    a core of width ``s0 = plane_width`` in sin b, and an inner-Galaxy enhancement along the plane (median 1
    over longitude). ``A`` and ``k`` are solved on the pixels so that both medians are exact.

    Returns
    -------
    ndarray, shape (npix,), read-only (cached), in the units of ``high`` and ``plane``
    """
    if not (high > 0 and plane > high):
        raise ValueError(f"need 0 < high < plane, got high={high}, plane={plane}")
    if not plane_width > 0:
        raise ValueError(f"plane_width must be positive, got {plane_width}")
    return _profile(
        sht.check_nside(nside), float(high), float(plane), float(plane_width), float(lon_contrast), float(lon_width)
    )


def _profile_terms(nside: int, s0: float, lon_contrast: float, lon_width: float) -> tuple[np.ndarray, np.ndarray]:
    """log-profile terms: the latitude slope term (times k) and the longitude term, shape (npix,) each."""
    z, lon = _geometry(nside)
    slope = np.log(S_HIGH + s0) - np.log(np.abs(z) + s0)
    log_lon = lon_contrast * np.cos(lon) * np.exp(-((z / lon_width) ** 2)) if lon_contrast else np.zeros_like(z)
    return slope, log_lon


@functools.lru_cache(maxsize=4)  # one per synthetic component at one nside (25 MB each at nside 512)
def _profile(nside: int, high: float, plane: float, s0: float, lon_contrast: float, lon_width: float) -> np.ndarray:
    # solve k and the normalisation by bisection on a grid of at most nside 128 (medians of a smooth profile
    # barely depend on the resolution), then evaluate at nside
    cal = min(nside, 128)
    slope, log_lon = _profile_terms(cal, s0, lon_contrast, lon_width)
    z, _ = _geometry(cal)
    hi, lo = np.abs(z) > 0.5, np.abs(z) < np.sin(np.radians(5.0))

    def medians(k: float) -> tuple[float, float]:
        log_p = k * slope + log_lon
        return float(np.median(log_p[hi])), float(np.median(log_p[lo]))

    target = np.log(plane / high)
    k_lo, k_hi = 0.0, 1.0
    while np.subtract(*medians(k_hi)[::-1]) < target:
        k_lo, k_hi = k_hi, 2 * k_hi
    for _ in range(40):
        k = 0.5 * (k_lo + k_hi)
        m_hi, m_lo = medians(k)
        k_lo, k_hi = (k, k_hi) if m_lo - m_hi < target else (k_lo, k)
    m_hi, _ = medians(k)
    slope, log_lon = _profile_terms(nside, s0, lon_contrast, lon_width)
    prof = high * np.exp(k * slope + log_lon - m_hi)
    prof.setflags(write=False)
    return prof


def _structure_field(nside: int, rng: np.random.Generator, alpha: float, ell_flat: float) -> np.ndarray:
    """The structure field G of a component: :func:`gaussian_field` normalised over ell <= NORM_LMAX.

    Spectra shallower than ell^-2 are band-limited at SMOOTH_LMAX: their variance would otherwise grow with the
    resolution and exp(sigma G) become ever spikier.
    """
    lmax = None if alpha >= 2 else SMOOTH_LMAX
    return gaussian_field(nside, rng, alpha=alpha, ell_flat=ell_flat, lmax=lmax, norm_lmax=NORM_LMAX)


def _intensity(
    nside: int,
    rng: np.random.Generator,
    structure: np.ndarray | None,
    *,
    high: float,
    plane: float,
    plane_width: float,
    lon_contrast: float,
    sigma: float,
    alpha: float,
    ell_flat: float,
) -> np.ndarray:
    """Latitude profile x exp(sigma G): the intensity template (units of ``high``)."""
    if structure is None:
        structure = _structure_field(nside, rng, alpha, ell_flat)
    prof = latitude_profile(nside, high, plane, plane_width=plane_width, lon_contrast=lon_contrast)
    return prof * np.exp(sigma * structure)


@functools.lru_cache(maxsize=2)
def _ordered_field(nside: int, l0_deg: float, b0_deg: float) -> np.ndarray:
    """Q + iU (HEALPix convention) of emission polarised perpendicular to a uniform magnetic field.

    The field points to Galactic (l0, b0); its sky projection B_perp gives Q + iU = -(B_theta + i B_phi)^2,
    so the fraction falls as the field turns toward the line of sight and, for a field in the plane, Q > 0
    along the plane (polarisation perpendicular to it).
    """
    z, lon = _geometry(nside)
    sin_t = np.sqrt(1 - z**2)
    l0, b0 = np.radians(l0_deg), np.radians(b0_deg)
    bx, by, bz = np.cos(b0) * np.cos(l0), np.cos(b0) * np.sin(l0), np.sin(b0)
    cos_p, sin_p = np.cos(lon), np.sin(lon)
    b_theta = z * (cos_p * bx + sin_p * by) - sin_t * bz
    b_phi = -sin_p * bx + cos_p * by
    field = -((b_theta + 1j * b_phi) ** 2)
    field.setflags(write=False)
    return field


def _polarisation(
    intensity: np.ndarray,
    nside: int,
    rng: np.random.Generator,
    *,
    pol_frac: float,
    pol_frac_max: float,
    pol_sigma: float,
    turbulence: float,
    eb_ratio: float,
    alpha_pol: float,
    field_l0: float,
    field_b0: float,
    aligned: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Q, U = p I (cos 2 psi, sin 2 psi): angle of (ordered + turbulent [+ aligned]) field, median P/I ``pol_frac``.

    ``aligned`` (complex Q + iU direction field, shape (npix,)) is added to the field direction: the
    structure-aligned part of the filament morphology.
    """
    if not 0 <= pol_frac <= pol_frac_max <= 1:
        raise ValueError(f"need 0 <= pol_frac <= pol_frac_max <= 1, got {pol_frac}, {pol_frac_max}")
    lmax = min(sht.default_lmax(nside), SMOOTH_LMAX)
    field = _ordered_field(nside, float(field_l0), float(field_b0)) + turbulence * _spin2_field(
        nside, rng, alpha=alpha_pol, eb_ratio=eb_ratio, lmax=lmax
    )
    if aligned is not None:
        field = field + aligned
    amp = np.abs(field)
    depol = amp * np.exp(pol_sigma * gaussian_field(nside, rng, alpha=alpha_pol, lmax=lmax, norm_lmax=NORM_LMAX))
    frac = np.minimum(pol_frac * depol / np.median(depol), pol_frac_max)
    p = frac * intensity / np.where(amp > 0, amp, 1.0)
    return p * field.real, p * field.imag


def _smooth_param(nside: int, rng: np.random.Generator, mean: float, rms: float, alpha: float = 2.5) -> np.ndarray:
    """mean + rms G with G a smooth unit-variance Gaussian field (ell <= SMOOTH_LMAX)."""
    if rms == 0:
        return np.array(float(mean))
    lmax = min(sht.default_lmax(nside), SMOOTH_LMAX)
    return mean + rms * gaussian_field(nside, rng, alpha=alpha, lmax=lmax)


# keyword arguments of the shared morphology steps, picked from a ``random`` classmethod's arguments
_INTENSITY_KEYS = ("high", "plane", "plane_width", "lon_contrast", "sigma", "alpha", "ell_flat")
_POLARISATION_KEYS = (
    "pol_frac",
    "pol_frac_max",
    "pol_sigma",
    "turbulence",
    "eb_ratio",
    "alpha_pol",
    "field_l0",
    "field_b0",
)
_FILAMENT_KEYS = ("morphology", "filament_width", "filament_contrast", "filament_alpha", "alignment")
_POLARISED_KEYS = _INTENSITY_KEYS + _POLARISATION_KEYS + _FILAMENT_KEYS


def _pick(args: dict, keys: Sequence[str]) -> dict:
    """The entries ``keys`` of ``args`` (a ``random`` classmethod's ``locals()``)."""
    return {k: args[k] for k in keys}


def _filament_network(
    nside: int, rng: np.random.Generator, *, width: float, alpha: float
) -> tuple[np.ndarray, np.ndarray]:
    """Filaments as the zero set of a Gaussian field, and the polarisation direction across them.

    A unit-variance Gaussian field G (C_ell ~ max(ell, FILAMENT_ELL_FLAT)^-alpha, ell <= SMOOTH_LMAX, so the
    filaments keep their angular size at every nside) gives the ridges ``R = exp(-G^2 / 2 w^2) / E[.]`` (mean 1;
    a connected network of filaments of width ~ w in G along its zero contours) and the spin-2 field
    ``(g_theta + i g_phi)^2 / <|g|^2>`` of the gradient g of G: polarisation across the filaments (the magnetic
    field runs along them, as observed in diffuse dust), weaker where the field is flat.

    Returns
    -------
    ridges : ndarray, shape (npix,), > 0
    across : ndarray, shape (npix,), complex, mean abs^2 = 1 (Q + iU direction, HEALPix convention)
    """
    import healpy as hp

    if not width > 0:
        raise ValueError(f"filament_width must be positive, got {width}")
    lmax = min(sht.default_lmax(nside), SMOOTH_LMAX)
    alm = _field_alm(nside, rng, alpha, FILAMENT_ELL_FLAT, lmax, None)
    g, g_theta, g_phi = hp.alm2map_der1(alm, nside, lmax=lmax)
    ridges = np.exp(-0.5 * (g / width) ** 2) * np.sqrt(1 + width**2) / width
    grad = g_theta + 1j * g_phi
    return ridges, grad**2 / np.mean(np.abs(grad) ** 2)


def _polarised_template(nside: int, rng: np.random.Generator, structure: np.ndarray | None, **morphology) -> np.ndarray:
    """Stokes I, Q, U template of a polarised component (intensity, then polarisation), shape (3, npix).

    ``morphology`` holds the keyword arguments of :func:`_intensity` and :func:`_polarisation` and the filament
    options (``_POLARISED_KEYS``); the draws from ``rng`` come in that order (the filament network between the
    intensity and the polarisation). With ``morphology="filament"`` the intensity is multiplied by
    ``1 - c + c R`` (c = ``filament_contrast``, R the ridges of :func:`_filament_network`) and ``alignment R``
    times the across-filament direction joins the field direction.
    """
    kind = morphology["morphology"]
    if kind not in MORPHOLOGIES:
        raise ValueError(f"unknown morphology {kind!r}; expected one of {list(MORPHOLOGIES)}")
    amp = _intensity(nside, rng, structure, **_pick(morphology, _INTENSITY_KEYS))
    aligned = None
    if kind == "filament":
        contrast = morphology["filament_contrast"]
        if not 0 <= contrast <= 1:
            raise ValueError(f"filament_contrast must be in [0, 1], got {contrast}")
        ridges, across = _filament_network(
            nside, rng, width=morphology["filament_width"], alpha=morphology["filament_alpha"]
        )
        modulation = 1 - contrast + contrast * ridges
        amp *= modulation / np.median(modulation)  # keeps the intensity medians of the latitude profile
        aligned = morphology["alignment"] * ridges * across
    q, u = _polarisation(amp, nside, rng, aligned=aligned, **_pick(morphology, _POLARISATION_KEYS))
    return np.stack([amp, q, u])


class _ModifiedBlackBody:
    """RJ-temperature SED of a modified black body relative to ``freq_ref_ghz``, per pixel.

    ``(nu / nu0)^(beta + 1) (exp(x0) - 1) / (exp(x) - 1)``, ``x = h nu / k T``; ``beta`` and ``temp`` (K) are
    float64 scalars or (npix,) maps.
    """

    def __init__(self, beta: np.ndarray, temp: np.ndarray, freq_ref_ghz: float):
        if np.any(temp <= 0):
            raise ValueError("dust temperature must be positive (K)")
        self.freq_ref_ghz = freq_ref_ghz
        self._h_over_kt = H_OVER_K / temp
        self._expm1_x0 = np.expm1(self._h_over_kt * freq_ref_ghz)
        self._beta_plus_1 = beta + 1.0

    def __call__(self, nu: float) -> np.ndarray:
        out = np.exp(self._beta_plus_1 * np.log(nu / self.freq_ref_ghz))
        out *= self._expm1_x0
        out /= np.expm1(self._h_over_kt * nu)
        return out


# --------------------------------------------------------------------------------------------- components


class _Polarised(Component):
    """An (I, Q, U) template at a reference frequency scaled by a per-pixel SED (subclasses define ``sed``)."""

    def _set_template(self, iqu, freq_ref_ghz: float, unit: str, name: str) -> int:
        """Store the template in uK_RJ at ``freq_ref_ghz``; returns npix."""
        self.freq_ref_ghz = float(freq_ref_ghz)
        self.iqu = _template(iqu, 3, self.freq_ref_ghz, unit, name)
        self.nside = sht.nside_of(self.iqu)
        return self.iqu.shape[-1]

    def sed(self, freq) -> np.ndarray:
        """T_RJ(freq) / T_RJ(freq_ref), scalar or shape (npix,)."""
        raise NotImplementedError

    def emission(self, freq):
        """Stokes I, Q, U at ``freq``, shape (3, npix), uK_RJ."""
        return _iqu_quantity(self.iqu * self.sed(freq))


class ThermalDust(_Polarised):
    """Thermal dust: a modified black body with per-pixel spectral index and temperature.

    ``T_RJ(nu) = A(nu0) (nu / nu0)^(beta + 1) (exp(x0) - 1) / (exp(x) - 1)`` with ``x = h nu / k T``,
    the same law for I, Q and U.

    Parameters
    ----------
    iqu : array_like, shape (3, npix)
        Stokes I, Q, U at ``freq_ref_ghz`` in ``unit``.
    beta : float or ndarray (npix,)
        Emissivity index.
    temp : float or ndarray (npix,)
        Dust temperature, K (> 0).
    freq_ref_ghz : float
        Reference frequency, GHz.
    unit : str
        Unit of ``iqu`` (e.g. "uK_RJ", "uK_CMB", "MJy/sr"), converted at ``freq_ref_ghz``.
    """

    def __init__(self, iqu, *, beta=1.54, temp=20.0, freq_ref_ghz: float = 353.0, unit: str = "uK_RJ"):
        npix = self._set_template(iqu, freq_ref_ghz, unit, "dust")
        self.beta = _param(beta, npix, "beta")
        self.temp = _param(temp, npix, "temp")
        self._mbb = _ModifiedBlackBody(self.beta, self.temp, self.freq_ref_ghz)

    def sed(self, freq) -> np.ndarray:
        """T_RJ(freq) / T_RJ(freq_ref), scalar or shape (npix,)."""
        return self._mbb(_ghz(freq))

    @classmethod
    def random(
        cls,
        nside: int,
        rng: np.random.Generator,
        *,
        high: float = 290.0,
        plane: float = 1.2e4,
        freq_ref_ghz: float = 353.0,
        plane_width: float = 0.02,
        lon_contrast: float = 1.5,
        sigma: float = 0.5,
        alpha: float = 2.8,
        ell_flat: float = 8.0,
        beta_mean: float = 1.54,
        beta_rms: float = 0.04,
        beta_temp_slope: float = 0.0,
        temp_mean: float = 20.0,
        temp_rms: float = 1.2,
        temp_column_slope: float = 1.2,
        pol_frac: float = 0.08,
        pol_frac_max: float = 0.25,
        pol_sigma: float = 0.4,
        turbulence: float = 0.8,
        eb_ratio: float = 0.25,
        alpha_pol: float = 2.3,
        field_l0: float = 70.0,
        field_b0: float = 0.0,
        morphology: str = "lognormal",
        filament_width: float = 0.6,
        filament_contrast: float = 0.7,
        filament_alpha: float = 4.5,
        alignment: float = 2.0,
        structure: np.ndarray | None = None,
    ) -> ThermalDust:
        """Draw a synthetic dust sky.

        Parameters
        ----------
        nside : int
        rng : numpy.random.Generator
        high, plane : float
            Median intensity over |b| > 30 deg and |b| < 5 deg at ``freq_ref_ghz``, uK_CMB.
        plane_width : float
            Width of the latitude profile's core, in sin b.
        lon_contrast : float
            Log-amplitude of the inner-Galaxy enhancement along the plane.
        sigma, alpha, ell_flat : float
            Structure exp(sigma G), G with C_ell ~ max(ell, ell_flat)^-alpha.
        beta_mean, beta_rms, temp_mean, temp_rms : float
            Spectral index and temperature (K) maps: mean + rms x smooth Gaussian field, before the two
            couplings below.
        temp_column_slope : float
            K per e-fold of intensity by which the dust is colder where denser:
            ``T -= temp_column_slope ln(I / median I)`` (then at least 5 K).
        beta_temp_slope : float
            ``beta -= beta_temp_slope (T - temp_mean)``: the beta-T anticorrelation of a positive slope.
        pol_frac, pol_frac_max, pol_sigma : float
            Median and cap of P/I, log-normal scatter of the fraction.
        turbulence, eb_ratio, alpha_pol : float
            Random spin-2 part of the field direction (rms relative to the ordered part), its BB/EE ratio and
            spectral slope.
        field_l0, field_b0 : float
            Direction of the ordered magnetic field, Galactic degrees.
        morphology : {"lognormal", "filament"}
            "filament" multiplies the intensity by a network of filaments (the zero set of a Gaussian field with
            C_ell ~ ell^-filament_alpha, relative width ``filament_width`` in that field, share
            ``filament_contrast`` of the emission) and polarises them across their length with weight
            ``alignment`` (relative to the ordered field).
        filament_width, filament_contrast, filament_alpha, alignment : float
            Filament options (ignored for "lognormal").
        structure : ndarray, shape (npix,), optional
            A Gaussian field to use as G (to correlate components; unit variance over ell <= NORM_LMAX);
            drawn if omitted.
        """
        nside = sht.check_nside(nside)
        iqu = _polarised_template(nside, rng, structure, **_pick(locals(), _POLARISED_KEYS))
        beta = _smooth_param(nside, rng, beta_mean, beta_rms)
        temp = _smooth_param(nside, rng, temp_mean, temp_rms)
        if temp_column_slope:
            temp = temp - temp_column_slope * np.log(iqu[0] / np.median(iqu[0]))
        temp = np.maximum(temp, 5.0)
        if beta_temp_slope:
            beta = beta - beta_temp_slope * (temp - temp_mean)
        return cls(iqu, beta=beta, temp=temp, freq_ref_ghz=freq_ref_ghz, unit="uK_CMB")


class TwoComponentDust(_Polarised):
    """Thermal dust as two modified black bodies (a cold and a hot population), FDS / Meisner–Finkbeiner-like.

    ``T_RJ(nu) = A(nu0) [f MBB_c(nu) + (1 - f) MBB_h(nu)]``, each ``MBB`` the modified black body of
    :class:`ThermalDust` normalised to 1 at ``nu0``, so ``f`` is the cold fraction of the emission at ``nu0``.
    The same law holds for I, Q and U.

    Parameters
    ----------
    iqu : array_like, shape (3, npix)
        Stokes I, Q, U at ``freq_ref_ghz`` in ``unit``.
    frac_cold : float or ndarray (npix,)
        Fraction of the emission at ``freq_ref_ghz`` from the cold component, in [0, 1].
    beta_cold, temp_cold, beta_hot, temp_hot : float or ndarray (npix,)
        Emissivity index and temperature (K, > 0) of each component.
    freq_ref_ghz : float
        Reference frequency, GHz.
    unit : str
        Unit of ``iqu``, converted at ``freq_ref_ghz``.
    """

    def __init__(
        self,
        iqu,
        *,
        frac_cold=0.69,
        beta_cold=1.63,
        temp_cold=9.75,
        beta_hot=2.82,
        temp_hot=15.7,
        freq_ref_ghz: float = 353.0,
        unit: str = "uK_RJ",
    ):
        npix = self._set_template(iqu, freq_ref_ghz, unit, "dust")
        self.frac_cold = _param(frac_cold, npix, "frac_cold")
        if np.any((self.frac_cold < 0) | (self.frac_cold > 1)):
            raise ValueError("frac_cold must be in [0, 1]")
        self.beta_cold = _param(beta_cold, npix, "beta_cold")
        self.temp_cold = _param(temp_cold, npix, "temp_cold")
        self.beta_hot = _param(beta_hot, npix, "beta_hot")
        self.temp_hot = _param(temp_hot, npix, "temp_hot")
        self._cold = _ModifiedBlackBody(self.beta_cold, self.temp_cold, self.freq_ref_ghz)
        self._hot = _ModifiedBlackBody(self.beta_hot, self.temp_hot, self.freq_ref_ghz)

    def sed(self, freq) -> np.ndarray:
        """T_RJ(freq) / T_RJ(freq_ref), scalar or shape (npix,)."""
        nu = _ghz(freq)
        return self.frac_cold * self._cold(nu) + (1.0 - self.frac_cold) * self._hot(nu)

    @classmethod
    def random(
        cls,
        nside: int,
        rng: np.random.Generator,
        *,
        frac_cold_mean: float = 0.69,
        frac_cold_rms: float = 0.05,
        beta_cold: float = 1.63,
        beta_hot: float = 2.82,
        temp_hot_mean: float = 15.7,
        temp_hot_rms: float = 1.0,
        temp_ratio: float = 0.621,
        temp_column_slope: float = 1.0,
        **morphology,
    ) -> TwoComponentDust:
        """Draw a synthetic two-component dust sky.

        The template (intensity and polarisation) is that of :meth:`ThermalDust.random` with ``morphology``
        (its keyword arguments except the spectral ones: ``high``, ``plane``, ``alpha``, ``pol_frac``, ...,
        ``structure``). The hot temperature falls with column density:
        ``T_h = temp_hot_mean + temp_hot_rms G - temp_column_slope ln(I / median I)`` (K, at least 5 K), and
        ``T_c = temp_ratio T_h``; the cold fraction is ``frac_cold_mean + frac_cold_rms G'`` clipped to
        [0, 1]; G, G' smooth unit-variance Gaussian fields. Defaults: Meisner & Finkbeiner (2015),
        beta 1.63 / 2.82, T 9.75 / 15.7 K, which gives a cold fraction of 0.69 at 353 GHz.

        Parameters
        ----------
        nside : int
        rng : numpy.random.Generator
        frac_cold_mean, frac_cold_rms : float
            Cold fraction of the emission at the reference frequency.
        beta_cold, beta_hot : float
            Emissivity indices.
        temp_hot_mean, temp_hot_rms : float
            Hot-component temperature, K.
        temp_ratio : float
            T_c / T_h.
        temp_column_slope : float
            K per e-fold of intensity by which the dust cools in dense regions.
        **morphology
            Keyword arguments of :meth:`ThermalDust.random` other than ``beta_*`` and ``temp_*``.
        """
        spectral = sorted(k for k in morphology if k.startswith(("beta_", "temp_")))
        if spectral:
            raise ValueError(f"{spectral} are single-MBB options; TwoComponentDust takes its own spectral options")
        base = ThermalDust.random(nside, rng, beta_rms=0.0, temp_rms=0.0, temp_column_slope=0.0, **morphology)
        intensity = base.iqu[0]
        frac = np.clip(_smooth_param(base.nside, rng, frac_cold_mean, frac_cold_rms), 0.0, 1.0)
        temp_hot = _smooth_param(base.nside, rng, temp_hot_mean, temp_hot_rms)
        temp_hot = np.maximum(temp_hot - temp_column_slope * np.log(intensity / np.median(intensity)), 5.0)
        return cls(
            base.iqu,
            frac_cold=frac,
            beta_cold=beta_cold,
            temp_cold=temp_ratio * temp_hot,
            beta_hot=beta_hot,
            temp_hot=temp_hot,
            freq_ref_ghz=base.freq_ref_ghz,
        )


class Synchrotron(_Polarised):
    """Synchrotron: ``T_RJ(nu) = A(nu0) (nu / nu0)^(beta + C ln(nu / nu0))`` for I, Q and U.

    Parameters
    ----------
    iqu : array_like, shape (3, npix)
        Stokes I, Q, U at ``freq_ref_ghz`` in ``unit``.
    beta : float or ndarray (npix,)
        Spectral index in RJ temperature (about -3).
    curvature : float or ndarray (npix,)
        Curvature C (0: pure power law).
    freq_ref_ghz : float
    unit : str
    """

    def __init__(self, iqu, *, beta=-3.0, curvature=0.0, freq_ref_ghz: float = 30.0, unit: str = "uK_RJ"):
        npix = self._set_template(iqu, freq_ref_ghz, unit, "synchrotron")
        self.beta = _param(beta, npix, "beta")
        self.curvature = _param(curvature, npix, "curvature")

    def sed(self, freq) -> np.ndarray:
        """T_RJ(freq) / T_RJ(freq_ref), scalar or shape (npix,)."""
        r = np.log(_ghz(freq) / self.freq_ref_ghz)
        return np.exp((self.beta + self.curvature * r) * r)

    @classmethod
    def random(
        cls,
        nside: int,
        rng: np.random.Generator,
        *,
        high: float = 31.0,
        plane: float = 180.0,
        freq_ref_ghz: float = 30.0,
        plane_width: float = 0.1,
        lon_contrast: float = 0.7,
        sigma: float = 0.5,
        alpha: float = 2.9,
        ell_flat: float = 12.0,
        beta_mean: float = -3.0,
        beta_rms: float = 0.1,
        curvature: float = 0.0,
        pol_frac: float = 0.2,
        pol_frac_max: float = 0.7,
        pol_sigma: float = 0.3,
        turbulence: float = 1.5,
        eb_ratio: float = 0.1,
        alpha_pol: float = 2.4,
        field_l0: float = 70.0,
        field_b0: float = 0.0,
        morphology: str = "lognormal",
        filament_width: float = 0.6,
        filament_contrast: float = 0.7,
        filament_alpha: float = 4.5,
        alignment: float = 2.0,
        structure: np.ndarray | None = None,
    ) -> Synchrotron:
        """Draw a synthetic synchrotron sky; parameters as :meth:`ThermalDust.random` (``high``/``plane`` in
        uK_CMB at ``freq_ref_ghz``), with the spectral index ``beta_mean + beta_rms G`` and a constant
        ``curvature``."""
        nside = sht.check_nside(nside)
        iqu = _polarised_template(nside, rng, structure, **_pick(locals(), _POLARISED_KEYS))
        beta = _smooth_param(nside, rng, beta_mean, beta_rms)
        return cls(iqu, beta=beta, curvature=curvature, freq_ref_ghz=freq_ref_ghz, unit="uK_CMB")


class _IntensityOnly(Component):
    """A component with emission in Stokes I only (Q = U = 0)."""

    def __init__(self, i, freq_ref_ghz: float, unit: str, name: str):
        self.freq_ref_ghz = float(freq_ref_ghz)
        self.i = _template(i, 1, self.freq_ref_ghz, unit, name)[0]
        self.nside = sht.nside_of(self.i)

    def sed(self, freq) -> np.ndarray:
        raise NotImplementedError

    def emission(self, freq):
        """Stokes I, Q, U at ``freq`` (Q = U = 0), shape (3, npix), uK_RJ."""
        out = np.zeros((3, self.i.shape[-1]))
        out[0] = self.i * self.sed(freq)
        return _iqu_quantity(out)


class FreeFree(_IntensityOnly):
    """Free-free: ``T_RJ(nu) = A(nu0) (nu / nu0)^beta`` in intensity.

    Parameters
    ----------
    i : array_like, shape (npix,)
        Intensity at ``freq_ref_ghz`` in ``unit``.
    beta : float or ndarray (npix,)
        Spectral index in RJ temperature (-2.14 as PySM's f1).
    freq_ref_ghz : float
    unit : str
    """

    def __init__(self, i, *, beta=-2.14, freq_ref_ghz: float = 30.0, unit: str = "uK_RJ"):
        super().__init__(i, freq_ref_ghz, unit, "free-free")
        self.beta = _param(beta, self.i.shape[-1], "beta")

    def sed(self, freq) -> np.ndarray:
        """T_RJ(freq) / T_RJ(freq_ref), scalar or shape (npix,)."""
        return np.exp(self.beta * np.log(_ghz(freq) / self.freq_ref_ghz))

    @classmethod
    def random(
        cls,
        nside: int,
        rng: np.random.Generator,
        *,
        high: float = 4.0,
        plane: float = 500.0,
        freq_ref_ghz: float = 30.0,
        plane_width: float = 0.01,
        lon_contrast: float = 1.5,
        sigma: float = 1.0,
        alpha: float = 1.6,
        ell_flat: float = 12.0,
        beta_mean: float = -2.14,
        beta_rms: float = 0.0,
        structure: np.ndarray | None = None,
    ) -> FreeFree:
        """Draw a synthetic free-free sky (clumpier and narrower than dust); ``high``/``plane`` in uK_CMB at
        ``freq_ref_ghz``, spectral index ``beta_mean + beta_rms G``."""
        nside = sht.check_nside(nside)
        amp = _intensity(nside, rng, structure, **_pick(locals(), _INTENSITY_KEYS))
        beta = _smooth_param(nside, rng, beta_mean, beta_rms)
        return cls(amp, beta=beta, freq_ref_ghz=freq_ref_ghz, unit="uK_CMB")


class _PeakedAME(_IntensityOnly):
    """Spinning-dust emission in intensity with a per-pixel peak frequency (subclasses define the SED shape)."""

    def __init__(self, i, freq_peak_ghz, freq_ref_ghz: float, unit: str):
        super().__init__(i, freq_ref_ghz, unit, "AME")
        self.freq_peak_ghz = _param(freq_peak_ghz, self.i.shape[-1], "freq_peak_ghz")
        if np.any(self.freq_peak_ghz <= 0):
            raise ValueError("AME peak frequency must be positive")

    @classmethod
    def _draw(
        cls, nside: int, rng: np.random.Generator, structure, freq_peak_mean: float, freq_peak_rms: float, **intensity
    ) -> tuple[np.ndarray, np.ndarray]:
        """Intensity (uK_CMB at the reference frequency) and peak-frequency (GHz) maps of ``random``."""
        amp = _intensity(sht.check_nside(nside), rng, structure, **intensity)
        peak = np.maximum(_smooth_param(nside, rng, freq_peak_mean, freq_peak_rms), 5.0)
        return amp, peak


class AME(_PeakedAME):
    """Anomalous microwave emission (spinning dust) as a log-normal spectrum in specific intensity.

    ``I_nu(nu) / I_nu(nu0) = exp(-[ln^2(nu / nu_p) - ln^2(nu0 / nu_p)] / (2 W^2))``, so
    ``T_RJ(nu) = A(nu0) (nu0 / nu)^2 I_nu(nu) / I_nu(nu0)``: a broad phenomenological spectrum (too bright
    above 70 GHz for the real sky; the "alt" stress model uses it, :class:`SpinningDust` is the default).

    Parameters
    ----------
    i : array_like, shape (npix,)
        Intensity at ``freq_ref_ghz`` in ``unit``.
    freq_peak_ghz : float or ndarray (npix,)
        Peak frequency of I_nu, GHz.
    width : float
        W, width in ln(nu).
    freq_ref_ghz : float
    unit : str
    """

    def __init__(self, i, *, freq_peak_ghz=28.0, width: float = 0.5, freq_ref_ghz: float = 30.0, unit: str = "uK_RJ"):
        super().__init__(i, freq_peak_ghz, freq_ref_ghz, unit)
        if not width > 0:
            raise ValueError("AME width must be positive")
        self.width = float(width)
        self._log_peak = np.log(self.freq_peak_ghz)
        self._log_ref = (np.log(self.freq_ref_ghz) - self._log_peak) ** 2

    def sed(self, freq) -> np.ndarray:
        """T_RJ(freq) / T_RJ(freq_ref), scalar or shape (npix,)."""
        nu = _ghz(freq)
        arg = (np.log(nu) - self._log_peak) ** 2
        arg -= self._log_ref
        arg *= -0.5 / self.width**2
        return (self.freq_ref_ghz / nu) ** 2 * np.exp(arg)

    @classmethod
    def random(
        cls,
        nside: int,
        rng: np.random.Generator,
        *,
        high: float = 14.0,
        plane: float = 440.0,
        freq_ref_ghz: float = 30.0,
        plane_width: float = 0.02,
        lon_contrast: float = 1.2,
        sigma: float = 0.5,
        alpha: float = 2.8,
        ell_flat: float = 12.0,
        freq_peak_mean: float = 28.0,
        freq_peak_rms: float = 2.0,
        width: float = 0.5,
        structure: np.ndarray | None = None,
    ) -> AME:
        """Draw a synthetic AME sky; ``high``/``plane`` in uK_CMB at ``freq_ref_ghz``, peak-frequency map
        ``freq_peak_mean + freq_peak_rms G`` (GHz). Pass the dust ``structure`` to correlate AME with dust."""
        amp, peak = cls._draw(nside, rng, structure, freq_peak_mean, freq_peak_rms, **_pick(locals(), _INTENSITY_KEYS))
        return cls(amp, freq_peak_ghz=peak, width=width, freq_ref_ghz=freq_ref_ghz, unit="uK_CMB")


class SpinningDust(_PeakedAME):
    """Anomalous microwave emission with a spinning-dust-like peaked spectrum.

    ``I_nu(nu) ~ (nu / nu_p)^a exp[(a / 2)(1 - (nu / nu_p)^2)]``: a power law below the peak ``nu_p`` and a
    Gaussian cut-off above it, the shape of the emission of grains with a thermal (Maxwellian) spread of
    rotation rates, broadened by a low ``a`` for a spread of grain sizes (spdust2 spectra, PySM a1, fall as
    fast above the peak; a log-normal does not). In RJ temperature relative to ``nu0``:
    ``T_RJ(nu) / T_RJ(nu0) = (nu / nu0)^(a - 2) exp(-(a / 2)(nu^2 - nu0^2) / nu_p^2)``.

    Parameters
    ----------
    i : array_like, shape (npix,)
        Intensity at ``freq_ref_ghz`` in ``unit``.
    freq_peak_ghz : float or ndarray (npix,)
        Peak frequency of I_nu, GHz.
    index : float
        a (> 0), the low-frequency slope of I_nu; larger is narrower.
    freq_ref_ghz : float
    unit : str
    """

    def __init__(self, i, *, freq_peak_ghz=28.0, index: float = 1.2, freq_ref_ghz: float = 30.0, unit: str = "uK_RJ"):
        super().__init__(i, freq_peak_ghz, freq_ref_ghz, unit)
        if not index > 0:
            raise ValueError(f"spinning-dust index must be positive, got {index}")
        self.index = float(index)
        self._cut = 0.5 * self.index / self.freq_peak_ghz**2

    def sed(self, freq) -> np.ndarray:
        """T_RJ(freq) / T_RJ(freq_ref), scalar or shape (npix,)."""
        nu = _ghz(freq)
        return (nu / self.freq_ref_ghz) ** (self.index - 2.0) * np.exp(-self._cut * (nu**2 - self.freq_ref_ghz**2))

    @classmethod
    def random(
        cls,
        nside: int,
        rng: np.random.Generator,
        *,
        high: float = 14.0,
        plane: float = 440.0,
        freq_ref_ghz: float = 30.0,
        plane_width: float = 0.02,
        lon_contrast: float = 1.2,
        sigma: float = 1.0,
        alpha: float = 1.2,
        ell_flat: float = 12.0,
        freq_peak_mean: float = 28.0,
        freq_peak_rms: float = 2.0,
        index: float = 1.2,
        structure: np.ndarray | None = None,
    ) -> SpinningDust:
        """Draw a synthetic spinning-dust sky; as :meth:`AME.random` with the SED index ``index``."""
        amp, peak = cls._draw(nside, rng, structure, freq_peak_mean, freq_peak_rms, **_pick(locals(), _INTENSITY_KEYS))
        return cls(amp, freq_peak_ghz=peak, index=index, freq_ref_ghz=freq_ref_ghz, unit="uK_CMB")


# --------------------------------------------------------------------------------------------- factories

#: The synthetic components by name: each a :class:`~cosmobench.sky.components.Component` subclass with a
#: classmethod ``random(nside, rng, **options)`` drawing one realisation. :func:`register_component` adds one;
#: ``simulate.foreground_components`` (CMB task) selects them by name.
COMPONENTS: dict[str, type[Component]] = {
    "dust": ThermalDust,
    "synchrotron": Synchrotron,
    "freefree": FreeFree,
    "ame": SpinningDust,
}


def register_component(name: str, cls: type[Component]) -> None:
    """Make ``cls`` the synthetic component ``name`` (selectable in ``foreground_components``).

    Parameters
    ----------
    name : str
        Component name; its options go to :func:`synthetic_foregrounds` as ``name={...}``.
    cls : type
        A :class:`~cosmobench.sky.components.Component` subclass with a classmethod ``random(nside, rng,
        **options)``; its realisation draws from its own stream, ``(foreground stream, "component", name)``.
    """
    if not (isinstance(cls, type) and issubclass(cls, Component) and hasattr(cls, "random")):
        raise TypeError(f"{cls!r} must be a Component subclass with a classmethod random(nside, rng, **options)")
    COMPONENTS[name] = cls


def _component_stream(rng: np.random.Generator, name: str) -> np.random.Generator:
    """The stream of a registered (non-built-in) component: keyed by its name under ``rng``'s seed sequence, so
    that adding a component changes no other component's realisation."""
    from ..core.seeds import key_to_ints

    seq = rng.bit_generator.seed_seq
    return np.random.default_rng(
        np.random.SeedSequence(seq.entropy, spawn_key=(*seq.spawn_key, *key_to_ints(("component", name))))
    )


DUST_MODELS = {"mbb": ThermalDust, "two_mbb": TwoComponentDust}
AME_MODELS = {"spinning": SpinningDust, "lognormal": AME}

# Named synthetic foreground models: keyword arguments of synthetic_foregrounds (docs/foregrounds.md).
# "default" is calibrated on the real-sky statistics of PySM d1/s1/f1/a1 (cosmobench.sky.realism); "alt" is the
# stress model for out-of-distribution test splits (two-component dust with more small-scale structure, curved
# and steeper synchrotron, a broad log-normal AME peaking lower and less tied to dust, higher dust polarisation,
# E ~ B); it spells out the former defaults it relies on. "filament" has an independent morphology (filament
# networks in dust and synchrotron, polarised across the filaments) and a beta-T anticorrelated dust SED.
# "perturbed" is the default model with its amplitudes, structure slopes and spectral laws moved by about their
# measured spreads (flatter, brighter dust with a wider beta and T spread, flatter synchrotron with twice its beta
# spread, AME peaking lower): the foregrounds of a validation split on which learned error bars are calibrated
# (docs/cmb_methods.md), so that neither out-of-distribution test model is seen before the test.
FOREGROUND_MODELS: dict[str, dict] = {
    "default": {},
    "alt": {
        "dust_model": "two_mbb",
        "dust": {
            "high": 250.0,
            "plane": 1.0e4,
            "ell_flat": 12.0,
            "sigma": 0.6,
            "alpha": 2.3,
            "pol_frac": 0.12,
            "turbulence": 1.0,
            "eb_ratio": 0.5,
            "alpha_pol": 2.5,
        },
        "synchrotron": {
            "high": 25.0,
            "plane": 200.0,
            "alpha": 2.6,
            "beta_mean": -3.1,
            "beta_rms": 0.15,
            "curvature": -0.052,
            "pol_frac": 0.15,
            "pol_sigma": 0.4,
            "turbulence": 0.6,
            "eb_ratio": 0.5,
            "alpha_pol": 2.7,
            "field_l0": 80.0,
        },
        "freefree": {"sigma": 1.1, "alpha": 2.4, "beta_rms": 0.05},
        "ame_model": "lognormal",
        "ame": {"high": 10.0, "plane": 500.0, "freq_peak_mean": 22.0, "freq_peak_rms": 3.0, "width": 0.6},
        "ame_dust_correlation": 0.5,
    },
    "filament": {
        "dust": {
            "morphology": "filament",
            "high": 295.0,
            "sigma": 0.4,
            "alpha": 3.0,
            "beta_mean": 1.58,
            "beta_rms": 0.03,
            "beta_temp_slope": 0.03,
            "temp_mean": 19.5,
            "temp_rms": 1.5,
            "temp_column_slope": 0.8,
            "turbulence": 0.5,
            "eb_ratio": 0.5,
            "field_l0": 60.0,
        },
        "synchrotron": {
            "morphology": "filament",
            "filament_width": 0.4,
            "filament_contrast": 0.5,
            "alpha": 3.1,
            "beta_mean": -3.05,
            "beta_rms": 0.08,
            "turbulence": 0.5,
            "eb_ratio": 0.5,
            "field_l0": 60.0,
        },
        "freefree": {"sigma": 1.2, "alpha": 1.8},
        "ame": {"freq_peak_mean": 25.0, "index": 1.5},
        "ame_dust_correlation": 0.9,
    },
    "perturbed": {
        "dust": {
            "high": 330.0,
            "sigma": 0.55,
            "alpha": 2.6,
            "beta_mean": 1.50,
            "beta_rms": 0.08,
            "temp_mean": 19.0,
            "temp_rms": 1.8,
            "pol_frac": 0.10,
            "eb_ratio": 0.4,
        },
        "synchrotron": {"high": 28.0, "alpha": 2.75, "beta_mean": -2.95, "beta_rms": 0.2, "pol_frac": 0.17},
        "freefree": {"high": 5.0, "beta_mean": -2.10},
        "ame": {"high": 16.0, "freq_peak_mean": 25.0, "freq_peak_rms": 3.0},
        "ame_dust_correlation": 0.8,
    },
}


def foreground_model(model: str | Mapping | None) -> dict:
    """The keyword arguments of :func:`synthetic_foregrounds` for a named model, or a mapping checked as such.

    Parameters
    ----------
    model : str, mapping or None
        A name in :data:`FOREGROUND_MODELS` (``None`` = ``"default"``), or a mapping of keyword arguments
        of :func:`synthetic_foregrounds` (other than ``components``).

    Returns
    -------
    dict
        A new (deep-copied) dict of keyword arguments.
    """
    import copy

    if model is None:
        model = "default"
    if isinstance(model, str):
        if model not in FOREGROUND_MODELS:
            raise ValueError(f"unknown foreground model {model!r}; expected one of {list(FOREGROUND_MODELS)}")
        return copy.deepcopy(FOREGROUND_MODELS[model])
    if not isinstance(model, Mapping):
        raise TypeError(f"a foreground model is a name or a mapping of options, got {type(model).__name__}")
    allowed = set(inspect.signature(synthetic_foregrounds).parameters) - {"nside", "rng", "components"}
    unknown = sorted(set(model) - allowed)
    if unknown:
        raise ValueError(f"unknown foreground-model options {unknown}; expected some of {sorted(allowed)}")
    return copy.deepcopy(dict(model))


def _structure(nside: int, rng: np.random.Generator, cls: type, opts: dict) -> np.ndarray:
    """The structure field G that ``cls.random`` would draw with options ``opts``."""
    defaults = inspect.signature(cls.random).parameters
    alpha = opts.get("alpha", defaults["alpha"].default)
    return _structure_field(nside, rng, alpha, opts.get("ell_flat", defaults["ell_flat"].default))


def synthetic_foregrounds(
    nside: int,
    rng: np.random.Generator,
    *,
    components: Sequence[str] = SYNTHETIC_COMPONENTS,
    dust: dict | None = None,
    synchrotron: dict | None = None,
    freefree: dict | None = None,
    ame: dict | None = None,
    ame_dust_correlation: float = 0.65,
    dust_model: str = "mbb",
    ame_model: str = "spinning",
    **others: dict | None,
) -> list[Component]:
    """A new synthetic foreground sky.

    Each component draws from its own child stream of ``rng`` (spawned in the fixed order dust, synchrotron,
    free-free, AME, plus one for the dust structure shared with AME), so a component's realisation does not
    depend on which others are requested.

    Parameters
    ----------
    nside : int
    rng : numpy.random.Generator
        Source of randomness (e.g. :func:`foreground_rng`).
    components : sequence of str
        Any of "dust", "synchrotron", "freefree", "ame"; returned in this order.
    dust, synchrotron, freefree, ame : dict, optional
        Keyword arguments of each class's ``random`` (e.g. ``dust={"beta_rms": 0.2}``).
    ame_dust_correlation : float
        Correlation coefficient between the AME and dust structure fields, in [-1, 1].
    dust_model : {"mbb", "two_mbb"}
        :class:`ThermalDust` (one modified black body) or :class:`TwoComponentDust`; ``dust`` holds the
        chosen class's ``random`` options.
    **others : dict, optional
        Options of other components registered with :func:`register_component`, by name.
    ame_model : {"spinning", "lognormal"}
        :class:`SpinningDust` (peaked SED) or :class:`AME` (log-normal SED); ``ame`` holds its ``random``
        options.

    Returns
    -------
    list of Component
    """
    nside = sht.check_nside(nside)
    names = list(components)
    unknown = [c for c in names if c not in COMPONENTS]
    if unknown or len(set(names)) != len(names):
        raise ValueError(f"components must be distinct names from {list(COMPONENTS)}, got {names}")
    unknown = sorted(set(others) - set(COMPONENTS))
    if unknown:
        raise ValueError(f"unknown foreground components {unknown}; registered: {list(COMPONENTS)}")
    if not -1 <= ame_dust_correlation <= 1:
        raise ValueError(f"ame_dust_correlation must be in [-1, 1], got {ame_dust_correlation}")
    if dust_model not in DUST_MODELS:
        raise ValueError(f"unknown dust_model {dust_model!r}; expected one of {list(DUST_MODELS)}")
    if ame_model not in AME_MODELS:
        raise ValueError(f"unknown ame_model {ame_model!r}; expected one of {list(AME_MODELS)}")
    classes = dict(COMPONENTS, dust=DUST_MODELS[dust_model], ame=AME_MODELS[ame_model])
    options = {"dust": dust, "synchrotron": synchrotron, "freefree": freefree, "ame": ame, **others}
    for name, opts in options.items():
        if opts and name not in names:
            raise ValueError(f"options given for {name!r}, which is not among the components {names}")
    streams = dict(zip(("shared", *SYNTHETIC_COMPONENTS), rng.spawn(1 + len(SYNTHETIC_COMPONENTS))))
    shared = None
    if "dust" in names or "ame" in names:
        shared = _structure(nside, streams["shared"], ThermalDust, dust or {})
    out = []
    for name in names:
        opts = dict(options.get(name) or {})
        if "structure" in opts:
            raise ValueError("'structure' is set by synthetic_foregrounds; call the class's random() to pass one")
        if name == "dust":
            opts["structure"] = shared
        elif name == "ame":
            rho = ame_dust_correlation
            own = _structure(nside, streams["ame"], classes["ame"], opts)
            opts["structure"] = rho * shared + np.sqrt(1 - rho**2) * own
        stream = streams[name] if name in streams else _component_stream(rng, name)
        out.append(classes[name].random(nside, stream, **opts))
    return out


def foreground_rng(seed: int, *key: int | str, frozen: bool = False) -> np.random.Generator:
    """The foreground stream of one simulation: ``rng(seed, *key, "foregrounds")``.

    With ``frozen=True`` every simulation gets the same stream ``rng(seed, "frozen", "foregrounds")``, hence
    the same foreground sky (CMB-ML's choice; not recommended for training, see docs/foregrounds.md).
    """
    from ..core.seeds import rng

    return rng(seed, "frozen", "foregrounds") if frozen else rng(seed, *key, "foregrounds")


def make_foregrounds(
    backend: str,
    nside: int,
    rng: np.random.Generator | None,
    *,
    components: Sequence[str] | None = None,
    presets: Sequence[str] | None = None,
    model: str | Mapping | None = None,
    **params,
) -> list[Component]:
    """Foreground components from either backend.

    Parameters
    ----------
    backend : {"synthetic", "pysm3"}
    nside : int
    rng : numpy.random.Generator or None
        Needed by "synthetic"; "pysm3" skies are fixed templates and ignore it.
    components : sequence of str, optional
        Synthetic component names (default all four). For "pysm3" without ``presets`` they map to
        d1, s1, f1, a1.
    presets : sequence of str, optional
        PySM3 preset strings (e.g. ``["d9", "s4", "f1", "a1", "co1"]``); only for "pysm3".
    model : str or mapping, optional
        "synthetic" only: a named model of :data:`FOREGROUND_MODELS` ("default", "alt", "filament") or a mapping of
        :func:`synthetic_foregrounds` options (see :func:`foreground_model`).
    **params
        "synthetic": keyword arguments of :func:`synthetic_foregrounds`, on top of ``model`` (a component's
        dict updates the model's dict of that component); "pysm3": none.

    Returns
    -------
    list of Component
        Synthetic: one per component; pysm3: one :class:`~cosmobench.sky.pysm_backend.PySMComponent` per preset.
    """
    if backend not in FOREGROUND_BACKENDS:
        raise ValueError(f"unknown foreground backend {backend!r}; expected one of {list(FOREGROUND_BACKENDS)}")
    if backend == "synthetic":
        if presets:
            raise ValueError(f"presets {list(presets)} apply to the 'pysm3' backend; use components= for 'synthetic'")
        if rng is None:
            raise ValueError("the synthetic backend needs a random generator, e.g. foreground_rng(seed, split, index)")
        comps = SYNTHETIC_COMPONENTS if components is None else components
        kwargs = foreground_model(model)
        for key, value in params.items():
            kwargs[key] = {**(kwargs.get(key) or {}), **value} if isinstance(value, Mapping) else value
        # a model's options for components that are not requested are dropped; the caller's are checked
        kwargs.update({c: None for c in SYNTHETIC_COMPONENTS if c not in comps and c not in params})
        return synthetic_foregrounds(nside, rng, components=comps, **kwargs)
    if model not in (None, "default"):
        raise ValueError(f"foreground model {model!r} applies to the 'synthetic' backend, not 'pysm3'")
    if params:
        raise ValueError(f"the pysm3 backend takes no extra parameters, got {sorted(params)}")
    if not presets:
        names = list(SYNTHETIC_COMPONENTS if components is None else components)
        unknown = [c for c in names if c not in PYSM_DEFAULT_PRESETS]
        if unknown:
            raise ValueError(f"unknown components {unknown}; expected names from {list(PYSM_DEFAULT_PRESETS)}")
        presets = [PYSM_DEFAULT_PRESETS[c] for c in names]
    from .pysm_backend import PySMComponent, check_pysm_templates

    check_pysm_templates(presets, nside)
    return [PySMComponent([p], nside, check=False) for p in presets]
