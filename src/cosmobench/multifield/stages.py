"""Stages of ``cosmobench multifield <stage>``: simulate, train, search, test, robustness, fields, calibrate, run.

Each stage turns its settings (:mod:`cosmobench.multifield.settings`, the sections of ``conf/multifield.yaml``)
into library calls under the stage contract of :mod:`cosmobench.core.stage`: validate (settings, storage URL,
parameter file, maps), check the record, work, record the outputs. Layout::

    data_dir/                       CMD-format maps and parameters, seeds_*.txt, stage.json (simulate)
    out_dir/model/                  model.pt (the trained o3_err), model.json, losses.csv, last.pt/best.pt
    out_dir/search/                 study.db (default storage), trial_NNN/, best.json
    out_dir/test/<source>_on_<suite>_<split>_<tta|notta>/
                                    predictions.txt/.npz/.png, split.json, metrics.json
    out_dir/robustness/             models/<suite>_<fields>/, robustness_<fields>.json/.png
    out_dir/fields/                 models/<suite>_<subset>/, fields_<suite>_<fields>.json/.png
    out_dir/calibration/            calibration.json/.png
    out_dir/report.md               (run)

Consumers of a model (test, calibrate) require the finished train (or search) record and record its identity, so
their outputs become invalid when the model changes; every stage records the identity of the dataset.
"""

from __future__ import annotations

import time
from pathlib import Path

from ..core.runtime import apply_threads, resolve_device
from ..core.settings import as_dict, build
from ..core.stage import Stage, identity, require
from .dataset import check_resources, check_simulate, data_identity, write_dataset
from .settings import (
    BASELINES,
    RECALIBRATIONS,
    STAGES,
    CalibrateSettings,
    FieldsSettings,
    RobustnessSettings,
    RunSettings,
    SearchSettings,
    SimulateSettings,
    TestSettings,
    TrainingSettings,
    TrainSettings,
)
from .train import load_model, prepare_data, train_model, training_settings

__all__ = ["simulate", "train", "search", "test", "robustness", "fields", "calibrate", "run"]

SOURCES = ("train", "search")
SPLITS = ("train", "valid", "test")


def _command(stage: str, out_dir: str) -> str:
    return f"cosmobench multifield {stage} out_dir={out_dir}"


def _recorded(s, recipe: TrainingSettings | None = None) -> dict:
    """The settings a stage records: its section, with the training section resolved in full."""
    out = as_dict(s)
    if recipe is not None:
        out["training"] = as_dict(recipe)
    return out


def _pick(s, keys: tuple[str, ...]) -> dict:
    """``{key: s.key}`` for ``keys``: the settings a library function takes as keywords."""
    return {k: getattr(s, k) for k in keys}


def _check_recalibration(method: str | None, section: str) -> None:
    if method is not None and method not in RECALIBRATIONS:
        raise ValueError(f"{section}.recalibration must be one of {list(RECALIBRATIONS)} or null, got {method!r}")


def _check_baselines(methods, section: str) -> None:
    unknown = [m for m in methods if m not in BASELINES]
    if unknown:
        raise ValueError(f"unknown {section}.baselines {unknown}; choose among {list(BASELINES)}")


def _model(out_dir: str, source: str) -> tuple[Path, dict]:
    """The model file of ``source`` and the finished record that produced it (refusing an unfinished one)."""
    if source == "train":
        folder = Path(out_dir) / "model"
        record = require(folder, "multifield.train", _command("train", out_dir), what="the trained model")
        return folder / "model.pt", record
    folder = Path(out_dir) / "search"
    record = require(folder, "multifield.search", _command("search", out_dir), what="the search's best model")
    return folder / Path(record["summary"]["best"]["model_path"]).parent.name / "model.pt", record


# ------------------------------------------------------------------------------------------------ checks
# Each stage's checks of its settings alone (no data needed): the stage runs them before any work, and `run` runs
# all of them before the first stage. They return the resolved training settings of the stages that train.
def _check_simulate(s: SimulateSettings) -> None:
    check_simulate(s)
    check_resources(s, Path(s.out_dir))


def _check_train(s: TrainSettings) -> TrainingSettings:
    resolve_device(s.device)
    return training_settings(s.training)


def _check_search(s: SearchSettings) -> TrainingSettings:
    from .search import check_storage

    check_storage(s.storage)
    for name in ("lr_range", "wd_range", "dropout_range", "hidden_range"):
        lo, hi = getattr(s, name)
        if not lo <= hi:
            raise ValueError(f"search.{name} must be [low, high] with low <= high, got {[lo, hi]}")
    if s.n_trials < 1 or s.n_startup_trials < 0:
        raise ValueError(f"search.n_trials must be >= 1 and n_startup_trials >= 0, got {s.n_trials}")
    resolve_device(s.device)
    return training_settings(s.training, **s.budget())


def _check_test(s: TestSettings) -> None:
    if s.split not in SPLITS:
        raise ValueError(f"test.split must be one of {list(SPLITS)}, got {s.split!r}")
    if s.source not in SOURCES:
        raise ValueError(f"test.source must be one of {list(SOURCES)}, got {s.source!r}")
    _check_recalibration(s.recalibration, "test")
    _check_baselines(s.baselines, "test")
    resolve_device(s.device)


def _check_robustness(s: RobustnessSettings) -> TrainingSettings:
    _check_recalibration(s.recalibration, "robustness")
    _check_baselines(s.baselines, "robustness")
    resolve_device(s.device)
    return training_settings(s.training, params=tuple(s.params), **s.budget())


def _check_fields(s: FieldsSettings) -> TrainingSettings:
    from .fields import check_options

    check_options(s.strategy, s.kind, s.select_split, s.thresholds)
    _check_baselines(s.baselines, "fields")
    resolve_device(s.device)
    return training_settings(s.training, params=tuple(s.params), **s.budget())


def _check_calibrate(s: CalibrateSettings) -> None:
    if s.source not in SOURCES:
        raise ValueError(f"calibrate.source must be one of {list(SOURCES)}, got {s.source!r}")
    if s.npe_split not in ("valid", "train"):
        raise ValueError(f"calibrate.npe_split must be 'valid' or 'train', got {s.npe_split!r}")
    _check_recalibration(s.recalibration, "calibrate")
    _check_baselines(s.baselines, "calibrate")
    resolve_device(s.device)


# ---------------------------------------------------------------------------------------------- simulate
def simulate(**settings) -> dict:
    """Simulate CMD-format multifield maps of several suites offline (log-normal matter + baryonic responses).

    Parameters
    ----------
    **settings
        Fields of :class:`~cosmobench.multifield.settings.SimulateSettings` (``out_dir`` is the data folder).

    Returns
    -------
    dict
        Data folder, per-suite files, timings; ``skipped`` when already done.
    """
    s = build(SimulateSettings, settings)
    _check_simulate(s)
    folder = Path(s.out_dir)
    command = f"cosmobench multifield simulate data_dir={s.out_dir}"
    stage = Stage(folder, "multifield.simulate", as_dict(s), command=command)
    if (done := stage.start(overwrite=s.overwrite)) is not None:
        return done
    apply_threads(s.threads)
    return stage.finish(write_dataset(s, folder), outputs=[folder])


# ------------------------------------------------------------------------------------------------ train
def train(**settings) -> dict:
    """Train one o3_err on ``fields`` of ``suite`` into ``out_dir/model/model.pt``.

    Parameters
    ----------
    **settings
        Fields of :class:`~cosmobench.multifield.settings.TrainSettings`.

    Returns
    -------
    dict
        ``model_path``, ``best_val_loss``, ``epochs``, ``seconds``, ``train_maps_per_s``, ``n_parameters``;
        ``skipped`` when already trained with these settings.
    """
    s = build(TrainSettings, settings)
    recipe = _check_train(s)
    device = resolve_device(s.device)
    inputs = {"data": data_identity(s.data_dir, [s.suite], s.fields, recipe.set_name)}
    folder = Path(s.out_dir) / "model"
    stage = Stage(folder, "multifield.train", _recorded(s, recipe), inputs, command=_command("train", s.out_dir))
    if (done := stage.start(overwrite=s.overwrite)) is not None:
        return done
    apply_threads(s.threads)
    data = prepare_data(
        s.data_dir, s.suite, s.fields, recipe, in_memory=s.in_memory, device_data=s.device_data, device=device
    )
    summary = train_model(data, folder, recipe, seed=s.seed, device=device, progress=s.progress)
    return stage.finish(summary, outputs=[folder / "model.json", folder / "model.pt"])


# ----------------------------------------------------------------------------------------------- search
def search(**settings) -> dict:
    """Optuna search over lr, weight decay, dropout and width, with an RDB storage (SQLite file by default).

    Start the same command on several machines with ``search.storage=postgresql://...`` (or one SQLite file on a
    shared disk for a few workers) to share the study; it stops at ``n_trials`` finished trials in total.

    Parameters
    ----------
    **settings
        Fields of :class:`~cosmobench.multifield.settings.SearchSettings`.

    Returns
    -------
    dict
        ``best`` (number, validation loss, hyper-parameters, model path), trial counts, wall time, storage.
    """
    from .search import run_search

    s = build(SearchSettings, settings)
    recipe = _check_search(s)
    device = resolve_device(s.device)
    inputs = {"data": data_identity(s.data_dir, [s.suite], s.fields, recipe.set_name)}
    folder = Path(s.out_dir) / "search"
    stage = Stage(folder, "multifield.search", _recorded(s, recipe), inputs, command=_command("search", s.out_dir))
    if (done := stage.start(overwrite=s.overwrite)) is not None:
        return done
    apply_threads(s.threads)
    data = prepare_data(
        s.data_dir, s.suite, s.fields, recipe, in_memory=s.in_memory, device_data=s.device_data, device=device
    )
    keys = ("n_trials", "n_startup_trials", "storage", "study_name", "lr_range", "wd_range", "dropout_range")
    options = _pick(s, (*keys, "hidden_range", "prune_warmup", "seed", "progress"))
    out = run_search(data, folder, recipe, device=device, **options)
    summary = {"folder": str(folder), **{k: v for k, v in out.items() if k != "trials"}}
    return stage.finish(summary, outputs=[folder / "best.json", *sorted(folder.glob("trial_*/model.pt"))])


# ------------------------------------------------------------------------------------------------- test
def test(**settings) -> dict:
    """Predict every map of a split with the trained model; write the predictions, the metrics and a figure.

    Each (source, test suite, split, tta) has its own folder ``out_dir/test/<source>_on_<suite>_<split>_<tta>``
    and record; another setting changed over an existing result is refused, naming it.

    Parameters
    ----------
    **settings
        Fields of :class:`~cosmobench.multifield.settings.TestSettings`.

    Returns
    -------
    dict
        What ``metrics.json`` holds (see :func:`cosmobench.multifield.evaluate.evaluate_split`) and the folder.
    """
    from .evaluate import evaluate_split

    s = build(TestSettings, settings)
    _check_test(s)
    device = resolve_device(s.device)
    path, model_record = _model(s.out_dir, s.source)
    model, meta = load_model(path)
    test_suite = s.test_suite or meta["suite"]
    suites = list(dict.fromkeys([meta["suite"], test_suite]))
    data = data_identity(s.data_dir, suites, meta["fields"], meta["settings"]["set_name"])
    tag = f"{s.source}_on_{test_suite}_{s.split}_{'tta' if s.tta else 'notta'}"
    folder = Path(s.out_dir) / "test" / tag
    inputs = {"data": data, "model": identity(model_record)}
    stage = Stage(folder, "multifield.test", as_dict(s), inputs, command=_command("test", s.out_dir))
    if (done := stage.start(overwrite=s.overwrite)) is not None:
        return done
    apply_threads(s.threads)
    options = _pick(s, ("split", "tta", "batch_size", "seed", "recalibration", "baselines"))
    result = evaluate_split(model, meta, s.data_dir, folder, test_suite=test_suite, device=device, **options)
    return stage.finish({**result, "model": str(path), "folder": str(folder)}, outputs=[folder])


# ------------------------------------------------------------------------------------------- robustness
def robustness(**settings) -> dict:
    """Train on each suite, test on every suite: the matrices of error, bias and coverage for Omega_m and sigma_8.

    Parameters
    ----------
    **settings
        Fields of :class:`~cosmobench.multifield.settings.RobustnessSettings`.

    Returns
    -------
    dict
        ``table`` (text), and ``rel_err``, ``bias``, ``coverage68``... as ``key -> trained on -> tested on -> param``.
    """
    from .robustness import check_suites, cross_suite, matrix_summary

    s = build(RobustnessSettings, settings)
    recipe = _check_robustness(s)
    device = resolve_device(s.device)
    check_suites(s.data_dir, s.suites, s.fields, recipe.set_name)
    inputs = {"data": data_identity(s.data_dir, s.suites, s.fields, recipe.set_name)}
    folder = Path(s.out_dir) / "robustness"
    command = _command("robustness", s.out_dir)
    stage = Stage(folder, "multifield.robustness", _recorded(s, recipe), inputs, command=command)
    if (done := stage.start(overwrite=s.overwrite)) is not None:
        return done
    apply_threads(s.threads)
    keys = ("seed", "params", "tta", "batch_size", "recalibration", "baselines", "progress", "in_memory", "device_data")
    result = cross_suite(s.data_dir, folder, s.suites, s.fields, recipe, device=device, **_pick(s, keys))
    summary = {
        "folder": str(folder),
        "methods": result["methods"],
        "suites": result["suites"],
        "fields": result["fields"],
        "table": result["table"],
        **matrix_summary(result, s.recalibration is not None),
    }
    return stage.finish(summary, outputs=[folder])


# ----------------------------------------------------------------------------------------------- fields
def fields(**settings) -> dict:
    """Smallest field sets holding 90 % and 95 % of the full multifield model's information (see ``fields.py``).

    Parameters
    ----------
    **settings
        Fields of :class:`~cosmobench.multifield.settings.FieldsSettings`.

    Returns
    -------
    dict
        ``smallest`` (threshold -> fields), ``fractions`` and test metrics per subset, the definition.
    """
    from .fields import field_importance

    s = build(FieldsSettings, settings)
    recipe = _check_fields(s)
    device = resolve_device(s.device)
    inputs = {"data": data_identity(s.data_dir, [s.suite], s.fields, recipe.set_name)}
    folder = Path(s.out_dir) / "fields"
    stage = Stage(folder, "multifield.fields", _recorded(s, recipe), inputs, command=_command("fields", s.out_dir))
    if (done := stage.start(overwrite=s.overwrite)) is not None:
        return done
    apply_threads(s.threads)
    keys = ("seed", "params", "strategy", "kind", "select_split", "thresholds", "tta", "batch_size", "progress")
    options = _pick(s, (*keys, "baselines", "in_memory", "device_data"))
    result = field_importance(s.data_dir, folder, s.suite, s.fields, recipe, device=device, **options)
    summary = {
        "folder": str(folder),
        "smallest": result["smallest"],
        "definition": result["definition"],
        "fractions": {"+".join(e["fields"]): e[s.select_split]["fraction"] for e in result["subsets"]},
        "test_metrics": {
            "+".join(e["fields"]): {"cnn": e["test"]["metrics"], **e["baselines"]} for e in result["subsets"]
        },
    }
    return stage.finish(summary, outputs=[folder])


# -------------------------------------------------------------------------------------------- calibrate
def calibrate(**settings) -> dict:
    """Coverage of the mean +- std intervals (per map and per simulation), TARP, and an NPE posterior.

    Parameters
    ----------
    **settings
        Fields of :class:`~cosmobench.multifield.settings.CalibrateSettings`.

    Returns
    -------
    dict
        See :func:`cosmobench.multifield.calibration.calibrate_model`.
    """
    from .calibration import calibrate_model

    s = build(CalibrateSettings, settings)
    _check_calibrate(s)
    device = resolve_device(s.device)
    path, model_record = _model(s.out_dir, s.source)
    model, meta = load_model(path)
    data = data_identity(s.data_dir, [meta["suite"]], meta["fields"], meta["settings"]["set_name"])
    folder = Path(s.out_dir) / "calibration"
    inputs = {"data": data, "model": identity(model_record)}
    stage = Stage(folder, "multifield.calibrate", as_dict(s), inputs, command=_command("calibrate", s.out_dir))
    if (done := stage.start(overwrite=s.overwrite)) is not None:
        return done
    apply_threads(s.threads)
    keys = ("recalibration", "baselines", "npe", "npe_split", "npe_epochs", "n_samples", "tta", "batch_size", "seed")
    result = calibrate_model(model, meta, s.data_dir, folder, device=device, **_pick(s, keys))
    return stage.finish({**result, "model": str(path), "folder": str(folder)}, outputs=[folder])


# -------------------------------------------------------------------------------------------------- run
_FUNCTIONS = {
    "simulate": simulate,
    "train": train,
    "search": search,
    "test": test,
    "robustness": robustness,
    "fields": fields,
    "calibrate": calibrate,
}
_CHECKS = {
    "simulate": (SimulateSettings, _check_simulate),
    "train": (TrainSettings, _check_train),
    "search": (SearchSettings, _check_search),
    "test": (TestSettings, _check_test),
    "robustness": (RobustnessSettings, _check_robustness),
    "fields": (FieldsSettings, _check_fields),
    "calibrate": (CalibrateSettings, _check_calibrate),
}


def run(config: dict) -> dict:
    """The whole pipeline: the stages of ``run.stages`` (default all) in order; writes ``out_dir/report.md``.

    The settings of every stage are checked before the first one starts (a bad storage URL fails before the
    simulation, not after the training). For every seed of ``run.seeds`` other than the run's, the main model is
    trained and tested again in ``out_dir/seeds/seed_<k>`` (when ``train`` and ``test`` are among the stages), and
    the report gives the test metrics' mean and spread over the seeds.

    Parameters
    ----------
    config : dict
        The resolved configuration (sections ``simulate`` ... ``calibrate``, ``run``).

    Returns
    -------
    dict
        The report's path, the wall time, the stages skipped (already done), what the table shows, and ``table``:
        the test metrics of the CNN and the baselines, mean ± spread over the seeds (the command line prints it
        as it is; every other number is in the report).
    """
    from .report import seed_runs, write_report

    r = build(RunSettings, config.get("run"))
    unknown = sorted(set(r.stages) - set(STAGES))
    if unknown:
        raise ValueError(f"unknown stages {unknown} in run.stages; expected a subset of {list(STAGES)}")
    stages = [k for k in STAGES if k in r.stages]
    missing = [k for k in stages if k not in config]
    if missing:
        raise ValueError(f"the configuration lacks the sections {missing}")
    for name in stages:
        cls, check = _CHECKS[name]
        check(build(cls, config[name]))
    out, timings = {}, {}
    for name in stages:
        t0 = time.perf_counter()
        out[name] = _FUNCTIONS[name](**config[name])
        timings[name] = round(time.perf_counter() - t0, 1)
    out_dir = Path(config.get("out_dir") or next(config[k]["out_dir"] for k in STAGES[1:] if k in config))
    tests = {}
    if {"train", "test"} <= set(stages):
        t0 = time.perf_counter()
        seed = config["train"].get("seed", TrainSettings.seed)
        tests[seed] = out["test"]
        for k in dict.fromkeys(r.seeds):
            if k != seed:
                folder = str(out_dir / "seeds" / f"seed_{k}")
                train(**{**config["train"], "out_dir": folder, "seed": k})
                tests[k] = test(**{**config["test"], "out_dir": folder})
        timings["seeds"] = round(time.perf_counter() - t0, 1)
    runs = seed_runs(tests) if tests else None
    report, table = write_report(out_dir, out, timings, runs)
    summary = {
        "report": str(report),
        "wall_s": round(sum(timings.values()), 1),
        "skipped": [k for k, v in out.items() if v.get("skipped")],
    }
    if table:
        summary["table"] = (
            f"{out['test']['split']} split of {out['test']['tested_on']}, mean ± std over training seeds "
            f"{runs['seeds'] if runs else ''}; rel_err = sqrt(mean((mu - theta)² / theta²)), _cal: sigma "
            "recalibrated on the validation split; definitions in the report"
        )
        summary["test"] = table
    return summary
