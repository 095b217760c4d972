"""``out_dir/report.md`` of ``cosmobench multifield run``: every stage's numbers, the CNN beside the classical
baselines in every table (a ``method`` column), the spread over training seeds, and linked figures."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from ..core.io import write_json, write_text
from .evaluate import METHOD_LABELS, METRIC_COLUMNS

__all__ = ["write_report", "seed_runs", "seed_table"]

#: Metrics aggregated over training seeds and shown in the test table.
SEED_KEYS = ("r2", "sim_r2", "rel_err", "chi2", "coverage68", "coverage95", "coverage68_cal", "coverage95_cal")


def _fmt(value) -> str:
    return f"{value:.4g}" if isinstance(value, (int, float)) and math.isfinite(value) else "—"


def _figure(out_dir: Path, folder: str | Path, name: str) -> list[str]:
    path = Path(folder) / name
    if not path.is_file():
        return []
    try:
        rel = path.resolve().relative_to(out_dir.resolve())
    except ValueError:
        rel = path.resolve()
    return [f"![{name}]({rel.as_posix()})", ""]


def seed_runs(tests: dict[int, dict]) -> dict:
    """Test metrics of the same model trained with several seeds: mean and spread per method and parameter.

    Parameters
    ----------
    tests : dict
        seed -> the test stage's result (``metrics`` of the CNN, ``baselines``: method -> metrics).

    Returns
    -------
    dict
        ``seeds`` (list) and ``rows``: method -> parameter -> metric -> ``{"mean", "std", "values"}``; ``std`` is
        the sample standard deviation over seeds (ddof 1; NaN with one seed). The baselines do not depend on the
        training seed (same split), so their spread is 0.
    """
    rows: dict = {}
    for res in tests.values():
        for method, by_param in {"cnn": res["metrics"], **res.get("baselines", {})}.items():
            for param, entry in by_param.items():
                if not isinstance(entry, dict):
                    continue
                for key in SEED_KEYS:
                    if key in entry:
                        rows.setdefault(method, {}).setdefault(param, {}).setdefault(key, []).append(entry[key])
    for by_param in rows.values():
        for by_key in by_param.values():
            for key, values in by_key.items():
                v = np.asarray(values, dtype=np.float64)
                std = (float(v.std(ddof=1)) if np.ptp(v) > 0 else 0.0) if len(v) > 1 else math.nan
                by_key[key] = {"mean": float(v.mean()), "std": std, "values": v.tolist()}
    return {"seeds": list(tests), "rows": rows}


def seed_table(runs: dict, *, header: bool = True) -> str:
    """Markdown table of :func:`seed_runs`: a row per (method, parameter), each cell "mean ± std" over the seeds,
    after a line with the metrics' definitions (``header``)."""
    rows = runs["rows"]
    keys = [k for k in SEED_KEYS if any(k in by_key for by_param in rows.values() for by_key in by_param.values())]
    n = len(runs["seeds"])
    lines = [
        f"Test split, {n} training seed{'s' * (n > 1)} ({', '.join(map(str, runs['seeds']))}); each cell: mean ± "
        "standard deviation over the seeds. " + "; ".join(f"{k}: {METRIC_COLUMNS[k]}" for k in keys) + ".",
        "",
    ] * header + [
        "| method | parameter | " + " | ".join(keys) + " |",
        "|---" * (len(keys) + 2) + "|",
    ]
    for method, by_param in rows.items():
        for param, by_key in by_param.items():
            cells = []
            for k in keys:
                c = by_key.get(k)
                cells.append("—" if c is None else _fmt(c["mean"]) + (f" ± {c['std']:.2g}" if n > 1 else ""))
            lines.append(f"| {method} | {param} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _methods_legend(methods) -> list[str]:
    return ["Methods: " + "; ".join(f"`{m}` {METHOD_LABELS[m]}" for m in methods if m in METHOD_LABELS) + ".", ""]


def _test_section(out_dir: Path, res: dict, runs: dict) -> list[str]:
    m = res["metrics"]
    lines = [
        f"## Test: trained on {res['trained_on']}, tested on {res['tested_on']} ({res['split']} split, "
        f"tta={res['tta']})",
        "",
        f"{m['n_maps']} maps of {m['n_sims']} simulations; fields {', '.join(res['fields'])}; sigma recalibrated "
        "(`_cal`) on the validation split of the training suite, for every method.",
        "",
        *_methods_legend(["cnn", *res.get("baselines", {})]),
        seed_table(runs),
        "",
        "Predictions (per-simulation means, calibrated 1-sigma error bars):",
        "",
        *_figure(out_dir, res["folder"], "predictions.png"),
    ]
    return lines


def _calibration_section(out_dir: Path, cal: dict) -> list[str]:
    lines = [
        "## Calibration (test split)",
        "",
        "Coverage = fraction of test maps whose true value lies in the central 68 % / 95 % interval of the posterior; "
        "per simulation = the mean over simulations of the fraction of their maps covered. TARP ATC: 0 when "
        "calibrated, < 0 over-confident.",
        "",
        "| method | posterior | parameter | coverage 68 % | coverage 95 % | per sim 68 % | TARP ATC |",
        "|---|---|---|---|---|---|---|",
    ]
    blocks = {"cnn": cal, **cal.get("baselines", {})}
    for method, block in blocks.items():
        for kind in ("gaussian", "gaussian_recalibrated", "npe"):
            if kind not in block or (kind == "npe" and method != "cnn"):
                continue
            for p in [k for k, v in block[kind].items() if isinstance(v, dict) and "coverage68_per_map" in v]:
                c = block[kind][p]
                lines.append(
                    f"| {method} | {kind} | {p} | {_fmt(c['coverage68_per_map'])} | {_fmt(c['coverage95_per_map'])} "
                    f"| {_fmt(c['coverage68_per_sim'])} | {_fmt(block[kind]['tarp_per_map']['atc'])} |"
                )
    lines += ["", *_figure(out_dir, cal["folder"], "calibration.png")]
    if (Path(cal["folder"]) / "posterior.png").is_file():
        lines += ["One test map's posterior: NPE samples, the CNN's Gaussian raw and recalibrated, the truth:", ""]
        lines += _figure(out_dir, cal["folder"], "posterior.png")
    return lines


def _fields_section(out_dir: Path, fld: dict) -> list[str]:
    lines = ["## Field importance", "", f"Information (CNN, validation split): {fld['definition']}.", ""]
    methods = list(dict.fromkeys(m for by_method in fld["test_metrics"].values() for m in by_method))
    lines += [
        "Test split R² per method (R² over maps; the baselines fitted on the same fields).",
        "",
        "| fields | information fraction (CNN) | " + " | ".join(f"R² {m}" for m in methods) + " |",
        "|---" * (len(methods) + 2) + "|",
    ]
    for subset, frac in fld["fractions"].items():
        cells = []
        for m in methods:
            entry = fld["test_metrics"][subset].get(m, {})
            cells.append(", ".join(f"{p} {_fmt(v['r2'])}" for p, v in entry.items()) or "—")
        lines.append(f"| {subset} | {_fmt(frac)} | " + " | ".join(cells) + " |")
    lines += ["", f"Smallest sets: {fld['smallest']}", ""]
    for png in sorted(Path(fld["folder"]).glob("*.png")):
        lines += _figure(out_dir, fld["folder"], png.name)
    return lines


def write_report(
    out_dir: Path | str, results: dict[str, dict], seconds: dict[str, float], runs: dict | None = None
) -> tuple[Path, str]:
    """Write ``out_dir/report.md`` (and ``out_dir/seeds.json``, the seed aggregate) from the stages' summaries.

    Parameters
    ----------
    out_dir : path
    results : dict
        stage -> its summary.
    seconds : dict
        stage -> wall seconds (``seeds``: the extra seeds' trainings and tests).
    runs : dict, optional
        :func:`seed_runs` of the test results over the training seeds (default: the ``test`` result alone).

    Returns
    -------
    Path
        The report.
    str
        The test table (Markdown), for the command's summary.
    """
    out_dir = Path(out_dir)
    lines = [
        "# Multifield inference report",
        "",
        "| stage | seconds (wall) | skipped (already done) |",
        "|---|---|---|",
    ]
    lines += [f"| {k} | {v} | {results[k].get('skipped') if k in results else '—'} |" for k, v in seconds.items()]
    lines.append("")
    table = ""
    if "simulate" in results:
        sim = results["simulate"]
        suites = ", ".join(f"{d['suite']} ({d['n_sims']} sims, {d['npix']}²)" for d in sim["suites"])
        lines += ["## Data", "", f"Simulated suites: {suites}; folder `{sim['data_dir']}`.", ""]
    if "train" in results:
        t = results["train"]
        stop = f", stopped early (best epoch {t['best_epoch']})" if t.get("stopped_early") else ""
        lines += [
            "## Training",
            "",
            f"o3_err, {t['n_parameters']} parameters, {t['epochs']} epochs{stop}, best validation loss "
            f"{_fmt(t['best_val_loss'])}; `{t['model_path']}`.",
            "",
        ]
    if "search" in results:
        best = results["search"]["best"]
        lines += [
            "## Search",
            "",
            f"Best trial {best['number']}: validation loss {_fmt(best['value'])}, {best['params']}.",
            "",
        ]
    if "test" in results:
        runs = runs or seed_runs({0: results["test"]})
        write_json(out_dir / "seeds.json", runs)
        table = seed_table(runs, header=False)
        lines += _test_section(out_dir, results["test"], runs)
    if "robustness" in results:
        rob = results["robustness"]
        lines += ["## Robustness across suites", "", *_methods_legend(rob.get("methods", ["cnn"]))]
        lines += [rob["table"].rstrip(), ""]
        lines += _figure(out_dir, rob["folder"], f"robustness_{'_'.join(rob['fields'])}.png")
    if "fields" in results:
        lines += _fields_section(out_dir, results["fields"])
    if "calibrate" in results:
        lines += _calibration_section(out_dir, results["calibrate"])
    path = out_dir / "report.md"
    write_text(path, "\n".join(lines) + "\n")
    return path, table
