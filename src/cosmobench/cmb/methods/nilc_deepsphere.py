"""``nilc_deepsphere``: NILC plus a graph-convolution UNet on the sphere that learns NILC's residual.

``nilc_unet``'s correction (:class:`~cosmobench.cmb.methods.nilc_unet.LearnedNILCCorrector`: the NILC map as the
first input beside a few observed bands, the residual target ``CMB at NILC's beam - NILC``, the output layer
started at zero so the untrained corrector is NILC exactly, the best of the untrained and every epoch's weights
kept by the validation loss) with ``deepsphere``'s network in place of the full-sky plane UNet: Chebyshev filters
of the HEALPix neighbour graph and pooling over the NESTED hierarchy (:mod:`cosmobench.cmb.sphere`), so the
correction has no seams between the 12 base faces and no distortion at their corners. Its settings are those of
``deepsphere`` (``levels``, ``base_channels``, ``cheb_k``, ...) plus ``nilc``, ``band_inputs`` and the loss
region of :class:`~cosmobench.cmb.methods.nilc_unet.LearnedNILCCorrectorSettings`; as for ``deepsphere`` there is no
dropout, so no ``uncertainty="mc_dropout"``.
"""

from __future__ import annotations

import dataclasses

from .deepsphere import DeepSphereSettings, DeepSphereUNet, NestedLayout
from .nilc_unet import LearnedNILCCorrector, LearnedNILCCorrectorSettings, ResidualLayout

__all__ = ["NILCDeepSphere", "NILCDeepSphereSettings", "ResidualNestedLayout"]


@dataclasses.dataclass(frozen=True, kw_only=True)
class NILCDeepSphereSettings(LearnedNILCCorrectorSettings, DeepSphereSettings):
    """Settings of :class:`NILCDeepSphere`: those of :class:`~cosmobench.cmb.methods.deepsphere.DeepSphereSettings`
    plus :class:`~cosmobench.cmb.methods.nilc_unet.LearnedNILCCorrectorSettings` (``bands``, ``nilc``, ``band_inputs``,
    the loss region)."""


class ResidualNestedLayout(ResidualLayout, NestedLayout):
    """The NESTED rows of :class:`~cosmobench.cmb.methods.deepsphere.NestedLayout` described as
    :class:`~cosmobench.cmb.methods.nilc_unet.ResidualLayout` says."""


class NILCDeepSphere(LearnedNILCCorrector, DeepSphereUNet):
    """NILC + graph-UNet residual corrector on the sphere (registry name ``nilc_deepsphere``); see
    :class:`NILCDeepSphereSettings`.

    Examples
    --------
    >>> method = NILCDeepSphere(levels=4, base_channels=16, epochs=60)              # doctest: +SKIP
    >>> facts = method.fit(CMBDataset("data/cmb"), "runs/nilc_deepsphere")          # doctest: +SKIP
    >>> cmb = NILCDeepSphere.load("runs/nilc_deepsphere").predict(obs, channels)    # doctest: +SKIP
    """

    name = "nilc_deepsphere"
    Settings = NILCDeepSphereSettings
    Layout = ResidualNestedLayout
