"""``nilc_wiener``: NILC followed by the MSE-optimal isotropic linear filter (the linear-shrinkage baseline).

A learned estimator trained by squared error (or a Gaussian likelihood) predicts the conditional mean of the
CMB given the maps. Where the signal is below the noise, the simplest such estimator is linear: NILC's map
filtered multipole by multipole. This method is that baseline, so a learned corrector of NILC (``nilc_unet``) can
be compared with plain linear shrinkage, above all for E and B.

Fit (``fit``, on ``train_split``): per multipole ell and field X in T, E, B (E and B from the spin-2 transform of
NILC's Q, U),

    W_ell^X = sum_maps sum_m Re(a^NILC_lm conj(a^truth_lm)) / sum_maps sum_m |a^NILC_lm|^2,

the least-squares isotropic linear filter of NILC onto the truth: the CMB at NILC's output beam, band-limited at
its lmax (``NILCResidualData.load_target + nilc_map``, exactly what ``nilc_unet`` is trained towards). When NILC
= truth + independent noise, W_ell = C_ell^S / (C_ell^S + N_ell), the empirical Wiener filter. The sums run over
pseudo-alm of the maps weighted by an apodised mask built on ``train_split`` as the evaluation builds its analysis
mask (the ``fsky`` of the faintest foregrounds, :func:`cosmobench.cmb.masks.threshold_mask` of the split's mean
foreground intensity, smoothed by ``mask_smooth_deg``), C1-apodised by ``apod_deg``: the large foreground residual
of NILC in the Galactic plane must not set the filter of the high-latitude sky where the methods are scored. E and
B are first separated on the full sky; the mask then multiplies the Q, U maps of the E part and of the B part in
turn and only the E (resp. B) pseudo-alm is kept, so E-to-B leakage of the mask cannot enter W^B. The ratio of
two pseudo-spectra of the same mask estimates the full-sky ratio where the spectra vary slowly across the mask's
coupling width (a few multipoles for a smooth mask).

Predict: NILC of the observed maps (the ``nilc`` settings), its alm (T, and E, B with ``fields="IQU"``) times
W_ell, back to I (, Q, U) at NILC's output beam and band limit. The filter is applied as a correction,
``NILC + alm2map((W - 1) a)``, so W = 1 returns NILC bit for bit and the map's analysis error is not added where
W is near 1.

NILC predictions of the training and validation splits are the ones ``nilc_unet`` uses, computed once with the
registered ``nilc`` method (``<root>/nilc/<split>/simNNNN/cmb_pred.fits``) and read, with the truth, through
:class:`~cosmobench.cmb.methods.nilc_unet.NILCResidualData`: the ``nilc`` setting must equal the ``nilc``
method's settings of that dataset (``conf/cmb.yaml`` wires it). The validation split only reports the residual
RMS of NILC and of the filtered NILC (``training.json``); nothing is tuned on it, nor on the test splits.

Files in ``out_dir``: ``wiener.npz`` (the filter, its cross and auto sums, the fit mask), ``training.json``
(the facts :meth:`NILCWiener.fit` returns) and, last, ``model.pt`` (the filter and the run's config,
``torch.save`` of tensors and plain values, read with ``weights_only``).
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Sequence
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

from ...core.io import write_json, write_npz
from ...sky import sht
from .. import masks
from ..settings import EvaluateSettings
from .fitted import (
    MODEL_FILE,
    NILCCorrector,
    NILCCorrectorSettings,
    check_nilc_channels,
    residual_rms,
    save_fitted,
)
from .nilc_unet import NILCResidualData, nilc_of

__all__ = [
    "NILCWiener",
    "NILCWienerSettings",
    "field_alm",
    "spectra_sums",
    "wiener_filter",
    "apply_filter",
    "fit_mask",
    "FIELD_NAMES",
    "MODEL_FILE",
]

FIELD_NAMES = "TEB"  # rows of the filter: T, then E and B with fields="IQU"
FILTER_FILE = "wiener.npz"
FACTS_FILE = "training.json"


@dataclasses.dataclass(frozen=True, kw_only=True)
class NILCWienerSettings(NILCCorrectorSettings):
    """Settings of :class:`NILCWiener`: those of :class:`~cosmobench.cmb.methods.fitted.NILCCorrectorSettings`
    (``fsky`` and ``mask_smooth_deg`` make the fit mask: the faintest-foreground fraction of the training split's
    sky, as the evaluation's threshold mask) plus

    Parameters
    ----------
    apod_deg : float
        C1 apodisation scale of the fit mask, degrees (the evaluation's spectra use the same default).
    """

    apod_deg: float = EvaluateSettings.apod_deg

    def __post_init__(self):
        super().__post_init__()
        if float(self.apod_deg) < 0:
            raise ValueError(f"apod_deg must be >= 0 degrees, got {self.apod_deg}")

    @property
    def bands(self) -> list[str]:
        """NILC's ``bands`` setting (empty when NILC takes every channel it is given but ``exclude_bands``).

        Read by :func:`cosmobench.cmb.separate.check_model` beside the model's ``fwhm_arcmin``.
        """
        return [str(b) for b in self.nilc.get("bands") or ()]


# ----------------------------------------------------------------------------------------------- the fit's core
def field_alm(maps: np.ndarray, weight: np.ndarray | None, lmax: int, iter: int = 3) -> np.ndarray:
    """The alm of each field of a map, or the pseudo-alm of each field-part map weighted by ``weight``.

    Parameters
    ----------
    maps : ndarray, shape (npix,), (1, npix) or (3, npix), uK_CMB, RING
        I, or I, Q, U (HEALPix/COSMO convention).
    weight : ndarray, shape (npix,), or None
        Pixel weight (an apodised mask); None for the full sky.
    lmax : int
        Band limit.
    iter : int
        Jacobi iterations of the analyses.

    Returns
    -------
    ndarray, shape (ncomp, nalm), complex128
        T, or T, E, B. With ``weight``: T of ``weight * I``; E (B) of ``weight`` times the Q, U maps synthesised
        from the full-sky E (B) alm alone, so a mask mixes no E into B.
    """
    maps = np.atleast_2d(np.asarray(maps, dtype=np.float64))
    alm = sht.map2alm(maps, lmax, iter)
    if weight is None:
        return alm
    nside = sht.nside_of(maps)
    weight = np.asarray(weight, dtype=np.float64)
    if len(alm) == 1:
        return sht.map2alm(weight * sht.alm2map(alm, nside, lmax), lmax, iter)
    zero = np.zeros_like(alm[0])
    t_and_e = sht.map2alm(weight * sht.alm2map(np.stack([alm[0], alm[1], zero]), nside, lmax), lmax, iter)
    b_only = sht.map2alm(weight * sht.alm2map(np.stack([zero, zero, alm[2]]), nside, lmax), lmax, iter)
    return np.stack([t_and_e[0], t_and_e[1], b_only[2]])


def spectra_sums(pred_alm: np.ndarray, truth_alm: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-multipole sums over m of the prediction x truth and prediction x prediction products.

    Parameters
    ----------
    pred_alm, truth_alm : ndarray, shape (ncomp, nalm) or (nalm,), complex, uK_CMB
        alm in healpy's layout (T, or T, E, B), of one map pair.

    Returns
    -------
    cross, auto : ndarray, shape (ncomp, lmax+1), uK_CMB^2
        ``sum_m Re(a_pred conj(a_truth))`` and ``sum_m abs(a_pred)^2`` over m = -ell..ell, i.e. (2 ell + 1) C_ell.
        Sums over maps are sums of these.
    """
    pred_alm, truth_alm = np.atleast_2d(pred_alm), np.atleast_2d(truth_alm)
    if pred_alm.shape != truth_alm.shape:
        raise ValueError(f"prediction and truth alm differ in shape: {pred_alm.shape} vs {truth_alm.shape}")
    modes = 2 * np.arange(sht.alm_lmax(pred_alm.shape[-1]) + 1) + 1
    return sht.alm2cl(pred_alm, truth_alm) * modes, sht.alm2cl(pred_alm) * modes


def wiener_filter(cross: np.ndarray, auto: np.ndarray) -> np.ndarray:
    """The least-squares filter ``W = cross / auto`` per multipole (0 where ``auto`` is 0, e.g. E, B at ell < 2).

    Parameters
    ----------
    cross, auto : ndarray, shape (ncomp, lmax+1), uK_CMB^2
        Sums of :func:`spectra_sums` over the maps.

    Returns
    -------
    ndarray, shape (ncomp, lmax+1), dimensionless: unconstrained (a noisy estimate may leave [0, 1]).
    """
    cross, auto = np.asarray(cross, dtype=np.float64), np.asarray(auto, dtype=np.float64)
    positive = auto > 0
    return np.where(positive, cross / np.where(positive, auto, 1.0), 0.0)


def apply_filter(maps: np.ndarray, w_ell: np.ndarray, *, lmax: int, iter: int = 3) -> np.ndarray:
    """Multiply the alm of each field of ``maps`` by ``w_ell`` and return maps: ``maps + alm2map((W - 1) a)``.

    Parameters
    ----------
    maps : ndarray, shape (npix,) or (3, npix), uK_CMB, RING
        I, or I, Q, U band-limited at ``lmax`` (NILC's output).
    w_ell : ndarray, shape (ncomp, >= lmax+1) or (>= lmax+1,)
        Filter of T, or of T, E, B (ncomp = number of fields of ``maps``).
    lmax : int
        Band limit of the analysis and synthesis.
    iter : int
        Jacobi iterations of the analysis.

    Returns
    -------
    ndarray, same shape as ``maps``, float64 uK_CMB: ``maps`` exactly where W = 1.
    """
    squeeze = np.ndim(maps) == 1
    m = np.atleast_2d(np.asarray(maps, dtype=np.float64))
    w = np.atleast_2d(np.asarray(w_ell, dtype=np.float64))
    if len(w) != len(m):
        raise ValueError(f"the filter has {len(w)} row(s) (T, E, B), the maps {len(m)} field(s)")
    alm = sht.map2alm(m, lmax, iter)
    out = m + sht.alm2map(sht.almxfl(alm, w[:, : lmax + 1] - 1.0), sht.nside_of(m), lmax)
    return out[0] if squeeze else out


def fit_mask(
    dataset: Any, split: str, *, fsky: float, smooth_deg: float, apod_deg: float
) -> tuple[np.ndarray, np.ndarray]:
    """The fit's analysis mask: the evaluation's threshold mask of ``split``, and its C1 apodisation.

    Parameters
    ----------
    dataset : CMBDataset
        The mask is made from the mean foreground intensity of the split's simulations
        (``foreground_I_map.fits``) or, without those files, from its highest-frequency observed maps, as
        :func:`cosmobench.cmb.evaluate.evaluate` does.
    split : str
    fsky : float
        Sky fraction kept (1 = the full sky, read from no file).
    smooth_deg, apod_deg : float
        Smoothing FWHM before thresholding and C1 apodisation scale, degrees.

    Returns
    -------
    binary : ndarray, shape (npix,), 0/1
    weight : ndarray, shape (npix,), in [0, 1]
    """
    from ..evaluate import split_threshold_mask  # the evaluation's own recipe

    npix = sht.npix(int(dataset.nside))
    if fsky >= 1:
        return np.ones(npix), np.ones(npix)
    binary = split_threshold_mask(dataset, split, dataset.sim_indices(split), fsky=fsky, smooth_deg=smooth_deg)
    return binary, masks.apodize(binary, apod_deg)


def _pair(view: NILCResidualData, split: str, i: int) -> tuple[np.ndarray, np.ndarray]:
    """NILC map and truth (CMB at NILC's beam and lmax) of one simulation, each (nfield, npix) uK_CMB."""
    nilc = view.nilc_map(split, i)
    return nilc, view.load_target(split, i) + nilc


def _sim_sums(
    view: NILCResidualData, split: str, weight: np.ndarray | None, lmax: int, iter: int, i: int
) -> tuple[np.ndarray, np.ndarray]:
    """:func:`spectra_sums` of one simulation's NILC and truth field alm (weighted by ``weight``)."""
    nilc, truth = _pair(view, split, i)
    return spectra_sums(field_alm(nilc, weight, lmax, iter), field_alm(truth, weight, lmax, iter))


def _sim_rmse(
    view: NILCResidualData, split: str, w_ell: np.ndarray, mask: np.ndarray, lmax: int, iter: int, i: int
) -> dict[str, list[float]]:
    """Residual RMS (uK) of NILC and of the filtered NILC on the ``mask`` pixels of one simulation, per field."""
    nilc, truth = _pair(view, split, i)
    filtered = apply_filter(nilc, w_ell, lmax=lmax, iter=iter)
    return {
        "nilc": residual_rms(nilc - truth, mask, lmax, iter),
        "filtered": residual_rms(filtered - truth, mask, lmax, iter),
    }


# ------------------------------------------------------------------------------------------------- the method
class NILCWiener(NILCCorrector):
    """NILC + the least-squares isotropic filter per multipole and field (registry name ``nilc_wiener``).

    "Trained" like a learned method (:meth:`fit`, :meth:`~cosmobench.cmb.methods.fitted.NILCCorrector.load`), so
    ``cosmobench cmb train method=nilc_wiener`` fits it and ``cosmobench cmb separate method=nilc_wiener`` applies
    it; see the module notes and :class:`NILCWienerSettings`.

    Examples
    --------
    >>> method = NILCWiener(fields="IQU")                                 # doctest: +SKIP
    >>> facts = method.fit(CMBDataset("data/cmb"), "runs/nilc_wiener")   # doctest: +SKIP
    >>> iqu = NILCWiener.load("runs/nilc_wiener").predict(obs, channels)  # doctest: +SKIP
    """

    name = "nilc_wiener"
    Settings = NILCWienerSettings

    def __init__(self, **settings: Any) -> None:
        super().__init__(**settings)
        self.bands = self.nilc.bands  # the maps separate loads: NILC's (None = every band of the dataset)
        self.filter: np.ndarray | None = None  # (nfield, lmax+1): T, or T, E, B

    def _restore(self, arrays: dict[str, np.ndarray], config: dict) -> None:
        self.filter, self.config = arrays["filter"], config

    def fit(
        self,
        dataset: Any,
        out_dir: Path | str,
        *,
        train_split: str = "Train",
        val_split: str | None = "Valid",
        on_epoch_end: Callable[[int, dict], None] | None = None,
    ) -> dict:
        """Cache NILC on ``train_split`` and ``val_split``, fit W_ell on ``train_split``, report ``val_split``.

        Parameters
        ----------
        dataset : CMBDataset
            A dataset on disk, where the NILC predictions are written (``<root>/nilc/<split>``).
        out_dir : path
            Run folder: ``wiener.npz``, ``training.json``, then ``model.pt``.
        train_split, val_split : str
            Split fitted on, and split whose residual RMS is reported (None or empty: none).
        on_epoch_end : callable, optional
            Accepted for the learned-method interface; never called (there are no epochs).

        Returns
        -------
        dict
            ``method``, ``n_train_maps``, ``n_val_maps``, ``nside``, ``lmax``, ``fields`` ("T" or "TEB"),
            ``filter`` (field -> W_ell, ell = 0..lmax), ``fsky_fit`` (binary mask) and ``fsky_fit_w2`` (mean of the
            squared apodised weight), ``val_rmse_nilc`` and ``val_rmse_filtered`` (uK_CMB, mean over the
            validation maps of the RMS on the fit mask's pixels: ``I`` or ``I, Q, U, E, B`` at NILC's beam and
            lmax; None without validation), ``seconds``.
        """
        s = self.settings
        t0 = time.perf_counter()
        out_dir = Path(out_dir)
        train_idx, val_idx, view = self._start_fit(dataset, out_dir, train_split, val_split)
        nside = int(dataset.nside)
        lmax = self.output_lmax_for(nside)
        it = self.nilc.sht_iter
        binary, weight = fit_mask(
            dataset, train_split, fsky=float(s.fsky), smooth_deg=float(s.mask_smooth_deg), apod_deg=float(s.apod_deg)
        )
        full_sky = bool(np.all(weight == 1.0))
        sums = self._map(
            partial(_sim_sums, view, train_split, None if full_sky else weight, lmax, it), train_idx, "fit"
        )
        cross = np.sum([c for c, _ in sums], axis=0)
        auto = np.sum([a for _, a in sums], axis=0)
        w_ell = wiener_filter(cross, auto)
        names = FIELD_NAMES[: len(w_ell)]
        rmse = self._validate(
            partial(_sim_rmse, view, val_split, w_ell, binary, lmax, it), val_idx, ("nilc", "filtered")
        )
        channels = {c.band: c for c in dataset.channels}
        config = {
            **self._config(dataset, train_split, val_split, len(train_idx), len(val_idx)),
            "lmax": int(lmax),
            "fields": names,
            # beams of NILC's channels, aligned with settings.bands (what separate.check_model compares)
            "fwhm_arcmin": [getattr(channels.get(b), "fwhm_arcmin", None) for b in s.bands],
            "pol_bands": [],  # reads no Q, U map of a channel directly (NILC does)
        }
        facts = {
            "method": self.name,
            "n_train_maps": len(train_idx),
            "n_val_maps": len(val_idx),
            "nside": nside,
            "lmax": int(lmax),
            "fields": names,
            "filter": {f: w.tolist() for f, w in zip(names, w_ell)},
            "fsky_fit": float(np.mean(binary)),
            "fsky_fit_w2": float(np.mean(weight**2)),
            "val_rmse_nilc": rmse["nilc"],
            "val_rmse_filtered": rmse["filtered"],
            "seconds": time.perf_counter() - t0,
        }
        write_npz(
            out_dir / FILTER_FILE,
            ell=np.arange(lmax + 1),
            filter=w_ell,
            cross=cross,
            auto=auto,
            fields=np.array(list(names)),
            n_maps=np.array(len(train_idx)),
            mask=binary,
            weight=weight,
        )
        write_json(out_dir / FACTS_FILE, facts)
        save_fitted(out_dir / MODEL_FILE, {"filter": w_ell}, config)  # last: its presence marks a finished fit
        self.filter, self.config = w_ell, config
        return facts

    def predict(self, obs: dict[str, np.ndarray], channels: Sequence[Any]) -> np.ndarray:
        """NILC of ``obs``, filtered by the fitted W_ell.

        Parameters
        ----------
        obs : dict of str to ndarray, shape (nfield, npix) or (npix,), uK_CMB, RING
            Observed maps by band, as for :meth:`cosmobench.cmb.methods.nilc.NILC.predict`.
        channels : sequence of Channel
            The channels of ``obs``; the beams of those NILC combined in the fit must be unchanged.

        Returns
        -------
        ndarray, float64, uK_CMB, at NILC's output beam and band limit: shape (npix,) (I) with ``fields="I"``,
        (3, npix) (I, Q, U) with ``fields="IQU"``.
        """
        if self.filter is None or self.config is None:
            raise RuntimeError("NILCWiener is not fitted: call fit(dataset, out_dir) or NILCWiener.load(out_dir)")
        check_nilc_channels(self.nilc, channels, self.config, "the filter was fitted")
        nilc = nilc_of(self.nilc, obs, channels)
        nside = sht.nside_of(nilc)
        if nside != int(self.config["nside"]):
            raise ValueError(f"the filter was fitted at nside {self.config['nside']}, the maps are nside {nside}")
        return apply_filter(nilc, self.filter, lmax=self.output_lmax_for(nside), iter=self.nilc.sht_iter)
