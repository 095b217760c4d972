"""Which fields carry the information: the smallest field sets reaching 90 % and 95 % of the full multifield model.

**Information.** For a trained model and a split, with e the matrix of errors (mu - theta) of the chosen
parameters (default Omega_m and sigma_8) in units of their prior widths, M = mean over maps of e e^T (the error
second-moment matrix, bias included), the information is

    I = det(M)^(-1/d),

the geometric mean over parameters of the inverse mean squared error (for uncorrelated errors), i.e. the Fisher
information per parameter an efficient estimator would have. It uses the actual errors, so a model whose
predicted sigma is miscalibrated is not rewarded. ``kind="posterior"`` uses the predicted posteriors instead:
I = mean over maps of prod_i sigma_i^(-2/d). The fraction of information of a field set S is I(S) / I(all fields).

**Search.** ``exhaustive`` trains every non-empty subset (2^n - 1 models); ``greedy`` trains the full set, then
adds at each step the field that increases I most, until 95 % of the full set is reached (n (n + 1) / 2 models at
most); ``auto`` is exhaustive up to 4 fields. Selection uses the ``select_split`` (validation by default), and the
test split's values are reported beside it. With few simulations the ratios are noisy; a bootstrap interval over
simulations is reported for each I.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ..core.io import write_json
from ..core.seeds import rng
from .cmd import PARAM_NAMES, sims_to_maps
from .evaluate import baseline_columns, baseline_predictions, metrics, predict
from .settings import FieldsSettings, TrainingSettings
from .train import fields_tag, load_model, prepare_data, train_model

__all__ = ["information", "field_importance", "check_options", "smallest_sets", "STRATEGIES", "KINDS"]

STRATEGIES = ("auto", "exhaustive", "greedy")
KINDS = ("empirical", "posterior")
_F = FieldsSettings


def information(
    theta: np.ndarray,
    mu: np.ndarray,
    sigma: np.ndarray,
    params: Sequence[int],
    width: np.ndarray,
    kind: str = "empirical",
) -> float:
    """Information per parameter of predictions (see the module docstring); arrays (n, 6), ``width`` (6,)."""
    p = list(params)
    if kind == "empirical":
        e = (mu[:, p] - theta[:, p]) / width[p]
        m = e.T @ e / len(e)
        sign, logdet = np.linalg.slogdet(m)
        return float(np.exp(-logdet / len(p))) if sign > 0 else float("inf")
    if kind == "posterior":
        s = sigma[:, p] / width[p]
        return float(np.mean(np.exp(-2 * np.log(s).mean(1))))
    raise ValueError(f"information kind must be 'empirical' or 'posterior', got {kind!r}")


def _bootstrap(theta, mu, sigma, sim_index, params, width, kind, seed, n_boot=200) -> list[float]:
    sims = np.unique(sim_index)
    rows = {s: np.flatnonzero(sim_index == s) for s in sims}
    gen = rng(seed, "fields_bootstrap")
    vals = []
    for _ in range(n_boot):
        pick = np.concatenate([rows[s] for s in gen.choice(sims, len(sims))])
        vals.append(information(theta[pick], mu[pick], sigma[pick], params, width, kind))
    return [float(np.quantile(vals, 0.16)), float(np.quantile(vals, 0.84))]


def field_importance(
    data_dir: Path | str,
    folder: Path | str,
    suite: str,
    fields: Sequence[str],
    settings: TrainingSettings,
    *,
    seed: int = _F.seed,
    params: Sequence[int] = _F.params,
    strategy: str = _F.strategy,
    kind: str = _F.kind,
    select_split: str = _F.select_split,
    thresholds: Sequence[float] = _F.thresholds,
    tta: bool = _F.tta,
    batch_size: int = _F.batch_size,
    baselines: Sequence[str] = _F.baselines,
    device: str = _F.device,
    progress: bool = _F.progress,
    in_memory: bool | None = _F.in_memory,
    device_data: bool = _F.device_data,
) -> dict:
    """Train models on field subsets and find the smallest sets reaching ``thresholds`` of the full set's information.

    Models go to ``folder/models/<suite>_<subset>`` (finished ones are kept), results to
    ``folder/fields_<suite>_<fields>.json`` and its figure.

    Returns
    -------
    dict
        ``subsets`` (per evaluated subset: fields, information and fraction on the selection and test splits, with
        bootstrap intervals, and the test split's R^2, relative error and chi^2 per parameter; ``baselines``: the
        same test metrics of each baseline fitted on the subset), ``full``, ``smallest`` (threshold -> fields),
        ``definition``.
    """
    from .figures import fields_figure

    data_dir, folder = Path(data_dir), Path(folder)
    fields = tuple(fields)
    check_options(strategy, kind, select_split, thresholds)
    if strategy == "auto":
        strategy = "exhaustive" if len(fields) <= 4 else "greedy"
    results: dict[tuple[str, ...], dict] = {}

    def evaluate(subset: tuple[str, ...]) -> dict:
        if subset in results:
            return results[subset]
        run_dir = folder / "models" / f"{suite}_{fields_tag(subset)}"
        data = prepare_data(
            data_dir, suite, subset, settings, in_memory=in_memory, device_data=device_data, device=device
        )
        train_model(data, run_dir, settings, seed=seed, device=device, progress=progress)
        model, meta = load_model(run_dir)
        entry = {"fields": list(subset)}
        for split in dict.fromkeys((select_split, "test")):
            pred = predict(
                model,
                meta,
                data_dir,
                suite,
                sims_to_maps(data.split[split]),
                tta=tta,
                batch_size=batch_size,
                device=device,
                set_name=settings.set_name,
            )
            theta_n, mu_n, sig_n = data.scaler.normalise(pred["theta"]), pred["mu_norm"], pred["sigma_norm"]
            ones = np.ones(len(PARAM_NAMES))  # normalised labels: prior widths are 1
            entry[split] = {
                "information": information(theta_n, mu_n, sig_n, params, ones, kind),
                "ci": _bootstrap(theta_n, mu_n, sig_n, pred["sim_index"], params, ones, kind, seed),
            }
            if split == "test":
                entry["test"]["metrics"] = _test_metrics(pred, tuple(params))
        test = {"test": (suite, data.split["test"])}
        base = baseline_predictions(
            data_dir, suite, subset, data.split, test, methods=baselines, params=params, set_name=settings.set_name
        )
        entry["baselines"] = {
            method: _test_metrics(p["test"], baseline_columns(method, subset, params)) for method, p in base.items()
        }
        results[subset] = entry
        return entry

    full = evaluate(fields)
    if strategy == "exhaustive":
        for size in range(1, len(fields)):
            for subset in itertools.combinations(fields, size):
                evaluate(subset)
    else:
        chosen: tuple[str, ...] = ()
        target = max(thresholds) * full[select_split]["information"]
        while len(chosen) < len(fields) - 1:
            candidates = [tuple(f for f in fields if f in (*chosen, g)) for g in fields if g not in chosen]
            best = max(candidates, key=lambda s: evaluate(s)[select_split]["information"])
            chosen = best
            if results[best][select_split]["information"] >= target:
                break
    for entry in results.values():
        for split in dict.fromkeys((select_split, "test")):
            entry[split]["fraction"] = entry[split]["information"] / full[split]["information"]
    subsets = sorted(results.values(), key=lambda e: (len(e["fields"]), -e[select_split]["fraction"]))
    out = {
        "suite": suite,
        "fields": list(fields),
        "params": [PARAM_NAMES[p] for p in params],
        "strategy": strategy,
        "kind": kind,
        "select_split": select_split,
        "subsets": subsets,
        "full": full,
        "smallest": smallest_sets(subsets, thresholds, select_split),
        "definition": (
            "I = det(M)^(-1/d), M = mean over maps of e e^T, e = (mu - theta) / prior width for the "
            "chosen parameters: the geometric mean of inverse mean squared errors; fraction = "
            "I(S) / I(all fields)"
        )
        if kind == "empirical"
        else "I = mean over maps of prod_i sigma_i^(-2/d) (predicted posterior precision per parameter)",
    }
    write_json(folder / f"fields_{suite}_{fields_tag(fields)}.json", out)
    fields_figure(out, folder / f"fields_{suite}_{fields_tag(fields)}.png")
    return out


def _test_metrics(pred: dict, columns: tuple[int, ...]) -> dict:
    """R^2, relative error, chi^2 and per-simulation R^2 of predictions, per parameter name."""
    full = metrics(pred["theta"], pred["mu"], pred["sigma"], pred["sim_index"], params=columns, n_boot=0)
    return {PARAM_NAMES[p]: {k: full[PARAM_NAMES[p]][k] for k in ("r2", "rel_err", "chi2", "sim_r2")} for p in columns}


def check_options(strategy: str, kind: str, select_split: str, thresholds: Sequence[float]) -> None:
    """Refuse unknown options of :func:`field_importance` (before any work)."""
    if strategy not in STRATEGIES:
        raise ValueError(f"fields.strategy must be one of {list(STRATEGIES)}, got {strategy!r}")
    if kind not in KINDS:
        raise ValueError(f"fields.kind must be one of {list(KINDS)}, got {kind!r}")
    if select_split not in ("valid", "test"):
        raise ValueError(f"fields.select_split must be 'valid' or 'test', got {select_split!r}")
    if not thresholds or any(not 0 < t <= 1 for t in thresholds):
        raise ValueError(f"fields.thresholds must be fractions in (0, 1], got {list(thresholds)}")


def smallest_sets(subsets: list[dict], thresholds: Sequence[float], split: str) -> dict[str, list[str] | None]:
    """For each threshold, the smallest evaluated subset whose fraction reaches it (highest fraction on ties)."""
    out = {}
    for t in thresholds:
        hits = [e for e in subsets if e[split]["fraction"] >= t]
        best = min(hits, key=lambda e: (len(e["fields"]), -e[split]["fraction"])) if hits else None
        out[f"{round(100 * t)}%"] = best["fields"] if best else None
    return out
