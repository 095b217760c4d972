"""Metrics, per-simulation aggregates, coverage and TARP on predictions with known calibration."""

from __future__ import annotations

import numpy as np

from cosmobench.core.seeds import rng
from cosmobench.multifield.calibration import coverage_curve, coverage_from_samples, gaussian_samples, tarp
from cosmobench.multifield.evaluate import metrics


def _calibrated(n_sims=400, per_sim=5, scale=1.0, seed=0):
    """Truths per simulation, predictions whose errors are N(0, sigma^2) (scale < 1: overconfident sigmas)."""
    g = rng(seed, "cal")
    theta_sim = np.column_stack([g.uniform(0.1, 0.5, n_sims), g.uniform(0.6, 1.0, n_sims)] + [np.ones(n_sims)] * 4)
    theta = np.repeat(theta_sim, per_sim, axis=0)
    sigma = np.tile([0.02, 0.03, 0.1, 0.1, 0.1, 0.1], (len(theta), 1)) * g.uniform(0.5, 1.5, (len(theta), 1))
    mu = theta + sigma * g.standard_normal(theta.shape)
    return theta, mu, sigma * scale, np.repeat(np.arange(n_sims), per_sim)


def test_metrics_of_calibrated_predictions():
    theta, mu, sigma, sims = _calibrated()
    m = metrics(theta, mu, sigma, sims, n_boot=50)
    n = len(theta)
    for name in ("Omega_m", "sigma_8"):
        assert abs(m[name]["chi2"] - 1) < 5 * np.sqrt(2 / n)
        assert abs(m[name]["coverage68"] - 0.68) < 5 * np.sqrt(0.68 * 0.32 / n)
        assert abs(m[name]["coverage95"] - 0.95) < 5 * np.sqrt(0.95 * 0.05 / n)
        assert m[name]["r2"] > 0.9 and m[name]["r2_ci"][0] <= m[name]["r2"] <= m[name]["r2_ci"][1]
        assert m[name]["sim_rmse"] < m[name]["rmse"]  # averaging the 5 maps of a simulation reduces the error
    assert m["n_sims"] == 400 and m["n_maps"] == 2000
    perfect = metrics(theta, theta, sigma, sims, n_boot=0)
    assert perfect["Omega_m"]["r2"] == 1 and perfect["Omega_m"]["rel_err"] == 0


def test_coverage_and_tarp_detect_overconfidence():
    theta, mu, sigma, sims = _calibrated()
    cols = [0, 1]
    good = coverage_curve(theta[:, cols], mu[:, cols], sigma[:, cols], sims, np.array([0.68, 0.95]), n_boot=20)
    assert np.all(np.abs(good["per_sim"] - [[0.68], [0.95]]) < 0.05)
    _, _, narrow, _ = _calibrated(scale=0.5)
    bad = coverage_curve(theta[:, cols], mu[:, cols], narrow[:, cols], sims, np.array([0.68]), n_boot=20)
    assert np.all(bad["per_sim"] < 0.5)
    # TARP needs truths distributed as the posterior: mu anywhere, theta ~ N(mu, sigma^2) (flat prior, no edges)
    g = rng(1, "tarp")
    n = 2000
    mu2, sd2 = g.uniform(0, 1, (n, 2)), g.uniform(0.02, 0.06, (n, 2))
    theta2 = mu2 + sd2 * g.standard_normal((n, 2))
    samples = gaussian_samples(mu2, sd2, 300, seed=1)
    t_good = tarp(samples, theta2)
    assert t_good["max_dev"] < 1.63 / np.sqrt(n) + 1 / 300 and t_good["ks_p"] > 1e-3  # KS 99 % band
    from_samples = coverage_from_samples(samples, theta2, np.arange(n), np.array([0.68]), n_boot=5)
    assert np.all(np.abs(from_samples["per_map"] - 0.68) < 5 * np.sqrt(0.68 * 0.32 / n))
    t_bad = tarp(gaussian_samples(mu2, 0.5 * sd2, 300, seed=1), theta2)
    assert t_bad["atc"] < -0.02 and t_bad["max_dev"] > 0.1


def test_median_chi2_of_calibrated_predictions():
    theta, mu, sigma, sims = _calibrated()
    m = metrics(theta, mu, sigma, sims, n_boot=0)
    assert abs(m["Omega_m"]["chi2_median"] - 0.4549) < 0.06  # median of chi^2 with one degree of freedom
