"""A moment network trained with the moment loss (through core.train.fit) on the linear-Gaussian toy recovers the
exact posterior means and standard deviations, and its mean +- std intervals have nominal coverage."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from cosmobench.core.train import fit
from cosmobench.multifield.calibration import coverage_curve
from cosmobench.multifield.loss import moment_loss
from cosmobench.toys import LinearGaussian


class _MomentMLP(nn.Module):
    def __init__(self, d_in: int, d_out: int):
        super().__init__()
        self.d_out = d_out
        self.net = nn.Sequential(nn.Linear(d_in, 64), nn.SiLU(), nn.Linear(64, 64), nn.SiLU(), nn.Linear(64, 2 * d_out))

    def forward(self, x):
        out = self.net(x)
        return torch.cat([out[:, : self.d_out], torch.square(out[:, self.d_out :])], dim=1)


def _loss(model, batch):
    x, theta = batch
    out = model(x)
    return moment_loss(out[:, :2], out[:, 2:], theta)


def test_moment_network_is_calibrated_on_linear_gaussian():
    toy = LinearGaussian(dim=2, x_dim=3, noise_cov=0.5, seed=1)
    theta, x = toy.sample_joint(12000, seed=0)
    th_test, x_test = toy.sample_joint(4000, seed=1)
    tensors = [torch.as_tensor(a, dtype=torch.float32) for a in (x, theta)]
    torch.manual_seed(0)
    model = _MomentMLP(3, 2)
    fit(
        model,
        (tensors[0][:10000], tensors[1][:10000]),
        (tensors[0][10000:], tensors[1][10000:]),
        loss_fn=_loss,
        epochs=25,
        batch_size=500,
        lr=3e-3,
        device="cpu",
        progress=False,
        seed=0,
    )
    model.eval()
    with torch.no_grad():
        out = model(torch.as_tensor(x_test, dtype=torch.float32)).double().numpy()
    mu, sigma = out[:, :2], out[:, 2:]
    post = toy.true_posterior(x_test)
    # means: error against the exact posterior mean well below the posterior width
    assert np.all(np.sqrt(np.mean((mu - post.mean) ** 2, axis=0)) < 0.1 * post.std)
    # standard deviations: within 10 % of the exact (constant) posterior std
    assert np.all(np.abs(np.median(sigma, axis=0) / post.std - 1) < 0.1)
    cov = coverage_curve(th_test, mu, sigma, np.arange(len(th_test)), np.array([0.68, 0.95]), n_boot=10)
    tol = 5 * np.sqrt(0.68 * 0.32 / len(th_test)) + 0.03  # binomial 5 sigma + a small model error
    assert np.all(np.abs(cov["per_map"][0] - 0.68) < tol)
    assert np.all(np.abs(cov["per_map"][1] - 0.95) < 5 * np.sqrt(0.95 * 0.05 / len(th_test)) + 0.02)
