"""Calibration of the predicted posteriors: interval coverage, TARP, and a full posterior by NPE on CNN summaries.

- **Gaussian moment posteriors.** The CNN gives a mean mu and a standard deviation sigma per parameter; the
  central interval mu +- z_p sigma should contain the truth a fraction p of the time. :func:`coverage_curve` gives
  the empirical coverage at every nominal level, per map and per simulation (fraction of each simulation's maps
  covered, averaged over simulations, with a bootstrap interval over simulations: maps of one simulation are
  correlated, simulations are not).
- **TARP** (Lemos et al. 2023, arXiv:2302.03026) checks the joint posterior with samples: for random reference
  points, the fraction f of posterior samples closer to the reference than the truth is uniform for a calibrated
  posterior, so its empirical CDF (the expected coverage probability, ECP) follows the diagonal. :func:`tarp` is a
  small implementation of that test on samples (Gaussian draws N(mu, sigma^2) for the moment network).
- **Post-hoc recalibration.** :func:`fit_recalibration` fits per-parameter corrections of the predicted sigma on
  held-out predictions (the validation split, never the test split); :class:`Recalibration` applies them, so the
  raw and the recalibrated intervals can be reported side by side. ``conformal`` takes, per nominal level p, the
  split-conformal quantile of the normalised residuals |theta - mu| / sigma: the interval mu +- z_p s_p sigma then
  covers a fraction >= p of new draws from the same distribution (exchangeable simulations), whatever the shape
  of the residuals. ``loglinear`` (default) first fits sigma' = exp(a) sigma^b by Gaussian maximum likelihood, then
  the conformal scales of |theta - mu| / sigma': b = 1 is pure scaling, b = 0 a constant width when the network's
  sigma carries no information about its errors (which a pure scale would amplify). ``chi2`` takes one scale per
  parameter with chi^2 = 1 on the fitting data (Gaussian residuals assumed; heavy tails make it over-cover at
  68 %). None helps on another suite: the correction is a property of the training suite's residuals.
  :func:`recalibrated_coverage_band` gives the full statistical uncertainty of a recalibrated coverage: it
  resamples the validation simulations (and refits) *and* the test simulations, so the finite size of both splits
  is in the band (the test-only bootstrap misses the fitting noise, which is as large).
- **NPE.** :func:`fit_npe` trains a neural posterior estimator (``sbi``, imported lazily) on
  the CNN's summaries (normalised mu and log sigma) of simulations the CNN was not fitted on (the validation split),
  with the normalised prior, which is uniform on [0, 1]^d because the astrophysical labels are log-scaled. Its
  samples on the test maps get the same coverage and TARP diagnostics.
"""

from __future__ import annotations

import contextlib
import io
import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..core.io import write_json
from ..core.seeds import rng, torch_seed
from .cmd import PARAM_NAMES, LabelScaler
from .settings import CalibrateSettings

_C = CalibrateSettings

__all__ = [
    "default_levels",
    "coverage_curve",
    "coverage_from_samples",
    "tarp",
    "gaussian_samples",
    "Recalibration",
    "fit_recalibration",
    "recalibrated_coverage_band",
    "RECALIBRATION_METHODS",
    "fit_npe",
    "sample_npe",
    "calibrate_model",
]

RECALIBRATION_METHODS = ("loglinear", "conformal", "chi2")


def _per_sim_mean(hit: np.ndarray, sim_index: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-simulation means of ``hit`` (n, ...) -> (n_sims, ...), and the simulations' inverse index."""
    _, inverse = np.unique(sim_index, return_inverse=True)
    counts = np.bincount(inverse).astype(float)
    flat = hit.reshape(len(hit), -1).astype(float)
    sums = np.stack([np.bincount(inverse, flat[:, j]) for j in range(flat.shape[1])], axis=1)
    return (sums / counts[:, None]).reshape((len(counts),) + hit.shape[1:]), inverse


def coverage_from_hits(hit: np.ndarray, sim_index: np.ndarray, *, n_boot: int = 200, seed: int = 0) -> dict:
    """Coverage from a boolean array ``hit`` (n_maps, n_levels, n_params): per map, per simulation, and a 68 %
    bootstrap interval over simulations. Returns arrays of shape (n_levels, n_params) (CI: (2, ...))."""
    per_sim, _ = _per_sim_mean(hit, sim_index)
    gen = rng(seed, "coverage_bootstrap")
    boots = np.stack([per_sim[gen.integers(0, len(per_sim), len(per_sim))].mean(0) for _ in range(n_boot)])
    return {"per_map": hit.mean(0), "per_sim": per_sim.mean(0), "ci": np.quantile(boots, [0.16, 0.84], axis=0)}


def default_levels() -> np.ndarray:
    """Nominal levels of the coverage curves: 0.05, 0.10, ..., 0.95 and 0.68."""
    return np.unique(np.round(np.r_[np.arange(0.05, 0.951, 0.05), 0.68], 4))


def coverage_curve(
    theta: np.ndarray,
    mu: np.ndarray,
    sigma: np.ndarray,
    sim_index: np.ndarray,
    levels: np.ndarray | None = None,
    *,
    recalibration: Recalibration | None = None,
    n_boot: int = 200,
    seed: int = 0,
) -> dict:
    """Empirical coverage of the central Gaussian intervals mu +- z(p) sigma at nominal levels ``p``.

    Parameters
    ----------
    theta, mu, sigma : ndarray, shape (n, d)
    sim_index : ndarray, shape (n,)
    levels : ndarray, shape (L,), optional
        Nominal probabilities (default :func:`default_levels`).
    recalibration : Recalibration, optional
        Coverage of the recalibrated intervals (fitted at ``levels``, on columns indexing ``sigma``).

    Returns
    -------
    dict
        ``levels`` (L,), ``per_map``, ``per_sim`` (L, d), ``ci`` (2, L, d).
    """
    from scipy.stats import norm

    levels = default_levels() if levels is None else np.asarray(levels)
    if recalibration is None:
        widths = np.stack([sigma] * len(levels), axis=1)
    else:
        widths = np.stack([recalibration.sigma(sigma, p) for p in levels], axis=1)
    z = norm.ppf(0.5 + levels / 2)
    hit = np.abs(theta - mu)[:, None, :] <= z[None, :, None] * widths
    return {"levels": levels, **coverage_from_hits(hit, sim_index, n_boot=n_boot, seed=seed)}


def coverage_from_samples(
    samples: np.ndarray,
    theta: np.ndarray,
    sim_index: np.ndarray,
    levels: np.ndarray,
    *,
    n_boot: int = 200,
    seed: int = 0,
) -> dict:
    """Coverage of the central (equal-tailed) credible intervals of posterior samples (n_samples, n, d)."""
    lo = np.quantile(samples, 0.5 - levels / 2, axis=0)  # (L, n, d)
    hi = np.quantile(samples, 0.5 + levels / 2, axis=0)
    hit = np.moveaxis((lo <= theta[None]) & (theta[None] <= hi), 0, 1)  # (n, L, d)
    return {"levels": levels, **coverage_from_hits(hit, sim_index, n_boot=n_boot, seed=seed)}


def gaussian_samples(mu: np.ndarray, sigma: np.ndarray, n_samples: int, seed: int = 0) -> np.ndarray:
    """Draws from the independent Gaussians N(mu, sigma^2), shape (n_samples, n, d)."""
    return mu[None] + sigma[None] * rng(seed, "gaussian_samples").standard_normal((n_samples, *mu.shape))


def tarp(samples: np.ndarray, theta: np.ndarray, *, seed: int = 0, n_alpha: int = 51) -> dict:
    """TARP expected coverage of posterior samples against true values.

    Parameters are first scaled to the unit box spanned by ``theta``; one reference point per observation is drawn
    uniformly in that box; f_i is the fraction of samples closer (L2) to the reference than the truth.

    Parameters
    ----------
    samples : ndarray, shape (n_samples, n, d)
    theta : ndarray, shape (n, d)

    Returns
    -------
    dict
        ``alpha`` (n_alpha,) credibility levels, ``ecp`` (n_alpha,) expected coverage, ``atc`` (area between ECP and
        the diagonal for alpha >= 0.5: > 0 under-confident, < 0 over-confident), ``max_dev`` (largest |ECP - alpha|),
        ``ks_p`` (Kolmogorov-Smirnov p-value of f against U(0, 1)).
    """
    from scipy.stats import kstest

    lo, hi = theta.min(0), theta.max(0)
    scale = np.where(hi > lo, hi - lo, 1.0)
    s, t = (samples - lo) / scale, (theta - lo) / scale
    ref = rng(seed, "tarp_references").random(t.shape)
    d_samples = np.linalg.norm(s - ref[None], axis=-1)
    d_truth = np.linalg.norm(t - ref, axis=-1)
    f = np.mean(d_samples < d_truth[None], axis=0)
    alpha = np.linspace(0, 1, n_alpha)
    ecp = np.mean(f[None, :] <= alpha[:, None], axis=1)
    upper = alpha >= 0.5
    atc = float(np.trapezoid(ecp[upper] - alpha[upper], alpha[upper]))
    return {
        "alpha": alpha,
        "ecp": ecp,
        "atc": atc,
        "max_dev": float(np.max(np.abs(ecp - alpha))),
        "ks_p": float(kstest(f, "uniform").pvalue),
    }


@dataclass(frozen=True)
class Recalibration:
    """Scale factors of predicted standard deviations, fitted on held-out predictions by :func:`fit_recalibration`.

    The recalibrated central interval of column ``columns[j]`` at nominal level ``levels[i]`` is
    mu +- z_p scale[i, j] sigma^exponent[j]. :meth:`sigma` returns the recalibrated standard deviation for one
    level (the 68 % one is the one-sigma width: report it as the calibrated sigma).

    Attributes
    ----------
    method : str
        ``loglinear``, ``conformal`` or ``chi2`` (see the module docstring).
    levels : tuple of float
        Nominal levels the scales were fitted at.
    columns : tuple of int
        Parameter columns scaled; other columns are left unchanged.
    scale : ndarray, shape (len(levels), len(columns))
        In the units of sigma^(1 - exponent): fitted and applied in the same units (physical or normalised).
    exponent : ndarray, shape (len(columns),)
        Power of the predicted sigma (1 except for ``loglinear``).
    n_maps, n_sims : int
        Size of the fitting data.
    """

    method: str
    levels: tuple[float, ...]
    columns: tuple[int, ...]
    scale: np.ndarray
    exponent: np.ndarray
    n_maps: int
    n_sims: int

    def level_index(self, level: float) -> int:
        """Row of ``scale`` fitted at ``level``; ``ValueError`` when it was not fitted."""
        i = int(np.argmin(np.abs(np.asarray(self.levels) - level)))
        if not math.isclose(self.levels[i], level, abs_tol=1e-6):
            raise ValueError(f"no scale fitted at level {level}; fitted levels: {list(self.levels)}")
        return i

    def sigma(self, sigma: np.ndarray, level: float = 0.68) -> np.ndarray:
        """``sigma`` (n, D) with the columns :attr:`columns` recalibrated for ``level``."""
        out = np.array(sigma, dtype=np.float64)
        cols = list(self.columns)
        out[:, cols] = self.scale[self.level_index(level)] * out[:, cols] ** self.exponent
        return out

    def as_dict(self, names: Sequence[str], levels: Sequence[float] | None = None) -> dict:
        """JSON-ready summary: method, fitting data size, and ``{names[column]: {"scale68": ..., ...}}`` at
        ``levels`` (default all fitted levels)."""
        rows = [self.level_index(p) for p in (self.levels if levels is None else levels)]
        out: dict = {"method": self.method, "n_maps": self.n_maps, "n_sims": self.n_sims}
        for j, col in enumerate(self.columns):
            out[names[col]] = {f"scale{round(100 * self.levels[i])}": float(self.scale[i, j]) for i in rows}
            out[names[col]]["exponent"] = float(self.exponent[j])
        return out


def fit_recalibration(
    theta: np.ndarray,
    mu: np.ndarray,
    sigma: np.ndarray,
    sim_index: np.ndarray,
    *,
    columns: Sequence[int],
    levels: Sequence[float] = (0.68, 0.95),
    method: str = "loglinear",
) -> Recalibration:
    """Fit per-parameter scale factors of ``sigma`` on held-out predictions (the validation split).

    Parameters
    ----------
    theta, mu, sigma : ndarray, shape (n, D)
        True values, predicted means and standard deviations of the fitting maps.
    sim_index : ndarray, shape (n,)
        Simulation of each map (reported: the effective size of the fitting set is the number of simulations).
    columns : sequence of int
        Parameter columns to recalibrate (the trained ones).
    levels : sequence of float
        Nominal levels to fit (``conformal``: one scale each; ``chi2``: the same scale at every level).
    method : {"loglinear", "conformal", "chi2"}
        ``conformal``: s_p = q_p / z_p with q_p the ceil((n + 1) p)-th smallest |theta - mu| / sigma (split
        conformal prediction, coverage >= p on exchangeable new simulations); ``loglinear``: the same on
        |theta - mu| / sigma^b, with b from the Gaussian maximum-likelihood fit of log sigma' = a + b log sigma;
        ``chi2``: s = sqrt(mean r^2), so that chi^2 = 1 on the fitting data.

    Returns
    -------
    Recalibration
    """
    from scipy.stats import norm

    if method not in RECALIBRATION_METHODS:
        raise ValueError(f"recalibration method must be one of {RECALIBRATION_METHODS}, got {method!r}")
    columns = tuple(int(c) for c in columns)
    levels = tuple(float(p) for p in levels)
    if not levels or not all(0 < p < 1 for p in levels):
        raise ValueError(f"levels must be in (0, 1), got {levels}")
    err = np.abs(theta[:, columns] - mu[:, columns])
    sd = np.maximum(sigma[:, columns], np.finfo(float).tiny)
    exponent = np.array([_loglinear_exponent(e, s) for e, s in zip(err.T, sd.T)]) if method == "loglinear" else 1.0
    exponent = np.broadcast_to(exponent, (len(columns),)).copy()
    r = err / sd**exponent
    n = len(r)
    if method == "chi2":
        scale = np.tile(np.sqrt(np.mean(r**2, axis=0)), (len(levels), 1))
    else:
        ranks = [min(1.0, math.ceil((n + 1) * p) / n) for p in levels]
        quantiles = np.quantile(r, ranks, axis=0, method="higher")  # (L, d)
        scale = quantiles / norm.ppf(0.5 + np.asarray(levels) / 2)[:, None]
    return Recalibration(method, levels, columns, scale, exponent, n, int(len(np.unique(sim_index))))


def recalibrated_coverage_band(
    valid: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray],
    test: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray],
    *,
    columns: Sequence[int],
    levels: Sequence[float] = (0.68, 0.95),
    method: str = "loglinear",
    n_boot: int = 200,
    seed: int = 0,
    quantiles: Sequence[float] = (0.16, 0.84),
) -> np.ndarray:
    """Bootstrap band of the test coverage of a recalibration, with the fitting noise included.

    Each replicate resamples whole validation simulations, refits the recalibration on them, resamples whole test
    simulations and measures the coverage there at every level. The maps of one simulation are correlated, so
    simulations (not maps) are the units in both splits.

    Parameters
    ----------
    valid, test : tuples (theta, mu, sigma, sim_index)
        Predictions of the fitting (validation) and of the evaluation (test) split, arrays (n, D) and (n,).
    columns, levels, method : as for :func:`fit_recalibration`.
    n_boot : int
        Bootstrap replicates.
    quantiles : sequence of float
        Quantiles of the replicates returned (default: a 68 % band).

    Returns
    -------
    ndarray, shape (len(quantiles), len(levels), len(columns))
    """
    from scipy.stats import norm

    columns = list(columns)
    z = norm.ppf(0.5 + np.asarray(levels, dtype=float) / 2)
    gen = rng(seed, "recalibrated_coverage_band")

    def rows(sim_index):
        _, inverse = np.unique(sim_index, return_inverse=True)
        return [np.flatnonzero(inverse == k) for k in range(inverse.max() + 1)]

    valid_rows, test_rows = rows(valid[3]), rows(test[3])
    t_theta, t_mu, t_sigma, _ = test
    out = []
    for _ in range(n_boot):
        pick = np.concatenate([valid_rows[k] for k in gen.integers(0, len(valid_rows), len(valid_rows))])
        recal = fit_recalibration(
            *(a[pick] for a in valid[:3]), valid[3][pick], columns=columns, levels=levels, method=method
        )
        pick = np.concatenate([test_rows[k] for k in gen.integers(0, len(test_rows), len(test_rows))])
        err = np.abs(t_theta[pick][:, columns] - t_mu[pick][:, columns])
        width = np.stack([recal.sigma(t_sigma[pick], p)[:, columns] for p in levels], axis=1)  # (n, L, d)
        out.append(np.mean(err[:, None, :] <= z[None, :, None] * width, axis=0))
    return np.quantile(np.asarray(out), list(quantiles), axis=0)


def _loglinear_exponent(err: np.ndarray, sigma: np.ndarray) -> float:
    """b of the Gaussian maximum-likelihood fit of log sigma' = a + b log sigma to the errors ``err``.

    For fixed b the optimal a is closed-form, exp(2a) = mean(err^2 / sigma^(2b)), which leaves the profile
    negative log-likelihood 0.5 log mean(err^2 sigma^(-2b)) + b mean(log sigma) (+ constants), minimised over b
    in [-1, 2].
    """
    from scipy.optimize import minimize_scalar

    log_sd, log_e2 = np.log(sigma), np.log(np.maximum(err**2, np.finfo(float).tiny))

    def profile(b: float) -> float:
        return 0.5 * np.log(np.mean(np.exp(log_e2 - 2 * b * log_sd))) + b * np.mean(log_sd)

    return float(minimize_scalar(profile, bounds=(-1.0, 2.0), method="bounded").x)


class _NullTracker:
    """Keeps sbi from writing TensorBoard logs into the working directory."""

    log_dir = None

    def log_metric(self, name, value, step=None):
        pass

    def log_metrics(self, metrics, step=None):
        pass

    def log_params(self, params):
        pass

    def add_figure(self, name, figure, step=None):
        pass

    def flush(self):
        pass


def fit_npe(
    summaries: np.ndarray,
    theta_norm: np.ndarray,
    *,
    seed: int = 0,
    density_estimator: str = "maf",
    max_epochs: int = 200,
    batch_size: int = 128,
):
    """Train an sbi NPE posterior p(theta | summaries) with a uniform prior on [0, 1]^d (normalised labels).

    Parameters
    ----------
    summaries : ndarray, shape (n, k)
        CNN summaries, e.g. normalised posterior means and log standard deviations.
    theta_norm : ndarray, shape (n, d)
        Normalised true parameters in [0, 1].
    seed : int
        Seeds torch's global generator (sbi draws from it) through one wrapper.
    density_estimator : str
        sbi density estimator (``maf``, ``nsf``, ``mdn``).
    max_epochs, batch_size : int
        Training budget (sbi also stops after 20 epochs without validation improvement).

    Returns
    -------
    sbi posterior (``.sample_batched``)
    """
    try:
        from sbi.inference import NPE
        from sbi.utils import BoxUniform
    except ImportError as err:
        raise ImportError(
            "the NPE posterior needs the optional package sbi: pip install sbi (or set npe=false)"
        ) from err
    import torch

    with torch.random.fork_rng():
        torch.manual_seed(torch_seed(seed, "npe"))
        d = theta_norm.shape[1]
        prior = BoxUniform(low=torch.zeros(d), high=torch.ones(d))
        inference = NPE(
            prior=prior, density_estimator=density_estimator, show_progress_bars=False, tracker=_NullTracker()
        )
        theta_t = torch.as_tensor(np.clip(theta_norm, 1e-6, 1 - 1e-6), dtype=torch.float32)
        inference.append_simulations(theta_t, torch.as_tensor(summaries, dtype=torch.float32))
        with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():  # sbi's convergence chatter
            warnings.filterwarnings("ignore", message="Maximum number of epochs")
            inference.train(training_batch_size=batch_size, max_num_epochs=max_epochs, show_train_summary=False)
        return inference.build_posterior()


def sample_npe(
    posterior, summaries: np.ndarray, n_samples: int, *, seed: int = 0, chunk: int = 128
) -> tuple[np.ndarray, float]:
    """Posterior samples for each row of ``summaries``, shape (n_samples, n, d), normalised units, drawn for
    ``chunk`` rows at a time (memory).

    Samples are drawn from the flow without rejection outside the prior box: rejection can loop for ever when a
    poorly trained flow puts most of its mass outside [0, 1]^d. The fraction of samples outside the box is returned
    as a diagnostic (0 for a well-trained NPE); coverage and TARP are computed on the flow's samples as they are.

    Returns
    -------
    samples : ndarray, shape (n_samples, n, d)
    leakage : float
        Fraction of samples outside [0, 1]^d.
    """
    import torch

    with torch.random.fork_rng(), warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Capping max_sampling_batch_size")
        warnings.filterwarnings("ignore", message=".*reject_outside_prior=False")  # reported as `leakage`
        torch.manual_seed(torch_seed(seed, "npe_sample"))
        with torch.no_grad():  # in chunks of observations: the flow's activations of all samples at once take GBs
            out = torch.cat(
                [
                    posterior.sample_batched(
                        (n_samples,),
                        x=torch.as_tensor(summaries[i : i + chunk], dtype=torch.float32),
                        show_progress_bars=False,
                        reject_outside_prior=False,
                    )
                    for i in range(0, len(summaries), chunk)
                ],
                dim=1,
            )
    samples = out.numpy().astype(np.float64)
    leakage = float(np.mean(np.any((samples < 0) | (samples > 1), axis=-1)))
    return samples, leakage


def calibrate_model(
    model,
    meta: dict,
    data_dir: Path | str,
    folder: Path | str,
    *,
    recalibration: str | None = _C.recalibration,
    baselines: Sequence[str] = _C.baselines,
    npe: bool = _C.npe,
    npe_split: str = _C.npe_split,
    npe_epochs: int = _C.npe_epochs,
    n_samples: int = _C.n_samples,
    tta: bool = _C.tta,
    batch_size: int = _C.batch_size,
    device: str = _C.device,
    seed: int = _C.seed,
) -> dict:
    """Coverage of the mean +- std intervals (per map and per simulation), TARP, and an NPE posterior on CNN summaries.

    The raw moment-network intervals, the same intervals recalibrated on the validation split and the NPE (``sbi``)
    trained on the summaries of ``npe_split`` simulations, which the CNN was not fitted on, are all evaluated on the
    test split. Writes ``folder/calibration.json`` and ``folder/calibration.png``.

    Parameters
    ----------
    model, meta : from :func:`cosmobench.multifield.train.load_model`
    data_dir, folder : path
        CMD-format data and the output folder.
    recalibration : {"loglinear", "conformal", "chi2"}, optional
        Sigma recalibration fitted on the validation split at every nominal level of the coverage curve
        (:func:`fit_recalibration`); its TARP uses the 68 % scale. ``None`` skips it.
    baselines : sequence of str
        Classical baselines (fitted on the training and validation simulations) given the same diagnostics, raw and
        recalibrated, in ``baselines[method]``.
    npe : bool
        Also train and evaluate the NPE posterior (needs ``sbi``).
    npe_split : {"valid", "train"}
        Simulations whose CNN summaries train the NPE (``train`` ones are over-fitted by the CNN: optimistic).
    npe_epochs : int
        Maximum NPE training epochs.
    n_samples : int
        Posterior samples per map for TARP and the NPE intervals.
    tta, batch_size, device : prediction options (see :func:`cosmobench.multifield.evaluate.predict`).
    seed : int

    Returns
    -------
    dict
        Per parameter: coverage at 68 % and 95 % per map and per simulation (with bootstrap intervals); TARP
        (ATC, largest deviation, KS p-value) per map and per simulation; the same for the recalibrated intervals
        (``gaussian_recalibrated``, with the scales) and for the NPE, with its leakage.
    """
    from .evaluate import baseline_columns, baseline_predictions, predict_split  # evaluate imports this module
    from .figures import coverage_figure, posterior_figure

    folder = Path(folder)
    params = list(meta["params"])
    names = [PARAM_NAMES[p] for p in params]
    scaler = LabelScaler(meta["labels"]["prior"], meta["labels"]["log"])
    options = {"tta": tta, "batch_size": batch_size, "device": device}
    preds = {name: predict_split(model, meta, data_dir, name, **options) for name in {"test", "valid", npe_split}}

    def normalised(pred):
        """Normalised truths, means and standard deviations of the trained parameters."""
        return scaler.normalise(pred["theta"])[:, params], pred["mu_norm"][:, params], pred["sigma_norm"][:, params]

    theta_n, mu_n, sd_n = normalised(preds["test"])
    sims = preds["test"]["sim_index"]
    first = np.unique(sims, return_index=True)[1]
    levels = default_levels()
    curves: dict[str, dict] = {}

    def gaussian(label: str, test: tuple, valid: tuple, names: list[str]) -> tuple[dict, Recalibration | None]:
        """Coverage curve and TARP (per map, per simulation) of Gaussians N(mu, sd^2) on the test split, raw and
        with the sigma recalibrated on ``valid`` (TARP: its 68 % sigma); ``test``/``valid``: normalised (theta,
        mu, sd, sim_index). Returns the summaries and the recalibration."""
        theta, mu, sd, sim = test
        one = np.unique(sim, return_index=True)[1]
        out = {}
        recal = None
        if recalibration:
            recal = fit_recalibration(*valid, columns=range(len(names)), levels=levels, method=recalibration)
        for key, r in (("gaussian", None), ("gaussian_recalibrated", recal)):
            if key == "gaussian_recalibrated" and r is None:
                continue
            cov = coverage_curve(theta, mu, sd, sim, levels, recalibration=r, seed=seed)
            s68 = sd if r is None else r.sigma(sd, 0.68)
            per_map = tarp(gaussian_samples(mu, s68, n_samples, seed), theta, seed=seed)
            per_sim = tarp(gaussian_samples(mu[one], s68[one], n_samples, seed), theta[one], seed=seed)
            curves[label if r is None else f"{label}, recalibrated"] = {
                "coverage": cov,
                "tarp": per_map,
                "params": names,
            }
            out[key] = _summarise(cov, per_map, per_sim, names, levels)
            out[key]["mean_std_norm"] = dict(zip(names, s68.mean(0).tolist()))
            out[key]["rmse_norm"] = dict(zip(names, np.sqrt(np.mean((mu - theta) ** 2, 0)).tolist()))
        if recal is not None:
            fitted = {**recal.as_dict(names, levels=(0.68, 0.95)), "fitted_on": "valid split"}
            out["gaussian_recalibrated"]["recalibration"] = fitted
        return out, recal

    valid_n = (*normalised(preds["valid"]), preds["valid"]["sim_index"])
    cnn, recal = gaussian("moment network", (theta_n, mu_n, sd_n, sims), valid_n, names)
    result = {
        "suite": meta["suite"],
        "fields": list(meta["fields"]),
        "params": names,
        "n_test_maps": int(len(theta_n)),
        "n_test_sims": int(len(first)),
        **cnn,
        "baselines": {},
    }
    split = {k: np.asarray(v) for k, v in meta["split"].items()}
    targets = {name: (meta["suite"], split[name]) for name in ("valid", "test")}
    set_name = meta["settings"]["set_name"]
    base = baseline_predictions(
        data_dir, meta["suite"], meta["fields"], split, targets, methods=baselines, params=params, set_name=set_name
    )
    for method, pred in base.items():
        cols = [params.index(c) for c in baseline_columns(method, meta["fields"], params)]

        def baseline_normalised(p, cols=cols):
            """Normalised theta, mu, sd (sd through the scaling of mu + sigma: sigma / width when linear)."""
            mu = scaler.normalise(p["mu"])[:, params][:, cols]
            sd = scaler.normalise(p["mu"] + p["sigma"])[:, params][:, cols] - mu
            return scaler.normalise(p["theta"])[:, params][:, cols], mu, sd, p["sim_index"]

        test_b, valid_b = baseline_normalised(pred["test"]), baseline_normalised(pred["valid"])
        result["baselines"][method] = gaussian(method, test_b, valid_b, [names[c] for c in cols])[0]
    if npe:

        def summaries(pred):
            return np.concatenate([pred["mu_norm"][:, params], np.log(pred["sigma_norm"][:, params] + 1e-6)], axis=1)

        theta_cal = normalised(preds[npe_split])[0]
        posterior = fit_npe(summaries(preds[npe_split]), theta_cal, seed=seed, max_epochs=npe_epochs)
        samples, leakage = sample_npe(posterior, summaries(preds["test"]), n_samples, seed=seed)
        npe_cov = coverage_from_samples(samples, theta_n, sims, levels, seed=seed)
        npe_tarp = tarp(samples, theta_n, seed=seed)
        npe_tarp_sim = tarp(samples[:, first], theta_n[first], seed=seed)
        curves["NPE"] = {"coverage": npe_cov, "tarp": npe_tarp, "params": names}
        npe_mu, npe_sd = samples.mean(0), samples.std(0)
        result["npe"] = {
            **_summarise(npe_cov, npe_tarp, npe_tarp_sim, names, levels),
            "trained_on": f"{npe_split} split, {len(theta_cal)} maps",
            "leakage": leakage,
            "rmse_norm": dict(zip(names, np.sqrt(np.mean((npe_mu - theta_n) ** 2, 0)).tolist())),
            "mean_std_norm": dict(zip(names, npe_sd.mean(0).tolist())),
        }

        def physical(x: np.ndarray) -> np.ndarray:
            """Normalised values of the trained parameters (n, d) -> physical ones."""
            full = np.full((len(x), len(PARAM_NAMES)), 0.5)
            full[:, params] = x
            return scaler.denormalise(full, np.zeros_like(full))[0][:, params]

        gauss = {"moment network": (mu_n[0], sd_n[0])}
        if recal is not None:
            gauss["moment network, recalibrated"] = (mu_n[0], recal.sigma(sd_n[:1], 0.68)[0])
        example = {
            k: (physical(m[None])[0], physical((m + s)[None])[0] - physical(m[None])[0]) for k, (m, s) in gauss.items()
        }
        posterior_figure(
            physical(samples[:, 0]),
            physical(theta_n[:1])[0],
            names,
            folder / "posterior.png",
            gaussians=example,
            title=f"test map {int(preds['test']['map_index'][0])} (simulation {int(sims[0])}): NPE samples",
        )
    coverage_figure(curves, folder / "calibration.png")
    write_json(folder / "calibration.json", result)
    return result


def _summarise(cov: dict, tarp_map: dict, tarp_sim: dict, names, levels) -> dict:
    i68, i95 = int(np.argmin(np.abs(levels - 0.68))), int(np.argmin(np.abs(levels - 0.95)))
    out = {}
    for j, name in enumerate(names):
        out[name] = {
            f"coverage{lvl}_{kind}": float(cov[kind][i, j])
            for lvl, i in (("68", i68), ("95", i95))
            for kind in ("per_map", "per_sim")
        }
        for lvl, i in (("68", i68), ("95", i95)):
            out[name][f"coverage{lvl}_per_sim_ci"] = [float(cov["ci"][0][i, j]), float(cov["ci"][1][i, j])]
    out["tarp_per_map"] = {k: tarp_map[k] for k in ("atc", "max_dev", "ks_p")}
    out["tarp_per_sim"] = {k: tarp_sim[k] for k in ("atc", "max_dev", "ks_p")}
    return out
