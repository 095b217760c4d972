"""Settings of the multifield stages, written once: the fields are the sections of ``conf/multifield.yaml``.

The defaults are the embedded CPU demo (minutes on 2 cores: 64^2 maps, 250 simulations per suite, a tiny o3_err
on Omega_m and sigma_8); presets (``conf/multifield_preset``) change them: ``tiny`` (seconds, for tests),
``reference`` (the CMD benchmark's sizes, for a GPU). The shared ``training:`` section
(:class:`TrainingSettings`, what defines a trained o3_err) is wired into every stage that trains.
"""

from __future__ import annotations

import dataclasses
from dataclasses import field

from ..core.settings import StageSettings, as_dict

__all__ = [
    "TrainingSettings",
    "SimulateSettings",
    "TrainSettings",
    "SearchSettings",
    "TestSettings",
    "RobustnessSettings",
    "FieldsSettings",
    "CalibrateSettings",
    "RunSettings",
    "STAGES",
    "SCHEDULES",
    "BASELINES",
    "SECTIONS",
]

OUT_DIR = "cosmobench_out/multifield"
DATA_DIR = f"{OUT_DIR}/data"
SUITE = "TNGlike"
CHANNELS = ("Mtot", "Mgas", "T")
#: Stages of ``cosmobench multifield run``, in order.
STAGES = ("simulate", "train", "search", "test", "robustness", "fields", "calibrate")
#: Parameter columns of CMD's parameter files.
N_PARAMS = 6
RECALIBRATIONS = ("loglinear", "conformal", "chi2")
#: Learning-rate schedules of ``training.schedule``.
SCHEDULES = ("cyclic", "onecycle", "cosine")
#: Classical baselines reported beside the CNN (:mod:`cosmobench.multifield.baseline`).
BASELINES = ("ridge", "baryon_fraction")


@dataclasses.dataclass(frozen=True, kw_only=True)
class TrainingSettings:
    """The shared ``training:`` section: everything that defines a trained o3_err (unknown keys raise ``TypeError``).

    Attributes
    ----------
    params : tuple of int
        Parameter columns in the loss (0 Omega_m, 1 sigma_8, 2-5 astrophysical). All 12 outputs exist anyway.
    hidden : int
        o3_err width multiplier h (the reference searched 6-12).
    dropout : float
        Dropout rate.
    lr : float
        Peak learning rate of the schedule.
    weight_decay : float
        AdamW weight decay.
    betas : (float, float)
        AdamW betas; the reference uses (0.5, 0.999).
    epochs : int
        Full passes over the training maps at most (the reference: 200 truncated epochs); fewer with ``patience``.
    patience : int
        Early stopping: stop when the validation loss has not improved for ``patience`` epochs (0 = never); the
        weights of the best validation epoch are kept either way.
    schedule : {"onecycle", "cyclic", "cosine"}
        Learning rate per batch: ``onecycle`` (warm-up from ``lr`` / 25 to ``lr`` over the first 30 % of the
        steps of ``epochs``, then cosine annealing to ``lr`` / 2.5e5), ``cyclic`` (the reference's
        triangular cycle between ``base_lr`` and ``lr``, ``cycle_steps`` up and down) or ``cosine`` (from ``lr``
        to 0 over ``epochs``).
    batch_size : int
        Maps per batch (128 in the reference).
    cycle_steps : int
        ``cyclic``: step_size_up = step_size_down, in batches (500 in the reference).
    base_lr : float
        ``cyclic``: bottom of the learning-rate cycle (1e-9 in the reference).
    split : (float, float, float)
        Train/valid/test fractions of the simulations (CMD: 900/50/50 of 1000; the demo: 110/70/70 of 250, large
        valid/test splits for calibration and coverage).
    split_seed : int
        Seed of the split permutation.
    maps_per_sim : int
        Train and validate on the first ``maps_per_sim`` maps of each simulation, spread over the three projection
        axes (15 = all). Tests always use all 15.
    log_astro : bool
        Scale the log-uniform astrophysical labels in log (the reference scales them linearly).
    smoothing : float
        Gaussian smoothing of the inputs, pixels (0 = none).
    set_name : str
        CMD set (``LH``).
    amp : bool
        bfloat16 autocast on CUDA.
    channels_last : bool
        Channels-last memory format (faster convolutions on GPUs).
    """

    params: tuple[int, ...] = (0, 1)
    hidden: int = 2
    dropout: float = 0.1
    lr: float = 5e-3
    weight_decay: float = 1e-4
    betas: tuple[float, float] = (0.5, 0.999)
    epochs: int = 40
    patience: int = 10
    schedule: str = "cyclic"
    batch_size: int = 32
    cycle_steps: int = 50
    base_lr: float = 1e-9
    split: tuple[float, float, float] = (0.44, 0.28, 0.28)
    split_seed: int = 1
    maps_per_sim: int = 15
    log_astro: bool = True
    smoothing: float = 0.0
    set_name: str = "LH"
    amp: bool = False
    channels_last: bool = True

    def __post_init__(self):
        for key in ("params", "betas", "split"):  # lists from YAML become tuples
            object.__setattr__(self, key, tuple(getattr(self, key)))
        if not self.params or any(p not in range(N_PARAMS) for p in self.params):
            raise ValueError(f"training.params must be column indices in 0..5, got {list(self.params)}")
        if self.epochs < 1 or self.batch_size < 2 or self.cycle_steps < 1 or self.hidden < 1:
            raise ValueError(
                "training.epochs, training.cycle_steps and training.hidden must be >= 1 and training.batch_size "
                f">= 2 (the moment loss needs a batch); got epochs={self.epochs}, cycle_steps={self.cycle_steps}, "
                f"hidden={self.hidden}, batch_size={self.batch_size}"
            )
        if self.patience < 0 or self.schedule not in SCHEDULES:
            raise ValueError(
                f"training.patience must be >= 0 and training.schedule one of {list(SCHEDULES)}, got "
                f"{self.patience}, {self.schedule!r}"
            )
        if not 1 <= self.maps_per_sim <= 15:
            raise ValueError(f"training.maps_per_sim must be in 1..15, got {self.maps_per_sim}")
        if not 0 < self.lr < 1 or self.weight_decay < 0:
            raise ValueError(
                f"training.lr must be in (0, 1) and training.weight_decay >= 0, got {self.lr}, {self.weight_decay}"
            )
        if len(self.split) != 3 or min(self.split) < 0 or abs(sum(self.split) - 1) > 1e-6:
            raise ValueError(f"training.split must be three non-negative fractions summing to 1, got {self.split}")


def _training() -> dict:
    return as_dict(TrainingSettings())


@dataclasses.dataclass(frozen=True, kw_only=True)
class SimulateSettings(StageSettings):
    """``multifield simulate``: CMD-format maps of several suites from the offline simulator.

    Attributes
    ----------
    out_dir : str
        The data folder (``data_dir`` in the configuration); files get CMD's names.
    seed : int
        Dataset seed: simulation ``i`` of a suite draws its initial conditions from
        ``SeedSequence(seed, spawn_key=(suite ics, i, "ics"))`` (N-body twins share their hydro twin's).
    suites : tuple of str
        Names from :data:`cosmobench.multifield.simulate.SUITES`.
    n_sims : int
        Simulations per suite (15 maps each; CMD has 1000).
    npix : int
        Map side in pixels, a power of two >= 8 (CMD: 256).
    fields : tuple of str or None
        Fields to write (None = every field each suite has).
    set_name : str
        CMD set name in the file names.
    cache_dir : str or None
        Cache of the CAMB P(k) table (None = ``$COSMOBENCH_CACHE`` or ``~/.cache/cosmobench``).
    executor : {"serial", "processes", "dask"}
    workers : int
    force : bool
        Run even when the job looks larger than the free disk or memory.
    """

    out_dir: str = DATA_DIR
    seed: int = 0
    suites: tuple[str, ...] = ("TNGlike", "SIMBAlike")
    n_sims: int = 250
    npix: int = 64
    fields: tuple[str, ...] | None = CHANNELS
    set_name: str = "LH"
    cache_dir: str | None = None
    executor: str = "serial"
    workers: int = 1
    force: bool = False


@dataclasses.dataclass(frozen=True, kw_only=True)
class _ModelStage(StageSettings):
    """Fields of every stage after ``simulate``.

    Attributes
    ----------
    out_dir : str
        Run folder: ``model/``, ``search/``, ``test/``, ``robustness/``, ``fields/``, ``calibration/`` inside.
    data_dir : str
        CMD-format maps: simulated, or the real CMD ``2D_maps/data`` folder.
    seed : int
        Weights initialisation, shuffling, augmentation and bootstrap draws.
    device : str
        "auto" = CUDA when available, else CPU.
    """

    out_dir: str = OUT_DIR
    data_dir: str = DATA_DIR
    seed: int = 0
    device: str = "auto"


@dataclasses.dataclass(frozen=True, kw_only=True)
class _TrainingStage(_ModelStage):
    """Fields of the stages that train o3_err models.

    Attributes
    ----------
    training : dict
        :class:`TrainingSettings` keys (the shared ``training:`` section).
    in_memory : bool or None
        Hold the standardised maps in memory (None: when they take < 8 GB).
    device_data : bool
        Copy the training and validation maps to ``device`` once (GPU training without a host-side pipeline).
    """

    training: dict = field(default_factory=_training)
    in_memory: bool | None = None
    device_data: bool = False


@dataclasses.dataclass(frozen=True, kw_only=True)
class _Auxiliary:
    """Training budget of the auxiliary models: search trials, robustness and field-subset models.

    Attributes
    ----------
    epochs : int or None
        Replaces ``training.epochs`` for these models (None: keep it). The demo trains them shorter than the main
        model, whose recipe is the best one measured on the validation split, to stay within minutes of CPU.
    maps_per_sim : int or None
        Replaces ``training.maps_per_sim`` (None: keep it).
    """

    epochs: int | None = 15
    maps_per_sim: int | None = 5

    def budget(self) -> dict:
        """The ``training`` keys these settings replace."""
        return {k: getattr(self, k) for k in ("epochs", "maps_per_sim") if getattr(self, k) is not None}


@dataclasses.dataclass(frozen=True, kw_only=True)
class TrainSettings(_TrainingStage):
    """``multifield train``: one o3_err on ``fields`` of ``suite``, into ``out_dir/model/model.pt``.

    Attributes
    ----------
    suite : str
        Suite trained on (the name in the file names: ``TNGlike``, ``IllustrisTNG``...).
    fields : tuple of str
        Fields stacked as input channels, in order (``channels`` in the configuration).
    """

    suite: str = SUITE
    fields: tuple[str, ...] = CHANNELS


@dataclasses.dataclass(frozen=True, kw_only=True)
class SearchSettings(TrainSettings, _Auxiliary):
    """``multifield search``: an optuna study over lr, weight decay, dropout and width (``out_dir/search``).

    Attributes
    ----------
    n_trials : int
        Finished (complete or pruned) trials of the study, over all workers (reference 50).
    n_startup_trials : int
        Random trials before TPE (reference 20).
    storage : str or None
        SQLAlchemy URL shared by workers (``postgresql://user@host/db``); None = a SQLite file in the search folder.
    study_name : str
    lr_range, wd_range, dropout_range : (float, float)
        Search ranges (lr and wd sampled in log); the reference's.
    hidden_range : (int, int)
        Width multipliers searched (reference 6-12).
    prune_warmup : int
        Epochs before a trial may be pruned (median rule).
    """

    n_trials: int = 3
    n_startup_trials: int = 2
    storage: str | None = None
    study_name: str = "wd_dr_hidden_lr_o3"
    lr_range: tuple[float, float] = (1e-5, 5e-3)
    wd_range: tuple[float, float] = (1e-8, 1e-1)
    dropout_range: tuple[float, float] = (0.0, 0.9)
    hidden_range: tuple[int, int] = (1, 3)
    prune_warmup: int = 2


@dataclasses.dataclass(frozen=True, kw_only=True)
class _Predicting(_ModelStage):
    """Prediction options.

    Attributes
    ----------
    tta : bool
        Average predictions over the 8 dihedral transforms.
    batch_size : int
        Maps per forward pass.
    recalibration : {"loglinear", "conformal", "chi2"} or None
        Sigma recalibration fitted on the validation split of the model's own suite; None skips it.
    baselines : tuple of str
        Classical baselines evaluated beside the CNN with the same metrics (subset of :data:`BASELINES`; the
        baryon fraction needs Mgas and Mtot among the fields and reports Omega_m only).
    """

    tta: bool = True
    batch_size: int = 128
    recalibration: str | None = "loglinear"
    baselines: tuple[str, ...] = BASELINES


@dataclasses.dataclass(frozen=True, kw_only=True)
class TestSettings(_Predicting):
    """``multifield test``: predictions and metrics of one split, in ``out_dir/test/<source>_on_<suite>_<split>_<tta>``.

    Each (source, test suite, split, tta) has its own folder and record; other changed settings are refused.

    Attributes
    ----------
    source : {"train", "search"}
        The train stage's model, or the best trial of the search.
    test_suite : str or None
        Suite to predict (None = the model's); normalised with the model's own statistics.
    split : {"test", "valid", "train"}
    """

    __test__ = False  # not a pytest class

    source: str = "train"
    test_suite: str | None = None
    split: str = "test"


@dataclasses.dataclass(frozen=True, kw_only=True)
class RobustnessSettings(_TrainingStage, _Predicting, _Auxiliary):
    """``multifield robustness``: train on each suite, test on every suite (``out_dir/robustness``).

    Attributes
    ----------
    suites : tuple of str
        At least two suites that all have ``fields`` (N-body suites: Mtot only).
    fields : tuple of str
    params : tuple of int
        Parameters trained and reported (replaces ``training.params``; astrophysical ones differ between suites).
    """

    suites: tuple[str, ...] = ("TNGlike", "SIMBAlike")
    fields: tuple[str, ...] = ("Mtot",)
    params: tuple[int, ...] = (0, 1)


@dataclasses.dataclass(frozen=True, kw_only=True)
class FieldsSettings(_TrainingStage, _Auxiliary):
    """``multifield fields``: the smallest field sets reaching 90 % and 95 % of the full set's information.

    Attributes
    ----------
    suite : str
    fields : tuple of str
        Candidate fields; the full set is the reference (fraction 1).
    params : tuple of int
        Parameters whose information is measured (replaces ``training.params``).
    strategy : {"auto", "exhaustive", "greedy"}
        ``auto``: exhaustive up to 4 fields.
    kind : {"empirical", "posterior"}
        Information from actual errors (inverse MSE) or from the predicted posterior precision.
    select_split : {"valid", "test"}
    thresholds : tuple of float
    tta : bool
    batch_size : int
    baselines : tuple of str
        Baselines whose test metrics are reported for every subset (``ridge``; ``baryon_fraction`` where the
        subset has Mgas and Mtot).
    """

    suite: str = SUITE
    fields: tuple[str, ...] = ("Mtot", "Mgas")
    params: tuple[int, ...] = (0, 1)
    strategy: str = "auto"
    kind: str = "empirical"
    select_split: str = "valid"
    thresholds: tuple[float, ...] = (0.9, 0.95)
    tta: bool = True
    batch_size: int = 128
    baselines: tuple[str, ...] = BASELINES


@dataclasses.dataclass(frozen=True, kw_only=True)
class CalibrateSettings(_Predicting):
    """``multifield calibrate``: coverage, TARP and an NPE posterior on CNN summaries (``out_dir/calibration``).

    Attributes
    ----------
    source : {"train", "search"}
    npe : bool
        Also train and evaluate the NPE posterior (needs ``sbi``).
    npe_split : {"valid", "train"}
        Simulations whose CNN summaries train the NPE (``train`` ones are over-fitted by the CNN: optimistic).
    npe_epochs : int
        NPE training epochs at most (early stopping after 20 without improvement).
    n_samples : int
        Posterior samples per map for TARP and the NPE intervals.
    """

    source: str = "train"
    npe: bool = True
    npe_split: str = "valid"
    npe_epochs: int = 200
    n_samples: int = 500


@dataclasses.dataclass(frozen=True, kw_only=True)
class RunSettings:
    """``multifield run``: which stages to chain.

    Attributes
    ----------
    stages : tuple of str
        A subset of :data:`STAGES`, run in that order.
    seeds : tuple of int
        Training seeds of the main model (train and test stages). The run's ``seed`` lives in ``out_dir/model`` and
        ``out_dir/test``; every other seed of the list trains and tests the same model in
        ``out_dir/seeds/seed_<k>/``, and the report gives the test metrics' mean and spread over all of them.
    """

    stages: tuple[str, ...] = STAGES
    seeds: tuple[int, ...] = (0, 1, 2)


SECTIONS: dict[str, type] = {
    "training": TrainingSettings,
    "simulate": SimulateSettings,
    "train": TrainSettings,
    "search": SearchSettings,
    "test": TestSettings,
    "robustness": RobustnessSettings,
    "fields": FieldsSettings,
    "calibrate": CalibrateSettings,
    "run": RunSettings,
}
