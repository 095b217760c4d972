"""Cross-suite robustness: train on suite A, test on the test simulations of suite B, for every pair (A, B).

Suite B is standardised with A's statistics (stored with A's model) and its predictions are read in A's label
scaling, as the CMD protocol prescribes; metrics are computed against B's true parameters. The diagonal is the
in-suite result. The matrix reports, for Omega_m and sigma_8, relative error, RMSE, bias (mean mu - theta), R^2,
chi^2 and the coverage of the 68 % and 95 % intervals -- bias is the signature of a suite mismatch and must be read
next to the in-suite numbers. Each model's sigma recalibration is fitted on its own suite's validation split and
applied unchanged to every test suite (``*_cal`` entries): an in-suite calibration is not expected to hold on
another suite, and the matrix shows by how much it fails. The classical baselines (``ridge``; ``baryon_fraction``
when the fields include Mgas and Mtot) are fitted on suite A's training and validation simulations and go through
the same protocol, so every matrix has a ``method`` level: ``matrix[method][A][B][param]``.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ..core.io import write_json
from .cmd import PARAM_NAMES, available_fields
from .evaluate import baseline_columns, baseline_predictions, method_metrics, predict_split, split_indices
from .settings import RobustnessSettings, TrainingSettings
from .train import fields_tag, load_model, prepare_data, train_model

__all__ = ["cross_suite", "check_suites", "format_matrix", "matrix_summary"]

_R = RobustnessSettings


def cross_suite(
    data_dir: Path | str,
    folder: Path | str,
    suites: Sequence[str],
    fields: Sequence[str],
    settings: TrainingSettings,
    *,
    seed: int = _R.seed,
    params: Sequence[int] = _R.params,
    tta: bool = _R.tta,
    batch_size: int = _R.batch_size,
    recalibration: str | None = _R.recalibration,
    baselines: Sequence[str] = _R.baselines,
    device: str = _R.device,
    progress: bool = _R.progress,
    in_memory: bool | None = _R.in_memory,
    device_data: bool = _R.device_data,
) -> dict:
    """Train one model per suite (``folder/models/<suite>_<fields>``; finished ones are kept) and evaluate it on
    every suite's test split; writes ``folder/robustness_<fields>.json`` and its figure.

    ``recalibration`` (``loglinear``, ``conformal``, ``chi2`` or ``None``) is fitted on the training suite's
    validation split and applied to every test suite; ``baselines`` are fitted on the training suite's training and
    validation simulations and evaluated the same way.

    Returns
    -------
    dict
        ``matrix[method][train_suite][test_suite][param] -> metrics dict``, ``methods``, ``fields``, ``suites``,
        ``params``, ``table`` (text).
    """
    from .figures import robustness_figure

    data_dir, folder = Path(data_dir), Path(folder)
    fields = tuple(fields)
    check_suites(data_dir, suites, fields, settings.set_name)
    models = {}
    for suite in suites:
        run_dir = folder / "models" / f"{suite}_{fields_tag(fields)}"
        if not (run_dir / "model.pt").exists():
            data = prepare_data(
                data_dir, suite, fields, settings, in_memory=in_memory, device_data=device_data, device=device
            )
            train_model(data, run_dir, settings, seed=seed, device=device, progress=progress)
        models[suite] = run_dir
    matrix: dict = {"cnn": {}}
    options = {"tta": tta, "batch_size": batch_size, "device": device}
    params = tuple(params)
    for a in suites:
        model, meta = load_model(models[a])
        valid = predict_split(model, meta, data_dir, "valid", **options) if recalibration else None
        tests = {b: predict_split(model, meta, data_dir, "test", suite=b, **options) for b in suites}
        matrix["cnn"][a] = method_metrics(tests, params, valid=valid, recalibration=recalibration, seed=seed)[0]
        split = {k: np.asarray(v) for k, v in meta["split"].items()}
        targets = {"valid": (a, split["valid"])} | {b: (b, split_indices(meta, data_dir, b, "test")) for b in suites}
        base = baseline_predictions(
            data_dir, a, fields, split, targets, methods=baselines, params=params, set_name=settings.set_name
        )
        for method, preds in base.items():
            cols = baseline_columns(method, fields, params)
            tests = {b: preds[b] for b in suites}
            row = method_metrics(tests, cols, valid=preds["valid"], recalibration=recalibration, seed=seed)[0]
            matrix.setdefault(method, {})[a] = row
    result = {
        "methods": list(matrix),
        "suites": list(suites),
        "fields": list(fields),
        "params": [PARAM_NAMES[p] for p in params],
        "matrix": matrix,
    }
    result["table"] = format_matrix(result)
    write_json(folder / f"robustness_{fields_tag(fields)}.json", result)
    robustness_figure(result, folder / f"robustness_{fields_tag(fields)}.png")
    return result


def check_suites(data_dir: Path | str, suites: Sequence[str], fields: Sequence[str], set_name: str) -> None:
    """Refuse fewer than two suites, or a suite without maps of every field (before any work)."""
    if len(suites) < 2:
        raise ValueError(f"robustness.suites needs at least two suites, got {list(suites)}")
    for suite in suites:
        missing = sorted(set(fields) - set(available_fields(data_dir, suite, set_name)))
        if missing:
            raise ValueError(
                f"suite {suite} has no maps of {missing} in {data_dir}; choose robustness.fields that every suite "
                "has (N-body suites have Mtot only)"
            )


def matrix_summary(result: dict, recalibrated: bool) -> dict:
    """The matrices of relative error, R^2, bias and coverage (and recalibrated coverage):
    ``key -> method -> trained on -> tested on -> param`` (each method's own parameters)."""
    keys = ("rel_err", "r2", "bias", "coverage68", "coverage95") + (
        ("coverage68_cal", "coverage95_cal") if recalibrated else ()
    )
    suites = result["suites"]
    return {
        key: {
            method: {
                a: {b: {p: v[key] for p, v in m[a][b].items() if isinstance(v, dict)} for b in suites} for a in suites
            }
            for method, m in result["matrix"].items()
        }
        for key in keys
    }


#: Metrics of the robustness tables, with the definitions stated in their headers.
TABLE_KEYS = {
    "rel_err": "relative error sqrt(mean((mu - theta)² / theta²))",
    "bias": "bias mean(mu - theta)",
    "r2": "R² over maps",
    "chi2": "χ² mean((mu - theta)² / sigma²)",
    "coverage68": "68 % coverage raw",
    "coverage95": "95 % coverage raw",
    "coverage68_cal": "68 % coverage, sigma recalibrated on the training suite's validation split",
    "coverage95_cal": "95 % coverage, recalibrated",
}


def format_matrix(result: dict, keys: Sequence[str] = tuple(TABLE_KEYS)) -> str:
    """Markdown tables, one per parameter: a row per (method, trained on, tested on), a column per metric present,
    with the metrics' definitions above each table."""
    suites, matrix = result["suites"], result["matrix"]
    lines = [f"Fields {', '.join(result['fields'])}; test split of the suite tested on."]
    for param in result["params"]:
        rows = [(m, a, b) for m in matrix for a in suites for b in suites if param in matrix[m][a][b]]
        present = [k for k in keys if all(k in matrix[m][a][b][param] for m, a, b in rows)]
        lines += ["", f"**{param}**: " + "; ".join(TABLE_KEYS.get(k, k) for k in present) + ".", ""]
        lines.append("| method | trained on | tested on | " + " | ".join(present) + " |")
        lines.append("|---" * (3 + len(present)) + "|")
        for m, a, b in rows:
            cells = " | ".join(f"{matrix[m][a][b][param][k]:.4g}" for k in present)
            lines.append(f"| {m} | {a} | {b} | {cells} |")
    return "\n".join(lines)
