"""Report figures: truth / prediction / residual maps, binned spectra with residuals and theory, transfer functions.

Every function reads plain arrays (as saved by :func:`cosmobench.cmb.evaluate.evaluate`), writes one PNG
atomically and returns its path. matplotlib (Agg backend) is imported inside the functions.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np

from cosmobench.core.io import atomic_path

__all__ = ["plot_maps", "plot_spectra", "plot_transfer", "transfer_function"]


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: Path) -> Path:
    path = Path(path)
    with atomic_path(path) as tmp, open(tmp, "wb") as fh:
        fig.savefig(fh, format="png", dpi=110, bbox_inches="tight")
    _pyplot().close(fig)
    return path


def plot_maps(truth: np.ndarray, pred: np.ndarray, mask: np.ndarray, path: Path, *, title: str = "") -> Path:
    """Mollweide views of the truth, the prediction and their difference (masked pixels grey).

    Parameters
    ----------
    truth, pred : ndarray, shape (npix,), uK_CMB
        Maps at the common beam, monopole and dipole removed.
    mask : ndarray, shape (npix,)
        Analysis mask (1 = scored).
    path : path
        Output PNG.
    title : str
        Figure title (method, beam, simulation).
    """
    import healpy as hp

    plt = _pyplot()
    keep = np.asarray(mask) > 0.5
    lim = float(np.percentile(np.abs(truth[keep]), 99)) or 1.0
    resid = pred - truth
    rlim = float(np.percentile(np.abs(resid[keep]), 99)) or 1.0
    fig = plt.figure(figsize=(15, 3.8))
    panels = [("truth", truth, lim), ("prediction", pred, lim), ("prediction - truth", resid, rlim)]
    for k, (name, m, vmax) in enumerate(panels):
        shown = np.where(keep, m, hp.UNSEEN)
        hp.mollview(
            shown,
            fig=fig.number,
            sub=(1, 3, k + 1),
            title=name,
            unit="uK_CMB",
            min=-vmax,
            max=vmax,
            cmap="RdBu_r",
            badcolor="0.8",
            cbar=True,
            notext=True,
            xsize=600,
        )
    if title:
        fig.suptitle(title)
    return _save(fig, path)


def plot_spectra(spectra: Mapping[str, Mapping[str, np.ndarray]], path: Path, *, title: str = "") -> Path:
    """Binned D_ell of truth, theory and each method's prediction (top) and of each residual (bottom).

    Parameters
    ----------
    spectra : mapping method -> mapping
        Arrays from ``spectra.npz``: ``ell_eff`` (nbins,), and (nsim, nbins) ``truth``, ``pred``, ``resid``,
        ``theory``, in uK^2 (D_ell, common beam deconvolved).
    path : path
        Output PNG.
    title : str
        Figure title.
    """
    plt = _pyplot()
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(8, 7), sharex=True, gridspec_kw={"height_ratios": [3, 2]})
    first = next(iter(spectra.values()))
    ell = first["ell_eff"]
    top.plot(ell, first["theory"].mean(0), "k--", lw=1, label="theory (MASTER expectation)")
    top.plot(ell, first["truth"].mean(0), "k-", lw=1.5, label="truth")
    for name, s in spectra.items():
        n = s["pred"].shape[0]
        err = s["pred"].std(0, ddof=1) if n > 1 else None
        top.errorbar(ell, s["pred"].mean(0), yerr=err, fmt="o", ms=3, capsize=2, label=f"{name} prediction")
        bottom.semilogy(ell, np.abs(s["resid"].mean(0)), "o-", ms=3, label=f"{name} residual")
    bottom.semilogy(ell, np.abs(first["truth"].mean(0)), "k-", lw=1, alpha=0.4, label="truth")
    top.set_ylabel(r"$D_\ell$ [$\mu$K$^2$]")
    bottom.set_ylabel(r"$|D_\ell|$ of residual [$\mu$K$^2$]")
    bottom.set_xlabel(r"$\ell$")
    top.legend(fontsize=8)
    bottom.legend(fontsize=8)
    if title:
        top.set_title(title)
    return _save(fig, path)


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
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(8, 4))
    for name, s in spectra.items():
        ax.plot(s["ell_eff"], transfer_function(s), "o-", ms=3, label=name)
    ax.axhline(1.0, color="k", lw=0.8)
    ax.set_xlabel(r"$\ell$")
    ax.set_ylabel(r"$T_\ell = \langle D_\ell^{p\times t}\rangle / \langle D_\ell^{t}\rangle$")
    ax.legend(fontsize=8)
    if title:
        ax.set_title(title)
    return _save(fig, path)


def transfer_function(s: Mapping[str, np.ndarray]) -> np.ndarray:
    """<cross> / <truth> over simulations, per bin."""
    return s["cross"].mean(0) / s["truth"].mean(0)
