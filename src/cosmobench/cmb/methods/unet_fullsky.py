"""``cmbnncs``: cmbNNCS's full-sky UNet on the 12 HEALPix faces tiled into a (4 nside, 3 nside) plane.

Reproduces the reference (Wang et al. 2022 as run by CMB-ML v0.1.1): inputs 100/143/217/353 GHz, UNet5 for
nside <= 128 and UNet8 above, L1 loss, Adam. Differences, all settings: the defaults standardise the inputs
(``norm="reference"`` gives raw inputs and target / 5), decay the learning rate on a cosine from 2e-3 rather than
exponentially from 0.1 (``lr=0.1, schedule="exp", lr_decay=1e-5`` is the reference), take one optimiser step
per batch (the reference repeats each batch 3 times), and validate every epoch (keeping the best weights).
The network zero-pads the plane to a multiple of ``2**levels``, so any depth runs at any nside.
With ``fields="IQU"`` it reads Q and U of the polarised bands too and predicts I, Q, U; with
``uncertainty="gaussian"`` (a variance head) or ``"mc_dropout"`` (``dropout > 0``: the spread of stochastic
passes) it also predicts a calibrated per-pixel standard deviation (:mod:`cosmobench.cmb.learned`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

from torch import nn

from ..learned import LearnedMethod, LearnedSettings
from ..nn import FullSkyNet, reference_config
from ..tiling import PlaneLayout

__all__ = ["FullSkyUNet", "FullSkyUNetSettings"]


@dataclasses.dataclass(frozen=True, kw_only=True)
class FullSkyUNetSettings(LearnedSettings):
    """Settings of :class:`FullSkyUNet`: those of :class:`~cosmobench.cmb.learned.LearnedSettings` plus

    Parameters
    ----------
    levels : int, optional
        Encoder depth; default 5 (UNet5) for nside <= 128, else 8 (UNet8).
    base_channels : int, optional
        Width of the first level, doubled per level; default the reference's (32 for UNet5, 16 for UNet8).
    channels : sequence of int, optional
        Explicit widths per level (overrides ``levels`` and ``base_channels``).
    batch_norm : bool
        BatchNorm after each layer but the last (reference: yes).
    """

    bands: Sequence[str] = ("100", "143", "217", "353")
    batch_size: int = 12
    levels: int | None = None
    base_channels: int | None = None
    channels: Sequence[int] | None = None
    batch_norm: bool = True

    def __post_init__(self):
        super().__post_init__()
        if self.channels is not None:
            object.__setattr__(self, "channels", [int(c) for c in self.channels])
            if not self.channels or min(self.channels) < 1:
                raise ValueError(f"channels must be a non-empty list of positive widths, got {self.channels}")
        if self.levels is not None and int(self.levels) < 1:
            raise ValueError(f"levels must be >= 1, got {self.levels}")


class FullSkyUNet(LearnedMethod):
    """Full-sky UNet separator (registry name ``cmbnncs``); see :class:`FullSkyUNetSettings` for the settings.

    Examples
    --------
    >>> method = FullSkyUNet(base_channels=8, levels=4, epochs=5)          # doctest: +SKIP
    >>> facts = method.fit(CMBDataset("data/cmb"), "runs/cmbnncs")        # doctest: +SKIP
    >>> cmb = FullSkyUNet.load("runs/cmbnncs").predict(obs, channels)     # doctest: +SKIP
    """

    name = "cmbnncs"
    Settings = FullSkyUNetSettings

    def _layout(self, nside: int) -> PlaneLayout:
        return PlaneLayout(nside)

    def _network(self, in_channels: int, nside: int, out_channels: int = 1) -> nn.Module:
        s = self.settings
        if s.channels is not None:
            arch = reference_config(len(s.channels))
            arch["channels"] = list(s.channels)
        else:
            levels = s.levels if s.levels is not None else (5 if nside <= 128 else 8)
            arch = reference_config(int(levels), s.base_channels)
        return FullSkyNet(
            in_channels, **arch, out_channels=out_channels, batch_norm=s.batch_norm, dropout=float(s.dropout)
        )
