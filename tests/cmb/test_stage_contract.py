"""The stage contract on every CMB stage: same settings -> skipped; changed -> refused before work, naming the
key; ``overwrite=true`` -> redone; an unfinished training -> its consumers refuse; settings written once."""

from __future__ import annotations

import dataclasses
import inspect
import shutil

import numpy as np
import pytest

from cosmobench.cli import load_config, run_stage
from cosmobench.cmb import evaluate as evaluate_lib
from cosmobench.cmb import separate as separate_lib
from cosmobench.cmb import simulate as simulate_lib
from cosmobench.cmb.methods import METHODS, method_defaults
from cosmobench.cmb.settings import SECTIONS, EvaluateSettings, SeparateSettings, SimulateSettings, TrainSettings
from cosmobench.core.io import CorruptFileError, read_json, write_json
from cosmobench.core.settings import defaults
from cosmobench.core.stage import StageConflict, StageNotFinished, identity

from .conftest import TINY

# stage, the folder of its record, a changed setting and the key the refusal must name
STAGES = [
    ("train", "cmbnncs/model", ["method=cmbnncs", "methods.cmbnncs.lr=0.01"], "settings.lr: 0.002 -> 0.01"),
    ("separate", "hilc/Test", ["method=hilc", "methods.hilc.delta_ell=20"], "settings.delta_ell: 50 -> 20"),
    ("evaluate", "results/Test", ["evaluate.nbins=3"], "nbins: 4 -> 3"),
    ("compare", "report", ["compare.map_beams=[60.0]"], "map_beams: [] -> [60.0]"),
]


def _run(stage: str, root, *args: str):
    return run_stage("cmb", stage, [*TINY, *args, f"out_dir={root}"])


@pytest.mark.parametrize("stage,folder,changed,key", STAGES, ids=[s[0] for s in STAGES])
def test_rerun_skips_changed_is_refused_overwrite_redoes(stage, folder, changed, key, tiny_copy, snapshot):
    base = [a for a in changed[:1] if a.startswith("method=")]
    before = snapshot(tiny_copy)
    assert _run(stage, tiny_copy, *base)["skipped"] is True
    assert snapshot(tiny_copy) == before
    with pytest.raises(StageConflict, match="overwrite=true") as refused:
        _run(stage, tiny_copy, *changed)
    assert key in str(refused.value)
    assert snapshot(tiny_copy) == before  # refused before any work or write
    redone = _run(stage, tiny_copy, *changed, "overwrite=true")
    assert redone["skipped"] is False
    record = read_json(tiny_copy / folder / "stage.json")
    assert record["status"] == "finished" and record["stage"] == f"cmb.{stage}"
    assert _run(stage, tiny_copy, *changed)["skipped"] is True


def test_simulate_contract_and_validation_before_the_record(tmp_path, snapshot):
    """Finding 6: a failed validation writes nothing, so the corrected command runs; then skip/refuse/redo."""
    root = tmp_path / "data"
    one = ["simulate.splits={Test: 1}"]
    with pytest.raises(ValueError, match="simulate.r"):
        _run("simulate", root, *one, "simulate.r=-0.1")
    assert not root.exists()
    assert _run("simulate", root, *one, "simulate.r=0.01")["simulated"] == 1
    params = read_json(root / "Simulations" / "Test" / "sim0000" / "params.json")
    assert params["seed"] == 0 and len(params["settings_digest"]) == 64  # finding 4: checked on every rerun
    before = snapshot(root)
    assert _run("simulate", root, *one, "simulate.r=0.01")["skipped"] is True
    with pytest.raises(StageConflict, match="noise: true -> false"):
        _run("simulate", root, *one, "simulate.r=0.01", "simulate.noise=false")
    assert snapshot(root) == before
    redone = _run("simulate", root, *one, "simulate.r=0.01", "simulate.noise=false", "overwrite=true")
    assert redone["skipped"] is False and redone["simulated"] == 1
    assert snapshot(root) != before


def test_a_finished_dataset_grows_by_a_split_and_the_results_of_the_others_stay_valid(tiny_copy, snapshot):
    """``simulate`` with a split added (its model in split_foregrounds) keeps every finished simulation and every
    result made from the other splits; fewer simulations or another model of an existing split are refused."""
    models = "simulate.split_foregrounds={TestOOD: alt, TestOOD2: filament, ValidOOD: perturbed}"
    grown = ["simulate.splits={Train: 1, Valid: 1, Test: 1, ValidOOD: 2}", models]
    before = snapshot(tiny_copy)
    train_record = read_json(tiny_copy / "cmbnncs" / "model" / "stage.json")
    out = _run("simulate", tiny_copy, *grown)
    assert out["skipped"] is False and out["simulated"] == 2 and out["kept"] == 3
    after = snapshot(tiny_copy)
    assert {k: v for k, v in after.items() if k in before and "ValidOOD" not in k and k.endswith(".fits")} == {
        k: v for k, v in before.items() if k.endswith(".fits")
    }
    manifest = read_json(tiny_copy / "manifest.json")
    assert manifest["splits"]["ValidOOD"] == 2 and manifest["split_foregrounds"]["ValidOOD"]["model"] == "perturbed"
    # the training and Test's predictions, scores and report recorded the identities of Train, Valid and Test:
    # unchanged, so every later stage is reused as it is
    assert _run("train", tiny_copy, "method=cmbnncs")["skipped"] is True
    assert read_json(tiny_copy / "cmbnncs" / "model" / "stage.json") == train_record
    assert _run("separate", tiny_copy, "method=cmbnncs")["skipped"] is True
    assert _run("evaluate", tiny_copy)["skipped"] is True
    assert _run("compare", tiny_copy)["skipped"] is True
    assert _run("simulate", tiny_copy, *grown)["skipped"] is True
    # the new split calibrates a trained model's error bars again without retraining it
    nilc_unet = ["method=nilc_unet", "separate.split=Test"]
    assert _run("train", tiny_copy, *nilc_unet)["skipped"] is False
    trained = snapshot(tiny_copy / "nilc_unet" / "model")
    calibrated = _run("train", tiny_copy, *nilc_unet, "methods.nilc_unet.calibration_splits=[ValidOOD]")
    assert calibrated["skipped"] is False and set(calibrated["std_calibration_splits"]) == {"Valid", "ValidOOD"}
    again = snapshot(tiny_copy / "nilc_unet" / "model")
    assert [again[f] == trained[f] for f in ("last.pt", "best.pt", "model.pt")] == [True, True, False]
    # so does another calibration rule: the variance rule's factors are the mean of each split's
    calibrated_split = "methods.nilc_unet.calibration_splits=[ValidOOD]"
    rule = _run("train", tiny_copy, *nilc_unet, calibrated_split, "methods.nilc_unet.calibration_rule=variance")
    per_split = np.array(list(rule["std_calibration_splits"].values()))
    assert rule["skipped"] is False and rule["std_calibration"] == pytest.approx(per_split.mean(axis=0).tolist())
    assert rule["std_calibration"] != calibrated["std_calibration"]
    third = snapshot(tiny_copy / "nilc_unet" / "model")
    assert [third[f] == trained[f] for f in ("last.pt", "best.pt", "model.pt")] == [True, True, False]
    # not a growth: fewer simulations, another model of a split it holds, another setting beside the new split
    for changed, key in (
        (["simulate.splits={Train: 1, Valid: 1, Test: 1, ValidOOD: 1}", models], "ValidOOD: 2 -> 1 simulations"),
        (
            [grown[0], "simulate.split_foregrounds={TestOOD: alt}"],
            "ValidOOD: foregrounds perturbed -> default.*"
            "repeat what it holds.*'simulate.split_foregrounds=\\{TestOOD: alt, TestOOD2: filament, "
            "ValidOOD: perturbed, <new",
        ),
        ([grown[0], "simulate.split_foregrounds={ValidOOD: alt}"], "ValidOOD: foregrounds perturbed -> alt"),
        (["simulate.splits={Train: 1, Valid: 1, Test: 1, ValidOOD: 2, More: 1}", models, "simulate.seed=3"], "seed"),
    ):
        with pytest.raises(StageConflict, match=key):
            _run("simulate", tiny_copy, *changed)


def test_killed_training_is_refused_by_its_consumers_and_finished_by_train(tiny_copy):
    """Finding 1: a `running` training record (a killed run) makes `separate` refuse, naming the command that
    finishes it; that command resumes it, and the predictions of the same model stay valid."""
    record = tiny_copy / "cmbnncs" / "model" / "stage.json"
    data = read_json(record)
    write_json(record, {**data, "status": "running"})
    with pytest.raises(StageNotFinished, match="cosmobench cmb train method=cmbnncs"):
        _run("separate", tiny_copy, "method=cmbnncs", "separate.split=Valid")
    finished = _run("train", tiny_copy, "method=cmbnncs")
    assert finished["skipped"] is False and read_json(record)["status"] == "finished"
    assert identity(read_json(record)) == identity(data)  # resumed: the same final model (its file time is new)
    assert _run("separate", tiny_copy, "method=cmbnncs")["skipped"] is True


def test_retrained_model_invalidates_predictions_scores_and_report(tiny_copy):
    """Finding 1, second half: outputs derived from a model are refused once the model changed."""
    retrain = ["method=cmbnncs", "methods.cmbnncs.epochs=2"]
    assert _run("train", tiny_copy, *retrain, "overwrite=true")["epochs"] == 2
    with pytest.raises(StageConflict, match="input model"):
        _run("separate", tiny_copy, *retrain)
    assert _run("separate", tiny_copy, *retrain, "overwrite=true")["skipped"] is False
    with pytest.raises(StageConflict, match="input predictions cmbnncs"):
        _run("evaluate", tiny_copy)
    assert _run("evaluate", tiny_copy, "overwrite=true")["skipped"] is False
    with pytest.raises(StageConflict, match="input results Test"):
        _run("compare", tiny_copy)


def test_a_prediction_edited_at_constant_size_is_refused_by_a_finished_evaluate(tiny_copy):
    """A finished evaluate would skip on its old summary; an input edited after `separate` wrote it (same size, new
    bytes) is caught where it is consumed, naming the file and the command that redoes it."""
    pred = tiny_copy / "hilc" / "Test" / "sim0000" / "cmb_pred.fits"
    raw = bytearray(pred.read_bytes())
    raw[len(raw) // 2] ^= 0xFF  # one byte of the pixel data flipped: the size is unchanged
    pred.write_bytes(bytes(raw))
    with pytest.raises(CorruptFileError, match=r"cmb_pred\.fits.*cosmobench cmb separate .*overwrite=true"):
        _run("evaluate", tiny_copy)


def test_run_on_a_finished_run_skips_every_stage(tiny_copy, snapshot):
    before = snapshot(tiny_copy)
    out = run_stage("cmb", "run", [*TINY, "run.splits=[Test]", f"out_dir={tiny_copy}"])
    assert out["report"].endswith("report.md") and out["trained"]["cmbnncs"]["epochs"] == 1
    assert snapshot(tiny_copy) == before


def test_a_moved_run_is_used_where_it_is(tiny_copy, tmp_path, snapshot):
    """The records were written in another folder (tiny_copy is a copy of it): a skipped stage names the folder it
    was run on, not the one it was first written in, and the moved run skips every stage there."""
    moved = shutil.move(tiny_copy, tmp_path / "moved")
    before = snapshot(moved)
    assert run_stage("cmb", "simulate", [*TINY, f"out_dir={moved}"])["root"] == str(moved)
    out = run_stage("cmb", "run", [*TINY, "run.splits=[Test]", f"out_dir={moved}"])
    assert out["report"] == str(moved / "report" / "report.md")
    assert snapshot(moved) == before


def test_each_observed_map_is_checked_once_and_a_finished_separate_reads_none(tiny_copy, monkeypatch):
    """A corrector's separate checks the observed maps once (the NILC maps it reads are a finished stage, not
    checked again), and rerunning a finished separate reads no observed map."""
    checked = []
    check_sim = separate_lib._check_sim
    monkeypatch.setattr(separate_lib, "_check_sim", lambda *a: checked.append(a[-1]) or check_sim(*a))
    _run("train", tiny_copy, "method=nilc_regress")
    checked.clear()
    _run("separate", tiny_copy, "method=nilc", "separate.split=Test")
    assert checked == [0]
    checked.clear()
    _run("separate", tiny_copy, "method=nilc_regress", "separate.split=Test")
    assert checked == [0]
    checked.clear()
    assert _run("separate", tiny_copy, "method=nilc_regress", "separate.split=Test")["skipped"]
    assert checked == []


def test_classical_methods_have_nothing_to_train(tiny_copy):
    out = _run("train", tiny_copy, "method=nilc")
    assert out["trained"] is False and not (tiny_copy / "nilc").exists()


# ------------------------------------------------------------------------------------ settings written once
def test_yaml_sections_are_the_settings_dataclasses():
    cfg = load_config("cmb")
    for name, cls in SECTIONS.items():
        assert set(cfg[name]) == {f.name for f in dataclasses.fields(cls)}, name
    assert set(cfg["methods"]) == set(METHODS)
    fixed = {"seed", "nilc", "device", "progress"}  # wired in conf/cmb.yaml or by the stages
    bare = load_config("cmb", ["preset=tiny"])
    for name in METHODS:
        assert set(cfg["methods"][name]) == set(method_defaults(name)), name
        assert {k: v for k, v in bare["methods"][name].items() if k not in fixed} or name in ("hilc", "nilc")
    # stage sections that the YAML does not wire hold exactly the dataclass defaults
    plain = defaults(SimulateSettings)
    resolved = load_config("cmb", ["preset=bench128"])["simulate"]
    assert {
        k: v
        for k, v in resolved.items()
        if k not in ("out_dir", "nside", "splits", "spectra_method", "executor", "workers")
    } == {
        k: v
        for k, v in plain.items()
        if k not in ("out_dir", "nside", "splits", "spectra_method", "executor", "workers")
    }


@pytest.mark.parametrize(
    "function,cls",
    [
        (simulate_lib.simulate_dataset, SimulateSettings),
        (simulate_lib.plan_dataset, SimulateSettings),
        (separate_lib.separate, SeparateSettings),
        (separate_lib.train, TrainSettings),
        (evaluate_lib.evaluate, EvaluateSettings),
    ],
    ids=lambda x: getattr(x, "__name__", ""),
)
def test_library_defaults_equal_the_settings(function, cls):
    """Finding 9: a notebook calling the library gets the CLI's defaults (e.g. spectra_method="camb")."""
    fields = defaults(cls)
    shared = 0
    for name, p in inspect.signature(function).parameters.items():
        if name in fields and name != "out_dir" and p.default is not p.empty:
            value = dict(p.default) if hasattr(p.default, "items") else p.default
            value = list(value) if isinstance(value, tuple) else value
            assert value == fields[name], (function.__name__, name)
            shared += 1
    assert shared >= 2


def test_presets_load_and_tiny_is_tiny():
    from cosmobench.cli import _presets

    assert _presets("cmb") == ["bench128", "cmbml_512_1450", "default", "tiny"]
    default, tiny = load_config("cmb"), load_config("cmb", ["preset=tiny"])
    assert default == load_config("cmb", ["preset=default"])
    assert default["nside"] == 32 and default["methods"]["cmbnncs"]["epochs"] == 60
    assert tiny["nside"] == 8 and sum(tiny["simulate"]["splits"].values()) <= 8
    assert max(tiny["methods"][m]["epochs"] for m in ("cmbnncs", "unet_patch", "nilc_unet")) == 1
    bench = load_config("cmb", ["preset=bench128"])
    assert bench["methods"]["cmbnncs"] == default["methods"]["cmbnncs"]  # built on the default preset
    assert bench["simulate"]["spectra_method"] == "fast" and default["simulate"]["spectra_method"] == "camb"


def test_a_correctors_nilc_maps_are_recorded_and_reused_by_separate(tiny_copy):
    """Training a NILC corrector makes NILC's maps of its training and validation splits under `separate`'s record:
    separating `nilc` on those splits afterwards skips (the same maps, not a refusal of unrecorded files)."""
    trained = _run("train", tiny_copy, "method=nilc_regress")
    assert trained["skipped"] is False
    for split in ("Train", "Valid"):
        record = read_json(tiny_copy / "nilc" / split / "stage.json")
        assert record["status"] == "finished" and record["stage"] == "cmb.separate"
        assert _run("separate", tiny_copy, "method=nilc", f"separate.split={split}")["skipped"] is True


def test_separating_a_corrector_computes_nilc_once_and_records_it(tiny_copy, monkeypatch):
    """`cmb separate` of a NILC corrector reads the NILC maps it corrects from NILC's recorded predictions (made by
    that stage when missing): one NILC per map, not two, and the corrected map is the regression applied to the
    cached NILC map, as in training."""
    from cosmobench.cmb.dataset import CMBDataset, pred_path
    from cosmobench.cmb.methods.nilc import NILC
    from cosmobench.cmb.methods.nilc_unet import read_nilc
    from cosmobench.cmb.methods.regress import NILCRegress
    from cosmobench.core.io import read_healpix

    _run("train", tiny_copy, "method=nilc_regress")
    calls = []
    predict = NILC.predict
    monkeypatch.setattr(NILC, "predict", lambda self, obs, ch: calls.append(1) or predict(self, obs, ch))
    assert _run("separate", tiny_copy, "method=nilc_regress", "separate.split=Test")["predicted"] == 1
    assert len(calls) == 1  # NILC's own map only
    assert read_json(tiny_copy / "nilc" / "Test" / "stage.json")["status"] == "finished"
    assert _run("separate", tiny_copy, "method=nilc", "separate.split=Test")["skipped"] is True

    dataset = CMBDataset(tiny_copy)
    model = NILCRegress.load(tiny_copy / "nilc_regress" / "model")
    obs = dataset.load_obs("Test", 0, model.input_bands)
    channels = [dataset.channel(b) for b in obs]
    expected = model.correct(obs, channels, read_nilc(tiny_copy, "Test", 0, model.nilc))
    got = read_healpix(pred_path(tiny_copy, "nilc_regress", "Test", 0), dtype=np.float64)
    np.testing.assert_array_equal(got, np.atleast_2d(expected).astype(np.float32).reshape(got.shape))
    assert len(calls) == 1


def test_a_corrector_refuses_nilc_maps_of_other_settings_naming_them(tiny_copy):
    """NILC maps of the split made with other NILC settings than the corrector's are refused before its
    prediction, naming the corrector, the differing key and the command that makes them again."""
    _run("train", tiny_copy, "method=nilc_regress")
    _run("separate", tiny_copy, "method=nilc", "separate.split=Test", "methods.nilc.ilc_bias_tol=0.01")
    with pytest.raises(
        StageConflict,
        match=r"(?s)nilc_regress corrects the nilc maps of Test.*ilc_bias_tol.*"
        r"separate method=nilc separate.split=Test overwrite=true",
    ):
        _run("separate", tiny_copy, "method=nilc_regress", "separate.split=Test")
    assert not list((tiny_copy / "nilc_regress" / "Test").rglob("cmb_pred.fits"))
