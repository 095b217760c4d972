"""``regress_unet``: nilc_regress + UNet residual corrector. Untrained it is nilc_regress exactly; it learns the
residual of nilc_regress's map (not NILC's); its run folder holds the regression it corrects, and a changed
regression rebuilds the training arrays and refuses a stale run."""

from __future__ import annotations

import numpy as np
import pytest

from cosmobench.cli import load_config
from cosmobench.cmb.methods import get_method, is_learned
from cosmobench.cmb.methods.nilc_unet import NILC_BAND, NILCResidualData
from cosmobench.cmb.methods.regress import NILCRegress
from cosmobench.cmb.methods.regress_unet import BASE_DIR, FALLBACK, RegressedResidualData, RegressUNet
from cosmobench.core.io import read_json

from .conftest import write_polarised_toy

NSIDE = 16
TINY = dict(
    levels=3, base_channels=8, batch_size=2, lr=3e-3, progress=False, device="cpu", fields="IQU", uncertainty="gaussian"
)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return write_polarised_toy(tmp_path_factory.mktemp("regress_unet") / "data", {"Train": 4, "Valid": 2}, nside=NSIDE)


@pytest.fixture(scope="module")
def untrained(data, tmp_path_factory):
    run = tmp_path_factory.mktemp("regress_unet_run")
    method = RegressUNet(**TINY, epochs=0)
    return method, method.fit(data, run), run


def test_untrained_is_nilc_regress_exactly(data, untrained, tmp_path):
    method, facts, run = untrained
    regress = NILCRegress(progress=False)
    alone = regress.fit(data, tmp_path / "regress")
    assert facts["regress"]["coefficients"] == alone["coefficients"]  # the same fit, in the run's base folder
    assert read_json(run / BASE_DIR / "training.json")["coefficients"] == alone["coefficients"]
    obs = data.load_obs("Valid", 0)
    expected = regress.predict(obs, data.channels)
    np.testing.assert_array_equal(method.predict(obs, data.channels), expected)
    loaded = RegressUNet.load(run, device="cpu")
    np.testing.assert_array_equal(loaded.predict(obs, data.channels), expected)
    mean, std = loaded.predict_with_std(obs, data.channels)
    assert std.shape == mean.shape == (3, 12 * NSIDE**2) and np.all(std > 0)


def test_the_network_sees_and_learns_the_residual_of_nilc_regress(data, untrained):
    """The pseudo-band is NILC corrected by the regression, and the target is the CMB at NILC's beam minus it: the
    two add up to the same truth as NILC's pair, and their difference from NILC's is the regression's correction.
    The arrays' manifest records the coefficients (a new regression builds new arrays)."""
    method, facts, run = untrained
    nilc_view = NILCResidualData(data, method.nilc)
    view = RegressedResidualData(data, method.nilc, "observed", method.regress)
    obs = data.load_obs("Train", 1)
    nilc_map = nilc_view.nilc_map("Train", 1)
    corrected = view.load_obs("Train", 1)[NILC_BAND]
    np.testing.assert_array_equal(corrected, method.regress.correct(obs, data.channels, nilc_map))
    truth = nilc_map + nilc_view.load_target("Train", 1)
    np.testing.assert_allclose(corrected + view.load_target("Train", 1), truth, rtol=0, atol=1e-9)
    change = np.sqrt(np.mean((corrected - nilc_map) ** 2, axis=1))
    assert np.all(change > 1e-3 * np.sqrt(np.mean(truth**2, axis=1))), change  # the regression did something
    base = read_json(run / "cache" / "Train" / "manifest.json")["layout"]["base"]
    assert base["method"] == "nilc_regress" and base["coefficients"] == {
        g: list(c.values()) for g, c in facts["regress"]["coefficients"].items()
    }


def test_training_lowers_the_residual_of_nilc_regress(data, tmp_path):
    """A few hundred steps (no validation: the best training-loss weights) lower nilc_regress's I residual on the
    training maps."""
    method = RegressUNet(**{**TINY, "lr": 1e-2}, epochs=20)
    method.fit(data, tmp_path / "run", val_split=None)
    view = RegressedResidualData(data, method.nilc, "observed", method.regress)
    before, after = [], []
    for i in data.sim_indices("Train"):
        residual = view.load_target("Train", i)
        truth = view.nilc_map("Train", i) + residual
        before.append(np.sqrt(np.mean(residual[0] ** 2)))
        after.append(np.sqrt(np.mean((method.predict(data.load_obs("Train", i), data.channels) - truth)[0] ** 2)))
    assert np.mean(after) < 0.8 * np.mean(before), (before, after)


def test_registry_yaml_settings_and_a_changed_regression(data, tmp_path):
    """The configuration wires nilc_regress's settings (less those this method sets); a run with another
    regression does not resume."""
    assert get_method("regress_unet") is RegressUNet and is_learned("regress_unet")
    cfg = load_config("cmb", [f"out_dir={tmp_path}", "methods.nilc_regress.fsky=0.7"])
    settings = cfg["methods"]["regress_unet"]
    method = RegressUNet(**settings)
    assert method.settings.regress == {  # nilc_regress's own
        "fsky": 0.7,
        "mask_smooth_deg": 2.0,
        "bands": None,
        "guard_drop": None,
        "guard_factor": 1.5,
    }
    assert method.regress.settings.nilc == method.settings.nilc == cfg["methods"]["nilc"]
    assert RegressUNet(**method.settings.as_dict()).settings == method.settings  # load() round trip
    with pytest.raises(TypeError, match="regress must be a mapping"):
        RegressUNet(regress=[0.8])
    with pytest.raises(TypeError, match="fksy"):
        RegressUNet(regress={"fksy": 0.8})
    with pytest.raises(ValueError, match="fsky"):
        RegressUNet(regress={"fsky": 1.5})
    run = tmp_path / "run"
    RegressUNet(**TINY, epochs=1).fit(data, run)
    with pytest.raises(ValueError, match=r"different \['regress'\]"):  # its checkpoint fits another regression
        RegressUNet(**TINY, epochs=1, regress={"fsky": 0.7}).fit(data, run)


def test_each_field_network_keeps_its_best_weights_the_untrained_ones_included(data, tmp_path):
    """With fields=IQU the T and the Q, U networks are chosen apart, each on its own validation loss; at a learning
    rate of 1 neither beats its untrained state, so both keep it and the method is nilc_regress exactly."""
    method = RegressUNet(**{**TINY, "lr": 1.0, "schedule": "constant"}, epochs=2)
    facts = method.fit(data, tmp_path / "run")
    assert facts["best_epoch"] == {"T": -1, "P": -1} and facts["best_val_loss"] == facts["initial_val_loss"]
    obs = data.load_obs("Valid", 0)
    np.testing.assert_array_equal(method.predict(obs, data.channels), method.regress.predict(obs, data.channels))


def test_a_map_the_guard_flags_gets_a_sigma_calibrated_on_the_fallback(data, tmp_path):
    """With the regression's guard, fit calibrates the T sigma of its fallback (NILC's T under the UNet) on the
    validation maps: with the stored factor the fallback's residual there falls within 1 and 2 sigma as often as
    the rule says, counted here pixel by pixel. A flagged map gets the fallback's mean, and its T sigma on the
    correction region is the factor's square root times the network's (Q, U and the rest untouched)."""
    run = tmp_path / "run"
    facts = RegressUNet(**TINY, epochs=2, regress={"guard_drop": ["217"]}).fit(data, run)
    stored = read_json(run / "training.json")[FALLBACK]
    assert stored == facts[FALLBACK] and stored["maps"] == 2
    assert stored["factor"] > 1.5  # NILC's T errs more than the regressed one the network's sigma was calibrated on
    model = RegressUNet.load(run, device="cpu")
    assert model.config[FALLBACK] == stored
    guarded, fallback = model.regress, model.regress.fallback()
    view = NILCResidualData(data, model.nilc)
    within = []
    for i in data.sim_indices("Valid"):
        obs = data.load_obs("Valid", i)
        nilc = view.nilc_map("Valid", i)
        truth = nilc[0] + view.load_target("Valid", i)[0]
        model.regress = fallback
        mean, std = model.predict_with_std(obs, data.channels)
        region = guarded.region_of(obs) > 0
        err = np.abs(mean[0] - truth)[region] / (np.sqrt(stored["factor"]) * std[0][region])
        within.append([np.mean(err <= 1), np.mean(err <= 2)])
        model.regress = guarded
        guarded.config["guard"] = {**guarded.config["guard"], "threshold": 0.0}  # flag every map
        flagged_mean, flagged_std = model.predict_with_std(obs, data.channels)
        assert model.prediction_cards()["TCORR"][0] is False
        np.testing.assert_array_equal(flagged_mean, mean)
        np.testing.assert_allclose(flagged_std[0, region], np.sqrt(stored["factor"]) * std[0, region], rtol=1e-12)
        np.testing.assert_array_equal(flagged_std[0, ~region], std[0, ~region])
        np.testing.assert_array_equal(flagged_std[1:], std[1:])
    np.testing.assert_allclose(np.mean(within, axis=0), stored["coverage"], atol=2e-3)  # one bin of the grid
    assert abs(stored["coverage"][0] - 0.683) < 0.05 and abs(stored["coverage"][1] - 0.954) < 0.05
