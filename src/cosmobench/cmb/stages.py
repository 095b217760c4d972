"""Stages of ``cosmobench cmb <stage>``: simulate, train, separate, evaluate, compare, run.

Each stage turns its settings (:mod:`cosmobench.cmb.settings`, the sections of ``conf/cmb.yaml``) into library
calls under the stage contract of :mod:`cosmobench.core.stage`: validate everything, check the record, work,
record the outputs. Layout of ``out_dir`` (the dataset root) and the record of each stage::

    stage.json, manifest.json, Simulations/   simulate: the dataset (record: <root>/stage.json)
    <method>/model/                           train: model.pt, training.json, checkpoints (record beside them)
    <method>/<split>/                         separate: simNNNN/cmb_pred.fits, method.json (record beside them)
    results/<split>/                          evaluate: summary.json, metrics, spectra (record beside them)
    report/                                   compare: leaderboard, figures, report.md (record beside them)

The inputs each stage records: ``train`` the identities of its training and validation splits; ``separate``
the identity of its split and, for a learned method, of the finished training; ``evaluate`` those of the
split and of every method's predictions; ``compare`` those of every evaluated split. So a retrained model
makes its predictions, their scores and the report refuse to be reused (``overwrite=true`` redoes them).
A split's identity is the digest of the dataset's settings but the split list, and of the checksums of that
split's files (for a CMB-ML dataset, which has no record: of the names, sizes and modification times of its
files); so adding a split to a dataset (``simulate`` grows a finished dataset whose settings only add splits or
simulations) leaves the identity of every other split, and the results made from them, as they were.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Mapping
from pathlib import Path

from ..core.runtime import apply_threads, resolve_device
from ..core.settings import as_dict, build
from ..core.stage import RECORD, RUNTIME_KEYS, Stage, StageConflict, StageNotFinished, digest, identity, require
from . import dataset as layout
from .methods import CALIBRATION_SETTINGS, RUNTIME_SETTINGS, get_method, is_learned, method_defaults
from .settings import (
    ApplySettings,
    CompareSettings,
    EvaluateSettings,
    RunSettings,
    SeparateSettings,
    SimulateSettings,
    TrainSettings,
)

__all__ = ["simulate", "train", "separate", "evaluate", "compare", "apply", "run"]

_SPLIT_LIST = ("splits", "split_foregrounds")  # the simulate settings a grown dataset may change


def _command(stage: str, out_dir: str, *extra: str) -> str:
    return " ".join(["cosmobench cmb", stage, *extra, f"out_dir={out_dir}"])


def _recorded(settings, *drop: str) -> dict:
    """The settings a stage records and compares: without ``out_dir`` (the record lives there) and ``drop``."""
    return {k: v for k, v in as_dict(settings).items() if k not in ("out_dir", *drop)}


def _dataset(out_dir: str, split: str | None = None):
    """The dataset at ``out_dir``; refuse an unknown split (listing those it has) or an empty one."""
    from .dataset import CMBDataset

    ds = CMBDataset(out_dir)
    if split is not None and ds.splits.get(split, 0) == 0:
        raise ValueError(
            f"the dataset {out_dir} has no simulation in split {split!r} (it has {ds.splits}); simulate it, e.g. "
            f"`cosmobench cmb simulate out_dir={out_dir} 'simulate.splits={{{split}: 4}}'` into a new out_dir, "
            "or choose a split it holds"
        )
    return ds


def _split_identity(ds, split: str) -> str:
    """Identity of one split of the dataset: its simulate record's settings and that split's file checksums."""
    root = str(ds.root)
    if (Path(root) / "stage.json").is_file() or layout.manifest_path(root).is_file():
        record = require(root, "cmb.simulate", _command("simulate", root), what="the dataset")
        prefix = f"{layout.sims_root(root).name}/{split}/"
        outputs = {k: v for k, v in record.get("outputs", {}).items() if k.startswith(prefix)}
        # the split list is left out (a grown dataset keeps its splits' identities): the outputs pin the split's
        # simulations, and each params.json the digest of its settings and foreground model
        settings = {k: v for k, v in record["settings"].items() if k not in (*RUNTIME_KEYS, *_SPLIT_LIST)}
        return digest({"settings": settings, "outputs": outputs})
    files = sorted(p for p in (layout.sims_root(root) / split).rglob("*") if p.is_file())
    return digest([(str(p.relative_to(root)), p.stat().st_size, p.stat().st_mtime_ns) for p in files])


def _method_settings(method: str, settings: Mapping | None, *, device: str, progress: bool) -> dict:
    """The settings of ``method`` (its defaults when None) with the stage's device and progress; validated."""
    from .separate import _build

    get_method(method)  # an unknown method is refused here, listing the registered ones
    values = dict(method_defaults(method) if settings is None else settings)
    defaults = method_defaults(method)
    values.update({k: v for k, v in (("device", device), ("progress", progress)) if k in defaults})
    _build(method, values)
    return values


def _method_record(method: str, values: Mapping) -> dict:
    return {"method": method, "settings": {k: v for k, v in values.items() if k not in RUNTIME_SETTINGS}}


def _require_model(out_dir: str, method: str, folder: str | Path | None = None) -> dict:
    """The finished training record of ``method`` in ``folder`` (default: the dataset's own model folder)."""
    from .separate import model_dir

    own = folder is None
    folder = Path(model_dir(out_dir, method) if own else folder)
    root = str(folder.parent.parent)  # <root>/<method>/model
    try:
        command = _command("train", root, f"method={method}")
        return require(folder, "cmb.train", command, what=f"the trained {method} model")
    except StageNotFinished as err:
        if own and not folder.exists():  # never trained here: a model trained on another dataset may do
            raise StageNotFinished(
                f"{err}, or separate with a model trained on another dataset: "
                f"`{_command('separate', out_dir, f'method={method}', f'separate.model_dir=<root A>/{method}/model')}`"
            ) from None
        raise


def _say(message: str) -> None:
    print(f"cosmobench: {message}", file=sys.stderr, flush=True)


# ---------------------------------------------------------------------------------------------- simulate
def _flow(values: Mapping) -> str:
    """A mapping as the inside of a YAML flow mapping, for a command line: ``Train: 240, TestOOD: alt``."""
    return ", ".join(f"{k}: {v if isinstance(v, (str, int)) else json.dumps(v)}" for k, v in values.items())


def _added_splits(root: Path, record: Mapping | None, settings: Mapping) -> dict[str, int] | None:
    """The simulations ``settings`` add to the finished dataset at ``root`` recorded in ``record`` (split -> count;
    empty when only entries of splits it does not hold changed), or None when they change another setting (refused
    by the stage record, naming it).

    Raises
    ------
    StageConflict
        Only the split list changed, but not by adding: fewer simulations in a split, or another foreground model
        of a split the dataset holds (each named, with the override that keeps them).
    """
    if record is None or record.get("status") != "finished":
        return None
    old = record["settings"]
    differ = {k for k in set(old) | set(settings) if k not in RUNTIME_KEYS and old.get(k) != settings.get(k)}
    if not differ or not differ <= set(_SPLIT_LIST):
        return None
    before, after = old["splits"], settings["splits"]
    named = old.get("split_foregrounds", {}), settings.get("split_foregrounds", {})
    models = [{s: m.get(s, settings.get("foreground_model")) for s in before} for m in named]  # unnamed: the default
    problems = [f"{s}: {n} -> {after.get(s, 0)} simulations" for s, n in before.items() if after.get(s, 0) < n]
    problems += [f"{s}: foregrounds {models[0][s]} -> {models[1][s]}" for s in before if models[0][s] != models[1][s]]
    if problems:
        raise StageConflict(
            f"{root} holds a finished dataset these settings do not only add to ({'; '.join(problems)}). A dataset "
            "grows by new splits or more simulations, each split it holds keeping its count and foreground model; "
            "a dict override replaces the whole dict, so repeat what it holds: 'simulate.splits="
            f"{{{_flow(before)}, <new split>: <count>}}' 'simulate.split_foregrounds={{{_flow(named[0])}, <new split>: "
            "<model>}'. Or rerun with overwrite=true to delete the dataset and simulate it again, or choose another "
            "out_dir."
        )
    return {s: n - before.get(s, 0) for s, n in after.items() if n > before.get(s, 0)}


def simulate(**settings) -> dict:
    """Simulate the multi-frequency dataset (validated first: physics, splits, disk and memory).

    Parameters
    ----------
    **settings
        Fields of :class:`~cosmobench.cmb.settings.SimulateSettings`.

    Returns
    -------
    dict
        Root, simulations written, seconds, bytes on disk, median timings per part; ``skipped`` when done.
    """
    from .simulate import check_manifest, check_resources, pending_simulations, plan_dataset, write_dataset

    s = build(SimulateSettings, settings)
    apply_threads(s.threads)  # checks the value; caps the compute threads of the work below
    plan = plan_dataset(s.out_dir, **{k: v for k, v in as_dict(s).items() if k in plan_dataset.__kwdefaults__})
    root = Path(s.out_dir)
    owned = [root / "Simulations", layout.manifest_path(root)]
    stage = Stage(root, "cmb.simulate", _recorded(s, "cache_dir"), owned=owned, command=_command("simulate", s.out_dir))
    added = None if s.overwrite else _added_splits(root, stage.read(), stage.settings)
    if added is not None:
        check_manifest(root, plan)
    action = stage.check(overwrite=s.overwrite) if added is None else stage.extend()  # other settings: refused
    pending = plan.items if action == "redo" else [] if action == "skip" else pending_simulations(plan)
    if added:
        _say(f"growing the dataset {s.out_dir} by {added} (the finished simulations verified and kept)")
    check_resources(plan, pending, s.workers if s.executor != "serial" else 1, force=s.force)
    if (done := stage.start(overwrite=s.overwrite)) is not None:
        return done
    out = write_dataset(
        plan,
        pending,
        executor=s.executor,
        workers=s.workers,
        scheduler_address=s.scheduler_address,
        progress=s.progress,
    )
    return stage.finish(out, outputs=owned)


# ------------------------------------------------------------------------------------------------ train
def _recalibration(record: Mapping | None, settings: Mapping, inputs: Mapping) -> bool:
    """Whether this training differs from the finished one of ``record`` only by the settings of its calibration
    (``calibration_splits`` and their identities, ``calibration_rule``): what is learned is the same, so the run
    resumes the finished training and calibrates it again (:mod:`cosmobench.cmb.learned`)."""
    if record is None or record.get("status") != "finished":
        return False

    def learned(values: Mapping, identities: Mapping) -> tuple[dict, dict]:
        method = {k: v for k, v in values.get("settings", {}).items() if k not in CALIBRATION_SETTINGS}
        return {**values, "settings": method}, {k: v for k, v in identities.items() if not k.startswith("calibration:")}

    old = (record.get("settings", {}), record.get("inputs", {}))
    return old != (settings, inputs) and learned(*old) == learned(settings, inputs)


def train(**settings) -> dict:
    """Train a learned method on the dataset (classical methods have nothing to train).

    Parameters
    ----------
    **settings
        Fields of :class:`~cosmobench.cmb.settings.TrainSettings`.

    Returns
    -------
    dict
        Training facts (epochs, seconds, maps/s, losses) and the model path; ``skipped`` when already trained.
    """
    from . import separate as library

    s = build(TrainSettings, settings)
    apply_threads(s.threads)  # checks the value; caps the compute threads of the work below
    resolve_device(s.device)  # an unavailable device is refused before any work
    values = _method_settings(s.method, s.settings, device=s.device, progress=s.progress)
    if not is_learned(s.method):
        return {"method": s.method, "trained": False, "note": f"{s.method} is a classical method: nothing to train"}
    ds = _dataset(s.out_dir)
    if ds.splits.get(s.train_split, 0) == 0:  # e.g. a Test-only dataset: separate it with a model from elsewhere
        elsewhere = f"separate.model_dir=<root A>/{s.method}/model"
        raise ValueError(
            f"the dataset {s.out_dir} has no simulation in the training split {s.train_split!r} (it has "
            f"{ds.splits}); train on a dataset that has one, then separate this one with that model: "
            f"`{_command('separate', s.out_dir, f'method={s.method}', elsewhere)}`"
            "; or choose another train.train_split"
        )
    inputs = {"train": _split_identity(ds, s.train_split)}
    if s.val_split is not None:
        if s.val_split not in ds.splits:
            raise ValueError(
                f"the dataset {s.out_dir} has no split {s.val_split!r} (it has {ds.splits}); choose another "
                "train.val_split, or train.val_split=null to train without validation"
            )
        inputs["valid"] = _split_identity(ds, s.val_split)
    calibration_splits = values.get("calibration_splits") or []  # the learned error bars' further splits
    if calibration_splits:  # a setting of the networks (cosmobench.cmb.learned), checked before the record
        get_method(s.method)(**values).check_calibration_splits(ds, s.val_split)
    for split in calibration_splits:
        inputs[f"calibration:{split}"] = _split_identity(ds, split)
    folder = library.model_dir(s.out_dir, s.method)
    recorded = {**_method_record(s.method, values), "train_split": s.train_split, "val_split": s.val_split}
    stage = Stage(folder, "cmb.train", recorded, inputs, command=_command("train", s.out_dir, f"method={s.method}"))
    if not s.overwrite and _recalibration(stage.read(), stage.settings, stage.inputs):
        _say(f"{s.method}: only the calibration settings changed; the trained network is kept and calibrated again")
        stage.extend()
    if (done := stage.start(overwrite=s.overwrite)) is not None:
        return done
    base = getattr(get_method(s.method), "corrects", None)
    if base is not None:  # a corrector reads its base method's maps of these splits: made and recorded as separate's
        for split in dict.fromkeys([s.train_split, s.val_split, *calibration_splits]):
            if split is not None and ds.splits.get(split):
                _cache_base(s, base, values.get(base) or {}, split, workers=int(values.get("workers", 1)))
    facts = library.train(s.out_dir, method=s.method, settings=values, train_split=s.train_split, val_split=s.val_split)
    facts["model"] = str(folder / "model.pt")
    return stage.finish(facts, outputs=[folder / "model.pt"])  # the identity of the model: its bytes


def _cache_base(s: TrainSettings | SeparateSettings, base: str, settings: Mapping, split: str, *, workers: int) -> None:
    """The ``base`` method's predictions of ``split`` under the stage contract of ``cmb separate`` (skipped when
    finished), so that separating ``base`` later reuses them; a folder cached before these records is left to the
    corrector, which reuses its maps as they are."""
    folder = Path(s.out_dir) / base / split
    if not (folder / RECORD).is_file() and any(folder.rglob("cmb_pred.fits")):
        return
    values = {"out_dir": s.out_dir, "method": base, "settings": dict(settings), "split": split}
    values.update(device=s.device, progress=s.progress, threads=s.threads, workers=workers)
    try:
        _separate(build(SeparateSettings, {**values, "executor": "processes" if workers > 1 else "serial"}))
    except StageConflict as err:
        found = str(err).rsplit("\n", 1)[0]  # what differs, without the ways out of the base's own stage
        raise StageConflict(
            f"{s.method} corrects the {base} maps of {split} made with its own {base} settings, but {found}\nMake "
            f"them again with those settings (`cosmobench cmb separate method={base} separate.split={split} "
            "overwrite=true`), or choose another out_dir."
        ) from err


# --------------------------------------------------------------------------------------------- separate
def separate(**settings) -> dict:
    """Predict the CMB of every simulation of a split with one method (observed maps checked first).

    Parameters
    ----------
    **settings
        Fields of :class:`~cosmobench.cmb.settings.SeparateSettings`.

    Returns
    -------
    dict
        Method, split, maps predicted, seconds per map, output beam; ``skipped`` when already done.
    """
    s = build(SeparateSettings, settings)
    apply_threads(s.threads)  # checks the value; caps the compute threads of the work below
    resolve_device(s.device)  # an unavailable device is refused before any work
    return _separate(s)


def _separate(s: SeparateSettings) -> dict:
    """:func:`separate` once its threads and device are set."""
    from . import separate as library

    values = _method_settings(s.method, s.settings, device=s.device, progress=s.progress)
    ds = _dataset(s.out_dir, s.split)
    inputs = {"data": _split_identity(ds, s.split)}
    model_folder = None
    if is_learned(s.method):
        inputs["model"] = identity(_require_model(s.out_dir, s.method, s.model_dir))
        model_folder = library.model_dir(s.out_dir, s.method) if s.model_dir is None else Path(s.model_dir)
        model = library.check_model(ds, s.method, model_folder)  # trained nside, channels and beams
        values = library.trained_settings(s.method, values, model)  # what predicts: the model's settings
    elif s.model_dir is not None:
        raise ValueError(f"{s.method} is a classical method: it has no trained model; drop separate.model_dir")
    folder = Path(s.out_dir) / s.method / s.split
    stage = Stage(
        folder,
        "cmb.separate",
        {**_method_record(s.method, values), "split": s.split},
        inputs,
        command=_command("separate", s.out_dir, f"method={s.method}", f"separate.split={s.split}"),
    )
    if stage.check(overwrite=s.overwrite) != "skip":  # a finished, verified run reads no observed map again
        bands = list(getattr(library._build(s.method, values), "bands", None) or ds.bands)
        indices = library.check_observed(
            ds, s.split, bands, executor=s.executor, workers=s.workers, scheduler_address=s.scheduler_address
        )
    if (done := stage.start(overwrite=s.overwrite)) is not None:
        return done
    base = getattr(get_method(s.method), "corrects", None)
    if base is not None:  # a corrector reads its base method's maps of the split: made and recorded as separate's
        _cache_base(s, base, values.get(base) or {}, s.split, workers=s.workers)
    out = library.predict_split(
        ds,
        s.method,
        values,
        s.split,
        indices,
        model_folder=model_folder,
        executor=s.executor,
        workers=s.workers,
        scheduler_address=s.scheduler_address,
        progress=s.progress,
    )
    return stage.finish(out, outputs=[folder])


# --------------------------------------------------------------------------------------------- evaluate
def evaluate(**settings) -> dict:
    """Score every method's predictions of a split with the fixed protocol (predictions checked first).

    Parameters
    ----------
    **settings
        Fields of :class:`~cosmobench.cmb.settings.EvaluateSettings`.

    Returns
    -------
    dict
        The content of ``summary.json`` (settings; per method and beam, the statistics of every metric).
    """
    from . import evaluate as library
    from .spectra import ESTIMATOR

    s = build(EvaluateSettings, settings)
    apply_threads(s.threads)  # checks the value; caps the compute threads of the work below
    ds = _dataset(s.out_dir, s.split)
    inputs = {"data": _split_identity(ds, s.split)}
    for m in s.methods:
        record = require(
            Path(s.out_dir) / m / s.split,
            "cmb.separate",
            _command("separate", s.out_dir, f"method={m}", f"separate.split={s.split}"),
            what=f"the {m} predictions of {s.split}",
        )
        inputs[f"predictions {m}"] = identity(record)
    library.check_inputs(ds, s.methods, s.split, s.beams, s.lmax, s.fsky, s.mask_path)
    folder = Path(s.out_dir) / "results" / s.split
    stage = Stage(
        folder,
        "cmb.evaluate",
        {**_recorded(s), "estimator": ESTIMATOR},  # results of another spectrum estimator are not kept
        inputs,
        command=_command("evaluate", s.out_dir, f"evaluate.split={s.split}"),
    )
    if (done := stage.start(overwrite=s.overwrite)) is not None:
        return done
    summary = library.evaluate(
        s.out_dir,
        methods=s.methods,
        split=s.split,
        beams=s.beams,
        fsky=s.fsky,
        mask_path=s.mask_path,
        mask_smooth_deg=s.mask_smooth_deg,
        lmax=s.lmax,
        nbins=s.nbins,
        apod_deg=s.apod_deg,
        ell_split=s.ell_split,
        lat_cut_deg=s.lat_cut_deg,
        out_dir=folder,
        executor=s.executor,
        workers=s.workers,
        progress=s.progress,
    )
    return stage.finish(summary, outputs=[folder])


# ---------------------------------------------------------------------------------------------- compare
def compare(**settings) -> dict:
    """Write the leaderboard, figures and report of every evaluated split.

    Parameters
    ----------
    **settings
        Fields of :class:`~cosmobench.cmb.settings.CompareSettings`.

    Returns
    -------
    dict
        The report's path and the evaluated splits; ``skipped`` when already written from the same results.
    """
    from ..core.io import read_json
    from . import compare as library

    s = build(CompareSettings, settings)
    apply_threads(s.threads)  # checks the value; caps the compute threads of the work below
    results = [Path(s.out_dir) / "results"] if s.results_dirs is None else [Path(d) for d in s.results_dirs]
    folders = library.collect_results(results)  # {split, or <dataset>/<split> for several datasets: folder}
    inputs = {}
    for label, folder in folders.items():
        split = read_json(folder / "summary.json")["settings"]["split"]
        command = _command("evaluate", str(folder.parent.parent), f"evaluate.split={split}")
        inputs[f"results {label}"] = identity(require(folder, "cmb.evaluate", command))
    library.check_map_beams({k: read_json(f / "summary.json") for k, f in folders.items()}, s.map_beams)
    folder = Path(s.out_dir) / "report"
    stage = Stage(folder, "cmb.compare", _recorded(s, "results_dirs"), inputs, command=_command("compare", s.out_dir))
    if (done := stage.start(overwrite=s.overwrite)) is not None:
        return done
    report = library.compare(results, report_dir=folder, map_beams=s.map_beams)
    return stage.finish({"report": str(report), "splits": list(folders)}, outputs=[folder])


# ------------------------------------------------------------------------------------------------ apply
def apply(**settings) -> dict:
    """Separate the CMB from your own frequency maps with one method (every map and the table checked first).

    The record (``out_dir/stage.json``) holds the settings, the SHA-256 of every map, a digest of the channel
    table and, for a learned method, the identity of its finished training, so a rerun on the same inputs is
    skipped and one on changed maps or a retrained model is refused (``overwrite=true`` redoes it).

    Parameters
    ----------
    **settings
        Fields of :class:`~cosmobench.cmb.settings.ApplySettings`.

    Returns
    -------
    dict
        What :func:`cosmobench.cmb.apply.apply_method` returns (map, report, nside, output beam, inputs);
        ``skipped`` when already done.
    """
    from . import apply as library
    from .separate import trained_settings

    s = build(ApplySettings, settings)
    apply_threads(s.threads)  # checks the value; caps the compute threads of the work below
    resolve_device(s.device)  # an unavailable device is refused before any work
    values = _method_settings(s.method, s.settings, device=s.device, progress=s.progress)
    if s.channels is None:
        raise ValueError("apply.channels is missing: give a channel table file or its rows, one per map")
    inputs = library.input_identities(s.maps, s.channels)
    if is_learned(s.method):
        if s.model_dir is None:
            raise ValueError(
                f"method {s.method!r} is learned: give apply.model_dir=<dataset root>/{s.method}/model, the folder "
                f"`cosmobench cmb train method={s.method}` wrote"
            )
        root = str(Path(s.model_dir).parent.parent)
        command = _command("train", root, f"method={s.method}")
        inputs["model"] = identity(require(s.model_dir, "cmb.train", command, what=f"the trained {s.method} model"))
        model = get_method(s.method).load(s.model_dir, device="cpu")
        values = trained_settings(s.method, values, model)  # what predicts: the model's settings
    stage = Stage(
        s.out_dir,
        "cmb.apply",
        {**_recorded(s, "maps", "channels", "model_dir", "settings"), **_method_record(s.method, values)},
        inputs,
        command=_command("apply", s.out_dir, f"method={s.method}"),
    )
    if stage.check(overwrite=s.overwrite) == "skip":
        return stage.start(overwrite=s.overwrite)
    result = library.apply_method(
        list(s.maps),
        s.channels,
        method=s.method,
        out_dir=s.out_dir,
        settings=values,
        model_dir=s.model_dir,
        nside=s.nside,
        report=s.report,
        before_write=lambda: stage.start(overwrite=s.overwrite),
    )
    return stage.finish(result, outputs=[Path(s.out_dir)])


# -------------------------------------------------------------------------------------------------- run
def run(config: Mapping) -> dict:
    """The whole benchmark: simulate, train and separate every method on every split, evaluate, compare.

    Every split of ``run.splits`` that the dataset holds (default Test and TestOOD, whose foregrounds come from
    another model than the training foregrounds) is separated and evaluated; splits with no simulation are
    skipped with a message. Each stage follows the stage contract, so a rerun skips finished work.

    Parameters
    ----------
    config : mapping
        The resolved configuration (sections ``simulate``, ``methods``, ``train``, ``separate``, ``evaluate``,
        ``compare``, ``run``).

    Returns
    -------
    dict
        The report's path, seconds per step, training facts per learned method (the leaderboard is printed to
        standard error).
    """
    from .compare import coverage_markdown, field_markdown, leaderboard_markdown, ood_markdown

    missing = [k for k in ("simulate", "methods", "train", "separate", "evaluate", "compare", "run") if k not in config]
    if missing:
        raise ValueError(f"the configuration lacks the sections {missing}")
    r = build(RunSettings, config["run"])
    if config["separate"].get("model_dir") is not None:
        raise ValueError(
            "`cmb run` trains and separates with the dataset's own models; drop separate.model_dir, or apply a "
            "model trained elsewhere with `cosmobench cmb separate method=<m> separate.model_dir=...` on each split"
        )
    for name in r.methods:
        get_method(name)  # unknown methods are refused before any work, listing the registry
    steps: dict[str, float] = {}
    t0 = time.perf_counter()
    _say("simulating the dataset")
    simulate(**config["simulate"])
    root = config["simulate"]["out_dir"]  # not the record's: a run written by an older version may have moved
    steps["simulate"] = time.perf_counter() - t0
    simulated = {k: n for k, n in _dataset(root).splits.items() if n > 0}
    splits = [k for k in r.splits if k in simulated]
    if not splits:
        raise ValueError(f"run.splits {list(r.splits)} names no simulated split; the dataset holds {simulated}")
    if len(splits) < len(r.splits):
        _say(f"run.splits {sorted(set(r.splits) - set(splits))} have no simulations in the dataset; skipped")
    trained = {}
    for name in r.methods:
        t = time.perf_counter()
        settings = config["methods"].get(name)
        _say(f"method {name}")
        facts = train(**{**config["train"], "method": name, "settings": settings})
        if facts.get("epochs"):
            trained[name] = facts
        for split in splits:
            separate(**{**config["separate"], "method": name, "settings": settings, "split": split})
        steps[name] = time.perf_counter() - t
    t = time.perf_counter()
    summaries = {}
    for split in splits:
        _say(f"evaluating {split}")
        summaries[split] = evaluate(**{**config["evaluate"], "methods": list(r.methods), "split": split})
    steps["evaluate"] = time.perf_counter() - t
    t = time.perf_counter()
    report = compare(**config["compare"])["report"]
    steps["compare"] = time.perf_counter() - t
    steps["total"] = time.perf_counter() - t0
    table = leaderboard_markdown(summaries[splits[0]]).split("\n\n")[0]
    _say(f"leaderboard ({splits[0]} split):\n\n{table}\n")
    fields = field_markdown(summaries[splits[0]]).split("\n\n")[0]
    _say(f"temperature, E and B ({splits[0]} split; the definitions are in the report):\n\n{fields}\n")
    cover = coverage_markdown(summaries[splits[0]]).split("\n\n")[0]
    if cover:
        _say(f"coverage of the per-pixel error maps ({splits[0]} split, %):\n\n{cover}\n")
    if len(splits) > 1:
        _say(f"in-distribution vs out-of-distribution foregrounds:\n\n{ood_markdown(summaries)}")
    _say(f"report: {report}")
    return {
        "report": report,
        "seconds": {k: round(v, 1) for k, v in steps.items()},
        "trained": {
            name: {k: facts[k] for k in ("epochs", "seconds", "train_maps_per_s") if k in facts}
            for name, facts in trained.items()
        },
    }
