"""A PySM split beside synthetic splits, a model applied to another dataset root, and reports across roots.

Dataset C: Train/Valid/Test synthetic and TestPySM (PySM s1 + f1 from small templates written here; one PySM
model class keeps the numba compilation to seconds), cmbnncs trained on its synthetic splits, every test split
separated, evaluated and reported in one leaderboard. Dataset B: TestOOD only (no training split), separated with
C's model (``separate.model_dir``), then reported beside C (``compare.results_dirs``).
"""

from __future__ import annotations

import csv
from types import SimpleNamespace

import healpy as hp
import numpy as np
import pytest
from astropy.utils.data import conf

from cosmobench.cli import main
from cosmobench.cmb.dataset import CMBDataset
from cosmobench.cmb.separate import check_model
from cosmobench.core.io import read_json
from cosmobench.core.stage import identity
from cosmobench.sky import sht
from cosmobench.sky.pysm_backend import pysm_template_files

PRESETS = ["s1", "f1"]
PYSM_SPLIT = "simulate.split_foregrounds={TestPySM: {backend: pysm3, presets: [s1, f1]}}"
TINY = ("preset=tiny", "run.methods=[hilc,cmbnncs]")


def cmb(*args: str) -> int:
    """``cosmobench cmb <args>`` with the tiny preset, in-process; returns the exit code."""
    return main(["cmb", *args, *TINY])


def write_templates(folder, nside: int) -> None:
    """Random templates for every file PySM reads for :data:`PRESETS` (spectral indices near -3, amplitudes > 0)."""
    rng = np.random.default_rng(1)
    for name in pysm_template_files(PRESETS, nside):
        path = folder / name
        path.parent.mkdir(parents=True, exist_ok=True)
        base, spread = (-3.0, 0.1) if "beta" in name else (30.0, 5.0)
        hp.write_map(str(path), base + spread * rng.standard_normal(sht.npix(nside)), dtype=np.float64)


@pytest.fixture(scope="module")
def pysm_data(tmp_path_factory):
    """PYSM_LOCAL_DATA holding the templates, and no internet for astropy (PySM reads only these files)."""
    folder = tmp_path_factory.mktemp("pysm_data")
    write_templates(folder, 8)
    with pytest.MonkeyPatch.context() as mp, conf.set_temp("allow_internet", False):
        mp.setenv("PYSM_LOCAL_DATA", str(folder))
        yield folder


@pytest.fixture(scope="module")
def with_pysm(pysm_data, tmp_path_factory):
    """Dataset C, trained, separated, evaluated and reported (Test and TestPySM side by side)."""
    root = tmp_path_factory.mktemp("c") / "C"
    splits = "simulate.splits={Train: 1, Valid: 1, Test: 1, TestPySM: 2}"
    assert cmb("simulate", splits, PYSM_SPLIT, f"out_dir={root}") == 0
    assert cmb("train", "method=cmbnncs", f"out_dir={root}") == 0
    for split in ("Test", "TestPySM"):
        for method in ("hilc", "cmbnncs"):
            assert cmb("separate", f"method={method}", f"separate.split={split}", f"out_dir={root}") == 0
        assert cmb("evaluate", f"evaluate.split={split}", f"out_dir={root}") == 0
    assert cmb("compare", f"out_dir={root}") == 0
    return root


def _rows(report):
    with open(report / "leaderboard.csv", newline="") as fh:
        return list(csv.DictReader(fh))


def test_pysm_split_beside_synthetic_splits(with_pysm):
    ds = CMBDataset(with_pysm)
    record = ds.manifest["split_foregrounds"]["TestPySM"]
    assert record == {"model": "pysm3:s1,f1", "backend": "pysm3", "presets": PRESETS, "options": {}}
    assert ds.foreground_model("Train") == "default" and ds.foreground_model("TestPySM") == "pysm3:s1,f1"
    params = [ds.load_params("TestPySM", i)["foregrounds"] for i in (0, 1)]
    assert params[0]["backend"] == "pysm3" and params[0]["pysm_presets"] == PRESETS and params[0]["frozen"]
    # one fixed sky: the same foregrounds in both simulations, another CMB and noise
    np.testing.assert_array_equal(ds.load_foreground("TestPySM", 0), ds.load_foreground("TestPySM", 1))
    assert not np.allclose(ds.load_obs("TestPySM", 0, ["100"])["100"], ds.load_obs("TestPySM", 1, ["100"])["100"])
    assert not np.allclose(ds.load_foreground("Test", 0), ds.load_foreground("TestPySM", 0))

    report = with_pysm / "report"
    rows = _rows(report)
    assert {(r["split"], r["foreground_model"]) for r in rows} == {("Test", "default"), ("TestPySM", "pysm3:s1,f1")}
    assert {r["method"] for r in rows} == {"hilc", "cmbnncs"} and {r["dataset"] for r in rows} == {str(with_pysm)}
    board = (report / "leaderboard.md").read_text()
    assert "RMSE Test, default (μK)" in board and "RMSE TestPySM, pysm3:s1,f1 (μK)" in board
    text = (report / "report.md").read_text()
    assert "not recorded" not in text and "foreground model pysm3:s1,f1, one fixed sky" in text
    assert "PySM gives one fixed sky: every simulation of TestPySM has the same foregrounds" in text


def test_pysm_split_needs_presets_and_templates(tmp_path, pysm_data, monkeypatch, capsys):
    out, split = tmp_path / "bad", "simulate.splits={Test: 1, TestPySM: 1}"
    for bad in ("{backend: pysm3}", "{backend: pysm3, preset: [d1]}", "{backend: pysm, presets: [d1]}"):
        assert cmb("simulate", split, f"simulate.split_foregrounds={{TestPySM: {bad}}}", f"out_dir={out}") == 1
        err = capsys.readouterr().err
        assert "split_foregrounds.TestPySM" in err and "{backend: pysm3, presets: [d1, s1, f1, a1]}" in err
    monkeypatch.setenv("PYSM_LOCAL_DATA", str(tmp_path / "empty"))
    assert cmb("simulate", split, PYSM_SPLIT, f"out_dir={out}") == 1
    assert "PySM3 templates for presets ['s1', 'f1']" in capsys.readouterr().err
    assert not out.exists()  # every one refused before any write


@pytest.fixture(scope="module")
def test_only(with_pysm, tmp_path_factory):
    """Dataset B: TestOOD only (the `alt` model), no training split."""
    root = tmp_path_factory.mktemp("b") / "B"
    splits = "simulate.splits={TestOOD: 1}"
    assert cmb("simulate", splits, f"out_dir={root}") == 0
    return root


def test_train_on_a_dataset_without_training_split_is_refused(test_only, capsys):
    assert cmb("train", "method=cmbnncs", "simulate.splits={TestOOD: 1}", f"out_dir={test_only}") == 1
    err = capsys.readouterr().err
    assert "no simulation in the training split 'Train'" in err and "separate.model_dir=<root A>/cmbnncs/model" in err
    assert not (test_only / "cmbnncs").exists()  # no folder left behind
    assert cmb("separate", "method=cmbnncs", "separate.split=TestOOD", f"out_dir={test_only}") == 1
    err = capsys.readouterr().err
    assert "the trained cmbnncs model is not in" in err and "separate.model_dir=<root A>/cmbnncs/model" in err
    assert not (test_only / "cmbnncs").exists()


def test_model_from_another_root_and_compare_across_roots(with_pysm, test_only, tmp_path):
    b = test_only
    model = with_pysm / "cmbnncs" / "model"
    assert cmb("separate", "method=hilc", "separate.split=TestOOD", f"out_dir={b}") == 0
    assert cmb("separate", "method=hilc", "separate.split=TestOOD", f"separate.model_dir={model}", f"out_dir={b}") == 1
    assert (
        cmb("separate", "method=cmbnncs", "separate.split=TestOOD", f"separate.model_dir={model}", f"out_dir={b}") == 0
    )
    record = read_json(b / "cmbnncs" / "TestOOD" / "stage.json")
    assert record["inputs"]["model"] == identity(read_json(model / "stage.json"))  # the model's identity is the input
    assert not (b / "cmbnncs" / "model").exists()
    other = SimpleNamespace(root="D", nside=16, bands=["100", "143"], channel=CMBDataset(b).channel)
    with pytest.raises(ValueError, match=r"trained at nside 8, the dataset is nside 16; it reads bands \['217'\]"):
        check_model(other, "cmbnncs", model)  # what separate checks before any work
    assert cmb("evaluate", "evaluate.split=TestOOD", f"out_dir={b}") == 0

    out = tmp_path / "both"
    dirs = f"compare.results_dirs=[{with_pysm / 'results'},{b / 'results'}]"
    assert cmb("compare", dirs, f"out_dir={out}") == 0
    rows = _rows(out / "report")
    assert {(r["dataset"], r["split"], r["foreground_model"]) for r in rows} == {
        (str(with_pysm), "Test", "default"),
        (str(with_pysm), "TestPySM", "pysm3:s1,f1"),
        (str(b), "TestOOD", "alt"),
    }
    board = (out / "report" / "leaderboard.md").read_text()
    for column in ("RMSE C/Test, default", "RMSE C/TestPySM, pysm3:s1,f1", "RMSE B/TestOOD, alt", "B/TestOOD / C/Test"):
        assert column in board
    inputs = read_json(out / "report" / "stage.json")["inputs"]
    assert set(inputs) == {"results C/Test", "results C/TestPySM", "results B/TestOOD"}
    assert cmb("compare", f"compare.results_dirs=[{b / 'results'},{b / 'results'}]", f"out_dir={tmp_path}/x") == 1
