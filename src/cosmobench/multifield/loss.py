"""The moment-network loss of Jeffrey & Wandelt (arXiv:2011.05991), as used by the CMD benchmark.

For each trained parameter i, over a batch b:

    loss1_i = mean_b (mu_i - theta_i)^2,    loss2_i = mean_b ((mu_i - theta_i)^2 - sigma_i^2)^2,
    L = mean_i [log loss1_i + log loss2_i].

Minimising loss1 makes mu the posterior mean; minimising loss2 makes sigma^2 the posterior variance (the
conditional mean of the squared error). The logs balance parameters of different difficulty.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

__all__ = ["moment_loss", "moment_terms"]


def moment_terms(mean: torch.Tensor, std: torch.Tensor, theta: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-parameter batch means ``loss1`` and ``loss2``, each of shape (n_params,).

    Parameters
    ----------
    mean, std, theta : tensors of shape (B, n_params)
        Predicted posterior mean, predicted standard deviation (>= 0) and true value, in the same units.
    """
    if not mean.shape == std.shape == theta.shape:
        raise ValueError(f"mean, std and theta must have one shape, got {mean.shape}, {std.shape}, {theta.shape}")
    sq = torch.square(mean - theta)
    return sq.mean(0), torch.square(sq - torch.square(std)).mean(0)


def moment_loss(
    mean: torch.Tensor, std: torch.Tensor, theta: torch.Tensor, params: Sequence[int] | None = None
) -> torch.Tensor:
    """The moment loss ``mean_i [log loss1_i + log loss2_i]`` over the parameters ``params`` (default all).

    Computed in float32 whatever the autocast dtype. Returns a scalar tensor.
    """
    mean, std, theta = mean.float(), std.float(), theta.float()
    if params is not None:
        idx = list(params)
        mean, std, theta = mean[:, idx], std[:, idx], theta[:, idx]
    loss1, loss2 = moment_terms(mean, std, theta)
    return torch.mean(torch.log(loss1) + torch.log(loss2))
