"""Spread over runs: one split of one dataset evaluated by several runs (e.g. training seeds), side by side.

The standard of evidence asks for the spread of a learned method's scores over at least three training seeds.
Runs are several dataset roots holding the same simulations (simulated again with the same settings, which
writes them byte for byte, or copied) whose methods were trained with other seeds; each is evaluated as usual and
``cosmobench cmb compare 'compare.results_dirs=[A/results, B/results, C/results]'`` reports them. This module
finds, among those results, the splits evaluated on the same dataset (the SHA-256 of each of its simulation
files, from the manifests: the training splits included) with the same evaluation settings, and gives per
method, beam and metric the mean, standard deviation (ddof 1), minimum and maximum over the runs of each run's
mean over simulations; ``leaderboard_spread.csv`` holds them all, the report a table of the headline ones. The
change of every method's filter-equalised RMSE against :data:`BASELINE`'s is computed within each run first (the
same NILC maps), then spread. What differs between the runs is read from each method's ``method.json`` and named
beside the table.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from cosmobench.cmb.dataset import manifest_path, method_info_path
from cosmobench.cmb.evaluate import coverage_column
from cosmobench.cmb.methods import METHODS, RUNTIME_SETTINGS, method_defaults
from cosmobench.core.io import read_json
from cosmobench.core.stage import digest

__all__ = ["BASELINE", "CHANGE", "run_groups", "spread_rows", "spread_markdown"]

#: the classical baseline whose filter-equalised RMSE every method's is compared with, run by run
BASELINE = "nilc"
#: name of a change column: ``<filtered column>_change_pct`` (percent; < 0: lower error than the baseline)
CHANGE = "{}_change_pct"
_FILTERED = {"T": "rmse_filtered_t", "E": "rmse_filtered_e", "B": "rmse_filtered_b"}
_NATIVE = "native"  # the beam label of the coverage rows (each method's own output beam)


def _data_identity(settings: Mapping) -> str | None:
    """Digest of the checksums of every simulation of the dataset (its manifest's; the training splits too, so
    runs trained on other data are not spread together), None without a manifest listing the evaluated ones."""
    path = manifest_path(settings["root"])
    if not path.is_file():
        return None
    checksums = read_json(path).get("checksums", {})
    if any(f"{settings['split']}/sim{int(i):04d}" not in checksums for i in settings["sims"]):
        return None
    return digest(checksums)


def run_groups(summaries: Mapping[str, dict]) -> dict[str, list[str]]:
    """The runs to spread: {split: [label, ...]}, two or more labels whose summaries score the same split of the
    same dataset (every simulation file's checksum alike) with the same evaluation settings (all but the root and
    the methods). Splits whose runs cannot be shown to hold the same simulations (no manifest) are left out.

    Parameters
    ----------
    summaries : mapping of str to dict
        Column label -> ``summary.json`` of :func:`~cosmobench.cmb.evaluate.evaluate` (several results folders:
        :func:`~cosmobench.cmb.compare.collect_results`).
    """
    found: dict[tuple, list[str]] = {}
    for label, summary in summaries.items():
        settings = summary["settings"]
        data = _data_identity(settings)
        if data is None:
            continue
        protocol = {k: v for k, v in settings.items() if k not in ("root", "methods")}
        found.setdefault((settings["split"], data, digest(protocol)), []).append(label)
    return {key[0]: labels for key, labels in found.items() if len(labels) > 1}


def _stats(values: Sequence[float]) -> dict[str, Any]:
    v = np.asarray(values, dtype=np.float64)
    return {
        "n_runs": len(v),
        "mean": float(v.mean()),
        "std": float(v.std(ddof=1)),
        "min": float(v.min()),
        "max": float(v.max()),
    }


def _methods(summaries: Mapping[str, dict], labels: Sequence[str]) -> list[str]:
    """The methods evaluated by every run, in the first run's order."""
    first = summaries[labels[0]]["settings"]["methods"]
    return [m for m in first if all(m in summaries[lb]["methods"] for lb in labels)]


def _measured(values: Sequence[float | None]) -> list[float]:
    """``values``, or empty where one run lacks the value (None) or it is not finite: nothing to spread."""
    return [] if any(v is None or not math.isfinite(v) for v in values) else list(values)


def _values(summaries: Mapping[str, dict], labels: Sequence[str], method: str, beam: str, key: str) -> list[float]:
    """Each run's mean of one column (empty where a run lacks it)."""
    return _measured([summaries[lb]["methods"][method]["beams"][beam].get(key, {}).get("mean") for lb in labels])


def _changes(summaries: Mapping[str, dict], labels: Sequence[str], method: str, beam: str, key: str) -> list[float]:
    """Each run's change of ``method``'s filter-equalised RMSE against the baseline's, percent."""
    ours = _values(summaries, labels, method, beam, key)
    base = _values(summaries, labels, BASELINE, beam, key)
    return [100.0 * (a / b - 1.0) for a, b in zip(ours, base)] if ours and base and all(base) else []


def spread_rows(summaries: Mapping[str, dict], groups: Mapping[str, Sequence[str]]) -> list[dict[str, Any]]:
    """Rows of ``leaderboard_spread.csv``: per split, beam, method and metric, the spread over the runs.

    Parameters
    ----------
    summaries : mapping of str to dict
        Column label -> ``summary.json``.
    groups : mapping of str to sequence of str
        :func:`run_groups`.

    Returns
    -------
    list of dict
        ``split``, ``beam`` (``native`` for coverage, at each method's own output beam), ``method``, ``metric``
        (a column of ``metrics.csv``, ``filtered.csv``, ``coverage.csv``, or :data:`CHANGE` of a filtered RMSE),
        ``n_runs``, ``mean``, ``std`` (ddof 1), ``min``, ``max`` over the runs' means, and ``runs`` (the labels).
    """
    rows = []
    for split, labels in groups.items():
        runs = ";".join(labels)
        beams = summaries[labels[0]]["settings"]["beams"]
        methods = _methods(summaries, labels)
        for method in methods:
            for beam in beams:
                keys = summaries[labels[0]]["methods"][method]["beams"][beam]
                series = {k: _values(summaries, labels, method, beam, k) for k in keys}
                if BASELINE in methods and method != BASELINE:
                    for key in _FILTERED.values():
                        series[CHANGE.format(key)] = _changes(summaries, labels, method, beam, key)
                rows += [
                    {"split": split, "beam": beam, "method": method, "metric": k, **_stats(v), "runs": runs}
                    for k, v in series.items()
                    if v
                ]
            covers = [summaries[lb]["methods"][method].get("coverage") for lb in labels]
            if all(covers):
                measured = {k: _measured([c[k]["mean"] for c in covers]) for k in covers[0]}
                rows += [
                    {"split": split, "beam": _NATIVE, "method": method, "metric": k, **_stats(v), "runs": runs}
                    for k, v in measured.items()
                    if v
                ]
    return rows


def _differences(summaries: Mapping[str, dict], labels: Sequence[str], method: str, split: str) -> str:
    """What differs between the runs' settings of ``method`` (from each ``method.json``), e.g. ``seed 0, 1, 2``."""
    paths = [method_info_path(summaries[lb]["settings"]["root"], method, split) for lb in labels]
    if not all(p.is_file() for p in paths):
        return "settings not recorded"
    defaults = method_defaults(method) if method in METHODS else {}  # files written before a setting existed
    recorded = [{**defaults, **read_json(p).get("settings", {})} for p in paths]
    settings = [{k: v for k, v in r.items() if k not in RUNTIME_SETTINGS} for r in recorded]
    keys = sorted({k for s in settings for k in s if len({repr(t.get(k)) for t in settings}) > 1})
    return "; ".join(f"{k} {', '.join(repr(s.get(k)) for s in settings)}" for k in keys) or "identical settings"


def _cell(rows: Mapping[tuple, dict], key: tuple, scale: float = 1.0, digits: int = 1) -> str:
    """``mean ± std (min to max)`` of one row of :func:`spread_rows`, times ``scale``; "—" where there is none."""
    row = rows.get(key)
    if row is None:
        return "—"
    m, s, lo, hi = (f"{scale * row[q]:.{digits}f}" for q in ("mean", "std", "min", "max"))
    return f"{m} ± {s} ({lo} to {hi})"


def spread_markdown(
    summaries: Mapping[str, dict], groups: Mapping[str, Sequence[str]], rows: Sequence[dict], beam: str | None = None
) -> str:
    """Markdown: per split with several runs, the spread of the headline numbers at one common beam (``beam``, a
    tag of :func:`~cosmobench.cmb.evaluate.beam_tag`; None: the first evaluated).

    Columns: the change of the filter-equalised RMSE of T, E and B against :data:`BASELINE` (percent, computed
    within each run), the T RMSE (μK_CMB), and the T and Q, U coverage at 1σ and 2σ on the mask (percent);
    cells are mean ± standard deviation over the runs (ddof 1) and their range.
    """
    index = {(r["split"], r["beam"], r["method"], r["metric"]): r for r in rows}
    lines = []
    for split, labels in groups.items():
        beam = beam or summaries[labels[0]]["settings"]["beams"][0]
        methods = _methods(summaries, labels)
        change = [f"{f} filter-equalised RMSE vs {BASELINE} (%)" for f in _FILTERED]
        cover = [f"cover {f} {k}σ (%)" for f in ("T", "Q, U") for k in (1, 2)]
        head = [*change, "T RMSE (μK_CMB)", *cover]
        lines += [f"**{split}**, {len(labels)} runs ({', '.join(labels)}), {beam}:", ""]
        lines += ["| Method | " + " | ".join(head) + " |", "|---|" + "---|" * len(head)]
        for m in methods:
            cells = [_cell(index, (split, beam, m, CHANGE.format(k))) for k in _FILTERED.values()]
            cells.append(_cell(index, (split, beam, m, "rmse"), digits=3))
            cells += [
                _cell(index, (split, _NATIVE, m, coverage_column(k, f)), 100.0) for f in ("t", "p") for k in (1, 2)
            ]
            lines.append(f"| {m} | " + " | ".join(cells) + " |")
        differ = "; ".join(f"{m}: {_differences(summaries, labels, m, split)}" for m in methods)
        lines += ["", f"What differs between the runs: {differ}."]
        apart = [lb for lb, v in summaries.items() if v["settings"]["split"] == split and lb not in labels]
        if apart:
            lines.append(
                f"Not in the spread: {', '.join(apart)} (other simulations or training data, other evaluation "
                "settings, or no manifest to tell)."
            )
        lines.append("")
    lines += [
        "Mean ± standard deviation over the runs (ddof 1) of each run's mean over the split's simulations, and the "
        f"range (min to max). The change against {BASELINE} is taken within each run (the same {BASELINE} maps), "
        "then spread; runs are results of the same dataset (every simulation's checksum in the manifests, the "
        "training splits' too) scored with the same evaluation settings. Every metric, beam and coverage level: "
        "leaderboard_spread.csv.",
    ]
    return "\n".join(lines) + "\n"
