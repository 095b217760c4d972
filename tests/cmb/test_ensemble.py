"""Deep ensembles of the learned separators (``members``): the mixture the ensemble predicts, members that are the
single method trained with seeds ``seed + k``, the validation calibration, and on the toy with a known noise the
noise recovered and covered, with a spread term that grows where the inputs leave the training distribution."""

from __future__ import annotations

import contextlib
import math

import numpy as np
import pytest
import torch
from torch import nn

from cosmobench.cmb.learned import LOG_VAR_RANGE, Ensemble, Standardised, place_arrays, std_calibration
from cosmobench.cmb.methods.unet_patch import PatchUNet

from .test_uncertainty import _scores, _train_toy


class Constant(nn.Module):
    """Outputs the constants ``values`` (one per output channel) at every pixel."""

    def __init__(self, values):
        super().__init__()
        self.register_buffer("values", torch.tensor(values, dtype=torch.float32).reshape(1, -1, 1, 1))
        self.dummy = nn.Parameter(torch.zeros(()))

    def forward(self, x):
        return self.values.expand(x.shape[0], -1, *x.shape[2:]) + 0 * self.dummy


@contextlib.contextmanager
def one_thread():
    """Train on one torch thread: bit-for-bit comparisons of trainings need a fixed order of the floating-point sums
    (it depends on the number of threads)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def _member(values, scale=2.0):
    return Standardised(Constant(values), [0.0], [1.0], [scale, scale])


def test_the_ensemble_predicts_the_mixture_of_its_members():
    """Two fields; members' means (1, -1), (3, 0), (2, 4) and variances (1, 4), (9, 1), (0.25, e^-20): the mean is
    (2, 1) and the variance the mean variance plus the population variance of the means; a log variance below
    LOG_VAR_RANGE is clamped first, as for a single head."""
    means = np.array([[1.0, -1.0], [3.0, 0.0], [2.0, 4.0]])
    log_vars = np.log([[1.0, 4.0], [9.0, 1.0], [0.25, math.exp(-20.0)]])
    ens = Ensemble([_member([*m, *v]) for m, v in zip(means, log_vars)], nfield=2)
    with torch.no_grad():
        out = ens(torch.zeros(2, 1, 3, 3)).double()
        point_out = Ensemble([_member(m) for m in means], nfield=2)(torch.zeros(1, 1, 2, 2))
    assert out.shape == (2, 4, 3, 3)
    var_k = np.exp(np.clip(log_vars, *LOG_VAR_RANGE))
    expected_var = var_k.mean(0) + ((means - means.mean(0)) ** 2).mean(0)
    np.testing.assert_allclose(out[0, :2, 0, 0], [2.0, 1.0], rtol=1e-6)
    np.testing.assert_allclose(np.exp(out[0, 2:, 0, 0]), expected_var, rtol=1e-6)
    assert np.all(expected_var > var_k.mean(0))  # the spread of the means adds to the members' variance
    assert ens.scale_for(torch.zeros(1, 2, 3, 3)).flatten().tolist() == [2.0, 2.0]
    # point members: the mean alone
    np.testing.assert_allclose(point_out[0, :, 0, 0], [2.0, 1.0], rtol=1e-6)
    # its calibration is a single head's: the mean over pixels of residual^2 / variance (scaled units)
    d = np.array([1.0, 2.0])
    targets = torch.tensor(2.0 * (np.array([2.0, 1.0]) + d), dtype=torch.float32).reshape(1, 2, 1, 1).repeat(3, 1, 3, 3)
    got = std_calibration(
        ens, (torch.zeros(3, 1, 3, 3), targets), rule="variance", batch_size=2, device=torch.device("cpu")
    )
    np.testing.assert_allclose(got, d**2 / expected_var, rtol=1e-5)


def test_ensemble_settings_are_checked():
    with pytest.raises(ValueError, match="members must be at least 1"):
        PatchUNet(bands=["x"], members=0)
    with pytest.raises(ValueError, match="not MC-dropout models"):
        PatchUNet(bands=["x"], members=2, uncertainty="mc_dropout", dropout=0.1)


@pytest.fixture(scope="module")
def ensemble(tmp_path_factory):
    """Three Gaussian heads on the noise toy (the single-head test's network and 20 epochs), and the ensemble."""
    root = tmp_path_factory.mktemp("ens")
    with one_thread():
        data, method, facts = _train_toy(root, "cpu", members=3)
    return data, method, facts, root / "run"


def test_members_are_the_single_method_with_seeds_k(ensemble, tmp_path):
    """Member 1 is bit for bit the method trained alone with seed 1; the ensemble's mean is the mean of its
    members' means, its variance their mixture's times the validation calibration, and it loads back whole."""
    data, method, facts, run = ensemble
    assert facts["members"] == 3 and len(facts["member_facts"]) == 3
    assert facts["seconds"] == pytest.approx(sum(f["seconds"] for f in facts["member_facts"]))
    with one_thread():
        _, alone, _ = _train_toy(tmp_path, "cpu", seed=1)
    obs = data.load_obs("Test", 0)
    members = [PatchUNet.load(run / f"member{k}", device="cpu") for k in range(3)]
    assert [m.settings.seed for m in members] == [0, 1, 2] and all(m.settings.members == 1 for m in members)
    np.testing.assert_array_equal(members[1].predict(obs, data.channels), alone.predict(obs, data.channels))
    mean, std = method.predict_with_std(obs, data.channels)
    mus, sds = zip(*(m.predict_with_std(obs, data.channels) for m in members))
    mus = np.array(mus)
    raw_var = np.mean([(s**2) / np.array(m.config["calibration"])[:, None] for s, m in zip(sds, members)], axis=0)
    expected = np.array(method.config["calibration"])[:, None] * (raw_var + mus.var(axis=0))
    np.testing.assert_allclose(mean, mus.mean(axis=0), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(std**2, expected, rtol=1e-4)
    loaded = PatchUNet.load(run, device="cpu")
    assert loaded.settings.members == 3
    with pytest.raises(FileNotFoundError, match="an ensemble's folder, whose checkpoints are its members'"):
        PatchUNet.load(run, which="best")
    for a, b in zip(loaded.predict_with_std(obs, data.channels), (mean, std)):
        np.testing.assert_array_equal(a, b)
    # the validation factors are measured on the ensemble, as fit reports them
    valid = method._arrays(data, "Valid", run / "cache")
    cpu = torch.device("cpu")
    rule = method.settings.calibration_rule
    got = std_calibration(method.model, place_arrays(*valid, cpu), rule=rule, batch_size=8, device=cpu)
    assert got == pytest.approx(facts["std_calibration"], rel=1e-6)


def test_the_ensemble_recovers_the_known_noise_and_covers(ensemble):
    """Measured: std / sigma 1.02-1.04 with 10-11 % RMS scatter per pixel (its first member alone: 1.04-1.06 and
    13-14 %), coverage 0.68-0.71 (1 sigma) and 0.95-0.96 (2 sigma) in I, Q, U and either half of s; validation
    factors 1.008-1.014."""
    data, method, _, run = ensemble
    scores = _scores(method, data)
    assert np.all(np.abs(scores["ratio"] - 1) < 0.1), scores
    assert np.all(np.abs(scores["cover1"] - 0.683) < 0.05), scores
    assert np.all(np.abs(scores["cover2"] - 0.954) < 0.05), scores
    single = _scores(PatchUNet.load(run / "member0", device="cpu"), data)
    assert np.all(scores["ratio_rms"] < single["ratio_rms"]), (scores, single)


def test_the_spread_of_the_members_grows_outside_the_training_distribution(ensemble):
    """The share of the members' spread in the ensemble's variance (before calibration): 1.2-1.5 % on the Test
    inputs (measured), 19-29 % with x five times outside its training range (and 35-59 % at ten times): the
    members agree where they were trained and disagree beyond, which a single head cannot say."""
    data, method, _, run = ensemble
    members = [PatchUNet.load(run / f"member{k}", device="cpu") for k in range(3)]

    def spread_share(scale: float) -> np.ndarray:
        obs = data.load_obs("Test", 1)
        obs = {**obs, "x": obs["x"] * scale}
        mus, sds = zip(*(m.predict_with_std(obs, data.channels) for m in members))
        raw = np.mean([(s**2) / np.array(m.config["calibration"])[:, None] for s, m in zip(sds, members)], axis=0)
        spread = np.array(mus).var(axis=0)
        return spread.mean(axis=1) / (raw + spread).mean(axis=1)

    inside, outside = spread_share(1.0), spread_share(5.0)
    assert np.all(inside < 0.05), inside
    assert np.all(outside > 0.15), outside


def test_a_finished_ensemble_resumes_without_training(ensemble):
    """A second fit of the same settings trains nothing (the members' checkpoints are not rewritten) and
    predicts the same."""
    data, method, facts, run = ensemble
    checkpoints = [run / f"member{k}" / "last.pt" for k in range(3)]
    before = [p.stat().st_mtime_ns for p in checkpoints]
    again = PatchUNet(**method.settings.as_dict())
    facts2 = again.fit(data, run)
    assert [p.stat().st_mtime_ns for p in checkpoints] == before
    assert facts2["std_calibration"] == pytest.approx(facts["std_calibration"], rel=1e-6)
    obs = data.load_obs("Test", 2)
    (mean2, std2), (mean, std) = (m.predict_with_std(obs, data.channels) for m in (again, method))
    np.testing.assert_array_equal(mean2, mean)
    np.testing.assert_allclose(std2, std, rtol=1e-6)  # the calibration's sums: threads change their order
