"""Binned MASTER power spectra on a masked sphere (a NaMaster-free equivalent, through ducc0).

For a weight map w (an apodised mask), the pseudo spectrum of ``w m`` has expectation
``<C~_l> = sum_l' M_ll' b_l'^2 C_l'`` with the mode-coupling matrix ``M`` of w (Hivon et al. 2002). In bins
b with binning operator P (averaging D_l = l(l+1) C_l / 2 pi) and its piecewise-constant inverse Q, the
MASTER estimate is ``D_b = K^-1 P C~`` with ``K = P M B^2 Q``. ``M`` comes from
``ducc0.misc.experimental.coupling_matrix_rect`` (pspy's convention up to the (2 l' + 1) factor added here).

Truth, prediction, residual and cross spectra all use one :class:`Master` (same mask, bins and beam), and
:meth:`Master.expected` gives the binned expectation of a theory spectrum, so all comparisons are like for like.
No pixel window is applied (the benchmark's maps carry none).
"""

from __future__ import annotations

import numpy as np

from cosmobench.sky import sht

__all__ = ["coupling_matrix", "linear_bins", "binning_operators", "Master"]


def coupling_matrix(weight: np.ndarray, lmax: int) -> np.ndarray:
    """Spin-0 mode-coupling matrix of a weight map.

    Parameters
    ----------
    weight : ndarray, shape (npix,)
        Mask or apodised mask, RING.
    lmax : int
        Band limit of the spectra.

    Returns
    -------
    ndarray, shape (lmax+1, lmax+1)
        ``M[l, l']`` with ``<C~_l> = sum_l' M[l, l'] C_l'``; the identity for a full-sky unit weight.
    """
    import ducc0

    nside = sht.nside_of(weight)
    lmask = min(2 * lmax, 3 * nside - 1)
    wl = np.zeros(2 * lmax + 1)
    wl[: lmask + 1] = sht.alm2cl(sht.map2alm(np.asarray(weight, dtype=np.float64), lmask, 3))
    res = np.zeros((1, lmax + 1, lmax + 1))
    mat = ducc0.misc.experimental.coupling_matrix_rect(wl[None], (0,), res, nthreads=sht.nthreads())[0]
    return mat * (2 * np.arange(lmax + 1) + 1)[None, :]


def linear_bins(lmin: int, lmax: int, nbins: int) -> np.ndarray:
    """Edges of ``nbins`` contiguous bins covering lmin..lmax; bin b holds lmin_b <= l < edges[b+1].

    Returns
    -------
    ndarray of int, shape (nbins + 1,), the last edge lmax + 1
    """
    if not 0 <= lmin < lmax:
        raise ValueError(f"need 0 <= lmin < lmax, got lmin={lmin}, lmax={lmax}")
    nbins = int(min(nbins, lmax + 1 - lmin))
    if nbins < 1:
        raise ValueError(f"nbins must be >= 1, got {nbins}")
    edges = np.unique(np.round(np.linspace(lmin, lmax + 1, nbins + 1)).astype(int))
    return edges


def binning_operators(edges: np.ndarray, lmax: int) -> tuple[np.ndarray, np.ndarray]:
    """P (nbins, lmax+1) mapping C_l to binned D_b, and Q (lmax+1, nbins) mapping D_b back to C_l."""
    edges = np.asarray(edges)
    nb = len(edges) - 1
    ell = np.arange(lmax + 1)
    dfac = ell * (ell + 1) / (2 * np.pi)
    p = np.zeros((nb, lmax + 1))
    q = np.zeros((lmax + 1, nb))
    for b in range(nb):
        sl = slice(edges[b], edges[b + 1])
        p[b, sl] = dfac[sl] / (edges[b + 1] - edges[b])
        q[sl, b] = np.where(dfac[sl] > 0, 1.0 / np.where(dfac[sl] > 0, dfac[sl], 1.0), 0.0)
    return p, q


class Master:
    """MASTER estimator for one weight map, binning and beam.

    Parameters
    ----------
    weight : ndarray, shape (npix,)
        Apodised mask applied to every map before its pseudo spectrum.
    lmax : int
    edges : ndarray of int
        Bin edges (:func:`linear_bins`).
    beam : ndarray, shape (lmax+1,), optional
        Transfer function b_l of the maps (deconvolved in the estimate); 1 by default.
    coupling : ndarray, shape (lmax+1, lmax+1), optional
        Precomputed :func:`coupling_matrix` of ``weight`` (it does not depend on the beam).

    Attributes
    ----------
    ell_eff : ndarray, shape (nbins,)
        Bin centres.
    """

    def __init__(
        self,
        weight: np.ndarray,
        lmax: int,
        edges: np.ndarray,
        beam: np.ndarray | None = None,
        coupling: np.ndarray | None = None,
    ) -> None:
        self.weight = np.asarray(weight, dtype=np.float64)
        self.lmax = int(lmax)
        self.edges = np.asarray(edges)
        if self.edges[-1] > self.lmax + 1:
            raise ValueError(f"bins reach ell={self.edges[-1] - 1} beyond lmax={self.lmax}")
        self.coupling = coupling_matrix(self.weight, self.lmax) if coupling is None else coupling
        self.beam2 = np.ones(self.lmax + 1) if beam is None else np.asarray(beam)[: self.lmax + 1] ** 2
        self._p, q = binning_operators(self.edges, self.lmax)
        self._kinv = np.linalg.inv(self._p @ (self.coupling * self.beam2[None, :]) @ q)
        self.ell_eff = 0.5 * (self.edges[:-1] + self.edges[1:] - 1)

    def pseudo_alm(self, m: np.ndarray) -> np.ndarray:
        """alm of the weighted map, shape (nalm,)."""
        return sht.map2alm(self.weight * np.asarray(m, dtype=np.float64), self.lmax, 3)

    def decouple(self, pseudo_cl: np.ndarray) -> np.ndarray:
        """Binned D_b (shape (..., nbins)) from pseudo C~_l (shape (..., lmax+1))."""
        return (self._kinv @ (self._p @ np.asarray(pseudo_cl)[..., : self.lmax + 1, None]))[..., 0]

    def spectrum(self, m1: np.ndarray, m2: np.ndarray | None = None) -> np.ndarray:
        """Binned D_b of map ``m1`` (or the cross spectrum with ``m2``), beam deconvolved, shape (nbins,)."""
        a1 = self.pseudo_alm(m1)
        a2 = a1 if m2 is None else self.pseudo_alm(m2)
        return self.decouple(sht.alm2cl(a1, a2))

    def expected(self, cl: np.ndarray) -> np.ndarray:
        """Expectation of the estimate for a theory C_l (shape (>= lmax+1,)), binned D_b."""
        return self.decouple((self.coupling * self.beam2[None, :]) @ np.asarray(cl)[: self.lmax + 1])
