"""Fixtures of the multifield tests: an analytic P(k) table (no CAMB) and a tiny simulated CMD-format dataset."""

from __future__ import annotations

import os

import numpy as np
import pytest

from cosmobench.multifield.power import PowerTable, sigma_r


def bbks_table() -> PowerTable:
    """Linear BBKS P(k) with shape Gamma = Omega_m h, normalised to sigma_8 (a cheap stand-in for CAMB)."""
    k = np.logspace(-3, 2.5, 200)
    om = np.linspace(0.09, 0.52, 5)
    s8 = np.linspace(0.58, 1.02, 5)
    rows = []
    for o in om:
        q = k / (o * 0.6711)
        t = (
            np.log(1 + 2.34 * q)
            / (2.34 * q)
            * (1 + 3.89 * q + (16.1 * q) ** 2 + (5.46 * q) ** 3 + (6.71 * q) ** 4) ** -0.25
        )
        shape = k**0.9624 * t**2
        rows.append([np.log(shape * (s / sigma_r(k, shape)) ** 2) for s in s8])
    return PowerTable(k=k, omega_m=om, sigma8=s8, log_pk=np.asarray(rows), kind="linear")


@pytest.fixture(scope="session")
def toy_power() -> PowerTable:
    return bbks_table()


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory, toy_power):
    """12 simulations of 16^2 maps for TNGlike, SIMBAlike and Nbody_TNGlike (fields Mtot, Mgas, T, Mstar)."""
    from cosmobench.multifield.simulate import simulate_suite

    root = tmp_path_factory.mktemp("cmd_data")
    for suite in ("TNGlike", "SIMBAlike", "Nbody_TNGlike"):
        simulate_suite(
            root,
            suite,
            n_sims=12,
            npix=16,
            seed=3,
            fields=["Mtot", "Mgas", "T", "Mstar"],
            power=toy_power,
            progress=False,
        )
    return root


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory):
    """``cosmobench multifield run preset=tiny`` once (CLI, the BBKS table instead of CAMB): the run folder.

    Tests that change it work on a copy (:func:`run_copy`).
    """
    from cosmobench.cli import main

    root = tmp_path_factory.mktemp("mf_run")
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr("cosmobench.multifield.dataset.load_or_build_power_table", lambda *a, **k: bbks_table())
        mp.setenv("COSMOBENCH_THREADS", os.environ.get("COSMOBENCH_THREADS", "1"))  # restored: stages set it
        assert main(["multifield", "run", "preset=tiny", f"out_dir={root}", "threads=1"]) == 0
    return root


@pytest.fixture(autouse=True)
def _keep_threads_env(monkeypatch):
    """Stages apply ``threads=`` through ``$COSMOBENCH_THREADS``; restore it after each test."""
    monkeypatch.setenv("COSMOBENCH_THREADS", os.environ.get("COSMOBENCH_THREADS", "1"))


@pytest.fixture
def run_copy(tiny_run, tmp_path):
    """A copy of :func:`tiny_run` to change: the rerun rule does not compare folders, so it behaves as the original."""
    import shutil

    return shutil.copytree(tiny_run, tmp_path / "run")


@pytest.fixture
def cheap_power(monkeypatch):
    """The simulate stage uses the BBKS table instead of building the CAMB one."""
    monkeypatch.setattr("cosmobench.multifield.dataset.load_or_build_power_table", lambda *a, **k: bbks_table())
