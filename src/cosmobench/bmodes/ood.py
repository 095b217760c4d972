"""Out-of-distribution guard: is an observed (or clean) spectrum like the ones the model was trained on?

The reference is the training set itself: per multipole, the mean and standard deviation of log D_l. A spectrum's
score is its largest absolute z-score over multipoles (infinite for a non-positive or non-finite D_l); it is
flagged when the score exceeds :data:`MARGIN` times the largest score of any training spectrum. A spectrum drawn
like the training ones exceeds the largest training score with probability ``p0 = 1 / (n_train + 1)``, and the
margin's multiple of it less often, so ``p0`` bounds the false-alarm rate; the margin keeps fixed-r sets at the
edge of the training prior (r = 0, whose spectra sit in the low tail of the r mixture: 2 of 100 beyond the largest
training score in one of our runs) from being flagged. A set is refused when its number of flagged spectra would
happen by chance with probability below ``alpha`` (binomial tail with ``p0``). The prototype's files (same
``dl_*.npy`` layout; a raw PySM foreground 10^5-10^6 times the training range) score about 20 against about 5 for
the training set, and are flagged entirely.
"""

from __future__ import annotations

import numpy as np

__all__ = ["MARGIN", "log_stats", "scores", "summary", "check"]

#: A spectrum is flagged beyond this multiple of the largest training score.
MARGIN = 1.5


def log_stats(reference: np.ndarray) -> tuple[np.ndarray, np.ndarray, float]:
    """Per-multipole mean and std of log D of ``reference`` (n, n_ell), and the largest score among them."""
    logs = np.log(np.asarray(reference, dtype=np.float64))
    mean, std = logs.mean(0), np.maximum(logs.std(0), 1e-12)
    return mean, std, float(np.max(np.abs((logs - mean) / std)))


def scores(dl: np.ndarray, mean: np.ndarray, std: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Largest |z| of log D over multipoles per spectrum (inf where D <= 0 or not finite), and its multipole index."""
    dl = np.asarray(dl, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        z = np.abs((np.log(dl) - mean) / std)
    z[~np.isfinite(z)] = np.inf
    return z.max(1), z.argmax(1)


def summary(dl: np.ndarray, reference: np.ndarray, ell: np.ndarray) -> dict:
    """How far ``dl`` (n, n_ell) lies from ``reference``: counts, the threshold and the worst spectra."""
    from scipy.stats import binom

    mean, std, largest = log_stats(reference)
    threshold = MARGIN * largest
    s, where = scores(dl, mean, std)
    flagged = s > threshold
    worst = int(np.argmax(s))
    k = int(flagged.sum())
    return {
        "n": int(len(s)),
        "flagged": k,
        "chance_probability": float(binom.sf(k - 1, len(s), 1.0 / (len(reference) + 1))) if k else 1.0,
        "fraction_flagged": float(flagged.mean()) if len(s) else 0.0,
        "threshold_max_abs_z": threshold,
        "training_max_abs_z": largest,
        "median_max_abs_z": float(np.median(s)) if len(s) else 0.0,
        "worst_max_abs_z": float(s[worst]) if len(s) else 0.0,
        "worst_ell": int(np.asarray(ell)[where[worst]]) if len(s) else None,
        "ratio_to_training_median": float(np.median(dl[:, where[worst]]) / np.exp(mean[where[worst]]))
        if len(s)
        else None,
    }


def check(dl: np.ndarray, reference: np.ndarray, ell: np.ndarray, name: str, alpha: float) -> dict:
    """:func:`summary`, raising ``ValueError`` with the numbers when the flags would happen by chance with
    probability below ``alpha``."""
    out = summary(dl, reference, ell)
    if out["chance_probability"] < alpha:
        raise ValueError(
            f"{name}: {out['flagged']} of {out['n']} spectra (chance probability {out['chance_probability']:.2g}) "
            f"lie outside the training distribution (largest per-ell "
            f"|z| of log D_l {out['worst_max_abs_z']:.3g} at ell {out['worst_ell']}, against at most "
            f"{out['training_max_abs_z']:.3g} in the training set, flagged beyond {MARGIN:g} x that; median D_l there "
            f"{out['ratio_to_training_median']:.3g} x the training median). The model cannot be trusted on them: "
            f"check units and foreground level, or retrain on data like them; ood_alpha={alpha} is the guard's "
            "false-alarm probability (0 disables it)"
        )
    return out
