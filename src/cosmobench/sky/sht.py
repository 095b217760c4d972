"""The few spherical-harmonic operations cosmobench uses, on HEALPix RING maps, through ducc0.

Conventions are healpy's: alm in healpy's (m-major) triangular layout with ``mmax = lmax``, polarisation
as (T, E, B) <-> (I, Q, U) with the HEALPix (COSMO=False) sign convention, C_ell from ``alm2cl``.
ducc0 is 4-15x faster than healpy on these machines and agrees with it to 1e-14. The number of threads
is ``COSMOBENCH_THREADS`` when set (executors set 1 per worker), else all cores.

Shapes: ``alm`` is (ncomp, nalm) complex with ncomp 1 (T) or 3 (T, E, B); maps are (ncomp, npix).
"""

from __future__ import annotations

import functools
import os

import numpy as np

__all__ = [
    "nthreads",
    "npix",
    "nside_of",
    "check_nside",
    "default_lmax",
    "alm_size",
    "alm_lmax",
    "alm_ell",
    "alm2map",
    "map2alm",
    "almxfl",
    "alm2cl",
    "synalm",
    "gauss_beam",
    "smooth",
    "reconvolve",
    "beam_ratio",
]


def nthreads() -> int:
    """Threads for ducc0: ``COSMOBENCH_THREADS`` if set, else the usable cores."""
    env = os.environ.get("COSMOBENCH_THREADS")
    return int(env) if env else len(os.sched_getaffinity(0))


def check_nside(nside: int) -> int:
    """Return ``nside`` as int, or raise ``ValueError`` if it is not a power of two between 1 and 8192."""
    try:
        n = int(nside)
    except (TypeError, ValueError):
        raise ValueError(f"nside must be an integer power of 2, got {nside!r}") from None
    if n != nside or n < 1 or n > 8192 or n & (n - 1):
        raise ValueError(f"nside must be a power of 2 between 1 and 8192 (e.g. 16, 64, 512), got {nside!r}")
    return n


def npix(nside: int) -> int:
    """Number of HEALPix pixels, 12 nside^2."""
    return 12 * check_nside(nside) ** 2


def nside_of(maps: np.ndarray) -> int:
    """The nside of a map array of shape (..., npix); raises if npix is not a HEALPix size."""
    n = int(np.asarray(maps).shape[-1])
    nside = int(round(np.sqrt(n / 12)))
    if 12 * nside * nside != n or nside & (nside - 1):
        raise ValueError(f"a HEALPix map has 12*nside^2 pixels with nside a power of 2; got {n} pixels")
    return nside


def default_lmax(nside: int) -> int:
    """The band limit used throughout: 3 nside - 1."""
    return 3 * check_nside(nside) - 1


def alm_size(lmax: int) -> int:
    """Number of alm coefficients for ``mmax = lmax``."""
    return (lmax + 1) * (lmax + 2) // 2


def alm_lmax(nalm: int) -> int:
    """Invert :func:`alm_size`."""
    lmax = int(round((np.sqrt(8 * nalm + 1) - 3) / 2))
    if alm_size(lmax) != nalm:
        raise ValueError(f"{nalm} is not a triangular alm size")
    return lmax


@functools.lru_cache(maxsize=16)
def alm_ell(lmax: int) -> np.ndarray:
    """ell of every alm index in healpy's layout, shape (nalm,)."""
    return np.concatenate([np.arange(m, lmax + 1) for m in range(lmax + 1)])


@functools.lru_cache(maxsize=16)
def _geometry(nside: int) -> dict:
    import ducc0

    return ducc0.healpix.Healpix_Base(nside, "RING").sht_info()


def _as_alm(alm: np.ndarray) -> np.ndarray:
    alm = np.asarray(alm)
    return alm[None] if alm.ndim == 1 else alm


def alm2map(alm: np.ndarray, nside: int, lmax: int | None = None) -> np.ndarray:
    """Synthesise maps from alm.

    Parameters
    ----------
    alm : ndarray, shape (nalm,), (1, nalm) or (3, nalm), complex
        T, or T, E, B.
    nside : int
    lmax : int, optional
        Band limit of ``alm`` (inferred from its size).

    Returns
    -------
    ndarray, shape (npix,) for 1-d input, else (ncomp, npix), float64 (I, or I, Q, U)
    """
    import ducc0

    squeeze = np.ndim(alm) == 1
    alm = _as_alm(alm).astype(np.complex128, copy=False)
    lmax = alm_lmax(alm.shape[-1]) if lmax is None else lmax
    geom, nt = _geometry(check_nside(nside)), nthreads()
    out = np.empty((alm.shape[0], npix(nside)))
    out[:1] = ducc0.sht.synthesis(alm=alm[:1], lmax=lmax, spin=0, nthreads=nt, **geom)
    if alm.shape[0] == 3:
        out[1:] = ducc0.sht.synthesis(alm=alm[1:], lmax=lmax, spin=2, nthreads=nt, **geom)
    elif alm.shape[0] != 1:
        raise ValueError(f"alm must have 1 (T) or 3 (T, E, B) components, got {alm.shape[0]}")
    return out[0] if squeeze else out


def map2alm(maps: np.ndarray, lmax: int | None = None, iter: int = 3) -> np.ndarray:
    """Spherical-harmonic analysis with ``iter`` Jacobi refinements (healpy's ``map2alm`` with ``iter``).

    Parameters
    ----------
    maps : ndarray, shape (npix,), (1, npix) or (3, npix)
        I, or I, Q, U in RING ordering.
    lmax : int, optional
        Defaults to 3 nside - 1.
    iter : int
        Number of refinement iterations (0 = plain quadrature).

    Returns
    -------
    ndarray, shape (nalm,) for 1-d input, else (ncomp, nalm), complex128
    """
    import ducc0

    squeeze = np.ndim(maps) == 1
    maps = np.atleast_2d(np.asarray(maps, dtype=np.float64))
    nside = nside_of(maps)
    lmax = default_lmax(nside) if lmax is None else lmax
    geom, nt = _geometry(nside), nthreads()
    area = 4 * np.pi / maps.shape[-1]
    spins = [(slice(0, 1), 0)] + ([(slice(1, 3), 2)] if maps.shape[0] == 3 else [])
    if maps.shape[0] not in (1, 3):
        raise ValueError(f"maps must have 1 (I) or 3 (I, Q, U) components, got {maps.shape[0]}")
    alm = np.empty((maps.shape[0], alm_size(lmax)), dtype=np.complex128)
    for sl, spin in spins:
        m = maps[sl]
        a = ducc0.sht.adjoint_synthesis(map=m, lmax=lmax, spin=spin, nthreads=nt, **geom) * area
        for _ in range(iter):
            resid = m - ducc0.sht.synthesis(alm=a, lmax=lmax, spin=spin, nthreads=nt, **geom)
            a += ducc0.sht.adjoint_synthesis(map=resid, lmax=lmax, spin=spin, nthreads=nt, **geom) * area
        alm[sl] = a
    return alm[0] if squeeze else alm


def almxfl(alm: np.ndarray, fl: np.ndarray) -> np.ndarray:
    """Multiply alm by a function of ell.

    Parameters
    ----------
    alm : ndarray, shape (..., nalm)
    fl : ndarray, shape (lmax+1,) or (ncomp, lmax+1) for one filter per component

    Returns
    -------
    ndarray, same shape as ``alm``
    """
    alm = np.asarray(alm)
    lmax = alm_lmax(alm.shape[-1])
    fl = np.asarray(fl)
    if fl.shape[-1] < lmax + 1:
        raise ValueError(f"filter has {fl.shape[-1]} multipoles, alm need lmax + 1 = {lmax + 1}")
    ell = alm_ell(lmax)
    return alm * fl[..., ell]


def alm2cl(alm1: np.ndarray, alm2: np.ndarray | None = None) -> np.ndarray:
    """Cross power spectrum of alm: C_ell = sum_m Re(a1 a2*) / (2 ell + 1).

    Parameters
    ----------
    alm1, alm2 : ndarray, shape (..., nalm)

    Returns
    -------
    ndarray, shape (..., lmax+1)
    """
    alm1 = np.asarray(alm1)
    alm2 = alm1 if alm2 is None else np.asarray(alm2)
    lmax = alm_lmax(alm1.shape[-1])
    ell = alm_ell(lmax)
    prod = (alm1 * alm2.conj()).real
    weight = np.where(np.arange(alm1.shape[-1]) <= lmax, 1.0, 2.0)  # m = 0 once, m > 0 twice
    flat = (prod * weight).reshape(-1, prod.shape[-1])
    cl = np.stack([np.bincount(ell, weights=row, minlength=lmax + 1) for row in flat])
    return (cl / (2 * np.arange(lmax + 1) + 1)).reshape(prod.shape[:-1] + (lmax + 1,))


def synalm(cls: np.ndarray, lmax: int, rng: np.random.Generator) -> np.ndarray:
    """Gaussian alm with the given power spectra.

    Parameters
    ----------
    cls : ndarray, shape (lmax_in+1,) for T only, or (4, lmax_in+1) as TT, EE, BB, TE, with lmax_in >= lmax
        Power spectra C_ell (not D_ell), e.g. uK^2.
    lmax : int
        Band limit of the output.
    rng : numpy.random.Generator
        Source of randomness.

    Returns
    -------
    ndarray, shape (nalm,) for T only, else (3, nalm), complex128: T, or T, E, B
    """
    cls = np.asarray(cls, dtype=np.float64)
    t_only = cls.ndim == 1
    cls = np.atleast_2d(cls)
    if cls.shape[0] not in (1, 4):
        raise ValueError(f"cls must be TT or (TT, EE, BB, TE), got {cls.shape[0]} spectra")
    if cls.shape[-1] <= lmax:
        raise ValueError(f"cls go to ell = {cls.shape[-1] - 1}, need lmax = {lmax}")
    if np.any(cls[:3] < 0):
        raise ValueError("auto spectra must be non-negative")
    ell = alm_ell(lmax)
    nalm = len(ell)
    ncomp = 1 if t_only else 3
    z = rng.standard_normal((ncomp, 2, nalm))
    m0 = np.arange(nalm) <= lmax
    z = np.where(m0, z[:, 0] * np.sqrt(2.0), z[:, 0] + 1j * z[:, 1]) / np.sqrt(2.0)
    tt = cls[0, ell]
    if t_only:
        return np.sqrt(tt) * z[0]
    ee, bb, te = cls[1, ell], cls[2, ell], cls[3, ell]
    safe_tt = np.where(tt > 0, tt, 1.0)
    cross = np.where(tt > 0, te / np.sqrt(safe_tt), 0.0)
    ee_cond = np.clip(ee - np.where(tt > 0, te**2 / safe_tt, 0.0), 0.0, None)
    return np.stack([np.sqrt(tt) * z[0], cross * z[0] + np.sqrt(ee_cond) * z[1], np.sqrt(bb) * z[2]])


def gauss_beam(fwhm_arcmin: float, lmax: int, pol: bool = False) -> np.ndarray:
    """Gaussian beam transfer function b_ell.

    Parameters
    ----------
    fwhm_arcmin : float
        Full width at half maximum, arcmin (0 gives b_ell = 1).
    lmax : int
    pol : bool
        If true return shape (3, lmax+1) for T, E, B (spin-2 correction exp(2 sigma^2)), else (lmax+1,).
    """
    sigma = np.radians(fwhm_arcmin / 60.0) / np.sqrt(8 * np.log(2))
    ell = np.arange(lmax + 1)
    bl = np.exp(-0.5 * ell * (ell + 1) * sigma**2)
    if not pol:
        return bl
    return np.stack([bl, bl * np.exp(2 * sigma**2), bl * np.exp(2 * sigma**2)])


def smooth(maps: np.ndarray, fwhm_arcmin: float, lmax: int | None = None, iter: int = 3) -> np.ndarray:
    """Smooth I or IQU maps with a Gaussian beam (analysis, multiply by b_ell, synthesis)."""
    return reconvolve(maps, 0.0, fwhm_arcmin, lmax=lmax, iter=iter)


def reconvolve(
    maps: np.ndarray, from_fwhm_arcmin: float, to_fwhm_arcmin: float, lmax: int | None = None, iter: int = 3
) -> np.ndarray:
    """Change the Gaussian beam of I or IQU maps: analysis, multiply by b_ell(to) / b_ell(from), synthesis.

    Parameters
    ----------
    maps : ndarray, shape (npix,) or (nfield, npix), nfield 1 or 3 (I, Q, U), RING
    from_fwhm_arcmin, to_fwhm_arcmin : float
        FWHM of the maps' beam and of the beam wanted, arcmin (0 = no beam). A narrower target beam divides by
        the ratio, which grows with ell: band-limit with ``lmax`` where the maps have no signal.
    lmax : int, optional
        Band limit of the analysis and of the result (default :func:`default_lmax`).
    iter : int
        Jacobi iterations of the analysis.

    Returns
    -------
    ndarray shaped like ``maps``; E and B (spin 2) take the polarised beams of :func:`gauss_beam`.
    """
    squeeze = np.ndim(maps) == 1
    alm = map2alm(np.atleast_2d(maps), lmax=lmax, iter=iter)
    lmax = alm_lmax(alm.shape[-1])
    bl = beam_ratio(from_fwhm_arcmin, to_fwhm_arcmin, lmax, pol=True)[: alm.shape[0]]
    out = alm2map(almxfl(alm, bl), nside_of(maps), lmax)
    return out[0] if squeeze else out


def beam_ratio(from_fwhm_arcmin: float, to_fwhm_arcmin: float, lmax: int, pol: bool = False) -> np.ndarray:
    """b_ell(to) / b_ell(from) of two Gaussian beams: the filter that changes the first beam into the second.

    Parameters
    ----------
    from_fwhm_arcmin, to_fwhm_arcmin : float
        FWHM of the two beams, arcmin (0 = no beam).
    lmax : int
    pol : bool
        As in :func:`gauss_beam`: shape (3, lmax+1) for T, E, B if true, else (lmax+1,).
    """
    return gauss_beam(to_fwhm_arcmin, lmax, pol=pol) / gauss_beam(from_fwhm_arcmin, lmax, pol=pol)
