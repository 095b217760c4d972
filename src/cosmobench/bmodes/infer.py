"""Estimates of r from spectra, and their scores against the truth and the Fisher bound.

Estimators compared on the same test spectra:

- ``exact``: the maximum of the exact full-sky likelihood of the observed spectrum y,
  C_l(r) = r C^t b^2 + C^lens b^2 + N_l + C^fg_l (:func:`cosmobench.bmodes.likelihood.fit_r`); r_hat may be
  negative (down to where C_l(r) reaches 0), so the estimator is unbiased at r = 0. Interval: Delta(-2 ln L) = 1.
- ``exact_bayes_median``: the median of the exact-likelihood posterior with the training prior U[0, r_max]. This is
  what a perfect diffusion posterior would give: it shows the cost of the positivity prior (a bias near r = 0 that
  no estimator restricted to r >= 0 avoids) separately from the cost of the network.
- ``diffusion_mean`` / ``diffusion_median``: posterior draws of the clean tensor spectrum from the conditional score
  model, each turned into draws of r with the clean-spectrum likelihood and the same prior
  (:func:`~cosmobench.bmodes.likelihood.clean_r_posterior_draws`); interval: the central 68 % of the r draws.
- ``diffusion_ml``: the likelihood peak recovered from the same r draws. With a flat prior the posterior is the
  likelihood truncated to [0, r_max]; the mean of the draws fixes where the likelihood peaks, through the shape
  of the exact likelihood of the data model (:func:`detruncate`); the estimate may be negative. This removes the
  positivity bias of the Bayesian point estimates near r = 0 and is the diffusion counterpart of ``exact``.
- ``oracle``: the maximum likelihood of the true clean tensor spectrum (cosmic variance only): no method that sees
  only y can do better.

Scores: bias = mean(r_hat) - r0, spread = std(r_hat), both relative to the Fisher sigma(r0) of the same data model,
and the coverage of the 68 % intervals.
"""

from __future__ import annotations

import numpy as np

from .dataset import dl_factor
from .likelihood import clean_r_hat, clean_r_posterior_draws, fit_r, neg2_loglike

__all__ = [
    "REFERENCE_FISHER",
    "exact_estimates",
    "exact_posterior_estimates",
    "diffusion_estimates",
    "detruncate",
    "oracle_estimates",
    "score_estimates",
    "r_table_markdown",
]

#: Fisher sigma(r) at w = 11.9 uK arcmin, 24.8' beam, f_sky = 1, A_L = 1, l = 2..31, A_s = 2.1e-9, from an independent
#: CAMB run (l_max 4000, lens_potential_accuracy 2) with the default foreground residual (issue "B-modes v2").
REFERENCE_FISHER = {0.0: 4.86e-4, 0.001: 8.32e-4, 0.005: 1.78e-3, 0.01: 2.57e-3}


def _cl(dl: np.ndarray, ell: np.ndarray) -> np.ndarray:
    return np.asarray(dl) / dl_factor(ell)


def exact_estimates(dl_obs: np.ndarray, model: dict, *, r_max: float = 0.2) -> dict[str, np.ndarray]:
    """Exact-likelihood r of each observed spectrum.

    Parameters
    ----------
    dl_obs : ndarray, shape (n, n_ell), uK^2
    model : dict
        :meth:`~cosmobench.bmodes.dataset.BModeSimulator.model` output (``ell``, ``cl_tensor_obs``, ``cl_other``,
        ``fsky``), arrays or lists.
    r_max : float
        Upper edge of the search.

    Returns
    -------
    dict of ndarray, shape (n,): ``r_hat``, ``lo``, ``hi``, ``sigma``
    """
    ell = np.asarray(model["ell"])
    fit = fit_r(
        _cl(dl_obs, ell),
        np.asarray(model["cl_tensor_obs"]),
        np.asarray(model["cl_other"]),
        ell,
        fsky=float(model["fsky"]),
        r_max=r_max,
    )
    return {k: fit[k] for k in ("r_hat", "lo", "hi", "lo95", "hi95", "sigma")}


def oracle_estimates(dl_gt: np.ndarray, model: dict) -> dict[str, np.ndarray]:
    """Maximum-likelihood r of the true clean spectra, with the +-1 sigma interval of the clean likelihood."""
    ell = np.asarray(model["ell"])
    r_hat = clean_r_hat(_cl(dl_gt, ell), np.asarray(model["cl_tensor_obs"]), ell)
    sigma = np.abs(r_hat) * np.sqrt(2.0 / np.sum(2 * ell + 1))
    fit = {"r_hat": r_hat, "lo": r_hat - sigma, "hi": r_hat + sigma, "sigma": sigma}
    return {**fit, **_gauss95(fit)}


def _gauss95(fit: dict) -> dict[str, np.ndarray]:
    """The 95 % interval r_hat +- 1.96 sigma (for the clean-spectrum likelihood, Gaussian to ~10 % at these ell)."""
    return {"lo95": fit["r_hat"] - 1.96 * fit["sigma"], "hi95": fit["r_hat"] + 1.96 * fit["sigma"]}


_Q68 = (0.15865, 0.84135)
_Q95 = (0.02275, 0.97725)


def exact_posterior_estimates(
    dl_obs: np.ndarray, model: dict, *, r_max: float, n_grid: int = 2001
) -> dict[str, np.ndarray]:
    """Posterior of r from the exact likelihood of each observed spectrum with a uniform prior on [0, r_max].

    Returns
    -------
    dict of ndarray, shape (n,): ``mean``, ``median``, ``mode``, ``lo`` and ``hi`` (16th and 84th percentiles),
    ``lo95`` and ``hi95`` (2.3th and 97.7th)
    """
    ell = np.asarray(model["ell"])
    grid = np.linspace(0.0, r_max, int(n_grid))
    chi = neg2_loglike(
        grid,
        _cl(dl_obs, ell),
        np.asarray(model["cl_tensor_obs"]),
        np.asarray(model["cl_other"]),
        ell,
        float(model["fsky"]),
    )
    post = np.exp(-0.5 * (chi - chi.min(axis=1, keepdims=True)))
    post /= post.sum(axis=1, keepdims=True)
    cdf = np.cumsum(post, axis=1)
    lo95, lo, med, hi, hi95 = (grid[np.argmax(cdf >= q, axis=1)] for q in (_Q95[0], _Q68[0], 0.5, _Q68[1], _Q95[1]))
    return {
        "mean": post @ grid,
        "median": med,
        "mode": grid[np.argmax(post, axis=1)],
        "lo": lo,
        "hi": hi,
        "lo95": lo95,
        "hi95": hi95,
    }


def diffusion_estimates(
    dl_draws: np.ndarray, model: dict, *, r_max: float, rng: np.random.Generator, n_per_draw: int = 8
) -> dict[str, np.ndarray]:
    """Posterior summaries of r from posterior draws of the clean spectrum.

    Parameters
    ----------
    dl_draws : ndarray, shape (n, n_draws, n_ell), uK^2
        Draws of the clean tensor D_l for each of n observations.
    model : dict
        As in :func:`exact_estimates`.
    r_max : float
        Upper edge of the uniform training prior on r.
    rng : numpy.random.Generator
    n_per_draw : int
        r draws per spectrum draw.

    Returns
    -------
    dict of ndarray, shape (n,)
        ``mean``, ``median``, ``lo`` and ``hi`` (16th and 84th percentiles), ``lo95`` and ``hi95`` (2.3th and
        97.7th), ``std``; ``ml``: the :func:`detruncate` dict.
    """
    ell = np.asarray(model["ell"])
    draws = clean_r_posterior_draws(
        _cl(dl_draws, ell), np.asarray(model["cl_tensor_obs"]), ell, r_max=r_max, n_per_draw=n_per_draw, rng=rng
    )
    quantiles = [100 * q for q in (_Q95[0], _Q68[0], 0.5, _Q68[1], _Q95[1])]
    lo95, lo, med, hi, hi95 = np.percentile(draws, quantiles, axis=-1)
    mean = draws.mean(-1)
    ml = detruncate(mean, model, r_max=r_max)
    return {"mean": mean, "median": med, "lo": lo, "hi": hi, "lo95": lo95, "hi95": hi95, "std": draws.std(-1), "ml": ml}


def detruncate(post_mean: np.ndarray, model: dict, *, r_max: float, n_grid: int = 801) -> dict[str, np.ndarray]:
    """Likelihood peak whose flat-prior posterior on [0, r_max] has the given mean.

    With a flat prior the posterior of r is the likelihood truncated to [0, r_max], and its mean is a monotonic
    function of where the likelihood peaks. That function is computed on the Asimov spectra C_hat = C(r_hat) of the
    data model (the spectrum whose exact likelihood peaks at r_hat, r_hat down to where C reaches 0) and inverted by
    interpolation. The result estimates the maximum-likelihood r and may be negative: near r = 0 it undoes the
    positivity bias of the posterior mean. The interval is the Delta(-2 ln L) = 1 interval of the Asimov likelihood.

    Parameters
    ----------
    post_mean : ndarray, shape (n,)
        Posterior means of r under the flat prior on [0, r_max].
    model : dict
        As in :func:`exact_estimates`.
    r_max : float
        Upper edge of the prior.
    n_grid : int
        Points of the r_hat grid.

    Returns
    -------
    dict of ndarray, shape (n,): ``r_hat``, ``lo``, ``hi``, ``lo95``, ``hi95``
    """
    ell, ct, co = (np.asarray(model[k], dtype=float) for k in ("ell", "cl_tensor_obs", "cl_other"))
    edge = -np.min(co / ct)
    r_hat = np.linspace(edge + 1e-3 * abs(edge), r_max, int(n_grid))
    asimov = (r_hat[:, None] * ct + co) * dl_factor(ell)
    mean = exact_posterior_estimates(asimov, model, r_max=r_max)["mean"]
    est = np.interp(post_mean, mean, r_hat)
    fit = fit_r(est[:, None] * ct + co, ct, co, ell, fsky=float(model["fsky"]), r_max=max(r_max, 2 * est.max()))
    return {"r_hat": est, **{k: fit[k] for k in ("lo", "hi", "lo95", "hi95")}}


def score_estimates(
    r_hat: np.ndarray, r0: float, sigma_fisher: float, intervals: dict[str, np.ndarray] | None = None
) -> dict[str, float]:
    """Bias, spread and coverage of estimates of a true ``r0``, in units of the Fisher sigma.

    Parameters
    ----------
    r_hat : ndarray, shape (n,)
    r0 : float
    sigma_fisher : float
        Fisher sigma(r) at ``r0`` (the unit of ``bias_over_fisher``, ``std_over_fisher``, ``rmse_over_fisher``).
    intervals : dict, optional
        ``lo``/``hi`` (68 %) and ``lo95``/``hi95`` (95 %) interval edges per estimate.

    Returns
    -------
    dict
        ``n``, ``mean``, ``bias``, ``std``, ``rmse``, ``bias_over_fisher`` and its standard error
        ``bias_se_over_fisher``, ``std_over_fisher``, ``rmse_over_fisher``, ``coverage_68``, ``coverage_95``.
    """
    r_hat = np.asarray(r_hat, dtype=float)
    n = len(r_hat)
    bias, std = float(r_hat.mean() - r0), float(r_hat.std(ddof=1)) if n > 1 else float("nan")
    rmse = float(np.sqrt(np.mean((r_hat - r0) ** 2)))
    out = {
        "n": n,
        "mean": float(r_hat.mean()),
        "bias": bias,
        "std": std,
        "rmse": rmse,
        "bias_over_fisher": bias / sigma_fisher,
        "bias_se_over_fisher": std / np.sqrt(n) / sigma_fisher if n > 1 else float("nan"),
        "std_over_fisher": std / sigma_fisher,
        "rmse_over_fisher": rmse / sigma_fisher,
    }
    for level, (lo, hi) in (("68", ("lo", "hi")), ("95", ("lo95", "hi95"))):
        if intervals is not None and lo in intervals and hi in intervals:
            inside = (np.asarray(intervals[lo])[:n] <= r0) & (r0 <= np.asarray(intervals[hi])[:n])
            out[f"coverage_{level}"] = float(np.mean(inside))
    return out


def r_table_markdown(rows: list[dict]) -> str:
    """A Markdown table of r scores, one row per (r0, estimator); units stated in the header.

    ``bias`` is the mean of r_hat - r0 and ``std`` its standard deviation over the set, both divided by the Fisher
    sigma(r0) of the data model; the bias carries its standard error; coverage is the fraction of the set whose
    68 % (95 %) interval contains r0.
    """
    head = (
        "| r0 | estimator | n | mean r_hat | bias / sigma_F (+- s.e.) | std / sigma_F | rmse / sigma_F | "
        "68 % coverage | 95 % coverage | sigma_F (ours) | sigma_F (ref) |\n"
        "|---|---|---|---|---|---|---|---|---|---|---|\n"
    )
    lines = []
    for r in rows:
        ref = REFERENCE_FISHER.get(round(float(r["r0"]), 6))
        cov = [r.get(f"coverage_{q}") for q in ("68", "95")]
        lines.append(
            f"| {r['r0']:g} | {r['estimator']} | {r['n']} | {r['mean']:.2e} | {r['bias_over_fisher']:+.2f} "
            f"+- {r['bias_se_over_fisher']:.2f} | {r['std_over_fisher']:.2f} | {r['rmse_over_fisher']:.2f} | "
            + " | ".join("" if c is None else f"{c:.2f}" for c in cov)
            + f" | {r['sigma_fisher']:.2e} | {'' if ref is None else f'{ref:.2e}'} |"
        )
    return head + "\n".join(lines) + "\n"


SEED_METRICS = ("bias_over_fisher", "std_over_fisher", "rmse_over_fisher", "coverage_68", "coverage_95")


def seed_table(tables: list[list[dict]]) -> list[dict]:
    """Combine r tables of several runs (training seeds): per (r0, estimator), the mean and the standard deviation
    over runs of every metric of :data:`SEED_METRICS`; rows present in every run only."""
    keyed = [{(row["r0"], row["estimator"]): row for row in table} for table in tables]
    common = [k for k in keyed[0] if all(k in t for t in keyed[1:])]
    rows = []
    for key in common:
        runs = [t[key] for t in keyed]
        row = {"r0": key[0], "estimator": key[1], "n_runs": len(runs), "sigma_fisher": runs[0]["sigma_fisher"]}
        for m in SEED_METRICS:
            values = np.array([r.get(m, np.nan) for r in runs], dtype=float)
            row[m] = float(np.mean(values))
            row[f"{m}_spread"] = float(np.std(values, ddof=1)) if len(values) > 1 else float("nan")
        rows.append(row)
    return rows


def seed_table_markdown(rows: list[dict]) -> str:
    """Markdown of :func:`seed_table`: mean +- standard deviation over runs; bias, std and rmse in units of the
    Fisher sigma(r0); coverage = fraction of the set whose 68 % (95 %) interval contains r0."""
    head = (
        "| r0 | estimator | runs | bias / sigma_F | std / sigma_F | rmse / sigma_F | 68 % coverage | 95 % coverage |\n"
        "|---|---|---|---|---|---|---|---|\n"
    )
    lines = []
    for r in rows:
        cells = [
            f"{r[m]:+.2f} +- {r[m + '_spread']:.2f}"
            if m == "bias_over_fisher"
            else f"{r[m]:.2f} +- {r[m + '_spread']:.2f}"
            for m in SEED_METRICS
        ]
        lines.append(f"| {r['r0']:g} | {r['estimator']} | {r['n_runs']} | " + " | ".join(cells) + " |")
    return head + "\n".join(lines) + "\n"
