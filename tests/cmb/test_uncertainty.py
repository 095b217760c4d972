"""Per-pixel uncertainty of the learned separators: the Gaussian likelihood, the validation calibration, and a toy
with a known, spatially varying noise whose standard deviation and coverage a trained Gaussian head recovers."""

from __future__ import annotations

import dataclasses
import functools
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from cosmobench.cmb.learned import (
    LOG_VAR_RANGE,
    Standardised,
    gaussian_nll,
    place_arrays,
    prepare_arrays,
    std_calibration,
)
from cosmobench.cmb.methods.unet_patch import PatchUNet
from cosmobench.core.seeds import rng

NSIDE = 16
QU_SCALE = 0.1  # Q and U signal and noise are ten times smaller than I's, as for the CMB


@dataclasses.dataclass(frozen=True)
class ToyChannel:
    band: str
    fwhm_arcmin: float
    fields: str


class NoisyToy:
    """Duck-typed dataset with a known answer: band ``x`` holds a white signal x (I, Q, U), band ``s`` a noise
    level map s(p) uniform in [0.5, 2] (intensity only); the target is x + sigma * N(0, 1) with
    sigma = (s, 0.1 s, 0.1 s). The ideal prediction is mean x and standard deviation sigma."""

    def __init__(self, root, splits):
        self.root, self.nside, self.splits = Path(root), NSIDE, dict(splits)
        self.bands = ["x", "s"]
        self.channels = [ToyChannel("x", 0.0, "IQU"), ToyChannel("s", 0.0, "I")]

    def sim_indices(self, split):
        return list(range(self.splits[split]))

    @functools.lru_cache(maxsize=64)  # noqa: B019 (test helper)
    def sim(self, split, i):
        """x (3, npix), s (npix,), sigma (3, npix), target (3, npix)."""
        field_scale = np.array([[1.0], [QU_SCALE], [QU_SCALE]])
        x = rng(0, split, i, "x").standard_normal((3, 12 * NSIDE**2)) * field_scale
        s = 0.5 + 1.5 * rng(0, split, i, "s").uniform(size=12 * NSIDE**2)
        sigma = s * field_scale
        return x, s, sigma, x + sigma * rng(0, split, i, "noise").standard_normal(x.shape)

    def load_obs(self, split, i, bands=None):
        x, s, _, _ = self.sim(split, int(i))
        obs = {"x": x.copy(), "s": s[None].copy()}
        return {b: obs[b] for b in bands or self.bands}

    def load_target(self, split, i):
        return self.sim(split, int(i))[3].copy()


class ConstantHead(nn.Module):
    """Outputs mean 0 and log variance ``log_var`` for every field and pixel."""

    def __init__(self, nfield: int, log_var: float):
        super().__init__()
        self.nfield, self.log_var = nfield, log_var
        self.dummy = nn.Parameter(torch.zeros(()))

    def forward(self, x):
        shape = (x.shape[0], self.nfield, *x.shape[2:])
        return torch.cat([torch.zeros(shape), torch.full(shape, self.log_var)], dim=1) + 0 * self.dummy


def test_gaussian_nll_is_the_formula_with_a_clamped_log_variance():
    mean, target = torch.tensor([[[0.5]], [[2.0]]]), torch.tensor([[[1.5]], [[-1.0]]])  # (2 samples, 1, 1)
    for log_var, used in ((math.log(4.0), math.log(4.0)), (50.0, LOG_VAR_RANGE[1]), (-50.0, LOG_VAR_RANGE[0])):
        out = torch.cat([mean, torch.full_like(mean, log_var)], dim=1)[:, :, None]  # (2, 2, 1, 1)
        expected = np.mean([0.5 * (used + d**2 * math.exp(-used)) for d in (1.0, -3.0)])
        assert float(gaussian_nll(out, target[:, :, None])) == pytest.approx(expected, rel=1e-6)


def test_calibration_is_the_mean_of_squared_residuals_over_the_variance():
    """A head with mean 0 and variance 4 (scaled units): s_f^2 = mean(target_f^2 / scale_f^2) / 4 exactly."""
    targets = rng(2, "t").standard_normal((5, 3, 4, 4)).astype(np.float32) * np.float32([[[[3.0]], [[0.2]], [[0.5]]]])
    inputs = np.zeros((5, 1, 4, 4), dtype=np.float32)
    scales = [2.0, 0.25, 1.0]
    model = Standardised(ConstantHead(3, math.log(4.0)), [0.0], [1.0], scales)
    got = std_calibration(model, (inputs, targets), batch_size=2, device=torch.device("cpu"))
    expected = np.mean(targets.astype(np.float64) ** 2, axis=(0, 2, 3)) / np.array(scales) ** 2 / 4
    np.testing.assert_allclose(got, expected, rtol=1e-6)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A patch UNet with a Gaussian head trained on the toy for a few seconds (24 simulations, 20 epochs)."""
    root = tmp_path_factory.mktemp("toy")
    return (*_train_toy(root, "cpu"), root / "run")


def _train_toy(root: Path, device: str) -> tuple:
    """The toy's 24 training simulations and a 2-level patch UNet with a Gaussian head trained 20 epochs on them:
    (data, method, training facts)."""
    data = NoisyToy(root / "data", {"Train": 24, "Valid": 4, "Test": 4})
    method = PatchUNet(
        bands=["x", "s"],
        fields="IQU",
        uncertainty="gaussian",
        patch_nside=1,
        margin=0,
        levels=2,
        base_channels=8,
        batch_size=8,
        lr=1e-2,
        epochs=20,
        progress=False,
        device=device,
    )
    return data, method, method.fit(data, root / "run")


def _scores(method, data) -> dict[str, np.ndarray]:
    """On the Test split, per field: predicted std / true sigma (mean and RMS deviation from 1), and the
    fraction of pixels within 1 and 2 predicted std of the target, for the lower and upper half of s."""
    ratio, z, s = [], [], []
    for i in data.sim_indices("Test"):
        x, level, sigma, target = data.sim("Test", i)
        mean, std = method.predict_with_std(data.load_obs("Test", i), data.channels)
        ratio.append(std / sigma)
        z.append(np.abs(mean - target) / std)
        s.append(level)
    ratio, z, s = np.concatenate(ratio, axis=1), np.concatenate(z, axis=1), np.concatenate(s)
    low = s < np.median(s)
    return {
        "ratio": ratio.mean(axis=1),
        "ratio_rms": np.sqrt(np.mean((ratio - 1) ** 2, axis=1)),
        "cover1": np.stack([np.mean(z[:, half] <= 1, axis=1) for half in (low, ~low)]),
        "cover2": np.stack([np.mean(z[:, half] <= 2, axis=1) for half in (low, ~low)]),
    }


def test_gaussian_head_recovers_the_known_noise_and_covers(trained):
    """Measured: std / sigma 1.02-1.03 on average with 8 % RMS scatter per pixel; coverage 0.68-0.70 (1 sigma)
    and 0.951-0.957 (2 sigma) in I, Q and U, in either half of s. A constant std (ignoring s), calibrated to
    the right overall coverage, would scatter by 55 % and cover 0.87 and 0.59 of the two halves (1 sigma)."""
    data, method, facts, _ = trained
    scores = _scores(method, data)
    assert np.all(np.abs(scores["ratio"] - 1) < 0.1), scores
    assert np.all(scores["ratio_rms"] < 0.15), scores
    assert np.all(np.abs(scores["cover1"] - 0.683) < 0.05), scores
    assert np.all(np.abs(scores["cover2"] - 0.954) < 0.05), scores


def test_calibration_is_measured_on_the_validation_split_and_corrects_a_misscaled_variance(trained):
    data, method, facts, run = trained
    layout = method._layout(NSIDE)
    valid = prepare_arrays(
        data, "Valid", ["x", "s"], layout, run / "cache" / "Valid", pol_bands=["x"], fields="IQU", progress=False
    )
    cpu = torch.device("cpu")
    placed = place_arrays(*valid, cpu)
    # the same numbers as fit's (to float32 round-off: the sums' order depends on the number of torch threads)
    assert std_calibration(method.model, placed, batch_size=8, device=cpu) == pytest.approx(
        facts["std_calibration"], rel=1e-6
    )
    assert method.config["calibration"] == facts["std_calibration"]
    head = method.model.net.head  # 1x1 convolution: means, then log variances
    with torch.no_grad():
        head.bias[3:] += math.log(4.0)  # every variance four times too large
    method.config["calibration"] = [1.0, 1.0, 1.0]
    assert np.all(np.abs(_scores(method, data)["ratio"] - 2) < 0.2)  # uncalibrated: twice the true sigma
    method.config["calibration"] = std_calibration(method.model, placed, batch_size=8, device=cpu)
    np.testing.assert_allclose(method.config["calibration"], np.array(facts["std_calibration"]) / 4, rtol=1e-5)
    scores = _scores(method, data)
    assert np.all(np.abs(scores["ratio"] - 1) < 0.1) and np.all(np.abs(scores["cover1"] - 0.683) < 0.05), scores


def test_no_validation_split_leaves_the_variance_uncalibrated(tmp_path):
    data = NoisyToy(tmp_path / "data", {"Train": 2, "Valid": 0})
    method = PatchUNet(
        bands=["x", "s"], fields="IQU", uncertainty="gaussian", patch_nside=1, margin=0, levels=2, epochs=1
    )
    facts = method.fit(data, tmp_path / "run", val_split=None)
    assert facts["std_calibration"] == [1.0, 1.0, 1.0] and facts["n_val_maps"] == 0


@pytest.mark.gpu
def test_gaussian_head_trained_on_cuda_recovers_the_known_noise(tmp_path):
    """The same toy trained on CUDA with bfloat16 autocast (the default there): the head's std and coverage hold."""
    data, method, facts = _train_toy(tmp_path, "cuda")
    assert facts["device"].startswith("cuda")
    scores = _scores(method, data)
    assert np.all(np.abs(scores["ratio"] - 1) < 0.15), scores
    assert np.all(np.abs(scores["cover1"] - 0.683) < 0.06), scores
    assert np.all(np.abs(scores["cover2"] - 0.954) < 0.05), scores
