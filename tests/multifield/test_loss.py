"""The moment loss against a hand computation, and its minimiser is the posterior mean and variance."""

from __future__ import annotations

import math

import torch

from cosmobench.multifield.loss import moment_loss


def test_moment_loss_hand_computed():
    mu = torch.tensor([[0.5, 0.2], [0.1, 0.4], [0.3, 0.9]])
    theta = torch.tensor([[0.4, 0.0], [0.3, 0.4], [0.3, 0.5]])
    sigma = torch.tensor([[0.1, 0.1], [0.2, 0.1], [0.1, 0.3]])
    # param 0: errors 0.1, -0.2, 0 -> sq 0.01, 0.04, 0; loss1 = 0.05/3; sigma^2 0.01, 0.04, 0.01 -> diffs 0, 0, -0.01
    l1a, l2a = 0.05 / 3, (0.0 + 0.0 + 1e-4) / 3
    # param 1: errors 0.2, 0, 0.4 -> sq 0.04, 0, 0.16; loss1 = 0.2/3; sigma^2 0.01, 0.01, 0.09 -> diffs .03 -.01 .07
    l1b, l2b = 0.2 / 3, (9e-4 + 1e-4 + 4.9e-3) / 3
    expected = 0.5 * (math.log(l1a) + math.log(l2a) + math.log(l1b) + math.log(l2b))
    assert math.isclose(float(moment_loss(mu, sigma, theta)), expected, rel_tol=1e-5)
    only_first = math.log(l1a) + math.log(l2a)
    assert math.isclose(float(moment_loss(mu, sigma, theta, params=[0])), only_first, rel_tol=1e-5)


def test_minimiser_is_mean_and_variance():
    """For theta ~ N(m, s^2) and constant predictions, the loss is smallest at mu = mean, sigma = std."""
    gen = torch.Generator().manual_seed(0)
    theta = 0.3 + 0.05 * torch.randn(20000, 1, generator=gen)
    m, s = float(theta.mean()), float(theta.std())

    def loss(mu, sigma):
        return float(moment_loss(torch.full_like(theta, mu), torch.full_like(theta, sigma), theta))

    best = loss(m, s)
    for dm, ds in [(0.01, 0), (-0.01, 0), (0, 0.005), (0, -0.005), (0.005, 0.005)]:
        assert loss(m + dm, s + ds) > best
