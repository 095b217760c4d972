"""Cross-suite robustness: train on suite A, test on the test simulations of suite B, for every pair (A, B).

Suite B is standardised with A's statistics (stored with A's model) and its predictions are read in A's label
scaling, as the CMD protocol prescribes; metrics are computed against B's true parameters. The diagonal is the
in-suite result. The matrix reports, for Omega_m and sigma_8, relative error, RMSE, bias (mean mu - theta), R^2,
chi^2 and the coverage of the 68 % and 95 % intervals -- bias is the signature of a suite mismatch and must be read
next to the in-suite numbers. Each model's sigma recalibration is fitted on its own suite's validation split and
applied unchanged to every test suite (``*_cal`` entries): an in-suite calibration is not expected to hold on
another suite, and the matrix shows by how much it fails.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from ..core.io import write_json
from .cmd import PARAM_NAMES, available_fields
from .evaluate import metrics, predict_split, recalibrate_on_valid
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
    device: str = _R.device,
    progress: bool = _R.progress,
    in_memory: bool | None = _R.in_memory,
    device_data: bool = _R.device_data,
) -> dict:
    """Train one model per suite (``folder/models/<suite>_<fields>``; finished ones are kept) and evaluate it on
    every suite's test split; writes ``folder/robustness_<fields>.json`` and its figure.

    ``recalibration`` (``loglinear``, ``conformal``, ``chi2`` or ``None``) is fitted on the training suite's
    validation split (:func:`cosmobench.multifield.evaluate.recalibrate_on_valid`) and applied to every test suite.

    Returns
    -------
    dict
        ``matrix[train_suite][test_suite][param] -> metrics dict``, ``fields``, ``suites``, ``table`` (text).
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
    matrix: dict = {}
    options = {"tta": tta, "batch_size": batch_size, "device": device}
    for a in suites:
        model, meta = load_model(models[a])
        recal = (
            recalibrate_on_valid(model, meta, data_dir, method=recalibration, **options)[0] if recalibration else None
        )
        matrix[a] = {}
        for b in suites:
            pred = predict_split(model, meta, data_dir, "test", suite=b, **options)
            matrix[a][b] = metrics(
                pred["theta"],
                pred["mu"],
                pred["sigma"],
                pred["sim_index"],
                params=tuple(params),
                seed=seed,
                recalibration=recal,
            )
    result = {
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
    """The matrices of relative error, bias and coverage (and recalibrated coverage): ``key -> a -> b -> param``."""
    keys = ("rel_err", "bias", "coverage68", "coverage95") + (
        ("coverage68_cal", "coverage95_cal") if recalibrated else ()
    )
    m, suites = result["matrix"], result["suites"]
    return {
        key: {a: {b: {p: m[a][b][p][key] for p in result["params"]} for b in suites} for a in suites} for key in keys
    }


TABLE_KEYS = ("rel_err", "bias", "r2", "chi2", "coverage68", "coverage95", "coverage68_cal", "coverage95_cal")


def format_matrix(result: dict, keys: Sequence[str] = TABLE_KEYS) -> str:
    """Plain-text matrices (rows: training suite, columns: test suite), one per parameter and metric present."""
    suites = result["suites"]
    first = result["matrix"][suites[0]][suites[0]][result["params"][0]]
    keys = [k for k in keys if k in first]
    width = max(12, *(len(s) + 2 for s in suites))
    lines = [f"fields: {', '.join(result['fields'])}  (rows: trained on, columns: tested on)"]
    for param in result["params"]:
        for key in keys:
            lines.append(f"{param} {key}".ljust(width) + "".join(s.rjust(width) for s in suites))
            for a in suites:
                vals = "".join(f"{result['matrix'][a][b][param][key]:.4g}".rjust(width) for b in suites)
                lines.append(a.ljust(width) + vals)
            lines.append("")
    return "\n".join(lines)
