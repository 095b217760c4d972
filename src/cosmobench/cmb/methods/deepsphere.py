"""``deepsphere``: a DeepSphere-style graph-convolution UNet on the HEALPix sphere itself.

The spherical baseline (Perraudin et al. 2019, Defferrard et al. 2020): no projection to a plane or patches, so
no seams and no distortion; Chebyshev filters of the HEALPix neighbour graph's Laplacian, exactly equivariant
under the grid's 90-degree rotations about the polar axis, and pooling over the NESTED hierarchy
(:mod:`cosmobench.cmb.sphere`). Maps enter the shared learned-method machinery (:mod:`cosmobench.cmb.learned`:
cached arrays, normalisation, training loop, checkpoints, predict, load) as "images" of one row, the pixels in
NESTED order (:class:`NestedLayout`). With ``loss_fsky < 1`` it trains on each map's loss region only
(:mod:`cosmobench.cmb.methods.loss_region`); on bench128 that is worse than the whole sky on every seed
(docs/cmb_unets.md), so the default stays 1.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from torch import nn

from ...sky.sht import check_nside
from ..learned import LearnedMethod, LearnedSettings
from ..sphere import SphereUNet
from .loss_region import LossRegionSettings, RegionTargets

__all__ = ["DeepSphereUNet", "DeepSphereSettings", "NestedLayout"]


class NestedLayout:
    """RING maps <-> one NESTED row per map: images (1, C, 1, 12 nside^2), any number of channels C.

    Parameters
    ----------
    nside : int
        HEALPix resolution of the maps.
    loss_region : mapping, optional
        ``{"fsky", "smooth_deg"}`` of the targets' loss region (recorded by :meth:`describe`, so cached arrays
        of another region are rebuilt); None: every pixel.
    """

    def __init__(self, nside: int, loss_region: Mapping[str, float] | None = None):
        import healpy as hp

        self.nside = check_nside(nside)
        self.loss_region = None if loss_region is None else dict(loss_region)
        npix = 12 * self.nside**2
        self.images_per_map = 1
        self.image_shape = self.target_shape = (1, npix)
        self._ring_of_nest = hp.nest2ring(self.nside, np.arange(npix))  # image position -> RING pixel
        self._nest_of_ring = hp.ring2nest(self.nside, np.arange(npix))  # RING pixel -> image position

    def describe(self) -> dict:
        """Plain-dict description (for manifests)."""
        region = {"loss_region": self.loss_region} if self.loss_region is not None else {}
        return {"kind": "nested", "nside": self.nside, **region}

    def images(self, maps):
        """(C, npix) RING -> (1, C, 1, npix) NESTED (numpy array or torch tensor)."""
        return maps[..., self._ring_of_nest][None, :, None, :]

    def target_images(self, maps):
        """Same as :meth:`images`."""
        return self.images(maps)

    def to_map(self, images):
        """(1, C, 1, npix) NESTED -> (C, npix) RING."""
        if tuple(images.shape[2:]) != self.image_shape or images.shape[0] != 1:
            raise ValueError(f"expected images of shape (1, C, {', '.join(map(str, self.image_shape))})")
        return images[0, :, 0][..., self._nest_of_ring]


@dataclasses.dataclass(frozen=True, kw_only=True)
class DeepSphereSettings(LossRegionSettings, LearnedSettings):
    """Settings of :class:`DeepSphereUNet`: those of :class:`~cosmobench.cmb.learned.LearnedSettings` plus

    Parameters
    ----------
    levels : int
        Resolution levels (nside, nside / 2, ...): the network pools ``levels - 1`` times, so it needs
        ``nside >= 2^(levels - 1)``.
    base_channels : int
        Feature width at full resolution, doubled per level.
    cheb_k : int
        Chebyshev terms per graph convolution (polynomial degree ``cheb_k - 1`` of the Laplacian: each filter
        reaches ``cheb_k - 1`` neighbours away).
    batch_norm : bool
        BatchNorm after each convolution but the output layer.
    loss_fsky, loss_smooth_deg : float
        The loss region (:class:`~cosmobench.cmb.methods.loss_region.LossRegionSettings`; default 1, every pixel).

    Notes
    -----
    ``dropout`` must stay 0 (so ``uncertainty="mc_dropout"`` is not available): the graph UNet has no dropout
    layers.
    """

    bands: Sequence[str] = ("100", "143", "217", "353")
    batch_size: int = 12
    levels: int = 5
    base_channels: int = 32
    cheb_k: int = 3
    batch_norm: bool = True

    def __post_init__(self):
        super().__post_init__()
        if self.dropout:
            raise ValueError(
                f"deepsphere does not support dropout (got dropout={self.dropout}), hence no uncertainty=mc_dropout; "
                "use uncertainty=gaussian, or cmbnncs / unet_patch / nilc_unet for MC dropout"
            )
        if int(self.levels) < 1 or int(self.base_channels) < 1 or int(self.cheb_k) < 1:
            raise ValueError(
                f"need levels, base_channels and cheb_k >= 1; got levels={self.levels}, "
                f"base_channels={self.base_channels}, cheb_k={self.cheb_k}"
            )


class DeepSphereUNet(LearnedMethod):
    """Graph-convolution UNet on the HEALPix sphere (registry name ``deepsphere``); see
    :class:`DeepSphereSettings` for the settings.

    Examples
    --------
    >>> method = DeepSphereUNet(levels=4, base_channels=16, epochs=40)    # doctest: +SKIP
    >>> facts = method.fit(CMBDataset("data/cmb"), "runs/deepsphere")     # doctest: +SKIP
    >>> cmb = DeepSphereUNet.load("runs/deepsphere").predict(obs, channels)  # doctest: +SKIP
    """

    name = "deepsphere"
    Settings = DeepSphereSettings

    def _layout(self, nside: int) -> NestedLayout:
        return NestedLayout(nside, self.settings.loss_region())

    def _view(self, dataset: Any) -> Any:
        """The dataset, its targets NaN outside each map's loss region when ``loss_fsky < 1``."""
        region = self.settings.loss_region()
        return dataset if region is None else RegionTargets(dataset, region)

    def _network(self, in_channels: int, nside: int, out_channels: int = 1) -> nn.Module:
        s = self.settings
        widths = [int(s.base_channels) * 2**i for i in range(int(s.levels))]
        return SphereUNet(
            in_channels, nside, widths, k=int(s.cheb_k), out_channels=out_channels, batch_norm=s.batch_norm
        )
