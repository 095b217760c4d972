"""The stage contract: one record, one rerun rule (skip / resume / refuse naming keys / overwrite), consumers."""

from __future__ import annotations

import json

import pytest

from cosmobench.core.io import CorruptFileError, read_json
from cosmobench.core.stage import Stage, StageConflict, StageNotFinished, digest, identity, require


def _run(folder, settings, inputs=None, overwrite=False, payload="out"):
    """A toy stage: writes one output file; returns (summary, ran)."""
    stage = Stage(folder, "toy.make", settings, inputs)
    done = stage.start(overwrite=overwrite)
    if done is not None:
        return done, False
    (folder / "out.txt").write_text(payload)
    return stage.finish({"n": 1}, outputs=[folder / "out.txt"]), True


def test_first_run_then_rerun_skips_and_verifies(tmp_path):
    summary, ran = _run(tmp_path, {"a": 1, "progress": True})
    assert ran and summary == {"n": 1, "skipped": False}
    record = read_json(tmp_path / "stage.json")
    assert record["status"] == "finished" and set(record["outputs"]) == {"out.txt"}
    summary, ran = _run(tmp_path, {"a": 1, "progress": False})  # runtime keys are not compared
    assert not ran and summary == {"n": 1, "skipped": True}


def test_changed_setting_is_refused_before_any_write_naming_the_key(tmp_path, snapshot):
    _run(tmp_path, {"a": 1, "nested": {"b": [1, 2]}})
    before = snapshot(tmp_path)
    with pytest.raises(StageConflict) as err:
        _run(tmp_path, {"a": 2, "nested": {"b": [1, 3]}})
    message = str(err.value)
    assert "a: 1 -> 2" in message and "nested.b: [1, 2] -> [1, 3]" in message
    assert "overwrite=true" in message and "out_dir" in message
    assert snapshot(tmp_path) == before


def test_overwrite_redoes(tmp_path):
    _run(tmp_path, {"a": 1}, payload="old")
    summary, ran = _run(tmp_path, {"a": 2}, overwrite=True, payload="new")
    assert ran and (tmp_path / "out.txt").read_text() == "new"
    assert read_json(tmp_path / "stage.json")["settings"] == {"a": 2}
    _, ran = _run(tmp_path, {"a": 2}, overwrite=True, payload="newer")  # same settings: redone too
    assert ran and (tmp_path / "out.txt").read_text() == "newer"


def test_changed_input_is_refused(tmp_path):
    _run(tmp_path, {"a": 1}, inputs={"model": "abc"})
    with pytest.raises(StageConflict, match='input model: "abc" -> "def"'):
        _run(tmp_path, {"a": 1}, inputs={"model": "def"})


def test_changed_output_bytes_are_detected(tmp_path):
    _run(tmp_path, {"a": 1}, payload="abcd")
    (tmp_path / "out.txt").write_text("abce")  # same size, other bytes
    with pytest.raises(CorruptFileError, match="out.txt changed since"):
        _run(tmp_path, {"a": 1})
    (tmp_path / "out.txt").unlink()
    with pytest.raises(CorruptFileError, match="missing"):
        _run(tmp_path, {"a": 1})


def test_interrupted_run_resumes_and_cleans_temporaries(tmp_path):
    stage = Stage(tmp_path, "toy.make", {"a": 1})
    assert stage.start() is None
    (tmp_path / ".partial.bin.x1.tmp").write_text("junk")  # a killed atomic write
    assert Stage(tmp_path, "toy.make", {"a": 1}).check() == "resume"
    summary, ran = _run(tmp_path, {"a": 1})
    assert ran and not (tmp_path / ".partial.bin.x1.tmp").exists()


def test_files_without_a_record_are_refused(tmp_path):
    (tmp_path / "old_model.pt").write_text("from an older version")
    with pytest.raises(StageConflict, match="no stage record accounts for"):
        _run(tmp_path, {"a": 1})
    _, ran = _run(tmp_path, {"a": 1}, overwrite=True)
    assert ran and not (tmp_path / "old_model.pt").exists()


def test_require_refuses_missing_unfinished_and_changed(tmp_path):
    with pytest.raises(StageNotFinished, match="make it with `cosmobench toy make`"):
        require(tmp_path, "toy.make", "cosmobench toy make")
    Stage(tmp_path, "toy.make", {"a": 1}).start()
    with pytest.raises(StageNotFinished, match="interrupted.*cosmobench toy make"):
        require(tmp_path, "toy.make", "cosmobench toy make", what="the toy model")
    _run(tmp_path, {"a": 1})
    record = require(tmp_path, "toy.make", "cosmobench toy make")
    (tmp_path / "out.txt").write_text("longer than before")
    with pytest.raises(StageNotFinished, match="changed size"):
        require(tmp_path, "toy.make", "cosmobench toy make")
    assert len(identity(record)) == 64


def test_identity_changes_with_the_outputs(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir(), b.mkdir()
    _run(a, {"x": 1}, payload="one")
    _run(b, {"x": 1}, payload="two")
    ra, rb = read_json(a / "stage.json"), read_json(b / "stage.json")
    assert identity(ra) != identity(rb)
    assert digest({"b": 1, "a": (1, 2)}) == digest({"a": [1, 2], "b": 1})


def test_record_is_plain_json(tmp_path):
    import numpy as np

    _run(tmp_path, {"a": np.float64(0.5), "p": tmp_path})
    assert json.loads((tmp_path / "stage.json").read_text())["settings"] == {"a": 0.5, "p": str(tmp_path)}
