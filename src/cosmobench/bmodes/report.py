"""``report.md`` of a B-mode run: the denoising MSE table, the prior check and the r table, with linked figures."""

from __future__ import annotations

from pathlib import Path

from ..core.io import write_text

__all__ = ["write_report"]


def write_report(out_dir: Path | str, sample: dict, infer: dict, seconds: float) -> Path:
    """Write ``out_dir/report.md`` from the ``sample`` and ``infer`` stage summaries; return its path."""
    out_dir = Path(out_dir)
    lines = [
        "# B-mode diffusion run",
        "",
        f"Folder: `{out_dir}`; total {seconds:.0f} s. Fixed-r sets scored: `{sample['split']}`.",
        "",
        "## MSE of the denoised spectra (template units: D_l / D_l^{t,r=1}, i.e. r per multipole)",
        "",
        "| set | posterior mean | single draw | template projection max(r_ML, 0) | observed | "
        "observed - E[contamination] |",
        "|---|---|---|---|---|---|",
    ]
    for key, m in sample["results"].items():
        columns = ("posterior_mean", "single_draw", "template_projection", "observed")
        cells = [f"{m[f'mse_r_units_{c}']:.3g}" for c in (*columns, "observed_minus_expected_contamination")]
        lines.append(f"| {key} | " + " | ".join(cells) + " |")
    figures = sorted(p.relative_to(out_dir) for p in (out_dir / "samples" / sample["split"]).rglob("*.png"))
    if "prior_check" in sample:
        pc = sample["prior_check"]
        lines += [
            "",
            f"Prior check (model vs held-out clean spectra, standardised logs): max |mean z| = "
            f"{pc['max_abs_mean_z']:.2f}, max |log std ratio| = {pc['max_abs_log_std_ratio']:.3f} "
            f"(1 sigma {pc['std_ratio_tolerance_1sigma']:.3f}), max |corr diff| = "
            f"{pc['max_abs_corr_diff']:.3f} (1 sigma {pc['corr_diff_tolerance_1sigma']:.3f}).",
        ]
    lines += ["", "## r estimates", "", infer["table"], ""]
    split = sample["split"]
    lines += [
        f"![r estimates: exact Gaussian likelihood maximum and diffusion posterior median]"
        f"({Path('infer') / split / 'r_estimates.png'})",
        "",
        "## Figures",
        "",
    ]
    loss = Path("model") / "loss.png"
    if (out_dir / loss).exists():
        lines.append(f"- [training loss]({loss})")
    lines += [f"- [{p.parent} {p.stem}]({p})" for p in figures]
    path = out_dir / "report.md"
    write_text(path, "\n".join(lines) + "\n")
    return path
