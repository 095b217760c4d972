"""Denoising score matching for :func:`cosmobench.core.train.fit`.

For x_0 from the data, t ~ U(eps, T) (stratified over the batch), z ~ N(0, I) and x_t = m(t) x_0 + s(t) z, the
score model is trained on

- ``weighting="sigma2"`` (default, lambda(t) = s(t)^2): || s(t) score(x_t, t) + z ||^2,
- ``weighting="likelihood"`` (lambda(t) = g(t)^2, Song et al. 2021b): g(t)^2 || score(x_t, t) + z / s(t) ||^2,

averaged over the batch and over the dimensions of x (``reduce="mean"``) or half-summed over them (``"sum"``).
The function works for any rank of x (B, ...). A conditional batch is (x_0, y): the observation y is passed to
the model, and each sample's condition is dropped (``keep`` = 0) with probability ``p_uncond`` so that the same
network also learns the unconditional score.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch

from .sde import SDE, per_sample

__all__ = ["dsm_loss", "WEIGHTINGS"]

WEIGHTINGS = ("sigma2", "likelihood")


def dsm_loss(
    sde: SDE, *, eps: float = 1e-5, weighting: str = "sigma2", reduce: str = "mean", p_uncond: float = 0.0
) -> Callable[[torch.nn.Module, Sequence[torch.Tensor]], torch.Tensor]:
    """Build ``loss_fn(model, batch) -> scalar`` for denoising score matching.

    Parameters
    ----------
    sde : SDE
        Forward process.
    eps : float
        Smallest training time (t ~ U(eps, T)).
    weighting : {"sigma2", "likelihood"}
        lambda(t) = s(t)^2 or g(t)^2.
    reduce : {"mean", "sum"}
        Mean over dimensions, or half the sum (score_sde's VE configs).
    p_uncond : float
        Probability of dropping the condition of a sample (conditional models only).

    Returns
    -------
    callable
        ``loss_fn(model, batch)``; ``batch = (x0,)`` or ``(x0, y)``; ``model(x_t, t)`` or
        ``model(x_t, t, y, keep)`` returns the score, shape like x_t.
    """
    if weighting not in WEIGHTINGS:
        raise ValueError(f"unknown weighting {weighting!r}; expected one of {list(WEIGHTINGS)}")
    if reduce not in ("mean", "sum"):
        raise ValueError(f"unknown reduce {reduce!r}; expected 'mean' or 'sum'")
    if not 0.0 <= p_uncond < 1.0:
        raise ValueError(f"p_uncond must lie in [0, 1), got {p_uncond}")
    if not 0 < eps < sde.T:
        raise ValueError(f"eps must lie in (0, T={sde.T}), got {eps}")

    def loss_fn(model: torch.nn.Module, batch: Sequence[torch.Tensor]) -> torch.Tensor:
        x0 = batch[0]
        n = len(x0)
        # stratified times: sample i gets U((k_i + u_i) / n) with k a random permutation: each t is still U(eps, T)
        # but the batch covers [eps, T] evenly, which cuts the variance of the loss (and of validation scores)
        strata = torch.randperm(n, device=x0.device).to(x0.dtype)
        t = (strata + torch.rand(n, device=x0.device, dtype=x0.dtype)) / n * (sde.T - eps) + eps
        z = torch.randn_like(x0)
        mean, std = sde.marginal_prob(x0, t)
        xt = mean + std * z
        if len(batch) > 1:
            keep = (torch.rand(n, device=x0.device) >= p_uncond).to(x0.dtype)
            score = model(xt, t, batch[1], keep)
        else:
            score = model(xt, t)
        if weighting == "sigma2":
            per_elem = (score * std + z).square()
        else:
            per_elem = per_sample(sde.diffusion(t) ** 2, x0) * (score + z / std).square()
        per_elem = per_elem.flatten(1)
        per_sample_loss = per_elem.mean(1) if reduce == "mean" else 0.5 * per_elem.sum(1)
        return per_sample_loss.mean()

    return loss_fn
