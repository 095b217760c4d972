"""Internal linear combination: minimum-variance weights, the shared ILC method frame, and harmonic ILC.

An ILC estimates the CMB as ``s = sum_i w_i d_i`` over channels ``d_i`` brought to one common beam, with the
weights that minimise the variance of ``s`` under the constraint ``sum_i w_i a_i = 1`` (``a`` = CMB SED, all
ones in uK_CMB). The constraint holds by construction, so the CMB passes with unit response whatever the
covariance; only foreground and noise are traded off. HILC does this in bins of multipole, NILC
(:mod:`cosmobench.cmb.methods.nilc`) per needlet scale and pixel.

Both methods share :class:`ILCMethod`: channel selection, harmonic transforms, the common output beam, the
per-scale beam criterion and polarisation (E and B separated independently). With ``fields="IQU"`` (the default)
``predict`` returns I, Q, U: the temperature ILC and the Q, U maps of the E and B ILCs.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from cosmobench.sky import sht

__all__ = ["ilc_weights", "check_unit_response", "cross_spectra", "ILCMethod", "HILC", "FIELDS"]

# Constraint check: unit response must hold to this absolute tolerance or a RuntimeError is raised.
RESPONSE_ATOL = 1e-8
FIELDS = ("IQU", "I")


def ilc_weights(
    cov: np.ndarray,
    sed: np.ndarray | None = None,
    *,
    deproject: np.ndarray | None = None,
    ridge: float = 1e-10,
) -> np.ndarray:
    """Minimum-variance (constrained) ILC weights with unit response to ``sed``.

    Solves ``w = C^-1 A (A^T C^-1 A)^-1 e`` with ``A = [sed, deproject...]`` and ``e = (1, 0, ...)``, on
    stacks of covariance matrices. The covariance is first normalised to unit diagonal and given a ridge of
    ``ridge`` (relative), which keeps noise-free, rank-deficient covariances solvable without changing the
    unit response (the weights are renormalised exactly through the constraint matrix).

    Parameters
    ----------
    cov : ndarray, shape (..., nch, nch), uK_CMB^2
        Channel-channel covariance (per pixel, per multipole bin, ...).
    sed : ndarray, shape (nch,), optional
        Response of each channel to the preserved component; ones (the CMB in uK_CMB) by default.
    deproject : ndarray, shape (ndep, nch), optional
        SEDs given zero response (constrained ILC).
    ridge : float
        Relative diagonal loading of the normalised covariance.

    Returns
    -------
    ndarray, shape (..., nch)
        Weights with ``w @ sed == 1`` and ``w @ deproject[k] == 0``.
    """
    cov = np.asarray(cov, dtype=np.float64)
    nch = cov.shape[-1]
    if cov.ndim < 2 or cov.shape[-2] != nch:
        raise ValueError(f"cov must have shape (..., nch, nch), got {cov.shape}")
    sed = np.ones(nch) if sed is None else np.asarray(sed, dtype=np.float64)
    cons = [sed] + ([] if deproject is None else list(np.atleast_2d(np.asarray(deproject, dtype=np.float64))))
    amat = np.stack(cons, axis=-1)  # (nch, ncons)
    if amat.shape[0] != nch:
        raise ValueError(f"sed/deproject have {amat.shape[0]} channels, cov has {nch}")
    if amat.shape[1] > nch:
        raise ValueError(f"{amat.shape[1]} constraints need at least as many channels, got {nch}")
    diag = np.sqrt(np.einsum("...ii->...i", cov))
    if not np.all(diag > 0):
        raise ValueError("covariance has a zero or negative variance on its diagonal (a channel with no signal?)")
    inv_d = 1.0 / diag
    cov_n = cov * inv_d[..., :, None]
    cov_n *= inv_d[..., None, :]
    idx = np.arange(nch)
    cov_n[..., idx, idx] += ridge
    a_n = amat * inv_d[..., :, None]  # (..., nch, ncons)
    x = np.linalg.solve(cov_n, a_n)  # C_n^-1 A_n
    if amat.shape[1] == 1:
        return x[..., 0] * inv_d / np.sum(a_n[..., 0] * x[..., 0], axis=-1, keepdims=True)
    gram = np.swapaxes(a_n, -1, -2) @ x  # (..., ncons, ncons)
    e = np.zeros(gram.shape[:-1] + (1,))
    e[..., 0, 0] = 1.0
    lam = np.linalg.solve(gram, e)  # (..., ncons, 1)
    return (x @ lam)[..., 0] * inv_d


def check_unit_response(weights: np.ndarray, sed: np.ndarray | None = None, what: str = "ILC") -> None:
    """Raise ``RuntimeError`` if ``weights @ sed`` differs from one by more than :data:`RESPONSE_ATOL`."""
    sed = np.ones(weights.shape[-1]) if sed is None else sed
    err = float(np.max(np.abs(weights @ sed - 1.0), initial=0.0))
    if err > RESPONSE_ATOL:
        raise RuntimeError(
            f"{what} weights lost unit CMB response (max |w.a - 1| = {err:.2e}); the channel covariance is "
            "numerically singular: check for identical or empty input channels"
        )


class ILCMethod:
    """Settings and plumbing shared by HILC and NILC (not used on its own).

    Parameters
    ----------
    bands : list of str, optional
        Bands to combine; by default every channel given except ``exclude_bands``.
    exclude_bands : sequence of str
        Bands left out when ``bands`` is not given: ``("30",)`` like CMB-ML's CNILC.
    output_beam_arcmin : float
        FWHM of the Gaussian beam of the output map, arcmin (CMB-ML: 20.6). 0 means deconvolved.
    lmax : int, optional
        Band limit; by default :func:`cosmobench.cmb.needlets.default_lmax` (382 at nside 128, 1024 at 512).
    beam_tol : float
        A channel is left out of a bin or needlet scale where its beam b_ell drops below this anywhere in the
        scale's support (PyILC's ``wavelet_beam_criterion``, 1e-3).
    mask : str or path, optional
        HEALPix FITS mask (1 = use); covariances are then estimated from unmasked pixels only. The output
        still covers the full sky.
    sht_iter : int
        Jacobi iterations of the map -> alm analyses.
    fields : {"IQU", "I"}
        What :meth:`predict` returns: I, Q, U (needs at least two polarised channels), or the temperature only.
    """

    def __init__(
        self,
        *,
        fields: str = "IQU",
        bands: Sequence[str] | None = None,
        exclude_bands: Sequence[str] = ("30",),
        output_beam_arcmin: float = 20.6,
        lmax: int | None = None,
        beam_tol: float = 1e-3,
        mask: str | Path | None = None,
        sht_iter: int = 3,
    ) -> None:
        if output_beam_arcmin is None or output_beam_arcmin < 0:
            raise ValueError(f"output_beam_arcmin must be >= 0 arcmin (0 = deconvolved), got {output_beam_arcmin}")
        if not 0 < beam_tol < 1:
            raise ValueError(f"beam_tol must be in (0, 1), got {beam_tol}")
        if lmax is not None and int(lmax) < 2:
            raise ValueError(f"lmax must be >= 2, got {lmax}")
        if fields not in FIELDS:
            raise ValueError(f"fields must be one of {list(FIELDS)}, got {fields!r}")
        self.fields = fields
        self.bands = None if bands is None else [str(b) for b in bands]
        self.exclude_bands = [str(b) for b in exclude_bands]
        self.output_beam_arcmin = float(output_beam_arcmin) if output_beam_arcmin > 0 else None
        self.lmax = None if lmax is None else int(lmax)
        self.beam_tol = float(beam_tol)
        self.mask = None if mask is None else Path(mask)
        self.sht_iter = int(sht_iter)

    def fit(self, dataset: Any, out_dir: Path, *, train_split: str = "Train", val_split: str = "Valid") -> dict:
        """Classical methods learn nothing; returns ``{}``."""
        return {}

    def output_lmax_for(self, nside: int) -> int:
        """Band limit of the output map at ``nside``: ``lmax``, or its default for that nside."""
        return self._lmax(nside)

    def predict(self, obs: dict[str, np.ndarray], channels: Sequence[Any]) -> np.ndarray:
        """CMB map at the output beam, band-limited at :meth:`output_lmax_for`.

        Parameters
        ----------
        obs : dict of str -> ndarray, shape (nfield, npix), uK_CMB
            Observed channels by band name (row 0 = I; rows 1, 2 = Q, U for the polarised channels), RING.
        channels : sequence of Channel
            Instrument channels (``band``, ``fwhm_arcmin`` and ``fields`` used).

        Returns
        -------
        ndarray, uK_CMB: shape (npix,) (I) with ``fields="I"``; shape (3, npix) (I, Q, U: :meth:`predict_temperature`
        and :meth:`predict_pol`) with ``fields="IQU"``.

        Raises
        ------
        ValueError
            ``fields="IQU"`` with fewer than two polarised channels (checked before any work).
        """
        if self.fields == "I":
            return self.predict_temperature(obs, channels)
        self._channels(obs, channels, pol=True)
        return np.vstack([self.predict_temperature(obs, channels)[None], self.predict_pol(obs, channels)])

    def predict_temperature(self, obs: dict[str, np.ndarray], channels: Sequence[Any]) -> np.ndarray:
        """CMB temperature map at the output beam.

        Parameters
        ----------
        obs : dict of str -> ndarray, shape (nfield, npix), uK_CMB
            Observed channels by band name (row 0 = I), RING ordering.
        channels : sequence of Channel
            Instrument channels (``band``, ``fwhm_arcmin`` used).

        Returns
        -------
        ndarray, shape (npix,), uK_CMB
        """
        chans = self._channels(obs, channels, pol=False)
        nside = sht.nside_of(obs[chans[0].band])
        lmax = self._lmax(nside)
        alm = np.stack([sht.map2alm(np.atleast_2d(obs[c.band])[0], lmax, self.sht_iter) for c in chans])
        beams = np.stack([sht.gauss_beam(c.fwhm_arcmin, lmax) for c in chans])
        out = self._combine(alm, beams, self._beam_out(lmax)[0], nside, self._mask_map(nside))
        return sht.alm2map(out, nside, lmax)

    def predict_pol(self, obs: dict[str, np.ndarray], channels: Sequence[Any]) -> np.ndarray:
        """CMB Q and U at the output beam, E and B separated independently.

        Uses the channels with fields ``"IQU"``; ``obs[band]`` must then hold I, Q, U.

        Returns
        -------
        ndarray, shape (2, npix), uK_CMB (Q, U)
        """
        chans = self._channels(obs, channels, pol=True)
        nside = sht.nside_of(obs[chans[0].band])
        lmax = self._lmax(nside)
        teb = np.stack([sht.map2alm(np.atleast_2d(obs[c.band])[:3], lmax, self.sht_iter) for c in chans])
        beams = np.stack([sht.gauss_beam(c.fwhm_arcmin, lmax, pol=True)[1] for c in chans])
        b_out = self._beam_out(lmax)[1]
        mask = self._mask_map(nside)
        out = np.zeros((3, teb.shape[-1]), dtype=np.complex128)
        for comp in (1, 2):
            out[comp] = self._combine(teb[:, comp], beams, b_out, nside, mask)
        return sht.alm2map(out, nside, lmax)[1:]

    def _combine(
        self, alm: np.ndarray, beams: np.ndarray, beam_out: np.ndarray, nside: int, mask: np.ndarray | None
    ) -> np.ndarray:
        """Output alm (nalm,) at ``beam_out`` from channel alm (nch, nalm) with beams (nch, lmax+1)."""
        raise NotImplementedError

    def _lmax(self, nside: int) -> int:
        from cosmobench.cmb.needlets import default_lmax

        lmax = default_lmax(nside) if self.lmax is None else self.lmax
        if lmax > 3 * nside - 1:
            raise ValueError(f"lmax={lmax} exceeds 3*nside-1 = {3 * nside - 1} for nside {nside}; lower lmax")
        return lmax

    def _beam_out(self, lmax: int) -> np.ndarray:
        """Output beam, shape (3, lmax+1) for T, E, B."""
        return sht.gauss_beam(self.output_beam_arcmin or 0.0, lmax, pol=True)

    def _mask_map(self, nside: int) -> np.ndarray | None:
        if self.mask is None:
            return None
        from cosmobench.cmb.masks import read_mask

        return read_mask(self.mask, nside)

    def _channels(self, obs: dict[str, np.ndarray], channels: Sequence[Any], pol: bool) -> list[Any]:
        by_band = {str(c.band): c for c in channels}
        if self.bands is not None:
            missing = [b for b in self.bands if b not in by_band]
            if missing:
                raise ValueError(f"bands {missing} are not among the channels given {sorted(by_band)}; fix 'bands'")
            chans = [by_band[b] for b in self.bands]
        else:
            chans = [c for c in channels if str(c.band) not in self.exclude_bands]
        if pol:
            chans = [c for c in chans if c.fields == "IQU"]
        absent = [c.band for c in chans if c.band not in obs]
        if absent:
            raise ValueError(f"obs has no map for bands {absent}; give every selected band or set 'bands'")
        hint = "; for a temperature-only map set fields=I (methods.<name>.fields=I)" if pol else ""
        if len(chans) < 2:
            kind = "polarised (IQU) " if pol else ""
            raise ValueError(f"an ILC needs at least 2 {kind}channels, got {[c.band for c in chans]}{hint}")
        if pol:
            short = [c.band for c in chans if np.atleast_2d(obs[c.band]).shape[0] < 3]
            if short:
                raise ValueError(f"bands {short} are marked IQU but their obs maps have fewer than 3 fields{hint}")
        return chans

    def _ratios(self, beams: np.ndarray, beam_out: np.ndarray) -> np.ndarray:
        """Beam-ratio transfer b_out / b_i per channel, zero where b_i is below ``beam_tol`` (never used there)."""
        usable = beams >= self.beam_tol
        return np.where(usable, beam_out / np.where(usable, beams, 1.0), 0.0)

    def _usable(self, beams: np.ndarray, ell_hi: int) -> np.ndarray:
        """Channels whose beam stays above ``beam_tol`` up to ``ell_hi``."""
        return np.flatnonzero(beams[:, ell_hi] >= self.beam_tol)


class HILC(ILCMethod):
    """Harmonic ILC: one set of weights per top-hat multipole bin, full sky.

    Parameters
    ----------
    delta_ell : int
        Bin width in multipoles (CMB-ML's HILC setting: 50). The ILC bias of a bin is about
        (nch - 1) / (number of modes in the bin).
    **settings
        See :class:`ILCMethod` (fields, bands, exclude_bands, output_beam_arcmin, lmax, beam_tol, mask, sht_iter).
    """

    def __init__(self, *, delta_ell: int = 50, **settings: Any) -> None:
        super().__init__(**settings)
        if int(delta_ell) < 1:
            raise ValueError(f"delta_ell must be a positive number of multipoles, got {delta_ell}")
        self.delta_ell = int(delta_ell)

    def _combine(
        self, alm: np.ndarray, beams: np.ndarray, beam_out: np.ndarray, nside: int, mask: np.ndarray | None
    ) -> np.ndarray:
        lmax = beams.shape[-1] - 1
        alm_c = sht.almxfl(alm, self._ratios(beams, beam_out))
        if mask is None:
            alm_cov = alm_c
        else:
            alm_cov = np.stack([sht.map2alm(sht.alm2map(a, nside, lmax) * mask, lmax, 0) for a in alm_c])
        cl = cross_spectra(alm_cov)  # (nch, nch, lmax+1)
        ell = np.arange(lmax + 1)
        w_ell = np.zeros((alm.shape[0], lmax + 1))
        for lo in range(0, lmax + 1, self.delta_ell):
            hi = min(lo + self.delta_ell, lmax + 1) - 1
            use = self._usable(beams, hi)
            if len(use) == 0:
                raise ValueError(f"no channel has b_ell >= beam_tol={self.beam_tol} up to ell={hi}; lower lmax")
            cov = np.sum(cl[np.ix_(use, use)][..., lo : hi + 1] * (2 * ell[lo : hi + 1] + 1), axis=-1)
            w = ilc_weights(cov) if len(use) > 1 else np.ones(1)
            check_unit_response(w, what=f"HILC bin {lo}-{hi}")
            w_ell[use, lo : hi + 1] = w[:, None]
        return np.sum(sht.almxfl(alm_c, w_ell), axis=0)


def cross_spectra(alm: np.ndarray) -> np.ndarray:
    """All channel cross spectra C_ell^{ij}.

    Parameters
    ----------
    alm : ndarray, shape (nch, nalm), complex

    Returns
    -------
    ndarray, shape (nch, nch, lmax+1), symmetric in the first two axes
    """
    nch = alm.shape[0]
    lmax = sht.alm_lmax(alm.shape[-1])
    out = np.empty((nch, nch, lmax + 1))
    for i in range(nch):
        out[i, i:] = sht.alm2cl(alm[i][None], alm[i:])
        out[i:, i] = out[i, i:]
    return out
