"""Settings of the CMB stages, written once: the fields are the sections of ``conf/cmb.yaml``.

The defaults here are the embedded run's dataset and protocol; the ``default`` preset
(``conf/cmb_preset/default.yaml``) sizes the learned methods for a laptop, ``tiny`` runs in seconds (tests),
``bench128`` and ``cmbml_512_1450`` are the benchmark sizes. The settings of each separation method
(``methods.<name>``) are not repeated here: they are the method's own defaults, read through the registry
(:func:`cosmobench.cmb.methods.method_defaults`) by :func:`default_nodes`.
"""

from __future__ import annotations

import dataclasses
from dataclasses import field
from types import MappingProxyType
from typing import Any

from ..core.settings import StageSettings

__all__ = [
    "SimulateSettings",
    "TrainSettings",
    "SeparateSettings",
    "EvaluateSettings",
    "CompareSettings",
    "ApplySettings",
    "RunSettings",
    "SECTIONS",
    "DEFAULT_SPLITS",
    "DEFAULT_SPLIT_FOREGROUNDS",
    "default_nodes",
]

OUT_DIR = "cosmobench_out/cmb"
DEFAULT_SPLITS = MappingProxyType({"Train": 40, "Valid": 4, "Test": 4, "TestOOD": 4, "TestOOD2": 4})
# the out-of-distribution test splits: two foreground models the learned methods never see in training
DEFAULT_SPLIT_FOREGROUNDS = MappingProxyType({"TestOOD": "alt", "TestOOD2": "filament"})
FOREGROUND_COMPONENTS = ("dust", "synchrotron", "freefree", "ame")
# what `cmb run` separates and scores: the classical methods, the learned ones, and the null map (the RMSE of
# predicting nothing, the floor a shrinking estimator approaches on noise-dominated fields)
BENCHMARK_METHODS = (
    "hilc",
    "nilc",
    "nilc_wiener",
    "nilc_regress",
    "cmbnncs",
    "nilc_unet",
    "regress_unet",
    "deepsphere",
    "zero",
)


@dataclasses.dataclass(frozen=True, kw_only=True)
class SimulateSettings(StageSettings):
    """``cmb simulate``: the multi-frequency dataset (:func:`cosmobench.cmb.simulate.simulate_dataset`).

    Attributes
    ----------
    out_dir : str
        Dataset root; the simulations go to ``out_dir/Simulations/<Split>/simNNNN``.
    nside : int
        HEALPix resolution (a power of 2).
    splits : dict of str to int
        Simulations per split. A dict override replaces it: ``simulate.splits={Test: 2}`` is a Test-only dataset.
    bands : list of str or None
        Subset of the channel table, e.g. ``["44", "70", "100"]``; None = every channel.
    channel_table : str or None
        Path of a channel table; None = the packaged 9-channel CMB-ML table.
    fields : {"I", "IQU"} or None
        Force the Stokes fields of every channel; None = the table's (IQU to 353 GHz, I above).
    seed : int
        Dataset seed; simulation i of split s draws from streams (seed, s, i, component).
    cosmology : dict or None
        Fixed :class:`~cosmobench.sky.cosmology.Cosmology` fields, e.g. ``{H0: 67.4}``; None = Planck 2018 prior.
    r : float
        Tensor-to-scalar ratio (>= 0) with a drawn cosmology.
    spectra_method : {"camb", "fast"}
        Direct CAMB per simulation (about 1 s at nside 32; the cheapest below ~100 simulations) or the cached
        emulator (built once from 117 CAMB runs; the choice of the large presets).
    cache_dir : str or None
        Folder of the emulator cache.
    foreground_backend : {"synthetic", "pysm3"}
        Backend of the splits not named in ``split_foregrounds``; ``pysm3`` needs the templates
        (``PYSM_LOCAL_DATA``) and ``pysm_presets``.
    foreground_components : list of str
        Synthetic components.
    pysm_presets : list of str
        With ``pysm3``, e.g. ``[d1, s1, f1, a1]``.
    freeze_foregrounds : bool
        One foreground sky for all simulations (as CMB-ML).
    foreground_model : str
        Synthetic foreground model of every split: ``default``, ``alt`` or ``filament`` (docs/foregrounds.md).
    split_foregrounds : dict of str to (str, dict or list)
        Per-split foregrounds: a synthetic model name (``{TestOOD: alt}``: TestOOD is the out-of-distribution
        test split), a dict of synthetic options, PySM presets ``{TestPySM: {backend: pysm3, presets: [d1, s1,
        f1, a1]}}`` (one fixed sky, docs/cmb_dataset.md), or a list of these, a mixture whose models alternate
        with the simulation index (``{Train: [default, perturbed], Valid: [default, perturbed]}``). A dict
        override replaces it.
    fg_iter : int
        Jacobi iterations of the foreground map analysis.
    noise : bool
        Add instrument noise.
    dtype : {"float32", "float64"}
        Stored precision of the maps.
    mjysr_bands : list of str
        Bands whose observed maps are stored in MJy/sr, as Planck stores 545 and 857 GHz (``[545, 857]``); read
        back in uK_CMB. Default: every map in uK_CMB.
    executor : {"serial", "processes", "dask"}
    workers : int
    scheduler_address : str or None
        ``tcp://host:8786`` to join a Dask cluster (docs/execution.md).
    force : bool
        Run even when the job looks larger than the free disk or the memory.
    """

    out_dir: str = OUT_DIR
    nside: int = 32
    splits: dict[str, int] = field(default_factory=lambda: dict(DEFAULT_SPLITS))
    bands: list[str] | None = None
    channel_table: str | None = None
    fields: str | None = None
    seed: int = 0
    cosmology: dict | None = None
    r: float = 0.0
    spectra_method: str = "camb"
    cache_dir: str | None = None
    foreground_backend: str = "synthetic"
    foreground_components: tuple[str, ...] = FOREGROUND_COMPONENTS
    pysm_presets: tuple[str, ...] = ()
    freeze_foregrounds: bool = False
    foreground_model: str = "default"
    split_foregrounds: dict[str, Any] = field(default_factory=lambda: dict(DEFAULT_SPLIT_FOREGROUNDS))
    fg_iter: int = 0
    noise: bool = True
    dtype: str = "float32"
    mjysr_bands: tuple[str, ...] = ()
    executor: str = "serial"
    workers: int = 1
    scheduler_address: str | None = None
    force: bool = False


@dataclasses.dataclass(frozen=True, kw_only=True)
class TrainSettings(StageSettings):
    """``cmb train``: train a learned method on the dataset (a no-op for classical methods).

    Attributes
    ----------
    out_dir : str
        Dataset root; the model goes to ``out_dir/<method>/model/model.pt``.
    method : str
        Registered method name (:data:`cosmobench.cmb.methods.METHODS`).
    settings : dict or None
        The method's settings (``methods.<method>``); None = the method's defaults.
    train_split, val_split : str
        Splits used for training and validation.
    device : str
        "auto" = CUDA when available, else CPU.
    """

    out_dir: str = OUT_DIR
    method: str = "nilc"
    settings: dict | None = None
    train_split: str = "Train"
    val_split: str = "Valid"
    device: str = "auto"


@dataclasses.dataclass(frozen=True, kw_only=True)
class SeparateSettings(StageSettings):
    """``cmb separate``: predict the CMB of every simulation of a split with one method.

    Attributes
    ----------
    out_dir : str
        Dataset root; predictions go to ``out_dir/<method>/<split>/simNNNN/cmb_pred.fits``.
    method : str
    settings : dict or None
        The method's settings (``methods.<method>``, the same as for ``train``).
    split : str
    model_dir : str or None
        A learned method's trained model folder, ``<root A>/<method>/model``, to separate this dataset with a
        model trained on another one (its identity is the recorded input); None = ``out_dir/<method>/model``.
    device : str
    executor, workers, scheduler_address
        How to run the simulations (:func:`cosmobench.core.executor.map_tasks`).
    """

    out_dir: str = OUT_DIR
    method: str = "nilc"
    settings: dict | None = None
    split: str = "Test"
    model_dir: str | None = None
    device: str = "auto"
    executor: str = "serial"
    workers: int = 1
    scheduler_address: str | None = None


@dataclasses.dataclass(frozen=True, kw_only=True)
class EvaluateSettings(StageSettings):
    """``cmb evaluate``: the fixed analysis protocol (docs/cmb_evaluation.md), see
    :func:`cosmobench.cmb.evaluate.evaluate` for each setting.

    Attributes
    ----------
    out_dir : str
        Dataset root; results go to ``out_dir/results/<split>``.
    methods : list of str
        Methods to score (their predictions of ``split`` must be finished).
    split : str
    beams : list of {"deconvolved", float}
        Common beams: deconvolved, or a Gaussian FWHM in arcmin.
    fsky : float
    mask_path : str or None
    mask_smooth_deg : float
    lmax : int or None
        None = 2 nside.
    nbins : int
    apod_deg : float
    ell_split : int
    lat_cut_deg : float
    executor, workers
    """

    out_dir: str = OUT_DIR
    methods: tuple[str, ...] = BENCHMARK_METHODS
    split: str = "Test"
    beams: tuple[str | float, ...] = ("deconvolved", 20.6, 60.0)
    fsky: float = 0.8
    mask_path: str | None = None
    mask_smooth_deg: float = 2.0
    lmax: int | None = None
    nbins: int = 25
    apod_deg: float = 2.0
    ell_split: int = 30
    lat_cut_deg: float = 20.0
    executor: str = "serial"
    workers: int = 1


@dataclasses.dataclass(frozen=True, kw_only=True)
class CompareSettings(StageSettings):
    """``cmb compare``: leaderboard and report of every evaluated split.

    Attributes
    ----------
    out_dir : str
        Dataset root; reads ``out_dir/results/<split>``, writes ``out_dir/report``.
    results_dirs : list of str or None
        Results folders of several datasets (``[A/results, B/results]``), reported side by side, each column
        naming its dataset and foreground model; of several runs on the same simulations (training seeds), also
        their spread (:mod:`cosmobench.cmb.spread`); None = ``out_dir/results``.
    map_beams : list of float or None
        Map figures at these common beams (None = all; [] = none).
    """

    out_dir: str = OUT_DIR
    results_dirs: tuple[str, ...] | None = None
    map_beams: tuple[str | float, ...] | None = (20.6,)


@dataclasses.dataclass(frozen=True, kw_only=True)
class ApplySettings(StageSettings):
    """``cmb apply``: separate the CMB from your own frequency maps (:func:`cosmobench.cmb.apply.apply_method`).

    Attributes
    ----------
    out_dir : str
        Output folder: ``cmb_map.fits``, ``report.md``, figures, ``apply.json`` and the stage record.
    maps : list of str
        HEALPix FITS maps, one per channel (any ordering, column layout, unit and nside).
    channels : str or list of dict or None
        A channel table file, or its rows (``band``, ``center_ghz``, ``fwhm_arcmin``, optionally ``unit`` and
        ``to_uk_cmb``), one per map in the same order.
    method : str
        Registered method name.
    settings : dict or None
        The method's settings (``methods.<method>``); None = the method's defaults.
    model_dir : str or None
        Folder of a trained learned method (``<dataset root>/<method>/model``); required for learned methods.
    nside : int or None
        Target resolution; None = the trained nside of a learned method, else the smallest input nside.
    report : bool
        Write ``report.md`` with the map and its power spectrum.
    device : str
        "auto" = CUDA when available, else CPU.
    """

    out_dir: str = f"{OUT_DIR}/apply"
    maps: tuple[str, ...] = ()
    channels: str | list[dict] | None = None
    method: str = "nilc"
    settings: dict | None = None
    model_dir: str | None = None
    nside: int | None = None
    report: bool = True
    device: str = "auto"


@dataclasses.dataclass(frozen=True, kw_only=True)
class RunSettings:
    """``cmb run``: what the whole benchmark covers (the stages take their own sections).

    Attributes
    ----------
    methods : list of str
        Methods trained (when learned), separated, evaluated and compared.
    splits : list of str
        Splits separated and evaluated; the first is the in-distribution reference.
    """

    methods: tuple[str, ...] = BENCHMARK_METHODS
    splits: tuple[str, ...] = ("Test", "TestOOD", "TestOOD2")


SECTIONS: dict[str, type] = {
    "simulate": SimulateSettings,
    "train": TrainSettings,
    "separate": SeparateSettings,
    "evaluate": EvaluateSettings,
    "compare": CompareSettings,
    "apply": ApplySettings,
    "run": RunSettings,
}


def default_nodes() -> dict[str, Any]:
    """Default configuration nodes besides :data:`SECTIONS`: ``methods``, every registered method's defaults."""
    from .methods import METHODS, method_defaults

    return {"methods": {name: method_defaults(name) for name in METHODS}}
