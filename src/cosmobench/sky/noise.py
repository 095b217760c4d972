"""Instrument noise without any download: anisotropic white noise from a synthetic scan, plus 1/f-like noise.

- :func:`hit_map`: relative hits of a Planck-like scan (deterministic, mean 1).
- :func:`white_noise`: pixel rms ``depth / pixel side / sqrt(hits)``.
- :func:`correlated_noise`: isotropic Gaussian noise with N_ell = depth^2 (ell / ell_knee)^alpha.
- :func:`noise_maps`: both, for one :class:`~cosmobench.sky.instrument.Channel`.

Depths are in uK arcmin (uK_CMB for the instrument); maps come out in uK, shape (nfield, npix), RING.
"""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING

import numpy as np

from . import sht

if TYPE_CHECKING:
    from .instrument import Channel

__all__ = ["hit_map", "pixel_side_arcmin", "white_noise", "correlated_noise", "noise_maps", "SCAN"]

ARCMIN = np.pi / 180.0 / 60.0
# Planck-like scan: detectors 85 deg from the spin axis; the spin axis stays in the ecliptic plane up to a
# cycloidal excursion of 7.5 deg (Planck 2013 results I), so every ecliptic longitude is covered each year.
SCAN = {"opening_deg": 85.0, "precession_deg": 7.5}


def pixel_side_arcmin(nside: int) -> float:
    """Side of a HEALPix pixel, sqrt(4 pi / npix), arcmin."""
    return float(np.sqrt(4 * np.pi / sht.npix(nside)) / ARCMIN)


@functools.lru_cache(maxsize=1)
def _hits_vs_ecliptic_latitude() -> tuple[np.ndarray, np.ndarray]:
    """Relative hit density per solid angle on a grid of sin(ecliptic latitude), longitude-averaged."""
    alpha = np.radians(SCAN["opening_deg"])
    amp = np.radians(SCAN["precession_deg"])
    phi = (np.arange(4096) + 0.5) * 2 * np.pi / 4096  # position on a scan circle
    delta = amp * np.sin((np.arange(256) + 0.5) * 2 * np.pi / 256)  # spin-axis latitude over a cycle
    # latitude of a point on the circle of opening alpha around an axis at latitude delta
    sin_lat = np.cos(alpha) * np.sin(delta)[:, None] + np.sin(alpha) * np.cos(delta)[:, None] * np.cos(phi)
    edges = np.linspace(-1.0, 1.0, 801)  # uniform in sin(latitude) = uniform in solid angle
    counts, _ = np.histogram(sin_lat.ravel(), bins=edges)
    # smooth the caustics of the scan rings (beam size, pointing jitter, detector offsets) over ~1 deg
    kernel = np.exp(-0.5 * (np.arange(-12, 13) / 4.0) ** 2)
    padded = np.concatenate([counts[12:0:-1], counts, counts[-2:-14:-1]])
    density = np.convolve(padded, kernel / kernel.sum(), mode="valid")
    return 0.5 * (edges[1:] + edges[:-1]), density / density.mean()


@functools.lru_cache(maxsize=4)
def hit_map(nside: int) -> np.ndarray:
    """Relative hit counts of a Planck-like scan, in Galactic coordinates.

    Deterministic: the spin axis follows the Sun along the ecliptic with a small cycloidal excursion and the
    detectors scan circles 85 deg from it, so pixels near the ecliptic poles are seen most (a deep ring at
    ecliptic latitude ~80-90 deg) and those near the ecliptic least. Longitude structure is averaged out.

    Returns
    -------
    ndarray, shape (npix,), float64, mean 1, read-only
    """
    import healpy as hp

    nside = sht.check_nside(nside)
    vec = np.array(hp.pix2vec(nside, np.arange(sht.npix(nside))))
    sin_lat = hp.Rotator(coord=["G", "E"])(vec)[2]
    grid, density = _hits_vs_ecliptic_latitude()
    hits = np.interp(sin_lat, grid, density)
    hits /= hits.mean()
    hits.setflags(write=False)
    return hits


def _inv_sqrt_hits(nside: int, hits: np.ndarray | None) -> np.ndarray | float:
    if hits is None:
        return 1.0
    npix = sht.npix(nside)
    hits = np.asarray(hits, dtype=np.float64)
    if hits.shape != (npix,):
        raise ValueError(f"hits must have shape ({npix},) for nside {nside}, got {hits.shape}")
    if np.any(hits <= 0):
        raise ValueError("hits must be positive in every pixel")
    return 1.0 / np.sqrt(hits)


def _white(nside: int, depths: list[float], rng: np.random.Generator, inv_sqrt_hits) -> np.ndarray:
    """One white-noise map per depth: depth / pixel side * inv_sqrt_hits * N(0, 1), shape (len(depths), npix)."""
    # float32 normals are twice as fast to draw and ample for noise; the maps are float64
    out = np.multiply(
        rng.standard_normal((len(depths), sht.npix(nside)), dtype=np.float32), inv_sqrt_hits, dtype=np.float64
    )
    out *= (np.asarray(depths, dtype=np.float64) / pixel_side_arcmin(nside))[:, None]
    return out


def white_noise(
    nside: int, depth: float, rng: np.random.Generator, hits: np.ndarray | None = None, nfield: int = 1
) -> np.ndarray:
    """Uncorrelated pixel noise with rms ``depth / pixel side / sqrt(hits)``.

    Parameters
    ----------
    nside : int
    depth : float
        Noise depth at hits = 1, uK arcmin.
    rng : numpy.random.Generator
    hits : ndarray, shape (npix,), optional
        Relative hits (default uniform 1).
    nfield : int
        Number of independent maps.

    Returns
    -------
    ndarray, shape (nfield, npix), uK
    """
    return _white(nside, [depth] * nfield, rng, _inv_sqrt_hits(nside, hits))


def _knee_spectrum(depth: float, ell_knee: float, alpha: float, lmax: int) -> np.ndarray:
    ell = np.arange(lmax + 1, dtype=np.float64)
    nl = np.zeros(lmax + 1)
    nl[1:] = (depth * ARCMIN) ** 2 * (ell[1:] / ell_knee) ** alpha
    return nl


def correlated_noise(
    nside: int,
    depth: float,
    ell_knee: float,
    alpha: float,
    rng: np.random.Generator,
    lmax: int | None = None,
    nfield: int = 1,
) -> np.ndarray:
    """Isotropic Gaussian noise with N_ell = (depth in rad)^2 (ell / ell_knee)^alpha (monopole 0).

    Parameters
    ----------
    nside : int
    depth : float
        uK arcmin; the correlated part equals the white level at ``ell_knee``.
    ell_knee : float
        > 0.
    alpha : float
        Slope, e.g. -2 for 1/f-like noise.
    rng : numpy.random.Generator
    lmax : int, optional
        Band limit (default 3 nside - 1).
    nfield : {1, 3}
        I, or I, Q, U (T, E and B all with N_ell).

    Returns
    -------
    ndarray, shape (nfield, npix), uK
    """
    if ell_knee <= 0:
        raise ValueError(f"ell_knee must be positive, got {ell_knee}")
    if nfield not in (1, 3):
        raise ValueError(f"nfield must be 1 or 3, got {nfield}")
    lmax = sht.default_lmax(nside) if lmax is None else int(lmax)
    nl = _knee_spectrum(depth, ell_knee, alpha, lmax)
    cls = nl if nfield == 1 else np.stack([nl, nl, nl, np.zeros_like(nl)])
    return np.atleast_2d(sht.alm2map(sht.synalm(cls, lmax, rng), nside, lmax))


def noise_maps(channel: Channel, nside: int, rng: np.random.Generator, hits: np.ndarray | None = None) -> np.ndarray:
    """Noise of one channel: anisotropic white noise plus the correlated part when ``channel.ell_knee > 0``.

    Temperature uses ``channel.depth_i``, Q and U ``channel.depth_p``; the correlated part has the same
    levels at ``ell_knee``. All draws come from ``rng`` in a fixed order.

    Parameters
    ----------
    channel : Channel
    nside : int
    rng : numpy.random.Generator
    hits : ndarray, shape (npix,), optional
        Relative hits (default :func:`hit_map`).

    Returns
    -------
    ndarray, shape (channel.nfield, npix), uK_CMB
    """
    hits = hit_map(nside) if hits is None else hits
    depths = [channel.depth_i] + [channel.depth_p] * (channel.nfield - 1)
    out = _white(nside, depths, rng, _inv_sqrt_hits(nside, hits))
    if channel.ell_knee > 0:
        lmax = sht.default_lmax(nside)
        nl_i = _knee_spectrum(channel.depth_i, channel.ell_knee, channel.alpha_knee, lmax)
        if channel.nfield == 1:
            out += sht.alm2map(sht.synalm(nl_i, lmax, rng), nside, lmax)
        else:
            nl_p = _knee_spectrum(channel.depth_p, channel.ell_knee, channel.alpha_knee, lmax)
            cls = np.stack([nl_i, nl_p, nl_p, np.zeros_like(nl_i)])
            out += sht.alm2map(sht.synalm(cls, lmax, rng), nside, lmax)
    return out
