"""``cosmobench cmb compare``: leaderboard and report from the results of :func:`~cosmobench.cmb.evaluate.evaluate`.

Writes into ``report_dir``: ``leaderboard.md`` (methods x common beams, mean +- std across simulations, in the
style of CMB-ML's README), ``leaderboard.csv`` and ``leaderboard.json`` (mean, std, standard error, count of
every metric), figures under ``figures/`` and ``report.md`` tying them together.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from cosmobench.cmb import figures
from cosmobench.cmb.evaluate import METRIC_COLUMNS, beam_tag
from cosmobench.core.io import atomic_path, read_json, write_json

__all__ = ["compare", "leaderboard_markdown"]

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
    """Write the leaderboard (Markdown, CSV, JSON), figures and ``report.md``.

    Parameters
    ----------
    results_dir : path
        ``out_dir`` of :func:`~cosmobench.cmb.evaluate.evaluate` (holding ``summary.json``).
    report_dir : path, optional
        Report folder; ``<results_dir>/../report`` by default.
    map_beams : sequence of str or float, optional
        Common beams at which to draw the map figures (one per method); all evaluated beams by default,
        ``[]`` for none.

    Returns
    -------
    Path
        ``report.md``.
    """
    results = Path(results_dir)
    summary_path = results / "summary.json"
    if not summary_path.is_file():
        raise FileNotFoundError(f"{summary_path} is missing; run `cosmobench cmb evaluate` first")
    summary = read_json(summary_path)
    report = Path(report_dir) if report_dir is not None else results.parent / "report"
    settings = summary["settings"]
    methods = list(settings["methods"])
    beams = list(settings["beams"])
    map_tags = beams if map_beams is None else [beam_tag(b) for b in map_beams]
    unknown = sorted(set(map_tags) - set(beams))
    if unknown:
        raise ValueError(f"map_beams {unknown} were not evaluated; evaluated beams: {beams}")

    rows = _rows(summary)
    with atomic_path(report / "leaderboard.csv") as tmp, open(tmp, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    write_json(report / "leaderboard.json", {"settings": settings, "rows": rows})
    table = leaderboard_markdown(summary)
    with atomic_path(report / "leaderboard.md") as tmp:
        tmp.write_text(table)

    figs: dict[str, list[tuple[str, str]]] = {}
    for tag in beams:
        spectra = {m: dict(np.load(results / m / tag / "spectra.npz")) for m in methods}
        figs.setdefault("spectra", []).append(
            (
                tag,
                _rel(
                    figures.plot_spectra(
                        spectra, report / "figures" / f"spectra_{tag}.png", title=f"Spectra, common beam: {tag}"
                    ),
                    report,
                ),
            )
        )
        figs.setdefault("transfer", []).append(
            (
                tag,
                _rel(
                    figures.plot_transfer(
                        spectra,
                        report / "figures" / f"transfer_{tag}.png",
                        title=f"Transfer function, common beam: {tag}",
                    ),
                    report,
                ),
            )
        )
        if tag in map_tags:
            for m in methods:
                ex = np.load(results / m / tag / "example_maps.npz")
                path = figures.plot_maps(
                    ex["truth"],
                    ex["pred"],
                    ex["mask"],
                    report / "figures" / f"maps_{m}_{tag}.png",
                    title=f"{m}, {tag}, {settings['split']} sim{int(ex['sim']):04d}",
                )
                figs.setdefault("maps", []).append((f"{m}, {tag}", _rel(path, report)))
    text = _report_text(summary, table, figs)
    with atomic_path(report / "report.md") as tmp:
        tmp.write_text(text)
    return report / "report.md"


def _rel(path: Path, base: Path) -> str:
    return str(Path(path).relative_to(base))


def _rows(summary: dict) -> list[dict[str, Any]]:
    rows = []
    for tag in summary["settings"]["beams"]:
        for m in summary["settings"]["methods"]:
            info = summary["methods"][m]
            stats = info["beams"][tag]
            row: dict[str, Any] = {"beam": tag, "method": m, "output_beam_arcmin": info["output_beam_arcmin"]}
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


def _report_text(summary: dict, table: str, figs: dict) -> str:
    s = summary["settings"]
    mask = (
        f"user mask `{s['mask_path']}`"
        if s["mask_path"]
        else (
            f"foreground-threshold mask keeping the faintest {s['fsky_requested']:.0%} of the sky "
            f"(mean foreground intensity of the split, smoothed {s['mask_smooth_deg']:g}°)"
        )
    )
    beams = ", ".join(
        f"{m}: {'none' if i['output_beam_arcmin'] is None else str(i['output_beam_arcmin']) + '′'}"
        for m, i in summary["methods"].items()
    )
    out = [
        "# CMB component separation: report",
        "",
        f"Dataset `{s['root']}`, split **{s['split']}** ({len(s['sims'])} simulations), nside {s['nside']}.",
        "",
        "## Protocol",
        "",
        f"- Mask: {mask}; scored sky fraction {s['fsky']:.3f}.",
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
    for key, title in titles.items():
        if key in figs:
            out += ["", f"## {title}", ""]
            out += [f"**{label}**\n\n![{label}]({path})\n" for label, path in figs[key]]
    out += ["", "Files: `leaderboard.md`, `leaderboard.csv`, `leaderboard.json`, `figures/`.", ""]
    return "\n".join(out)
