"""What the multifield pipeline writes, on ``multifield run preset=tiny`` (16^2 maps, 12 simulations per suite)."""

from __future__ import annotations

import json

import numpy as np
import optuna
import pytest
import torch

from cosmobench.cli import run_stage
from cosmobench.multifield.cmd import MAPS_PER_SIM, PARAM_NAMES, field_stats, sims_to_maps
from cosmobench.multifield.evaluate import recalibrate_on_valid
from cosmobench.multifield.train import load_model, prepare_data, training_settings

TINY = {"hidden": 1, "dropout": 0.0, "epochs": 1, "batch_size": 16, "cycle_steps": 5}
TINY_SPLIT = {"split": [0.5, 0.25, 0.25], "maps_per_sim": 3}


def _summary(root, folder) -> dict:
    return json.loads((root / folder / "stage.json").read_text())["summary"]


def test_train_stores_training_only_statistics_and_split(tiny_run):
    summary = _summary(tiny_run, "model")
    model, meta = load_model(tiny_run / "model" / "model.pt")
    split = {k: np.asarray(v) for k, v in meta["split"].items()}
    assert len(split["train"]) == 6 and len(split["valid"]) == 3 and len(split["test"]) == 3
    assert not set(split["train"]) & set(split["test"])
    train_maps = sims_to_maps(split["train"])
    train_maps = train_maps[np.isin(train_maps % MAPS_PER_SIM, [0, 5, 10])]  # maps_per_sim = 3: one per axis
    stats = field_stats(tiny_run / "data", "TNGlike", ["Mtot", "Mgas"], train_maps)
    np.testing.assert_allclose(meta["stats"]["mean"], stats.mean, rtol=1e-6)
    assert meta["labels"]["log"] == [False, False, True, True, True, True]
    assert summary["epochs"] == 1 and np.isfinite(summary["best_val_loss"])
    assert "seconds" not in json.dumps(meta) and "data_dir" not in meta  # model.pt: no timings, no paths
    with torch.no_grad():
        assert model(torch.zeros(2, 2, 16, 16)).shape == (2, 12)
    seeds = np.loadtxt(tiny_run / "data" / "seeds_LH_TNGlike.txt", dtype=np.int64)
    assert seeds.shape == (12, 2) and len(set(seeds[:, 1])) == 12  # one recorded seed per simulation


def test_device_data_holds_the_same_standardised_maps(tiny_run):
    settings = training_settings(TINY, **TINY_SPLIT)
    host = prepare_data(tiny_run / "data", "TNGlike", ["Mtot", "Mgas"], settings)
    dev = prepare_data(tiny_run / "data", "TNGlike", ["Mtot", "Mgas"], settings, device_data=True, device="cpu")
    assert isinstance(dev.train[0], torch.Tensor)
    np.testing.assert_allclose(dev.train[0].numpy(), host.train[0][np.arange(len(host.train[0]))])


def test_unknown_training_key_is_an_error():
    with pytest.raises(TypeError, match="valid settings"):
        training_settings({"hiden": 4})


def test_test_stage_writes_reference_outputs(tiny_run, run_copy):
    res = _summary(tiny_run, "test/train_on_TNGlike_test_tta")
    folder = tiny_run / "test" / "train_on_TNGlike_test_tta"
    table = np.loadtxt(folder / "predictions.txt")
    assert table.shape == (3 * 15, 18)
    assert np.all(table[:, 12:] >= 0)
    pred = np.load(folder / "predictions.npz")
    assert pred["mu_aug"].shape == (8, 45, 6)
    np.testing.assert_allclose(table[:, :6], pred["theta"], rtol=1e-5)
    assert set(res["metrics"]) >= {"Omega_m", "sigma_8"}
    assert {"r2", "rel_err", "chi2", "coverage68", "sim_r2"} <= set(res["metrics"]["Omega_m"])
    assert {"chi2_cal", "coverage68_cal", "coverage95_cal", "mean_sigma_cal"} <= set(res["metrics"]["Omega_m"])
    for lvl in (68, 95):  # band with the validation fit's noise: resamples validation and test simulations
        lo, hi = res["metrics"]["sigma_8"][f"coverage{lvl}_cal_total_ci"]
        assert 0 <= lo <= hi <= 1
    # the recalibration is fitted on the validation simulations, none of which is a test simulation
    model, meta = load_model(tiny_run / "model" / "model.pt")
    recal, valid = recalibrate_on_valid(model, meta, tiny_run / "data", batch_size=64)
    assert set(np.unique(valid["sim_index"])) == set(meta["split"]["valid"])
    assert not set(valid["sim_index"]) & set(pred["sim_index"])
    assert res["recalibration"]["fitted_on"] == "valid split of TNGlike" and res["recalibration"]["n_sims"] == 3
    for j, name in enumerate(PARAM_NAMES[:2]):
        assert res["recalibration"][name]["scale68"] == pytest.approx(recal.scale[0, j])
    cross = run_stage("multifield", "test", ("preset=tiny", f"out_dir={run_copy}", "test.test_suite=SIMBAlike"))
    assert cross["tested_on"] == "SIMBAlike" and cross["metrics"]["n_sims"] == 3
    assert (run_copy / "test" / "train_on_SIMBAlike_test_tta" / "metrics.json").is_file()


def test_search_uses_rdb_storage_and_keeps_every_trial(tiny_run):
    folder = tiny_run / "search"
    res = _summary(tiny_run, "search")
    study = optuna.load_study(study_name="wd_dr_hidden_lr_o3", storage=f"sqlite:///{folder / 'study.db'}")
    assert len(study.trials) == 2 == res["n_complete"] + res["n_pruned"]
    assert all((folder / f"trial_{t.number:03d}" / "losses.csv").exists() for t in study.trials)
    best = res["best"]
    assert best["number"] == study.best_trial.number and (folder / "best.json").exists()
    assert 1 <= best["params"]["hidden"] <= 2 and 1e-5 <= best["params"]["lr"] <= 5e-3


def test_robustness_fields_calibration_and_report(tiny_run):
    rob = _summary(tiny_run, "robustness")
    assert "trained on" in rob["table"]
    assert set(rob["rel_err"]) == {"TNGlike", "SIMBAlike"}
    assert all(np.isfinite(rob["rel_err"][a][b]["Omega_m"]) for a in rob["rel_err"] for b in rob["rel_err"][a])
    assert 0 <= rob["coverage95_cal"]["TNGlike"]["SIMBAlike"]["sigma_8"] <= 1  # in-suite scale, other suite
    assert {p.name for p in (tiny_run / "robustness" / "models").iterdir()} == {"TNGlike_Mtot", "SIMBAlike_Mtot"}
    fld = _summary(tiny_run, "fields")
    assert set(fld["fractions"]) == {"Mtot", "Mgas", "Mtot+Mgas"}
    assert fld["fractions"]["Mtot+Mgas"] == pytest.approx(1.0)
    assert (tiny_run / "fields" / "fields_TNGlike_Mtot_Mgas.png").exists()
    cal = _summary(tiny_run, "calibration")
    assert 0 <= cal["gaussian"]["Omega_m"]["coverage68_per_sim"] <= 1
    recal = cal["gaussian_recalibrated"]
    assert 0 <= recal["Omega_m"]["coverage95_per_map"] <= 1 and recal["recalibration"]["n_sims"] == 3
    assert set(recal["recalibration"]["sigma_8"]) == {"scale68", "scale95", "exponent"}
    assert "tarp_per_map" in cal["npe"] and (tiny_run / "calibration" / "calibration.png").exists()
    report = (tiny_run / "report.md").read_text()
    for link in ("test/train_on_TNGlike_test_tta/predictions.png", "calibration/calibration.png"):
        assert f"]({link})" in report and (tiny_run / link).is_file()
