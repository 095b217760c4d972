"""Classical baselines of the multifield task: per-map summary statistics + a Gaussian ridge, and the baryon fraction.

Two estimators that need no network, reported beside the CNN in the same protocol (same splits, same
:func:`cosmobench.multifield.evaluate.metrics`):

- :class:`SummaryRidge`: per-map summaries (:func:`summaries`: one-point moments and quantiles of the log fields,
  log band powers of each log field, cross-correlation coefficients of every pair of fields in the same bands)
  feeding ridge regressions, one per parameter, for the posterior mean, and a second ridge on the log squared
  residuals for the posterior standard deviation. The variance model is fitted on out-of-fold residuals of the
  training simulations (grouped K-fold, so a map never predicts a map of its own simulation), then its scale set
  to chi^2 = 1 on the validation split. Both ridge penalties are chosen on the validation split only.
- :func:`baryon_fraction_omega_m`: Omega_b / (mean Mgas / mean Mtot), zero parameters; with Omega_b fixed by the
  simulations (0.049 in CAMELS and here), the gas-to-total mass ratio of a map measures Omega_m, biased by the
  stars and by the gas that feedback moved out of or into the slab. Its sigma is the scatter of log(mu / theta)
  on the validation split, the only thing it fits.

:func:`predict_baseline` returns the arrays of :func:`cosmobench.multifield.evaluate.predict` (``theta``, ``mu``,
``sigma``, ``map_index``, ``sim_index``), so the lead's tables take either.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from itertools import combinations
from pathlib import Path

import numpy as np

from .cmd import MAPS_PER_SIM, load_maps, load_params, sims_to_maps, transform
from .power import CMD_FIXED, map_band_power
from .simulate import BOX

__all__ = [
    "band_edges",
    "summaries",
    "summary_names",
    "SummaryRidge",
    "baryon_fraction_omega_m",
    "load_summaries",
    "predict_baseline",
    "DEFAULT_ALPHAS",
]

QUANTILES = (0.05, 0.25, 0.5, 0.75, 0.95)
#: Ridge penalties tried (on standardised features), chosen on the validation split.
DEFAULT_ALPHAS = tuple(10.0 ** np.arange(-3, 4.5, 0.5))
_LOG_CHI2_1 = -1.2703628454614782  # E[ln z^2] for z ~ N(0, 1): the offset of a regression of ln r^2


def band_edges(npix: int, nbands: int = 8, *, box: float = BOX) -> np.ndarray:
    """``nbands`` log-spaced bands from the fundamental mode 2 pi / box to the Nyquist pi npix / box, h/Mpc.

    Returns
    -------
    ndarray, shape (nbands + 1,)
    """
    return np.geomspace(2 * np.pi / box, np.pi * npix / box, nbands + 1)


def summary_names(fields: Sequence[str], nbands: int = 8) -> list[str]:
    """Names of the columns of :func:`summaries`, in order."""
    names = []
    for f in fields:
        names += [f"{f}:logmean", f"{f}:mean", f"{f}:std", f"{f}:skew", f"{f}:kurt"]
        names += [f"{f}:q{q:g}" for q in QUANTILES]
        names += [f"{f}:logP{b}" for b in range(nbands)]
    for a, b in combinations(fields, 2):
        names += [f"{a}x{b}:r{i}" for i in range(nbands)]
    return names


def summaries(maps: Mapping[str, np.ndarray], *, nbands: int = 8, box: float = BOX) -> np.ndarray:
    """Per-map summary statistics of several fields of the same maps.

    Per field: the transform of the map's linear mean (log10 <m>, which carries the mass fractions, e.g. Omega_b /
    Omega_m in <Mgas> / <Mtot>), and of x = :func:`cosmobench.multifield.cmd.transform` (log10, log10(1 + x) for
    Mstar): mean, standard deviation, skewness, excess kurtosis, the 5/25/50/75/95 % quantiles, and log10 of the
    band powers of x (:func:`~cosmobench.multifield.power.map_band_power` in the bands of :func:`band_edges`); per
    pair of fields,
    the cross-correlation coefficient P_ab / sqrt(P_aa P_bb) of the log fields in the same bands.

    Parameters
    ----------
    maps : mapping field -> ndarray, shape (n, npix, npix)
        Physical (CMD-unit) maps of the same regions.
    nbands : int
    box : float
        Map side, Mpc/h.

    Returns
    -------
    ndarray, shape (n, n_features), float64; columns named by :func:`summary_names`.
    """
    fields = list(maps)
    logs = {f: np.asarray(transform(f, maps[f]), dtype=np.float64) for f in fields}
    edges = band_edges(next(iter(logs.values())).shape[-1], nbands, box=box)
    cols, power = [], {}
    for f in fields:
        x = logs[f].reshape(len(logs[f]), -1)
        mean, std = x.mean(1), x.std(1)
        z = (x - mean[:, None]) / np.maximum(std, 1e-12)[:, None]
        power[f] = map_band_power(logs[f], edges, box=box)
        linear = np.asarray(transform(f, np.asarray(maps[f], dtype=np.float64).mean(axis=(-2, -1))[:, None, None]))
        cols += [linear[:, 0, 0], mean, std, (z**3).mean(1), (z**4).mean(1) - 3.0, *np.quantile(x, QUANTILES, axis=1)]
        cols += list(np.log10(np.maximum(power[f], 1e-300)).T)
    for a, b in combinations(fields, 2):
        cross = map_band_power(logs[a], edges, box=box, other=logs[b])
        cols += list((cross / np.sqrt(power[a] * power[b])).T)
    return np.stack(cols, axis=1)


def _ridge(x: np.ndarray, y: np.ndarray, alpha: float) -> np.ndarray:
    """Ridge coefficients (intercept first, not penalised) of y on standardised x; x (n, d), y (n, m)."""
    xm, ym = x.mean(0), y.mean(0)
    xc = x - xm
    w = np.linalg.solve(xc.T @ xc + alpha * len(x) * np.eye(x.shape[1]), xc.T @ (y - ym))
    return np.vstack([ym - xm @ w, w])


def _apply(coef: np.ndarray, x: np.ndarray) -> np.ndarray:
    return coef[0] + x @ coef[1:]


@dataclass
class SummaryRidge:
    """Gaussian posterior N(mu(s), sigma(s)^2) per parameter from summary statistics s, by two ridge regressions.

    Attributes
    ----------
    alphas : sequence of float
        Ridge penalties tried, relative to the number of samples, on standardised features.
    n_folds : int
        Folds (of training simulations) for the out-of-fold residuals the variance model is fitted on.
    fitted : dict
        Set by :meth:`fit`: feature and label standardisation, coefficients and chosen penalties of the mean
        (``coef_mu``, ``alpha_mu``) and log-variance (``coef_var``, ``alpha_var``) ridges, ``var_scale``.
    """

    alphas: Sequence[float] = DEFAULT_ALPHAS
    n_folds: int = 5
    fitted: dict = field(default_factory=dict, repr=False)

    def fit(
        self,
        x_train: np.ndarray,
        y_train: np.ndarray,
        groups: np.ndarray,
        x_valid: np.ndarray,
        y_valid: np.ndarray,
    ) -> SummaryRidge:
        """Fit on the training maps; choose penalties and the sigma scale on the validation maps.

        Parameters
        ----------
        x_train, x_valid : ndarray, shapes (n, d), (n_v, d)
            Summaries (:func:`summaries`).
        y_train, y_valid : ndarray, shapes (n, p), (n_v, p)
            Parameters to infer, any units (each column standardised internally).
        groups : ndarray, shape (n,)
            Simulation of each training map (folds never split a simulation).

        Returns
        -------
        self
        """
        x_train, y_train, x_valid, y_valid = (
            np.asarray(a, dtype=np.float64) for a in (x_train, y_train, x_valid, y_valid)
        )
        keep = x_train.std(0) > 0
        x_mean, x_std = x_train[:, keep].mean(0), x_train[:, keep].std(0)
        y_mean, y_std = y_train.mean(0), y_train.std(0)

        def xs(x):
            return (x[:, keep] - x_mean) / x_std

        xt, xv = xs(x_train), xs(x_valid)
        yt, yv = (y_train - y_mean) / y_std, (y_valid - y_mean) / y_std
        n_par = yt.shape[1]
        # mean: one penalty per parameter, the one with the smallest validation error
        errors = np.array([np.mean((_apply(_ridge(xt, yt, a), xv) - yv) ** 2, axis=0) for a in self.alphas])
        alpha_mu = np.asarray(self.alphas)[errors.argmin(0)]
        coef_mu = np.stack([_ridge(xt, yt[:, [j]], alpha_mu[j])[:, 0] for j in range(n_par)], axis=1)
        # out-of-fold residuals of the training maps, folds of whole simulations
        sims = np.unique(groups)
        fold_of_sim = np.arange(len(sims)) % min(self.n_folds, len(sims))
        fold = fold_of_sim[np.searchsorted(sims, groups)]
        oof = np.empty_like(yt)
        for k in np.unique(fold):
            tr = fold != k
            for j in range(n_par):
                oof[~tr, j] = _apply(_ridge(xt[tr], yt[tr][:, [j]], alpha_mu[j]), xt[~tr])[:, 0]
        log_r2 = np.log(np.maximum((oof - yt) ** 2, 1e-12)) - _LOG_CHI2_1
        r2_valid = (_apply(coef_mu, xv) - yv) ** 2
        # variance: ridge on ln r^2, penalty by validation Gaussian NLL, then the scale with chi^2 = 1 on validation
        best = []
        for j in range(n_par):
            trials = []
            for a in self.alphas:
                c = _ridge(xt, log_r2[:, [j]], a)
                var = np.exp(_apply(c, xv)[:, 0])
                scale = np.mean(r2_valid[:, j] / var)
                trials.append((np.mean(np.log(scale * var) + r2_valid[:, j] / (scale * var)), a, c[:, 0], scale))
            best.append(min(trials, key=lambda t: t[0]))
        self.fitted = {
            "keep": keep,
            "x_mean": x_mean,
            "x_std": x_std,
            "y_mean": y_mean,
            "y_std": y_std,
            "coef_mu": coef_mu,
            "alpha_mu": alpha_mu,
            "coef_var": np.stack([b[2] for b in best], axis=1),
            "alpha_var": np.array([b[1] for b in best]),
            "var_scale": np.array([b[3] for b in best]),
        }
        return self

    def predict(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Posterior mean and standard deviation, each shape (n, p), in the units of the fitted ``y``."""
        if not self.fitted:
            raise RuntimeError("SummaryRidge.predict called before fit")
        f = self.fitted
        xs = (np.asarray(x, dtype=np.float64)[:, f["keep"]] - f["x_mean"]) / f["x_std"]
        mu = _apply(f["coef_mu"], xs) * f["y_std"] + f["y_mean"]
        sigma = np.sqrt(f["var_scale"] * np.exp(_apply(f["coef_var"], xs))) * f["y_std"]
        return mu, sigma


def baryon_fraction_omega_m(mgas: np.ndarray, mtot: np.ndarray, *, omega_b: float = CMD_FIXED["omega_b"]) -> np.ndarray:
    """The zero-parameter estimator Omega_m = Omega_b / (mean Mgas / mean Mtot) of each map.

    Parameters
    ----------
    mgas, mtot : ndarray, shape (n, npix, npix)
        Gas and total surface density of the same maps, any common unit.
    omega_b : float
        Cosmic baryon density, fixed in the simulations (CAMELS: 0.049).

    Returns
    -------
    ndarray, shape (n,)
    """
    mgas, mtot = (np.asarray(a, dtype=np.float64) for a in (mgas, mtot))
    return omega_b * mtot.mean(axis=(-2, -1)) / mgas.mean(axis=(-2, -1))


def load_summaries(
    data_dir: Path | str,
    suite: str,
    fields: Sequence[str],
    map_index: np.ndarray,
    *,
    nbands: int = 8,
    set_name: str = "LH",
    chunk: int = 1500,
) -> np.ndarray:
    """:func:`summaries` of maps ``map_index`` of a CMD-format suite, read in chunks; shape (n, n_features)."""
    arrays = {f: load_maps(data_dir, f, suite, set_name) for f in fields}
    map_index = np.asarray(map_index, dtype=np.int64)
    out = [
        summaries({f: np.asarray(a[map_index[i : i + chunk]]) for f, a in arrays.items()}, nbands=nbands)
        for i in range(0, len(map_index), chunk)
    ]
    return np.concatenate(out)


def predict_baseline(
    data_dir: Path | str,
    train_suite: str,
    fields: Sequence[str],
    split: Mapping[str, np.ndarray],
    *,
    test_suite: str | None = None,
    params: Sequence[int] = (0, 1),
    method: str = "ridge",
    nbands: int = 8,
    set_name: str = "LH",
) -> dict[str, np.ndarray]:
    """Baseline predictions on the test simulations, in the format of :func:`cosmobench.multifield.evaluate.predict`.

    Parameters
    ----------
    data_dir : path
        CMD-format data folder.
    train_suite : str
        Suite whose ``train`` and ``valid`` simulations fit the baseline.
    fields : sequence of str
        Input fields (``baryon_fraction`` needs Mgas and Mtot and ignores the others).
    split : mapping
        ``train``, ``valid``, ``test``: simulation indices (e.g. a model's ``split.json`` or
        :func:`cosmobench.multifield.cmd.split_sims`); ``test`` indexes ``test_suite``.
    test_suite : str, optional
        Default ``train_suite`` (cross-suite: summaries of B go through the ridge fitted on A).
    params : sequence of int
        Parameter columns inferred (others get mu = nan, sigma = nan).
    method : {"ridge", "baryon_fraction"}
        :class:`SummaryRidge` on ln(theta) (the mass fractions make ln Omega_m linear in the log mean fields;
        mu = exp(mean), sigma = mu times the sigma of ln theta), or :func:`baryon_fraction_omega_m` for Omega_m
        (column 0 only), whose sigma is the RMS of log(mu / theta) on the validation split times mu.

    Returns
    -------
    dict
        ``theta``, ``mu``, ``sigma`` (n, 6); ``map_index``, ``sim_index`` (n,); ``method``.
    """
    test_suite = test_suite or train_suite
    maps = {s: sims_to_maps(np.asarray(split[s])) for s in ("train", "valid", "test")}
    theta = {
        s: load_params(data_dir, test_suite if s == "test" else train_suite, set_name)[maps[s] // MAPS_PER_SIM]
        for s in maps
    }
    mu = np.full(theta["test"].shape, np.nan)
    sigma = np.full(theta["test"].shape, np.nan)
    if method == "ridge":
        x = {
            s: load_summaries(
                data_dir, test_suite if s == "test" else train_suite, fields, maps[s], nbands=nbands, set_name=set_name
            )
            for s in maps
        }
        cols = list(params)
        log_theta = {s: np.log(theta[s][:, cols]) for s in ("train", "valid")}  # Omega_m = Omega_b <Mtot>/<Mgas>
        model = SummaryRidge().fit(
            x["train"], log_theta["train"], maps["train"] // MAPS_PER_SIM, x["valid"], log_theta["valid"]
        )
        log_mu, log_sigma = model.predict(x["test"])
        mu[:, cols] = np.exp(log_mu)
        sigma[:, cols] = mu[:, cols] * log_sigma  # delta method
    elif method == "baryon_fraction":
        if 0 not in params:
            raise ValueError("the baryon-fraction estimator infers Omega_m (column 0) only")

        def estimate(suite: str, idx: np.ndarray) -> np.ndarray:
            return baryon_fraction_omega_m(
                np.asarray(load_maps(data_dir, "Mgas", suite, set_name)[idx]),
                np.asarray(load_maps(data_dir, "Mtot", suite, set_name)[idx]),
            )

        spread = np.sqrt(np.mean(np.log(estimate(train_suite, maps["valid"]) / theta["valid"][:, 0]) ** 2))
        mu[:, 0] = estimate(test_suite, maps["test"])
        sigma[:, 0] = spread * mu[:, 0]
    else:
        raise ValueError(f"unknown baseline method {method!r}; expected 'ridge' or 'baryon_fraction'")
    return {
        "theta": theta["test"],
        "mu": mu,
        "sigma": sigma,
        "map_index": maps["test"],
        "sim_index": maps["test"] // MAPS_PER_SIM,
        "method": method,
    }
