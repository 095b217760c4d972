"""A linear-Gaussian simulator with its exact posterior: the reference for testing posterior estimators.

theta ~ N(mu_0, S_0) and x = A theta + b + n with n ~ N(0, S_n). The posterior is Gaussian with

    S_post = (S_0^-1 + A^T S_n^-1 A)^-1,    mu_post(x) = S_post (S_0^-1 mu_0 + A^T S_n^-1 (x - b)),

the same covariance for every x. A network that predicts posterior means and standard deviations (a moment
network), an NPE or a sampler can be checked against it without any training data of its own.
"""

from __future__ import annotations

import numpy as np

from ..core.seeds import rng as seeded_rng

__all__ = ["LinearGaussian", "GaussianPosterior"]


class GaussianPosterior:
    """N(mean, cov) for one or a batch of observations (shared covariance).

    Parameters
    ----------
    mean : ndarray, shape (dim,) or (n, dim)
    cov : ndarray, shape (dim, dim)
    """

    def __init__(self, mean: np.ndarray, cov: np.ndarray):
        self.mean = np.asarray(mean, dtype=np.float64)
        self.cov = np.asarray(cov, dtype=np.float64)
        self._chol = np.linalg.cholesky(self.cov)

    @property
    def std(self) -> np.ndarray:
        """Marginal standard deviations, shape (dim,)."""
        return np.sqrt(np.diag(self.cov))

    def sample(self, n: int, rng: np.random.Generator | None = None, seed: int = 0) -> np.ndarray:
        """``n`` draws, shape (n, dim) for one observation or (n, n_obs, dim) for a batch."""
        gen = rng if rng is not None else seeded_rng(seed, "gaussian_posterior")
        z = gen.standard_normal((n, *self.mean.shape))
        return self.mean + z @ self._chol.T

    def log_prob(self, theta: np.ndarray) -> np.ndarray:
        """Log density at ``theta`` (broadcast against ``mean``), shape of the leading axes."""
        d = np.asarray(theta, dtype=np.float64) - self.mean
        sol = np.linalg.solve(self._chol, d[..., None])[..., 0]
        dim = self.cov.shape[0]
        return -0.5 * np.sum(sol**2, axis=-1) - np.log(np.diag(self._chol)).sum() - 0.5 * dim * np.log(2 * np.pi)


class LinearGaussian:
    """theta ~ N(prior_mean, prior_cov), x = matrix @ theta + offset + N(0, noise_cov).

    Parameters
    ----------
    dim : int
        Dimension of theta.
    x_dim : int, optional
        Dimension of x (default ``dim``).
    prior_mean, prior_cov : array_like, optional
        Default zero mean and identity covariance.
    matrix : array_like, shape (x_dim, dim), optional
        Default: identity when ``x_dim == dim``, else a fixed random matrix from ``seed``.
    offset : array_like, shape (x_dim,), optional
        Default zero.
    noise_cov : array_like or float, optional
        Default 0.25 I (noise standard deviation 0.5); a float means that multiple of the identity.
    seed : int
        Seed of the default random matrix.

    Examples
    --------
    >>> toy = LinearGaussian(dim=2)
    >>> theta, x = toy.sample_joint(3, seed=0)
    >>> toy.true_posterior(x).mean.shape
    (3, 2)
    """

    def __init__(
        self,
        dim: int = 2,
        *,
        x_dim: int | None = None,
        prior_mean=None,
        prior_cov=None,
        matrix=None,
        offset=None,
        noise_cov=None,
        seed: int = 0,
    ):
        if dim < 1:
            raise ValueError(f"dim must be >= 1, got {dim}")
        self.dim = int(dim)
        self.x_dim = int(x_dim or dim)
        self.prior_mean = np.zeros(dim) if prior_mean is None else np.asarray(prior_mean, dtype=np.float64)
        self.prior_cov = np.eye(dim) if prior_cov is None else np.asarray(prior_cov, dtype=np.float64)
        if matrix is None:
            matrix = (
                np.eye(dim)
                if self.x_dim == dim
                else seeded_rng(seed, "linear_gaussian_matrix").standard_normal((self.x_dim, dim))
            )
        self.matrix = np.asarray(matrix, dtype=np.float64)
        self.offset = np.zeros(self.x_dim) if offset is None else np.asarray(offset, dtype=np.float64)
        if noise_cov is None:
            noise_cov = 0.25
        self.noise_cov = (
            float(noise_cov) * np.eye(self.x_dim)
            if np.ndim(noise_cov) == 0
            else np.asarray(noise_cov, dtype=np.float64)
        )
        shapes = {
            "prior_mean": (self.prior_mean.shape, (dim,)),
            "prior_cov": (self.prior_cov.shape, (dim, dim)),
            "matrix": (self.matrix.shape, (self.x_dim, dim)),
            "offset": (self.offset.shape, (self.x_dim,)),
            "noise_cov": (self.noise_cov.shape, (self.x_dim, self.x_dim)),
        }
        for name, (got, want) in shapes.items():
            if got != want:
                raise ValueError(f"{name} must have shape {want}, got {got}")
        prior_prec = np.linalg.inv(self.prior_cov)
        noise_prec = np.linalg.inv(self.noise_cov)
        self.posterior_cov = np.linalg.inv(prior_prec + self.matrix.T @ noise_prec @ self.matrix)
        self._gain = self.posterior_cov @ self.matrix.T @ noise_prec
        self._base = self.posterior_cov @ prior_prec @ self.prior_mean
        self._prior_chol = np.linalg.cholesky(self.prior_cov)
        self._noise_chol = np.linalg.cholesky(self.noise_cov)

    def sample_prior(self, n: int, rng: np.random.Generator) -> np.ndarray:
        """``n`` prior draws, shape (n, dim)."""
        return self.prior_mean + rng.standard_normal((n, self.dim)) @ self._prior_chol.T

    def simulate(self, theta: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """One x per row of ``theta`` (n, dim) -> (n, x_dim)."""
        theta = np.atleast_2d(theta)
        noise = rng.standard_normal((len(theta), self.x_dim)) @ self._noise_chol.T
        return theta @ self.matrix.T + self.offset + noise

    def sample_joint(self, n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
        """``n`` pairs (theta, x) from the joint distribution, streams ``rng(seed, "linear_gaussian", ...)``."""
        theta = self.sample_prior(n, seeded_rng(seed, "linear_gaussian", "theta"))
        return theta, self.simulate(theta, seeded_rng(seed, "linear_gaussian", "x"))

    def true_posterior(self, x: np.ndarray) -> GaussianPosterior:
        """The exact posterior p(theta | x) for x of shape (x_dim,) or (n, x_dim)."""
        x = np.asarray(x, dtype=np.float64)
        mean = self._base + (x - self.offset) @ self._gain.T
        return GaussianPosterior(mean, self.posterior_cov)
