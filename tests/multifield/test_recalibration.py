"""Post-hoc sigma recalibration: fitted on a validation set, it restores coverage on an independent test set."""

from __future__ import annotations

import numpy as np
import pytest

from cosmobench.core.seeds import rng
from cosmobench.multifield.calibration import coverage_curve, fit_recalibration, recalibrated_coverage_band
from cosmobench.multifield.evaluate import Z68, metrics


def _draws(n_sims, factor, *, seed, per_sim=5, tails=None):
    """Predictions whose true error sd is ``sigma_true`` but which report ``factor * sigma_true`` (6 columns).

    ``tails``: degrees of freedom of Student-t errors (rescaled to unit variance); ``None`` for Gaussian errors.
    """
    g = rng(seed, "recalibration_toy")
    n = n_sims * per_sim
    theta = np.repeat(np.column_stack([g.uniform(0.1, 0.5, n_sims), g.uniform(0.6, 1.0, n_sims)]), per_sim, axis=0)
    theta = np.column_stack([theta, np.ones((n, 4))])
    sigma_true = np.tile([0.02, 0.04, 0.1, 0.1, 0.1, 0.1], (n, 1)) * g.uniform(0.5, 2.0, (n, 1))
    if tails is None:
        noise = g.standard_normal((n, 6))
    else:
        noise = g.standard_t(tails, (n, 6)) / np.sqrt(tails / (tails - 2))
    mu = theta + sigma_true * noise
    return theta, mu, factor * sigma_true, np.repeat(np.arange(n_sims), per_sim)


@pytest.mark.parametrize("factor", [0.3, 2.5])
@pytest.mark.parametrize("method", ["conformal", "chi2"])
def test_recalibration_fitted_on_validation_restores_test_coverage(factor, method):
    valid = _draws(300, factor, seed=1)
    test = _draws(400, factor, seed=2)
    recal = fit_recalibration(*valid, columns=[0, 1], method=method)
    assert recal.n_sims == 300 and recal.n_maps == 1500 and recal.columns == (0, 1)
    np.testing.assert_allclose(recal.scale, 1 / factor, rtol=0.1)  # undoes the known mis-scaling
    theta, mu, sigma, sims = test
    raw = metrics(theta, mu, sigma, sims, n_boot=0)
    cal = metrics(theta, mu, sigma, sims, n_boot=0, recalibration=recal)
    for name in ("Omega_m", "sigma_8"):
        assert abs(raw[name]["coverage68"] - 0.68) > 0.2  # the raw sigma's are far off ...
        assert abs(cal[name]["coverage68_cal"] - 0.68) < 0.03  # ... the recalibrated ones are right
        assert abs(cal[name]["coverage95_cal"] - 0.95) < 0.02
        assert abs(cal[name]["chi2_cal"] - 1) < 0.15
        assert cal[name]["coverage68"] == raw[name]["coverage68"]  # raw values are kept beside the calibrated
    np.testing.assert_array_equal(recal.sigma(sigma)[:, 2:], sigma[:, 2:])  # columns not fitted are untouched


def test_loglinear_recovers_the_power_of_sigma():
    """Informative sigma off by a known factor: exponent 1 and scale 1 / factor; sigma with no information on the
    errors: exponent 0 (constant width), which keeps coverage where the predicted sigma is smallest."""
    valid, test = _draws(300, 0.3, seed=1), _draws(400, 0.3, seed=2)
    recal = fit_recalibration(*valid, columns=[0, 1], method="loglinear")
    np.testing.assert_allclose(recal.exponent, 1, atol=0.1)
    theta, mu, sigma, sims = test
    cal = metrics(theta, mu, sigma, sims, n_boot=0, recalibration=recal)
    assert abs(cal["sigma_8"]["coverage68_cal"] - 0.68) < 0.03 and abs(cal["sigma_8"]["coverage95_cal"] - 0.95) < 0.02

    def noise_sigma(draws, seed):  # reported sigma independent of the actual error size
        theta, mu, sigma, sims = draws
        return theta, mu, sigma * rng(seed, "noise_sigma").uniform(0.2, 5.0, (len(theta), 1)), sims

    valid, (theta, mu, sigma, sims) = noise_sigma(_draws(300, 1.0, seed=1), 1), noise_sigma(_draws(400, 1.0, seed=2), 2)
    loglinear = fit_recalibration(*valid, columns=[0, 1], method="loglinear")
    conformal = fit_recalibration(*valid, columns=[0, 1], method="conformal")
    assert np.all(np.abs(loglinear.exponent) < 0.3)  # ~0.16: log var of the true sigma / that of the reported one
    small = sigma[:, 1] < np.quantile(sigma[:, 1], 0.25)  # the maps the network is most confident about
    covered = {
        name: np.abs(theta[small, 1] - mu[small, 1]) <= Z68 * r.sigma(sigma, 0.68)[small, 1]
        for name, r in (("loglinear", loglinear), ("conformal", conformal))
    }
    assert abs(covered["loglinear"].mean() - 0.68) < 0.06 and covered["conformal"].mean() < 0.45


def test_recalibration_uses_only_the_data_it_is_given():
    """The scale comes from the validation draws: test draws with another mis-scaling do not move it."""
    valid = _draws(300, 0.5, seed=1)
    recal = fit_recalibration(*valid, columns=[0, 1])
    again = fit_recalibration(*valid, columns=[0, 1])
    np.testing.assert_array_equal(recal.scale, again.scale)
    theta, mu, sigma, sims = _draws(400, 0.25, seed=2)  # test predictions twice as overconfident
    cal = metrics(theta, mu, sigma, sims, n_boot=0, recalibration=recal)
    assert cal["Omega_m"]["coverage68_cal"] < 0.5  # a validation fit cannot repair a shift it has not seen


def test_conformal_scales_hold_for_heavy_tails_where_one_chi2_scale_does_not():
    valid = _draws(400, 0.5, seed=3, tails=3)
    theta, mu, sigma, sims = _draws(600, 0.5, seed=4, tails=3)
    levels = np.array([0.68, 0.95])
    conformal = fit_recalibration(*valid, columns=[0, 1], levels=levels, method="conformal")
    chi2 = fit_recalibration(*valid, columns=[0, 1], levels=levels, method="chi2")
    cov = coverage_curve(theta[:, :2], mu[:, :2], sigma[:, :2], sims, levels, recalibration=conformal, n_boot=5)
    assert np.all(np.abs(cov["per_map"] - levels[:, None]) < 0.025)
    cov_chi2 = coverage_curve(theta[:, :2], mu[:, :2], sigma[:, :2], sims, levels, recalibration=chi2, n_boot=5)
    assert np.all(cov_chi2["per_map"][0] > 0.73)  # Student-t(3): one variance-matched scale over-covers at 68 %
    assert np.all(conformal.scale[1] > conformal.scale[0])  # the 95 % interval needs the larger scale


def test_recalibration_reports_and_validates_levels():
    recal = fit_recalibration(*_draws(50, 0.5, seed=5), columns=[1], levels=(0.68, 0.95))
    summary = recal.as_dict(["Omega_m", "sigma_8"])
    assert set(summary["sigma_8"]) == {"scale68", "scale95", "exponent"} and summary["n_sims"] == 50
    with pytest.raises(ValueError, match="no scale fitted at level 0.9"):
        recal.sigma(np.ones((3, 6)), 0.9)
    with pytest.raises(ValueError, match="recalibration method"):
        fit_recalibration(*_draws(50, 0.5, seed=5), columns=[1], method="isotonic")


def _correlated(n_sims, *, seed, per_sim=15, shared=0.8):
    """Maps of one simulation share most of their error (as the 15 maps of a CMD simulation do): error =
    shared * per-simulation draw + sqrt(1 - shared^2) * per-map draw, unit variance; reported sigma = 1/2."""
    g = rng(seed, "correlated_toy")
    sims = np.repeat(np.arange(n_sims), per_sim)
    err = shared * g.standard_normal((n_sims, 2))[sims] + np.sqrt(1 - shared**2) * g.standard_normal((len(sims), 2))
    theta = np.column_stack([g.uniform(0.1, 0.5, n_sims), g.uniform(0.6, 1.0, n_sims)])[sims]
    return theta, theta + 0.02 * err, np.full_like(theta, 0.01), sims


@pytest.mark.parametrize("method", ["loglinear", "conformal"])
def test_coverage_band_includes_the_noise_of_the_validation_fit(method):
    test = _correlated(200, seed=11)
    q = (0.025, 0.16, 0.84, 0.975)
    big = recalibrated_coverage_band(_correlated(200, seed=10), test, columns=[0, 1], method=method, quantiles=q)
    small = recalibrated_coverage_band(_correlated(15, seed=12), test, columns=[0, 1], method=method, quantiles=q)
    assert big.shape == (4, 2, 2)  # (quantile, level, column)
    width_big, width_small = big[2] - big[1], small[2] - small[1]
    assert np.all(width_small > 2 * width_big)  # 15 fitting simulations: a much less certain coverage
    nominal = np.array([[0.68], [0.95]])
    assert np.all((big[0] < nominal) & (nominal < big[3]))  # calibrated: nominal inside the 95 % band
    # resampling the test simulations alone (the per-split bootstrap) misses the fitting noise
    recal = fit_recalibration(*_correlated(200, seed=10), columns=[0, 1], method=method)
    theta, mu, sigma, sims = test
    test_only = coverage_curve(theta, mu, sigma, sims, np.array([0.68, 0.95]), recalibration=recal)["ci"]
    assert np.all(width_big > 1.2 * (test_only[1] - test_only[0]))
    # with correlated maps a map-level bootstrap would be ~3x too narrow: the band is per simulation
    assert np.all(width_big[0] > 0.04)


def test_default_run_has_validation_and_test_splits_large_enough_for_coverage():
    """The embedded default calibrates on the validation simulations and measures coverage on the test ones; with
    22 of each (the former default) one simulation moved the coverage by ~4.5 points."""
    from cosmobench.cli import load_config
    from cosmobench.multifield.cmd import split_sims

    cfg = load_config("multifield")
    split = split_sims(cfg["simulate"]["n_sims"], cfg["training"]["split"], cfg["training"]["split_seed"])
    assert len(split["valid"]) >= 60 and len(split["test"]) >= 60
    assert len(split["train"]) >= 100  # the CNN still gets as many training simulations as before
    assert cfg["test"]["recalibration"] == cfg["calibrate"]["recalibration"] == "loglinear"
