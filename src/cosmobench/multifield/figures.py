"""Figures of the multifield task (matplotlib imported inside each function, Agg backend)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..core.io import atomic_path
from .cmd import PARAM_NAMES

__all__ = ["predictions_figure", "coverage_figure", "fields_figure", "robustness_figure"]


def _save(fig, path: Path) -> None:
    import matplotlib.pyplot as plt

    with atomic_path(path) as tmp:
        fig.savefig(tmp, format=Path(path).suffix.lstrip(".") or "png", dpi=120, bbox_inches="tight")
    plt.close(fig)


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def predictions_figure(pred: dict, path: Path | str, params=(0, 1)) -> None:
    """True versus predicted parameters with the predicted 1-sigma error bars, one panel per parameter."""
    plt = _plt()
    fig, axes = plt.subplots(1, len(params), figsize=(4.2 * len(params), 4))
    for ax, j in zip(np.atleast_1d(axes), params):
        t, m, s = pred["theta"][:, j], pred["mu"][:, j], pred["sigma"][:, j]
        ax.errorbar(t, m, yerr=s, fmt=".", ms=3, alpha=0.4, elinewidth=0.6)
        lim = [min(t.min(), m.min()), max(t.max(), m.max())]
        ax.plot(lim, lim, "k--", lw=1)
        ax.set_xlabel(f"true {PARAM_NAMES[j]}")
        ax.set_ylabel(f"predicted {PARAM_NAMES[j]}")
    _save(fig, Path(path))


def coverage_figure(curves: dict[str, dict], path: Path | str, names=None) -> None:
    """Empirical against nominal coverage (per simulation, with bootstrap band) and TARP ECP curves.

    ``curves`` maps a label (e.g. "moment network", "NPE") to ``{"coverage": coverage_curve(...) output,
    "tarp": tarp(...) output, "params": [...]}``.
    """
    plt = _plt()
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(9, 4))
    for label, c in curves.items():
        cov = c["coverage"]
        for j, name in enumerate(c["params"]):
            (line,) = ax1.plot(cov["levels"], cov["per_sim"][:, j], label=f"{label}: {name}")
            ax1.fill_between(cov["levels"], cov["ci"][0][:, j], cov["ci"][1][:, j], alpha=0.2, color=line.get_color())
        if c.get("tarp") is not None:
            ax2.plot(c["tarp"]["alpha"], c["tarp"]["ecp"], label=label)
    for ax in (ax1, ax2):
        ax.plot([0, 1], [0, 1], "k--", lw=1)
        ax.legend(fontsize=7)
    ax1.set_xlabel("nominal coverage")
    ax1.set_ylabel("empirical coverage (per simulation)")
    ax2.set_xlabel("credibility level alpha")
    ax2.set_ylabel("TARP expected coverage")
    _save(fig, Path(path))


def fields_figure(result: dict, path: Path | str) -> None:
    """Fraction of the full set's information for every evaluated subset, with the 90 % and 95 % lines."""
    plt = _plt()
    split = result["select_split"]
    subsets = result["subsets"]
    full = result["full"][split]["information"]
    frac = [e[split]["fraction"] for e in subsets]
    err = np.array(
        [
            [e[split]["fraction"] - e[split]["ci"][0] / full, e[split]["ci"][1] / full - e[split]["fraction"]]
            for e in subsets
        ]
    ).T
    fig, ax = plt.subplots(figsize=(max(5, 0.6 * len(subsets) + 2), 4))
    x = np.arange(len(subsets))
    ax.bar(x, frac, yerr=np.maximum(err, 0), capsize=2, color="tab:blue", alpha=0.8)
    for t, style in ((0.9, ":"), (0.95, "--")):
        ax.axhline(t, color="k", ls=style, lw=1, label=f"{round(100 * t)} %")
    ax.set_xticks(x, ["+".join(e["fields"]) for e in subsets], rotation=60, ha="right", fontsize=8)
    ax.set_ylabel(f"information / full set ({split} split)")
    ax.set_title(f"{result['suite']}: {', '.join(result['params'])}")
    ax.legend()
    _save(fig, Path(path))


def robustness_figure(result: dict, path: Path | str, key: str = "rel_err") -> None:
    """Heat maps of one metric (rows: trained on, columns: tested on), one panel per parameter."""
    plt = _plt()
    suites, params = result["suites"], result["params"]
    fig, axes = plt.subplots(1, len(params), figsize=(4.5 * len(params), 4))
    for ax, p in zip(np.atleast_1d(axes), params):
        m = np.array([[result["matrix"][a][b][p][key] for b in suites] for a in suites])
        im = ax.imshow(m, cmap="viridis")
        for i in range(len(suites)):
            for j in range(len(suites)):
                ax.text(j, i, f"{m[i, j]:.3f}", ha="center", va="center", color="w", fontsize=8)
        ax.set_xticks(range(len(suites)), suites, rotation=30, ha="right")
        ax.set_yticks(range(len(suites)), suites)
        ax.set_xlabel("tested on")
        ax.set_ylabel("trained on")
        ax.set_title(f"{p}: {key}")
        fig.colorbar(im, ax=ax, fraction=0.046)
    _save(fig, Path(path))
