"""Report figures: truth / prediction / residual maps, binned spectra with residuals and theory, transfer functions,
correlations with the truth, and the calibration of per-pixel errors.

Every function reads plain arrays (as saved by :func:`cosmobench.cmb.evaluate.evaluate`), writes one PNG
atomically and returns its path (figures from :mod:`cosmobench.plots`: no pyplot, no global backend).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from ..plots import colour_limit, mollweide, save, subplots
from .filtered import correlation

__all__ = ["plot_maps", "plot_spectra", "plot_transfer", "plot_correlation", "plot_calibration", "transfer_function"]


def plot_maps(examples: Mapping[str, Mapping[str, np.ndarray]], path: Path, *, title: str = "") -> Path:
    """One simulation's truth and the analysis mask (top row), then each method's prediction and residual.

    Truth and predictions share one colour scale; the residuals of **all methods** share another, so the methods
    can be compared by eye. Both limits are round (:func:`colour_limit`: the 99th percentile of the scored
    pixels, rounded up); masked pixels are grey.

    Parameters
    ----------
    examples : mapping method -> mapping
        Arrays from ``example_maps.npz`` at one common beam, each of shape (npix,): ``truth``, ``pred`` (uK_CMB,
        monopole and dipole removed) and ``mask`` (1 = scored). The truth and mask of the first method are shown.
    path : path
        Output PNG.
    title : str
        Figure title (split, beam, simulation).
    """
    first = next(iter(examples.values()))
    keep = np.asarray(first["mask"]) > 0.5
    lim = colour_limit([first["truth"][keep]])
    rlim = colour_limit([(e["pred"] - e["truth"])[keep] for e in examples.values()])
    panels = [("truth", first["truth"], lim), ("analysis mask (green: scored, grey: masked)", np.ones(keep.size), None)]
    for name, e in examples.items():
        resid = e["pred"] - e["truth"]
        panels += [(f"{name}: prediction", e["pred"], lim), (f"{name}: prediction - truth", resid, rlim)]
    rows = len(panels) // 2
    fig, axes = subplots(rows, 2, figsize=(10, 3.4 * rows), squeeze=False)
    for ax, (name, m, vmax) in zip(axes.ravel(), panels):
        shown = np.where(keep, m, np.nan)
        if vmax:
            mollweide(ax, shown, vmin=-vmax, vmax=vmax, title=name, unit=r"$\mu$K$_{\rm CMB}$")
        else:
            mollweide(ax, shown, vmin=0.0, vmax=2.0, cmap="Greens", title=name)
    if title:
        fig.suptitle(title)
    return save(fig, path)


def plot_spectra(spectra: Mapping[str, Mapping[str, np.ndarray]], path: Path, *, fsky: float, title: str = "") -> Path:
    """Binned D_ell (TT, or EE or BB) of truth, theory and each method's prediction (top) and of each residual
    (bottom).

    Error bars are the standard deviation of the binned prediction spectrum across the simulations (the scatter
    a single simulation shows, cosmic variance included); the grey band is the cosmic variance of the theory in
    each bin on the scored sky, D_b sqrt(2 / ((2 ell_b + 1) Delta ell f_sky)).

    Parameters
    ----------
    spectra : mapping method -> mapping
        Arrays from ``spectra.npz``: ``edges`` (nbins+1,), ``ell_eff`` (nbins,), and (nsim, nbins) ``truth``,
        ``pred``, ``resid``, ``theory``, in uK^2 (D_ell, common beam deconvolved); for EE or BB, the file's
        ``truth_ee``, ... (``_bb``) arrays under those four names.
    path : path
        Output PNG.
    fsky : float
        Scored sky fraction, for the cosmic-variance band.
    title : str
        Figure title.
    """
    fig, (top, bottom) = subplots(2, 1, figsize=(8, 7), sharex=True, gridspec_kw={"height_ratios": [3, 2]})
    first = next(iter(spectra.values()))
    ell, theory, width = first["ell_eff"], first["theory"].mean(0), np.diff(first["edges"])
    sigma = theory * np.sqrt(2.0 / ((2 * ell + 1) * width * fsky))
    top.fill_between(ell, theory - sigma, theory + sigma, color="0.85", label="theory ± cosmic variance")
    top.plot(ell, theory, "k--", lw=1, label="theory (MASTER expectation)")
    top.plot(ell, first["truth"].mean(0), "k-", lw=1.5, label="truth (mean over simulations)")
    for k, (name, s) in enumerate(spectra.items()):
        n = s["pred"].shape[0]
        err = s["pred"].std(0, ddof=1) if n > 1 else None
        shift = (k - (len(spectra) - 1) / 2) * 0.1 * width / max(len(spectra) - 1, 1)  # side by side in the bin
        top.errorbar(ell + shift, s["pred"].mean(0), yerr=err, fmt="o", ms=3, capsize=2, label=f"{name} prediction")
        bottom.semilogy(ell, np.abs(s["resid"].mean(0)), "o-", ms=3, label=f"{name} residual")
    bottom.semilogy(ell, np.abs(first["truth"].mean(0)), "k-", lw=1, alpha=0.4, label="truth (for scale)")
    top.set_ylabel(r"$D_\ell = \ell(\ell+1)C_\ell/2\pi$ [$\mu$K$^2$]")
    bottom.set_ylabel(r"$|D_\ell|$ of the residual [$\mu$K$^2$]")
    bottom.set_xlabel(r"multipole $\ell$")
    top.legend(fontsize=8)
    bottom.legend(fontsize=8)
    if title:
        top.set_title(title)
    return save(fig, path)


def plot_transfer(spectra: Mapping[str, Mapping[str, np.ndarray]], path: Path, *, title: str = "") -> Path:
    """Transfer function T_ell = <D_ell(pred x truth)> / <D_ell(truth)> per method (1 = unbiased amplitude).

    Parameters
    ----------
    spectra : mapping method -> mapping
        Arrays from ``spectra.npz`` (``ell_eff``, ``cross``, ``truth``).
    path : path
        Output PNG.
    title : str
        Figure title.
    """
    fig, ax = subplots(figsize=(8, 4))
    for name, s in spectra.items():
        ax.plot(s["ell_eff"], transfer_function(s), "o-", ms=3, label=name)
    ax.axhline(1.0, color="k", lw=0.8)
    ax.set_xlabel(r"multipole $\ell$")
    ax.set_ylabel(r"$T_\ell = \langle D_\ell^{p\times t}\rangle / \langle D_\ell^{t}\rangle$ (no unit)")
    ax.legend(fontsize=8)
    if title:
        ax.set_title(title)
    return save(fig, path)


def plot_correlation(spectra: Mapping[str, Mapping[str, np.ndarray]], path: Path, *, title: str = "") -> Path:
    """The share of the truth's power a map cannot recover by any filter, 1 - rho_b^2, per bin and field.

    rho_b = sum D_b(pred x truth) / sqrt(sum D_b(pred) sum D_b(truth)) over the simulations
    (:func:`cosmobench.cmb.filtered.correlation`) is unchanged by any filter constant within a bin; 1 - rho_b^2 is
    the residual power left by the best such filter over the truth's power: 0 for the truth up to a filter, 1 for a
    map with nothing of it (the null map). The filter-equalised RMSE sums D_b(truth) (1 - rho_b^2). One panel per
    field: T, and E and B where a method predicts Q and U; logarithmic axis (floor 1e-6).

    Parameters
    ----------
    spectra : mapping method -> mapping
        Arrays from ``spectra.npz`` (``ell_eff``, ``truth``, ``pred``, ``cross``, and ``*_ee``, ``*_bb`` for the
        methods predicting Q and U).
    path : path
        Output PNG.
    title : str
        Figure title.
    """
    fields = [("T", "")] + [
        (f, f"_{f.lower() * 2}") for f in ("E", "B") if any(f"truth_{f.lower() * 2}" in s for s in spectra.values())
    ]
    fig, axes = subplots(1, len(fields), figsize=(4.5 * len(fields), 4), squeeze=False)
    for ax, (field, key) in zip(axes[0], fields):
        for name, s in spectra.items():
            if f"truth{key}" in s:
                rho = correlation(s[f"truth{key}"], s[f"pred{key}"], s[f"cross{key}"])
                ax.semilogy(s["ell_eff"], np.maximum(1.0 - rho**2, 1e-6), "o-", ms=3, label=name)
        ax.axhline(1.0, color="k", lw=0.8)
        ax.set_xlabel(r"multipole $\ell$")
        ax.set_title(field)
    axes[0][0].set_ylabel(r"$1-\rho_\ell^2$: truth power no filter recovers (fraction)")
    axes[0][0].legend(fontsize=8)
    if title:
        fig.suptitle(title)
    return save(fig, path)


def transfer_function(s: Mapping[str, np.ndarray]) -> np.ndarray:
    """<cross> / <truth> over simulations, per bin."""
    return s["cross"].mean(0) / s["truth"].mean(0)


def plot_calibration(
    levels: Sequence[float],
    curves: Mapping[str, Mapping[str, tuple[np.ndarray, np.ndarray]]],
    path: Path,
    *,
    title: str = "",
) -> Path:
    """Empirical against nominal coverage of each method's per-pixel error, one panel per field (T; Q and U).

    A point at error multiple k is the fraction of scored pixels with abs(prediction - truth) <= k sigma; the
    dashed curve is the fraction a Gaussian error of that sigma covers, erf(k / sqrt 2), with a grey band of
    +-0.05 around it. Points on the curve: a calibrated error; below it: overconfident (sigma too small); above
    it: underconfident.

    Parameters
    ----------
    levels : sequence of float
        The multiples k of sigma, shape (nlevel,).
    curves : mapping method -> mapping panel -> (mean, std)
        Per method and panel (e.g. ``"T"``, ``"Q and U"``), the coverage fraction at each level averaged over the
        simulations and its standard deviation across them, arrays of shape (nlevel,) (NaN: not measured).
    path : path
        Output PNG.
    title : str
        Figure title.
    """
    panels = list(dict.fromkeys(p for c in curves.values() for p in c))
    k = np.asarray(levels, dtype=float)
    fine = np.linspace(0.0, max(k.max(), 3.0), 200)
    nominal = np.array([math.erf(x / math.sqrt(2.0)) for x in fine])
    fig, axes = subplots(1, len(panels), figsize=(4.6 * len(panels), 4.2), squeeze=False, sharey=True)
    for ax, panel in zip(axes[0], panels):
        ax.fill_between(
            fine, np.maximum(nominal - 0.05, 0.0), np.minimum(nominal + 0.05, 1.0), color="0.88", label="nominal ± 0.05"
        )
        ax.plot(fine, nominal, "k--", lw=1, label=r"nominal, erf$(k/\sqrt{2})$")
        for j, (name, c) in enumerate(curves.items()):
            if panel in c and np.any(np.isfinite(c[panel][0])):
                mean, std = c[panel]
                shift = (j - (len(curves) - 1) / 2) * 0.03  # side by side at each k
                ax.errorbar(k + shift, mean, yerr=std, fmt="o", ms=4, capsize=2, label=name)
        ax.set(xlim=(0, fine[-1] + 0.1), ylim=(0, 1.02), title=panel)
        ax.set_xlabel(r"error multiple $k$: abs(prediction $-$ truth) $\leq k\sigma$")
        ax.legend(fontsize=8, loc="lower right")
    axes[0][0].set_ylabel("coverage (fraction of scored pixels)")
    if title:
        fig.suptitle(title)
    return save(fig, path)
