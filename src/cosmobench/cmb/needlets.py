"""Needlet window functions h_j(ell) for needlet ILC.

A needlet frame is a set of harmonic windows whose squares sum to one at every multipole,
``sum_j h_j(ell)^2 = 1``, so filtering a map with each window and again on the way back recovers it exactly.
Two families are provided, both as in PyILC (arXiv:2307.01043):

* cosine needlets, given by the multipoles where each window peaks (CMB-ML's CNILC setting), and
* Gaussian needlets, given by a decreasing list of Gaussian FWHMs (differences of squared Gaussian beams).

Windows are arrays of shape (nscale, lmax+1), dimensionless.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from cosmobench.sky import sht

__all__ = [
    "cosine_windows",
    "gaussian_windows",
    "default_ellpeaks",
    "default_lmax",
    "window_support",
    "n_modes",
    "needlet_nside",
]

# CMB-ML's CNILC settings (reference doc section 5.1): nside -> (ELLMAX, ellpeaks)
_CMBML_RECIPES = {128: (382, (100, 200, 300, 383)), 512: (1024, (200, 715, 1025))}


def default_lmax(nside: int) -> int:
    """Band limit of NILC at ``nside``: CMB-ML's rule, 3 nside - 2 up to nside 256 and 2 nside from 512 on.

    Gives ELLMAX 382 at nside 128 and 1024 at nside 512 like CMB-ML.
    """
    nside = sht.check_nside(nside)
    return 3 * nside - 2 if nside <= 256 else 2 * nside


def default_ellpeaks(nside: int, lmax: int | None = None) -> list[int]:
    """Cosine-needlet peaks scaled from CMB-ML's CNILC settings.

    Up to nside 256 the nside-128 recipe ``[100, 200, 300, ELLMAX+1]`` is scaled by nside/128; from nside 512
    on the nside-512 recipe ``[200, 715, ELLMAX+1]`` is scaled by nside/512. Inner peaks at or above ``lmax``
    are dropped and the last peak is ``lmax + 1``, so both CMB-ML settings are reproduced exactly.

    Parameters
    ----------
    nside : int
    lmax : int, optional
        Band limit; :func:`default_lmax` by default.

    Returns
    -------
    list of int
        Peaks after the implicit first one at ell = 0, increasing.
    """
    nside = sht.check_nside(nside)
    lmax = default_lmax(nside) if lmax is None else int(lmax)
    ref = 128 if nside <= 256 else 512
    inner = {max(1, int(round(p * nside / ref))) for p in _CMBML_RECIPES[ref][1][:-1]}
    return sorted(p for p in inner if p < lmax) + [lmax + 1]


def cosine_windows(ellpeaks: Sequence[int], lmax: int, ellmin: int = 0) -> np.ndarray:
    """Cosine needlet windows.

    Window j rises as sin(pi/2 x) from peak j-1 to peak j and falls as cos(pi/2 x) from peak j to peak j+1,
    with peaks ``[ellmin, *ellpeaks]``. The first window is 1 at and below ``ellmin``, the last is 1 from its
    peak to ``lmax``. Squares sum to one at every ell.

    Parameters
    ----------
    ellpeaks : sequence of int
        Increasing multipoles where windows 1..n peak (window 0 peaks at ``ellmin``), e.g. CMB-ML's
        ``[200, 715, 1025]`` with lmax 1024. A last peak above ``lmax`` is allowed (PyILC uses lmax + 1).
    lmax : int
        Band limit.
    ellmin : int
        Peak of the first window.

    Returns
    -------
    ndarray, shape (len(ellpeaks) + 1, lmax + 1)
    """
    peaks = np.asarray([ellmin, *ellpeaks], dtype=np.float64)
    if np.any(np.diff(peaks) <= 0):
        raise ValueError(f"ellpeaks must increase strictly from ellmin={ellmin}, got {list(ellpeaks)}")
    if peaks[-2] > lmax:
        raise ValueError(f"ellpeaks {list(ellpeaks)}: only the last peak may exceed lmax={lmax}")
    ell = np.arange(lmax + 1, dtype=np.float64)
    out = np.zeros((len(peaks), lmax + 1))
    for j, peak in enumerate(peaks):
        if j == 0:
            out[j, ell <= peak] = 1.0
        else:
            lo = peaks[j - 1]
            rising = (ell > lo) & (ell <= peak)
            out[j, rising] = np.sin(0.5 * np.pi * (ell[rising] - lo) / (peak - lo))
        if j == len(peaks) - 1:
            out[j, ell > peak] = 1.0
        else:
            hi = peaks[j + 1]
            falling = (ell > peak) & (ell < hi)
            out[j, falling] = np.cos(0.5 * np.pi * (ell[falling] - peak) / (hi - peak))
    return out


def gaussian_windows(fwhms_arcmin: Sequence[float], lmax: int) -> np.ndarray:
    """Gaussian needlet windows from a decreasing list of FWHMs.

    h_0 = b_0, h_j = sqrt(b_j^2 - b_{j-1}^2), h_last = sqrt(1 - b_{n-1}^2), with b_j the Gaussian beam of
    FWHM ``fwhms_arcmin[j]``. Squares telescope to one.

    Parameters
    ----------
    fwhms_arcmin : sequence of float
        Strictly decreasing FWHMs, arcmin.
    lmax : int

    Returns
    -------
    ndarray, shape (len(fwhms_arcmin) + 1, lmax + 1)
    """
    fwhms = np.asarray(fwhms_arcmin, dtype=np.float64)
    if fwhms.ndim != 1 or len(fwhms) == 0 or np.any(fwhms <= 0) or np.any(np.diff(fwhms) >= 0):
        raise ValueError(f"fwhms_arcmin must be positive and strictly decreasing, got {list(fwhms_arcmin)}")
    b2 = np.stack([sht.gauss_beam(f, lmax) ** 2 for f in fwhms] + [np.ones(lmax + 1)])
    diffs = np.diff(b2, axis=0, prepend=0.0)
    return np.sqrt(np.clip(diffs, 0.0, None))


def window_support(window: np.ndarray, rtol: float = 1e-12) -> tuple[int, int]:
    """First and last multipole where ``window`` (shape (lmax+1,)) exceeds ``rtol`` times its maximum."""
    nz = np.flatnonzero(np.abs(window) > rtol * np.abs(window).max())
    if len(nz) == 0:
        raise ValueError("needlet window is zero everywhere")
    return int(nz[0]), int(nz[-1])


def n_modes(window: np.ndarray) -> float:
    """Number of harmonic modes in a window, sum_ell (2 ell + 1) h(ell)^2."""
    ell = np.arange(len(window))
    return float(np.sum((2 * ell + 1) * window**2))


def needlet_nside(ell_top: int, nside: int) -> int:
    """Smallest power of two ``n`` with ``2 n >= ell_top`` (accurate analysis up to 2 nside), at most ``nside``."""
    n = 1
    while 2 * n < ell_top and n < nside:
        n *= 2
    return min(n, nside)
