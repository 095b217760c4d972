"""Predictions of a trained o3_err on a split, and the metrics of the CMD papers with per-simulation aggregates.

Per parameter, over maps: RMSE; relative error sqrt(mean((theta - mu)^2 / theta^2)) (the reference's printed
definition, an RMS of the fractional error); R^2 = 1 - sum (theta - mu)^2 / sum (theta - mean theta)^2;
chi^2 = mean((theta - mu)^2 / sigma^2) (and its median, 0.455 when calibrated, which a few maps with sigma -> 0 cannot
dominate);
bias mean(mu - theta); mean predicted sigma; coverage of mu +- z sigma at 68 % and 95 % (z = 0.994, 1.960).
Given a :class:`~cosmobench.multifield.calibration.Recalibration` (fitted on the validation split), chi^2,
coverage and mean sigma are also reported for the recalibrated sigma's, with the suffix ``_cal``, next to the raw
ones.

The 15 maps of a simulation share its parameters and are correlated, so the effective sample size is the number
of simulations (50 in CMD's test set). Every metric is therefore also given with a 68 % bootstrap interval over
*simulations* (resampling whole simulations), and R^2/RMSE/relative error are also computed on per-simulation
means of mu ("sim" aggregates).

The classical baselines (:mod:`cosmobench.multifield.baseline`: ``ridge`` on summary statistics, and the
``baryon_fraction`` estimator of Omega_m) are evaluated on the same maps with the same metrics and the same
recalibration fitted on the same validation split (:func:`baseline_predictions`, :func:`method_metrics`); every
result carries a ``method`` (``cnn``, ``ridge``, ``baryon_fraction``).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from ..core.io import atomic_path, write_json
from ..core.runtime import resolve_device
from ..core.seeds import rng
from .augment import DIHEDRAL, apply
from .calibration import Recalibration, fit_recalibration, recalibrated_coverage_band
from .cmd import MAPS_PER_SIM, PARAM_NAMES, FieldStats, LabelScaler, MapStack, load_params, sims_to_maps, split_sims
from .settings import BASELINES, TestSettings

_T = TestSettings

__all__ = [
    "predict",
    "split_indices",
    "predict_split",
    "recalibrate_on_valid",
    "metrics",
    "coverage",
    "write_predictions",
    "evaluate_split",
    "baseline_columns",
    "baseline_predictions",
    "method_metrics",
    "metrics_rows",
    "write_metrics_csv",
    "METHOD_LABELS",
    "Z68",
    "Z95",
]

Z68, Z95 = 0.994457883, 1.959963985  # two-sided Gaussian quantiles of 68 % and 95 %
#: What each ``method`` is, for tables and figures.
METHOD_LABELS = {
    "cnn": "o3_err CNN (moment network)",
    "ridge": "ridge on summary statistics (moments, quantiles, band powers, cross-correlations)",
    "baryon_fraction": "baryon fraction Omega_b <Mtot>/<Mgas> (zero parameters; Omega_m only)",
}


@torch.no_grad()
def predict(
    model: torch.nn.Module,
    meta: dict,
    data_dir: Path | str,
    suite: str,
    map_index: np.ndarray,
    *,
    batch_size: int = 128,
    tta: bool = True,
    device: str | torch.device | None = "auto",
    set_name: str = "LH",
) -> dict[str, np.ndarray]:
    """Posterior means and standard deviations of every map, de-normalised to physical units.

    Inputs are standardised with the model's own (training-suite) statistics, so a model trained on suite A and
    applied to suite B sees B through A's normalisation, as the CMD protocol prescribes.

    Parameters
    ----------
    model, meta : from :func:`cosmobench.multifield.train.load_model`
    data_dir, suite : where the maps to predict are
    map_index : ndarray of int
        Global map indices.
    tta : bool
        Average over the 8 dihedral transforms (mu: mean; sigma: root-mean-square); per-transform predictions are
        returned as well.
    device : str or torch.device
        "auto": CUDA when available; bf16 autocast there when the model was trained with ``amp``.

    Returns
    -------
    dict
        ``theta``, ``mu``, ``sigma`` (n, 6) physical; ``mu_norm``, ``sigma_norm`` (n, 6) normalised;
        ``mu_aug``, ``sigma_aug`` (n_transforms, n, 6) physical; ``map_index``, ``sim_index`` (n,).
    """
    device = resolve_device(device)
    model = model.to(device).eval()
    stats = FieldStats.from_dict(meta["stats"])
    scaler = LabelScaler(meta["labels"]["prior"], meta["labels"]["log"])
    map_index = np.asarray(map_index, dtype=np.int64)
    stack = MapStack(data_dir, suite, stats, map_index, set_name=set_name, in_memory=False)
    elements = DIHEDRAL if tta else DIHEDRAL[:1]
    use_amp = bool(meta["settings"].get("amp")) and device.type == "cuda"
    mu_aug, sd_aug = [], []
    for start in range(0, len(stack), batch_size):
        x = torch.as_tensor(stack[np.arange(start, min(start + batch_size, len(stack)))]).to(device)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=use_amp):
            outs = torch.stack([model(apply(x, g).contiguous()).float() for g in elements])
        mu_aug.append(outs[..., : len(PARAM_NAMES)].cpu().numpy())
        sd_aug.append(outs[..., len(PARAM_NAMES) :].cpu().numpy())
    mu_n = np.concatenate(mu_aug, axis=1).astype(np.float64)
    sd_n = np.concatenate(sd_aug, axis=1).astype(np.float64)
    mu_norm, sd_norm = mu_n.mean(0), np.sqrt(np.square(sd_n).mean(0))
    mu, sigma = scaler.denormalise(mu_norm, sd_norm)
    mu_a, sd_a = scaler.denormalise(mu_n, sd_n)
    theta = load_params(data_dir, suite, set_name)[map_index // MAPS_PER_SIM]
    return {
        "theta": theta,
        "mu": mu,
        "sigma": sigma,
        "mu_norm": mu_norm,
        "sigma_norm": sd_norm,
        "mu_aug": mu_a,
        "sigma_aug": sd_a,
        "map_index": map_index,
        "sim_index": map_index // MAPS_PER_SIM,
    }


def split_indices(meta: dict, data_dir: Path | str, suite: str, split: str) -> np.ndarray:
    """Simulations of ``split`` of ``suite`` for a model: its stored split on its own suite, else the same
    fractions and seed applied to ``suite``'s simulations."""
    if suite == meta["suite"]:
        return np.asarray(meta["split"][split])
    s = meta["settings"]
    return split_sims(len(load_params(data_dir, suite, s["set_name"])), s["split"], s["split_seed"])[split]


def predict_split(
    model: torch.nn.Module,
    meta: dict,
    data_dir: Path | str,
    split: str,
    *,
    suite: str | None = None,
    batch_size: int = 128,
    tta: bool = True,
    device: str | torch.device | None = "auto",
) -> dict[str, np.ndarray]:
    """:func:`predict` on every map of the simulations of ``split`` of ``suite`` (default: the model's suite)."""
    suite = suite or meta["suite"]
    sims = split_indices(meta, data_dir, suite, split)
    return predict(
        model,
        meta,
        data_dir,
        suite,
        sims_to_maps(sims),
        batch_size=batch_size,
        tta=tta,
        device=device,
        set_name=meta["settings"]["set_name"],
    )


def recalibrate_on_valid(
    model: torch.nn.Module,
    meta: dict,
    data_dir: Path | str,
    *,
    method: str = "loglinear",
    levels: tuple[float, ...] = (0.68, 0.95),
    batch_size: int = 128,
    tta: bool = True,
    device: str | torch.device | None = "auto",
) -> tuple[Recalibration, dict[str, np.ndarray]]:
    """Fit the sigma recalibration of a model on its own suite's validation split (never the test split).

    Returns
    -------
    Recalibration
        Over the model's trained parameter columns, fitted in physical units (for the linearly scaled Omega_m and
        sigma_8 the intervals are the same as when fitted in normalised units).
    dict
        The validation predictions it was fitted on.
    """
    pred = predict_split(model, meta, data_dir, "valid", batch_size=batch_size, tta=tta, device=device)
    recal = fit_recalibration(
        pred["theta"],
        pred["mu"],
        pred["sigma"],
        pred["sim_index"],
        columns=meta["params"],
        levels=levels,
        method=method,
    )
    return recal, pred


def coverage(theta: np.ndarray, mu: np.ndarray, sigma: np.ndarray, z: float) -> np.ndarray:
    """Fraction of rows with abs(theta - mu) <= z sigma, per column."""
    return np.mean(np.abs(theta - mu) <= z * sigma, axis=0)


def _per_param(theta, mu, sigma, sigma95):
    err = mu - theta
    ss_res = np.sum(err**2, axis=0)
    ss_tot = np.sum((theta - theta.mean(0)) ** 2, axis=0)
    with np.errstate(divide="ignore", invalid="ignore"):
        return {
            "rmse": np.sqrt(np.mean(err**2, axis=0)),
            "rel_err": np.sqrt(np.mean((err / theta) ** 2, axis=0)),
            "r2": 1 - ss_res / ss_tot,
            "chi2": np.mean(err**2 / sigma**2, axis=0),
            "chi2_median": np.median(err**2 / sigma**2, axis=0),  # 0.455 for calibrated Gaussian errors
            "bias": np.mean(err, axis=0),
            "mean_sigma": np.mean(sigma, axis=0),
            "coverage68": coverage(theta, mu, sigma, Z68),
            "coverage95": coverage(theta, mu, sigma95, Z95),
        }


def metrics(
    theta: np.ndarray,
    mu: np.ndarray,
    sigma: np.ndarray,
    sim_index: np.ndarray,
    *,
    params: tuple[int, ...] = (0, 1),
    n_boot: int = 200,
    seed: int = 0,
    sigma95: np.ndarray | None = None,
    recalibration: Recalibration | None = None,
) -> dict:
    """Metrics per parameter over maps, their bootstrap intervals over simulations, and per-simulation aggregates.

    Parameters
    ----------
    theta, mu, sigma : ndarray, shape (n, 6)
    sim_index : ndarray, shape (n,)
    params : tuple of int
        Columns reported.
    n_boot : int
        Bootstrap resamples of simulations.
    sigma95 : ndarray, shape (n, 6), optional
        Standard deviations of the 95 % intervals (default ``sigma``; a conformal recalibration widens the two
        levels differently).
    recalibration : Recalibration, optional
        Also report ``chi2``, ``chi2_median``, ``coverage68``, ``coverage95`` and ``mean_sigma`` of the
        recalibrated sigma's (68 % scale; 95 % scale for ``coverage95``) with the suffix ``_cal``.

    Returns
    -------
    dict
        ``{name: {metric: value, metric + "_ci": [lo, hi], "sim_r2": ..., "sim_rmse": ..., "sim_rel_err": ...}}``
        plus ``n_maps`` and ``n_sims``.
    """
    theta, mu, sigma = (np.asarray(a, dtype=np.float64) for a in (theta, mu, sigma))
    sigma95 = sigma if sigma95 is None else np.asarray(sigma95, dtype=np.float64)
    sims, inverse = np.unique(sim_index, return_inverse=True)
    point = _per_param(theta, mu, sigma, sigma95)
    counts = np.bincount(inverse)
    sim_theta = np.stack([np.bincount(inverse, theta[:, j]) / counts for j in range(theta.shape[1])], axis=1)
    sim_mu = np.stack([np.bincount(inverse, mu[:, j]) / counts for j in range(mu.shape[1])], axis=1)
    sim_point = _per_param(sim_theta, sim_mu, np.ones_like(sim_mu), np.ones_like(sim_mu))
    boot = {k: [] for k in point}
    gen = rng(seed, "bootstrap")
    rows_of = [np.flatnonzero(inverse == s) for s in range(len(sims))]
    for _ in range(n_boot if len(sims) > 1 else 0):
        pick = np.concatenate([rows_of[s] for s in gen.integers(0, len(sims), len(sims))])
        for k, v in _per_param(theta[pick], mu[pick], sigma[pick], sigma95[pick]).items():
            boot[k].append(v)
    out: dict = {"n_maps": int(len(theta)), "n_sims": int(len(sims))}
    for j in params:
        entry = {}
        for k, v in point.items():
            entry[k] = float(v[j])
            if boot[k]:
                entry[k + "_ci"] = [float(np.nanquantile(np.asarray(boot[k])[:, j], q)) for q in (0.16, 0.84)]
        entry.update(
            {
                "sim_r2": float(sim_point["r2"][j]),
                "sim_rmse": float(sim_point["rmse"][j]),
                "sim_rel_err": float(sim_point["rel_err"][j]),
            }
        )
        out[PARAM_NAMES[j]] = entry
    if recalibration is not None:
        cal = metrics(
            theta,
            mu,
            recalibration.sigma(sigma, 0.68),
            sim_index,
            params=params,
            n_boot=n_boot,
            seed=seed,
            sigma95=recalibration.sigma(sigma, 0.95),
        )
        for j in params:
            name = PARAM_NAMES[j]
            for k in ("chi2", "chi2_median", "coverage68", "coverage95", "mean_sigma"):
                out[name][k + "_cal"] = cal[name][k]
                if k + "_ci" in cal[name]:
                    out[name][k + "_cal_ci"] = cal[name][k + "_ci"]
    return out


def baseline_columns(method: str, fields: Sequence[str], params: Sequence[int]) -> tuple[int, ...]:
    """Parameter columns a baseline infers from ``fields``: all ``params`` for ``ridge``; Omega_m (0) for
    ``baryon_fraction`` when Mgas and Mtot are among the fields; () when it does not apply."""
    if method not in BASELINES:
        raise ValueError(f"unknown baseline {method!r}; choose among {list(BASELINES)}")
    if method == "baryon_fraction":
        return (0,) if 0 in params and {"Mgas", "Mtot"} <= set(fields) else ()
    return tuple(params)


def baseline_predictions(
    data_dir: Path | str,
    suite: str,
    fields: Sequence[str],
    split: dict[str, np.ndarray],
    targets: dict[str, tuple[str, np.ndarray]],
    *,
    methods: Sequence[str] = BASELINES,
    params: Sequence[int] = (0, 1),
    set_name: str = "LH",
) -> dict[str, dict[str, dict[str, np.ndarray]]]:
    """Predictions of the classical baselines fitted on ``suite`` (its ``train`` simulations; penalties and sigma
    scale on its ``valid`` ones), on several targets.

    Parameters
    ----------
    data_dir : path
    suite, fields : the training suite and the input fields (the CNN's)
    split : dict
        ``train``, ``valid`` simulation indices of ``suite`` (the CNN's split).
    targets : dict
        name -> (suite, simulation indices) to predict, e.g. ``{"valid": (suite, split["valid"]), "test": ...}``.
    methods : sequence of str
        Baselines; those that do not apply to ``fields``/``params`` (:func:`baseline_columns`) are left out.
    params : sequence of int
        Parameter columns.

    Returns
    -------
    dict
        method -> target name -> the arrays of :func:`predict` (``theta``, ``mu``, ``sigma`` (n, 6), ``map_index``,
        ``sim_index``); columns outside the method's are NaN.
    """
    from .baseline import predict_baseline

    out = {}
    for method in methods:
        cols = baseline_columns(method, fields, params)
        if not cols:
            continue
        out[method] = {}
        for target_suite in dict.fromkeys(t[0] for t in targets.values()):  # one fit per target suite
            names = [name for name, (t, _) in targets.items() if t == target_suite]
            sims = [np.asarray(targets[name][1]) for name in names]
            fit_split = {"train": split["train"], "valid": split["valid"], "test": np.unique(np.concatenate(sims))}
            pred = predict_baseline(
                data_dir,
                suite,
                fields,
                fit_split,
                test_suite=target_suite,
                params=cols,
                method=method,
                set_name=set_name,
            )
            for name, these in zip(names, sims):
                rows = np.isin(pred["sim_index"], these)
                out[method][name] = {k: v[rows] if isinstance(v, np.ndarray) else v for k, v in pred.items()}
    return out


def method_metrics(
    tests: dict[str, dict[str, np.ndarray]],
    columns: tuple[int, ...],
    *,
    valid: dict[str, np.ndarray] | None = None,
    recalibration: str | None = None,
    seed: int = 0,
) -> tuple[dict[str, dict], Recalibration | None]:
    """:func:`metrics` of one method's predictions on several targets, with one sigma recalibration fitted on its
    ``valid`` predictions (its training suite's validation split).

    Parameters
    ----------
    tests : dict
        name -> predictions (``theta``, ``mu``, ``sigma``, ``sim_index``), e.g. one per test suite.
    columns : tuple of int
        Parameter columns the method infers.
    valid : dict, optional
        Validation predictions of the same method (needed for ``recalibration``).
    recalibration : {"loglinear", "conformal", "chi2"}, optional

    Returns
    -------
    dict
        name -> metrics (raw and, with ``recalibration``, ``*_cal``).
    Recalibration or None
        The fitted recalibration.
    """
    recal = None
    if recalibration and valid is not None:
        keys = ("theta", "mu", "sigma", "sim_index")
        recal = fit_recalibration(*(valid[k] for k in keys), columns=columns, method=recalibration)
    out = {
        name: metrics(p["theta"], p["mu"], p["sigma"], p["sim_index"], params=columns, seed=seed, recalibration=recal)
        for name, p in tests.items()
    }
    return out, recal


#: Columns of ``metrics.csv`` and of the report's tables, with their definitions (stated in every table header).
METRIC_COLUMNS = {
    "r2": "R² = 1 - Σ(mu - theta)² / Σ(theta - mean theta)², over maps",
    "sim_r2": "R² of the per-simulation means of mu",
    "rel_err": "relative error = sqrt(mean((mu - theta)² / theta²)), over maps",
    "chi2": "χ² = mean((mu - theta)² / sigma²), raw sigma",
    "coverage68": "fraction of maps with |mu - theta| <= 0.994 sigma (raw)",
    "coverage95": "fraction with |mu - theta| <= 1.960 sigma (raw)",
    "chi2_cal": "χ² with the sigma recalibrated on the validation split",
    "coverage68_cal": "68 % coverage, recalibrated sigma",
    "coverage95_cal": "95 % coverage, recalibrated sigma",
}


def metrics_rows(by_method: dict[str, dict]) -> list[dict]:
    """Long-format rows (``method``, ``parameter``, and :data:`METRIC_COLUMNS` present) of ``method -> metrics``."""
    rows = []
    for method, m in by_method.items():
        for param, entry in m.items():
            if isinstance(entry, dict):
                rows.append(
                    {"method": method, "parameter": param, **{k: entry[k] for k in METRIC_COLUMNS if k in entry}}
                )
    return rows


def write_metrics_csv(path: Path | str, rows: list[dict]) -> None:
    """Write :func:`metrics_rows` as CSV (one row per method and parameter; a header comment defines the columns)."""
    import csv

    keys = list(dict.fromkeys(k for row in rows for k in row))
    with atomic_path(Path(path)) as tmp, open(tmp, "w", newline="") as fh:
        fh.write("# " + "; ".join(f"{k}: {v}" for k, v in METRIC_COLUMNS.items() if k in keys) + "\n")
        writer = csv.DictWriter(fh, fieldnames=keys, restval="")
        writer.writeheader()
        writer.writerows(rows)


def write_predictions(folder: Path | str, pred: dict[str, np.ndarray]) -> None:
    """Write ``predictions.txt`` (the reference's 18 columns: 6 true, 6 mean, 6 std; one row per map, in the order
    of ``map_index``) and ``predictions.npz`` (everything, per-transform predictions and indices included)."""
    folder = Path(folder)
    table = np.concatenate([pred["theta"], pred["mu"], pred["sigma"]], axis=1)
    header = (
        "columns: true " + " ".join(PARAM_NAMES) + " | posterior mean (same order) | posterior std (same "
        "order); rows follow map_index in predictions.npz"
    )
    with atomic_path(folder / "predictions.txt") as tmp:
        np.savetxt(tmp, table, fmt="%.6e", header=header)
    with atomic_path(folder / "predictions.npz") as tmp, open(tmp, "wb") as fh:
        np.savez(fh, **pred)


def evaluate_split(
    model: torch.nn.Module,
    meta: dict,
    data_dir: Path | str,
    folder: Path | str,
    *,
    test_suite: str | None = _T.test_suite,
    split: str = _T.split,
    tta: bool = _T.tta,
    batch_size: int = _T.batch_size,
    device: str | torch.device | None = _T.device,
    seed: int = _T.seed,
    recalibration: str | None = _T.recalibration,
    baselines: tuple[str, ...] = _T.baselines,
) -> dict:
    """Predict every map of ``split`` of ``test_suite`` with a trained model and the classical baselines, and write
    the results to ``folder``.

    Writes ``predictions.txt`` (the reference's 18 columns), ``predictions.npz`` (with map/simulation indices and
    per-transform predictions), ``split.json`` (the simulation indices used), ``predictions.png`` and
    ``metrics.json`` and ``metrics.csv`` (one row per method and parameter): R^2, relative error, chi^2,
    coverage..., per map with bootstrap intervals over simulations, and per-simulation aggregates; with
    ``recalibration``, chi^2, coverage and mean sigma of the recalibrated
    sigma's (suffix ``_cal``), the fitted scales, and ``coverage68_cal_total_ci``/``coverage95_cal_total_ci``: 68 %
    bands that resample the validation simulations of the fit as well as the test ones.

    Parameters
    ----------
    model, meta : from :func:`cosmobench.multifield.train.load_model`
    data_dir, folder : path
        CMD-format data and the output folder.
    test_suite : str, optional
        Suite to predict (default: the model's); normalised with the model's own statistics.
    split : {"test", "valid", "train"}
    tta : bool
        Average over the 8 dihedral transforms.
    batch_size : int
    device : str or torch.device
    seed : int
        Bootstrap seed.
    recalibration : {"loglinear", "conformal", "chi2"}, optional
        Sigma recalibration fitted on the validation split of the model's own suite (never ``split``) and applied
        to ``test_suite`` as it is: on another suite it shows what an in-suite calibration is worth there.
    baselines : tuple of str
        Baselines fitted on the model's training suite and split (:func:`baseline_predictions`), evaluated on the
        same maps: ``baselines[method]`` in the result, ``predictions_<method>.npz``, rows of ``metrics.csv``.

    Returns
    -------
    dict
        What ``metrics.json`` holds: ``metrics`` (the CNN's), ``baselines`` (method -> metrics), ``recalibration``.
    """
    from .figures import predictions_figure

    folder = Path(folder)
    test_suite = test_suite or meta["suite"]
    s = meta["settings"]
    sims = split_indices(meta, data_dir, test_suite, split)
    options = {"tta": tta, "batch_size": batch_size, "device": device}
    pred = predict_split(model, meta, data_dir, split, suite=test_suite, **options)
    write_predictions(folder, pred)
    split_info = {"suite": test_suite, "split": split, "sims": sims.tolist()}
    write_json(folder / "split.json", {**split_info, "split_fractions": s["split"], "split_seed": s["split_seed"]})
    valid = predict_split(model, meta, data_dir, "valid", **options) if recalibration else None
    columns = tuple(meta["params"])
    by_split, recal = method_metrics({split: pred}, columns, valid=valid, recalibration=recalibration, seed=seed)
    cnn = by_split[split]
    result = {
        "trained_on": meta["suite"],
        "tested_on": test_suite,
        "split": split,
        "fields": list(meta["fields"]),
        "tta": tta,
        "metrics": cnn,
    }
    if recal is not None:
        result["recalibration"] = {**recal.as_dict(PARAM_NAMES), "fitted_on": f"valid split of {meta['suite']}"}
        # the band of the calibrated coverage with the validation fit's own noise (validation and test resampled)
        keys = ("theta", "mu", "sigma", "sim_index")
        band = recalibrated_coverage_band(
            tuple(valid[k] for k in keys),
            tuple(pred[k] for k in keys),
            columns=columns,
            method=recalibration,
            seed=seed,
        )
        for j, p in enumerate(columns):
            for i, lvl in enumerate((68, 95)):
                result["metrics"][PARAM_NAMES[p]][f"coverage{lvl}_cal_total_ci"] = band[:, i, j].tolist()
    own = {k: np.asarray(v) for k, v in meta["split"].items()}
    base = baseline_predictions(
        data_dir,
        meta["suite"],
        meta["fields"],
        own,
        {"valid": (meta["suite"], own["valid"]), "test": (test_suite, sims)},
        methods=baselines,
        params=columns,
        set_name=s["set_name"],
    )
    result["baselines"] = {}
    shown = {"cnn": _recalibrated(pred, recal)}
    for method, preds in base.items():
        cols = baseline_columns(method, meta["fields"], columns)
        m, r = method_metrics(
            {split: preds["test"]}, cols, valid=preds["valid"], recalibration=recalibration, seed=seed
        )
        result["baselines"][method] = m[split]
        shown[method] = _recalibrated(preds["test"], r)
        with atomic_path(folder / f"predictions_{method}.npz") as tmp, open(tmp, "wb") as fh:
            np.savez(fh, **{k: v for k, v in preds["test"].items() if isinstance(v, np.ndarray)})
    write_metrics_csv(folder / "metrics.csv", metrics_rows({"cnn": cnn, **result["baselines"]}))
    predictions_figure(shown, folder / "predictions.png", params=[p for p in (0, 1) if p in columns])
    write_json(folder / "metrics.json", result)
    return result


def _recalibrated(pred: dict[str, np.ndarray], recal: Recalibration | None) -> dict[str, np.ndarray]:
    """``pred`` with its 68 % sigma recalibrated (as it is without a recalibration), for the figures."""
    return pred if recal is None else {**pred, "sigma": recal.sigma(pred["sigma"], 0.68)}
