"""Pixel metrics against hand-computed values, and the PSNR data-range fix."""

from __future__ import annotations

import math

import numpy as np
import pytest

from cosmobench.metrics import mae, mse, nrmse, pixel_metrics, psnr, rmse, summarize

T = np.array([0.0, 1.0, 2.0, 3.0])
P = np.array([1.0, 1.0, 0.0, 3.0])  # errors -1, 0, 2, 0


def test_hand_computed_values():
    assert mae(T, P) == pytest.approx(3 / 4)
    assert mse(T, P) == pytest.approx(5 / 4)
    assert rmse(T, P) == pytest.approx(math.sqrt(5 / 4))
    assert nrmse(T, P) == pytest.approx(math.sqrt(5) / math.sqrt(14))
    assert psnr(T, P) == pytest.approx(10 * math.log10(9 / (5 / 4)))  # range 3, MSE 5/4: 8.573 dB
    assert pixel_metrics(T, P) == pytest.approx({"mae": 0.75, "rmse": 1.118034, "nrmse": 0.597614, "psnr": 8.573325})


def test_mask_selects_pixels():
    mask = np.array([1, 1, 0, 1])
    assert mae(T, P, mask) == pytest.approx(1 / 3)
    assert rmse(T, P, mask) == pytest.approx(math.sqrt(1 / 3))
    assert psnr(T, P, mask) == pytest.approx(10 * math.log10(9 / (1 / 3)))
    with pytest.raises(ValueError, match="keeps nothing"):
        mae(T, P, np.zeros(4))


def test_psnr_uses_the_truth_range_only():
    """CMB-ML's range max(t, p) - min(t, p) rewards a noisier prediction; the truth-only range does not."""
    truth = np.array([0.0, 1.0, 2.0, 3.0])
    good = truth + np.array([0.5, 0.0, 0.0, 0.0])  # MSE 0.0625
    spiky = truth + np.array([0.0, 0.0, 0.0, 9.0])  # MSE 20.25, prediction range 12

    def legacy(t, p):
        return psnr(t, p, data_range=max(t.max(), p.max()) - min(t.min(), p.min()))

    assert legacy(truth, spiky) == pytest.approx(10 * math.log10(144 / 20.25))  # 8.52 dB
    assert psnr(truth, spiky) == pytest.approx(10 * math.log10(9 / 20.25))  # -3.52 dB
    assert psnr(truth, good) == pytest.approx(10 * math.log10(9 / 0.0625))  # 21.58 dB
    # the legacy definition credits the spike with a 12 dB larger range; the fixed one does not move
    assert legacy(truth, spiky) - psnr(truth, spiky) == pytest.approx(20 * math.log10(12 / 3))
    assert psnr(truth, truth) == math.inf


def test_summary_mean_std_and_standard_error():
    s = summarize([1.0, 2.0, 3.0, 4.0])
    assert s["mean"] == 2.5
    assert s["std"] == pytest.approx(math.sqrt(5 / 3))  # ddof = 1
    assert s["se"] == pytest.approx(math.sqrt(5 / 3) / 2)
    assert s["n"] == 4
    assert summarize([7.0]) == {"mean": 7.0, "std": None, "se": None, "n": 1}
    with pytest.raises(ValueError):
        summarize([])


def test_shape_mismatch_raises():
    with pytest.raises(ValueError, match="shapes differ"):
        rmse(np.zeros(3), np.zeros(4))
    with pytest.raises(ValueError, match="all-zero"):
        nrmse(np.zeros(3), np.ones(3))
