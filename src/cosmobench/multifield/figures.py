"""Figures of the multifield task (pyplot-free figures from :mod:`cosmobench.plots`)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..plots import save, subplots
from .cmd import PARAM_NAMES

__all__ = ["predictions_figure", "coverage_figure", "fields_figure", "robustness_figure", "posterior_figure"]


def predictions_figure(preds: dict[str, dict], path: Path | str, params=(0, 1)) -> None:
    """True versus predicted parameters, a row per method and a column per parameter.

    Per-simulation means of mu against the true value, with the mean over the simulation's maps of the (calibrated,
    when the caller recalibrated them) 1-sigma error bars; panels of a parameter a method does not infer are blank.

    Parameters
    ----------
    preds : dict
        method -> predictions (``theta``, ``mu``, ``sigma`` (n, 6), ``sim_index`` (n,)), in physical units.
    """
    fig, axes = subplots(len(preds), len(params), figsize=(4 * len(params), 3.6 * len(preds)), squeeze=False)
    for row, (method, pred) in zip(axes, preds.items()):
        _, inverse = np.unique(pred["sim_index"], return_inverse=True)
        counts = np.bincount(inverse)
        for ax, j in zip(row, params):
            t, m, s = (np.bincount(inverse, pred[k][:, j]) / counts for k in ("theta", "mu", "sigma"))
            if not np.isfinite(m).all():
                ax.axis("off")
                continue
            ax.errorbar(t, m, yerr=s, fmt=".", ms=4, alpha=0.6, elinewidth=0.8)
            lim = [min(t.min(), m.min()), max(t.max(), m.max())]
            ax.plot(lim, lim, "k--", lw=1)
            ax.set_xlabel(f"true {PARAM_NAMES[j]}")
            ax.set_ylabel(f"predicted {PARAM_NAMES[j]} (per-simulation mean)")
            ax.set_title(method, fontsize=9)
    fig.tight_layout()
    save(fig, Path(path), dpi=120)


def coverage_figure(curves: dict[str, dict], path: Path | str, names=None) -> None:
    """Empirical against nominal coverage (per simulation, with bootstrap band) and TARP ECP curves.

    ``curves`` maps a label (e.g. "moment network", "NPE") to ``{"coverage": coverage_curve(...) output,
    "tarp": tarp(...) output, "params": [...]}``.
    """
    fig, (ax1, ax2) = subplots(1, 2, figsize=(9, 4))
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
    save(fig, Path(path), dpi=120)


def fields_figure(result: dict, path: Path | str) -> None:
    """Fraction of the full set's information for every evaluated subset, with the 90 % and 95 % lines."""
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
    fig, ax = subplots(figsize=(max(5, 0.6 * len(subsets) + 2), 4))
    x = np.arange(len(subsets))
    ax.bar(x, frac, yerr=np.maximum(err, 0), capsize=2, color="tab:blue", alpha=0.8)
    for t, style in ((0.9, ":"), (0.95, "--")):
        ax.axhline(t, color="k", ls=style, lw=1, label=f"{round(100 * t)} %")
    ax.set_xticks(x, ["+".join(e["fields"]) for e in subsets], rotation=60, ha="right", fontsize=8)
    ax.set_ylabel(f"information / full set ({split} split)")
    ax.set_title(f"{result['suite']}: {', '.join(result['params'])}")
    ax.legend()
    save(fig, Path(path), dpi=120)


def robustness_figure(result: dict, path: Path | str) -> None:
    """Robustness matrices (rows: trained on, columns: tested on) of the relative error and of the recalibrated
    68 % and 95 % coverage (raw when not recalibrated), a row of panels per method and parameter. Every error panel
    shares one colour scale (0 to the largest error); every coverage panel is coloured by coverage minus nominal on
    one diverging scale (-0.5 to +0.5: red over-confident, blue under-confident, white calibrated) and labelled
    with the coverage itself.

    Parameters
    ----------
    result : dict
        :func:`cosmobench.multifield.robustness.cross_suite`'s result (``matrix[method][a][b][param]``).
    """
    suites, matrix = result["suites"], result["matrix"]
    panels = [(m, p) for m in matrix for p in result["params"] if p in matrix[m][suites[0]][suites[0]]]
    first = matrix["cnn"][suites[0]][suites[0]][result["params"][0]]
    cov = [k for k in ("coverage68_cal", "coverage95_cal") if k in first] or ["coverage68", "coverage95"]
    keys = ["rel_err", *cov]

    def grid(m, p, key):
        return np.array([[matrix[m][a][b][p][key] for b in suites] for a in suites])

    err_max = max(grid(m, p, "rel_err").max() for m, p in panels)
    fig, axes = subplots(len(panels), len(keys), figsize=(3.6 * len(keys), 3.1 * len(panels)), squeeze=False)
    for row, (m, p) in zip(axes, panels):
        for ax, key in zip(row, keys):
            values = grid(m, p, key)
            if key == "rel_err":
                im = ax.imshow(values, vmin=0, vmax=err_max, cmap="magma_r")
            else:
                nominal = 0.68 if key.startswith("coverage68") else 0.95
                im = ax.imshow(values - nominal, vmin=-0.5, vmax=0.5, cmap="RdBu")
            for i in range(len(suites)):
                for j in range(len(suites)):
                    ax.text(
                        j,
                        i,
                        f"{values[i, j]:.3f}",
                        ha="center",
                        va="center",
                        fontsize=8,
                        color="k",
                        bbox={"fc": "w", "alpha": 0.6, "lw": 0},
                    )
            ax.set_xticks(range(len(suites)), suites, rotation=30, ha="right", fontsize=7)
            ax.set_yticks(range(len(suites)), suites, fontsize=7)
            ax.set_title(f"{m}: {p} {key}", fontsize=8)
            label = "relative error" if key == "rel_err" else "coverage - nominal"
            fig.colorbar(im, ax=ax, fraction=0.046, label=label)
    for ax in axes[-1]:
        ax.set_xlabel("tested on")
    for ax in axes[:, 0]:
        ax.set_ylabel("trained on")
    fig.tight_layout()
    save(fig, Path(path), dpi=120)


def posterior_figure(
    samples: np.ndarray,
    truth: np.ndarray,
    names,
    path: Path | str,
    *,
    gaussians: dict[str, tuple[np.ndarray, np.ndarray]] | None = None,
    title: str = "",
) -> None:
    """Corner plot of one posterior: 1-D histograms on the diagonal, 2-D scatter below, the truth as lines.

    Parameters
    ----------
    samples : ndarray, shape (n_samples, d)
        Posterior samples (physical units).
    truth : ndarray, shape (d,)
    names : sequence of str
    gaussians : dict, optional
        label -> (mean (d,), std (d,)): Gaussian posteriors drawn on the diagonal (density) and as 1-sigma boxes.
    """
    from matplotlib.patches import Rectangle

    d = samples.shape[1]
    lo = np.minimum(np.quantile(samples, 0.002, axis=0), truth)
    hi = np.maximum(np.quantile(samples, 0.998, axis=0), truth)
    lo, hi = lo - 0.1 * (hi - lo), hi + 0.1 * (hi - lo)  # the samples' range: a wide Gaussian does not zoom out
    fig, axes = subplots(d, d, figsize=(2.8 * d + 0.5, 2.8 * d), squeeze=False)
    colours = ["tab:orange", "tab:green", "tab:red"]
    for i in range(d):
        for j in range(d):
            ax = axes[i, j]
            if j > i:
                ax.axis("off")
                continue
            if i == j:
                ax.hist(
                    samples[:, i], bins=40, range=(lo[i], hi[i]), density=True, color="tab:blue", alpha=0.5, label="NPE"
                )
                x = np.linspace(lo[i], hi[i], 200)
                for c, (label, (mu, sd)) in zip(colours, (gaussians or {}).items()):
                    ax.plot(
                        x, np.exp(-0.5 * ((x - mu[i]) / sd[i]) ** 2) / (sd[i] * np.sqrt(2 * np.pi)), c=c, label=label
                    )
                ax.axvline(truth[i], color="k", lw=1, label="truth")
                ax.set_yticks([])
                ax.set_xlim(lo[i], hi[i])
            else:
                ax.scatter(samples[:, j], samples[:, i], s=2, alpha=0.3, color="tab:blue")
                for c, (mu, sd) in zip(colours, (gaussians or {}).values()):
                    ax.add_patch(
                        Rectangle((mu[j] - sd[j], mu[i] - sd[i]), 2 * sd[j], 2 * sd[i], fill=False, ec=c, lw=1.2)
                    )
                ax.axvline(truth[j], color="k", lw=1)
                ax.axhline(truth[i], color="k", lw=1)
                ax.set_ylabel(names[i])
                ax.set_xlim(lo[j], hi[j])
                ax.set_ylim(lo[i], hi[i])
            ax.set_xlabel(names[j])
    axes[0, 0].legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.05, 1))
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    save(fig, Path(path), dpi=120)
