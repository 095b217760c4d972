"""``cosmobench cmb compare``: leaderboard and report from the results of :func:`~cosmobench.cmb.evaluate.evaluate`.

Reads every evaluated split under ``results_dir`` (``<split>/summary.json``: Test, and TestOOD whose
foregrounds come from another model), or under the results folders of several datasets (``[A/results,
B/results]``: each column is then ``<dataset>/<split>``), and writes into ``report_dir``: ``leaderboard.md`` (the
splits side by side with the ratio to the first, each column naming its foreground model, then per split
methods x common beams, mean +- std across simulations, in the style of CMB-ML's README; the RMSE and residual
power of T, E and B per method; the coverage of the methods' error maps), ``leaderboard.csv`` and
``leaderboard.json`` (one row per dataset, split, beam, method and field T/E/B: the field's RMSE and residual power,
and mean, std, standard error and count of every metric), with several runs of one split (training seeds on the
same simulations, :mod:`cosmobench.cmb.spread`) their spread in ``leaderboard_spread.csv`` and atop
``leaderboard.md``, figures under ``figures/<split>/`` (``figures/<dataset>/<split>/``) and ``report.md`` tying
them together.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from cosmobench.cmb import figures
from cosmobench.cmb.dataset import is_fixed_sky
from cosmobench.cmb.evaluate import COLUMNS, COVERAGE_LEVELS, METRIC_COLUMNS, beam_tag, coverage_column
from cosmobench.cmb.spread import run_groups, spread_markdown, spread_rows
from cosmobench.core.io import atomic_path, read_json, write_csv, write_json

__all__ = [
    "compare",
    "check_map_beams",
    "coverage_markdown",
    "field_markdown",
    "collect_results",
    "find_results",
    "leaderboard_markdown",
    "leaderboard_text",
    "ood_markdown",
]

# metric -> (table header, unit, higher is better)
HEADLINE = {
    "mae": ("MAE", "μK", False),
    "rmse": ("RMSE", "μK", False),
    "nrmse": ("NRMSE", "", False),
    "psnr": ("PSNR", "dB", True),
}
SPREAD_CSV = "leaderboard_spread.csv"  # the spread over runs of the same split (cosmobench.cmb.spread)
_EMPTY = {"mean": None, "std": None}  # the statistics of a column a summary lacks
# field -> (its RMSE, residual-power and transfer columns in metrics.csv, its filter-equalised RMSE in summary.json)
FIELDS = {
    "T": ("rmse", "resid_power_t", "transfer_t", "rmse_filtered_t"),
    "E": ("rmse_e", "resid_power_e", "transfer_e", "rmse_filtered_e"),
    "B": ("rmse_b", "resid_power_b", "transfer_b", "rmse_filtered_b"),
}
SPLITS = {
    "rmse_ell_lo": "RMSE ℓ < {ell}",
    "rmse_ell_hi": "RMSE ℓ ≥ {ell}",
    "rmse_lat": "RMSE \\|b\\| > {lat}°",
    "rmse_fullsky": "RMSE full sky",
}


def compare(
    results_dir: str | Path | Sequence[str | Path],
    *,
    report_dir: str | Path | None = None,
    map_beams: Sequence[str | float] | None = None,
) -> Path:
    """Write the leaderboard (Markdown, CSV, JSON), figures and ``report.md`` for every evaluated split.

    Parameters
    ----------
    results_dir : path or sequence of paths
        Folder of :func:`~cosmobench.cmb.evaluate.evaluate`'s per-split results (``<results_dir>/<split>/
        summary.json``, e.g. Test and the out-of-distribution TestOOD), or one such split folder; or the
        results folders of several datasets, reported side by side (:func:`collect_results`).
    report_dir : path, optional
        Report folder; ``<results_dir>/../report`` (of the first results folder) by default.
    map_beams : sequence of str or float, optional
        Common beams at which to draw the map figures (one per split, every method in it); all evaluated beams
        by default, ``[]`` for none. The spectra and transfer functions are drawn at the first of them (with
        ``[]``, at the first evaluated beam); the other beams' spectra are summarised in a table.

    Returns
    -------
    Path
        ``report.md``.
    """
    folders = collect_results(results_dir)
    summaries = {label: read_json(folder / "summary.json") for label, folder in folders.items()}
    first_dir = results_dir if isinstance(results_dir, (str, Path)) else results_dir[0]
    report = Path(report_dir) if report_dir is not None else Path(first_dir).parent / "report"
    check_map_beams(summaries, map_beams)

    rows = [row for summary in summaries.values() for row in _rows(summary)]  # one column "dataset" per root
    write_csv(report / "leaderboard.csv", rows)
    first = next(iter(summaries.values()))
    write_json(
        report / "leaderboard.json",
        {"settings": first["settings"], "splits": {s: v["settings"] for s, v in summaries.items()}, "rows": rows},
    )
    table = leaderboard_text(summaries)
    groups = run_groups(summaries)
    if groups:  # the same split scored by several runs (training seeds): their spread, before the runs' tables
        spread = spread_rows(summaries, groups)
        write_csv(report / SPREAD_CSV, spread)
        beam = beam_tag(map_beams[0]) if map_beams else None  # the maps' beam, else the first evaluated
        table = "\n".join(["### Spread over runs", "", spread_markdown(summaries, groups, spread, beam), table])
    else:
        (report / SPREAD_CSV).unlink(missing_ok=True)
    with atomic_path(report / "leaderboard.md") as tmp:
        tmp.write_text(table)

    figs: dict[tuple[str, str], list[tuple[str, str]]] = {}
    beam_notes: dict[str, str] = {}
    for label, summary in summaries.items():
        settings = summary["settings"]
        beams = list(settings["beams"])
        map_tags = beams if map_beams is None else [beam_tag(b) for b in map_beams]
        figs.update(_split_figures(folders[label], report, label, summary, map_tags))
        beam_notes[label] = _beam_table(folders[label], settings, (map_tags or beams)[0])
    text = _report_text(summaries, table, figs, beam_notes, spread=bool(groups))
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


def collect_results(results_dirs: str | Path | Sequence[str | Path]) -> dict[str, Path]:
    """The results folders to report: {column label: folder}.

    One results folder gives :func:`find_results` (labels are the split names). Several (one per dataset, e.g.
    a synthetic dataset and one with a PySM split) give ``<dataset>/<split>`` labels, ``<dataset>`` the last
    parts of the evaluated dataset's root that tell the datasets apart; datasets in the given order, each with
    Test first.

    Raises
    ------
    ValueError
        No folder given, or two folders holding results of the same dataset.
    """
    dirs = [results_dirs] if isinstance(results_dirs, (str, Path)) else list(results_dirs)
    if not dirs:
        raise ValueError("no results folder given; name one or more, e.g. compare.results_dirs=[A/results,B/results]")
    found = [find_results(d) for d in dirs]
    if len(found) == 1:
        return found[0]
    roots = [Path(read_json(next(iter(f.values())) / "summary.json")["settings"]["root"]) for f in found]
    twice = sorted({str(r) for r in roots if roots.count(r) > 1})
    if twice:
        raise ValueError(
            f"results of the dataset(s) {twice} are given twice ({[str(d) for d in dirs]}); name each dataset's "
            "results folder once"
        )
    names = next(
        names
        for k in range(1, max(len(r.parts) for r in roots) + 1)
        if len(set(names := ["/".join(r.parts[-k:]) for r in roots])) == len(roots)
    )
    return {f"{name}/{split}": folder for name, folders in zip(names, found) for split, folder in folders.items()}


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
    results: Path, report: Path, split: str, summary: dict, map_tags: list[str]
) -> dict[tuple[str, str], list[tuple[str, str]]]:
    """Figures of one split: {(split, kind): [(common beam, path relative to report)]}.

    The common beams change the spectra by well under a per cent (:func:`_beam_table` says how much), so the
    spectra (TT; EE and BB of the methods predicting Q and U) and the transfer function are drawn at one beam, the
    first of ``map_tags`` (else the first evaluated beam); the maps at each beam of ``map_tags``, every method in
    one figure on common colour scales; the calibration of the methods with error maps (no beam: each is
    measured at its method's output beam).
    """
    settings = summary["settings"]
    folder = report / "figures" / split
    methods = list(settings["methods"])
    tag = (map_tags or list(settings["beams"]))[0]
    spectra = {m: dict(np.load(results / m / tag / "spectra.npz")) for m in methods}
    figs: dict[tuple[str, str], list[tuple[str, str]]] = {}
    path = figures.plot_spectra(
        spectra, folder / f"spectra_{tag}.png", fsky=settings["fsky"], title=f"{split}: spectra, common beam {tag}"
    )
    figs[split, "spectra"] = [(tag, _rel(path, report))]
    path = figures.plot_transfer(
        spectra, folder / f"transfer_{tag}.png", title=f"{split}: transfer function, common beam {tag}"
    )
    figs[split, "transfer"] = [(tag, _rel(path, report))]
    path = figures.plot_correlation(
        spectra, folder / f"correlation_{tag}.png", title=f"{split}: 1 − ρ², truth power no filter recovers, beam {tag}"
    )
    figs[split, "correlation"] = [(tag, _rel(path, report))]
    polarised = {m: s for m, s in spectra.items() if "truth_ee" in s}
    for field in ("ee", "bb") if polarised else ():
        named = ("truth", "pred", "resid", "theory")
        view = {
            m: {"edges": s["edges"], "ell_eff": s["ell_eff"], **{k: s[f"{k}_{field}"] for k in named}}
            for m, s in polarised.items()
        }
        title = f"{split}: {field.upper()} spectra, common beam {tag}"
        path = figures.plot_spectra(view, folder / f"{field}_spectra_{tag}.png", fsky=settings["fsky"], title=title)
        figs[split, f"{field}_spectra"] = [(tag, _rel(path, report))]
    levels, curves = _calibration_curves(summary)
    if curves:
        title = f"{split}: coverage of the error maps on the analysis mask"
        path = figures.plot_calibration(levels, curves, folder / "calibration.png", title=title)
        figs[split, "calibration"] = [("", _rel(path, report))]
    for tag in map_tags:
        examples = {m: dict(np.load(results / m / tag / "example_maps.npz")) for m in methods}
        sim = int(next(iter(examples.values()))["sim"])
        path = figures.plot_maps(examples, folder / f"maps_{tag}.png", title=f"{split} sim{sim:04d}, common beam {tag}")
        figs.setdefault((split, "maps"), []).append((tag, _rel(path, report)))
    return figs


def _calibration_curves(summary: dict) -> tuple[list[float], dict]:
    """The coverage levels of a split and, per method with error maps, {"T" | "Q and U": (mean, std)} at them."""
    levels = list(summary["settings"].get("coverage_levels", COVERAGE_LEVELS))
    curves = {}
    for m in summary["settings"]["methods"]:
        cover = summary["methods"][m].get("coverage")
        if cover:
            curves[m] = {
                label: tuple(
                    np.array([_nan(cover[coverage_column(k, field)][q]) for k in levels]) for q in ("mean", "std")
                )
                for field, label in (("t", "T"), ("p", "Q and U"))
            }
    return levels, curves


def _nan(x: float | None) -> float:
    return math.nan if x is None else float(x)


def _beam_table(results: Path, settings: dict, shown: str) -> str:
    """Markdown table: how far the spectra at each other common beam are from those drawn at ``shown``."""
    others = [b for b in settings["beams"] if b != shown]
    if not others:
        return ""
    lines = [
        f"| Method | Common beam | prediction: max abs(ΔD_b / D_b) vs {shown} | max abs(ΔT_b) vs {shown} |",
        "|---|---|---|---|",
    ]
    for m in settings["methods"]:
        ref = np.load(results / m / shown / "spectra.npz")
        for tag in others:
            spec = np.load(results / m / tag / "spectra.npz")
            pred, base = spec["pred"].mean(0), ref["pred"].mean(0)
            dd = np.max(np.abs(pred - base) / np.where(base != 0, np.abs(base), 1.0))  # 0 for a map of zeros
            dt = np.max(np.abs(figures.transfer_function(spec) - figures.transfer_function(ref)))
            lines.append(f"| {m} | {tag} | {dd:.2%} | {dt:.3f} |")
    return "\n".join(lines) + "\n"


def _rel(path: Path, base: Path) -> str:
    return str(Path(path).relative_to(base))


def _rows(summary: dict) -> list[dict[str, Any]]:
    """Leaderboard rows of one split: per beam, method and field (T, E, B), the field's RMSE, residual power and
    transfer and its filter-equalised RMSE (``field_rmse_*``, ``field_resid_power_*``, ``field_transfer_*``,
    ``field_rmse_filtered_*``; the last one value per split, its ``se`` a jackknife), then the statistics of every
    column of the method at that beam (the same on its three rows; empty where not measured, e.g. polarisation of
    a temperature-only method)."""
    rows = []
    settings = summary["settings"]
    for tag in settings["beams"]:
        for m in settings["methods"]:
            info = summary["methods"][m]
            stats = info["beams"][tag]
            for field, keys in FIELDS.items():
                row: dict[str, Any] = {
                    "split": settings["split"],
                    "foreground_model": settings.get("foreground_model"),
                    "beam": tag,
                    "method": m,
                    "field": field,
                    "output_beam_arcmin": info["output_beam_arcmin"],
                }
                names = ("field_rmse", "field_resid_power", "field_transfer", "field_rmse_filtered")
                pairs = [*zip(names, keys), *((k, k) for k in COLUMNS)]
                for name, k in pairs:
                    for q in ("mean", "std", "se"):
                        row[f"{name}_{q}"] = stats.get(k, {}).get(q)
                row["n"] = stats[METRIC_COLUMNS[0]]["n"]
                row["dataset"] = settings["root"]
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
        f"Unmasked sky fraction {settings['fsky']:.3f}, ℓ_max = {settings['lmax']}, nside {settings['nside']}."
        + _guard_note({settings["split"]: summary}, list(methods)),
        "",
        "| Common beam | Method | " + " | ".join(f"{h} (μK)" for h in split_head) + " |",
        "|---|---|" + "---|" * len(SPLITS),
    ]
    for tag in settings["beams"]:
        for m in methods:
            stats = methods[m]["beams"][tag]
            lines.append(f"| {tag} | {m} | " + " | ".join(_cell(stats[k], False) for k in SPLITS) + " |")
    cover = coverage_markdown(summary)
    lines += ["", field_markdown(summary).rstrip("\n")] + (["", cover.rstrip("\n")] if cover else [])
    return "\n".join(lines) + "\n"


def _beam_label(tag: str) -> str:
    """A common beam as a table header names it: ``no beam`` or e.g. ``20.6′ beam``."""
    return "no beam" if tag == "deconvolved" else tag.replace("arcmin", "′ beam")


def field_markdown(summary: dict) -> str:
    """Markdown table of the T, E and B rows of every method: RMSE at each common beam, residual power, leakage.

    T is the temperature map's RMSE (monopole and dipole removed), E and B the RMSE of the E-part and B-part of
    the Q, U residual (``rmse_e``, ``rmse_b``); the residual power is the mean over bins of the residual's MASTER
    D_b (TT, EE, BB; beam deconvolved, so nearly the same at every common beam) at the first common beam, as are
    the transfer (``transfer_*``: sum over bins of the cross spectrum with the truth over the truth's) and the
    E -> B leakage ``eb_leak`` on the B rows. The filter-equalised RMSE (``rmse_filtered_*``, at the first common
    beam; :mod:`cosmobench.cmb.filtered`) scores every map after the best isotropic linear filter per bin.
    The best mean of each column within a field is bold. "—": not measured (a temperature-only method).
    """
    settings = summary["settings"]
    methods = {m: summary["methods"][m] for m in settings["methods"]}
    beams, first = list(settings["beams"]), settings["beams"][0]
    head = [f"RMSE (μK_CMB, {_beam_label(t)})" for t in beams] + [
        f"filter-equalised RMSE (μK_CMB, {_beam_label(first)})",
        f"residual power: mean D_b over ℓ 2–{settings['lmax']} (μK_CMB², beam deconvolved)",
        "transfer Σ_b D_b(pred × true) / Σ_b D_b(true) (1 = unbiased)",
        "E→B leakage ε (no unit)",
    ]
    lines = ["| Method | Field | " + " | ".join(head) + " |", "|---|---|" + "---|" * len(head)]
    for field, (rmse, power, transfer, filtered) in FIELDS.items():
        cols = [(t, rmse) for t in beams] + [(first, filtered), (first, power)]
        best = {}
        for c in cols:
            vals = {m: methods[m]["beams"][c[0]].get(c[1], {}).get("mean") for m in methods}
            vals = {m: v for m, v in vals.items() if v is not None}
            best[c] = min(vals, key=vals.get) if vals else None
        for m in methods:
            stats = methods[m]["beams"]
            cells = [_cell(stats[t].get(k, _EMPTY), best[t, k] == m) for t, k in cols]
            cells.append(_cell(stats[first].get(transfer, _EMPTY), False))
            cells.append(_cell(stats[first].get("eb_leak", _EMPTY), False) if field == "B" else "")
            lines.append(f"| {m} | {field} | " + " | ".join(cells) + " |")
    lines += [
        "",
        "Per field, mean ± standard deviation across simulations: T is the temperature map (monopole and dipole "
        "removed), E and B the E-part and B-part of the Q, U residual (band-limited at ℓ_max, on the analysis mask); "
        "ε = Σ_b D_b(true E × predicted B) / Σ_b D_b(true E × true E), the fraction of the true E-mode amplitude "
        "found in the predicted B-modes (0: no leakage). The transfer is the fraction of the true CMB amplitude the "
        "prediction keeps: below 1, the map is shrunk towards zero (a Wiener-like filter), which lowers the RMSE of "
        "a noisy field but biases its spectrum. The filter-equalised RMSE is what each map's RMSE becomes after the "
        "best isotropic linear filter per multipole bin (fitted on this split, alike for every method; from the "
        "MASTER spectra, as for a full-sky map, so ~1 % above the pixel RMSE even where no filter helps): "
        "shrinkage earns nothing there, only information about the CMB does. Definitions: docs/cmb_evaluation.md.",
    ]
    return "\n".join(lines) + "\n"


def coverage_markdown(summary: dict) -> str:
    """Markdown table of the coverage of every method's error map at 1 and 2 sigma (empty with no error maps).

    Percent of scored pixels with abs(prediction - truth) <= k sigma, on the analysis mask and on the full sky,
    T and Q, U pooled, mean ± standard deviation across simulations; nominal 68.3 % and 95.4 %.
    """
    settings = summary["settings"]
    covered = {m: summary["methods"][m].get("coverage") for m in settings["methods"]}
    covered = {m: c for m, c in covered.items() if c}
    if not covered:
        return ""
    cols = [(f, k, r) for r in ("mask", "fullsky") for f in ("t", "p") for k in (1, 2)]
    names = {"t": "T", "p": "Q, U", "mask": "mask", "fullsky": "full sky"}
    head = [f"{names[f]} {k}σ, {names[r]} ({100 * math.erf(k / math.sqrt(2)):.1f} %)" for f, k, r in cols]
    lines = ["| Method | " + " | ".join(head) + " |", "|---|" + "---|" * len(head)]
    for m, cover in covered.items():
        cells = []
        for f, k, r in cols:
            stats = cover[coverage_column(k, f, r)]
            pct = {q: None if stats[q] is None else 100 * stats[q] for q in ("mean", "std")}
            cells.append(_cell(pct, False))
        lines.append(f"| {m} | " + " | ".join(cells) + " |")
    lines += [
        "",
        "Coverage (%) of the per-pixel errors: the fraction of pixels where abs(prediction − truth) ≤ k σ, with the "
        "truth brought to each method's own output beam and band limit (the frame of its σ), independently of the "
        "common beams; mean ± standard deviation across simulations, nominal value in each header (a Gaussian "
        "error). Below nominal: σ too small (overconfident); above: too large.",
    ]
    return "\n".join(lines) + "\n"


def _model_text(settings: dict) -> str:
    """The foreground model of an evaluated split, as the report names it."""
    model = settings.get("foreground_model")
    return "not recorded" if model is None else model + (", one fixed sky" if is_fixed_sky(model) else "")


def _split_title(label: str, settings: dict) -> str:
    return f"{label} (foregrounds: {_model_text(settings)})"


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
    models = {s: summaries[s]["settings"].get("foreground_model") or "model not recorded" for s in splits}
    head = [f"{name} {s}, {models[s]}{unit}" for s in splits] + [f"{s} / {ref}" for s in splits[1:]]
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
    titles = "; ".join(_split_title(s, summaries[s]["settings"]) for s in splits)
    lines += [
        "",
        f"{name} mean ± standard deviation across the simulations of each split: {titles}. "
        f"The ratio columns divide a split's mean by the {ref} mean (1 = no loss on foregrounds the methods were "
        "not trained on; docs/foregrounds.md describes the models)."
        + _training_note(summaries, methods)
        + _guard_note(summaries, methods),
    ]
    return "\n".join(lines) + "\n"


def _training_note(summaries: Mapping[str, dict], methods: Sequence[str]) -> str:
    """What each learned method was trained on (its ``train_foregrounds``), and the splits that are therefore not
    out of distribution for it (a split's model among those of its training mixture)."""
    trained = {}
    for m in methods:
        models = {v.get("methods", {}).get(m, {}).get("train_foregrounds") for v in summaries.values()} - {None}
        if models:
            trained[m] = sorted(models)
    if not trained:
        return ""
    note = " Learned methods trained on foregrounds: " + "; ".join(f"{m} {', '.join(v)}" for m, v in trained.items())
    seen = [
        f"{s} ({model}) for {m}"
        for s, summary in list(summaries.items())[1:]
        if (model := summary["settings"].get("foreground_model"))
        for m, v in trained.items()
        if any(model in t.removeprefix("mixture:").split("+") for t in v)
    ]
    return note + (
        f"; not out of distribution, being among the training foregrounds: {', '.join(seen)}." if seen else "."
    )


def _guard_note(summaries: Mapping[str, dict], methods: Sequence[str]) -> str:
    """How many maps of each split a guarded method corrected in temperature (``guard`` of the summaries, from the
    decision in each prediction's header); empty when no method has a guard."""
    counts = {}
    for m in methods:
        found = {s: g for s, v in summaries.items() if (g := v.get("methods", {}).get(m, {}).get("guard"))}
        if found:
            counts[m] = ", ".join(f"{s} {g['corrected']}/{g['maps']}" for s, g in found.items())
    if not counts:
        return ""
    return (
        " Maps whose temperature the guard corrected (the others keep the base method's, NILC's; the decision is in "
        "each prediction's header, docs/cmb_methods.md): " + "; ".join(f"{m} {c}" for m, c in counts.items()) + "."
    )


def leaderboard_text(summaries: Mapping[str, dict]) -> str:
    """The content of ``leaderboard.md``: the cross-split table (several splits), then each split's tables."""
    if len(summaries) == 1:
        return leaderboard_markdown(next(iter(summaries.values())))
    parts = ["### Test splits side by side", "", ood_markdown(summaries)]
    for label, summary in summaries.items():
        parts += [f"### {_split_title(label, summary['settings'])}", "", leaderboard_markdown(summary)]
    return "\n".join(parts)


def _mask_text(source: str) -> str:
    """What a threshold mask was made from, for the report (``summary.json``'s ``mask_source``)."""
    return "foreground intensity (foreground_I_map.fits)" if source == "foreground_I_map.fits" else source


def _section(heading: str, images: Sequence[tuple[str, str]], caption: str) -> list[str]:
    """Markdown lines of one report section: a heading, its figures (alt text, path) and their caption."""
    out = ["", f"## {heading}"]
    for alt, path in images:
        out += ["", f"![{alt}]({path})"]
    return [*out, "", caption]


def _figure_sections(split: str, settings: dict, figs: dict, beam_note: str) -> list[str]:
    """The report's figures of one split, each linked and captioned."""
    n = len(settings["sims"])
    out = []
    spread = (
        f"prediction, averaged over the {n} simulations; the error bars are the standard deviation of the "
        "prediction's spectrum across the simulations (the scatter of one simulation's estimate, cosmic variance "
        "included; the mean is known √n times better)"
        if n > 1
        else "prediction from the one simulation (no error bars: one simulation has no scatter)"
    )
    for tag, path in figs.get((split, "spectra"), []):
        maps = (
            "beam-deconvolved maps" if tag == "deconvolved" else f"maps at the common beam {tag}, that beam deconvolved"
        )
        out += _section(
            f"Power spectra, {split}",
            [(f"{split}: spectra at common beam {tag}", path)],
            f"Binned D_ℓ of the {maps}. Top: the theory (dashed) with its cosmic variance on the scored sky (grey "
            f"band: D_b √(2 / ((2ℓ + 1) Δℓ f_sky)), f_sky = {settings['fsky']:.3f}), the truth and each method's "
            f"{spread}. Bottom: the absolute mean spectrum of each residual (prediction − truth) against the truth's.",
        )
    for (tag, ee), (_, bb) in zip(figs.get((split, "ee_spectra"), []), figs.get((split, "bb_spectra"), [])):
        out += _section(
            f"EE and BB power spectra, {split}",
            [(f"{split}: EE spectra at common beam {tag}", ee), (f"{split}: BB spectra at common beam {tag}", bb)],
            "Spin-2 MASTER D_ℓ of E and B (the E ↔ B mixing of the cut sky decoupled) of the methods that predict Q "
            f"and U (the common beam, {tag}, deconvolved), as for TT above: theory (each simulation's EE and BB "
            "through the same estimator) with its cosmic variance, truth, predictions, and the absolute mean "
            "residual spectra.",
        )
    for tag, path in figs.get((split, "transfer"), []):
        out += _section(
            f"Transfer functions, {split}",
            [(f"{split}: transfer function at common beam {tag}", path)],
            "T_b = ⟨D_b(prediction × truth)⟩ / ⟨D_b(truth)⟩ over the simulations: 1 means the CMB passes at full "
            "amplitude, below 1 power is lost.",
        )
    for tag, path in figs.get((split, "correlation"), []):
        out += _section(
            f"What no filter recovers: correlation with the true CMB, {split}",
            [(f"{split}: correlation with the truth at common beam {tag}", path)],
            "1 − ρ_b², with ρ_b = Σ D_b(prediction × truth) / √(Σ D_b(prediction) Σ D_b(truth)) summed over the "
            "simulations, per field (E and B for the methods predicting Q and U): the share of the true CMB's power "
            "in bin b that no linear filter of the map recovers (0: the truth up to a filter; 1: nothing of it, as "
            "the null map). No filter constant within a bin changes it, so a map shrunk towards zero does not gain "
            "here; the filter-equalised RMSE of the leaderboard sums D_b(truth)(1 − ρ_b²) (docs/cmb_evaluation.md).",
        )
    if beam_note:
        out += [
            "",
            f"The spectra at the other common beams differ from those drawn by at most (over bins, {split}):",
            "",
            beam_note,
        ]
    for _, path in figs.get((split, "calibration"), []):
        out += _section(
            f"Calibration of the per-pixel errors, {split}",
            [(f"{split}: coverage of the error maps", path)],
            "Empirical coverage (fraction of scored pixels with abs(prediction − truth) ≤ k σ, mean and standard "
            "deviation across simulations) against the nominal Gaussian coverage erf(k/√2), k = "
            f"{', '.join(f'{k:g}' for k in settings.get('coverage_levels', COVERAGE_LEVELS))}, for T and for Q "
            "and U pooled, each method at its own output beam and band limit. On the diagonal the errors are "
            "calibrated; below it they are too small.",
        )
    for tag, path in figs.get((split, "maps"), []):
        out += _section(
            f"Maps, {split}, common beam {tag}",
            [(f"{split}: maps at common beam {tag}", path)],
            "The first simulation, monopole and dipole removed; grey pixels are not scored. Truth and predictions "
            "share one colour scale and the residuals of all methods another (the 99th percentile of abs(value) on "
            "the scored pixels, rounded up), so the methods compare by eye.",
        )
    return out


def _report_text(
    summaries: Mapping[str, dict], table: str, figs: dict, beam_notes: Mapping[str, str], *, spread: bool = False
) -> str:
    first = next(iter(summaries.values()))
    s = first["settings"]
    mask = (
        f"user mask `{s['mask_path']}`"
        if s["mask_path"]
        else (
            f"foreground-threshold mask keeping the faintest {s['fsky_requested']:.0%} of the sky "
            f"(mean {_mask_text(s.get('mask_source', 'foreground_I_map.fits'))} of each split's simulations, "
            f"smoothed {s['mask_smooth_deg']:g}°)"
        )
    )
    beams = ", ".join(
        f"{m}: {'none' if i['output_beam_arcmin'] is None else str(i['output_beam_arcmin']) + '′'}"
        for m, i in first["methods"].items()
    )
    splits = ", ".join(
        f"**{label}** ({len(v['settings']['sims'])} simulations, foreground model {_model_text(v['settings'])}, "
        f"scored sky fraction {v['settings']['fsky']:.3f})"
        for label, v in summaries.items()
    )
    roots = list(
        dict.fromkeys(f"`{v['settings']['root']}` (nside {v['settings']['nside']})" for v in summaries.values())
    )
    fixed = [label for label, v in summaries.items() if is_fixed_sky(v["settings"].get("foreground_model"))]
    out = [
        "# CMB component separation: report",
        "",
        f"Dataset{'s' if len(roots) > 1 else ''} {', '.join(roots)}; splits {splits}.",
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
        "theory is each simulation's spectrum through the same estimator "
        f"({'; '.join(s.get('theory') or ['theory_cls.npy'])}).",
        "- Polarisation (methods predicting I, Q, U): RMSE of Q and U, and of the E-part and B-part of the Q, U "
        "residual (no monopole/dipole removal), the E → B leakage ε, and spin-2 MASTER EE and BB spectra (E ↔ B "
        "mixing of the cut sky decoupled). The leaderboard has a T, an E and a B row per method.",
        "- Filter-equalised RMSE per field: each map's RMSE after the best isotropic linear filter per multipole bin "
        "(fitted on the split, alike for every method), from the spectra: a map shrunk towards zero scores no better "
        "for it, so this column, not the RMSE, says which method separates more of the CMB in a noisy field.",
        "- Coverage (methods with a per-pixel error map): the fraction of scored pixels with abs(prediction − truth) "
        "≤ 1σ and 2σ (nominal 68.3 % and 95.4 %), at each method's own output beam and band limit, T and Q, U "
        "pooled, on the analysis mask and on the full sky.",
        "",
        "## Leaderboard",
        "",
        table,
    ]
    if fixed:
        out[4:4] = [
            f"PySM gives one fixed sky: every simulation of {', '.join(fixed)} has the same foregrounds (PySM's "
            "real-sky templates); only the CMB (and its cosmology, when drawn) and the noise change, so their spread "
            "across simulations does not sample foreground morphologies.",
            "",
        ]
    for split, v in summaries.items():
        out += _figure_sections(split, v["settings"], figs, beam_notes.get(split, ""))
    files = f", `{SPREAD_CSV}`" if spread else ""
    out += ["", f"Files: `leaderboard.md`, `leaderboard.csv`, `leaderboard.json`{files}, `figures/<split>/`.", ""]
    return "\n".join(out)
