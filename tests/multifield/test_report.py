"""The seed aggregate of the multifield test metrics and its table."""

from __future__ import annotations

import math

import pytest

from cosmobench.multifield.report import seed_runs, seed_table


def _result(r2_cnn: float, rel_cnn: float) -> dict:
    base = {"Omega_m": {"r2": 0.99, "rel_err": 0.01}, "sigma_8": {"r2": 0.8, "rel_err": 0.07}}
    return {
        "metrics": {
            "n_maps": 30,
            "Omega_m": {"r2": r2_cnn, "rel_err": rel_cnn},
            "sigma_8": {"r2": 0.5, "rel_err": 0.1},
        },
        "baselines": {"ridge": base, "baryon_fraction": {"Omega_m": {"r2": 0.98, "rel_err": 0.03}}},
    }


def test_seed_runs_mean_and_sample_spread():
    runs = seed_runs({0: _result(0.90, 0.10), 1: _result(0.94, 0.06), 2: _result(0.98, 0.02)})
    assert runs["seeds"] == [0, 1, 2]
    cnn = runs["rows"]["cnn"]["Omega_m"]
    assert cnn["r2"]["mean"] == pytest.approx(0.94) and cnn["r2"]["std"] == pytest.approx(0.04)  # ddof = 1
    assert cnn["rel_err"]["values"] == [0.10, 0.06, 0.02]
    assert runs["rows"]["ridge"]["sigma_8"]["r2"]["std"] == 0  # the baselines do not depend on the training seed
    assert set(runs["rows"]["baryon_fraction"]) == {"Omega_m"}  # a method's own parameters only
    table = seed_table(runs)
    assert "relative error = sqrt(mean((mu - theta)² / theta²))" in table  # the definition is in the header
    assert "| cnn | Omega_m | 0.94 ± 0.04 | 0.06 ± 0.04 |" in table
    assert "| ridge | sigma_8 | 0.8 ± 0 | 0.07 ± 0 |" in table
    assert "| baryon_fraction | Omega_m |" in table and "| baryon_fraction | sigma_8 |" not in table


def test_one_seed_has_no_spread():
    runs = seed_runs({5: _result(0.9, 0.1)})
    assert math.isnan(runs["rows"]["cnn"]["Omega_m"]["r2"]["std"])
    assert "±" not in seed_table(runs, header=False)
