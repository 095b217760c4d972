"""Per-pixel uncertainty of the learned separators: the Gaussian likelihood, the validation calibration, a toy with
a known, spatially varying noise whose standard deviation and coverage a trained Gaussian head recovers, and MC
dropout (dropout layers that leave the dropout-free networks unchanged, reproducible stochastic passes, and what
their calibrated spread does and does not capture on the same toy)."""

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
    FieldSplitNet,
    MeanVarianceNet,
    Standardised,
    _inference,
    _moments,
    gaussian_nll,
    input_planes,
    place_arrays,
    prepare_arrays,
    std_calibration,
)
from cosmobench.cmb.methods.deepsphere import DeepSphereUNet
from cosmobench.cmb.methods.nilc_unet import NILCUNet
from cosmobench.cmb.methods.unet_fullsky import FullSkyUNet
from cosmobench.cmb.methods.unet_patch import PatchUNet
from cosmobench.cmb.nn import FullSkyNet, PatchNet, reference_config
from cosmobench.cmb.separate import _has_std
from cosmobench.core.seeds import rng
from cosmobench.core.train import load_checkpoint, save_state

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
        return list(range(self.splits.get(split, 0)))

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


def test_with_a_point_loss_the_mean_learns_from_it_alone_and_the_variance_fits_the_squared_residual():
    """gaussian_mean="loss": d/d(mean) is the point loss's gradient exactly; d/d(log var) is (var - r^2) / 2 per
    pixel over the number of pixels (beta-NLL, beta = 1), bounded where the plain likelihood's (1 - r^2 / var) / 2
    is not."""
    g = torch.Generator().manual_seed(3)
    target = torch.randn(2, 3, 4, 4, generator=g)
    out = torch.cat([torch.randn(2, 3, 4, 4, generator=g), torch.randn(2, 3, 4, 4, generator=g) - 4.0], dim=1)
    out.requires_grad_(True)
    gaussian_nll(out, target, torch.nn.functional.l1_loss).backward()
    mean, log_var = out.detach()[:, :3], out.detach()[:, 3:]
    point = mean.clone().requires_grad_(True)
    torch.nn.functional.l1_loss(point, target).backward()
    torch.testing.assert_close(out.grad[:, :3], point.grad, rtol=0, atol=0)
    expected = 0.5 * (torch.exp(log_var) - (target - mean) ** 2) / target.numel()
    torch.testing.assert_close(out.grad[:, 3:], expected, rtol=1e-5, atol=1e-9)
    plain = out.detach().clone().requires_grad_(True)
    gaussian_nll(plain, target).backward()  # the joint likelihood: var = e^-4 makes r^2 / var up to ~1e3
    assert plain.grad[:, 3:].abs().max() > 100 * out.grad[:, 3:].abs().max()


def test_calibration_is_the_mean_of_squared_residuals_over_the_variance():
    """A head with mean 0 and variance 4 (scaled units): s_f^2 = mean(target_f^2 / scale_f^2) / 4 exactly."""
    targets = rng(2, "t").standard_normal((5, 3, 4, 4)).astype(np.float32) * np.float32([[[[3.0]], [[0.2]], [[0.5]]]])
    inputs = np.zeros((5, 1, 4, 4), dtype=np.float32)
    scales = [2.0, 0.25, 1.0]
    model = Standardised(ConstantHead(3, math.log(4.0)), [0.0], [1.0], scales)
    got = std_calibration(model, (inputs, targets), rule="variance", batch_size=2, device=torch.device("cpu"))
    expected = np.mean(targets.astype(np.float64) ** 2, axis=(0, 2, 3)) / np.array(scales) ** 2 / 4
    np.testing.assert_allclose(got, expected, rtol=1e-6)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A patch UNet with a Gaussian head trained on the toy for a few seconds (24 simulations, 20 epochs)."""
    root = tmp_path_factory.mktemp("toy")
    return (*_train_toy(root, "cpu"), root / "run")


def _train_toy(root: Path, device: str, data: NoisyToy | None = None, **settings) -> tuple:
    """The toy's 24 training simulations (or ``data``'s) and a 2-level patch UNet with a Gaussian head (one
    network for I, Q, U, or what ``settings`` override) trained 20 epochs on them: (data, method, training facts)."""
    data = data or NoisyToy(root / "data", {"Train": 24, "Valid": 4, "Test": 4})
    method = PatchUNet(
        **{
            "bands": ["x", "s"],
            "fields": "IQU",
            "field_networks": "shared",
            "uncertainty": "gaussian",
            "patch_nside": 1,
            "margin": 0,
            "levels": 2,
            "base_channels": 8,
            "batch_size": 8,
            "lr": 1e-2,
            "epochs": 20,
            "progress": False,
            "device": device,
            **settings,
        }
    )
    return data, method, method.fit(data, root / "run")


def _scores(method, data) -> dict[str, np.ndarray]:
    """On the Test split, per field: predicted std / true sigma (mean and RMS deviation from 1), their
    correlation over pixels, and the fraction of pixels within 1 and 2 predicted std of the target, for the lower
    and upper half of s."""
    ratio, z, s, stds, sigmas = [], [], [], [], []
    for i in data.sim_indices("Test"):
        x, level, sigma, target = data.sim("Test", i)
        mean, std = method.predict_with_std(data.load_obs("Test", i), data.channels)
        ratio.append(std / sigma)
        z.append(np.abs(mean - target) / std)
        s.append(level)
        stds.append(std)
        sigmas.append(sigma)
    ratio, z, s = np.concatenate(ratio, axis=1), np.concatenate(z, axis=1), np.concatenate(s)
    stds, sigmas = np.concatenate(stds, axis=1), np.concatenate(sigmas, axis=1)
    low = s < np.median(s)
    return {
        "ratio": ratio.mean(axis=1),
        "corr": np.array([np.corrcoef(a, b)[0, 1] for a, b in zip(stds, sigmas)]),
        "ratio_rms": np.sqrt(np.mean((ratio - 1) ** 2, axis=1)),
        "cover1": np.stack([np.mean(z[:, half] <= 1, axis=1) for half in (low, ~low)]),
        "cover2": np.stack([np.mean(z[:, half] <= 2, axis=1) for half in (low, ~low)]),
    }


def test_gaussian_head_recovers_the_known_noise_and_covers(trained):
    """Measured (mean and variance networks, L1 and beta-NLL): std / sigma 1.04-1.06 on average with 13-15.5 % RMS
    scatter per pixel (the digits move with the number of torch threads); coverage 0.68-0.71 (1 sigma) and
    0.949-0.959 (2 sigma) in I, Q and U, in either half of s. A constant std (ignoring s), calibrated to the right
    overall coverage, would scatter by 55 % and cover 0.87 and 0.59 of the two halves (1 sigma)."""
    data, method, facts, _ = trained
    scores = _scores(method, data)
    assert np.all(np.abs(scores["ratio"] - 1) < 0.1), scores
    assert np.all(scores["ratio_rms"] < 0.2), scores  # 0.13-0.155 measured (1 or 2 threads); a constant std: 0.55
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
    rule = method.settings.calibration_rule
    assert rule == "coverage"  # the default
    assert std_calibration(method.model, placed, rule=rule, batch_size=8, device=cpu) == pytest.approx(
        facts["std_calibration"], rel=1e-6
    )
    assert method.config["calibration"] == facts["std_calibration"]
    head = method.model.net.net_var.head  # the variance network's last 1x1 convolution: log variances of I, Q, U
    with torch.no_grad():
        head.bias += math.log(4.0)  # every variance four times too large
    method.config["calibration"] = [1.0, 1.0, 1.0]
    assert np.all(np.abs(_scores(method, data)["ratio"] - 2) < 0.2)  # uncalibrated: twice the true sigma
    method.config["calibration"] = std_calibration(method.model, placed, rule=rule, batch_size=8, device=cpu)
    # to one step of the coverage rule's grid, 2^(1/512) in sigma
    np.testing.assert_allclose(method.config["calibration"], np.array(facts["std_calibration"]) / 4, rtol=3e-3)
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


# MC dropout


def _pinned_networks() -> list[tuple]:
    """(class, arguments, keyword arguments, input, outputs at flat indices 0, 100, 1000, std of the output) of
    the networks as the code before dropout built them after ``torch.manual_seed(7)`` (measured with that code)."""
    g = torch.Generator().manual_seed(1)
    return [
        (
            FullSkyNet,
            (5,),
            {**reference_config(3, 4), "out_channels": 3},
            torch.randn(2, 5, 32, 24, generator=g),
            [-0.008376231417059898, 0.03235255926847458, 0.07805031538009644],
            0.09102619973825683,
        ),
        (
            PatchNet,
            (5, 3, 4, 3),
            {"crop": 2},
            torch.randn(3, 5, 20, 20, generator=g),
            [0.1303654909133911, 0.13687767088413239, 0.12764765322208405],
            0.24047154999692194,
        ),
    ]


@pytest.mark.parametrize("case", range(2), ids=["FullSkyNet", "PatchNet"])
def test_networks_without_dropout_are_the_networks_before_it(case):
    """dropout=0 adds no module: same parameters, initial values, state_dict keys and outputs as the code before
    dropout (outputs equal to it bit for bit on the development machine; rtol 1e-6 leaves room for other CPUs'
    convolution kernels). dropout=p adds one parameterless Dropout2d per block but the output layer: the same
    parameters and keys (checkpoints load either way) and, in eval mode, the same outputs bit for bit."""
    net_cls, args, kwargs, x, pinned, pinned_std = _pinned_networks()[case]
    torch.manual_seed(7)
    plain = net_cls(*args, **kwargs).eval()
    torch.manual_seed(7)
    dropped = net_cls(*args, **kwargs, dropout=0.3).eval()
    assert not any(isinstance(m, nn.Dropout2d) for m in plain.modules())
    assert sum(isinstance(m, nn.Dropout2d) for m in dropped.modules()) == 2 * 3 - 1  # 3 levels down, 2 up
    assert list(plain.state_dict()) == list(dropped.state_dict())
    for a, b in zip(plain.state_dict().values(), dropped.state_dict().values()):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    with torch.no_grad():
        out = plain(x)
        torch.testing.assert_close(dropped(x), out, rtol=0, atol=0)
        assert not torch.equal(dropped.train()(x), out)  # training mode drops feature maps
    np.testing.assert_allclose(out.flatten()[[0, 100, 1000]].numpy(), pinned, rtol=1e-6)
    assert float(out.double().std()) == pytest.approx(pinned_std, rel=1e-6)


def test_zeroed_last_layer_still_outputs_zero_with_dropout_active():
    """No dropout after nilc_unet's zeroed output layer: the untrained hybrid is NILC exactly, in any mode."""
    net = NILCUNet(levels=2, base_channels=4, dropout=0.5)._network(5, 8, 3).train()
    with torch.no_grad():
        assert torch.count_nonzero(net(torch.randn(4, 5, 32, 24))) == 0


def test_checkpoints_without_the_dropout_settings_load_predict_and_resume(tmp_path):
    """A run whose saved settings lack ``dropout`` and ``mc_samples`` (written before them) loads with dropout 0,
    predicts the same map and resumes; a run with dropout cannot resume without it."""
    data = NoisyToy(tmp_path / "data", {"Train": 2, "Valid": 1, "Test": 1})
    settings = dict(bands=["x", "s"], fields="IQU", patch_nside=1, margin=0, levels=2, epochs=1, progress=False)
    method = PatchUNet(**settings, device="cpu")
    method.fit(data, tmp_path / "run")
    obs = data.load_obs("Test", 0)
    pred = method.predict(obs, data.channels)
    for name in ("model.pt", "last.pt"):
        state = load_checkpoint(tmp_path / "run" / name)
        state["config"]["settings"] = {
            k: v for k, v in state["config"]["settings"].items() if k not in ("dropout", "mc_samples")
        }
        save_state(tmp_path / "run" / name, state)
    old = PatchUNet.load(tmp_path / "run", device="cpu")
    assert (old.settings.dropout, old.uncertainty) == (0.0, False)
    np.testing.assert_array_equal(old.predict(obs, data.channels), pred)
    assert PatchUNet(**{**settings, "epochs": 2}, device="cpu").fit(data, tmp_path / "run")["epochs"] == 2
    with pytest.raises(ValueError, match=r"different \['dropout'\]"):
        PatchUNet(**{**settings, "epochs": 3}, dropout=0.1, device="cpu").fit(data, tmp_path / "run")


def test_dropout_settings_are_checked():
    with pytest.raises(ValueError, match="set dropout > 0"):
        PatchUNet(uncertainty="mc_dropout")
    for bad in ({"dropout": 1.0}, {"dropout": -0.1}, {"mc_samples": 1}):
        with pytest.raises(ValueError, match="0 <= dropout < 1 and mc_samples >= 2"):
            FullSkyUNet(**bad)
    with pytest.raises(ValueError, match="deepsphere does not support dropout"):
        DeepSphereUNet(uncertainty="mc_dropout", dropout=0.1)


@pytest.fixture(scope="module")
def trained_mc(tmp_path_factory):
    """The toy's patch UNet with dropout 0.1 and uncertainty=mc_dropout (20 passes), trained as ``trained`` and
    calibrated by the variance rule (the rule of the measurements quoted below)."""
    root = tmp_path_factory.mktemp("toy_mc")
    settings = {"uncertainty": "mc_dropout", "dropout": 0.1, "calibration_rule": "variance"}
    return (*_train_toy(root, "cpu", **settings), root / "run")


def test_mc_dropout_prediction_is_reproducible_and_its_spread_is_the_dropout_layers(trained_mc):
    """Two predictions, and one of the model loaded again, are identical arrays, and leave torch's global generator
    as they found it; the mean is ``predict``'s. With the dropout layers in eval mode the passes are identical (zero
    spread: the variance is its floor exactly); in MC mode they spread, with BatchNorm still in eval mode."""
    data, method, facts, run = trained_mc
    assert method.uncertainty and _has_std(method)  # separate writes cmb_pred_std.fits for it
    assert method.model.net.head.out_channels == 3  # point outputs: trained by the point loss
    obs = data.load_obs("Test", 0)
    state = torch.get_rng_state()
    mean, std = method.predict_with_std(obs, data.channels)
    assert torch.equal(torch.get_rng_state(), state)
    again = method.predict_with_std(obs, data.channels)
    loaded = type(method).load(run, device="cpu").predict_with_std(obs, data.channels)
    for other in (again, loaded):
        np.testing.assert_array_equal(other[0], mean)
        np.testing.assert_array_equal(other[1], std)
    np.testing.assert_array_equal(method.predict(obs, data.channels), mean)
    assert method.config["calibration"] == facts["std_calibration"]

    model, floor = method.model, math.exp(LOG_VAR_RANGE[0])
    maps = np.stack([np.atleast_2d(obs[band])[row] for band, row in input_planes(["x", "s"], ["x"])])
    x = torch.from_numpy(method._layout(NSIDE).images(maps)).float()
    with torch.no_grad():
        _, var = _moments(model.eval(), x, 3, 20)  # dropout layers in eval mode: identical passes
    assert torch.all(var == floor)
    dropouts = [m for m in model.modules() if isinstance(m, nn.Dropout2d)]
    norms = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    with _inference(model, torch.device("cpu"), amp=False, **method._sampling()):
        assert all(m.training for m in dropouts) and not any(m.training for m in norms)
        _, var = _moments(model, x, 3, 20)
    assert not any(m.training for m in model.modules())
    assert float(torch.mean((var > floor).double())) > 0.99


def test_mc_dropout_misses_the_noise_until_calibrated_and_cannot_follow_it(trained, trained_mc):
    """MC dropout measures the spread of thinned networks (model uncertainty), not the toy's noise.

    Measured on this fixture (dropout 0.1, seed 0), I / Q / U: before calibration the std is 0.25-0.28 of sigma
    and covers 0.19-0.20 (1 sigma) and 0.36-0.38 (2 sigma) of the pixels (0.13-0.26 at 1 sigma per half of s);
    the validation factors s_f^2 are 42-50. Calibrated, it covers 0.947-0.957 at 2 sigma but 0.79-0.82 at
    1 sigma: the std is uncorrelated with sigma (|r| < 0.02; the Gaussian head's r is 0.97) while varying by
    ~45 % over pixels, so residual / std is a wide scale mixture (a constant std of the right variance would
    cover 0.727 / 0.943). Per half of s it covers 0.89-0.91 of the quiet pixels and 0.69-0.72 of the noisy ones
    at 1 sigma, where the Gaussian head covers 0.68-0.69 of both. Seeds 1 and 2 and dropout 0.2 gave s_f^2
    18-55, raw 1-sigma coverage 0.19-0.27 (at most 0.34 per half), calibrated 0.77-0.82 / 0.943-0.957, |r| <
    0.02 and half gaps of 0.19-0.22. The bounds sit between the MC and the Gaussian ranges with that margin."""
    data, method, facts, _ = trained_mc
    assert np.all(np.array(facts["std_calibration"]) > 10), facts
    calibrated = _scores(method, data)
    method.config["calibration"] = [1.0, 1.0, 1.0]
    try:
        raw = _scores(method, data)
    finally:
        method.config["calibration"] = facts["std_calibration"]
    gaussian = _scores(trained[1], trained[0])
    assert np.all(raw["ratio"] < 0.5) and np.all(raw["cover1"] < 0.35) and np.all(raw["cover2"] < 0.6), raw
    cover1, cover2 = calibrated["cover1"].mean(axis=0), calibrated["cover2"].mean(axis=0)  # halves of equal size
    assert np.all(np.abs(cover2 - 0.954) < 0.025), calibrated
    assert np.all((cover1 > 0.74) & (cover1 < 0.86)), calibrated
    assert np.all(np.abs(calibrated["corr"]) < 0.15) and np.all(gaussian["corr"] > 0.9), (calibrated, gaussian)
    gap, gaussian_gap = (s["cover1"][0] - s["cover1"][1] for s in (calibrated, gaussian))
    assert np.all(gap > 0.12) and np.all(np.abs(gaussian_gap) < 0.04), (calibrated, gaussian)


def test_separate_field_networks_read_what_they_should_and_still_cover(tmp_path):
    """field_networks="separate": the temperature's mean and variance are functions of the I planes alone
    (changing the Q and U inputs leaves them bit for bit), Q and U of every plane; the mean and the variance are
    separate networks, output as one network's (means, then log variances). On the toy the separate field
    networks still cover: measured 0.69-0.70 (1 sigma) and 0.951-0.959 (2 sigma) in I, Q, U for either half of s,
    with a per-pixel std / sigma scatter of 15 % (13-14 % for one network of the three fields)."""
    data, method, _ = _train_toy(tmp_path, "cpu", field_networks="separate")
    net = method.model.net
    assert isinstance(net, MeanVarianceNet)
    assert all(isinstance(n, FieldSplitNet) and n.n_i == 2 and not n.head for n in (net.net_mean, net.net_var))
    x = torch.randn(2, 4, 8, 8, generator=torch.Generator().manual_seed(0))  # x I, s I, x Q, x U
    y = x.clone()
    y[:, 2:] += 1.0
    with torch.no_grad():
        a, b = net(x), net(y)
        parts = [(n.net_t(x[:, :2]), n.net_p(x)) for n in (net.net_mean, net.net_var)]
    assert torch.equal(a[:, [0, 3]], b[:, [0, 3]]) and not torch.equal(a[:, [1, 2]], b[:, [1, 2]])
    assert torch.equal(a, torch.cat([t_or_p for pair in parts for t_or_p in pair], dim=1))
    scores = _scores(method, data)
    assert np.all(np.abs(scores["cover1"] - 0.683) < 0.05), scores
    assert np.all(np.abs(scores["cover2"] - 0.954) < 0.05), scores


def test_the_mean_of_a_gaussian_head_is_the_point_model_bit_for_bit(tmp_path):
    """gaussian_mean="loss": the mean network is built, initialised and trained exactly as the point model of the
    same seed (the variance network learns beside it from its own loss), so their predictions agree bit for bit;
    the epoch is chosen by the mean's validation loss in both. Both train here on one torch thread (the order of
    floating-point sums depends on the number of threads)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        data, head, head_facts = _train_toy(tmp_path / "head", "cpu", epochs=8)
        _, point, point_facts = _train_toy(tmp_path / "point", "cpu", epochs=8, uncertainty="none")
    finally:
        torch.set_num_threads(threads)
    assert point_facts["best_val_loss"] == head_facts["best_val_loss"]
    obs = data.load_obs("Test", 0)
    np.testing.assert_array_equal(point.predict(obs, data.channels), head.predict(obs, data.channels))


def test_refitting_the_variance_to_the_chosen_mean_recovers_the_noise_the_first_fit_left(tmp_path):
    """One epoch at a low rate leaves the variance networks nearly untrained, with the means they are kept beside:
    the calibrated std follows s poorly and covers unevenly (measured, 1 sigma: 0.76-0.78 where s is low, 0.61-0.62
    where it is high). ``variance_epochs=20`` trains the variance networks again on the residual of those means,
    frozen: the means stay bit for bit, each field group keeps its best validation likelihood, and the coverage is
    within 0.02 of nominal in both halves (0.67-0.70; std / sigma correlation 0.73-0.92 against 0.45-0.74)."""
    data, plain, plain_facts = _train_toy(tmp_path / "plain", "cpu", epochs=1, lr=3e-3, field_networks="separate")
    _, refit, facts = _train_toy(
        tmp_path / "refit", "cpu", data=data, epochs=1, lr=3e-3, field_networks="separate", variance_epochs=20
    )
    obs = data.load_obs("Test", 0)
    np.testing.assert_array_equal(plain.predict(obs, data.channels), refit.predict(obs, data.channels))
    assert facts["best_epoch"] == plain_facts["best_epoch"] and set(facts["variance_best_epoch"]) == {"T", "P"}
    assert "variance_best_epoch" not in plain_facts and (tmp_path / "refit" / "run" / "variance" / "last.pt").is_file()
    before, after = _scores(plain, data), _scores(refit, data)
    assert np.any(np.abs(before["cover1"] - 0.683) > 0.05), before
    assert np.all(np.abs(after["cover1"] - 0.683) < 0.04) and np.all(np.abs(after["cover2"] - 0.954) < 0.03), after
    assert np.all(after["corr"] > before["corr"] + 0.1), (before, after)
    with pytest.raises(ValueError, match="gaussian_mean=loss"):
        PatchUNet(bands=["x", "s"], uncertainty="none", variance_epochs=5)
