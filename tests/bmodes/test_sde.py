"""Forward SDEs: closed forms agree with each other and with a simulation of the SDE."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from cosmobench.bmodes.sde import SDES, VESDE, VPSDE, SubVPSDE, get_sde, per_sample

ALL = [VESDE(0.01, 20.0), VPSDE(0.1, 20.0), SubVPSDE(0.1, 20.0)]
IDS = ["ve", "vp", "subvp"]


@pytest.mark.parametrize("sde", ALL, ids=IDS)
def test_moments_obey_the_linear_sde_odes(sde):
    """dm/dt = a m and d(s^2)/dt = 2 a s^2 + g^2 for dx = a x dt + g dw."""
    t = np.linspace(0.05, 0.95, 19)
    h = 1e-6
    dm = (sde.mean_coeff(t + h) - sde.mean_coeff(t - h)) / (2 * h)
    ds2 = (sde.marginal_std(t + h) ** 2 - sde.marginal_std(t - h) ** 2) / (2 * h)
    a, g, m, s = sde.drift_coeff(t), sde.diffusion(t), sde.mean_coeff(t), sde.marginal_std(t)
    np.testing.assert_allclose(dm, a * m, rtol=1e-6, atol=1e-9)
    np.testing.assert_allclose(ds2, 2 * a * s**2 + g**2, rtol=1e-5)


@pytest.mark.parametrize("sde", ALL, ids=IDS)
def test_forward_simulation_matches_the_marginal(sde):
    """Euler-Maruyama on the forward SDE from a fixed x_0 reaches N(m x_0, s^2) at t = 0.5."""
    n, steps, t_end = 4000, 400, 0.5
    gen = torch.Generator().manual_seed(0)
    x0 = torch.full((n, 1), 1.5, dtype=torch.float64)
    x = x0.clone()
    dt = t_end / steps
    for i in range(steps):
        drift, g = sde.sde(x, i * dt)
        x = x + drift * dt + g * np.sqrt(dt) * torch.randn(x.shape, generator=gen, dtype=torch.float64)
    mean, std = sde.marginal_prob(x0[:1], t_end)
    assert abs(x.mean().item() - mean.item()) < 5 * std / np.sqrt(n) + 1e-3 * abs(mean.item())
    assert abs(x.std().item() / std - 1) < 5 * np.sqrt(0.5 / n) + 5e-3


def test_ve_std_is_exact_and_vanishes_at_zero():
    sde = VESDE(0.1, 10.0)
    assert sde.marginal_std(0.0) == 0.0
    np.testing.assert_allclose(sde.marginal_std(1.0), 0.1 * np.sqrt(100**2 - 1), rtol=1e-12)
    assert sde.prior_std == pytest.approx(sde.marginal_std(1.0))


def test_vp_forgets_the_data_at_t_one():
    sde = VPSDE(0.1, 20.0)
    assert sde.mean_coeff(1.0) < 0.01
    assert sde.marginal_std(1.0) == pytest.approx(1.0, abs=1e-4)
    assert SubVPSDE().marginal_std(1.0) == pytest.approx(1.0, abs=1e-4)


@pytest.mark.parametrize("sde", ALL, ids=IDS)
def test_float_array_and_tensor_times_agree(sde):
    t = np.array([1e-4, 0.3, 1.0])
    for fn in (sde.drift_coeff, sde.diffusion, sde.mean_coeff, sde.marginal_std):
        as_float = np.array([fn(float(v)) for v in t])
        np.testing.assert_allclose(fn(t), as_float, rtol=1e-12)
        np.testing.assert_allclose(fn(torch.tensor(t)).numpy(), as_float, rtol=1e-12)
        assert isinstance(fn(0.3), float)


@pytest.mark.parametrize("sde", ALL, ids=IDS)
def test_transitions_compose(sde):
    """The exact transition 0.2 -> 0.6 equals 0.2 -> 0.4 followed by 0.4 -> 0.6."""
    r1, s1 = sde.transition(0.2, 0.4)
    r2, s2 = sde.transition(0.4, 0.6)
    r, s = sde.transition(0.2, 0.6)
    assert r == pytest.approx(r1 * r2, rel=1e-12)
    assert s**2 == pytest.approx(r2**2 * s1**2 + s2**2, rel=1e-9)


def test_marginal_prob_broadcasts_over_any_rank():
    sde = VPSDE()
    x = torch.ones(3, 2, 4, 4)
    t = torch.tensor([0.1, 0.5, 0.9])
    mean, std = sde.marginal_prob(x, t)
    assert mean.shape == x.shape and std.shape == (3, 1, 1, 1)
    np.testing.assert_allclose(mean[:, 0, 0, 0].numpy(), sde.mean_coeff(t).numpy(), rtol=1e-6)
    assert per_sample(torch.tensor([1.0, 2.0]), torch.zeros(2, 5)).shape == (2, 1)
    z = torch.randn(3, 2, 4, 4)
    assert torch.allclose(sde.prior_logp(z), torch.distributions.Normal(0, 1).log_prob(z).flatten(1).sum(1))


def test_registry_and_errors():
    assert set(SDES) == {"ve", "vp", "subvp"}
    assert isinstance(get_sde("VE", sigma_min=0.1, sigma_max=10), VESDE)
    assert get_sde(**VPSDE(0.2, 15.0, N=100).config()).beta_max == 15.0
    with pytest.raises(ValueError, match="expected one of"):
        get_sde("ddpm")
    with pytest.raises(TypeError, match="valid arguments"):
        get_sde("ve", beta_min=0.1)
    with pytest.raises(ValueError, match="sigma_min < sigma_max"):
        VESDE(10.0, 1.0)
