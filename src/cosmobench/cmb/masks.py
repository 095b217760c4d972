"""Analysis masks: foreground-threshold masks, reading user masks, apodisation, monopole/dipole removal.

Masks are float arrays of shape (npix,) in RING ordering: 1 = pixel used, 0 = masked.
"""

from __future__ import annotations

import functools
from pathlib import Path

import numpy as np

from cosmobench.sky import sht

__all__ = ["threshold_mask", "read_mask", "apodize", "latitude_mask", "remove_monopole_dipole", "sky_fraction"]


def sky_fraction(mask: np.ndarray) -> float:
    """Fraction of the sky kept, mean of the mask."""
    return float(np.mean(mask))


def threshold_mask(foreground: np.ndarray, fsky: float, *, smooth_deg: float = 2.0) -> np.ndarray:
    """Binary mask keeping the fraction ``fsky`` of the sky with the faintest foregrounds.

    Each foreground map is smoothed with a Gaussian of FWHM ``smooth_deg``, its absolute value divided by its
    median (so that maps at different frequencies weigh alike), and the pixel's intensity is the largest of
    these; the ``fsky`` fraction of pixels with the lowest intensity are kept.

    Parameters
    ----------
    foreground : ndarray, shape (npix,) or (nmap, npix), uK_CMB
        Foreground intensity, e.g. at the lowest and highest frequency (synchrotron- and dust-dominated).
    fsky : float
        Fraction of the sky to keep, in (0, 1].
    smooth_deg : float
        FWHM of the smoothing before thresholding, degrees (0 for none).

    Returns
    -------
    ndarray, shape (npix,), float64 of 0 and 1
    """
    if not 0 < fsky <= 1:
        raise ValueError(f"fsky must be in (0, 1], got {fsky}")
    fg = np.atleast_2d(np.asarray(foreground, dtype=np.float64))
    if smooth_deg > 0:
        fg = np.stack([sht.smooth(m, smooth_deg * 60.0) for m in fg])
    level = np.abs(fg)
    level /= np.maximum(np.median(level, axis=-1, keepdims=True), np.finfo(float).tiny)
    intensity = level.max(axis=0)
    nkeep = int(round(fsky * intensity.size))
    mask = np.zeros(intensity.size)
    mask[np.argsort(intensity, kind="stable")[:nkeep]] = 1.0
    return mask


def read_mask(path: str | Path, nside: int, threshold: float = 0.9) -> np.ndarray:
    """Read a HEALPix FITS mask (first column), bring it to ``nside`` and binarise it at ``threshold``.

    Like CMB-ML (Planck 2015 IX), pixels >= ``threshold`` after resolution change are kept.

    Returns
    -------
    ndarray, shape (12 nside^2,), float64 of 0 and 1
    """
    import healpy as hp

    from cosmobench.core.io import read_healpix

    m = read_healpix(path, field=0, dtype=np.float64)
    if sht.nside_of(m) != nside:
        m = hp.ud_grade(m, nside)
    out = (m >= threshold).astype(np.float64)
    if not out.any():
        raise ValueError(f"mask {path} keeps no pixel at threshold {threshold}; is it 1 = keep, 0 = masked?")
    return out


def apodize(mask: np.ndarray, scale_deg: float) -> np.ndarray:
    """C1 apodisation of a binary mask (NaMaster's "C1"), computed from the distance to the nearest masked pixel.

    ``w = x - sin(2 pi x) / (2 pi)`` with ``x = sqrt((1 - cos theta) / (1 - cos theta_apo))`` for
    theta < theta_apo, 1 beyond.

    Parameters
    ----------
    mask : ndarray, shape (npix,), 0/1
    scale_deg : float
        Apodisation scale theta_apo, degrees (0 returns the mask).

    Returns
    -------
    ndarray, shape (npix,), in [0, 1]
    """
    from scipy.spatial import cKDTree

    mask = np.asarray(mask, dtype=np.float64)
    if scale_deg <= 0 or mask.all():
        return mask.copy()
    vec = _unit_vectors(sht.nside_of(mask))
    kept = mask > 0
    max_chord = 2 * np.sin(np.radians(scale_deg) / 2)
    chord, _ = cKDTree(vec[~kept]).query(vec[kept], distance_upper_bound=max_chord * 1.001, workers=sht.nthreads())
    cos_theta = 1.0 - 0.5 * np.minimum(chord, 2.0) ** 2  # inf (farther than the scale) -> antipode
    x = np.sqrt(np.clip((1.0 - cos_theta) / (1.0 - np.cos(np.radians(scale_deg))), 0.0, None))
    w = np.where(x < 1.0, x - np.sin(2 * np.pi * x) / (2 * np.pi), 1.0)
    out = np.zeros_like(mask)
    out[kept] = w
    return out


def latitude_mask(nside: int, b_min_deg: float) -> np.ndarray:
    """1 where the Galactic latitude satisfies abs(b) > ``b_min_deg``, else 0 (RING, Galactic coordinates)."""
    import healpy as hp

    _, lat = hp.pix2ang(nside, np.arange(sht.npix(nside)), lonlat=True)
    return (np.abs(lat) > b_min_deg).astype(np.float64)


def remove_monopole_dipole(m: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Subtract the monopole and dipole fitted by least squares on the pixels where ``mask > 0``.

    Parameters
    ----------
    m : ndarray, shape (npix,)
    mask : ndarray, shape (npix,)

    Returns
    -------
    ndarray, shape (npix,): ``m`` minus the fitted ``c0 + c . n_hat`` on the whole sky
    """
    vec = _unit_vectors(sht.nside_of(m))
    keep = np.asarray(mask) > 0
    design = np.column_stack([np.ones(int(keep.sum())), vec[keep]])
    coef, *_ = np.linalg.lstsq(design, m[keep], rcond=None)
    return m - (coef[0] + vec @ coef[1:])


@functools.lru_cache(maxsize=2)
def _unit_vectors(nside: int) -> np.ndarray:
    """Pixel-centre unit vectors, shape (npix, 3), RING (read-only, cached)."""
    import healpy as hp

    vec = np.stack(hp.pix2vec(nside, np.arange(sht.npix(nside))), axis=-1)
    vec.setflags(write=False)
    return vec
