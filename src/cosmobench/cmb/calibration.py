"""One factor per field that calibrates a learned method's predicted standard deviation.

A network predicts a variance ``v`` per pixel. On a split it did not train on (the validation split, and the
``calibration_splits``), the standardised residual ``z = (target - mean) / sqrt(v)`` of every pixel is gathered
per field into :class:`ZStatistics` (the sum of ``z^2`` and a histogram of ``log2|z|`` with
:data:`BINS_PER_OCTAVE` bins per octave), and a rule turns the statistics of one or more splits into the factor
``s_f^2`` that multiplies ``v`` in prediction:

``"variance"``
    ``s_f^2`` = the mean of ``z^2``, averaged over the splits with one weight per split: the calibrated ``z`` has
    unit second moment, what a Gaussian likelihood of the map (a chi^2 over pixels) assumes.
``"coverage"``
    ``s_f`` = the value on the histogram's grid (a step of 2^(1/512), 0.14 % in sigma) minimising the larger of
    the misses ``|P(|z| <= k s_f) - erf(k / sqrt 2)|`` at k = 1 and 2 (68.27 % and 95.45 %), the fractions averaged
    over the splits with one weight per split. Residuals with heavier tails than a Gaussian cannot meet both
    levels at unit second moment (bench128's T residual of nilc_unet: kurtosis 3.85, 70.9 % within 1 sigma and
    95.0 % within 2 sigma on Valid after the variance rule); this rule shares the miss between the two levels.
    Ties go to the smallest ``s_f``.

The histogram is exact integer counts (deterministic on any device); a fraction read from it at a factor off its
grid (:func:`coverage` after the variance rule) is exact to within one bin.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence

import numpy as np
import torch

__all__ = [
    "RULES",
    "LEVELS",
    "BINS_PER_OCTAVE",
    "ZStatistics",
    "ZAccumulator",
    "calibration_factors",
    "coverage",
]

RULES = ("variance", "coverage")
#: the error-bar multiples k whose Gaussian coverage the "coverage" rule matches
LEVELS = (1, 2)
BINS_PER_OCTAVE = 512
_OCTAVES = 24  # log2|z| from -24 to 24; outside, z falls in the first or last bin
_LOW = -_OCTAVES * BINS_PER_OCTAVE
NBINS = 2 * _OCTAVES * BINS_PER_OCTAVE + 1


def _nominal(k: float) -> float:
    """Fraction of a unit Gaussian within ``k`` standard deviations."""
    return math.erf(k / math.sqrt(2.0))


@dataclasses.dataclass(frozen=True)
class ZStatistics:
    """The standardised residuals of one split, per field.

    Attributes
    ----------
    sum_z2 : ndarray, shape (nfield,)
        Sum over pixels of ``z^2`` (float64).
    counts : ndarray, shape (nfield, NBINS), int64
        Pixels per bin ``b = ceil(log2|z| * BINS_PER_OCTAVE)`` (clipped to +-24 octaves), stored at ``b - _LOW``:
        the pixels of bins ``<= j`` are those with ``|z| <= 2^((j + _LOW) / BINS_PER_OCTAVE)``.
    """

    sum_z2: np.ndarray
    counts: np.ndarray

    @property
    def n(self) -> int:
        """Pixels per field."""
        return int(self.counts[0].sum())


class ZAccumulator:
    """Gathers :class:`ZStatistics` batch by batch on the model's device.

    Parameters
    ----------
    nfield : int
    device : torch.device
    """

    def __init__(self, nfield: int, device: torch.device) -> None:
        self.sum = torch.zeros(nfield, dtype=torch.float64, device=device)
        self.counts = torch.zeros((nfield, NBINS), dtype=torch.int64, device=device)

    def add(self, z2: torch.Tensor, keep: torch.Tensor | None = None) -> None:
        """Add a batch of ``z^2``, shape (B, nfield, ...); a NaN or infinite value raises ``ValueError``.

        ``keep`` (bool, same shape) restricts the batch to its true pixels (e.g. a loss region); None: all.
        """
        z2 = z2.double()
        if keep is not None:
            z2 = z2.masked_fill(~keep, 0.0)  # adds nothing to the sum; left out of the counts below
        if not bool(torch.isfinite(z2).all()):
            raise ValueError(
                "the standardised residuals of the calibration split hold NaN or infinite values: the network's "
                "mean or variance is not finite there (a diverged training?); retrain, e.g. with a smaller lr"
            )
        self.sum += z2.sum(dim=(0, *range(2, z2.ndim)))
        octave = torch.log2(z2) * (BINS_PER_OCTAVE / 2)  # log2|z| in bins
        index = torch.ceil(octave).clamp(_LOW, -_LOW).long() - _LOW
        for f in range(z2.shape[1]):
            field = index[:, f] if keep is None else index[:, f][keep[:, f]]
            self.counts[f] += torch.bincount(field.reshape(-1), minlength=NBINS)

    def result(self) -> ZStatistics:
        """The statistics gathered so far (on the CPU)."""
        return ZStatistics(self.sum.cpu().numpy(), self.counts.cpu().numpy())


def _fractions(stats: Sequence[ZStatistics]) -> np.ndarray:
    """Cumulative fraction of pixels per bin, (nfield, NBINS), averaged over the splits (one weight each)."""
    return np.mean([np.cumsum(s.counts, axis=1) / s.n for s in stats], axis=0)


def calibration_factors(stats: Sequence[ZStatistics], rule: str) -> list[float]:
    """The factors ``s_f^2`` of a rule (module notes) from one or more splits' statistics.

    Parameters
    ----------
    stats : sequence of ZStatistics
        One per split (at least one, each with pixels).
    rule : {"variance", "coverage"}

    Returns
    -------
    list of nfield floats: ``s_f^2``; the calibrated standard deviation is ``s_f`` times the predicted one.
    """
    if rule not in RULES:
        raise ValueError(f"unknown calibration rule {rule!r}; expected one of {list(RULES)}")
    if rule == "variance":
        return np.mean([s.sum_z2 / s.n for s in stats], axis=0).tolist()
    cdf = _fractions(stats)
    offsets = [round(math.log2(k) * BINS_PER_OCTAVE) for k in LEVELS]
    last = NBINS - 1 - max(offsets)  # the last bin holds everything above the grid
    miss = np.max([np.abs(cdf[:, o : o + last] - _nominal(k)) for k, o in zip(LEVELS, offsets)], axis=0)
    best = np.argmin(miss, axis=1)  # the first (smallest s_f) among equal misses
    return [float(2.0 ** (2 * (j + _LOW) / BINS_PER_OCTAVE)) for j in best]


def coverage(stats: Sequence[ZStatistics], factors: Sequence[float], levels: Sequence[float] = LEVELS) -> dict:
    """Fraction of pixels within ``k`` calibrated standard deviations, averaged over the splits (one weight each).

    Parameters
    ----------
    stats : sequence of ZStatistics
    factors : sequence of nfield floats
        ``s_f^2`` (:func:`calibration_factors`).
    levels : sequence of float
        The multiples k.

    Returns
    -------
    dict
        ``"cover<k>"`` (e.g. ``"cover1"``) -> list of nfield fractions, exact to within one bin.
    """
    cdf = _fractions(stats)
    out = {}
    for k in levels:
        edge = [math.floor(math.log2(k * math.sqrt(f)) * BINS_PER_OCTAVE + 1e-9) - _LOW for f in factors]
        out[f"cover{k:g}"] = [float(cdf[i, min(max(e, 0), NBINS - 1)]) for i, e in enumerate(edge)]
    return out
