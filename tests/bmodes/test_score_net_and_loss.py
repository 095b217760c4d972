"""ScoreNet1D / ScoreModel plumbing and the denoising score-matching loss against its exact minimum."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from cosmobench.bmodes.losses import dsm_loss
from cosmobench.bmodes.score_net import ScoreModel, ScoreNet1D
from cosmobench.bmodes.sde import VESDE, VPSDE, per_sample
from cosmobench.toys import GaussianSpectra


def _model(cond: bool, sde=None) -> ScoreModel:
    torch.manual_seed(0)
    net = ScoreNet1D(12, hidden_dim=32, embed_dim=16, num_layers=4, cond_dim=12 if cond else 0)
    return ScoreModel(net, sde or VESDE(0.01, 20.0)).eval()


def test_shapes_and_layer_count():
    net = ScoreNet1D(30, hidden_dim=64, embed_dim=32, num_layers=5)
    assert len(net.hidden_layers) == 3  # input + 3 hidden + output = 5 linear layers, as the prototype
    out = net(torch.randn(7, 30), torch.rand(7))
    assert out.shape == (7, 30)
    assert net(torch.randn(7, 30), torch.tensor(0.5)).shape == (7, 30)


@pytest.mark.parametrize("cond", [False, True])
def test_score_fn_equals_forward_over_std(cond):
    """The lean sampler path (shared t, condition projected once, 1/s(t) folded in) equals the plain forward."""
    model = _model(cond)
    x, y = torch.randn(5, 12), torch.randn(5, 12)
    with torch.no_grad():
        for t in (1e-3, 0.4, 1.0):
            ref = model(x, torch.full((5,), t), y if cond else None)
            torch.testing.assert_close(model.score_fn(y if cond else None)(x, t), ref, rtol=1e-5, atol=1e-5)
            torch.testing.assert_close(
                model.score_fn(y if cond else None)(x, torch.tensor(t)), ref, rtol=1e-5, atol=1e-5
            )


def test_dropped_condition_ignores_the_observation():
    model = _model(True)
    x = torch.randn(5, 12)
    t = torch.full((5,), 0.3)
    with torch.no_grad():
        a = model(x, t, torch.randn(5, 12), keep=0.0)
        b = model(x, t, torch.randn(5, 12), keep=0.0)
        c = model(x, t, torch.randn(5, 12), keep=1.0)
        torch.testing.assert_close(a, b)
        torch.testing.assert_close(model.score_fn(None, keep=0.0)(x, 0.3), a, rtol=1e-5, atol=1e-5)
    assert not torch.allclose(a, c)
    with pytest.raises(ValueError, match="needs the observations"):
        model.score_fn(None, keep=1.0)
    with pytest.raises(ValueError, match="unconditional"):
        _model(False).score_fn(torch.randn(5, 12))


def _exact_min(toy, sde, t):
    """Per-dimension minimum of E||s(t) score + z||^2 for Gaussian data: mean over eigenvalues of
    m^2 lam / (m^2 lam + s^2)."""
    m, s = sde.mean_coeff(t), sde.marginal_std(t)
    return np.mean(m**2 * toy.eigvals / (m**2 * toy.eigvals + s**2))


class _ExactScore(torch.nn.Module):
    def __init__(self, fn, scale=1.0):
        super().__init__()
        self.fn, self.scale = fn, scale

    def forward(self, x, t):
        return self.fn(x, t) * self.scale


@pytest.mark.parametrize("sde", [VESDE(0.01, 20.0), VPSDE()], ids=["ve", "vp"])
def test_dsm_loss_at_the_exact_score_is_its_minimum(sde):
    rng = np.random.default_rng(0)
    a = rng.standard_normal((6, 6))
    toy = GaussianSpectra(mean=np.ones((2, 3)), cov=a @ a.T / 6 + 0.1 * np.eye(6))  # a rank-3 event (B, 2, 3)
    x0 = torch.tensor(toy.sample(200000, rng=rng), dtype=torch.float64)
    loss = dsm_loss(sde, eps=1e-5)
    torch.manual_seed(1)
    exact = loss(_ExactScore(toy.score(sde, dtype=torch.float64)), (x0,)).item()
    ts = np.linspace(1e-5, 1, 20001)
    expected = np.mean([_exact_min(toy, sde, t) for t in ts])
    # per-sample loss values are O(1) with O(1) spread: 5 sigma for 2e5 samples is about 0.01
    assert exact == pytest.approx(expected, abs=0.01)
    torch.manual_seed(1)
    worse = loss(_ExactScore(toy.score(sde, dtype=torch.float64), 1.3), (x0,)).item()
    assert worse > exact + 0.01


def test_likelihood_weighting_and_conditional_batches():
    sde = VPSDE()
    model = _model(True, sde).train()
    x0, y = torch.randn(64, 12), torch.randn(64, 12)
    for w in ("sigma2", "likelihood"):
        value = dsm_loss(sde, weighting=w, p_uncond=0.5)(model, (x0, y))
        assert value.ndim == 0 and torch.isfinite(value)
        value.backward()
    assert model.net.cond_in.weight.grad is not None
    with pytest.raises(ValueError, match="weighting"):
        dsm_loss(sde, weighting="snr")
    assert per_sample(torch.ones(3), torch.zeros(3, 4, 5)).shape == (3, 1, 1)
