"""Shared fixtures: every test starts from seeded, single-threaded torch (and ducc0 on two threads)."""

from __future__ import annotations

import os

import pytest

os.environ.setdefault("COSMOBENCH_THREADS", "2")


@pytest.fixture(autouse=True)
def _torch_state():
    """Seed torch for every test so stochastic layers are reproducible (numpy draws use explicit generators), and
    run it on one thread: the test networks are small, and OpenMP threads that spin on a busy shared machine make
    them many times slower (measured: 1.4 s vs 17 s for one B-mode sampler run)."""
    try:
        import torch
    except ImportError:  # pragma: no cover
        yield
        return
    torch.manual_seed(0)
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def pytest_collection_modifyitems(config, items):
    """Skip ``gpu`` tests when CUDA is absent, even if selected with ``-m gpu``."""
    try:
        import torch

        has_cuda = torch.cuda.is_available()
    except ImportError:  # pragma: no cover
        has_cuda = False
    if not has_cuda:
        skip = pytest.mark.skip(reason="needs CUDA")
        for item in items:
            if "gpu" in item.keywords:
                item.add_marker(skip)


def _snapshot(folder) -> dict:
    """SHA-256 of every file under ``folder`` (relative path -> digest): outputs before and after a refused run."""
    import hashlib
    from pathlib import Path

    root = Path(folder)
    if not root.exists():
        return {}
    files = sorted(p for p in root.rglob("*") if p.is_file())
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest() for p in files}


@pytest.fixture
def snapshot():
    """``snapshot(folder)``: checksums of every file under a folder, to assert that a refused run changed nothing."""
    return _snapshot


@pytest.fixture
def cli(capsys):
    """``cli(*args) -> (exit code, stderr)``: run the ``cosmobench`` command in-process, as a user would."""
    from cosmobench.cli import main

    def run(*args: str) -> tuple[int, str]:
        capsys.readouterr()
        code = main([str(a) for a in args])
        return code, capsys.readouterr().err

    return run


def _as_produced(path) -> None:
    """Record ``path``, changed in place by a test, as the stage that made it wrote it: a bad file that came out of
    its producer (a bug, a bad upstream input), which the consumer's checks of the values must catch; without this
    the stage contract refuses it first, as a file changed since it was written."""
    from pathlib import Path

    from cosmobench.core.io import read_json, sha256, write_json

    path = Path(path)
    for folder in path.parents:
        record = folder / "stage.json"
        data = read_json(record) if record.is_file() else {}
        rel = str(path.relative_to(folder))
        if rel in data.get("outputs", {}):
            st = path.stat()
            data["outputs"][rel] = {"sha256": sha256(path), "bytes": st.st_size, "mtime_ns": st.st_mtime_ns}
            write_json(record, data)
            return
    raise FileNotFoundError(f"no stage record lists {path}")


@pytest.fixture
def as_produced():
    """``as_produced(path)``: a file a test changed, recorded as its stage's own output (see :func:`_as_produced`)."""
    return _as_produced
