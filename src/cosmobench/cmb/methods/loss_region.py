"""Loss regions: the pixels of each map whose target a learned separator is trained and calibrated on.

The evaluation scores the sky outside the Galactic plane (:mod:`cosmobench.cmb.masks`), while a network trained
on every pixel spends much of its loss there, where the foregrounds are hundreds of times the CMB. With
``loss_fsky < 1`` a method's training loss, the validation loss that chooses the weights kept and the
calibration of its error bars read only each map's faintest ``loss_fsky`` of its highest-frequency intensity
(:func:`correction_region`, the region ``nilc_regress`` corrects); the cached targets are NaN elsewhere and the
losses of :mod:`cosmobench.cmb.learned` leave NaN pixels out. The region comes from the observed maps only, so a
prediction needs nothing more; the network still predicts every pixel, extrapolating outside the region.
Whether it pays is measured per method (docs/cmb_methods.md, "The loss region"); every default is 1.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from .. import masks
from ..settings import EvaluateSettings

__all__ = ["LossRegionSettings", "RegionTargets", "blank_outside", "correction_region", "map_region", "region_band"]


def region_band(channels: Sequence[Any]) -> str:
    """The band whose intensity sets each map's correction region: the highest-frequency channel's."""
    return str(max(channels, key=lambda c: c.center_ghz).band)


def correction_region(intensity: np.ndarray, *, fsky: float, smooth_deg: float) -> np.ndarray:
    """A map's correction region: the faintest ``fsky`` of an observed intensity map.

    Parameters
    ----------
    intensity : ndarray, shape (npix,), uK_CMB
        The I map of the map's highest-frequency channel.
    fsky : float
        Sky fraction kept (1: every pixel).
    smooth_deg : float
        Smoothing FWHM before thresholding, degrees.

    Returns
    -------
    ndarray, shape (npix,), float64 of 0 and 1 (:func:`cosmobench.cmb.masks.threshold_mask`).
    """
    intensity = np.abs(np.asarray(intensity, dtype=np.float64))
    if fsky >= 1:
        return np.ones_like(intensity)
    return masks.threshold_mask(intensity, fsky, smooth_deg=smooth_deg)


@dataclasses.dataclass(frozen=True, kw_only=True)
class LossRegionSettings:
    """The loss-region settings of a learned method (a mixin of its settings dataclass, listed before
    :class:`~cosmobench.cmb.learned.LearnedSettings`).

    Parameters
    ----------
    loss_fsky : float
        Sky fraction, in (0, 1], of each map on which the training loss, the validation loss (which chooses the
        weights kept) and the error bars' calibration are computed: the faintest ``loss_fsky`` of the map's
        highest-frequency intensity smoothed by ``loss_smooth_deg`` (:func:`correction_region`). 1: every
        pixel. The map and its error are predicted on the whole sky either way; outside the region they are the
        network's extrapolation, not fitted or calibrated there.
    loss_smooth_deg : float
        FWHM of the smoothing before that threshold, degrees (the evaluation mask's by default).
    """

    loss_fsky: float = 1.0
    loss_smooth_deg: float = EvaluateSettings.mask_smooth_deg

    def __post_init__(self):
        super().__post_init__()
        if not 0 < self.loss_fsky <= 1 or self.loss_smooth_deg < 0:
            raise ValueError(
                f"loss_fsky must be in (0, 1] and loss_smooth_deg >= 0, got {self.loss_fsky} and {self.loss_smooth_deg}"
            )

    def loss_region(self) -> dict[str, float] | None:
        """``{"fsky", "smooth_deg"}`` of the loss region, None for every pixel (``loss_fsky = 1``)."""
        if self.loss_fsky >= 1:
            return None
        return {"fsky": float(self.loss_fsky), "smooth_deg": float(self.loss_smooth_deg)}


def map_region(dataset: Any, split: str, i: int, loss_region: Mapping[str, float]) -> np.ndarray:
    """Simulation ``i``'s loss region, ndarray (npix,) of bool, from its highest-frequency intensity.

    Parameters
    ----------
    dataset : CMBDataset
        Anything with ``channels`` and ``load_obs(split, i, bands)``: the observed maps that set the region.
    split : str
    i : int
    loss_region : mapping
        ``{"fsky": f, "smooth_deg": d}`` (:meth:`LossRegionSettings.loss_region`).
    """
    band = region_band(dataset.channels)
    intensity = np.atleast_2d(dataset.load_obs(split, i, [band])[band])[0]
    fsky, smooth_deg = float(loss_region["fsky"]), float(loss_region["smooth_deg"])
    return correction_region(intensity, fsky=fsky, smooth_deg=smooth_deg) > 0


def blank_outside(target: np.ndarray, dataset: Any, split: str, i: int, loss_region: Mapping[str, float]) -> np.ndarray:
    """``target``, ndarray (nfield, npix), with NaN outside simulation ``i``'s loss region (:func:`map_region`;
    set in place and returned)."""
    target[:, ~map_region(dataset, split, i, loss_region)] = np.nan
    return target


class RegionTargets:
    """A dataset whose targets are NaN outside each map's loss region; everything else is the dataset's.

    Parameters
    ----------
    dataset : CMBDataset
        The dataset seen.
    loss_region : mapping
        ``{"fsky": f, "smooth_deg": d}`` (:meth:`LossRegionSettings.loss_region`).
    """

    def __init__(self, dataset: Any, loss_region: Mapping[str, float]):
        self.dataset, self.loss_region = dataset, dict(loss_region)

    def __getattr__(self, name: str) -> Any:
        if name == "dataset":  # not yet set (e.g. while unpickling): no recursion
            raise AttributeError(name)
        return getattr(self.dataset, name)

    def load_target(self, split: str, i: int) -> np.ndarray:
        """The dataset's target, ndarray (nfield, npix) float64 uK_CMB, NaN outside the loss region."""
        target = np.array(np.atleast_2d(self.dataset.load_target(split, i)), dtype=np.float64)
        return blank_outside(target, self.dataset, split, i, self.loss_region)
