"""The bmodes stages end to end on a tiny problem, their config section and their rerun behaviour."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from cosmobench.bmodes import stages
from cosmobench.bmodes.train import SpectrumTransform, load_score_model


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory, no_camb):
    out = str(tmp_path_factory.mktemp("bmodes"))
    config = {
        "simulate": {
            "out_dir": out,
            "r_test": [0.0, 0.01],
            "n_test": 8,
            "n_train": 256,
            "n_val": 64,
            "n_train_per_r": 5,
            "fg_fraction": 0.0,
            "n_fg_mc": 0,
            "chunk": 64,
            "progress": False,
        },
        # a small network, trained just enough that its reverse process does not blow up
        "train": {
            "out_dir": out,
            "sde": {"name": "vp"},
            "hidden_dim": 64,
            "embed_dim": 16,
            "num_layers": 3,
            "epochs": 60,
            "batch_size": 32,
            "lr": 3e-3,
            "warmup_steps": 2,
            "progress": False,
        },
        "sample": {
            "out_dir": out,
            "modes": ["conditional", "prototype"],
            "n_steps": 50,
            "n_draws": 3,
            "n_prior_check": 40,
            "trajectory_every": 5,
            "progress": False,
        },
        "infer": {"out_dir": out, "n_per_draw": 2},
    }
    result = stages.run(config)
    return out, config, result


def test_pipeline_writes_everything(tiny_run):
    from pathlib import Path

    out, config, result = tiny_run
    root = Path(out)
    for name in (
        "dl_gt_train.npy",
        "dl_noisy_val.npy",
        "r_train.npy",
        "dl_gt_r0.01.npy",
        "dl_noisy_r0.npy",
        "dl_train_r0.01.npy",
        "metadata.json",
        "model_spectra.json",
    ):
        assert (root / "data" / name).exists(), name
    assert np.load(root / "data" / "dl_gt_train.npy").shape == (256, 30)
    val, test = np.load(root / "data" / "dl_noisy_val_r0.01.npy"), np.load(root / "data" / "dl_noisy_r0.01.npy")
    assert val.shape == test.shape == (8, 30) and not np.allclose(val, test)  # validation sets: own streams
    assert np.load(root / "data" / "dl_train_r0.01.npy").shape == (5, 30)
    r = np.load(root / "data" / "r_train.npy")
    assert r.min() >= 0 and r.max() <= 0.02
    for name in ("model.pt", "training_loss.npy", "history.csv", "loss.png"):
        assert (root / "model" / name).exists(), name
    recorded = torch.load(root / "model" / "model.pt", weights_only=False)["config"]["train"]
    assert recorded["hidden_dim"] == 64 and recorded["p_uncond"] == 0.2  # given, and defaulted, settings both kept
    sub = root / "samples" / "test" / "conditional" / "r0.01"
    assert np.load(sub / "denoised.npy").shape == (8, 30)
    assert np.load(sub / "draws.npy").shape == (8, 3, 30)
    for name in ("spectra.png", "trajectories.png", "trajectory.npz", "metrics.json"):
        assert (sub / name).exists(), name
    assert (root / "samples" / "test" / "prototype" / "r0" / "denoised.npy").exists()
    assert (root / "infer" / "test" / "r_table.md").exists() and (root / "report.md").exists()
    metrics = stages.sample(**config["sample"])["results"]["conditional/r0.01"]
    for est in (
        "observed",
        "observed_minus_expected_contamination",
        "template_projection",
        "posterior_mean",
        "single_draw",
    ):
        assert {f"mse_{est}", f"mse_r_units_{est}"} <= set(metrics)
    assert np.isfinite(np.load(sub / "draws.npy")).all()  # this tiny network is not accurate; quality: slow tests
    table = result["r_table"]
    for name in ("exact", "exact_bayes_median", "diffusion_mean", "diffusion_median", "diffusion_ml", "oracle"):
        assert f"| 0.01 | {name} |" in table


def test_rerun_skips_finished_work(tiny_run):
    out, config, _ = tiny_run
    assert stages.train(**config["train"])["skipped"]
    again = stages.sample(**config["sample"])
    assert again["skipped"]
    assert set(again["results"]) == {f"{m}/r{r}" for m in ("conditional", "prototype") for r in ("0", "0.01")}
    with pytest.raises(ValueError, match="noise_depth: 11.9 -> 5.0"):
        stages.simulate(**{**config["simulate"], "noise_depth": 5.0})


def test_checkpoint_rebuilds_the_model(tiny_run):
    from pathlib import Path

    model, tx, ty, meta = load_score_model(Path(tiny_run[0]) / "model" / "model.pt")
    assert model.conditional and meta["sde"]["name"] == "vp" and meta["p_uncond"] == 0.2
    x = np.load(Path(tiny_run[0]) / "data" / "dl_gt_val.npy")
    np.testing.assert_allclose(tx.inverse(tx.forward(x)), x, rtol=1e-8, atol=1e-12)
    z = tx.forward(np.load(Path(tiny_run[0]) / "data" / "dl_gt_train.npy"))
    np.testing.assert_allclose(z.mean(0), 0, atol=1e-8)
    np.testing.assert_allclose(z.std(0), 1, rtol=1e-8)


def test_transform_global_and_errors():
    dl = np.abs(np.random.default_rng(0).standard_normal((50, 4))) + 0.1
    t = SpectrumTransform.fit(dl, normalization="global")
    assert np.all(t.mean == t.mean[0]) and np.all(t.std == t.std[0])
    np.testing.assert_allclose(t.inverse(t.forward(dl)), dl, rtol=1e-10)
    with pytest.raises(ValueError, match="normalization"):
        SpectrumTransform.fit(dl, normalization="minmax")
    with pytest.raises(ValueError, match="offset"):
        SpectrumTransform.fit(dl - 1.0)


def test_missing_inputs_name_the_fix(tmp_path):
    with pytest.raises(FileNotFoundError, match="cosmobench bmodes simulate"):
        stages.train(out_dir=str(tmp_path))
    with pytest.raises(ValueError, match="r_max"):
        stages.simulate(out_dir=str(tmp_path), r_max=0.0)
    assert not (tmp_path / "data").exists()  # refused before any write


def test_denoise_modes(tiny_run):
    """Conditional draws depend on y; unconditional ones do not; the prototype mode starts from the transformed
    observation at t = 1."""
    from pathlib import Path

    from cosmobench.bmodes.conditional import denoise_spectra

    out = Path(tiny_run[0])
    model, tx, ty, _ = load_score_model(out / "model" / "model.pt")
    obs = np.load(out / "data" / "dl_noisy_r0.01.npy")[:3]
    kw = {"sampler": "em", "n_draws": 2, "sampler_options": {"n_steps": 10}, "seed": 1}
    cond = denoise_spectra(model, tx, ty, obs, mode="conditional", **kw)
    assert cond["draws"].shape == (3, 2, 30) and cond["nfe"] == 10
    other = denoise_spectra(model, tx, ty, obs * 3.0, mode="conditional", **kw)
    assert not np.allclose(other["x"], cond["x"])
    unc = denoise_spectra(model, tx, ty, obs, mode="unconditional", **kw)
    np.testing.assert_allclose(denoise_spectra(model, tx, ty, obs * 3.0, mode="unconditional", **kw)["x"], unc["x"])
    proto = denoise_spectra(model, tx, ty, obs, mode="prototype", trajectory_every=5, n_trajectories=2, **kw)
    np.testing.assert_allclose(proto["trajectory"][0], np.repeat(tx.forward(obs), 2, axis=0)[:2], rtol=1e-5)
    with pytest.raises(ValueError, match="unknown mode"):
        denoise_spectra(model, tx, ty, obs, mode="dps")


def test_compare_runs_gives_the_spread_over_seeds(tiny_run, tmp_path):
    import shutil
    from pathlib import Path

    from cosmobench.bmodes.infer import seed_table

    out = Path(tiny_run[0])
    twin = tmp_path / "twin"
    shutil.copytree(out, twin)
    res = stages.compare(out_dir=str(tmp_path / "cmp"), runs=[str(out), str(twin)], progress=False)
    row = next(r for r in res["rows"] if r["estimator"] == "exact" and r["r0"] == 0.01)
    assert row["n_runs"] == 2 and row["bias_over_fisher_spread"] == 0.0  # identical runs: no spread
    assert (
        "| 0.01 | exact | 2 |" in res["table"] and (tmp_path / "cmp" / "compare" / "test" / "r_table_runs.md").exists()
    )
    rows = seed_table([[{"r0": 0.0, "estimator": "e", "sigma_fisher": 1.0, "bias_over_fisher": b}] for b in (0, 1, 2)])
    assert rows[0]["bias_over_fisher"] == 1.0 and rows[0]["bias_over_fisher_spread"] == 1.0
    with pytest.raises(ValueError, match="at least two runs"):
        stages.compare(out_dir=str(tmp_path / "cmp2"), runs=[str(out)])


@pytest.mark.parametrize(
    ("stage", "change", "named"),
    [
        ("simulate", {"noise_depth": 5.0}, "noise_depth: 11.9 -> 5.0"),
        ("train", {"epochs": 2}, "epochs: 60 -> 2"),
        ("sample", {"n_draws": 2}, "n_draws: 3 -> 2"),
        ("infer", {"n_per_draw": 3}, "n_per_draw: 2 -> 3"),
    ],
)
def test_every_stage_skips_refuses_and_redoes(tiny_run, tmp_path, stage, change, named):
    """The rerun rule on every stage: same settings -> skipped; changed -> refused naming the key, nothing written;
    overwrite=true -> redone with the new settings (recorded)."""
    import shutil
    from pathlib import Path

    from cosmobench.core.io import read_json

    out = tmp_path / "run"
    shutil.copytree(tiny_run[0], out)
    settings = {**tiny_run[1][stage], "out_dir": str(out), "progress": False}
    assert getattr(stages, stage)(**settings)["skipped"]
    folder = {"simulate": "data", "train": "model", "sample": "samples/test", "infer": "infer/test"}[stage]
    record = Path(out) / folder / "stage.json"
    before = record.read_bytes()
    with pytest.raises(ValueError, match=named.replace(".", r"\.")):
        getattr(stages, stage)(**{**settings, **change})
    assert record.read_bytes() == before
    redone = getattr(stages, stage)(**{**settings, **change, "overwrite": True})
    assert not redone["skipped"]
    key, value = next(iter(change.items()))
    assert read_json(record)["settings"][key] == value and read_json(record)["status"] == "finished"
