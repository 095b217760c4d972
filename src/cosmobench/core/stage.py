"""The stage contract every stage of every task follows: one record, one rerun rule, no silent stale result.

A stage (simulate, train, separate, ...) writes its outputs into folders it owns and, beside them, a record
(``stage.json``) holding the resolved settings it ran with, the identity of its inputs, and — once the work is
complete — the checksum of every output. The record is written twice: ``running`` before the first output, and
``finished`` atomically after the last one, so a model or dataset counts as done only when its whole stage ran.

The rerun rule, the same for every stage:

* no record, owned folders empty → run;
* record with the same settings and inputs:
  ``finished`` → its outputs are verified against their checksums and the stage is skipped (a changed file is an
  error naming it); ``running`` (an interrupted run) → stale temporary files are removed and the work resumes;
* anything else (other settings, other inputs, or files no record accounts for) → refused **before any work or
  write**, naming each key or input that differs and the two ways out: ``overwrite=true`` (the owned outputs are
  deleted and the stage runs again), or another ``out_dir``.

Consumers call :func:`require` to get a producer's finished record (refusing, with the command that finishes
it, when there is none) and pass :func:`identity` of it as one of their own inputs, so outputs derived from a
model or dataset become invalid when that model or dataset changes. :func:`require` checks every recorded output's
size, and hashes its content only when its modification time differs from the one recorded (``mtime_ns``), so an
output edited after its stage finished is an error at the consumer (before the consumer could skip on a stale
result) and an unchanged one costs a ``stat``. A file whose time changed but content did not (copied, touched) is
hashed once: its recorded time is then refreshed, best effort (a read-only record is left as it is). The recorded
times are bookkeeping, not identity: :func:`identity` ignores them.

Settings that change how or where a stage runs but not what it computes (workers, progress bars, threads, the
device, folders: a run folder may be moved or copied; its inputs are tracked by identity) are not compared
(:data:`RUNTIME_KEYS`).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from .io import CorruptFileError, read_json, sha256, write_json

__all__ = [
    "RECORD",
    "RUNTIME_KEYS",
    "StageConflict",
    "StageNotFinished",
    "Stage",
    "require",
    "identity",
    "digest",
    "remove_stale_temporaries",
]

RECORD = "stage.json"
FORMAT = "cosmobench-stage/1"
RUNTIME_KEYS = frozenset(
    {"overwrite", "force", "progress", "executor", "workers", "scheduler_address", "threads", "device", "chunk"}
    | {"out_dir", "root", "data_dir", "results_dir", "report_dir", "cache_dir"}  # where, not what: folders move
    | {"in_memory", "device_data"}  # multifield: where the training maps are held
)


class StageConflict(ValueError):
    """A stage's folder holds results made with other settings or inputs (a user error with two ways out)."""


class StageNotFinished(FileNotFoundError):
    """A stage's input (a dataset, a model) is missing or was never completed."""


def digest(obj: Any) -> str:
    """SHA-256 of the canonical JSON of ``obj`` (sorted keys), as hex."""
    text = json.dumps(_plain(obj), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()


def _plain(obj: Any) -> Any:
    """``obj`` as JSON types (tuples become lists, paths strings, numpy scalars Python numbers)."""
    return json.loads(json.dumps(obj, default=_default))


def _default(obj: Any) -> Any:
    if isinstance(obj, Path):
        return str(obj)
    if hasattr(obj, "item"):
        return obj.item()
    if hasattr(obj, "tolist"):
        return obj.tolist()
    raise TypeError(f"cannot record {type(obj).__name__} in a stage record")


def identity(record: Mapping) -> str:
    """The identity of a finished stage's results: a digest of its settings, inputs and output checksums.

    Only each output's ``sha256`` and ``bytes`` count: its recorded modification time (``mtime_ns``) does not, so
    a copied or touched output, and a record written before times were recorded, keep their identity.
    """
    return digest({k: _content(record) if k == "outputs" else record.get(k) for k in _IDENTITY_KEYS})


_IDENTITY_KEYS = ("stage", "settings", "inputs", "outputs")
_CONTENT_KEYS = ("sha256", "bytes")


def _content(record: Mapping) -> dict | None:
    """The record's outputs reduced to what identifies their content: ``{relpath: {"sha256", "bytes"}}``."""
    outputs = record.get("outputs")
    if outputs is None:
        return None
    return {rel: {k: v for k, v in info.items() if k in _CONTENT_KEYS} for rel, info in outputs.items()}


def remove_stale_temporaries(folder: Path) -> int:
    """Delete the temporary files (``.*.tmp``) an interrupted run left under ``folder``; returns how many."""
    n = 0
    if Path(folder).is_dir():
        for path in Path(folder).rglob(".*.tmp"):
            path.unlink(missing_ok=True)
            n += 1
    return n


def _differences(old: Mapping, new: Mapping, prefix: str = "") -> list[str]:
    """Dotted keys whose values differ between two nested mappings, with both values."""
    out = []
    for key in sorted(set(old) | set(new), key=str):
        a, b = old.get(key, "<absent>"), new.get(key, "<absent>")
        name = f"{prefix}{key}"
        if isinstance(a, Mapping) and isinstance(b, Mapping):
            out += _differences(a, b, f"{name}.")
        elif a != b:
            out.append(f"{name}: {_short(a)} -> {_short(b)}")
    return out


def _short(value: Any, limit: int = 60) -> str:
    text = json.dumps(value, default=str)
    return text if len(text) <= limit else text[: limit - 3] + "..."


class Stage:
    """One run of one stage: check the record, then write it ``running`` and, at the end, ``finished``.

    Parameters
    ----------
    folder : path
        Folder of the record (``folder/stage.json``); usually the stage's output folder.
    name : str
        Stage name, e.g. ``"bmodes.train"``.
    settings : mapping
        The resolved settings (JSON-able); :data:`RUNTIME_KEYS` are recorded but not compared.
    inputs : mapping of str to str, optional
        Identities of the inputs (:func:`identity` of a producer's record, or a file checksum).
    owned : iterable of path, optional
        Files and folders this stage writes (default: ``folder`` itself); ``overwrite`` deletes them, and files
        found in them with no record are refused.
    command : str, optional
        The command that runs this stage, quoted in messages.

    Examples
    --------
    >>> stage = Stage(out / "model", "bmodes.train", settings, inputs={"data": identity(data)})  # doctest: +SKIP
    >>> done = stage.start(overwrite=False)  # doctest: +SKIP
    >>> if done is not None: return done  # finished before, outputs verified  # doctest: +SKIP
    >>> ...  # the work  # doctest: +SKIP
    >>> return stage.finish(summary, outputs=[out / "model" / "model.pt"])  # doctest: +SKIP
    """

    def __init__(
        self,
        folder: Path | str,
        name: str,
        settings: Mapping,
        inputs: Mapping[str, str] | None = None,
        *,
        owned: Iterable[Path | str] | None = None,
        command: str | None = None,
    ):
        self.folder = Path(folder)
        self.path = self.folder / RECORD
        self.name = name
        self.settings = _plain(dict(settings))
        self.inputs = _plain(dict(inputs or {}))
        self.owned = [Path(p) for p in owned] if owned is not None else [self.folder]
        self.command = command or f"cosmobench {name.replace('.', ' ')}"
        self._checked: dict[bool, str] = {}  # check() results, so that start() does not hash the outputs twice

    # ------------------------------------------------------------------------------------------------ checks
    def _compared(self, settings: Mapping) -> dict:
        return {k: v for k, v in settings.items() if k not in RUNTIME_KEYS}

    def differences(self, record: Mapping) -> list[str]:
        """What differs between ``record`` and this run: settings keys, then inputs."""
        out = _differences(self._compared(record.get("settings", {})), self._compared(self.settings))
        out += [f"input {d}" for d in _differences(record.get("inputs", {}), self.inputs)]
        return out

    def _unaccounted(self) -> list[Path]:
        """Files in the owned paths (other than this record) although there is no record."""
        found = []
        for p in self.owned:
            if p.is_file():
                found.append(p)
            elif p.is_dir():
                found += [f for f in p.rglob("*") if f.is_file() and f != self.path and not f.name.endswith(".tmp")]
        return found

    def read(self) -> dict | None:
        """The existing record, or None."""
        return read_json(self.path) if self.path.is_file() else None

    def check(self, *, overwrite: bool = False) -> str:
        """Decide what a run does, without writing anything: ``"skip"``, ``"resume"``, ``"run"`` or ``"redo"``.

        Raises
        ------
        StageConflict
            The folder holds results of other settings or inputs (or files with no record) and not ``overwrite``.
        CorruptFileError
            A finished output changed since it was written (and not ``overwrite``).
        """
        self._checked[overwrite] = action = self._decide(overwrite)
        return action

    def extend(self) -> str:
        """Accept this run as an extension of the finished record (the caller decided that its finished outputs
        stay valid under the new settings: they only add outputs, or redo some from kept ones): the run resumes,
        keeping the finished outputs, and the record takes the new settings and inputs.

        Returns
        -------
        str
            ``"resume"``, the action :meth:`start` then takes.
        """
        self._checked[False] = "resume"
        return "resume"

    def _decide(self, overwrite: bool) -> str:
        record = self.read()
        if record is None:
            stray = self._unaccounted()
            if not stray:
                return "run"
            if overwrite:
                return "redo"
            raise StageConflict(
                f"{self.folder} holds {len(stray)} file(s) that no stage record accounts for (e.g. {stray[0]}): "
                f"results of an older cosmobench, or of a run whose {RECORD} was deleted. {self._ways_out()}"
            )
        differ = self.differences(record)
        if differ:
            if overwrite:
                return "redo"
            raise StageConflict(
                f"{self.folder} holds results of `{self.name}` made with other settings or inputs:\n  "
                + "\n  ".join(differ)
                + f"\n{self._ways_out()}"
            )
        if overwrite:
            return "redo"
        if record.get("status") != "finished":
            return "resume"
        self.verify(record)
        return "skip"

    def _ways_out(self) -> str:
        return "Rerun with overwrite=true to delete them and run again, or choose another out_dir."

    def verify(self, record: Mapping) -> None:
        """Check every recorded output against its size and SHA-256; raise naming the first that changed."""
        base = self.folder
        for rel, info in sorted(record.get("outputs", {}).items()):
            path = base / rel
            if not path.is_file():
                raise CorruptFileError(
                    f"{path}, an output of the finished stage `{self.name}`, is missing. {self._ways_out()}"
                )
            if path.stat().st_size != info["bytes"] or sha256(path) != info["sha256"]:
                raise CorruptFileError(
                    f"{path} changed since `{self.name}` wrote it (its SHA-256 differs from the record in "
                    f"{self.path}). {self._ways_out()}"
                )

    # ------------------------------------------------------------------------------------------------ writes
    def start(self, *, overwrite: bool = False) -> dict | None:
        """Apply the rerun rule; return the finished run's summary (with ``skipped: True``) or None to run.

        Call this after validating the user's input and before any work or write; a :meth:`check` made just before
        (e.g. to refuse changed settings before a costly validation) is not repeated.
        """
        action = self._checked.get(overwrite) or self.check(overwrite=overwrite)
        if action == "skip":
            record = self.read()
            summary = record.get("summary", {})
            ran_in = Path(record.get("folder") or self.folder)  # records written before it was kept: as they are
            if ran_in != self.folder:
                summary = _relocated(summary, ran_in, self.folder)
            return {**summary, "skipped": True}
        if action == "redo":
            self.clear()
        for p in self.owned:
            remove_stale_temporaries(p)
        self._write("running")
        return None

    def clear(self) -> None:
        """Delete the record and every owned output."""
        self.path.unlink(missing_ok=True)
        for p in self.owned:
            if p.is_dir():
                shutil.rmtree(p)
            else:
                p.unlink(missing_ok=True)

    def finish(self, summary: Mapping, outputs: Iterable[Path | str] = ()) -> dict:
        """Record the run as finished with the checksums of ``outputs`` (files, or folders: every file inside).

        Each output is recorded as ``{"sha256", "bytes", "mtime_ns"}``; the modification time lets :func:`require`
        skip hashing an output that was not modified since.

        Returns
        -------
        dict
            ``summary`` with ``skipped: False``.
        """
        files: dict[str, dict] = {}
        for out in outputs:
            out = Path(out)
            for f in sorted(out.rglob("*")) if out.is_dir() else [out]:
                if f.is_file() and f != self.path and not f.name.endswith(".tmp"):
                    st = f.stat()  # before hashing: a write during the hash then shows as a later time
                    files[str(f.relative_to(self.folder))] = {
                        "sha256": sha256(f),
                        "bytes": st.st_size,
                        "mtime_ns": st.st_mtime_ns,
                    }
        summary = _plain(dict(summary))
        self._write("finished", outputs=files, summary=summary, folder=str(self.folder))
        return {**summary, "skipped": False}

    def _write(self, status: str, **extra) -> None:
        from .. import __version__

        write_json(
            self.path,
            {
                "format": FORMAT,
                "stage": self.name,
                "status": status,
                "settings": self.settings,
                "inputs": self.inputs,
                "command": self.command,
                "cosmobench": __version__,
                **extra,
            },
        )


def _relocated(obj: Any, old: Path, new: Path) -> Any:
    """``obj`` (a finished record's summary) with every path string at or under ``old``, the folder the stage was
    run in, moved to ``new``, the folder it is read from now: a moved or copied run names its own files."""
    if isinstance(obj, dict):
        return {k: _relocated(v, old, new) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_relocated(v, old, new) for v in obj]
    if isinstance(obj, str) and (obj == str(old) or obj.startswith(f"{old}{os.sep}")):
        return str(new / Path(obj).relative_to(old))
    return obj


def require(folder: Path | str, name: str, command: str, *, what: str | None = None) -> dict:
    """The finished record of stage ``name`` in ``folder``; refuse when it is missing, unfinished or changed.

    Every recorded output's size is checked; its content (SHA-256) is hashed when its modification time differs
    from the recorded ``mtime_ns`` (or none is recorded, or the file is not older than the record, whose time
    may then not tell a later write apart), so an output edited after its stage finished is refused here, before
    the consumer could skip on a result that no longer matches it, and an unchanged output costs a ``stat``. When
    a hashed output matches (copied or touched, content unchanged), the record's ``mtime_ns`` of those outputs are
    refreshed so that the next consumer does not hash them again; best effort: a record that cannot be written
    (read-only dataset) is left as it is, and nothing else in it changes.

    Parameters
    ----------
    folder : path
        The producer's record folder.
    name : str
        The producer's stage name (e.g. ``"bmodes.train"``).
    command : str
        The command that produces or finishes it, quoted in the error.
    what : str, optional
        What the consumer needs, e.g. ``"the trained score model"``.

    Returns
    -------
    dict
        The record, its outputs reduced to ``{relpath: {"sha256", "bytes"}}`` (what :func:`identity` digests).

    Raises
    ------
    StageNotFinished
        No record, or a record of an unfinished (interrupted) run, or a recorded output is missing or changed size.
    CorruptFileError
        A recorded output has its size but not its SHA-256 (it changed since the stage wrote it).
    """
    folder = Path(folder)
    path = folder / RECORD
    what = what or f"the output of `{name}`"
    if not path.is_file():
        raise StageNotFinished(f"{what} is not in {folder} (no {RECORD}); make it with `{command}`")
    written = path.stat().st_mtime_ns  # the record's time, read before the record (a refresh only makes it later)
    record = read_json(path)
    if record.get("stage") != name:
        raise StageNotFinished(f"{path} records stage {record.get('stage')!r}, not {name!r}; check the folder")
    if record.get("status") != "finished":
        raise StageNotFinished(
            f"{what} in {folder} is not finished (its run was interrupted); finish it with `{command}` "
            "(it resumes where it stopped)"
        )
    moved: dict[str, int] = {}  # outputs whose time changed but content did not -> their current time
    for rel, info in record.get("outputs", {}).items():
        f = folder / rel
        st = f.stat() if f.is_file() else None
        if st is None or st.st_size != info["bytes"]:
            raise StageNotFinished(
                f"{f}, part of {what}, is missing or changed size; redo it with `{command} overwrite=true`"
            )
        if info.get("mtime_ns") == st.st_mtime_ns and st.st_mtime_ns < written:
            continue  # not modified since the record was written: trusted without hashing
        if sha256(f) != info["sha256"]:
            raise CorruptFileError(
                f"{f}, part of {what}, changed since `{name}` wrote it (its SHA-256 differs from the record in "
                f"{path}); redo it with `{command} overwrite=true`"
            )
        if info.get("mtime_ns") != st.st_mtime_ns:
            moved[rel] = st.st_mtime_ns
    if moved:
        _refresh_times(path, record, moved)
    return {**record, "outputs": _content(record)} if "outputs" in record else record


def _refresh_times(path: Path, record: Mapping, times: Mapping[str, int]) -> None:
    """Rewrite the record at ``path`` (atomically) with the outputs' ``mtime_ns`` set to ``times``; best effort.

    Nothing else changes. Skipped when the record is not writable or no longer the one ``record`` was read from
    (e.g. its stage is being redone); an ``OSError`` while writing is ignored: the outputs are hashed again next
    time, which costs time but never a wrong answer.
    """
    try:
        if not os.access(path, os.W_OK) or read_json(path) != record:
            return
        outputs = {
            rel: {**info, "mtime_ns": times[rel]} if rel in times else info for rel, info in record["outputs"].items()
        }
        write_json(path, {**record, "outputs": outputs})
    except (OSError, CorruptFileError):
        pass
