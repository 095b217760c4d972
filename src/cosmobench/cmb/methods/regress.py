"""``nilc_regress``: NILC plus the least-squares regression of its residual on the band-minus-NILC maps.

The classical, supervised linear corrector of NILC: the yardstick for ``nilc_unet``'s learned correction (which
can represent it, so it should at least match it). For one simulation and field group g (``"T"``: the I maps;
``"P"``: the Q and U maps, one coefficient per band for both) the regressors are

    x_b = band b reconvolved from its beam to NILC's output beam, band-limited at NILC's lmax,  -  NILC

which hold no CMB at unit response (NILC keeps the CMB with unit response and so does every band): x_b is band b's
foregrounds and noise minus NILC's error. The corrected map

    NILC + m * sum_b a_b x_b  =  (1 - sum_b a_b) NILC + sum_b a_b band_b   on m

keeps NILC's CMB response exactly (a correction, not a shrinkage). The closer sum_b a_b is to 1 (0.84-1.00 in
temperature in the fits of docs/results.md), the more it is a fixed combination of the bands on m, whose weights,
fitted once on many maps, carry none of the ILC bias (the error along the CMB) of weights fitted to each map's own
data, NILC's included. ``m`` is the map's own correction region: the faintest ``fsky`` of the intensity of the
dataset's highest-frequency channel in that simulation, smoothed by ``mask_smooth_deg``
(:func:`cosmobench.cmb.masks.threshold_mask`, the evaluation's recipe on observed data), so the Galactic plane, where
NILC's residual follows other laws, neither sets the coefficients nor receives the correction.

Fit (:meth:`NILCRegress.fit`, on ``train_split``): ``a_g = argmin sum_maps sum_{p in m} |r_p - sum_b a_b x_b,p|^2``
with r = the CMB at NILC's output beam and lmax minus NILC (``nilc_unet``'s target), by normal equations
accumulated map by map in float64 (:func:`normal_equations`, summed in the order of the maps whatever the number of
workers or threads) and solved by least squares (:func:`solve_coefficients`). The validation split reports the
residual RMS of NILC and of the corrected NILC on the correction region (``training.json``) and, with
``guard_drop``, sets the guard's threshold (``guard_factor`` times its largest null there, :func:`null_rms`);
nothing else is set on it.

NILC predictions of the training and validation splits are the ones ``nilc_unet`` and ``nilc_wiener`` use
(``<root>/nilc/<split>/simNNNN/cmb_pred.fits``, :func:`~cosmobench.cmb.methods.nilc_unet.cache_nilc`), so the
``nilc`` setting must equal the ``nilc`` method's (``conf/cmb.yaml`` wires it). Files in ``out_dir``:
``training.json`` (the facts) and, last, ``model.pt`` (the coefficients and the config;
:mod:`~cosmobench.cmb.methods.fitted`).
"""

from __future__ import annotations

import copy
import dataclasses
import time
from collections.abc import Callable, Mapping, Sequence
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

from ...core.io import write_json
from ...sky import sht
from ..learned import check_beams
from .fitted import MODEL_FILE, NILCCorrector, NILCCorrectorSettings, check_nilc_channels, residual_rms, save_fitted
from .guard import GuardDecision
from .loss_region import correction_region, region_band
from .nilc_unet import NILCResidualData, nilc_of

__all__ = [
    "NILCRegress",
    "NILCRegressSettings",
    "regressors",
    "normal_equations",
    "null_rms",
    "solve_coefficients",
    "GROUPS",
]

GROUPS = {"T": slice(0, 1), "P": slice(1, 3)}  # field group -> rows of an I, Q, U map it corrects
GUARD = "guard"  # the coefficients of the guard's second temperature combination
FACTS_FILE = "training.json"


@dataclasses.dataclass(frozen=True, kw_only=True)
class NILCRegressSettings(NILCCorrectorSettings):
    """Settings of :class:`NILCRegress`: those of :class:`~cosmobench.cmb.methods.fitted.NILCCorrectorSettings`
    (``fsky`` and ``mask_smooth_deg`` make each map's correction region from the intensity of its
    highest-frequency channel) plus

    Parameters
    ----------
    bands : sequence of str, optional
        The regressors' channels (each is used for the fields it has); empty or None: every channel of the dataset.
    guard_drop : sequence of str, optional
        Bands left out of a second temperature combination fitted beside the first; with them, a map's temperature
        is corrected only where the rms of the difference of the two corrections on its correction region (a null
        map without CMB, :func:`null_rms`) is at most ``guard_factor`` times its largest value on the validation
        split, and is NILC's elsewhere. Empty or None: no guard, every map corrected.
    guard_factor : float
        The guard's threshold in units of the largest validation value (> 0).
    """

    bands: Sequence[str] | None = None
    guard_drop: Sequence[str] | None = None
    guard_factor: float = 1.5

    def __post_init__(self):
        super().__post_init__()
        object.__setattr__(self, "bands", [str(b) for b in self.bands or ()])
        object.__setattr__(self, "guard_drop", [str(b) for b in self.guard_drop or ()])
        if not float(self.guard_factor) > 0:
            raise ValueError(f"guard_factor must be positive, got {self.guard_factor}")


# ----------------------------------------------------------------------------------------------- the fit's core
def regressors(
    obs: Mapping[str, np.ndarray],
    nilc_map: np.ndarray,
    beams: Mapping[str, float],
    bands: Mapping[str, Sequence[str]],
    *,
    output_beam_arcmin: float,
    lmax: int,
    iter: int = 3,
) -> dict[str, np.ndarray]:
    """The band-minus-NILC maps of one simulation, per field group.

    Parameters
    ----------
    obs : mapping of str to ndarray, shape (nfield, npix), uK_CMB, RING
        Observed maps by band.
    nilc_map : ndarray, shape (1, npix) or (3, npix), uK_CMB
        NILC's I (, Q, U) at ``output_beam_arcmin``, band-limited at ``lmax``.
    beams : mapping of str to float
        Band -> beam FWHM, arcmin.
    bands : mapping of str to sequence of str
        Group (``"T"``, ``"P"``) -> its regressor bands.
    output_beam_arcmin : float
        NILC's output beam FWHM, arcmin.
    lmax : int
        NILC's output band limit.
    iter : int
        Jacobi iterations of the analyses.

    Returns
    -------
    dict group -> ndarray, shape (nband, nrow, npix), float64 uK_CMB: ``T`` (nrow 1), ``P`` (nrow 2: Q, U).
    """
    nilc_map = np.atleast_2d(nilc_map)
    needed = list(dict.fromkeys(b for group in bands.values() for b in group))
    at_beam = {}
    for b in needed:
        maps = np.atleast_2d(obs[b])[: 3 if "P" in bands and b in bands["P"] else 1]
        at_beam[b] = sht.reconvolve(maps, beams[b], output_beam_arcmin, lmax=lmax, iter=iter)
    return {g: np.stack([at_beam[b][GROUPS[g]] - nilc_map[GROUPS[g]] for b in group]) for g, group in bands.items()}


def normal_equations(x: np.ndarray, r: np.ndarray, region: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``X^T X`` and ``X^T r`` over the pixels of ``region`` (every row of a group pooled), independent of the
    number of BLAS threads.

    Parameters
    ----------
    x : ndarray, shape (nband, nrow, npix)
        Regressors of one group (:func:`regressors`).
    r : ndarray, shape (nrow, npix)
        The residual to predict (CMB - NILC), same rows.
    region : ndarray, shape (npix,)
        Pixels used (> 0).

    Returns
    -------
    xtx : ndarray, shape (nband, nband), float64, uK^2
    xtr : ndarray, shape (nband,), float64, uK^2
    """
    keep = region > 0
    xm = np.asarray(x[:, :, keep].reshape(len(x), -1), dtype=np.float64)
    rm = np.asarray(r[:, keep].reshape(-1), dtype=np.float64)
    # einsum's own loops, not BLAS: the sums, hence the coefficients, are the same bits whatever the thread count
    return np.einsum("bp,cp->bc", xm, xm), np.einsum("bp,p->b", xm, rm)


def null_rms(x: np.ndarray, coef: np.ndarray, coef2: np.ndarray, kept: Sequence[int], region: np.ndarray) -> float:
    """The guard's statistic: rms over ``region`` of ``sum_b coef_b x_b - sum_k coef2_k x_kept[k]``.

    Both combinations keep the CMB with unit response, so the difference holds none; where the bands follow the
    foreground laws both were fitted on it holds their noise, elsewhere their different foreground residuals.

    Parameters
    ----------
    x : ndarray, shape (nband, 1, npix)
        Temperature regressors (:func:`regressors`, group ``"T"``), uK_CMB.
    coef : ndarray, shape (nband,)
        The correction's coefficients.
    coef2 : ndarray, shape (len(kept),)
        The second combination's, on the bands ``kept`` (indices into ``x``).
    kept : sequence of int
    region : ndarray, shape (npix,)
        Pixels used (> 0).

    Returns
    -------
    float, uK_CMB.
    """
    keep = region > 0
    diff = np.tensordot(coef, x[:, 0, keep], axes=1) - np.tensordot(coef2, x[list(kept), 0][:, keep], axes=1)
    return float(np.sqrt(np.mean(diff**2)))


def solve_coefficients(xtx: np.ndarray, xtr: np.ndarray) -> np.ndarray:
    """The least-squares coefficients of the summed normal equations (minimum-norm if ``xtx`` is singular).

    Returns
    -------
    ndarray, shape (nband,), dimensionless
    """
    return np.linalg.lstsq(np.asarray(xtx, dtype=np.float64), np.asarray(xtr, dtype=np.float64), rcond=None)[0]


def _without_t(coef: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The coefficients with the temperature correction off: what the guard keeps (NILC's T, the rest corrected)."""
    return {**coef, "T": np.zeros_like(coef["T"])}


def _correct(nilc_map: np.ndarray, x: Mapping[str, np.ndarray], coef: Mapping[str, np.ndarray], region) -> np.ndarray:
    """``NILC + region * sum_b a_b x_b`` for every group, ndarray (nfield, npix) float64."""
    out = np.array(np.atleast_2d(nilc_map), dtype=np.float64)
    for g, xg in x.items():
        out[GROUPS[g]] += region * np.tensordot(coef[g], xg, axes=1)
    return out


# ------------------------------------------------------------------------------------------------- the method
class NILCRegress(NILCCorrector):
    """NILC + the least-squares regression of its residual on band-minus-NILC maps (registry ``nilc_regress``).

    "Trained" like a learned method (:meth:`fit`, :meth:`~cosmobench.cmb.methods.fitted.NILCCorrector.load`); see
    the module notes and :class:`NILCRegressSettings`.

    Examples
    --------
    >>> method = NILCRegress(fields="IQU")                                  # doctest: +SKIP
    >>> facts = method.fit(CMBDataset("data/cmb"), "runs/nilc_regress")    # doctest: +SKIP
    >>> iqu = NILCRegress.load("runs/nilc_regress").predict(obs, channels)  # doctest: +SKIP
    """

    name = "nilc_regress"
    Settings = NILCRegressSettings

    def __init__(self, **settings: Any) -> None:
        super().__init__(**settings)
        self.bands: list[str] = []  # separate loads every band: NILC's, the regressors' and the region's
        self.coefficients: dict[str, np.ndarray] | None = None  # group -> (nband,)
        self.last_guard: GuardDecision | None = None  # the guard's decision on the last map corrected
        self.last_region: np.ndarray | None = None  # the correction region of the last map corrected, (npix,)

    def _restore(self, arrays: dict[str, np.ndarray], config: dict) -> None:
        self.coefficients, self.config = arrays, config

    def _group_bands(self, channels: Sequence[Any], available: Sequence[str]) -> dict[str, list[str]]:
        """Group -> regressor bands: the ``bands`` setting (or every available one), by the fields each has."""
        chosen = self.settings.bands or list(available)
        missing = [b for b in chosen if b not in available]
        if missing:
            raise ValueError(f"bands {missing} are not among the channels given ({list(available)}); fix bands=...")
        polarised = {str(c.band) for c in channels if getattr(c, "fields", "I") == "IQU"}
        groups = {"T": chosen}
        if self.fields == "IQU":
            groups["P"] = [b for b in chosen if b in polarised]
            if not groups["P"]:
                raise ValueError(f"fields=IQU needs a polarised channel among bands {chosen}; add one or set fields=I")
        return groups

    def _region(self, obs: Mapping[str, np.ndarray], band: str) -> np.ndarray:
        """The correction region of one simulation's maps, from its ``band`` intensity."""
        s = self.settings
        return correction_region(np.atleast_2d(obs[band])[0], fsky=float(s.fsky), smooth_deg=float(s.mask_smooth_deg))

    def _sim_terms(self, view: NILCResidualData, split: str, region_band: str, groups, i: int) -> dict:
        """Regressors, residual target, NILC map and correction region of one simulation."""
        needed = [*(b for g in groups.values() for b in g), region_band]
        obs = view.dataset.load_obs(split, i, list(dict.fromkeys(needed)))
        nilc_map = view.nilc_map(split, i)
        x = regressors(
            obs,
            nilc_map,
            {str(c.band): float(c.fwhm_arcmin) for c in view.channels},
            groups,
            output_beam_arcmin=self.output_beam_arcmin,
            lmax=self.output_lmax_for(view.nside),
            iter=self.nilc.sht_iter,
        )
        return {"x": x, "r": view.load_target(split, i), "nilc": nilc_map, "region": self._region(obs, region_band)}

    def _sim_sums(self, view, split, region_band, groups, kept, i: int) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        terms = self._sim_terms(view, split, region_band, groups, i)
        sums = {g: normal_equations(xg, terms["r"][GROUPS[g]], terms["region"]) for g, xg in terms["x"].items()}
        if kept:  # the guard's second temperature combination
            sums[GUARD] = normal_equations(terms["x"]["T"][kept], terms["r"][GROUPS["T"]], terms["region"])
        return sums

    def _sim_rmse(self, view, split, region_band, groups, coef, kept, i: int) -> dict:
        """Residual RMS of NILC and of the corrected map of one simulation, and with a guard (``kept``) its null."""
        terms = self._sim_terms(view, split, region_band, groups, i)
        truth = terms["r"] + terms["nilc"]
        corrected = _correct(terms["nilc"], terms["x"], coef, terms["region"])
        lmax, it = self.output_lmax_for(view.nside), self.nilc.sht_iter
        row = {
            "nilc": residual_rms(terms["nilc"] - truth, terms["region"], lmax, it),
            "corrected": residual_rms(corrected - truth, terms["region"], lmax, it),
        }
        if kept:
            row["null"] = null_rms(terms["x"]["T"], coef["T"], coef[GUARD], kept, terms["region"])
        return row

    def fit(
        self,
        dataset: Any,
        out_dir: Path | str,
        *,
        train_split: str = "Train",
        val_split: str | None = "Valid",
        on_epoch_end: Callable[[int, dict], None] | None = None,
    ) -> dict:
        """Cache NILC on ``train_split`` and ``val_split``, fit the coefficients on ``train_split``, report
        ``val_split``.

        Parameters
        ----------
        dataset : CMBDataset
            A dataset on disk, where the NILC predictions are written (``<root>/nilc/<split>``).
        out_dir : path
            Run folder: ``training.json``, then ``model.pt``.
        train_split, val_split : str
            Split fitted on, and split whose residual RMS is reported (None or empty: none).
        on_epoch_end : callable, optional
            Accepted for the learned-method interface; never called (there are no epochs).

        Returns
        -------
        dict
            ``method``, ``n_train_maps``, ``n_val_maps``, ``nside``, ``lmax``, ``bands`` (group -> its regressor
            bands), ``coefficients`` (group -> band -> a_b), ``val_rmse_nilc`` and ``val_rmse_corrected``
            (uK_CMB, mean over the validation maps of the RMS on each map's correction region: ``I`` or
            ``I, Q, U, E, B`` at NILC's beam and lmax; None without validation), ``guard`` (None without
            ``guard_drop``; else its kept bands, their coefficients, the threshold and the validation nulls' range,
            uK_CMB), ``seconds``.
        """
        s = self.settings
        t0 = time.perf_counter()
        out_dir = Path(out_dir)
        groups = self._group_bands(dataset.channels, list(dataset.bands))  # a bad `bands` stops before any work
        kept = self._guard_kept(groups["T"])
        train_idx, val_idx, view = self._start_fit(dataset, out_dir, train_split, val_split)
        if kept and not val_idx:
            raise ValueError("guard_drop needs a validation split to set the guard's threshold; give val_split")
        band = region_band(dataset.channels)
        sums = self._map(partial(self._sim_sums, view, train_split, band, groups, kept), train_idx, "fit")
        coef = {g: solve_coefficients(sum(m[g][0] for m in sums), sum(m[g][1] for m in sums)) for g in sums[0]}
        validate = partial(self._sim_rmse, view, val_split, band, groups, coef, kept)
        rows = self._map(validate, val_idx, "validate") if val_idx else []
        rmse = self._mean_rms(rows, ("nilc", "corrected"))
        guard = None
        if kept:  # one pass over the validation maps reports the residuals and sets the guard's threshold
            nulls = [r["null"] for r in rows]
            guard = {
                "kept": kept,
                "threshold": float(s.guard_factor) * max(nulls),
                "valid_null": [min(nulls), max(nulls)],
            }
        channels = {c.band: c for c in dataset.channels}
        nside = int(dataset.nside)
        config = {
            **self._config(dataset, train_split, val_split, len(train_idx), len(val_idx)),
            "groups": groups,
            "region_band": band,
            # what separate.check_model compares: the beams of settings.bands (none when every band is used)
            "fwhm_arcmin": [channels[b].fwhm_arcmin for b in s.bands],
            "band_fwhm_arcmin": {b: channels[b].fwhm_arcmin for g in groups.values() for b in g},
            "pol_bands": groups.get("P", []),
            "guard": guard,
        }
        facts = {
            "method": self.name,
            "n_train_maps": len(train_idx),
            "n_val_maps": len(val_idx),
            "nside": nside,
            "lmax": int(self.output_lmax_for(nside)),
            "bands": groups,
            "coefficients": {g: dict(zip(groups[g], coef[g].tolist())) for g in groups},
            "guard": guard and {**guard, "kept": [groups["T"][k] for k in kept], "coefficients": coef[GUARD].tolist()},
            "val_rmse_nilc": rmse["nilc"],
            "val_rmse_corrected": rmse["corrected"],
            "seconds": time.perf_counter() - t0,
        }
        write_json(out_dir / FACTS_FILE, facts)
        save_fitted(out_dir / MODEL_FILE, coef, config)  # last: its presence marks a finished fit
        self.coefficients, self.config = coef, config
        return facts

    def _guard_kept(self, bands: Sequence[str]) -> list[int]:
        """Indices of the temperature bands the guard's second combination keeps (empty: no guard)."""
        drop = self.settings.guard_drop
        if not drop:
            return []
        unknown = [b for b in drop if b not in bands]
        if unknown or len(drop) >= len(bands):
            raise ValueError(
                f"guard_drop {list(drop)} must name some, not all, of the temperature bands {list(bands)}; fix it"
            )
        return [k for k, b in enumerate(bands) if b not in drop]

    @property
    def input_bands(self) -> list[str]:
        """The bands the fitted correction reads: its regressors' and its region's (empty before the fit)."""
        if self.config is None:
            return []
        return list(dict.fromkeys([*self.config["band_fwhm_arcmin"], self.config["region_band"]]))

    def _require_fitted(self) -> None:
        if self.coefficients is None or self.config is None:
            raise RuntimeError("NILCRegress is not fitted: call fit(dataset, out_dir) or NILCRegress.load(out_dir)")

    def _require(self, obs: Mapping[str, np.ndarray]) -> None:
        """Refuse an unfitted method, or observations without a band the fitted correction reads."""
        self._require_fitted()
        missing = [b for b in self.input_bands if b not in obs]
        if missing:
            raise ValueError(f"the regression was fitted with bands {missing} too; give their maps")

    def correct(self, obs: Mapping[str, np.ndarray], channels: Sequence[Any], nilc_map: np.ndarray) -> np.ndarray:
        """The fitted regression applied to a NILC map of ``obs``: ``NILC + m * sum_b a_b x_b`` (with a guard, the
        temperature stays NILC's where the guard's null exceeds its threshold; the decision is kept in
        :attr:`last_guard`, the map's correction region in :attr:`last_region`).

        Parameters
        ----------
        obs : mapping of str to ndarray, shape (nfield, npix) or (npix,), uK_CMB, RING
            Observed maps: at least :attr:`input_bands`.
        channels : sequence of Channel
            Their channels; the beams of the fit's bands must be unchanged.
        nilc_map : ndarray, shape (nfield, npix) or (npix,), uK_CMB
            NILC's map of these observations (I, or I, Q, U as ``fields``), at its output beam and band limit.

        Returns
        -------
        ndarray, shape (nfield, npix), float64, uK_CMB.
        """
        self._require(obs)
        trained = self.config["band_fwhm_arcmin"]
        check_beams(channels, trained, "the regression was fitted")
        nilc_map = np.atleast_2d(np.asarray(nilc_map, dtype=np.float64))
        nside = sht.nside_of(nilc_map)
        if nside != int(self.config["nside"]):
            raise ValueError(f"the regression was fitted at nside {self.config['nside']}, the maps are nside {nside}")
        x = regressors(
            obs,
            nilc_map,
            trained,
            self.config["groups"],
            output_beam_arcmin=self.output_beam_arcmin,
            lmax=self.output_lmax_for(nside),
            iter=self.nilc.sht_iter,
        )
        region = self.last_region = self._region(obs, self.config["region_band"])
        coef, guard = self.coefficients, self.config.get("guard")
        if guard:
            null = null_rms(x["T"], coef["T"], coef[GUARD], guard["kept"], region)
            self.last_guard = GuardDecision(null, float(guard["threshold"]), null <= guard["threshold"])
            if not self.last_guard.corrected:
                coef = _without_t(coef)
        return _correct(nilc_map, x, coef, region)

    def region_of(self, obs: Mapping[str, np.ndarray]) -> np.ndarray:
        """The fitted correction's region on the maps ``obs`` (from its region band), ndarray (npix,) in [0, 1]."""
        self._require(obs)
        return self._region(obs, self.config["region_band"])

    def fallback(self) -> NILCRegress:
        """This fitted regression without its temperature correction and guard: what the guard falls back to on
        every map (NILC's temperature; the polarisation corrected)."""
        self._require_fitted()
        out = copy.copy(self)
        out.coefficients = _without_t(self.coefficients)
        out.config = {**self.config, "guard": None}
        out.last_guard = out.last_region = None
        return out

    def prediction_cards(self) -> dict[str, tuple]:
        """FITS cards of the last prediction (``cmb separate`` writes them in its header): the guard's decision
        (:class:`GuardDecision`), none without a guard."""
        return {} if self.last_guard is None else self.last_guard.cards()

    def predict(
        self, obs: dict[str, np.ndarray], channels: Sequence[Any], nilc_map: np.ndarray | None = None
    ) -> np.ndarray:
        """NILC of ``obs`` plus the fitted regression on its band-minus-NILC maps, on the map's correction region.

        Parameters
        ----------
        obs : dict of str to ndarray, shape (nfield, npix) or (npix,), uK_CMB, RING
            Observed maps by band: those NILC uses and the regressor bands of the fit.
        channels : sequence of Channel
            The channels of ``obs``; the beams of the fit's bands and of NILC's must be unchanged.
        nilc_map : ndarray, shape (nfield, npix) or (npix,), uK_CMB, optional
            NILC's map of ``obs`` when it is at hand (e.g. the cached one of a dataset): NILC is not run again.

        Returns
        -------
        ndarray, float64, uK_CMB, at NILC's output beam and band limit: shape (npix,) (I) with ``fields="I"``,
        (3, npix) (I, Q, U) with ``fields="IQU"``.
        """
        self._require(obs)  # before NILC's work
        check_nilc_channels(self.nilc, channels, self.config, "the regression was fitted")
        if nilc_map is None:
            nilc_map = nilc_of(self.nilc, obs, channels)
        out = self.correct(obs, channels, nilc_map)
        return out[0] if self.fields == "I" else out
