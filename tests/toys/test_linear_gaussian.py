"""The linear-Gaussian toy: its posterior is exact (checked against the joint distribution and scipy)."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import multivariate_normal

from cosmobench.core.seeds import rng
from cosmobench.toys import LinearGaussian


def test_posterior_z_scores_of_joint_draws_are_standard_normal():
    """If p(theta | x) is right, (theta - mu_post(x)) / L^-1 over joint draws is N(0, I) exactly."""
    toy = LinearGaussian(dim=3, x_dim=5, noise_cov=0.3, prior_mean=[0.5, -1.0, 2.0], seed=2)
    theta, x = toy.sample_joint(20000, seed=1)
    post = toy.true_posterior(x)
    z = np.linalg.solve(np.linalg.cholesky(post.cov), (theta - post.mean).T).T
    n = len(z)
    assert np.all(np.abs(z.mean(0)) < 5 / np.sqrt(n))
    cov = np.cov(z.T)
    assert np.all(np.abs(cov - np.eye(3)) < 5 * np.sqrt(2 / n))


def test_posterior_matches_conjugate_formula_in_one_dimension():
    # theta ~ N(0, 1), x = 2 theta + 1 + N(0, 0.5^2): precision 1 + 4 / 0.25 = 17
    toy = LinearGaussian(dim=1, matrix=[[2.0]], offset=[1.0], noise_cov=0.25)
    post = toy.true_posterior(np.array([3.0]))
    assert np.isclose(post.cov[0, 0], 1 / 17)
    assert np.isclose(post.mean[0], (2 * (3.0 - 1.0) / 0.25) / 17)


def test_log_prob_and_samples_agree_with_scipy():
    toy = LinearGaussian(dim=2, prior_cov=[[1.0, 0.3], [0.3, 2.0]], noise_cov=0.5)
    post = toy.true_posterior(np.array([0.2, -0.4]))
    pts = rng(0, "pts").standard_normal((10, 2))
    np.testing.assert_allclose(post.log_prob(pts), multivariate_normal(post.mean, post.cov).logpdf(pts), rtol=1e-10)
    s = post.sample(40000, seed=3)
    assert np.all(np.abs(s.mean(0) - post.mean) < 5 * post.std / np.sqrt(len(s)))
    np.testing.assert_allclose(np.cov(s.T), post.cov, atol=5 * np.sqrt(2 / len(s)) * post.cov.max())


def test_batch_shapes_and_bad_shapes():
    toy = LinearGaussian(dim=2)
    theta, x = toy.sample_joint(7, seed=0)
    assert theta.shape == x.shape == (7, 2)
    post = toy.true_posterior(x)
    assert post.sample(4).shape == (4, 7, 2)
    assert post.log_prob(theta).shape == (7,)
    with pytest.raises(ValueError, match="matrix"):
        LinearGaussian(dim=2, matrix=np.eye(3))
