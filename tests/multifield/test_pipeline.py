"""The whole multifield pipeline on a tiny simulated dataset (16^2 maps, 12 simulations per suite)."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import optuna
import pytest
import torch

from cosmobench.multifield import stages
from cosmobench.multifield.cmd import MAPS_PER_SIM, PARAM_NAMES, field_stats, sims_to_maps
from cosmobench.multifield.evaluate import recalibrate_on_valid
from cosmobench.multifield.train import load_model, model_dir, settings_from

TRAINING = {
    "params": [0, 1, 2, 3, 4, 5],
    "hidden": 1,
    "dropout": 0.0,
    "lr": 3e-3,
    "weight_decay": 1e-4,
    "epochs": 2,
    "batch_size": 16,
    "cycle_steps": 5,
    "split": [0.5, 0.25, 0.25],
    "maps_per_sim": 3,
}


@pytest.fixture(scope="module")
def trained(tiny_data, tmp_path_factory):
    out = tmp_path_factory.mktemp("mf_out")
    summary = stages.train(
        out_dir=out, data_dir=tiny_data, suite="TNGlike", fields=["Mtot", "Mgas"], training=TRAINING, seed=0
    )
    return out, summary


def test_train_stores_training_only_statistics_and_split(trained, tiny_data):
    out, summary = trained
    model, meta = load_model(summary["model_path"])
    split = {k: np.asarray(v) for k, v in meta["split"].items()}
    assert len(split["train"]) == 6 and len(split["valid"]) == 3 and len(split["test"]) == 3
    assert not set(split["train"]) & set(split["test"])
    train_maps = sims_to_maps(split["train"])
    train_maps = train_maps[np.isin(train_maps % MAPS_PER_SIM, [0, 5, 10])]  # maps_per_sim = 3: one per axis
    stats = field_stats(tiny_data, "TNGlike", ["Mtot", "Mgas"], train_maps)
    np.testing.assert_allclose(meta["stats"]["mean"], stats.mean, rtol=1e-6)
    assert meta["labels"]["log"] == [False, False, True, True, True, True]
    assert summary["epochs"] == 2 and np.isfinite(summary["best_val_loss"])
    with torch.no_grad():
        assert model(torch.zeros(2, 2, 16, 16)).shape == (2, 12)
    again = stages.train(
        out_dir=out, data_dir=tiny_data, suite="TNGlike", fields=["Mtot", "Mgas"], training=TRAINING, seed=0
    )
    assert again["model_path"] == summary["model_path"]  # finished work is skipped
    other = model_dir(out, "TNGlike", ["Mtot", "Mgas"], settings_from(TRAINING, hidden=2))
    assert other != model_dir(out, "TNGlike", ["Mtot", "Mgas"], settings_from(TRAINING, progress=True))
    assert model_dir(out, "TNGlike", ["Mtot", "Mgas"], settings_from(TRAINING)) / "model.pt" == Path(
        summary["model_path"]
    )


def test_device_data_holds_the_same_standardised_maps(tiny_data):
    from cosmobench.multifield.train import prepare_data

    host = prepare_data(tiny_data, "TNGlike", ["Mtot", "T"], settings_from(TRAINING))
    dev = prepare_data(tiny_data, "TNGlike", ["Mtot", "T"], settings_from(TRAINING, device_data=True, device="cpu"))
    assert isinstance(dev.train[0], torch.Tensor)
    np.testing.assert_allclose(dev.train[0].numpy(), host.train[0][np.arange(len(host.train[0]))])


def test_unknown_training_key_is_an_error():
    with pytest.raises(TypeError, match="valid training keys"):
        settings_from({"hiden": 4})


def test_test_stage_writes_reference_outputs(trained, tiny_data):
    out, _ = trained
    res = stages.test(
        out_dir=out, data_dir=tiny_data, suite="TNGlike", fields=["Mtot", "Mgas"], training=TRAINING, batch_size=64
    )
    folder = out / "test" / f"{model_dir(out, 'TNGlike', ['Mtot', 'Mgas'], settings_from(TRAINING)).name}_on_TNGlike"
    table = np.loadtxt(folder / "predictions.txt")
    assert table.shape == (3 * 15, 18)
    assert np.all(table[:, 12:] >= 0)
    pred = np.load(folder / "predictions.npz")
    assert pred["mu_aug"].shape == (8, 45, 6)
    np.testing.assert_allclose(table[:, :6], pred["theta"], rtol=1e-5)
    assert set(res["metrics"]) >= {"Omega_m", "sigma_8", "A_SN1"}
    assert {"r2", "rel_err", "chi2", "coverage68", "sim_r2"} <= set(res["metrics"]["Omega_m"])
    assert {"chi2_cal", "coverage68_cal", "coverage95_cal", "mean_sigma_cal"} <= set(res["metrics"]["Omega_m"])
    for lvl in (68, 95):  # band with the validation fit's noise: resamples validation and test simulations
        lo, hi = res["metrics"]["sigma_8"][f"coverage{lvl}_cal_total_ci"]
        assert 0 <= lo <= hi <= 1
    # the recalibration is fitted on the validation simulations, none of which is a test simulation
    model, meta = load_model(res["model"])
    recal, valid = recalibrate_on_valid(model, meta, tiny_data, batch_size=64)
    assert set(np.unique(valid["sim_index"])) == set(meta["split"]["valid"])
    assert not set(valid["sim_index"]) & set(pred["sim_index"])
    assert res["recalibration"]["fitted_on"] == "valid split of TNGlike" and res["recalibration"]["n_sims"] == 3
    for j, name in enumerate(PARAM_NAMES):
        assert res["recalibration"][name]["scale68"] == pytest.approx(recal.scale[0, j])
    cross = stages.test(
        out_dir=out,
        data_dir=tiny_data,
        suite="TNGlike",
        fields=["Mtot", "Mgas"],
        training=TRAINING,
        test_suite="SIMBAlike",
        batch_size=64,
    )
    assert cross["tested_on"] == "SIMBAlike" and cross["metrics"]["n_sims"] == 3


def test_search_uses_rdb_storage_and_keeps_every_trial(tiny_data, tmp_path):
    res = stages.search(
        out_dir=tmp_path,
        data_dir=tiny_data,
        suite="TNGlike",
        fields=["Mtot"],
        training=TRAINING,
        n_trials=2,
        n_startup_trials=1,
        hidden_range=[1, 2],
        prune_warmup=0,
    )
    folder = tmp_path / "search" / "TNGlike_Mtot"
    study = optuna.load_study(study_name="wd_dr_hidden_lr_o3", storage=f"sqlite:///{folder / 'study.db'}")
    assert len(study.trials) == 2
    assert all((folder / f"trial_{t.number:03d}" / "losses.csv").exists() for t in study.trials)
    best = res["best"]
    assert best["number"] == study.best_trial.number and (folder / "best.json").exists()
    assert 1 <= best["params"]["hidden"] <= 2 and 1e-5 <= best["params"]["lr"] <= 5e-3
    again = stages.search(
        out_dir=tmp_path,
        data_dir=tiny_data,
        suite="TNGlike",
        fields=["Mtot"],
        training=TRAINING,
        n_trials=2,
        n_startup_trials=1,
        hidden_range=[1, 2],
    )
    assert again["n_complete"] + again["n_pruned"] == 2  # rerun adds no trial


@pytest.mark.filterwarnings("ignore:Maximum number of epochs")
def test_robustness_fields_and_calibration(trained, tiny_data, capsys):
    out, _ = trained
    rob = stages.robustness(
        out_dir=out,
        data_dir=tiny_data,
        suites=["TNGlike", "Nbody_TNGlike"],
        fields=["Mtot"],
        training=TRAINING,
        tta=False,
    )
    assert "trained on" in capsys.readouterr().out
    assert set(rob["rel_err"]) == {"TNGlike", "Nbody_TNGlike"}
    assert all(np.isfinite(rob["rel_err"][a][b]["Omega_m"]) for a in rob["rel_err"] for b in rob["rel_err"][a])
    assert 0 <= rob["coverage95_cal"]["TNGlike"]["Nbody_TNGlike"]["sigma_8"] <= 1  # in-suite scale, other suite
    fld = stages.fields(out_dir=out, data_dir=tiny_data, suite="TNGlike", fields=["Mtot", "Mgas"], training=TRAINING)
    assert set(fld["fractions"]) == {"Mtot", "Mgas", "Mtot+Mgas"}
    assert fld["fractions"]["Mtot+Mgas"] == pytest.approx(1.0)
    assert (out / "fields" / "fields_TNGlike_Mtot_Mgas.png").exists()
    # robustness and fields share the Mtot model of TNGlike (same settings): three models in all, not four
    assert len([p for p in (out / "models").iterdir() if re.fullmatch(r"TNGlike_Mtot_[0-9a-f]{10}", p.name)]) == 1
    cal = stages.calibrate(
        out_dir=out,
        data_dir=tiny_data,
        suite="TNGlike",
        fields=["Mtot", "Mgas"],
        training=TRAINING,
        npe=True,
        npe_epochs=20,
        n_samples=50,
        tta=False,
    )
    assert 0 <= cal["gaussian"]["Omega_m"]["coverage68_per_sim"] <= 1
    recal = cal["gaussian_recalibrated"]
    assert 0 <= recal["Omega_m"]["coverage95_per_map"] <= 1 and recal["recalibration"]["n_sims"] == 3
    assert set(recal["recalibration"]["sigma_8"]) == {"scale68", "scale95", "exponent"}
    assert (
        "tarp_per_map" in cal["npe"]
        and (out / "calibration" / model_dir(out, "TNGlike", ["Mtot", "Mgas"], settings_from(TRAINING)).name).exists()
    )
