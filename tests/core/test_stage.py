"""The stage contract: one record, one rerun rule (skip / resume / refuse naming keys / overwrite), consumers."""

from __future__ import annotations

import json
import os

import pytest

import cosmobench.core.stage as stage_module
from cosmobench.core.io import CorruptFileError, read_json, write_json
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


# ------------------------------------------------------------------ require: content checked when the time moved
HOUR_NS = 3600 * 10**9
MAKE = "cosmobench toy make"


def _made(folder, payload="abcd"):
    """A finished toy producer whose output is an hour older than its record; returns the output's path."""
    stage = Stage(folder, "toy.make", {"a": 1}, command=MAKE)
    assert stage.start() is None
    out = folder / "out.txt"
    out.write_text(payload)
    old = out.stat().st_mtime_ns - HOUR_NS  # older than the record, whatever the clock's granularity
    os.utime(out, ns=(old, old))
    stage.finish({"n": 1}, outputs=[out])
    return out


def _corrupt(path):
    """Flip every byte of ``path``, keeping its size (a change ``require`` used to let through)."""
    data = path.read_bytes()
    path.write_bytes(bytes(b ^ 0xFF for b in data))
    assert path.stat().st_size == len(data)


@pytest.fixture
def hashes(monkeypatch):
    """Count the files ``require`` hashes: ``hashes()`` returns the count since the last call."""
    calls = []

    def counting(path, *args, **kwargs):
        calls.append(path)
        return real(path, *args, **kwargs)

    real = stage_module.sha256
    monkeypatch.setattr(stage_module, "sha256", counting)

    def count():
        n = len(calls)
        calls.clear()
        return n

    return count


def test_finish_records_the_outputs_modification_time(tmp_path, hashes):
    out = _made(tmp_path)
    info = read_json(tmp_path / "stage.json")["outputs"]["out.txt"]
    assert info["mtime_ns"] == out.stat().st_mtime_ns and info["bytes"] == 4
    written = (tmp_path / "stage.json").stat()
    hashes()
    require(tmp_path, "toy.make", MAKE)
    assert hashes() == 0  # an unchanged output costs a stat, not a hash
    now = (tmp_path / "stage.json").stat()
    assert (now.st_ino, now.st_mtime_ns) == (written.st_ino, written.st_mtime_ns)  # and the record is not rewritten


def test_require_refuses_an_output_changed_at_constant_size(tmp_path):
    out = _made(tmp_path)
    _corrupt(out)
    with pytest.raises(CorruptFileError) as err:
        require(tmp_path, "toy.make", MAKE)
    message = str(err.value)
    assert str(out) in message and "changed since `toy.make` wrote it" in message
    assert str(tmp_path / "stage.json") in message and f"`{MAKE} overwrite=true`" in message


def test_touched_output_is_hashed_once_and_its_time_refreshed(tmp_path, hashes):
    out = _made(tmp_path)
    before = read_json(tmp_path / "stage.json")
    touched = before["outputs"]["out.txt"]["mtime_ns"] + 10**9  # still older than the record
    os.utime(out, ns=(touched, touched))
    hashes()
    record = require(tmp_path, "toy.make", MAKE)
    assert hashes() == 1
    after = read_json(tmp_path / "stage.json")
    assert after["outputs"]["out.txt"]["mtime_ns"] == touched
    after["outputs"]["out.txt"]["mtime_ns"] = before["outputs"]["out.txt"]["mtime_ns"]
    assert after == before  # the refresh changed nothing else
    assert require(tmp_path, "toy.make", MAKE) == record
    assert hashes() == 0
    assert identity(record) == identity(before)


def test_record_without_times_is_hashed_then_refreshed(tmp_path, hashes):
    """A record written before times were recorded: its outputs are hashed (the time alone says nothing)."""
    out = _made(tmp_path)
    path = tmp_path / "stage.json"
    record = read_json(path)
    mtime = record["outputs"]["out.txt"].pop("mtime_ns")
    write_json(path, record)
    hashes()
    require(tmp_path, "toy.make", MAKE)
    assert hashes() == 1 and read_json(path)["outputs"]["out.txt"]["mtime_ns"] == mtime
    write_json(path, record)  # old again, and the content changed with the file's time kept
    _corrupt(out)
    os.utime(out, ns=(mtime, mtime))
    with pytest.raises(CorruptFileError, match="overwrite=true"):
        require(tmp_path, "toy.make", MAKE)


def test_output_as_new_as_its_record_is_hashed(tmp_path):
    """A write in the same clock tick as the record keeps the recorded time: it is caught as the record is not older."""
    out = _made(tmp_path)
    mtime = read_json(tmp_path / "stage.json")["outputs"]["out.txt"]["mtime_ns"]
    _corrupt(out)
    os.utime(out, ns=(mtime, mtime))
    os.utime(tmp_path / "stage.json", ns=(mtime, mtime))
    with pytest.raises(CorruptFileError, match="changed since"):
        require(tmp_path, "toy.make", MAKE)


def test_identity_ignores_the_recorded_times(tmp_path):
    old = {
        "format": "cosmobench-stage/1",
        "stage": "toy.make",
        "status": "finished",
        "settings": {"a": 1},
        "inputs": {"data": "abc"},
        "outputs": {"out.txt": {"sha256": "0" * 64, "bytes": 4}},
        "summary": {"n": 1},
    }
    # the identity cosmobench gave this record before times were recorded: consumers' records stay valid
    pinned = "5cc27dc8212c82a86acd0a4a6296e973bca96323c15e32609779c643d8b3a029"
    assert identity(old) == pinned
    timed = {**old, "outputs": {"out.txt": {**old["outputs"]["out.txt"], "mtime_ns": 123}}}
    assert identity(timed) == pinned
    assert identity({**old, "outputs": {"out.txt": {"sha256": "1" * 64, "bytes": 4}}}) != pinned
    _made(tmp_path)
    record = read_json(tmp_path / "stage.json")
    assert "mtime_ns" in record["outputs"]["out.txt"]
    assert identity(record) == identity(require(tmp_path, "toy.make", MAKE))
    assert "mtime_ns" not in require(tmp_path, "toy.make", MAKE)["outputs"]["out.txt"]


@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() == 0, reason="root ignores file permissions")
@pytest.mark.parametrize("read_only", ["folder", "record"])
def test_read_only_record_is_checked_and_left_as_it_is(tmp_path, hashes, read_only):
    out = _made(tmp_path)
    path = tmp_path / "stage.json"
    touched = read_json(path)["outputs"]["out.txt"]["mtime_ns"] + 10**9
    os.utime(out, ns=(touched, touched))
    before = path.read_bytes()
    target = tmp_path if read_only == "folder" else path
    mode = target.stat().st_mode
    target.chmod(0o555 if read_only == "folder" else 0o444)
    try:
        hashes()
        require(tmp_path, "toy.make", MAKE)
        require(tmp_path, "toy.make", MAKE)
        assert hashes() == 2  # not refreshed: hashed again each time, never refused
        assert path.read_bytes() == before and sorted(p.name for p in tmp_path.iterdir()) == ["out.txt", "stage.json"]
        _corrupt(out)
        with pytest.raises(CorruptFileError, match="changed since"):
            require(tmp_path, "toy.make", MAKE)
    finally:
        target.chmod(mode)


def test_consumer_of_a_changed_output_is_refused_before_it_could_skip(tmp_path, hashes):
    """The CMB case at the contract's level: evaluate must not hand back a summary of predictions since changed."""
    made, used = tmp_path / "made", tmp_path / "used"
    made.mkdir()
    out = _made(made)

    def consume():
        record = require(made, "toy.make", MAKE)
        stage = Stage(used, "toy.use", {"b": 2}, {"made": identity(record)})
        done = stage.start()
        if done is not None:
            return done
        (used / "result.txt").write_text(out.read_text().upper())
        return stage.finish({"result": "ABCD"}, outputs=[used / "result.txt"])

    assert consume()["skipped"] is False
    hashes()
    assert consume()["skipped"] is True
    assert hashes() == 1  # the consumer's own verify; the producer's unchanged output costs a stat
    consumer_record = (used / "stage.json").read_bytes()
    _corrupt(out)
    with pytest.raises(CorruptFileError, match=f"changed since `toy.make`.*`{MAKE} overwrite=true`"):
        consume()
    assert (used / "stage.json").read_bytes() == consumer_record


def test_a_moved_run_names_its_own_files(tmp_path, monkeypatch):
    """A finished stage read from another folder (moved or copied, given absolute or relative) returns the paths of
    its summary that lay in the folder it was run in as paths in the folder it is read from; other strings stay."""
    import shutil

    first = tmp_path / "a" / "run"
    first.mkdir(parents=True)
    (first / "fig.png").write_text("png")
    summary = {
        "folder": str(first),
        "figures": [str(first / "fig.png")],
        "nested": {"model": str(first / "m" / "model.pt")},
        "elsewhere": str(tmp_path / "data" / "x.fits"),
        "sibling": f"{first}2/y",  # shares the folder's characters, not the folder
        "split": "Test",
    }
    Stage(first, "toy.make", {"a": 1}).finish(summary, outputs=[first / "fig.png"])
    moved = tmp_path / "b" / "run"
    shutil.copytree(first, moved)
    done = Stage(moved, "toy.make", {"a": 1}).start()
    assert done["folder"] == str(moved) and done["figures"] == [str(moved / "fig.png")]
    assert done["nested"] == {"model": str(moved / "m" / "model.pt")}
    kept = ("elsewhere", "sibling", "split")
    assert {k: done[k] for k in kept} == {k: summary[k] for k in kept}
    assert Stage(first, "toy.make", {"a": 1}).start() == {**summary, "skipped": True}  # read where it ran: as written
    monkeypatch.chdir(tmp_path / "b")  # the same run named by a relative path
    assert Stage("run", "toy.make", {"a": 1}).start()["figures"] == [os.path.join("run", "fig.png")]
