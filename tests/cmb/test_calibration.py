"""The rules that calibrate a predicted standard deviation (cosmobench.cmb.calibration), against exact answers:
a Gaussian's factor, the analytic coverage-matched factor of a Student-t, fractions counted directly."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy import optimize, stats

from cosmobench.cmb.calibration import BINS_PER_OCTAVE, ZAccumulator, calibration_factors, coverage

P1, P2 = math.erf(1 / math.sqrt(2)), math.erf(2 / math.sqrt(2))


def _stats(z: np.ndarray, batches: int = 4):
    """ZStatistics of standardised residuals z, shape (nfield, n), gathered in ``batches`` batches."""
    acc = ZAccumulator(z.shape[0], torch.device("cpu"))
    for part in np.array_split(z, batches, axis=1):
        acc.add(torch.from_numpy(part[None] ** 2))
    return acc.result()


def _student_minimax(nu: float) -> float:
    """The scale s minimising max(|P(|t| <= s) - P1|, |P(|t| <= 2 s) - P2|) for a Student-t with nu degrees."""

    def misses(s: float) -> tuple[float, float]:
        return 2 * stats.t.cdf(s, nu) - 1 - P1, 2 * stats.t.cdf(2 * s, nu) - 1 - P2

    # the two misses cross where they are equal and opposite (one level over-covered, the other under)
    return optimize.brentq(lambda s: misses(s)[0] + misses(s)[1], 0.5, 2.0)


def test_a_gaussian_gives_its_variance_by_either_rule():
    rng = np.random.default_rng(1)
    scales = np.array([0.5, 1.0, 3.0])
    z = scales[:, None] * rng.standard_normal((3, 400_000))
    s = _stats(z)
    np.testing.assert_allclose(calibration_factors([s], "variance"), (z**2).mean(axis=1), rtol=1e-12)
    np.testing.assert_allclose(calibration_factors([s], "coverage"), scales**2, rtol=0.01)


def test_coverage_rule_finds_the_student_t_minimax_scale():
    """Heavy tails (t with 5 degrees of freedom, kurtosis 9): unit variance over-covers 1 sigma; the rule's factor is
    the analytic minimax scale, and it misses the two levels by equal amounts, less than the variance rule."""
    nu = 5.0
    t = stats.t.rvs(nu, size=(1, 2_000_000), random_state=np.random.default_rng(2))
    s = _stats(t)
    factor = calibration_factors([s], "coverage")[0]
    expected = _student_minimax(nu)
    assert math.sqrt(factor) == pytest.approx(expected, rel=3e-3)
    cov = coverage([s], [factor])
    miss = np.abs([cov["cover1"][0] - P1, cov["cover2"][0] - P2])
    assert abs(miss[0] - miss[1]) < 2e-3, miss
    var = calibration_factors([s], "variance")
    cov_var = coverage([s], var)
    assert max(miss) < max(abs(cov_var["cover1"][0] - P1), abs(cov_var["cover2"][0] - P2)) - 0.01


def test_histogram_fractions_match_a_direct_count_within_one_bin():
    rng = np.random.default_rng(3)
    z = rng.laplace(size=(2, 50_000))
    s = _stats(z, batches=7)
    assert s.n == 50_000 and s.counts.dtype == np.int64
    for factors in ([1.0, 1.0], [0.37, 2.9]):
        got = coverage([s], factors, levels=(0.5, 1, 2))
        for k in (0.5, 1, 2):
            threshold = k * np.sqrt(factors)[:, None]
            direct = (np.abs(z) <= threshold).mean(axis=1)
            one_bin_less = (np.abs(z) <= threshold / 2 ** (1 / BINS_PER_OCTAVE)).mean(axis=1)
            assert np.all(one_bin_less - 1e-12 <= got[f"cover{k:g}"]) and np.all(got[f"cover{k:g}"] <= direct + 1e-12)
            assert np.all(direct - one_bin_less < 1e-3)  # so the bound is tight


def test_splits_weigh_alike_whatever_their_size():
    """A split of 2000 pixels with twice the scale counts as much as one of 200 000: the coverage factor of the two
    is that of their equal-weight mixture, and the variance factor the mean of theirs."""
    rng = np.random.default_rng(4)
    big, small = rng.standard_normal((1, 200_000)), 2 * rng.standard_normal((1, 2_000))
    a, b = _stats(big), _stats(small)
    var = calibration_factors([a, b], "variance")[0]
    assert var == pytest.approx(((big**2).mean() + (small**2).mean()) / 2, rel=1e-12)
    factor = calibration_factors([a, b], "coverage")[0]
    sd = math.sqrt(factor)
    mixture = [(2 * stats.norm.cdf(k * sd) - 1 + 2 * stats.norm.cdf(k * sd / 2) - 1) / 2 for k in (1, 2)]
    assert max(abs(mixture[0] - P1), abs(mixture[1] - P2)) < 0.03  # the mixture is met, not the big split
    assert 1.2 < sd < 1.8


def test_exact_zero_and_extreme_residuals_are_counted():
    z = np.array([[0.0, 1e-30, 0.5, 1.5, 1e30]])
    s = _stats(z, batches=1)
    assert s.n == 5 and s.counts[0, 0] == 2 and s.counts[0, -1] == 1
    assert coverage([s], [1.0])["cover1"] == [0.6]


def test_a_non_finite_residual_is_refused_by_name():
    acc = ZAccumulator(1, torch.device("cpu"))
    with pytest.raises(ValueError, match="NaN or infinite values.*diverged training"):
        acc.add(torch.tensor([[[1.0, float("nan")]]]))


def test_an_unknown_rule_is_refused():
    with pytest.raises(ValueError, match="unknown calibration rule 'median'"):
        calibration_factors([_stats(np.ones((1, 4)), batches=1)], "median")
