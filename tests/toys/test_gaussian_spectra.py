"""GaussianSpectra: samples, density and the exact score at every diffusion time."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from cosmobench.bmodes.sde import VESDE, VPSDE, SubVPSDE
from cosmobench.toys import GaussianSpectra


def _toy(d: int = 6, seed: int = 0) -> GaussianSpectra:
    rng = np.random.default_rng(seed)
    a = rng.standard_normal((d, d))
    return GaussianSpectra(mean=rng.standard_normal(d), cov=a @ a.T / d + 0.1 * np.eye(d))


def test_samples_have_the_mean_and_covariance():
    toy = _toy()
    n = 20000
    x = toy.sample(n, rng=np.random.default_rng(1))
    sd = np.sqrt(np.diag(toy.cov))
    assert np.all(np.abs(x.mean(0) - toy.mean) < 5 * sd / np.sqrt(n))
    # covariance elements: Var(x_i x_j) <= C_ii C_jj (1 + rho^2), so 5 sigma is 5 sqrt(2 C_ii C_jj / n)
    tol = 5 * np.sqrt(2 * np.outer(sd**2, sd**2) / n)
    assert np.all(np.abs(np.cov(x.T) - toy.cov) < tol)


def test_log_prob_matches_scipy():
    from scipy.stats import multivariate_normal

    toy = _toy()
    x = toy.sample(5, rng=np.random.default_rng(2))
    np.testing.assert_allclose(toy.log_prob(x), multivariate_normal(toy.mean, toy.cov).logpdf(x), rtol=1e-10)


@pytest.mark.parametrize("sde", [VESDE(0.01, 20.0), VPSDE(), SubVPSDE()], ids=["ve", "vp", "subvp"])
def test_score_is_the_gradient_of_the_marginal_log_density(sde):
    toy = _toy()
    t = 0.37
    mean, cov = toy.marginal(sde, t)
    x = torch.tensor(toy.sample(4, rng=np.random.default_rng(3)), dtype=torch.float64, requires_grad=True)
    logp = torch.distributions.MultivariateNormal(torch.tensor(mean), torch.tensor(cov)).log_prob(x).sum()
    (grad,) = torch.autograd.grad(logp, x)
    score = toy.score(sde, dtype=torch.float64)(x.detach(), t)
    np.testing.assert_allclose(score.numpy(), grad.numpy(), rtol=1e-9, atol=1e-12)


def test_score_at_time_zero_is_the_data_score():
    toy = _toy()
    sde = VESDE(0.01, 20.0)
    x = toy.sample(3, rng=np.random.default_rng(4))
    expected = -(x - toy.mean) @ np.linalg.inv(toy.cov)
    got = toy.score(sde, dtype=torch.float64)(torch.tensor(x), 0.0).numpy()
    np.testing.assert_allclose(got, expected, rtol=1e-9)


def test_per_sample_times_equal_scalar_calls():
    toy = _toy()
    sde = VPSDE()
    x = torch.tensor(toy.sample(3, rng=np.random.default_rng(5)), dtype=torch.float64)
    times = torch.tensor([0.01, 0.5, 0.99], dtype=torch.float64)
    score = toy.score(sde, dtype=torch.float64)
    batched = score(x, times)
    single = torch.cat([score(x[i : i + 1], float(times[i])) for i in range(3)])
    np.testing.assert_allclose(batched.numpy(), single.numpy(), rtol=1e-12)


def test_any_event_shape():
    d = 2 * 3 * 4
    toy = GaussianSpectra(mean=np.zeros((2, 3, 4)), cov=np.eye(d) * 2.0)
    x = toy.sample(5, rng=np.random.default_rng(6))
    assert x.shape == (5, 2, 3, 4)
    s = toy.score(VESDE(0.01, 20.0))(torch.tensor(x, dtype=torch.float32), 0.0)
    assert s.shape == (5, 2, 3, 4)
    np.testing.assert_allclose(s.numpy(), -x / 2.0, rtol=1e-5)


def test_rejects_bad_covariances():
    with pytest.raises(ValueError, match="shape"):
        GaussianSpectra(mean=np.zeros(3), cov=np.eye(2))
    with pytest.raises(ValueError, match="positive definite"):
        GaussianSpectra(mean=np.zeros(2), cov=np.array([[1.0, 2.0], [2.0, 1.0]]))
    with pytest.raises(ValueError, match="symmetric"):
        GaussianSpectra(mean=np.zeros(2), cov=np.array([[1.0, 0.5], [0.0, 1.0]]))
