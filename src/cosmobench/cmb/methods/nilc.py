"""Needlet ILC (NILC): ILC weights that vary with both angular scale and position on the sky.

Each channel is brought to the common output beam and split into needlet scales with windows h_j(ell)
(:mod:`cosmobench.cmb.needlets`). Per scale j, the needlet maps of the channels that resolve that scale are
synthesised at the smallest adequate nside; their channel-channel covariance at every pixel is the product
maps smoothed by a Gaussian whose width is set by the ILC-bias tolerance (PyILC's rule)::

    sigma_j = sqrt(2 |N_deproj + 1 - N_ch| / (N_modes,j * tol)),   N_modes,j = sum_ell (2 ell + 1) h_j(ell)^2

and the pixel weights are solved for all pixels at once (stacked ``np.linalg.solve``). The ILC maps of all
scales are filtered by h_j again and summed in harmonic space. Everything stays in memory.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from cosmobench.cmb import needlets
from cosmobench.cmb.methods.ilc import ILCMethod, check_unit_response, ilc_weights
from cosmobench.sky import sht

__all__ = ["NILC", "bias_smoothing_sigma", "default_gaussian_fwhms", "resize_alm"]

NEEDLETS = ("cosine", "gaussian")
# Gaussian-needlet FWHMs (arcmin) from which defaults are taken, as in PyILC's examples.
_GAUSSIAN_FWHMS = (600.0, 300.0, 120.0, 60.0, 30.0, 15.0, 10.0, 7.5, 5.0)
# Pixels per block of weight solves: bounds the (block, nch, nch) covariance stacks to ~10^2 MB.
_SOLVE_BLOCK = 1 << 17


def bias_smoothing_sigma(n_modes: float, n_channels: int, tol: float, n_deproj: int = 0) -> float:
    """Gaussian sigma (radians) of the covariance smoothing that keeps the ILC bias near ``tol``.

    PyILC's rule: ``sigma = sqrt(2 |n_deproj + 1 - n_channels| / (n_modes * tol))``. With one channel no
    smoothing is needed and 0 is returned.
    """
    if tol <= 0:
        raise ValueError(f"ilc_bias_tol must be > 0, got {tol}")
    return float(np.sqrt(2.0 * abs(n_deproj + 1 - n_channels) / (n_modes * tol)))


def default_gaussian_fwhms(nside: int) -> list[float]:
    """Gaussian-needlet FWHMs (arcmin): PyILC's list 600, 300, ..., 5 arcmin, keeping those >= 2 pixels."""
    pix_arcmin = np.degrees(np.sqrt(4 * np.pi / sht.npix(nside))) * 60
    return [f for f in _GAUSSIAN_FWHMS if f >= 2 * pix_arcmin]


def resize_alm(alm: np.ndarray, lmax_out: int) -> np.ndarray:
    """Truncate or zero-pad alm (..., nalm) in healpy's layout to band limit ``lmax_out``."""
    lmax_in = sht.alm_lmax(alm.shape[-1])
    if lmax_in == lmax_out:
        return alm
    idx_in, idx_out = _alm_index_map(lmax_in, lmax_out)
    out = np.zeros(alm.shape[:-1] + (sht.alm_size(lmax_out),), dtype=alm.dtype)
    out[..., idx_out] = alm[..., idx_in]
    return out


def _alm_index_map(lmax_in: int, lmax_out: int) -> tuple[np.ndarray, np.ndarray]:
    lcom = min(lmax_in, lmax_out)
    ell = sht.alm_ell(lcom)
    m = np.concatenate([np.full(lcom + 1 - mm, mm) for mm in range(lcom + 1)])

    def index(lmax: int) -> np.ndarray:
        return m * (2 * lmax + 1 - m) // 2 + ell

    return index(lmax_in), index(lmax_out)


class NILC(ILCMethod):
    """Needlet ILC with cosine or Gaussian needlets.

    Parameters
    ----------
    needlet : {"cosine", "gaussian"}
        Window family.
    ellpeaks : list of int, optional
        Cosine-needlet peaks after the first (at ell = 0), e.g. CMB-ML's ``[200, 715, 1025]`` at nside 512;
        by default :func:`cosmobench.cmb.needlets.default_ellpeaks` (CMB-ML's recipe scaled to nside).
    fwhms_arcmin : list of float, optional
        Decreasing Gaussian-needlet FWHMs; by default :func:`default_gaussian_fwhms`.
    ilc_bias_tol : float
        Tolerated ILC bias per scale; sets the covariance smoothing (0.001 like CMB-ML).
    **settings
        See :class:`~cosmobench.cmb.methods.ilc.ILCMethod` (fields ("IQU"), bands, exclude_bands,
        output_beam_arcmin (20.6), lmax, beam_tol (1e-3), mask, sht_iter).

    Examples
    --------
    >>> nilc = NILC(needlet="cosine", output_beam_arcmin=20.6)   # doctest: +SKIP
    >>> cmb = nilc.predict(obs, channels)                          # doctest: +SKIP
    """

    def __init__(
        self,
        *,
        needlet: str = "cosine",
        ellpeaks: Sequence[int] | None = None,
        fwhms_arcmin: Sequence[float] | None = None,
        ilc_bias_tol: float = 0.001,
        **settings: Any,
    ) -> None:
        super().__init__(**settings)
        if needlet not in NEEDLETS:
            raise ValueError(f"unknown needlet type {needlet!r}; expected one of {list(NEEDLETS)}")
        if ilc_bias_tol <= 0:
            raise ValueError(f"ilc_bias_tol must be > 0, got {ilc_bias_tol}")
        self.needlet = needlet
        self.ellpeaks = None if ellpeaks is None else [int(p) for p in ellpeaks]
        self.fwhms_arcmin = None if fwhms_arcmin is None else [float(f) for f in fwhms_arcmin]
        self.ilc_bias_tol = float(ilc_bias_tol)

    def windows(self, nside: int) -> np.ndarray:
        """Needlet windows used at ``nside``, shape (nscale, lmax+1)."""
        lmax = self._lmax(nside)
        if self.needlet == "cosine":
            return needlets.cosine_windows(self.ellpeaks or needlets.default_ellpeaks(nside, lmax), lmax)
        return needlets.gaussian_windows(self.fwhms_arcmin or default_gaussian_fwhms(nside), lmax)

    def _combine(
        self, alm: np.ndarray, beams: np.ndarray, beam_out: np.ndarray, nside: int, mask: np.ndarray | None
    ) -> np.ndarray:
        lmax = beams.shape[-1] - 1
        windows = self.windows(nside)
        ratios = self._ratios(beams, beam_out)
        out = np.zeros(alm.shape[-1], dtype=np.complex128)
        for j, h in enumerate(windows):
            if not np.any(h > 0):
                continue
            _, hi = needlets.window_support(h)
            use = self._usable(beams, hi)
            if len(use) == 0:
                raise ValueError(
                    f"needlet scale {j} reaches ell={hi} where no channel has b_ell >= beam_tol={self.beam_tol}; "
                    "lower lmax or change the needlets"
                )
            ns = needlets.needlet_nside(hi, nside)
            maps = np.stack([sht.alm2map(resize_alm(sht.almxfl(alm[i], h * ratios[i]), hi), ns, hi) for i in use])
            if len(use) == 1:
                ilc_map = maps[0]
            else:
                sigma = bias_smoothing_sigma(needlets.n_modes(h), len(use), self.ilc_bias_tol)
                mask_j = None if mask is None else _downgrade(mask, ns)
                ilc_map = _local_ilc(maps, sigma, mask_j, what=f"NILC scale {j}")
            out += resize_alm(sht.almxfl(sht.map2alm(ilc_map, hi, self.sht_iter), h[: hi + 1]), lmax)
        return out


def _downgrade(mask: np.ndarray, nside: int) -> np.ndarray:
    import healpy as hp

    return mask if sht.nside_of(mask) == nside else hp.ud_grade(mask, nside)


def _gaussian_smooth(m: np.ndarray, sigma: float) -> np.ndarray:
    """Smooth a map with a Gaussian of ``sigma`` radians, through alm truncated where b_ell < 1e-14."""
    nside = sht.nside_of(m)
    lmax = int(min(3 * nside - 1, max(2, np.ceil(8.0 / sigma))))
    bl = np.exp(-0.5 * np.arange(lmax + 1) * (np.arange(lmax + 1) + 1) * sigma**2)
    return sht.alm2map(sht.almxfl(sht.map2alm(m, lmax, 0), bl), nside, lmax)


def _local_ilc(maps: np.ndarray, sigma: float, mask: np.ndarray | None, what: str) -> np.ndarray:
    """Pixel-by-pixel ILC of needlet maps (nch, npix) with covariances smoothed at ``sigma`` radians."""
    nch, npix = maps.shape
    pairs = [(a, b) for a in range(nch) for b in range(a, nch)]
    cov_maps = np.empty((len(pairs), npix))
    norm = None
    if mask is not None:
        norm = _gaussian_smooth(mask, sigma)
        norm = np.maximum(norm, 1e-3 * norm.max())
    for k, (a, b) in enumerate(pairs):
        prod = maps[a] * maps[b]
        if mask is not None:
            prod = prod * mask
        cov_maps[k] = _gaussian_smooth(prod, sigma)
        if norm is not None:
            cov_maps[k] /= norm
    ia, ib = np.array(pairs).T
    out = np.empty(npix)
    for start in range(0, npix, _SOLVE_BLOCK):
        sl = slice(start, min(start + _SOLVE_BLOCK, npix))
        cov = np.empty((sl.stop - sl.start, nch, nch))
        cov[:, ia, ib] = cov_maps[:, sl].T
        cov[:, ib, ia] = cov_maps[:, sl].T
        w = ilc_weights(cov)
        check_unit_response(w, what=what)
        out[sl] = np.einsum("pi,ip->p", w, maps[:, sl])
    return out
