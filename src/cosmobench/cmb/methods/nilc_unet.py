"""``nilc_unet``: NILC plus a full-sky UNet that learns NILC's residual (hybrid residual corrector).

The estimate is ``NILC + correction``: the correction network is cmbNNCS's full-sky UNet
(:class:`~cosmobench.cmb.methods.unet_fullsky.FullSkyUNet`, same tiling, architecture and training loop), fed
the NILC map as its first input channel (pseudo-band ``"nilc"``) beside a few observed channels, all
standardised per channel as for the other UNets. It is trained with L1 on the residual

    target = (CMB smoothed to NILC's output beam, band-limited at NILC's lmax) - NILC,

so the output keeps NILC's beam (``output_beam_arcmin``, 20.6' by default), which the evaluation deconvolves
like NILC's own. The last layer of the UNet starts at zero, so the untrained hybrid is exactly NILC; training
keeps the weights with the lowest validation loss among the untrained ones (NILC itself, scored before the
first epoch) and those of every epoch, so it cannot end worse than NILC by that loss; with ``fields="IQU"`` its
temperature and polarisation networks are chosen apart (``best_epoch`` in ``training.json``, -1 where NILC is
kept).

The correction itself (its settings, NILC's cached maps, the residual view of the dataset, the zeroed output
layer, prediction) is the mixin :class:`LearnedNILCCorrector` with :class:`LearnedNILCCorrectorSettings`, so the
network is a choice: ``nilc_unet`` is that mixin on the full-sky plane UNet, ``nilc_deepsphere``
(:mod:`cosmobench.cmb.methods.nilc_deepsphere`) on the graph UNet of the sphere.

NILC predictions of the training and validation splits are computed once with the registered ``nilc`` method
through :func:`cosmobench.cmb.separate.separate` (``<root>/nilc/<split>/simNNNN/cmb_pred.fits``, atomic,
resumable, shared with ``nilc``'s own predictions); the ``nilc`` setting must therefore equal the ``nilc``
method's settings of that dataset. Predictions on new maps run NILC on them first.

With ``fields="IQU"`` the NILC map's I, Q, U are the first three input planes (with Q and U of the polarised
observed bands; :func:`cosmobench.cmb.learned.input_planes`) and the residual target has three fields, the
CMB's I, Q, U at NILC's beam (E and B beams) band-limited at NILC's lmax, minus NILC's. The ``nilc`` settings
must then have ``fields="IQU"`` (NILC's default).

``band_inputs`` sets what the network sees of the observed bands: ``"observed"`` (the maps as observed) or
``"minus_nilc"`` (each band minus the NILC map reconvolved from NILC's output beam to the band's beam, field by
field: the band's foregrounds and noise with the CMB removed, less NILC's own residual at that beam;
:func:`subtract_nilc`). Both carry the same information (the NILC map is an input too); ``"minus_nilc"`` removes
the CMB, which otherwise dominates the cleanest bands away from the Galactic plane.

With ``uncertainty="gaussian"`` or ``"mc_dropout"`` the predicted standard deviation is that of the residual: NILC
itself is deterministic given the maps. Dropout (``dropout > 0``) stops before the zeroed last layer, so the
untrained hybrid is NILC exactly with it too.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from torch import nn

from ...core.io import read_healpix
from ...core.settings import plain
from ...sky import sht
from ..dataset import pred_path
from ..sphere import ChebConv
from ..tiling import PlaneLayout
from .loss_region import LossRegionSettings, blank_outside
from .nilc import NILC
from .unet_fullsky import FullSkyUNet, FullSkyUNetSettings

__all__ = [
    "LearnedNILCCorrector",
    "LearnedNILCCorrectorSettings",
    "NILCUNet",
    "NILCUNetSettings",
    "ResidualLayout",
    "ResidualPlaneLayout",
    "NILCResidualData",
    "NILC_BAND",
    "BAND_INPUTS",
    "cache_nilc",
    "read_nilc",
    "nilc_of",
    "subtract_nilc",
]

NILC_BAND = "nilc"  # pseudo-band of the NILC map among the network's inputs (always the first)
NILC_METHOD = "nilc"  # registered method whose cached predictions are corrected
BAND_INPUTS = ("observed", "minus_nilc")  # what the network sees of the observed bands (module notes)


@dataclasses.dataclass(frozen=True, kw_only=True)
class LearnedNILCCorrectorSettings(LossRegionSettings):
    """The settings every learned corrector of NILC adds to its network's (a mixin of its settings dataclass,
    listed before the network's settings):

    Parameters
    ----------
    bands : sequence of str
        Observed channels fed beside the NILC map; ``"nilc"`` is put first automatically (so the stored
        settings read e.g. ``["nilc", "100", "143", "217", "353"]``).
    nilc : mapping
        Keyword settings of the :class:`~cosmobench.cmb.methods.nilc.NILC` whose output is corrected (the
        ``nilc`` method's section of the configuration).
    band_inputs : {"observed", "minus_nilc"}
        The observed bands as observed, or each minus the NILC map at its beam (:func:`subtract_nilc`).
    loss_fsky, loss_smooth_deg : float
        The loss region (:class:`~cosmobench.cmb.methods.loss_region.LossRegionSettings`).
    """

    bands: Sequence[str] = ("100", "143", "217", "353")
    nilc: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    band_inputs: str = "observed"

    def __post_init__(self):
        bands = [str(b) for b in self.bands]
        object.__setattr__(self, "bands", [NILC_BAND, *[b for b in bands if b != NILC_BAND]])
        if not isinstance(self.nilc, Mapping):
            raise TypeError(f"nilc must be a mapping of NILC settings, got {type(self.nilc).__name__}")
        object.__setattr__(self, "nilc", plain(self.nilc))
        super().__post_init__()
        if len(self.bands) < 2:
            raise ValueError("bands must name at least one observed channel beside the NILC map")
        if self.band_inputs not in BAND_INPUTS:
            raise ValueError(f"band_inputs must be one of {', '.join(BAND_INPUTS)}, got {self.band_inputs!r}")
        if self.fields == "IQU" and self.nilc.get("fields", "IQU") != "IQU":
            raise ValueError(
                "a corrector of NILC with fields=IQU corrects NILC's I, Q and U, but its nilc settings say "
                f"fields={self.nilc['fields']}; set methods.nilc.fields=IQU (or the corrector's fields=I)"
            )


@dataclasses.dataclass(frozen=True, kw_only=True)
class NILCUNetSettings(LearnedNILCCorrectorSettings, FullSkyUNetSettings):
    """Settings of :class:`NILCUNet`: those of :class:`~cosmobench.cmb.methods.unet_fullsky.FullSkyUNetSettings`
    plus :class:`LearnedNILCCorrectorSettings` (``bands``, ``nilc``, ``band_inputs``, the loss region)."""


def subtract_nilc(obs: Mapping[str, np.ndarray], channels: Sequence[Any], nilc: NILC) -> dict[str, np.ndarray]:
    """Each observed band minus the NILC map at the band's beam (``band_inputs="minus_nilc"``).

    Parameters
    ----------
    obs : mapping
        Band -> ndarray (nfield, npix) uK_CMB, RING, with the NILC map (nfield, npix) under ``"nilc"``, at NILC's
        output beam and band-limited at its lmax.
    channels : sequence
        The instrument's channels (``band``, ``fwhm_arcmin``); every band of ``obs`` must be among them.
    nilc : NILC
        The NILC that made the map (its output beam, band limit and analysis iterations).

    Returns
    -------
    dict band -> ndarray (nfield, npix) float64 uK_CMB: ``band - reconvolve(nilc, output beam -> band beam)`` on the
    fields both have (I, or I, Q, U; a band's other fields as observed), the NILC map unchanged. On a band of
    CMB alone, band-limited at NILC's lmax, the result is NILC's residual at that beam with the sign reversed.
    """
    nilc_map = np.atleast_2d(obs[NILC_BAND])
    beams = {str(c.band): float(c.fwhm_arcmin) for c in channels}
    unknown = [b for b in obs if b != NILC_BAND and b not in beams]
    if unknown:
        raise ValueError(f"band {unknown[0]!r} is not among the instrument's channels; its beam is unknown")
    nside = sht.nside_of(nilc_map)
    lmax = nilc.output_lmax_for(nside)
    alm = sht.map2alm(nilc_map, lmax=lmax, iter=nilc.sht_iter)  # analysed once, reconvolved per band
    out = {}
    for band, maps in obs.items():
        if band == NILC_BAND:
            out[band] = nilc_map
            continue
        maps = np.atleast_2d(maps)
        n = min(len(maps), len(nilc_map))
        ratio = sht.beam_ratio(nilc.output_beam_arcmin or 0.0, beams[band], lmax, pol=True)[:n]
        at_beam = sht.alm2map(sht.almxfl(alm[:n], ratio), nside, lmax)
        out[band] = np.concatenate([maps[:n] - at_beam, maps[n:]])
    return out


class NILCResidualData:
    """A dataset seen through NILC: the ``"nilc"`` pseudo-band and the residual target.

    Parameters
    ----------
    dataset : CMBDataset
        The dataset; its NILC predictions must exist at ``pred_path(root, "nilc", split, i)``.
    nilc : NILC
        The NILC they were made with (sets the target's beam, band limit and analysis iterations); its
        ``fields`` (``"I"`` or ``"IQU"``) sets the fields of the NILC pseudo-band and of the target.
    band_inputs : {"observed", "minus_nilc"}
        The observed bands as observed, or minus the NILC map at their beams (:func:`subtract_nilc`).
    loss_region : mapping, optional
        ``{"fsky": f, "smooth_deg": d}``: the target is NaN outside each map's loss region (the faintest ``f``
        of its highest-frequency intensity, :func:`~cosmobench.cmb.methods.loss_region.blank_outside`).

    Notes
    -----
    ``load_obs(split, i, bands)`` returns band -> ndarray (nfield, npix) uK_CMB, with ``"nilc"`` -> (nfield, npix),
    the cached NILC map at its output beam (the other bands as ``band_inputs`` says). ``load_target(split, i)``
    returns ndarray (nfield, npix) uK_CMB: the CMB (I, or I, Q, U) smoothed to NILC's output beam and band-limited
    at its lmax, minus the NILC map (NaN outside the loss region).
    """

    def __init__(
        self, dataset: Any, nilc: NILC, band_inputs: str = "observed", loss_region: Mapping[str, float] | None = None
    ):
        self.dataset, self.nilc, self.band_inputs, self.loss_region = dataset, nilc, band_inputs, loss_region
        self.root = Path(dataset.root)
        self.nside = int(dataset.nside)
        self.channels = list(dataset.channels)
        self.bands = [NILC_BAND, *dataset.bands]

    def sim_indices(self, split: str) -> list[int]:
        """Indices of the simulations of ``split``."""
        return self.dataset.sim_indices(split)

    def foreground_model(self, split: str) -> str | None:
        """Foreground model of ``split`` in the wrapped dataset (:meth:`CMBDataset.foreground_model`)."""
        return self.dataset.foreground_model(split)

    def nilc_map(self, split: str, i: int) -> np.ndarray:
        """Cached NILC prediction, ndarray (nfield, npix) float64 uK_CMB at NILC's output beam (:func:`read_nilc`)."""
        return read_nilc(self.root, split, i, self.nilc)

    def load_obs(self, split: str, i: int, bands: Sequence[str] | None = None) -> dict[str, np.ndarray]:
        """Observed maps by band (as ``band_inputs`` says), with the NILC map under ``"nilc"``; uK_CMB, RING."""
        bands = list(bands or self.bands)
        obs = self.dataset.load_obs(split, i, [b for b in bands if b != NILC_BAND])
        if NILC_BAND in bands or self.band_inputs == "minus_nilc":
            obs[NILC_BAND] = self.nilc_map(split, i)
        if self.band_inputs == "minus_nilc":
            obs = subtract_nilc(obs, self.channels, self.nilc)
        return {b: obs[b] for b in bands}

    def load_target(self, split: str, i: int) -> np.ndarray:
        """Residual of NILC, ndarray (nfield, npix) float64 uK_CMB (see the class notes)."""
        truth = np.atleast_2d(self.dataset.load_target(split, i))[: len(self.nilc.fields)]
        if len(truth) != len(self.nilc.fields):
            raise ValueError(
                f"the target of simulation {i} of split {split!r} has {len(truth)} field(s); fields=IQU needs "
                "I, Q, U (a polarised dataset): set fields=I"
            )
        beamed = sht.smooth(
            truth,
            self.nilc.output_beam_arcmin or 0.0,
            lmax=self.nilc.output_lmax_for(self.nside),
            iter=self.nilc.sht_iter,
        )
        residual = beamed - self.nilc_map(split, i)
        if self.loss_region is not None:
            blank_outside(residual, self.dataset, split, i, self.loss_region)
        return residual


def cache_nilc(
    dataset: Any, nilc: Mapping[str, Any], splits: Sequence[str | None], *, workers: int = 1, progress: bool = True
) -> None:
    """Write (or reuse) the ``nilc`` method's predictions of ``splits`` under the dataset's root.

    Parameters
    ----------
    dataset : CMBDataset
        A dataset on disk; the maps go to ``<root>/nilc/<split>/simNNNN/cmb_pred.fits``.
    nilc : mapping
        The NILC settings (they must equal the ``nilc`` method's of that dataset: the folder is shared).
    splits : sequence of str or None
        Splits to separate; None and empty splits are skipped.
    workers : int
        Processes (1 = serial).
    progress : bool
        Progress bars.
    """
    from ..separate import check_observed, predict_split  # they import the registry, which imports this lazily

    for split in splits:
        indices = dataset.sim_indices(split) if split is not None else []
        if not indices:
            continue
        if not all(pred_path(dataset.root, NILC_METHOD, split, i).is_file() for i in indices):
            indices = check_observed(dataset, split, dataset.bands)  # the observed maps, before any work
        predict_split(  # refuses NILC maps made with other settings; predicts the missing ones
            dataset,
            NILC_METHOD,
            dict(nilc),
            split,
            indices,
            executor="processes" if workers > 1 else "serial",
            workers=max(1, workers),
            progress=progress,
        )


def read_nilc(root: str | Path, split: str, i: int, nilc: NILC) -> np.ndarray:
    """The cached NILC prediction of simulation ``i`` of ``split``, as a corrector reads it (training and separate).

    Parameters
    ----------
    root : path
        Dataset root; the map is ``<root>/nilc/<split>/simNNNN/cmb_pred.fits`` (written by :func:`cache_nilc`).
    split : str
    i : int
        Simulation index.
    nilc : NILC
        The NILC the map must come from (its ``fields`` say how many rows are read).

    Returns
    -------
    ndarray, shape (nfield, npix), float64, uK_CMB at NILC's output beam.

    Raises
    ------
    FileNotFoundError
        The map is missing (the message gives the command that makes it).
    ValueError
        It holds fewer fields than ``nilc`` predicts.
    """
    path = pred_path(root, NILC_METHOD, split, i)
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing; run `cosmobench cmb separate method=nilc separate.split={split}`")
    maps = np.atleast_2d(read_healpix(path, dtype=np.float64))
    nfield = len(nilc.fields)
    if len(maps) < nfield:
        raise ValueError(
            f"{path} holds {len(maps)} field(s) but the correction reads NILC's {nilc.fields}; predict it "
            "again with methods.nilc.fields=IQU (delete that folder first)"
        )
    return maps[:nfield]


def nilc_of(nilc: NILC, obs: Mapping[str, np.ndarray], channels: Sequence[Any]) -> np.ndarray:
    """NILC's map of ``obs``: the one given under ``"nilc"`` (``cmb separate`` passes the cached map, the one the
    corrector was trained on), else computed.

    Parameters
    ----------
    nilc : NILC
        The NILC a corrector corrects.
    obs : mapping of str to ndarray, shape (nfield, npix), uK_CMB, RING
        Observed maps by band, optionally with NILC's map of them under ``"nilc"`` (:func:`read_nilc`).
    channels : sequence of Channel
        The channels of the observed bands (not of ``"nilc"``).

    Returns
    -------
    ndarray, float64, uK_CMB, shaped as :meth:`NILC.predict`: (npix,) with ``fields="I"``, (3, npix) with "IQU".
    """
    if NILC_BAND not in obs:
        return np.asarray(nilc.predict(dict(obs), channels), dtype=np.float64)
    maps = np.atleast_2d(np.asarray(obs[NILC_BAND], dtype=np.float64))
    if len(maps) < len(nilc.fields):
        raise ValueError(f"the 'nilc' map given has {len(maps)} field(s); this NILC predicts {nilc.fields}")
    return maps[0] if nilc.fields == "I" else maps[: len(nilc.fields)]


class ResidualLayout:
    """A layout of the learned-method machinery (a mixin listed before it: :class:`~cosmobench.cmb.tiling.PlaneLayout`,
    :class:`~cosmobench.cmb.methods.deepsphere.NestedLayout`) described with the NILC settings, the
    ``band_inputs``, for a corrected NILC what corrects it (``base``: plain values, e.g. fitted coefficients) and
    the loss region, so cached training arrays are rebuilt when the map they correct, the inputs or the pixels
    with a target change."""

    def __init__(
        self,
        nside: int,
        nilc_settings: Mapping[str, Any],
        band_inputs: str = "observed",
        base: Mapping[str, Any] | None = None,
        loss_region: Mapping[str, float] | None = None,
    ):
        super().__init__(nside)
        self.nilc_settings, self.band_inputs = plain(nilc_settings), band_inputs
        self.base = None if base is None else plain(base)
        self.loss_region = None if loss_region is None else plain(loss_region)

    def describe(self) -> dict:
        """Plain-dict description (for manifests)."""
        return {
            **super().describe(),
            "target": "cmb at the NILC beam - nilc",
            "nilc": self.nilc_settings,
            "band_inputs": self.band_inputs,
            **({"base": self.base} if self.base is not None else {}),
            **({"loss_region": self.loss_region} if self.loss_region is not None else {}),
        }


class ResidualPlaneLayout(ResidualLayout, PlaneLayout):
    """The full-sky plane of :class:`~cosmobench.cmb.tiling.PlaneLayout` described as :class:`ResidualLayout`
    says."""


def zero_last_layer(net: nn.Module) -> nn.Module:
    """Set the weights and bias of a network's output layer to zero: the last convolution of a
    :class:`~cosmobench.cmb.nn.FullSkyNet`, the per-pixel head of a :class:`~cosmobench.cmb.sphere.SphereUNet`.

    The network then outputs exactly 0 (PReLU(0) = 0) whatever its input, and gradients still reach that
    layer, so training starts from the identity correction.
    """
    last = [m for m in net.modules() if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d, ChebConv))][-1]
    nn.init.zeros_(last.weight)
    if last.bias is not None:
        nn.init.zeros_(last.bias)
    return net


class LearnedNILCCorrector:
    """NILC plus a learned correction of its residual: the mixin of every learned corrector of NILC, listed before
    the network's :class:`~cosmobench.cmb.learned.LearnedMethod` (``nilc_unet`` with the full-sky plane UNet,
    ``nilc_deepsphere`` with the graph UNet on the sphere). Its settings are :class:`LearnedNILCCorrectorSettings`; the
    class names its arrays' layout in ``Layout`` (a :class:`ResidualLayout`). The network's output layer starts
    at zero, so the untrained corrector is NILC exactly (``untrained_is_base``).
    """

    untrained_is_base = True
    corrects = NILC_METHOD  # the method whose cached maps of the training splits it reads (``cmb train`` makes them)
    Layout: type[ResidualLayout]  # the layout of its arrays, set by each corrector

    def __init__(self, **settings: Any) -> None:
        super().__init__(**settings)
        # the NILC of the corrected fields (its temperature is the same whatever its fields)
        self.nilc = NILC(**{**self.settings.nilc, "fields": self.settings.fields})
        self.output_beam_arcmin = self.nilc.output_beam_arcmin

    def output_lmax_for(self, nside: int) -> int:
        """Band limit of the output at ``nside``: NILC's (the residual target is band-limited there)."""
        return self.nilc.output_lmax_for(nside)

    def _layout(self, nside: int) -> ResidualLayout:
        s = self.settings
        return self.Layout(nside, s.nilc, s.band_inputs, base=self._base(), loss_region=s.loss_region())

    def _base(self) -> dict[str, Any] | None:
        """What corrects NILC before the network (plain values for the arrays' manifest): nothing here."""
        return None

    def _network(self, in_channels: int, nside: int, out_channels: int = 1) -> nn.Module:
        return zero_last_layer(super()._network(in_channels, nside, out_channels))

    def _polarised_bands(self, dataset: Any) -> list[str]:
        """The NILC pseudo-band (I, Q, U), then the dataset's polarised bands among ``bands``."""
        return [NILC_BAND, *super()._polarised_bands(dataset)]

    def fit(
        self,
        dataset: Any,
        out_dir: Path | str,
        *,
        train_split: str = "Train",
        val_split: str | None = "Valid",
        on_epoch_end: Callable[[int, dict], None] | None = None,
    ) -> dict:
        """Cache NILC on ``train_split``, ``val_split`` and the ``calibration_splits``, then train the correction
        on the NILC residual.

        Parameters and returns as :meth:`cosmobench.cmb.learned.LearnedMethod.fit`; ``dataset`` must be a
        dataset on disk (:class:`~cosmobench.cmb.dataset.CMBDataset`), where the NILC predictions are written.
        """
        s = self.settings
        splits = [train_split, val_split, *s.calibration_splits]
        cache_nilc(dataset, s.nilc, splits, workers=int(s.workers), progress=s.progress)
        return super().fit(dataset, out_dir, train_split=train_split, val_split=val_split, on_epoch_end=on_epoch_end)

    def _view(self, dataset: Any) -> NILCResidualData:
        """The dataset as the network trains on it: the map it corrects as the ``"nilc"`` pseudo-band."""
        return NILCResidualData(dataset, self.nilc, self.settings.band_inputs, self.settings.loss_region())

    def _base_map(self, obs: dict[str, np.ndarray], channels: Sequence[Any]) -> np.ndarray:
        """The map the network corrects, of ``obs``: NILC's (:func:`nilc_of`), ndarray (nfield, npix) or (npix,)
        uK_CMB."""
        return nilc_of(self.nilc, obs, channels)

    def _predict(self, obs: dict[str, np.ndarray], channels: Sequence[Any]) -> tuple[np.ndarray, np.ndarray | None]:
        """NILC of ``obs`` plus the learned correction, and the correction's standard deviation (or None).

        ``obs`` holds the maps NILC uses and the trained ``bands`` (I, Q, U for the polarised ones with
        ``fields="IQU"``); the result estimates the CMB at NILC's output beam (``output_beam_arcmin``),
        band-limited at its lmax, shaped as :meth:`~cosmobench.cmb.learned.LearnedMethod.predict` says.
        """
        nilc = np.asarray(self._base_map(obs, channels), dtype=np.float64)
        inputs = {**obs, NILC_BAND: np.atleast_2d(nilc)}
        if self.settings.band_inputs == "minus_nilc":
            inputs = subtract_nilc({b: inputs[b] for b in self.settings.bands}, channels, self.nilc)
        correction, std = super()._predict(inputs, channels)
        return nilc + correction, std


class NILCUNet(LearnedNILCCorrector, FullSkyUNet):
    """NILC + full-sky UNet residual corrector (registry name ``nilc_unet``); see :class:`NILCUNetSettings`.

    Examples
    --------
    >>> method = NILCUNet(levels=4, base_channels=8, epochs=20)          # doctest: +SKIP
    >>> facts = method.fit(CMBDataset("data/cmb"), "runs/nilc_unet")    # doctest: +SKIP
    >>> cmb = NILCUNet.load("runs/nilc_unet").predict(obs, channels)    # doctest: +SKIP
    """

    name = "nilc_unet"
    Settings = NILCUNetSettings
    Layout = ResidualPlaneLayout
