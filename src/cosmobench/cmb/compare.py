"""``cosmobench cmb compare``: leaderboard and report from the results of :func:`~cosmobench.cmb.evaluate.evaluate`.

Reads every evaluated split under ``results_dir`` (``<split>/summary.json``: Test, and TestOOD whose
foregrounds come from another model) and writes into ``report_dir``: ``leaderboard.md`` (the splits side by
side with the out-of-distribution / in-distribution ratio, then per split methods x common beams, mean +- std
across simulations, in the style of CMB-ML's README), ``leaderboard.csv`` and ``leaderboard.json`` (mean, std,
standard error, count of every metric, one row per split, beam and method), figures under
``figures/<split>/`` and ``report.md`` tying them together.
"""

from __future__ import annotations

import csv
import math
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from cosmobench.cmb import figures
from cosmobench.cmb.evaluate import METRIC_COLUMNS, beam_tag
from cosmobench.core.io import atomic_path, read_json, write_json

__all__ = ["compare", "check_map_beams", "find_results", "leaderboard_markdown", "leaderboard_text", "ood_markdown"]

# metric -> (table header, unit, higher is better)
HEADLINE = {
    "mae": ("MAE", "μK", False),
    "rmse": ("RMSE", "μK", False),
    "nrmse": ("NRMSE", "", False),
    "psnr": ("PSNR", "dB", True),
}
SPLITS = {
    "rmse_ell_lo": "RMSE ℓ < {ell}",
    "rmse_ell_hi": "RMSE ℓ ≥ {ell}",
    "rmse_lat": "RMSE \\|b\\| > {lat}°",
    "rmse_fullsky": "RMSE full sky",
}


def compare(
    results_dir: str | Path, *, report_dir: str | Path | None = None, map_beams: Sequence[str | float] | None = None
) -> Path:
    """Write the leaderboard (Markdown, CSV, JSON), figures and ``report.md`` for every evaluated split.

    Parameters
    ----------
    results_dir : path
        Folder of :func:`~cosmobench.cmb.evaluate.evaluate`'s per-split results (``<results_dir>/<split>/
        summary.json``, e.g. Test and the out-of-distribution TestOOD), or one such split folder.
    report_dir : path, optional
        Report folder; ``<results_dir>/../report`` by default.
    map_beams : sequence of str or float, optional
        Common beams at which to draw the map figures (one per method and split); all evaluated beams by
        default, ``[]`` for none.

    Returns
    -------
    Path
        ``report.md``.
    """
    results = Path(results_dir)
    folders = find_results(results)
    summaries = {split: read_json(folder / "summary.json") for split, folder in folders.items()}
    report = Path(report_dir) if report_dir is not None else results.parent / "report"
    check_map_beams(summaries, map_beams)

    rows = [row for summary in summaries.values() for row in _rows(summary)]
    with atomic_path(report / "leaderboard.csv") as tmp, open(tmp, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    first = next(iter(summaries.values()))
    write_json(
        report / "leaderboard.json",
        {"settings": first["settings"], "splits": {s: v["settings"] for s, v in summaries.items()}, "rows": rows},
    )
    table = leaderboard_text(summaries)
    with atomic_path(report / "leaderboard.md") as tmp:
        tmp.write_text(table)

    figs: dict[str, list[tuple[str, str]]] = {}
    for split, summary in summaries.items():
        settings = summary["settings"]
        beams = list(settings["beams"])
        map_tags = beams if map_beams is None else [beam_tag(b) for b in map_beams]
        figs.update(_split_figures(folders[split], report, split, settings, map_tags))
    text = _report_text(summaries, table, figs)
    with atomic_path(report / "report.md") as tmp:
        tmp.write_text(text)
    return report / "report.md"


def check_map_beams(summaries: Mapping[str, dict], map_beams: Sequence[str | float] | None) -> None:
    """Refuse map beams that were not evaluated on every split (``summaries``: split -> ``summary.json``)."""
    for split, summary in summaries.items():
        beams = list(summary["settings"]["beams"])
        unknown = sorted({beam_tag(b) for b in (beams if map_beams is None else map_beams)} - set(beams))
        if unknown:
            raise ValueError(
                f"map_beams {unknown} were not evaluated on {split}; evaluated beams: {beams} (fix compare.map_beams)"
            )


def find_results(results_dir: str | Path) -> dict[str, Path]:
    """The per-split results folders under ``results_dir``: {split: folder}, Test first, then by name.

    ``results_dir`` may itself be one split's folder (holding ``summary.json``). Where it holds both split
    folders and a ``summary.json`` of its own (a dataset evaluated with the layout from before split folders,
    then again per split), the split folders are used and the old top-level result is ignored with a warning.
    """
    results = Path(results_dir)
    folders = sorted(p for p in results.glob("*") if (p / "summary.json").is_file())
    if (results / "summary.json").is_file():
        if folders:
            warnings.warn(
                f"{results / 'summary.json'} is a result of the layout without split folders; reporting the "
                f"split folders {[f.name for f in folders]} instead (move or delete the old files to silence this)",
                stacklevel=2,
            )
        else:
            folders = [results]
    if not folders:
        raise FileNotFoundError(
            f"no summary.json in {results} or its split folders; run `cosmobench cmb evaluate` first"
        )
    found: dict[str, Path] = {}
    for f in folders:
        split = read_json(f / "summary.json")["settings"]["split"]
        if split in found:
            raise ValueError(f"{found[split]} and {f} both hold results of split {split!r}; keep one")
        found[split] = f
    return {s: found[s] for s in sorted(found, key=lambda s: (s != "Test", s))}


def _split_figures(
    results: Path, report: Path, split: str, settings: dict, map_tags: list[str]
) -> dict[tuple[str, str], list[tuple[str, str]]]:
    """Spectra, transfer and map figures of one split: {(split, kind): [(label, path relative to report)]}."""
    figs: dict[tuple[str, str], list[tuple[str, str]]] = {}
    folder = report / "figures" / split
    methods = list(settings["methods"])
    for tag in settings["beams"]:
        spectra = {m: dict(np.load(results / m / tag / "spectra.npz")) for m in methods}
        path = figures.plot_spectra(
            spectra, folder / f"spectra_{tag}.png", title=f"{split}: spectra, common beam {tag}"
        )
        figs.setdefault((split, "spectra"), []).append((tag, _rel(path, report)))
        path = figures.plot_transfer(
            spectra, folder / f"transfer_{tag}.png", title=f"{split}: transfer function, common beam {tag}"
        )
        figs.setdefault((split, "transfer"), []).append((tag, _rel(path, report)))
        if tag in map_tags:
            for m in methods:
                ex = np.load(results / m / tag / "example_maps.npz")
                path = figures.plot_maps(
                    ex["truth"],
                    ex["pred"],
                    ex["mask"],
                    folder / f"maps_{m}_{tag}.png",
                    title=f"{m}, {tag}, {split} sim{int(ex['sim']):04d}",
                )
                figs.setdefault((split, "maps"), []).append((f"{m}, {tag}", _rel(path, report)))
    return figs


def _rel(path: Path, base: Path) -> str:
    return str(Path(path).relative_to(base))


def _rows(summary: dict) -> list[dict[str, Any]]:
    rows = []
    settings = summary["settings"]
    for tag in settings["beams"]:
        for m in settings["methods"]:
            info = summary["methods"][m]
            stats = info["beams"][tag]
            row: dict[str, Any] = {
                "split": settings["split"],
                "foreground_model": settings.get("foreground_model"),
                "beam": tag,
                "method": m,
                "output_beam_arcmin": info["output_beam_arcmin"],
            }
            for k in METRIC_COLUMNS:
                for q in ("mean", "std", "se"):
                    row[f"{k}_{q}"] = stats[k][q]
            row["n"] = stats[METRIC_COLUMNS[0]]["n"]
            rows.append(row)
    return rows


def _fmt(x: float | None, digits: int = 4) -> str:
    if x is None or not math.isfinite(x):
        return "—" if x is None else str(x)
    if x == 0:
        return "0"
    mag = int(math.floor(math.log10(abs(x))))
    if mag < -3 or mag > 5:
        return f"{x:.{digits - 1}e}"
    return f"{x:.{max(0, digits - 1 - mag)}f}"


def _cell(stats: dict, bold: bool) -> str:
    s = _fmt(stats["mean"])
    if stats["std"] is not None:
        s += f" ± {_fmt(stats['std'], 2)}"
    return f"**{s}**" if bold else s


def leaderboard_markdown(summary: dict) -> str:
    """Markdown tables: headline metrics (mean ± std) per common beam and method, and residual RMS splits.

    The best mean of each column within a beam mode is bold (lowest error, highest PSNR).
    """
    settings = summary["settings"]
    methods = {m: summary["methods"][m] for m in settings["methods"]}
    head = [f"{h} ({u})" if u else h for h, u, _ in HEADLINE.values()]
    lines = ["| Common beam | Method | " + " | ".join(head) + " |", "|---|---|" + "---|" * len(HEADLINE)]
    for tag in settings["beams"]:
        best = {}
        for k, (_, _, higher) in HEADLINE.items():
            vals = {m: methods[m]["beams"][tag][k]["mean"] for m in methods}
            vals = {m: v for m, v in vals.items() if v is not None}
            if vals:
                best[k] = (max if higher else min)(vals, key=vals.get)
        for m in methods:
            stats = methods[m]["beams"][tag]
            cells = [_cell(stats[k], best.get(k) == m) for k in HEADLINE]
            lines.append(f"| {tag} | {m} | " + " | ".join(cells) + " |")
    n = next(iter(methods.values()))["beams"][settings["beams"][0]]["mae"]["n"]
    split_head = [v.format(ell=settings["ell_split"], lat=f"{settings['lat_cut_deg']:g}") for v in SPLITS.values()]
    lines += [
        "",
        f"Mean ± standard deviation across the {n} simulations of the {settings['split']} split; "
        "standard errors of the means are in leaderboard.csv. "
        f"Unmasked sky fraction {settings['fsky']:.3f}, ℓ_max = {settings['lmax']}, nside {settings['nside']}.",
        "",
        "| Common beam | Method | " + " | ".join(f"{h} (μK)" for h in split_head) + " |",
        "|---|---|" + "---|" * len(SPLITS),
    ]
    for tag in settings["beams"]:
        for m in methods:
            stats = methods[m]["beams"][tag]
            lines.append(f"| {tag} | {m} | " + " | ".join(_cell(stats[k], False) for k in SPLITS) + " |")
    return "\n".join(lines) + "\n"


def _split_title(settings: dict) -> str:
    model = settings.get("foreground_model")
    return settings["split"] + ("" if model is None else f" (foregrounds: {model})")


def ood_markdown(summaries: Mapping[str, dict], metric: str = "rmse") -> str:
    """Markdown table of one metric on every split side by side, with each later split's ratio to the first.

    The first split is the in-distribution reference (Test); the others are usually out of distribution
    (TestOOD: foregrounds from another model). The best mean of each split column within a beam is bold.

    Parameters
    ----------
    summaries : mapping of str to dict
        Split -> ``summary.json`` content of :func:`~cosmobench.cmb.evaluate.evaluate`, reference first.
    metric : str
        A key of :data:`HEADLINE`.
    """
    splits = list(summaries)
    ref = splits[0]
    name, unit, higher = HEADLINE[metric]
    first = summaries[ref]["settings"]
    methods = [m for m in first["methods"] if all(m in summaries[s]["methods"] for s in splits)]
    beams = [b for b in first["beams"] if all(b in summaries[s]["settings"]["beams"] for s in splits)]
    unit = f" ({unit})" if unit else ""
    head = [f"{name} {s}{unit}" for s in splits] + [f"{s} / {ref}" for s in splits[1:]]
    lines = ["| Common beam | Method | " + " | ".join(head) + " |", "|---|---|" + "---|" * len(head)]
    for tag in beams:
        stats = {s: {m: summaries[s]["methods"][m]["beams"][tag][metric] for m in methods} for s in splits}
        best = {}
        for s in splits:
            vals = {m: v["mean"] for m, v in stats[s].items() if v["mean"] is not None}
            if vals:
                best[s] = (max if higher else min)(vals, key=vals.get)
        for m in methods:
            cells = [_cell(stats[s][m], best.get(s) == m) for s in splits]
            r = stats[ref][m]["mean"]
            cells += [
                _fmt(stats[s][m]["mean"] / r, 3) if r and stats[s][m]["mean"] is not None else "—" for s in splits[1:]
            ]
            lines.append(f"| {tag} | {m} | " + " | ".join(cells) + " |")
    models = "; ".join(_split_title(summaries[s]["settings"]) for s in splits)
    lines += [
        "",
        f"{name} mean ± standard deviation across the simulations of each split: {models}. "
        f"The ratio columns divide a split's mean by the {ref} mean (1 = no loss on foregrounds the methods were "
        "not trained on; docs/foregrounds.md describes the models).",
    ]
    return "\n".join(lines) + "\n"


def leaderboard_text(summaries: Mapping[str, dict]) -> str:
    """The content of ``leaderboard.md``: the cross-split table (several splits), then each split's tables."""
    if len(summaries) == 1:
        return leaderboard_markdown(next(iter(summaries.values())))
    parts = ["### Test splits side by side", "", ood_markdown(summaries)]
    for summary in summaries.values():
        parts += [f"### {_split_title(summary['settings'])}", "", leaderboard_markdown(summary)]
    return "\n".join(parts)


def _report_text(summaries: Mapping[str, dict], table: str, figs: dict) -> str:
    first = next(iter(summaries.values()))
    s = first["settings"]
    mask = (
        f"user mask `{s['mask_path']}`"
        if s["mask_path"]
        else (
            f"foreground-threshold mask keeping the faintest {s['fsky_requested']:.0%} of the sky "
            f"(mean foreground intensity of each split, smoothed {s['mask_smooth_deg']:g}°)"
        )
    )
    beams = ", ".join(
        f"{m}: {'none' if i['output_beam_arcmin'] is None else str(i['output_beam_arcmin']) + '′'}"
        for m, i in first["methods"].items()
    )
    splits = ", ".join(
        f"**{v['settings']['split']}** ({len(v['settings']['sims'])} simulations, foreground model "
        f"{v['settings'].get('foreground_model') or 'not recorded'}, scored sky fraction {v['settings']['fsky']:.3f})"
        for v in summaries.values()
    )
    out = [
        "# CMB component separation: report",
        "",
        f"Dataset `{s['root']}`, nside {s['nside']}; splits {splits}.",
        "",
        "## Protocol",
        "",
        f"- Mask: {mask}.",
        f"- Common beam: every map goes to alm up to ℓ_max = {s['lmax']}, is multiplied by b_target/b_source "
        f"and synthesised again (methods' output beams — {beams}).",
        "- Monopole and dipole fitted on unmasked pixels and removed from truth and prediction.",
        "- MAE, RMSE, NRMSE = ‖t − p‖/‖t‖, and PSNR = 10 log10(R²/MSE) with R the range of the **truth** only "
        "(CMB-ML took the range of truth and prediction, which rewards noisy maps).",
        f"- Spectra: binned MASTER D_ℓ ({s['nbins']} bins from ℓ = 2) with one C1-apodised mask "
        f"({s['apod_deg']:g}°) for truth, prediction, residual and cross; the common beam is deconvolved; "
        "theory is each simulation's spectrum through the same estimator.",
        "",
        "## Leaderboard",
        "",
        table,
    ]
    titles = {"spectra": "Power spectra", "transfer": "Transfer functions", "maps": "Maps (first simulation)"}
    for split in summaries:
        for key, title in titles.items():
            if (split, key) in figs:
                out += ["", f"## {title}, {split}", ""]
                out += [f"**{label}**\n\n![{label}]({path})\n" for label, path in figs[split, key]]
    out += ["", "Files: `leaderboard.md`, `leaderboard.csv`, `leaderboard.json`, `figures/<split>/`.", ""]
    return "\n".join(out)
