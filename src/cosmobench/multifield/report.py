"""``out_dir/report.md`` of ``cosmobench multifield run``: the headline numbers of every stage, with linked figures."""

from __future__ import annotations

from pathlib import Path

from ..core.io import write_text

__all__ = ["write_report"]

_TEST_KEYS = ("r2", "rel_err", "chi2", "coverage68", "coverage95", "coverage68_cal", "coverage95_cal")


def _fmt(value) -> str:
    return f"{value:.4g}" if isinstance(value, (int, float)) else "—"


def _figure(out_dir: Path, folder: str | Path, name: str) -> list[str]:
    path = Path(folder) / name
    if not path.is_file():
        return []
    try:
        rel = path.resolve().relative_to(out_dir.resolve())
    except ValueError:
        rel = path.resolve()
    return [f"![{name}]({rel.as_posix()})", ""]


def _test_section(out_dir: Path, res: dict) -> list[str]:
    lines = [
        f"## Test: trained on {res['trained_on']}, tested on {res['tested_on']} ({res['split']} split, "
        f"tta={res['tta']})",
        "",
        f"{res['metrics']['n_maps']} maps of {res['metrics']['n_sims']} simulations; fields "
        f"{', '.join(res['fields'])}.",
        "",
    ]
    params = [k for k, v in res["metrics"].items() if isinstance(v, dict)]
    keys = [k for k in _TEST_KEYS if k in res["metrics"][params[0]]]
    lines += ["| parameter | " + " | ".join(keys) + " |", "|---" * (len(keys) + 1) + "|"]
    for p in params:
        lines.append(f"| {p} | " + " | ".join(_fmt(res["metrics"][p][k]) for k in keys) + " |")
    return [*lines, "", *_figure(out_dir, res["folder"], "predictions.png")]


def write_report(out_dir: Path | str, results: dict[str, dict], seconds: dict[str, float]) -> Path:
    """Write ``out_dir/report.md`` from the stages' summaries (``results[stage]``) and their wall times.

    Returns
    -------
    Path
        The report.
    """
    out_dir = Path(out_dir)
    lines = ["# Multifield inference report", "", "| stage | seconds | skipped (already done) |", "|---|---|---|"]
    lines += [f"| {k} | {seconds[k]} | {results[k].get('skipped')} |" for k in results]
    lines.append("")
    if "simulate" in results:
        sim = results["simulate"]
        suites = ", ".join(f"{d['suite']} ({d['n_sims']} sims, {d['npix']}²)" for d in sim["suites"])
        lines += ["## Data", "", f"Simulated suites: {suites}; folder `{sim['data_dir']}`.", ""]
    if "train" in results:
        t = results["train"]
        lines += [
            "## Training",
            "",
            f"o3_err, {t['n_parameters']} parameters, {t['epochs']} epochs, best validation loss "
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
        lines += _test_section(out_dir, results["test"])
    if "robustness" in results:
        rob = results["robustness"]
        lines += ["## Robustness across suites", "", "```", rob["table"].rstrip(), "```", ""]
        lines += _figure(out_dir, rob["folder"], f"robustness_{'_'.join(rob['fields'])}.png")
    if "fields" in results:
        fld = results["fields"]
        lines += ["## Field importance", "", f"Information: {fld['definition']}.", ""]
        lines += ["| fields | fraction |", "|---|---|"]
        lines += [f"| {k} | {_fmt(v)} |" for k, v in fld["fractions"].items()]
        lines += ["", f"Smallest sets: {fld['smallest']}", ""]
        for png in sorted(Path(fld["folder"]).glob("*.png")):
            lines += _figure(out_dir, fld["folder"], png.name)
    if "calibrate" in results:
        cal = results["calibrate"]
        lines += ["## Calibration (test split)", "", "| posterior | parameter | coverage 68 % | coverage 95 % |"]
        lines.append("|---|---|---|---|")
        for kind in ("gaussian", "gaussian_recalibrated", "npe"):
            for p in cal["params"] if kind in cal else ():
                c = cal[kind][p]
                lines.append(f"| {kind} | {p} | {_fmt(c['coverage68_per_map'])} | {_fmt(c['coverage95_per_map'])} |")
        lines += ["", *_figure(out_dir, cal["folder"], "calibration.png")]
    path = out_dir / "report.md"
    write_text(path, "\n".join(lines) + "\n")
    return path
