"""Gaussian "spectra" with their exact score at every diffusion time: the reference for testing samplers.

If x_0 ~ N(mu, C) and the forward SDE has the Gaussian kernel x_t | x_0 ~ N(m(t) x_0, s(t)^2 I), then
x_t ~ N(m mu, m^2 C + s^2 I) and its score is -(m^2 C + s^2 I)^{-1} (x - m mu). Using the eigenbasis of C,
C = U diag(lam) U^T, the score costs two matrix products per call at any t. Samplers driven by this score must
return N(mu, C) up to their discretisation error, with no training involved.

The event shape may be anything (``mean`` of shape (d,) for spectra, (C, H, W) for maps); ``cov`` is always the
(d, d) covariance of the flattened event.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

__all__ = ["GaussianSpectra"]


class GaussianSpectra:
    """A Gaussian distribution N(mean, cov) of vectors (or of any event shape).

    Parameters
    ----------
    mean : array_like, shape event_shape (e.g. (n_ell,) or (C, H, W))
    cov : array_like, shape (d, d), d = prod(event_shape); symmetric positive definite

    Examples
    --------
    >>> import numpy as np
    >>> toy = GaussianSpectra(mean=np.zeros(3), cov=np.diag([1.0, 2.0, 3.0]))
    >>> toy.sample(5, rng=np.random.default_rng(0)).shape
    (5, 3)
    """

    def __init__(self, mean, cov):
        self.mean = np.asarray(mean, dtype=np.float64)
        self.event_shape = self.mean.shape
        self.dim = int(self.mean.size)
        cov = np.asarray(cov, dtype=np.float64)
        if cov.shape != (self.dim, self.dim):
            raise ValueError(
                f"cov must have shape ({self.dim}, {self.dim}) for a mean of shape {self.event_shape}, got {cov.shape}"
            )
        if not np.allclose(cov, cov.T, rtol=1e-10, atol=1e-12 * np.abs(cov).max()):
            raise ValueError("cov must be symmetric")
        lam, vec = np.linalg.eigh(cov)
        if lam.min() <= 0:
            raise ValueError(f"cov must be positive definite; smallest eigenvalue {lam.min():.3g}")
        self.cov, self.eigvals, self.eigvecs = cov, lam, vec

    def sample(self, n: int, rng: np.random.Generator) -> np.ndarray:
        """Draw ``n`` samples, shape (n, *event_shape)."""
        z = rng.standard_normal((int(n), self.dim))
        x = self.mean.reshape(-1) + (z * np.sqrt(self.eigvals)) @ self.eigvecs.T
        return x.reshape((int(n),) + self.event_shape)

    def log_prob(self, x: np.ndarray) -> np.ndarray:
        """Log density of samples of shape (n, *event_shape), shape (n,)."""
        r = (np.asarray(x).reshape(len(x), -1) - self.mean.reshape(-1)) @ self.eigvecs
        return -0.5 * (np.sum(r**2 / self.eigvals, 1) + np.sum(np.log(2 * np.pi * self.eigvals)))

    def marginal(self, sde, t: float) -> tuple[np.ndarray, np.ndarray]:
        """Mean (d,) and covariance (d, d) of p_t under the forward ``sde`` (any object with ``mean_coeff`` and
        ``marginal_std`` of a float time)."""
        m, s = float(sde.mean_coeff(float(t))), float(sde.marginal_std(float(t)))
        return m * self.mean.reshape(-1), m**2 * self.cov + s**2 * np.eye(self.dim)

    def score(self, sde, *, dtype=None, device=None) -> Callable:
        """The exact score of p_t under ``sde``, as a torch function ``score(x, t)``.

        Parameters
        ----------
        sde : SDE
            Needs ``mean_coeff(t)`` and ``marginal_std(t)`` for float and tensor ``t``.
        dtype, device : torch dtype and device, optional
            Of the returned scores; default float32 on the CPU.

        Returns
        -------
        callable
            ``score(x, t) -> tensor like x``; x has shape (B, *event_shape), t is a float, a 0-d tensor or a
            tensor of shape (B,).
        """
        import torch

        dtype = dtype or torch.float32
        vec = torch.as_tensor(self.eigvecs, dtype=dtype, device=device)
        lam = torch.as_tensor(self.eigvals, dtype=dtype, device=device)
        mu = torch.as_tensor(self.mean.reshape(-1), dtype=dtype, device=device)

        def score(x: torch.Tensor, t) -> torch.Tensor:
            if isinstance(t, torch.Tensor) and t.ndim == 1:
                m = sde.mean_coeff(t.to(dtype))[:, None]
                s = sde.marginal_std(t.to(dtype))[:, None]
            else:
                m, s = float(sde.mean_coeff(float(t))), float(sde.marginal_std(float(t)))
            flat = x.reshape(len(x), -1)
            r = (flat - m * mu) @ vec
            return (-(r / (m**2 * lam + s**2)) @ vec.T).reshape(x.shape)

        return score
