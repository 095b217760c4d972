"""``unet_patch``: a UNet on nested HEALPix sub-face patches, stitched back to the full sky.

Like CMB-ML's PatchNN demo (9 channels, UNet 32 -> 256 channels, L1, Adam), with three differences: every patch
of every training simulation is used (the demo draws one unmasked patch per simulation), each patch carries a
halo of ``margin`` pixels from its sphere neighbours (so predictions do not degrade at patch edges; the network
predicts only the centre), and the layers have BatchNorm (``batch_norm=False`` removes it).
Patches are pixel permutations like the full-sky plane, so ``fields="IQU"`` (Q and U in HEALPix's basis) and
``uncertainty="gaussian"`` or ``"mc_dropout"`` work as for ``cmbnncs`` (:mod:`cosmobench.cmb.learned`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

from torch import nn

from ..learned import LearnedMethod, LearnedSettings
from ..nn import PatchNet
from ..tiling import PatchLayout

__all__ = ["PatchUNet", "PatchUNetSettings"]

ALL_BANDS = ("30", "44", "70", "100", "143", "217", "353", "545", "857")


@dataclasses.dataclass(frozen=True, kw_only=True)
class PatchUNetSettings(LearnedSettings):
    """Settings of :class:`PatchUNet`: those of :class:`~cosmobench.cmb.learned.LearnedSettings` plus

    Parameters
    ----------
    patch_nside : int, optional
        Patches are the pixels of this coarse grid (``12 patch_nside^2`` patches of ``nside / patch_nside``
        pixels a side); default ``max(1, nside // 64)``, i.e. 64-pixel patches (whole faces below nside 64).
    margin : int, optional
        Halo width in pixels; default a quarter of the patch side (at most ``nside``).
    levels : int
        UNet resolution levels.
    base_channels : int
        Width of the first level, doubled per level (reference: 32, so 32 -> 256 with 4 levels).
    batch_norm : bool
        BatchNorm after each convolution.
    """

    bands: Sequence[str] = ALL_BANDS
    batch_size: int = 32
    patch_nside: int | None = None
    margin: int | None = None
    levels: int = 4
    base_channels: int = 32
    batch_norm: bool = True

    def __post_init__(self):
        super().__post_init__()
        if int(self.levels) < 1 or int(self.base_channels) < 1:
            raise ValueError(f"levels and base_channels must be >= 1, got {self.levels}, {self.base_channels}")
        if self.margin is not None and int(self.margin) < 0:
            raise ValueError(f"margin must be >= 0, got {self.margin}")


class PatchUNet(LearnedMethod):
    """Patch UNet separator (registry name ``unet_patch``); see :class:`PatchUNetSettings` for the settings."""

    name = "unet_patch"
    Settings = PatchUNetSettings

    def _layout(self, nside: int) -> PatchLayout:
        s = self.settings
        patch_nside = s.patch_nside if s.patch_nside is not None else max(1, nside // 64)
        margin = s.margin if s.margin is not None else (nside // patch_nside) // 4
        return PatchLayout(nside, patch_nside, min(int(margin), nside))

    def _network(self, in_channels: int, nside: int, out_channels: int = 1) -> nn.Module:
        s = self.settings
        margin = self._layout(nside).margin
        return PatchNet(
            in_channels,
            int(s.levels),
            int(s.base_channels),
            out_channels,
            batch_norm=s.batch_norm,
            crop=margin,
            dropout=float(s.dropout),
        )
