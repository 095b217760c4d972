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
    assert cross["baselines"]["ridge"]["n_sims"] == 3 and "coverage68_cal" in cross["baselines"]["ridge"]["sigma_8"]
    assert (run_copy / "test" / "train_on_SIMBAlike_test_tta" / "metrics.json").is_file()


def test_test_stage_reports_the_baselines_with_the_same_metrics(tiny_run):
    folder = tiny_run / "test" / "train_on_TNGlike_test_tta"
    res = _summary(tiny_run, "test/train_on_TNGlike_test_tta")
    keys = {"r2", "rel_err", "chi2", "coverage68", "coverage95", "chi2_cal", "coverage68_cal", "coverage95_cal"}
    assert set(res["baselines"]) == {"ridge", "baryon_fraction"}  # fields Mtot, Mgas: both apply
    assert keys <= set(res["baselines"]["ridge"]["sigma_8"]) and keys <= set(res["baselines"]["ridge"]["Omega_m"])
    assert keys <= set(res["baselines"]["baryon_fraction"]["Omega_m"])
    assert "sigma_8" not in res["baselines"]["baryon_fraction"]  # it infers Omega_m only
    # the same test maps as the CNN's
    cnn, ridge = np.load(folder / "predictions.npz"), np.load(folder / "predictions_ridge.npz")
    assert sorted(cnn["map_index"]) == sorted(ridge["map_index"])
    assert res["baselines"]["ridge"]["n_maps"] == res["metrics"]["n_maps"] == 45
    # the baryon fraction estimator is Omega_b <Mtot>/<Mgas> of each map
    bf = np.load(folder / "predictions_baryon_fraction.npz")
    mtot = np.load(tiny_run / "data" / "Maps_Mtot_TNGlike_LH_z=0.00.npy")[bf["map_index"]].mean(axis=(1, 2))
    mgas = np.load(tiny_run / "data" / "Maps_Mgas_TNGlike_LH_z=0.00.npy")[bf["map_index"]].mean(axis=(1, 2))
    np.testing.assert_allclose(bf["mu"][:, 0], 0.049 * mtot / mgas, rtol=1e-5)
    rows = (folder / "metrics.csv").read_text().splitlines()
    assert rows[0].startswith("# r2: R²") and rows[1].startswith("method,parameter,r2,")
    assert {r.split(",")[0] for r in rows[2:]} == {"cnn", "ridge", "baryon_fraction"} and len(rows) == 2 + 5
    ridge_om = next(r for r in rows if r.startswith("ridge,Omega_m,")).split(",")
    assert float(ridge_om[rows[1].split(",").index("rel_err")]) == pytest.approx(
        res["baselines"]["ridge"]["Omega_m"]["rel_err"]
    )


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
    assert "| method | trained on | tested on |" in rob["table"] and "| ridge | TNGlike | SIMBAlike |" in rob["table"]
    assert rob["methods"] == ["cnn", "ridge"]  # fields Mtot: no baryon fraction
    for method in ("cnn", "ridge"):
        rel = rob["rel_err"][method]
        assert set(rel) == {"TNGlike", "SIMBAlike"} and all(set(rel[a]) == {"TNGlike", "SIMBAlike"} for a in rel)
        assert all(np.isfinite(rel[a][b]["Omega_m"]) for a in rel for b in rel[a])
        assert 0 <= rob["coverage95_cal"][method]["TNGlike"]["SIMBAlike"]["sigma_8"] <= 1  # in-suite scale
    assert {p.name for p in (tiny_run / "robustness" / "models").iterdir()} == {"TNGlike_Mtot", "SIMBAlike_Mtot"}
    fld = _summary(tiny_run, "fields")
    assert set(fld["fractions"]) == {"Mtot", "Mgas", "Mtot+Mgas"}
    assert fld["fractions"]["Mtot+Mgas"] == pytest.approx(1.0)
    assert (tiny_run / "fields" / "fields_TNGlike_Mtot_Mgas.png").exists()
    assert set(fld["test_metrics"]["Mtot+Mgas"]) == {"cnn", "ridge", "baryon_fraction"}
    assert (
        set(fld["test_metrics"]["Mtot"]) == {"cnn", "ridge"} and "r2" in fld["test_metrics"]["Mtot"]["ridge"]["sigma_8"]
    )
    cal = _summary(tiny_run, "calibration")
    assert 0 <= cal["gaussian"]["Omega_m"]["coverage68_per_sim"] <= 1
    recal = cal["gaussian_recalibrated"]
    assert 0 <= recal["Omega_m"]["coverage95_per_map"] <= 1 and recal["recalibration"]["n_sims"] == 3
    assert set(recal["recalibration"]["sigma_8"]) == {"scale68", "scale95", "exponent"}
    assert "tarp_per_map" in cal["npe"] and (tiny_run / "calibration" / "calibration.png").exists()
    ridge = cal["baselines"]["ridge"]
    assert 0 <= ridge["gaussian_recalibrated"]["sigma_8"]["coverage68_per_map"] <= 1
    assert set(cal["baselines"]["baryon_fraction"]["gaussian"]) >= {"Omega_m", "tarp_per_map"}
    report = (tiny_run / "report.md").read_text()
    links = ("test/train_on_TNGlike_test_tta/predictions.png", "calibration/calibration.png")
    for link in (*links, "robustness/robustness_Mtot.png", "fields/fields_TNGlike_Mtot_Mgas.png"):
        assert f"]({link})" in report and (tiny_run / link).is_file()
    for row in ("| cnn | Omega_m |", "| ridge | sigma_8 |", "| baryon_fraction | Omega_m |", "| ridge | TNGlike |"):
        assert row in report


def test_run_trains_the_other_seeds_and_aggregates_them(tiny_run):
    seeds = json.loads((tiny_run / "seeds.json").read_text())
    assert seeds["seeds"] == [0, 1, 2]
    for k in (1, 2):
        _, meta = load_model(tiny_run / "seeds" / f"seed_{k}" / "model" / "model.pt")
        assert meta["seed"] == k
        assert (tiny_run / "seeds" / f"seed_{k}" / "test" / "train_on_TNGlike_test_tta" / "metrics.json").is_file()
    values = seeds["rows"]["cnn"]["sigma_8"]["rel_err"]["values"]
    assert len(values) == 3 and len(set(values)) == 3  # three different trainings
    assert values[0] == _summary(tiny_run, "test/train_on_TNGlike_test_tta")["metrics"]["sigma_8"]["rel_err"]
    assert seeds["rows"]["ridge"]["sigma_8"]["rel_err"]["std"] == 0
