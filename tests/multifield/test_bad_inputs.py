"""Bad inputs to ``cosmobench multifield``: each is refused with its exit code and a message naming the problem and
the fix, before any work or write (every file under the run and data folders keeps its checksum). Issue 9,
findings 2, 3, 5, 6 and 7."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

TINY = ("preset=tiny", "threads=1")


def _params(data, edit):
    """Rewrite params_LH_TNGlike.txt through ``edit(array) -> array or text``."""
    path = data / "params_LH_TNGlike.txt"
    new = edit(np.loadtxt(path))
    if isinstance(new, str):
        path.write_text(new)
    else:
        np.savetxt(path, new)


def _set(row, col, value):
    def edit(p):
        p[row, col] = value
        return p

    return lambda data: _params(data, edit)


def _maps(field, edit):
    def setup(data):
        path = data / f"Maps_{field}_TNGlike_LH_z=0.00.npy"
        np.save(path, edit(np.load(path)))

    return setup


def _pixel(value):
    def edit(m):
        m[17, 3, 4] = value
        return m

    return edit


# (id, setup of a copy of the dataset or None, stage and overrides, exit code, fragments the message must hold)
# Placeholders: {run} the finished tiny run (copy), {data} the edited dataset, {out} an empty run folder.
CASES = [
    # finding 3: parameter files
    ("params-nan", _set(2, 0, np.nan), ["train"], 1, ["params_LH_TNGlike.txt", "row 3", "nan", "Omega_m", "fix"]),
    ("params-inf", _set(5, 1, np.inf), ["train"], 1, ["params_LH_TNGlike.txt", "row 6", "inf", "sigma_8"]),
    ("params-omega-m-negative", _set(0, 0, -7.5), ["train"], 1, ["Omega_m = -7.5", "prior", "[0.1, 0.5]", "fix"]),
    ("params-astro-outside-prior", _set(4, 3, 40.0), ["train"], 1, ["A_AGN1 = 40", "[0.25, 4]"]),
    ("params-5-columns", lambda d: _params(d, lambda p: p[:, :5]), ["train"], 1, ["5 columns", "expected 6"]),
    ("params-7-columns", lambda d: _params(d, lambda p: np.c_[p, p[:, :1]]), ["train"], 1, ["7 columns", "6"]),
    ("params-text", lambda d: _params(d, lambda p: "0.3 0.8 1 1 1 1\nomega sigma\n"), ["train"], 1, ["not a table"]),
    (
        "params-missing",
        lambda d: (d / "params_LH_TNGlike.txt").unlink(),
        ["train"],
        1,
        ["does not exist", "multifield simulate"],
    ),
    # finding 3: maps
    ("map-nan", _maps("Mgas", _pixel(np.nan)), ["train"], 1, ["Maps_Mgas", "1 non-finite", "map 17", "replace"]),
    ("map-inf", _maps("Mtot", _pixel(np.inf)), ["train"], 1, ["Maps_Mtot", "non-finite", "simulation 1"]),
    ("map-zero", _maps("Mgas", _pixel(0.0)), ["train"], 1, ["Maps_Mgas", "zero or negative", "log10"]),
    ("map-wrong-size", _maps("Mgas", lambda m: np.tile(m, (1, 2, 2))), ["train"], 1, ["32x32", "16x16", "same"]),
    ("map-wrong-count", _maps("Mtot", lambda m: m[:-15]), ["train"], 1, ["165 maps", "expected 180", "replace"]),
    ("map-float64", _maps("Mtot", lambda m: m.astype(np.float64)), ["train"], 1, ["float64", "float32"]),
    ("map-not-square", _maps("Mtot", lambda m: m[:, :, :8]), ["train"], 1, ["(180, 16, 8)", "replace"]),
    ("map-missing", lambda d: (d / "Maps_Mgas_TNGlike_LH_z=0.00.npy").unlink(), ["train"], 1, ["no map file"]),
    # finding 7: storage URLs, with no traceback
    (
        "storage-sqlite-folder",
        None,
        ["search", "search.storage=sqlite:////nonexistent/dir/x.db"],
        1,
        ["search.storage", "/nonexistent/dir", "does not exist", "storage=null"],
    ),
    (
        "storage-no-driver",
        None,
        ["search", "search.storage=postgresql://"],
        1,
        ["search.storage", "driver is not installed", "storage=null"],
    ),
    (
        "storage-unknown-dialect",
        None,
        ["search", "search.storage=nosuch://x"],
        1,
        ["search.storage", "not a usable SQLAlchemy URL", "storage=null"],
    ),
    ("storage-memory", None, ["search", "search.storage=sqlite://"], 1, ["in-memory", "storage=null"]),
    (
        "run-checks-every-stage-first",
        None,
        ["run", "out_dir={out}", "search.storage=nosuch://x"],
        1,
        ["search.storage", "nosuch"],
    ),
    # finding 2: changed settings over finished results are refused, naming the key
    ("test-other-recalibration", None, ["test", "test.recalibration=chi2"], 1, ["recalibration", "overwrite=true"]),
    ("train-other-epochs", None, ["train", "training.epochs=3"], 1, ["training.epochs", "overwrite=true"]),
    ("simulate-other-seed", None, ["simulate", "seed=7"], 1, ["seed: 0 -> 7", "overwrite=true", "another out_dir"]),
    # consumers of a missing model name the command that makes it
    (
        "test-without-model",
        None,
        ["test", "out_dir={out}", "data_dir={run}/data"],
        1,
        ["trained model", "cosmobench multifield train out_dir="],
    ),
    (
        "calibrate-search-not-run",
        None,
        ["calibrate", "out_dir={out}", "data_dir={run}/data", "calibrate.source=search"],
        1,
        ["search", "cosmobench multifield search out_dir="],
    ),
    # settings checked before any work
    ("training-epochs-zero", None, ["train", "training.epochs=0"], 1, ["training.epochs", ">= 1"]),
    ("training-split", None, ["train", "training.split=[0.5,0.5,0.5]"], 1, ["training.split", "summing to 1"]),
    ("test-split", None, ["test", "test.split=nosuch"], 1, ["test.split", "valid"]),
    ("test-source", None, ["test", "test.source=nosuch"], 1, ["test.source", "search"]),
    ("recalibration", None, ["calibrate", "recalibration=nosuch"], 1, ["recalibration", "conformal"]),
    ("fields-strategy", None, ["fields", "fields.strategy=nosuch"], 1, ["fields.strategy", "greedy"]),
    ("robustness-one-suite", None, ["robustness", "robustness.suites=[TNGlike]"], 1, ["at least two suites"]),
    (
        "robustness-missing-field",
        None,
        ["robustness", "robustness.suites=[TNGlike,SIMBAlike]", "robustness.fields=[T]"],
        1,
        ["no maps of", "robustness.fields"],
    ),
    ("simulate-npix", None, ["simulate", "simulate.npix=20", "data_dir={out}"], 1, ["power of two"]),
    ("simulate-suite", None, ["simulate", "simulate.suites=[Nosuch]", "data_dir={out}"], 1, ["Nosuch", "TNGlike"]),
    ("simulate-n-sims", None, ["simulate", "simulate.n_sims=2", "data_dir={out}"], 1, ["n_sims", ">= 3"]),
    # finding 5: size guard
    (
        "simulate-too-large",
        None,
        ["simulate", "simulate.n_sims=100000000", "simulate.npix=256", "data_dir={out}"],
        1,
        ["GB", "free", "force=true"],
    ),
    ("simulate-foreign-files", None, ["simulate", "data_dir={run}/test"], 1, ["no stage record", "overwrite=true"]),
    # configuration errors
    ("unknown-key", None, ["train", "train.nosuch=1"], 2, ["unknown configuration key", "train.nosuch"]),
    (
        "unknown-training-key",
        None,
        ["train", "training.hiden=4"],
        2,
        ["training.hiden", "cosmobench multifield config"],
    ),
    ("unknown-preset", None, ["train", "preset=nosuch"], 2, ["preset", "default", "reference", "tiny"]),
    ("bad-override-syntax", None, ["train", "seed"], 2, ["key=value"]),
    ("unknown-stage", None, ["nosuch"], 2, ["unknown stage", "calibrate"]),
]


@pytest.fixture(scope="module")
def run(tiny_run, tmp_path_factory):
    """A copy of the tiny run that every case must leave as it is."""
    return shutil.copytree(tiny_run, tmp_path_factory.mktemp("mf_bad") / "run")


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_bad_input_is_refused_and_changes_nothing(case, run, tmp_path, cli, snapshot):
    _, setup, args, code, fragments = case
    data, out = tmp_path / "data", tmp_path / "out"
    extra = []
    if setup is not None:
        shutil.copytree(run / "data", data, ignore=shutil.ignore_patterns("stage.json"))  # as real CMD files
        setup(data)
        extra = [f"data_dir={data}", f"out_dir={out}"]
    args = [a.format(run=run, out=out) for a in args]
    stage, overrides = args[0], args[1:]
    before = (snapshot(run), snapshot(tmp_path))
    got, err = cli("multifield", stage, *TINY, f"out_dir={run}", *extra, *overrides)
    assert got == code, err
    for fragment in fragments:
        assert fragment in err
    assert "Traceback" not in err and "unexpected" not in err
    assert (snapshot(run), snapshot(tmp_path)) == before


def test_catalogue_size():
    assert len(CASES) >= 20


def test_test_split_and_tta_rerun_is_a_new_result_and_keeps_the_earlier_one(run, cli, snapshot):
    """Finding 2: `multifield test test.split=valid test.tta=false` after a test run returned the earlier metrics."""
    before = snapshot(run)
    code, err = cli("multifield", "test", *TINY, f"out_dir={run}", "test.split=valid", "test.tta=false")
    assert code == 0, err
    after = snapshot(run)
    assert {k: after[k] for k in before} == before  # every earlier file unchanged
    new = json.loads((run / "test" / "train_on_TNGlike_valid_notta" / "metrics.json").read_text())
    old = json.loads((run / "test" / "train_on_TNGlike_test_tta" / "metrics.json").read_text())
    assert (new["split"], new["tta"], old["split"], old["tta"]) == ("valid", False, "test", True)
    assert new["metrics"] != old["metrics"]
