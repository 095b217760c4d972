"""Pixel metrics shared by the tasks, and the summary of a metric over a test set.

All functions take a truth ``t`` and a prediction ``p`` of the same shape and an optional boolean or 0/1
``mask`` (1 = pixel used), and return a Python float. Definitions (CMB-ML's, except PSNR):

* MAE = mean |t - p|, RMSE = sqrt(mean (t - p)^2), in the maps' unit;
* NRMSE = ||t - p||_2 / ||t||_2 (scikit-image's "euclidean" normalisation), dimensionless;
* PSNR = 10 log10(R^2 / MSE) dB with the data range R = max t - min t **of the truth only**. CMB-ML took
  R = max(max t, max p) - min(min t, min p), which grows with the prediction's own noise and so rewards
  noisier maps.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

__all__ = ["mae", "mse", "rmse", "nrmse", "psnr", "pixel_metrics", "summarize", "PIXEL_METRICS"]


def _pair(truth: np.ndarray, pred: np.ndarray, mask: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    t = np.asarray(truth, dtype=np.float64)
    p = np.asarray(pred, dtype=np.float64)
    if t.shape != p.shape:
        raise ValueError(f"truth and prediction shapes differ: {t.shape} vs {p.shape}")
    if mask is not None:
        keep = np.asarray(mask) > 0
        if keep.shape != t.shape:
            raise ValueError(f"mask shape {keep.shape} differs from the maps' {t.shape}")
        t, p = t[keep], p[keep]
    if t.size == 0:
        raise ValueError("no pixel to score: the mask keeps nothing")
    return t, p


def mae(truth: np.ndarray, pred: np.ndarray, mask: np.ndarray | None = None) -> float:
    """Mean absolute error, mean |t - p|."""
    t, p = _pair(truth, pred, mask)
    return float(np.mean(np.abs(t - p)))


def mse(truth: np.ndarray, pred: np.ndarray, mask: np.ndarray | None = None) -> float:
    """Mean squared error, mean (t - p)^2."""
    t, p = _pair(truth, pred, mask)
    return float(np.mean((t - p) ** 2))


def rmse(truth: np.ndarray, pred: np.ndarray, mask: np.ndarray | None = None) -> float:
    """Root mean squared error, sqrt(mean (t - p)^2)."""
    return math.sqrt(mse(truth, pred, mask))


def nrmse(truth: np.ndarray, pred: np.ndarray, mask: np.ndarray | None = None) -> float:
    """Normalised RMSE, ||t - p||_2 / ||t||_2."""
    t, p = _pair(truth, pred, mask)
    norm = np.linalg.norm(t)
    if norm == 0:
        raise ValueError("NRMSE is undefined for an all-zero truth")
    return float(np.linalg.norm(t - p) / norm)


def psnr(truth: np.ndarray, pred: np.ndarray, mask: np.ndarray | None = None, data_range: float | None = None) -> float:
    """Peak signal-to-noise ratio in dB, 10 log10(R^2 / MSE).

    Parameters
    ----------
    truth, pred : ndarray
    mask : ndarray, optional
    data_range : float, optional
        R; by default the range of the truth alone, max t - min t (over the unmasked pixels).

    Returns
    -------
    float, dB (inf for a perfect prediction)
    """
    t, p = _pair(truth, pred, mask)
    r = float(t.max() - t.min()) if data_range is None else float(data_range)
    err = float(np.mean((t - p) ** 2))
    if err == 0:
        return math.inf
    return 10.0 * math.log10(r * r / err)


PIXEL_METRICS = {"mae": mae, "rmse": rmse, "nrmse": nrmse, "psnr": psnr}


def pixel_metrics(truth: np.ndarray, pred: np.ndarray, mask: np.ndarray | None = None) -> dict[str, float]:
    """MAE, RMSE, NRMSE and PSNR (truth-only range) of one map pair, as a dict."""
    return {name: fn(truth, pred, mask) for name, fn in PIXEL_METRICS.items()}


def summarize(values: Sequence[float]) -> dict[str, float | int | None]:
    """Mean, standard deviation across samples (ddof=1) and standard error of the mean of a metric.

    CMB-ML's "mean +- std" quotes the scatter between simulations; the uncertainty of the mean itself is the
    standard error ``se = std / sqrt(n)``. With one value ``std`` and ``se`` are None.

    Returns
    -------
    dict with keys ``mean``, ``std``, ``se``, ``n``
    """
    x = np.asarray(values, dtype=np.float64)
    if x.ndim != 1 or x.size == 0:
        raise ValueError(f"summarize needs a non-empty 1-d sequence, got shape {x.shape}")
    n = int(x.size)
    with np.errstate(invalid="ignore"):  # an infinite PSNR (perfect map) gives a nan std
        std = float(np.std(x, ddof=1)) if n > 1 else None
    return {"mean": float(np.mean(x)), "std": std, "se": None if std is None else std / math.sqrt(n), "n": n}
