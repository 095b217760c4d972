"""Fixtures of the multifield tests: an analytic P(k) table (no CAMB) and a tiny simulated CMD-format dataset."""

from __future__ import annotations

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
