"""A separation score no linear filter can game: the RMSE of a map after the best isotropic filter per bin.

A map shrunk towards zero (a Wiener filter) lowers its RMSE on a noise-dominated field without separating anything:
at bench128 the null map beats NILC in E and B. The score here gives every method the same post-hoc isotropic
linear filter, the one that minimises its residual power in each multipole bin, fitted on the scored split itself
from the binned spectra the evaluation already measures (an oracle every method gets alike). Per bin b, with
S_b, P_b, C_b the truth's, the prediction's and their cross D_b summed over the split's simulations,

    min_w sum_sims D_b(w p - t) = S_b - C_b^2 / P_b = S_b (1 - rho_b^2),

where rho_b is the prediction's correlation with the truth. Any isotropic filter constant within a bin leaves rho_b,
hence the score, unchanged: NILC and NILC followed by a linear filter (``nilc_wiener``) score the same, and a method
scores better only by carrying more information about the CMB per mode. The residual power is turned into an RMS in
uK_CMB at a common beam as for a full-sky map: var = sum_l (2l+1)/(4 pi) C_l B_l^2, per Q/U component for E and B
(half the power, the convention of ``rmse_e`` and ``rmse_b``), with C_l = 2 pi D_b / (l (l+1)) within each bin.
"""

from __future__ import annotations

import numpy as np

from ..sky import sht

__all__ = ["filtered_rmse", "filtered_scores", "correlation", "FILTERED_COLUMNS"]

#: per field, the score's column name and the keys of its spectra in ``spectra.npz`` (truth, prediction, cross)
FILTERED_COLUMNS = {
    "rmse_filtered_t": ("truth", "pred", "cross"),
    "rmse_filtered_e": ("truth_ee", "pred_ee", "cross_ee"),
    "rmse_filtered_b": ("truth_bb", "pred_bb", "cross_bb"),
}


def _bin_weights(edges: np.ndarray, fwhm_arcmin: float | None, spin: int) -> np.ndarray:
    """Pixel variance per unit D_b in each bin, (nbins,): sum over the bin of (2l+1)/(4 pi) 2 pi/(l(l+1)) B_l^2."""
    edges = np.asarray(edges, dtype=int)
    ell = np.arange(edges[-1], dtype=float)
    beam2 = sht.gauss_beam(fwhm_arcmin or 0.0, int(edges[-1]) - 1) ** 2
    per_ell = np.zeros_like(ell)
    pos = ell > 0
    per_ell[pos] = (2 * ell[pos] + 1) / (2 * ell[pos] * (ell[pos] + 1)) * beam2[pos]
    per_ell /= 2.0 if spin == 2 else 1.0
    return np.add.reduceat(per_ell, edges[:-1])[: len(edges) - 1]


def correlation(truth: np.ndarray, pred: np.ndarray, cross: np.ndarray) -> np.ndarray:
    """Correlation of prediction and truth per bin, pooled over simulations: sum C_b / sqrt(sum P_b sum S_b).

    Parameters
    ----------
    truth, pred, cross : ndarray, shape (nsims, nbins) or (nbins,)
        Binned D_b (uK_CMB^2) of the truth, the prediction and their cross spectrum.

    Returns
    -------
    ndarray, shape (nbins,)
        rho_b (no unit; 1: the truth up to a filter, 0: nothing of it, e.g. the null map); clipped to [-1, 1], which
        decoupled (MASTER) spectra can leave by noise.
    """
    s, p, c = (np.atleast_2d(a).sum(0) for a in (truth, pred, cross))
    norm = np.sqrt(np.clip(p, 0.0, None) * np.clip(s, 0.0, None))
    rho = np.divide(c, norm, out=np.zeros_like(c, dtype=np.float64), where=norm > 0)
    return np.clip(rho, -1.0, 1.0)


def _score(truth: np.ndarray, pred: np.ndarray, cross: np.ndarray, weights: np.ndarray) -> float:
    # the best filter per bin leaves D^t (1 - rho^2); a decoupled truth spectrum below 0 (noise, few maps) counts 0
    resid = np.clip(truth.mean(0), 0.0, None) * (1.0 - correlation(truth, pred, cross) ** 2)
    return float(np.sqrt(np.sum(weights * resid)))


def filtered_rmse(
    truth: np.ndarray,
    pred: np.ndarray,
    cross: np.ndarray,
    edges: np.ndarray,
    fwhm_arcmin: float | None,
    *,
    spin: int = 0,
) -> tuple[float, float | None]:
    """RMSE of a map after the best isotropic linear filter per multipole bin, and its jackknife standard error.

    Parameters
    ----------
    truth, pred, cross : ndarray, shape (nsims, nbins)
        Binned D_b (uK_CMB^2, beam deconvolved) of the truth, the prediction and their cross spectrum, one row per
        simulation of the split.
    edges : ndarray, shape (nbins + 1,)
        Bin edges: bin b holds multipoles edges[b] <= l < edges[b + 1].
    fwhm_arcmin : float or None
        Common Gaussian beam of the score (None: no beam).
    spin : {0, 2}
        0 for T; 2 for E or B (the RMS per Q/U component: half the power).

    Returns
    -------
    rmse : float
        uK_CMB.
    se : float or None
        Leave-one-simulation-out jackknife standard error (None with one simulation).
    """
    truth, pred, cross = (np.atleast_2d(np.asarray(a, dtype=np.float64)) for a in (truth, pred, cross))
    if not truth.shape == pred.shape == cross.shape or truth.shape[1] != len(edges) - 1:
        raise ValueError(
            f"spectra of shapes {truth.shape}, {pred.shape}, {cross.shape} do not match {len(edges) - 1} bins"
        )
    weights = _bin_weights(edges, fwhm_arcmin, spin)
    value = _score(truth, pred, cross, weights)
    n = truth.shape[0]
    if n < 2:
        return value, None
    keep = ~np.eye(n, dtype=bool)
    loo = np.array([_score(truth[k], pred[k], cross[k], weights) for k in keep])
    return value, float(np.sqrt((n - 1) / n * np.sum((loo - loo.mean()) ** 2)))


def filtered_scores(spectra: dict, fwhm_arcmin: float | None) -> dict[str, dict]:
    """The filtered RMSE of every field a method's ``spectra.npz`` holds, as summary statistics.

    Parameters
    ----------
    spectra : mapping
        The arrays of ``<method>/<beam>/spectra.npz`` (``edges`` and per-simulation D_b ``truth``, ``pred``,
        ``cross`` and, for a polarised method, the same with ``_ee`` and ``_bb``).
    fwhm_arcmin : float or None
        The common beam (None: deconvolved).

    Returns
    -------
    dict
        For each column of :data:`FILTERED_COLUMNS`: ``mean`` (the score, uK_CMB), ``std`` (None: one value per
        split), ``se`` (jackknife) and ``n`` (simulations); the mean is None for a field the method does not predict.
    """
    out = {}
    for column, keys in FILTERED_COLUMNS.items():
        if not all(k in spectra for k in keys):
            out[column] = {"mean": None, "std": None, "se": None, "n": 0}
            continue
        truth, pred, cross = (spectra[k] for k in keys)
        spin = 0 if column.endswith("_t") else 2
        value, se = filtered_rmse(truth, pred, cross, spectra["edges"], fwhm_arcmin, spin=spin)
        out[column] = {"mean": value, "std": None, "se": se, "n": int(np.atleast_2d(truth).shape[0])}
    return out
