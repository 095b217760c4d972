"""A finished tiny CMB run (nside 8, 3 simulations): dataset, a trained cmbnncs, hilc and cmbnncs predictions,
results and report, made once per session through the command line; tests work on copies of it."""

from __future__ import annotations

import shutil

import pytest

# the `tiny` preset with one simulation per split (three CAMB calls)
TINY = ("preset=tiny", "simulate.splits={Train: 1, Valid: 1, Test: 1}", "run.methods=[hilc,cmbnncs]")


def cmb(*args: str) -> int:
    """``cosmobench cmb <args> <TINY>`` in-process; returns the exit code."""
    from cosmobench.cli import main

    return main(["cmb", *args, *TINY])


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory):
    """Path of the finished tiny run (do not modify it: use ``tiny_copy``)."""
    root = tmp_path_factory.mktemp("cmb_tiny") / "run"
    for args in (
        ("simulate",),
        ("train", "method=cmbnncs"),
        ("separate", "method=hilc"),
        ("separate", "method=cmbnncs"),
        ("evaluate",),
        ("compare",),
    ):
        assert cmb(*args, f"out_dir={root}") == 0, args
    return root


@pytest.fixture
def tiny_copy(tiny_run, tmp_path):
    """A private copy of the finished tiny run."""
    return shutil.copytree(tiny_run, tmp_path / "run")
