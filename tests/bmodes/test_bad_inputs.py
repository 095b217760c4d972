"""Bad inputs and changed reruns of ``cosmobench bmodes``: each refused before any work, with exit code, a
message naming the problem and the fix, and the existing outputs unchanged."""

from __future__ import annotations

import shutil

import numpy as np
import pytest

from cosmobench.core.io import read_json, write_json


@pytest.fixture(scope="module")
def finished(tmp_path_factory, no_camb):
    """A finished tiny run (no CAMB: fake templates)."""
    from cosmobench.cli import main

    out = tmp_path_factory.mktemp("bmodes_bad")
    assert (
        main(
            [
                "bmodes",
                "run",
                "preset=tiny",
                f"out_dir={out}",
                "simulate.progress=false",
                "train.progress=false",
                "sample.progress=false",
            ]
        )
        == 0
    )
    return out


# (overrides after `bmodes <stage>`, exit code, every fragment the message must hold)
CASES = {
    "r_max zero": (["simulate", "simulate.r_max=0"], 1, ["r_max must be positive"]),
    "negative r_test": (["simulate", "simulate.r_test=[-0.1]"], 1, ["r_test values must be finite and >= 0"]),
    "no training pairs": (["simulate", "simulate.n_train=0"], 1, ["n_train and n_val must be >= 1"]),
    "unknown cosmology key": (["simulate", "simulate.cosmology={omch: 0.1}"], 1, ["omch"]),
    "more training spectra": (["simulate", "simulate.n_train=800"], 1, ["n_train: 256 -> 800", "overwrite=true"]),
    "disk guard": (["simulate", "simulate.n_train=100000000000", "overwrite=true"], 1, ["GB", "force=true"]),
    "retrain other size": (
        ["train", "train.epochs=5", "train.hidden_dim=32"],
        1,
        ["epochs: 60 -> 5", "hidden_dim: 64 -> 32", "overwrite=true"],
    ),
    "dict override": (["train", "train.sde={name: ve}"], 1, ["sde.name", "overwrite=true"]),
    "other sampler": (
        ["sample", "sample.sampler=ode", "sample.n_steps=40"],
        1,
        ['sampler: "em" -> "ode"', "n_steps: 50 -> 40", "another out_dir"],
    ),
    "unknown sampler": (["sample", "sample.sampler=nosuch"], 1, ["unknown sampler 'nosuch'", "em"]),
    "unknown mode": (["sample", "sample.modes=[dps]"], 1, ["unknown modes ['dps']", "conditional"]),
    "unknown split": (["sample", "split=train"], 1, ["split must be one of ['val', 'test']"]),
    "r not in dataset": (["sample", "sample.r_values=[0.5]", "sample.split=val"], 1, ["r_values [0.5]", "0.01"]),
    "infer before sampling val": (["infer", "split=val"], 1, ["sampled draws", "cosmobench bmodes sample"]),
    "threads zero": (["train", "threads=0", "overwrite=true"], 1, ["threads must be"]),
    "unknown device": (["train", "device=gpu0"], 1, ["unknown device 'gpu0'", "cpu"]),
    "unknown key": (["train", "train.hiden_dim=3"], 2, ["unknown configuration key 'train.hiden_dim'"]),
    "no equals sign": (["train", "train.epochs"], 2, ["not of the form key=value"]),
    "unknown preset": (["train", "preset=huge"], 2, ["available presets", "tiny"]),
    "bad override syntax": (["train", "train.sde={name: vp"], 2, ["bad override"]),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_refused_with_the_fix_and_nothing_changed(case, finished, cli, snapshot):
    args, code, fragments = CASES[case]
    stage, overrides = args[0], args[1:]
    before = snapshot(finished)
    if not any(o.startswith("preset=") for o in overrides):
        overrides = ["preset=tiny", *overrides]
    rc, err = cli("bmodes", stage, f"out_dir={finished}", *overrides)
    assert rc == code, err
    for fragment in fragments:
        assert fragment in err, f"{fragment!r} not in {err!r}"
    assert "Traceback" not in err
    assert snapshot(finished) == before


def test_consumers_refuse_a_killed_training(finished, tmp_path, cli, snapshot):
    out = tmp_path / "run"
    shutil.copytree(finished, out)
    record = read_json(out / "model" / "stage.json")
    write_json(out / "model" / "stage.json", {**record, "status": "running"})  # as a kill -9 mid-training leaves it
    before = snapshot(out)
    for stage in ("sample", "infer"):
        rc, err = cli("bmodes", stage, "preset=tiny", f"out_dir={out}", "sample.split=val", "infer.split=val")
        assert rc == 1 and "cosmobench bmodes" in err, err
    rc, err = cli("bmodes", "sample", "preset=tiny", f"out_dir={out}", "sample.split=val")
    assert "interrupted" in err and f"cosmobench bmodes train out_dir={out}" in err
    assert snapshot(out) == before


def test_changed_dataset_bytes_are_detected(finished, tmp_path, cli):
    out = tmp_path / "run"
    shutil.copytree(finished, out)
    path = out / "data" / "dl_noisy_r0.01.npy"
    raw = bytearray(path.read_bytes())
    raw[-1] ^= 0xFF  # same size, other bytes
    path.write_bytes(bytes(raw))
    rc, err = cli("bmodes", "simulate", "preset=tiny", f"out_dir={out}")
    assert rc == 1 and "dl_noisy_r0.01.npy changed since" in err and "overwrite=true" in err


def test_retrained_model_invalidates_samples(finished, tmp_path, cli):
    out = tmp_path / "run"
    shutil.copytree(finished, out)
    assert cli("bmodes", "train", "preset=tiny", f"out_dir={out}", "train.epochs=3", "overwrite=true")[0] == 0
    rc, err = cli("bmodes", "sample", "preset=tiny", f"out_dir={out}")
    assert rc == 1 and "input model" in err, err
    rc, err = cli("bmodes", "sample", "preset=tiny", f"out_dir={out}", "overwrite=true", "sample.n_prior_check=0")
    assert rc == 0, err


def test_out_of_distribution_inputs_are_flagged(finished, tmp_path, cli, as_produced):
    """The prototype's files have the same layout but a raw foreground 10^5-10^6 times the training range."""
    from cosmobench.bmodes.stages import check

    obs = np.load(finished / "data" / "dl_noisy_r0.01.npy")
    proto = tmp_path / "dl_noisy_r0.01.npy"
    np.save(proto, obs * 1e5)
    report = check(out_dir=str(finished), files=[str(proto), str(finished / "data" / "dl_noisy_r0.01.npy")])
    assert report["files"][str(proto)]["fraction_flagged"] == 1.0
    assert report["files"][str(finished / "data" / "dl_noisy_r0.01.npy")]["fraction_flagged"] <= 0.125
    np.save(tmp_path / "short.npy", obs[:, :10])
    rc, err = cli("bmodes", "check", "preset=tiny", f"out_dir={finished}", f"check.files=[{tmp_path / 'short.npy'}]")
    assert rc == 1 and "has shape (8, 10); expected (n_spectra, 30)" in err

    out = tmp_path / "run"
    shutil.copytree(finished, out)
    np.save(out / "data" / "dl_noisy_val_r0.01.npy", np.load(out / "data" / "dl_noisy_val_r0.01.npy") * 1e5)
    as_produced(out / "data" / "dl_noisy_val_r0.01.npy")  # as simulate wrote it: the values must be flagged
    rc, err = cli("bmodes", "sample", "preset=tiny", f"out_dir={out}", "split=val")
    assert rc == 1 and "8 of 8 spectra" in err and "outside the training distribution" in err and "ood_alpha" in err
    assert not (out / "samples" / "val").exists()
