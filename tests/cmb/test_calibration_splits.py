"""Error bars calibrated on further splits (``calibration_splits``): on the noise toy a split with twice the noise
(a sky the model was not trained on) enters the calibration with one weight per split, the model itself does not
change (nor when only the calibration rule changes), and bad settings are refused before any work."""

from __future__ import annotations

import math
import shutil

import numpy as np
import pytest

from cosmobench.cmb.methods.unet_patch import PatchUNet
from cosmobench.cmb.separate import trained_settings
from cosmobench.core.train import load_checkpoint, save_state

from .test_uncertainty import NoisyToy, _train_toy

LOUD = "ValidLoud"


class LoudToy(NoisyToy):
    """The noise toy with a split :data:`LOUD` whose noise is twice the training splits' (known factor 4)."""

    def sim(self, split, i):
        x, s, sigma, target = super().sim(split, i)
        if split == LOUD:
            return x, s, 2 * sigma, x + 2 * (target - x)
        return x, s, sigma, target


@pytest.fixture(scope="module")
def calibrated(tmp_path_factory):
    """One Gaussian head trained on the toy and calibrated on Valid by the variance rule, then fitted again with
    calibration_splits."""
    root = tmp_path_factory.mktemp("calib")
    data = LoudToy(root / "data", {"Train": 24, "Valid": 4, LOUD: 4, "Test": 4})
    _, plain, plain_facts = _train_toy(root, "cpu", data=data, calibration_rule="variance")
    last = root / "run" / "last.pt"
    before = last.stat().st_mtime_ns
    both = PatchUNet(**{**plain.settings.as_dict(), "calibration_splits": [LOUD]})
    both_facts = both.fit(data, root / "run")
    return data, plain, plain_facts, both, both_facts, last.stat().st_mtime_ns == before


def test_the_factor_is_the_mean_of_each_splits(calibrated):
    """Measured: Valid's factors 1.10-1.15 per field, ValidLoud's 3.74-3.89 times them (4 times for a perfect
    mean: its error adds alike to both splits); the calibration is their mean, and Valid's is the factor of the
    model calibrated alone."""
    _, _, plain_facts, _, facts, _ = calibrated
    per = facts["std_calibration_splits"]
    assert list(per) == ["Valid", LOUD]
    np.testing.assert_allclose(per["Valid"], plain_facts["std_calibration"], rtol=1e-6)
    assert plain_facts["std_calibration_splits"] == {"Valid": plain_facts["std_calibration"]}
    np.testing.assert_allclose(facts["std_calibration"], (np.array(per["Valid"]) + per[LOUD]) / 2, rtol=1e-12)
    ratio = np.array(per[LOUD]) / per["Valid"]
    assert np.all((ratio > 3.6) & (ratio < 4.1)), ratio


def test_the_model_is_kept_and_only_its_error_bar_widens(calibrated):
    """The second fit trains nothing (a resumable setting): the same mean, the standard deviation times
    sqrt(mean factor / Valid factor) per field, and the 1-sigma coverage of the loud split rises from 0.40 to 0.58
    (measured), as Gaussian errors give."""
    data, plain, plain_facts, both, facts, untouched = calibrated
    assert untouched
    obs = data.load_obs("Test", 0)
    (m1, s1), (m2, s2) = plain.predict_with_std(obs, data.channels), both.predict_with_std(obs, data.channels)
    np.testing.assert_array_equal(m1, m2)
    widen = np.sqrt(np.array(facts["std_calibration"]) / plain_facts["std_calibration"])
    np.testing.assert_allclose(s2 / s1, np.broadcast_to(widen[:, None], s1.shape), rtol=1e-5)
    cover = {}
    for name, method in (("valid", plain), ("both", both)):
        z = []
        for i in data.sim_indices(LOUD):
            mean, std = method.predict_with_std(data.load_obs(LOUD, i), data.channels)
            z.append(np.abs(mean - data.load_target(LOUD, i)) / std)
        cover[name] = np.mean(np.concatenate(z, axis=1) <= 1)
    # 1 sigma of a Gaussian twice as wide covers 38 %; with the factor (1 + 4) / 2 it covers 2 Phi(sqrt(2.5)/2) - 1
    assert cover["valid"] == pytest.approx(0.383, abs=0.03) and cover["both"] == pytest.approx(0.571, abs=0.03)


def test_the_coverage_rule_calibrates_the_same_network_again(calibrated, tmp_path):
    """Changing only ``calibration_rule`` trains nothing. On Valid and the loud split pooled (a scale mixture of
    the noise and twice it), the variance rule over-covers 1 sigma and under-covers 2 sigma; the coverage rule
    splits the miss between the levels, and misses less."""
    data, _, _, both, variance_facts, _ = calibrated
    run = tmp_path / "run"
    shutil.copytree(data.root.parent / "run", run)  # the fixture's run, calibrated on Valid and the loud split
    last = (run / "last.pt").stat().st_mtime_ns
    method = PatchUNet(**{**both.settings.as_dict(), "calibration_rule": "coverage"})
    facts = method.fit(data, run)
    assert (run / "last.pt").stat().st_mtime_ns == last and facts["epochs"] == variance_facts["epochs"]
    obs = data.load_obs("Test", 0)
    (m1, s1), (m2, s2) = both.predict_with_std(obs, data.channels), method.predict_with_std(obs, data.channels)
    np.testing.assert_array_equal(m1, m2)
    widen = np.sqrt(np.array(facts["std_calibration"]) / variance_facts["std_calibration"])
    np.testing.assert_allclose(s2 / s1, np.broadcast_to(widen[:, None], s1.shape), rtol=1e-5)
    p1, p2 = math.erf(1 / math.sqrt(2)), math.erf(2 / math.sqrt(2))

    def misses(cover: dict) -> np.ndarray:
        return np.array([np.array(cover["cover1"]) - p1, np.array(cover["cover2"]) - p2])

    before, after = misses(variance_facts["std_calibration_coverage"]), misses(facts["std_calibration_coverage"])
    assert np.all(before[0] > 0.01) and np.all(before[1] < -0.005), before  # the mixture's tails
    assert np.all(np.abs(after).max(axis=0) < np.abs(before).max(axis=0)), (before, after)
    assert np.all(np.abs(np.abs(after[0]) - np.abs(after[1])) < 0.01), after  # balanced
    assert set(facts["std_calibration_splits"]) == {"Valid", LOUD}


def test_a_checkpoint_from_before_the_rule_is_the_variance_rule_until_calibrated_again(calibrated, tmp_path):
    """Saved settings without ``calibration_rule`` load as ``variance`` (what they were calibrated with) and
    predict the same σ; separating under today's default records the model's rule and warns; fitting under it
    calibrates again without training."""
    data, _, _, both, _, _ = calibrated
    run = tmp_path / "run"
    shutil.copytree(data.root.parent / "run", run)
    for name in ("model.pt", "last.pt"):
        state = load_checkpoint(run / name)
        state["config"]["settings"].pop("calibration_rule")
        save_state(run / name, state)
    old = PatchUNet.load(run, device="cpu")
    assert old.settings.calibration_rule == "variance"
    obs = data.load_obs("Test", 0)
    np.testing.assert_array_equal(
        old.predict_with_std(obs, data.channels)[1], both.predict_with_std(obs, data.channels)[1]
    )
    today = {**both.settings.as_dict(), "calibration_rule": "coverage"}
    with pytest.warns(UserWarning, match="calibration_rule='variance'"):
        assert trained_settings("unet_patch", today, old)["calibration_rule"] == "variance"
    last = (run / "last.pt").stat().st_mtime_ns
    facts = PatchUNet(**today).fit(data, run)
    assert (run / "last.pt").stat().st_mtime_ns == last
    assert PatchUNet.load(run, device="cpu").config["calibration"] == facts["std_calibration"]
    assert facts["std_calibration"] != old.config["calibration"]


def test_bad_calibration_splits_are_refused_before_any_work(tmp_path):
    data = LoudToy(tmp_path / "data", {"Train": 4, "Valid": 2, "Test": 2})
    base = {"bands": ["x", "s"], "patch_nside": 1, "margin": 0, "progress": False, "device": "cpu"}
    with pytest.raises(ValueError, match="uncertainty=none predicts none"):
        PatchUNet(**base, calibration_splits=["Valid2"])
    with pytest.raises(ValueError, match="duplicates"):
        PatchUNet(**base, uncertainty="gaussian", calibration_splits=["A", "A"])
    method = PatchUNet(**base, uncertainty="gaussian", calibration_splits=[LOUD])
    with pytest.raises(ValueError, match=f"calibration split '{LOUD}' has no simulation"):
        method.fit(data, tmp_path / "run")
    with pytest.raises(ValueError, match="names the validation split 'Valid'"):
        PatchUNet(**base, uncertainty="gaussian", calibration_splits=["Valid"]).fit(data, tmp_path / "run")
    assert not (tmp_path / "run").exists()
