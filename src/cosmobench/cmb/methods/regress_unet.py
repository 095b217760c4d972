"""``regress_unet``: ``nilc_regress`` plus a full-sky UNet that learns its residual.

``nilc_unet`` with one change: the map the UNet corrects (its ``"nilc"`` input pseudo-band, and the residual it
learns) is NILC corrected by the fitted linear regression of ``nilc_regress``
(:class:`~cosmobench.cmb.methods.regress.NILCRegress`) instead of NILC alone. The learned part then only has to
find what the linear, classical correction misses, and it starts from it: the UNet's last layer starts at zero, so
the untrained method is ``nilc_regress`` exactly, and it is a candidate for the weights training keeps (those with
the lowest validation loss, chosen apart for the temperature and the polarisation networks; ``best_epoch`` in
``training.json``, -1 where no epoch beats it).

Fit (:meth:`RegressUNet.fit`): the regression is fitted first, on the same training split, into ``out_dir/base``
(its own ``training.json`` and ``model.pt``; the validation split only reported), then the UNet trains as
``nilc_unet``'s does, on the residual ``CMB at NILC's beam - nilc_regress``. The corrected maps of the training,
validation and calibration splits are computed from the cached NILC maps while the image arrays are built
(:class:`RegressedResidualData`); the arrays' manifest records the coefficients, so a new regression rebuilds them.
Prediction: ``nilc_regress`` of the maps, plus the UNet's correction (and its standard deviation with an
``uncertainty``: that of the learned part; the regression is deterministic given the maps).

With the regression's guard (``guard_drop``), a map whose null exceeds the threshold gets NILC's temperature as the
UNet's input and base map (the polarisation is corrected either way), and the UNet's T correction on top of it. The
network's T standard deviation, calibrated on regressed maps, is then far too small (on deep30's ``alt`` maps 19 % of
the pixels within 1 sigma: docs/results.md), so fit calibrates a second factor on the validation split with the
guard's fallback forced on every map (:meth:`NILCRegress.fallback`): ``s^2`` of ``calibration_rule`` over the pixels
of each map's correction region, ``z = (CMB - prediction) / sigma``. A map the guard flags gets its T sigma on that
region (where the fallback differs from the corrected map) times ``s`` (``training.json``: ``guard_fallback``; the
decision is in the prediction's FITS header, :meth:`RegressUNet.prediction_cards`).

The regression's settings are ``regress`` (``fsky``, ``mask_smooth_deg``, ``bands``, ``guard_drop``,
``guard_factor``; ``conf/cmb.yaml`` wires the ``nilc_regress`` method's there, so ``methods.nilc_regress.*`` sets
both); its ``nilc``, ``fields``, ``workers`` and ``progress`` are this method's.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ...core.io import write_json
from ...core.settings import plain
from ...core.train import save_state
from ..calibration import ZAccumulator, calibration_factors, coverage
from ..learned import MODEL_FILE
from .nilc_unet import NILC_BAND, NILCResidualData, NILCUNet, NILCUNetSettings
from .regress import NILCRegress, NILCRegressSettings

__all__ = ["RegressUNet", "RegressUNetSettings", "RegressedResidualData", "BASE_DIR", "FALLBACK"]

BASE_DIR = "base"  # subfolder of the run with the fitted regression
FALLBACK = "guard_fallback"  # config and training.json key of the T sigma factor on maps the guard flags
_SHARED = ("nilc", "fields", "workers", "progress")  # regression settings taken from this method's own


@dataclasses.dataclass(frozen=True, kw_only=True)
class RegressUNetSettings(NILCUNetSettings):
    """Settings of :class:`RegressUNet`: those of :class:`~cosmobench.cmb.methods.nilc_unet.NILCUNetSettings`
    plus

    Parameters
    ----------
    regress : mapping
        Settings of the :class:`~cosmobench.cmb.methods.regress.NILCRegress` whose map the UNet corrects
        (``fsky``, ``mask_smooth_deg``, ``bands``, ``guard_drop``, ``guard_factor``); its ``nilc``, ``fields``,
        ``workers`` and ``progress`` keys are ignored (this method's own are used), any other key raises
        ``TypeError``.
    """

    regress: Mapping[str, Any] = dataclasses.field(default_factory=dict)

    def __post_init__(self):
        super().__post_init__()
        if not isinstance(self.regress, Mapping):
            raise TypeError(f"regress must be a mapping of nilc_regress settings, got {type(self.regress).__name__}")
        regress = {k: v for k, v in plain(self.regress).items() if k not in _SHARED}
        NILCRegressSettings(**regress)  # an unknown key or a bad value stops here
        object.__setattr__(self, "regress", regress)


class RegressedResidualData(NILCResidualData):
    """A dataset seen through a fitted ``nilc_regress``: its map is the ``"nilc"`` pseudo-band and the target is
    the residual of that map (otherwise as :class:`~cosmobench.cmb.methods.nilc_unet.NILCResidualData`).

    Parameters
    ----------
    dataset, nilc, band_inputs
        As for :class:`~cosmobench.cmb.methods.nilc_unet.NILCResidualData`.
    regress : NILCRegress
        The fitted regression applied to each cached NILC map.
    loss_region : mapping, optional
        As for :class:`~cosmobench.cmb.methods.nilc_unet.NILCResidualData`.
    """

    def __init__(
        self,
        dataset: Any,
        nilc: Any,
        band_inputs: str,
        regress: NILCRegress,
        loss_region: Mapping[str, float] | None = None,
    ):
        super().__init__(dataset, nilc, band_inputs, loss_region)
        self.regress = regress
        self._last: tuple[tuple[str, int], np.ndarray] | None = None  # the inputs and the target read it in turn

    def nilc_map(self, split: str, i: int) -> np.ndarray:
        """The cached NILC map corrected by the regression, ndarray (nfield, npix) float64 uK_CMB."""
        if self._last is None or self._last[0] != (split, i):
            obs = self.dataset.load_obs(split, i, self.regress.input_bands)
            corrected = self.regress.correct(obs, self.channels, super().nilc_map(split, i))
            self._last = ((split, i), corrected)
        return self._last[1]


class RegressUNet(NILCUNet):
    """``nilc_regress`` + UNet residual corrector (registry name ``regress_unet``); see the module notes.

    Examples
    --------
    >>> method = RegressUNet(levels=4, base_channels=8, epochs=20)          # doctest: +SKIP
    >>> facts = method.fit(CMBDataset("data/cmb"), "runs/regress_unet")    # doctest: +SKIP
    >>> cmb = RegressUNet.load("runs/regress_unet").predict(obs, channels)  # doctest: +SKIP
    """

    name = "regress_unet"
    Settings = RegressUNetSettings

    def __init__(self, **settings: Any) -> None:
        super().__init__(**settings)
        s = self.settings
        self.regress = NILCRegress(
            **s.regress, nilc=s.nilc, fields=s.fields, workers=int(s.workers), progress=bool(s.progress)
        )

    def _base(self) -> dict[str, Any]:
        r = self.regress
        coefficients = None if r.coefficients is None else {g: a.tolist() for g, a in r.coefficients.items()}
        return {"method": r.name, "settings": self.settings.regress, "coefficients": coefficients}

    def _view(self, dataset: Any) -> RegressedResidualData:
        s = self.settings
        return RegressedResidualData(dataset, self.nilc, s.band_inputs, self.regress, s.loss_region())

    def _base_map(self, obs: dict[str, np.ndarray], channels: Sequence[Any]) -> np.ndarray:
        return self.regress.predict(obs, channels, obs.get(NILC_BAND))  # fit's calibration passes the cached NILC

    def _member(self, k: int, cache_dir: str | None = None) -> RegressUNet:
        member = super()._member(k, cache_dir)
        member.regress = self.regress  # the members correct the ensemble's one fitted regression
        return member

    def fit(
        self,
        dataset: Any,
        out_dir: Path | str,
        *,
        train_split: str = "Train",
        val_split: str | None = "Valid",
        on_epoch_end: Callable[[int, dict], None] | None = None,
    ) -> dict:
        """Fit the regression on ``train_split`` into ``out_dir/base``, then train the UNet on its residual.

        Parameters and returns as :meth:`cosmobench.cmb.learned.LearnedMethod.fit`, with ``regress`` added to
        the returned facts (the regression's, as in ``out_dir/base/training.json``).
        """
        self.check_calibration_splits(dataset, val_split)
        regress = self.regress.fit(dataset, Path(out_dir) / BASE_DIR, train_split=train_split, val_split=val_split)
        facts = super().fit(dataset, out_dir, train_split=train_split, val_split=val_split, on_epoch_end=on_epoch_end)
        if self.uncertainty and regress.get("guard"):  # the guard needs a validation split: the fit has one
            facts[FALLBACK] = self.config[FALLBACK] = self._fallback_calibration(dataset, val_split)
            write_json(Path(out_dir) / "training.json", facts)
            save_state(
                Path(out_dir) / MODEL_FILE, {"model": self.model.state_dict(), "epoch": -1, "config": self.config}
            )
        return {**facts, "regress": regress}

    def _fallback_calibration(self, dataset: Any, split: str) -> dict[str, Any]:
        """The T sigma factor of the guard's fallback, calibrated on ``split`` (module notes).

        Returns
        -------
        dict
            ``factor`` (``s^2``; the flagged map's T sigma is ``s`` times the network's calibrated one), ``coverage``
            (the fractions within 1 and 2 sigma there after it) and ``maps``.
        """
        view = NILCResidualData(dataset, self.nilc)
        regress, self.regress = self.regress, self.regress.fallback()
        gathered = ZAccumulator(1, torch.device("cpu"))
        indices = dataset.sim_indices(split)
        try:
            for i in indices:
                obs = dataset.load_obs(split, i)
                nilc = view.nilc_map(split, i)
                truth = nilc[0] + view.load_target(split, i)[0]
                mean, std = (np.atleast_2d(m)[0] for m in self._predict({**obs, NILC_BAND: nilc}, dataset.channels))
                region = self.regress.last_region > 0  # the fallback's, which corrected this map
                z2 = ((truth - mean) / std)[region] ** 2
                gathered.add(torch.from_numpy(z2).reshape(1, 1, -1))
        finally:
            self.regress = regress
        stats = gathered.result()
        factor = calibration_factors([stats], self.settings.calibration_rule)
        cover = coverage([stats], factor)
        return {
            "factor": factor[0],
            "coverage": [cover["cover1"][0], cover["cover2"][0]],
            "maps": len(indices),
        }

    def _predict(self, obs: dict[str, np.ndarray], channels: Sequence[Any]) -> tuple[np.ndarray, np.ndarray | None]:
        """As ``nilc_unet``'s; on a map the guard flags, the T sigma on the correction region times the fallback's
        factor (module notes)."""
        mean, std = super()._predict(obs, channels)
        decision, fallback = self.regress.last_guard, (self.config or {}).get(FALLBACK)
        if std is not None and fallback is not None and decision is not None and not decision.corrected:
            std = np.array(std)
            region = self.regress.last_region > 0  # where the fallback differs from the corrected map
            np.atleast_2d(std)[0, region] *= math.sqrt(fallback["factor"])
        return mean, std

    def prediction_cards(self) -> dict[str, tuple]:
        """FITS cards of the last prediction: the regression's guard decision
        (:meth:`NILCRegress.prediction_cards`)."""
        return self.regress.prediction_cards()

    @classmethod
    def load(cls, out_dir: Path | str, *, device: str = "auto", which: str = "model") -> RegressUNet:
        """The trained method from ``out_dir`` (as :meth:`cosmobench.cmb.learned.LearnedMethod.load`) with its
        regression from ``out_dir/base``."""
        method = super().load(out_dir, device=device, which=which)
        method.regress = NILCRegress.load(Path(out_dir) / BASE_DIR)
        return method
