"""Cross-suite robustness: train on suite A, test on the test simulations of suite B, for every pair (A, B).

Suite B is standardised with A's statistics (stored with A's model) and its predictions are read in A's label
scaling, as the CMD protocol prescribes; metrics are computed against B's true parameters. The diagonal is the
in-suite result. The matrix reports, for Omega_m and sigma_8, relative error, RMSE, bias (mean mu - theta), R^2
and chi^2 -- bias is the signature of a suite mismatch and must be read next to the in-suite numbers.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from ..core.io import write_json
from .cmd import PARAM_NAMES, available_fields, load_params, sims_to_maps, split_sims
from .evaluate import metrics, predict
from .train import TrainSettings, fields_tag, load_model, model_dir, prepare_data, train_model

__all__ = ["cross_suite", "format_matrix"]


def cross_suite(
    data_dir: Path | str,
    out_dir: Path | str,
    suites: Sequence[str],
    fields: Sequence[str],
    settings: TrainSettings,
    *,
    seed: int = 0,
    params: Sequence[int] = (0, 1),
    tta: bool = True,
    batch_size: int = 128,
) -> dict:
    """Train one model per suite (in ``out_dir/models``, shared with other stages; skipped when done) and
    evaluate it on every suite's test split; the matrix goes to ``out_dir/robustness``.

    Returns
    -------
    dict
        ``matrix[train_suite][test_suite][param] -> metrics dict``, ``fields``, ``suites``, ``table`` (text).
    """
    data_dir, folder = Path(data_dir), Path(out_dir) / "robustness"
    fields = tuple(fields)
    if len(suites) < 2:
        raise ValueError(f"robustness needs at least two suites, got {list(suites)}")
    for suite in suites:
        missing = sorted(set(fields) - set(available_fields(data_dir, suite, settings.set_name)))
        if missing:
            raise ValueError(
                f"suite {suite} has no maps of {missing} in {data_dir}; choose fields every suite has "
                "(N-body suites have Mtot only)"
            )
    models = {}
    for suite in suites:
        run_dir = model_dir(out_dir, suite, fields, settings, seed)
        if not (run_dir / "model.pt").exists():
            train_model(prepare_data(data_dir, suite, fields, settings), run_dir, settings, seed=seed)
        models[suite] = run_dir
    matrix: dict = {}
    for a in suites:
        model, meta = load_model(models[a], device=settings.device)
        matrix[a] = {}
        for b in suites:
            n_sims = len(load_params(data_dir, b, settings.set_name))
            test = split_sims(n_sims, settings.split, settings.split_seed)["test"]
            pred = predict(
                model,
                meta,
                data_dir,
                b,
                sims_to_maps(test),
                tta=tta,
                batch_size=batch_size,
                device=settings.device,
                set_name=settings.set_name,
            )
            matrix[a][b] = metrics(
                pred["theta"], pred["mu"], pred["sigma"], pred["sim_index"], params=tuple(params), seed=seed
            )
    result = {
        "suites": list(suites),
        "fields": list(fields),
        "params": [PARAM_NAMES[p] for p in params],
        "matrix": matrix,
    }
    result["table"] = format_matrix(result)
    write_json(folder / f"robustness_{fields_tag(fields)}.json", result)
    return result


def format_matrix(result: dict, keys: Sequence[str] = ("rel_err", "bias", "r2", "chi2")) -> str:
    """Plain-text matrices (rows: training suite, columns: test suite), one per parameter and metric."""
    suites = result["suites"]
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
