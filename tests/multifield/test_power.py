"""CAMB matter power for CMD cosmologies, and the cached (Omega_m, sigma_8) table against direct CAMB calls."""

from __future__ import annotations

import numpy as np
import pytest

from cosmobench.multifield.power import camb_matter_power, load_or_build_power_table, sigma_r


def test_sigma8_normalisation_and_nonlinear_boost():
    k, p_lin, p_nl = camb_matter_power(0.3, [0.7, 0.9], kmax=20.0)
    for s8, pl in zip((0.7, 0.9), p_lin):
        assert abs(sigma_r(k, pl, 8.0) / s8 - 1) < 2e-3  # A_s rescaled to the requested sigma_8
    np.testing.assert_allclose(p_lin[1] / p_lin[0], (0.9 / 0.7) ** 2, rtol=1e-6)  # linear: pure amplitude
    large = k < 0.02
    assert np.all(np.abs(p_nl[:, large] / p_lin[:, large] - 1) < 0.01)  # linear on large scales
    at1 = np.argmin(np.abs(k - 1.0))
    boost = p_nl[:, at1] / p_lin[:, at1]
    assert np.all(boost > 1.2) and boost[1] > boost[0]  # HMcode boost at k = 1 h/Mpc, larger for larger sigma_8


@pytest.mark.slow
def test_default_table_matches_camb_off_nodes(tmp_path):
    table = load_or_build_power_table(tmp_path)
    for om, s8 in ((0.123, 0.63), (0.31, 0.81), (0.47, 0.97)):
        k, _, p_nl = camb_matter_power(om, [s8])
        sel = (k > 0.2) & (k < 60)  # scales of a 25 Mpc/h box up to the 256^2 grid corner
        err = np.abs(table(k[sel], om, s8) / p_nl[0][sel] - 1).max()
        assert err < 0.01, (om, s8, err)
