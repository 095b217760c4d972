"""Figures of the B-mode task (matplotlib is imported inside each function, Agg backend)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..plots import save as _save
from ..plots import subplots as _subplots

__all__ = [
    "plot_loss",
    "plot_spectra",
    "plot_aggregate",
    "plot_trajectories",
    "plot_prior_check",
    "plot_r_estimates",
]


def _data_ylim(ax, *data: np.ndarray, room: float = 30.0) -> None:
    """Log-axis limits from the data themselves (truth, observation) widened ``room`` times each way: a diverged
    sampler's draws (up to 1e300) are cut at the edge instead of squashing the data or overflowing the ticker."""
    values = np.concatenate([np.ravel(d) for d in data])
    values = values[np.isfinite(values) & (values > 0)]
    if values.size:
        ax.set_ylim(values.min() / room, values.max() * room)


def plot_loss(history: dict, path: Path | str) -> Path:
    """Training and validation loss per epoch."""
    fig, ax = _subplots(figsize=(5, 3.5))
    ax.plot(history["epoch"], history["train_loss"], label="train")
    if np.any(np.isfinite(history.get("val_loss", [np.nan]))):
        ax.plot(history["epoch"], history["val_loss"], label="validation")
    ax.set(xlabel="epoch", ylabel="denoising score-matching loss (per sample)", yscale="log", title="training")
    ax.legend()
    return _save(fig, path)


def plot_spectra(
    ell: np.ndarray,
    dl_gt: np.ndarray,
    dl_obs: np.ndarray,
    draws: np.ndarray,
    template_dl: np.ndarray,
    path: Path | str,
    title: str = "",
    n_show: int = 4,
) -> Path:
    """Truth, observation and draws (median and 68 % band) for a few spectra, in template units D_l / D_l^{t,r=1}
    (the r that each multipole alone would indicate; log axis, so that the observed curve is shown whole).

    Parameters
    ----------
    ell : ndarray, shape (n_ell,)
    dl_gt, dl_obs : ndarray, shape (n, n_ell), uK^2
    draws : ndarray, shape (n, n_draws, n_ell), uK^2
    template_dl : ndarray, shape (n_ell,), uK^2
        Tensor D_l at r = 1.
    """
    k = min(n_show, len(dl_gt))
    fig, axes = _subplots(1, k, figsize=(3.6 * k, 3.2), squeeze=False)
    for i, ax in enumerate(axes[0]):
        u = draws[i] / template_dl
        lo, med, hi = np.percentile(u, [15.865, 50, 84.135], axis=0)
        ax.fill_between(ell, lo, hi, color="C2", alpha=0.3, label="draws 68%")
        ax.plot(ell, med, color="C2", label="draws median")
        ax.plot(ell, dl_gt[i] / template_dl, "k.-", label="truth")
        ax.plot(ell, dl_obs[i] / template_dl, color="C3", alpha=0.6, label="observed")
        ax.set(xlabel=r"$\ell$", title=f"{title} #{i}", yscale="log")  # log: the observed curve is never clipped
        _data_ylim(ax, dl_gt[i] / template_dl, dl_obs[i] / template_dl)
    axes[0][0].set_ylabel(r"$D_\ell / D_\ell^{t, r=1}$")
    axes[0][0].legend(fontsize=7)
    return _save(fig, path)


def plot_trajectories(
    times: np.ndarray,
    trajectory: np.ndarray,
    ell: np.ndarray,
    path: Path | str,
    ells_shown: tuple[int, ...] = (2, 5, 10, 20, 31),
    title: str = "",
) -> Path:
    """Reverse trajectories of a few multipoles (transformed units) against diffusion time.

    Parameters
    ----------
    times : ndarray, shape (n_keep,)
    trajectory : ndarray, shape (n_keep, n_traj, n_ell)
    """
    n_traj = trajectory.shape[1]
    fig, axes = _subplots(1, n_traj, figsize=(3.6 * n_traj, 3.2), squeeze=False, sharey=True)
    for j, ax in enumerate(axes[0]):
        for li in ells_shown:
            idx = np.flatnonzero(np.asarray(ell) == li)
            if idx.size:
                ax.plot(times, trajectory[:, j, idx[0]], label=rf"$\ell$={li}")
        ax.invert_xaxis()
        ax.set(xlabel="diffusion time t (reverse process: runs right to left)", title=f"{title} trajectory {j}")
    axes[0][0].set_ylabel(r"standardised log $D_\ell$")
    axes[0][0].legend(fontsize=7)
    return _save(fig, path)


def plot_prior_check(ell: np.ndarray, x_true: np.ndarray, x_model: np.ndarray, path: Path | str) -> Path:
    """Mean, standard deviation and correlation of held-out clean spectra vs model samples (transformed units)."""
    fig, axes = _subplots(1, 4, figsize=(15, 3.4))
    for x, lab in ((x_true, "held-out"), (x_model, "model")):
        axes[0].plot(ell, x.mean(0), label=lab)
        axes[1].plot(ell, x.std(0), label=lab)
    axes[0].set(xlabel=r"$\ell$", ylabel=r"mean of standardised log $D_\ell$", title="mean")
    axes[1].set(xlabel=r"$\ell$", ylabel=r"std of standardised log $D_\ell$", title="std")
    axes[0].legend()
    for ax, x, lab in ((axes[2], x_true, "held-out"), (axes[3], x_model, "model")):
        im = ax.imshow(np.corrcoef(x.T), vmin=-1, vmax=1, cmap="RdBu_r")
        ax.set(title=f"correlation ({lab})", xlabel="multipole index", ylabel="multipole index")
    fig.colorbar(im, ax=axes[3])
    return _save(fig, path)


ESTIMATOR_LABELS = {
    "exact": "exact Gaussian likelihood, maximum",
    "diffusion": "diffusion posterior, median",
}


def plot_r_estimates(results: dict, path: Path | str) -> Path:
    """Histograms of r estimates per true r (exact likelihood vs diffusion), with the truth and +-1 Fisher sigma.

    Parameters
    ----------
    results : dict
        r label -> {"r0": float, "sigma_fisher": float, estimator name -> ndarray of estimates}; the estimators
        are named in the legend (:data:`ESTIMATOR_LABELS`).
    """
    keys = list(results)
    fig, axes = _subplots(1, len(keys), figsize=(3.8 * len(keys), 3.2), squeeze=False)
    for ax, key in zip(axes[0], keys):
        res = results[key]
        shown = [np.asarray(res[n]) for n in ESTIMATOR_LABELS if n in res]
        lo, hi = np.percentile(np.concatenate(shown), [0.5, 99.5]) if shown else (res["r0"] - 1e-3, res["r0"] + 1e-3)
        bins = np.linspace(lo, hi, 31)
        for (name, label), color in zip(ESTIMATOR_LABELS.items(), ("C0", "C2")):
            if name in res:
                ax.hist(np.clip(res[name], lo, hi), bins=bins, histtype="step", color=color, label=label)
        ax.axvline(res["r0"], color="k", ls="--", label="true r")
        for sign, label in ((-1, r"true r $\pm \sigma_F$ (Fisher)"), (1, None)):
            ax.axvline(res["r0"] + sign * res["sigma_fisher"], color="0.6", ls=":", label=label)
        ax.set(xlabel=r"$\hat r$", ylabel="spectra per bin")
        ax.set_title(f"r0 = {res['r0']:g}, $\\sigma_F$ = {res['sigma_fisher']:.1e}")
    axes[0][0].legend(fontsize=7)
    return _save(fig, path)


def plot_aggregate(
    ell: np.ndarray,
    dl_gt: np.ndarray,
    dl_obs: np.ndarray,
    dl_mean: np.ndarray,
    template_dl: np.ndarray,
    path: Path | str,
    title: str = "",
) -> Path:
    """Mean over a whole set of the true, observed and denoised (posterior-mean) spectra, with their scatter.

    Parameters
    ----------
    ell : ndarray, shape (n_ell,)
    dl_gt, dl_obs, dl_mean : ndarray, shape (n, n_ell), uK^2
    template_dl : ndarray, shape (n_ell,), uK^2
        Tensor D_l at r = 1 (the y axis is in its units: r per multipole).
    """
    fig, ax = _subplots(figsize=(5.5, 3.8))
    for dl, label, color in ((dl_gt, "truth", "k"), (dl_mean, "posterior mean", "C2"), (dl_obs, "observed", "C3")):
        u = np.asarray(dl) / template_dl
        m, sd = u.mean(0), u.std(0)
        ax.plot(ell, m, color=color, label=f"{label} (mean over {len(u)})")
        ax.fill_between(ell, np.maximum(m - sd, 1e-12), m + sd, color=color, alpha=0.15)
    _data_ylim(ax, np.asarray(dl_gt) / template_dl, np.asarray(dl_obs) / template_dl)
    ax.set(
        xlabel=r"$\ell$",
        ylabel=r"$D_\ell / D_\ell^{t, r=1}$ (bands: $\pm 1$ std over spectra)",
        yscale="log",
        title=title,
    )
    ax.legend(fontsize=7)
    return _save(fig, path)
