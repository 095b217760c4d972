"""The classical optimum for r: exact full-sky spectrum likelihoods, maximum-likelihood estimates and Fisher bounds.

For a Gaussian, statistically isotropic B-mode field observed on the full sky, the spectrum estimate of each
multipole obeys (2l + 1) C_hat_l / C_l ~ chi^2_{2l+1}, so (up to a constant)

    -2 ln L(r) = sum_l nu_l [C_hat_l / C_l(r) + ln C_l(r)],   nu_l = (2l + 1) f_sky,

with C_l(r) = r C_l^t + C_l^other. ``C_l^t`` is the tensor template at r = 1 and ``C_l^other`` everything else that
enters the spectrum (lensing, noise, foreground residual), all as they appear in the estimated spectrum (beam
included). On a masked sky with a pseudo-C_l / f_sky estimator the same form with nu_l = (2l + 1) f_sky is the
usual approximation (Hamimeche & Lewis 2008 reduce to it for one spectrum). The Fisher bound is
sigma(r)^-2 = sum_l nu_l / 2 (C_l^t / C_l(r))^2.

For the *clean* tensor spectrum (C_l^other = 0) the likelihood is an inverse gamma in r with the closed-form
maximum r_hat = sum_l nu_l u_l / sum_l nu_l, u_l = C_hat_l / C_l^t; :func:`clean_r_posterior_draws` uses it to turn
posterior draws of the clean spectrum into posterior draws of r.

Every function here is vectorised over spectra: ``cl_hat`` has shape (..., n_ell); templates have shape (n_ell,).
"""

from __future__ import annotations

import numpy as np

__all__ = [
    "dof",
    "neg2_loglike",
    "fisher_sigma_r",
    "fit_r",
    "clean_r_hat",
    "clean_r_posterior_draws",
]


def dof(ell: np.ndarray, fsky: float = 1.0) -> np.ndarray:
    """nu_l = (2l + 1) f_sky, shape (n_ell,)."""
    return (2 * np.asarray(ell, dtype=float) + 1) * float(fsky)


def neg2_loglike(
    r: np.ndarray | float,
    cl_hat: np.ndarray,
    cl_tensor: np.ndarray,
    cl_other: np.ndarray,
    ell: np.ndarray,
    fsky: float = 1.0,
) -> np.ndarray:
    """-2 ln L(r) = sum_l nu_l (C_hat/C + ln C) on a grid of r.

    Parameters
    ----------
    r : float or ndarray, shape (n_r,)
    cl_hat : ndarray, shape (..., n_ell), uK^2 (C_l, not D_l)
    cl_tensor, cl_other : ndarray, shape (n_ell,), uK^2
    ell : ndarray, shape (n_ell,)
    fsky : float

    Returns
    -------
    ndarray, shape (..., n_r) (or (...) for scalar r); +inf where some C_l(r) <= 0.
    """
    r = np.asarray(r, dtype=float)
    c = r[..., None] * cl_tensor + cl_other  # (n_r, n_ell)
    nu = dof(ell, fsky)
    with np.errstate(divide="ignore", invalid="ignore"):
        val = np.einsum("...l,rl->...r", np.asarray(cl_hat) * nu, 1 / np.atleast_2d(c)) + np.sum(
            nu * np.log(np.atleast_2d(c)), axis=-1
        )
    val = np.where(np.all(np.atleast_2d(c) > 0, axis=-1), val, np.inf)
    return val[..., 0] if r.ndim == 0 else val


def fisher_sigma_r(r0: float, cl_tensor: np.ndarray, cl_other: np.ndarray, ell: np.ndarray, fsky: float = 1.0) -> float:
    """Fisher standard deviation of r at the fiducial ``r0``: (sum_l nu_l / 2 (C^t / C(r0))^2)^(-1/2)."""
    c = r0 * np.asarray(cl_tensor) + np.asarray(cl_other)
    return float(np.sum(0.5 * dof(ell, fsky) * (np.asarray(cl_tensor) / c) ** 2) ** -0.5)


def fit_r(
    cl_hat: np.ndarray,
    cl_tensor: np.ndarray,
    cl_other: np.ndarray,
    ell: np.ndarray,
    *,
    fsky: float = 1.0,
    r_min: float | None = None,
    r_max: float = 0.2,
    n_grid: int = 4001,
) -> dict[str, np.ndarray]:
    """Maximum-likelihood r of each spectrum, with the Delta(-2 ln L) = 1 and 4 intervals and the curvature error.

    The maximum is found on a grid and refined with Newton steps on the analytic derivatives; the ends of the
    interval are found by bisection.

    Parameters
    ----------
    cl_hat : ndarray, shape (n, n_ell), uK^2
        Observed spectra (C_l).
    cl_tensor, cl_other : ndarray, shape (n_ell,)
        Tensor template at r = 1 and the rest of the model spectrum.
    ell : ndarray, shape (n_ell,)
    fsky : float
    r_min : float, optional
        Lower edge of the search; default: just above the value where some C_l(r) reaches zero (the likelihood's
        own edge), so r_hat may be negative and the estimator is unbiased at r = 0. Pass 0 for a physical bound.
    r_max : float
        Upper edge of the search.
    n_grid : int
        Grid points.

    Returns
    -------
    dict of ndarray, each shape (n,)
        ``r_hat``, ``sigma`` (inverse curvature at r_hat), ``lo`` and ``hi`` (Delta(-2 ln L) = 1 crossings, or the
        edges of the search range), ``lo95`` and ``hi95`` (Delta(-2 ln L) = 4 crossings).
    """
    cl_hat = np.atleast_2d(np.asarray(cl_hat, dtype=float))
    ct, co = np.asarray(cl_tensor, dtype=float), np.asarray(cl_other, dtype=float)
    edge = -np.min(co / ct)
    lo_edge = edge + 1e-6 * abs(edge) + 1e-12 if r_min is None else max(float(r_min), edge + 1e-12)
    if not lo_edge < r_max:
        raise ValueError(f"empty search range for r: [{lo_edge}, {r_max}]")
    grid = np.linspace(lo_edge, r_max, int(n_grid))
    chi = neg2_loglike(grid, cl_hat, ct, co, ell, fsky)  # (n, n_grid)
    k = np.argmin(chi, axis=1)
    r = grid[k]
    nu = dof(ell, fsky)
    for _ in range(20):  # Newton refinement, kept inside the grid
        c = r[:, None] * ct + co
        d1 = np.sum(nu * ct * (c - cl_hat) / c**2, axis=1)
        d2 = np.sum(nu * ct**2 * (2 * cl_hat - c) / c**3, axis=1)
        step = np.where(d2 > 0, d1 / np.where(d2 > 0, d2, 1.0), 0.0)
        r = np.clip(r - step, lo_edge, r_max)
    c = r[:, None] * ct + co
    curv = np.sum(nu * ct**2 * (2 * cl_hat - c) / c**3, axis=1)  # d^2(-2 ln L)/dr^2
    sigma = np.where(curv > 0, np.sqrt(2.0 / np.where(curv > 0, curv, 1.0)), np.nan)

    best = np.sum(nu * (cl_hat / c + np.log(c)), axis=1)
    out = {"r_hat": r, "sigma": sigma}
    for name, level in (("", 1.0), ("95", 4.0)):  # Delta(-2 ln L) = 1 (68 %) and 4 (95 %) crossings

        def delta(rr, level=level):  # -2 ln L(rr) - (-2 ln L(r_hat)) - level, per spectrum
            c_r = rr[:, None] * ct + co
            return np.sum(nu * (cl_hat / c_r + np.log(c_r)), axis=1) - best - level

        out[f"lo{name}"] = _crossing(delta, r, np.full_like(r, lo_edge))
        out[f"hi{name}"] = _crossing(delta, r, np.full_like(r, r_max))
    return out


def _crossing(delta, inner: np.ndarray, outer: np.ndarray, iters: int = 60) -> np.ndarray:
    """Bisection for delta = 0 between ``inner`` (delta < 0) and ``outer``; returns ``outer`` where delta(outer) < 0
    (the interval reaches the edge of the search range)."""
    inside = delta(outer) < 0
    a, b = inner.copy(), outer.copy()
    for _ in range(iters):
        mid = 0.5 * (a + b)
        neg = delta(mid) < 0
        a, b = np.where(neg, mid, a), np.where(neg, b, mid)
    return np.where(inside, outer, 0.5 * (a + b))


def clean_r_hat(cl_hat: np.ndarray, cl_tensor: np.ndarray, ell: np.ndarray) -> np.ndarray:
    """Maximum-likelihood r of clean tensor spectra: sum_l nu_l C_hat_l / C_l^t / sum_l nu_l, shape (...)."""
    nu = dof(ell)
    return np.sum(nu * np.asarray(cl_hat) / cl_tensor, axis=-1) / nu.sum()


def clean_r_posterior_draws(
    cl_draws: np.ndarray,
    cl_tensor: np.ndarray,
    ell: np.ndarray,
    *,
    r_max: float,
    n_per_draw: int = 4,
    rng: np.random.Generator,
) -> np.ndarray:
    """Posterior draws of r from posterior draws of the clean tensor spectrum.

    Given one clean spectrum, p(r | C_hat) with a uniform prior on [0, r_max] is an inverse gamma with shape
    W/2 - 1 and scale W r_hat / 2 (W = sum_l (2l + 1)), truncated to [0, r_max]. Since the observation depends on r
    only through the tensor realisation, p(r | y) = E_{x ~ p(x | y)} p(r | x): drawing r from p(r | x_k) for each
    posterior draw x_k gives draws from p(r | y) (with the same uniform prior that the score model was trained on).

    Parameters
    ----------
    cl_draws : ndarray, shape (..., n_draws, n_ell), uK^2
        Posterior draws of the clean tensor spectrum (C_l, beam as in ``cl_tensor``).
    cl_tensor : ndarray, shape (n_ell,)
        Tensor template at r = 1.
    ell : ndarray, shape (n_ell,)
    r_max : float
        Upper edge of the uniform prior on r (the training prior).
    n_per_draw : int
        r draws per spectrum draw.
    rng : numpy.random.Generator

    Returns
    -------
    ndarray, shape (..., n_draws * n_per_draw)
    """
    from scipy.stats import invgamma

    w = dof(ell).sum()
    r_hat = np.maximum(clean_r_hat(cl_draws, cl_tensor, ell), 1e-12 * r_max)  # (..., n_draws)
    dist = invgamma(a=w / 2 - 1, scale=w * r_hat / 2)
    top = dist.cdf(r_max)
    u = rng.uniform(size=r_hat.shape + (int(n_per_draw),)) * top[..., None]
    scale = (w * r_hat / 2)[..., None]
    draws = invgamma.ppf(u, a=w / 2 - 1) * scale
    return draws.reshape(r_hat.shape[:-1] + (-1,))
