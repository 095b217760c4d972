"""The stage contract on every multifield stage: rerun skips, a changed setting is refused before any work naming
the key, ``overwrite=true`` redoes; a killed training makes its consumers refuse; identical trainings give the same
bytes (issue 9, findings 1, 2 and 8)."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from cosmobench.cli import run_stage

TINY = ("preset=tiny", "threads=1")

# stage -> (a changed setting, the key the refusal names)
CHANGES = {
    "simulate": ("simulate.n_sims=13", "n_sims"),
    "train": ("training.epochs=2", "training.epochs"),
    "search": ("search.n_trials=3", "n_trials"),
    "test": ("test.recalibration=chi2", "recalibration"),
    "robustness": ("robustness.params=[0]", "params"),
    "fields": ("fields.thresholds=[0.5]", "thresholds"),
    "calibrate": ("calibrate.n_samples=40", "n_samples"),
}
FOLDERS = {"simulate": "data", "train": "model", "calibrate": "calibration"}


def _record(folder) -> dict:
    return json.loads((folder / "stage.json").read_text())


def _folder(root, stage):
    if stage == "test":
        return root / "test" / "train_on_TNGlike_test_tta"
    return root / FOLDERS.get(stage, stage)


@pytest.mark.parametrize("stage", list(CHANGES))
def test_rerun_skips_change_is_refused_overwrite_redoes(stage, tiny_run, run_copy, cli, snapshot, cheap_power):
    root = run_copy
    args = (*TINY, f"out_dir={root}")
    folder = _folder(root, stage)
    assert _record(folder)["status"] == "finished"
    before = snapshot(root)
    assert run_stage("multifield", stage, args)["skipped"] is True
    assert snapshot(root) == before
    change, key = CHANGES[stage]
    code, err = cli("multifield", stage, *args, change)
    assert code == 1
    assert key in err and "overwrite=true" in err and "another out_dir" in err
    assert snapshot(root) == before  # refused before any work or write
    redone = run_stage("multifield", stage, (*args, change, "overwrite=true"))
    assert redone["skipped"] is False
    assert _record(folder)["status"] == "finished"
    assert _record(folder)["settings"] != _record(tiny_run / folder.relative_to(root))["settings"]


def test_external_data_is_identified_by_its_files(run_copy, tmp_path, cli, snapshot):
    """Data without a simulate record (real CMD files): its identity is the parameter files' checksums and the map
    files' sizes, so a changed parameter file invalidates the model trained on it."""
    data = shutil.copytree(run_copy / "data", tmp_path / "cmd", ignore=shutil.ignore_patterns("stage.json"))
    args = (*TINY, f"out_dir={tmp_path / 'out'}", f"data_dir={data}")
    assert run_stage("multifield", "train", args)["skipped"] is False
    assert run_stage("multifield", "train", args)["skipped"] is True
    params = np.loadtxt(data / "params_LH_TNGlike.txt")
    params[0, 1] = 0.7  # still inside the prior
    np.savetxt(data / "params_LH_TNGlike.txt", params)
    before = snapshot(tmp_path / "out")
    code, err = cli("multifield", "train", *args)
    assert code == 1 and "input data" in err and "overwrite=true" in err
    assert snapshot(tmp_path / "out") == before


def test_killed_training_makes_every_consumer_refuse(run_copy, cli, monkeypatch, snapshot):
    """Finding 1: a consumer of an unfinished model refuses and names the command that finishes it; once it is
    finished, outputs of the older model are refused as derived from another input."""
    root = run_copy
    args = (*TINY, f"out_dir={root}")

    def killed(*a, **k):
        raise KeyboardInterrupt

    with monkeypatch.context() as mp:
        mp.setattr("cosmobench.multifield.stages.train_model", killed)
        code, _ = cli("multifield", "train", *args, "training.epochs=2", "overwrite=true")
    assert code == 130 and _record(root / "model")["status"] == "running"
    before = snapshot(root)
    for consumer in ("test", "calibrate"):
        code, err = cli("multifield", consumer, *args)
        assert code == 1, consumer
        assert "not finished" in err and f"cosmobench multifield train out_dir={root}" in err
    assert snapshot(root) == before
    assert run_stage("multifield", "train", (*args, "training.epochs=2"))["skipped"] is False  # resumes
    code, err = cli("multifield", "test", *args)
    assert code == 1 and "input model" in err and "overwrite=true" in err


def test_identical_trainings_give_byte_identical_models(tiny_run, tmp_path):
    data = f"data_dir={tiny_run / 'data'}"
    for name in ("a", "b"):
        assert run_stage("multifield", "train", (*TINY, f"out_dir={tmp_path / name}", data))["skipped"] is False
    a, b = ((tmp_path / n / "model" / "model.pt").read_bytes() for n in ("a", "b"))
    assert a == b == (tiny_run / "model" / "model.pt").read_bytes()
    assert not list(tmp_path.rglob("*.tmp"))


@pytest.mark.parametrize("stage, output", [("train", "model/model.pt"), ("simulate", "data/params_LH_TNGlike.txt")])
def test_changed_output_is_found_on_rerun(stage, output, run_copy, cli, cheap_power):
    """Finding 6: same-size random bytes in a finished output are noticed by the next run of its stage."""
    path = run_copy / output
    path.write_bytes(np.random.default_rng(0).integers(0, 256, path.stat().st_size, dtype=np.uint8).tobytes())
    code, err = cli("multifield", stage, *TINY, f"out_dir={run_copy}")
    assert code == 1 and str(path) in err and "changed since" in err and "overwrite=true" in err
