"""Binned MASTER power spectra on a masked sphere (a NaMaster-free equivalent, through ducc0).

For a weight map w (an apodised mask), the pseudo spectrum of ``w m`` has expectation
``<C~_l> = sum_l' M_ll' b_l'^2 C_l'`` with the mode-coupling matrix ``M`` of w (Hivon et al. 2002). The estimate
inverts the coupling multipole by multipole over the binned range, then bins: ``D_b = P (M B^2)^-1 C~`` with P the
binning operator (averaging D_l = l(l+1) C_l / 2 pi), so its expectation is the binned sky spectrum P C whatever
the spectrum's shape within a bin. The usual binned form ``K^-1 P C~`` with ``K = P M B^2 Q`` (Q the
piecewise-constant inverse of P) is unbiased only for D_l flat within each bin: with bench128's mask and 10
multipoles per bin it puts E power into the first BB bin (l 2-11, the reionisation bump of EE leaking through
the cut sky) at 37 times the lensing BB there, and moves low-l EE bins by up to 10 %. The inversion is well
conditioned for the apodised masks used here (condition number about 2 at f_sky 0.8; the beam is divided out
after it); a coupling too close to singular (a mask keeping too little sky for the multipoles asked) is refused.
``M`` comes from ``ducc0.misc.experimental.coupling_matrix_rect`` (pspy's convention up to the (2 l' + 1) factor
added here).

Polarisation (:class:`MasterPol`, Kogut et al. 2003, Brown, Castro & Taylor 2005): the pseudo E and B alm of a
weighted spin-2 map mix, ``E~ = K+ E + i K- B`` and ``B~ = K+ B - i K- E``, where K+ (K-) keeps the couplings
of even (odd) l + l' + L. The pseudo spectra of two maps 1, 2 then have expectations

    <C~^{E1E2}> = M++ C^{E1E2} + M-- C^{B1B2}      <C~^{B1B2}> = M-- C^{E1E2} + M++ C^{B1B2}
    <C~^{E1B2}> = M++ C^{E1B2} - M-- C^{B1E2}      <C~^{B1E2}> = M++ C^{B1E2} - M-- C^{E1B2}

with ``M++_ll' = (2l'+1)/(8 pi) sum_L (2L+1) W_L (l l' L; 2 -2 0)^2 (1 + (-1)^(l+l'+L))`` and M-- the same with
``1 - (-1)^(l+l'+L)`` (W_L the power spectrum of w); both come from ducc0 (its "++" and "--" matrices). The
estimator decouples the four spectra jointly (EE <-> BB and EB <-> BE mixing included), multipole by multipole, so
the E -> B leakage of the cut sky is removed on average.

Truth, prediction, residual and cross spectra all use one :class:`Master` (or :class:`MasterPol`) with the same
mask, bins and beam, and ``expected`` gives the binned expectation of a theory spectrum, so all comparisons are
like for like. No pixel window is applied (the benchmark's maps carry none).
"""

from __future__ import annotations

import copy

import numpy as np

from cosmobench.sky import sht

__all__ = ["coupling_matrix", "linear_bins", "binning_operators", "Master", "MasterPol", "ESTIMATOR", "MAX_CONDITION"]

#: what the estimate is, for the identity of results made with it (a change rescores them)
ESTIMATOR = "MASTER, coupling inverted multipole by multipole, then binned"
#: largest 1-norm condition number of the stacked mode-coupling matrix that :class:`Master` inverts
MAX_CONDITION = 1e8


def coupling_matrix(weight: np.ndarray, lmax: int, spin: int = 0) -> np.ndarray:
    """Mode-coupling matrix of a weight map, spin 0 (temperature) or spin 2 (polarisation).

    Parameters
    ----------
    weight : ndarray, shape (npix,)
        Mask or apodised mask, RING.
    lmax : int
        Band limit of the spectra.
    spin : {0, 2}
        0: the temperature matrix; 2: the polarisation matrices M++ and M-- (module docstring).

    Returns
    -------
    ndarray, shape (lmax+1, lmax+1) for spin 0, (2, lmax+1, lmax+1) for spin 2 (M++, M--)
        ``M[l, l']`` with ``<C~_l> = sum_l' M[l, l'] C_l'``; for a full-sky unit weight M and M++ are the
        identity (M++ from l = 2) and M-- is zero.
    """
    import ducc0

    if spin not in (0, 2):
        raise ValueError(f"spin must be 0 (temperature) or 2 (polarisation), got {spin}")
    nside = sht.nside_of(weight)
    lmask = min(2 * lmax, 3 * nside - 1)
    wl = np.zeros(2 * lmax + 1)
    wl[: lmask + 1] = sht.alm2cl(sht.map2alm(np.asarray(weight, dtype=np.float64), lmask, 3))
    nmat = 1 if spin == 0 else 2
    res = np.zeros((nmat, lmax + 1, lmax + 1))
    optype = (0,) if spin == 0 else (4,)  # ducc0: 0 = spin-0 matrix; 4 = the ++ and -- matrices
    mat = ducc0.misc.experimental.coupling_matrix_rect(wl[None], optype, res, nthreads=sht.nthreads())
    mat = mat * (2 * np.arange(lmax + 1) + 1)[None, None, :]
    return mat[0] if spin == 0 else mat


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
    """MASTER estimator of temperature (spin-0) spectra for one weight map, binning and beam.

    Parameters
    ----------
    weight : ndarray, shape (npix,)
        Apodised mask applied to every map before its pseudo spectrum.
    lmax : int
    edges : ndarray of int
        Bin edges (:func:`linear_bins`).
    beam : ndarray, shape (lmax+1,), optional
        Transfer function b_l of the maps (deconvolved in the estimate); 1 by default.
    coupling : ndarray, optional
        Precomputed :func:`coupling_matrix` of ``weight`` at this class's :attr:`spin` (it does not depend on the
        beam): shape (lmax+1, lmax+1) here, (2, lmax+1, lmax+1) for :class:`MasterPol`.

    Attributes
    ----------
    ell_eff : ndarray, shape (nbins,)
        Bin centres.
    condition : float
        1-norm condition number of the coupling inverted over the binned multipoles (refused from
        :data:`MAX_CONDITION`).
    """

    spin = 0
    #: names of the spectra a pseudo spectrum holds along its second-to-last axis (none: one spectrum, TT)
    spectra: tuple[str, ...] = ()

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
        if self.edges[0] < self.spin:
            raise ValueError(f"spin-{self.spin} spectra start at ell = {self.spin}; the first bin starts at {edges[0]}")
        self.coupling = coupling_matrix(self.weight, self.lmax, self.spin) if coupling is None else coupling
        nspec = max(len(self.spectra), 1)
        n = self.lmax + 1
        # the multipoles of the bins in the stacked spectra (nspec blocks of lmax+1), and the coupling among them
        self._binned = np.concatenate([np.arange(k * n + self.edges[0], k * n + self.edges[-1]) for k in range(nspec)])
        self._stacked = self._stacked_coupling()  # built once: (4 (lmax+1))^2 for spin 2, shared by every beam
        kept = self._stacked[np.ix_(self._binned, self._binned)]
        self._inverse = np.linalg.inv(kept)
        self.condition = float(np.linalg.norm(kept, 1) * np.linalg.norm(self._inverse, 1))
        if not self.condition < MAX_CONDITION:
            raise ValueError(
                f"cannot decouple l = {self.edges[0]}..{self.edges[-1] - 1}: the mask's mode-coupling matrix is "
                f"nearly singular (condition number {self.condition:.3g}); keep more sky (a larger sky fraction) or "
                "stop at a lower lmax"
            )
        self._set_beam(beam)
        self.ell_eff = 0.5 * (self.edges[:-1] + self.edges[1:] - 1)

    def _set_beam(self, beam: np.ndarray | None) -> None:
        """The beam b_l of the maps, and the forward and decoupling matrices of the stacked spectra with it."""
        self.beam2 = np.ones(self.lmax + 1) if beam is None else np.asarray(beam)[: self.lmax + 1] ** 2
        nspec = max(len(self.spectra), 1)
        beam2 = np.tile(self.beam2, nspec)
        if not np.all(beam2[self._binned] > 0):
            raise ValueError(
                f"the beam is zero at some l <= {self.edges[-1] - 1}: it cannot be deconvolved there; lower lmax"
            )
        self._forward = self._stacked * beam2[None, :]
        p, _ = binning_operators(self.edges, self.lmax)
        # (M B^2)^-1 = B^-2 M^-1 over the binned multipoles, then binned
        self._decoupler = np.zeros((nspec * (len(self.edges) - 1), nspec * (self.lmax + 1)))
        binned = self._binned
        self._decoupler[:, binned] = np.kron(np.eye(nspec), p)[:, binned] @ (self._inverse / beam2[binned][:, None])

    def with_beam(self, beam: np.ndarray | None) -> Master:
        """The same estimator for maps of another beam b_l (shape (lmax+1,); None: none), sharing the inverted
        coupling (the costly part: 14 CPU-s for :class:`MasterPol` at lmax 1535)."""
        other = copy.copy(self)
        other._set_beam(beam)
        return other

    def _stacked_coupling(self) -> np.ndarray:
        """Coupling of the stacked pseudo spectra to the stacked sky spectra, shape (nspec (lmax+1),) * 2."""
        return np.asarray(self.coupling)

    def _apply(self, matrix: np.ndarray, cl: np.ndarray) -> np.ndarray:
        """``matrix`` applied to spectra of shape (..., [nspec,] >= lmax+1), the trailing axes flattened."""
        cl = np.asarray(cl)[..., : self.lmax + 1]
        lead = cl.shape[: cl.ndim - 1 - (len(self.spectra) > 0)]
        out = cl.reshape(lead + (-1,)) @ matrix.T
        return out.reshape(lead + ((len(self.spectra),) if self.spectra else ()) + (-1,))

    def pseudo_alm(self, m: np.ndarray) -> np.ndarray:
        """alm of the weighted map(s): (npix,) I -> (nalm,) T; (3, npix) I, Q, U -> (3, nalm) T, E, B."""
        return sht.map2alm(self.weight * np.asarray(m, dtype=np.float64), self.lmax, 3)

    def pseudo_cl(self, a1: np.ndarray, a2: np.ndarray | None = None) -> np.ndarray:
        """Pseudo C~_l of pseudo alm ``a1`` (cross with ``a2``), shape (lmax+1,)."""
        return sht.alm2cl(a1, a2)

    def decouple(self, pseudo_cl: np.ndarray) -> np.ndarray:
        """Binned D_b (shape (..., nbins); :class:`MasterPol`: (..., 4, nbins)) from pseudo C~_l (shape
        (..., lmax+1); :class:`MasterPol`: (..., 4, lmax+1) EE, EB, BE, BB)."""
        return self._apply(self._decoupler, pseudo_cl)

    def spectrum(self, m1: np.ndarray, m2: np.ndarray | None = None) -> np.ndarray:
        """Binned D_b of map ``m1`` (or the cross spectrum with ``m2``), beam deconvolved, shape (nbins,).

        :class:`MasterPol`: maps (2, npix) Q, U or (3, npix) I, Q, U; D_b EE, EB, BE, BB, shape (4, nbins).
        """
        a1 = self.pseudo_alm(m1)
        a2 = a1 if m2 is None else self.pseudo_alm(m2)
        return self.decouple(self.pseudo_cl(a1, a2))

    def expected(self, cl: np.ndarray) -> np.ndarray:
        """Expectation of the estimate for a theory C_l (shape (>= lmax+1,)), binned D_b (shape (nbins,)).

        :class:`MasterPol`: C_l EE, EB, BE, BB, shape (4, >= lmax+1); D_b shape (4, nbins).
        """
        return self.decouple(self._apply(self._forward, cl))


class MasterPol(Master):
    """MASTER estimator of the polarisation spectra EE, EB, BE, BB (spin 2), decoupled jointly.

    Same parameters as :class:`Master` (``coupling``: the spin-2 :func:`coupling_matrix`, shape
    (2, lmax+1, lmax+1)); the bins must start at ell >= 2. Spectra are stacked along the second-to-last axis in
    the order :attr:`spectra` = (EE, EB, BE, BB): for maps 1 and 2, E1 E2, E1 B2, B1 E2 and B1 B2.

    Examples
    --------
    >>> est = MasterPol(weight, lmax, linear_bins(2, lmax, 20))        # doctest: +SKIP
    >>> ee, eb, be, bb = est.spectrum(qu)                              # qu: (2, npix) Q, U or (3, npix) I, Q, U
    """

    spin = 2
    spectra = ("EE", "EB", "BE", "BB")
    # sign of the M-- coupling from each sky spectrum (column) into each pseudo spectrum (row), module docstring
    _MINUS = np.array([[0, 0, 0, 1], [0, 0, -1, 0], [0, -1, 0, 0], [1, 0, 0, 0]], dtype=float)

    def _stacked_coupling(self) -> np.ndarray:
        plus, minus = np.asarray(self.coupling)
        return np.kron(np.eye(4), plus) + np.kron(self._MINUS, minus)

    def pseudo_alm(self, m: np.ndarray) -> np.ndarray:
        """E and B alm of the weighted Q, U maps, shape (2, nalm); ``m`` is (2, npix) Q, U or (3, npix) I, Q, U."""
        m = np.asarray(m, dtype=np.float64)
        if m.ndim != 2 or m.shape[0] not in (2, 3):
            raise ValueError(f"polarisation spectra need (2, npix) Q, U or (3, npix) I, Q, U maps, got {m.shape}")
        iqu = m if m.shape[0] == 3 else np.concatenate([np.zeros_like(m[:1]), m])
        return super().pseudo_alm(iqu)[1:]

    def pseudo_cl(self, a1: np.ndarray, a2: np.ndarray | None = None) -> np.ndarray:
        """Pseudo C~_l EE, EB, BE, BB of E, B pseudo alm ``a1`` (2, nalm) and ``a2``, shape (4, lmax+1)."""
        a2 = a1 if a2 is None else a2
        return sht.alm2cl(np.asarray(a1)[[0, 0, 1, 1]], np.asarray(a2)[[0, 1, 0, 1]])
