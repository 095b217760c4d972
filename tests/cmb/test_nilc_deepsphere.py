"""``nilc_deepsphere``: NILC + a graph UNet on the sphere learning NILC's residual. Untrained it is NILC exactly;
trained it lowers NILC's residual; it shares ``nilc_unet``'s correction and ``deepsphere``'s network."""

from __future__ import annotations

import numpy as np
import pytest

from cosmobench.cli import load_config
from cosmobench.cmb.methods import get_method, is_learned
from cosmobench.cmb.methods.nilc import NILC
from cosmobench.cmb.methods.nilc_deepsphere import NILCDeepSphere
from cosmobench.cmb.methods.nilc_unet import NILC_BAND, NILCResidualData
from cosmobench.cmb.sphere import SphereUNet
from cosmobench.core.io import read_json

from .conftest import write_polarised_toy

NSIDE = 16
TINY = dict(levels=3, base_channels=8, batch_size=2, lr=3e-3, progress=False, device="cpu", fields="IQU")


def rms(a) -> float:
    return float(np.sqrt(np.mean(np.square(a))))


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return write_polarised_toy(tmp_path_factory.mktemp("nilc_ds") / "data", {"Train": 4, "Valid": 2}, nside=NSIDE)


def test_untrained_is_nilc_exactly(data, tmp_path):
    """The head of the graph UNet starts at zero: NILC's I, Q, U to the last bit, before and after a reload, and
    the cached NILC map is what it corrects when given (as ``cmb separate`` gives it)."""
    method = NILCDeepSphere(**TINY, uncertainty="gaussian", epochs=0)
    facts = method.fit(data, tmp_path / "run")
    assert facts["best_epoch"] == {"T": -1, "P": -1}  # temperature and polarisation networks, both NILC
    assert isinstance(method.model.net.net_mean.net_t, SphereUNet)  # the Gaussian head's temperature mean network
    obs = data.load_obs("Valid", 0)
    nilc = NILC().predict(obs, data.channels)
    np.testing.assert_array_equal(method.predict(obs, data.channels), nilc)
    loaded = NILCDeepSphere.load(tmp_path / "run", device="cpu")
    mean, std = loaded.predict_with_std(obs, data.channels)
    np.testing.assert_array_equal(mean, nilc)
    assert std.shape == (3, 12 * NSIDE**2) and np.all(std > 0)
    cached = NILCResidualData(data, method.nilc).nilc_map("Valid", 0)
    np.testing.assert_array_equal(method.predict({**obs, NILC_BAND: cached}, data.channels), cached)


def test_training_reduces_the_residual_of_nilc(data, tmp_path):
    """Twenty epochs on four maps (no validation: the best training-loss weights) fit NILC's temperature residual
    (the Galactic plane it leaves) on the training maps; the arrays are NESTED rows described as NILC's residual."""
    method = NILCDeepSphere(**{**TINY, "lr": 1e-2}, epochs=20)
    facts = method.fit(data, tmp_path / "run", val_split=None)
    assert facts["epochs"] == 20 and facts["n_train_maps"] == 4
    view = NILCResidualData(data, method.nilc)
    before, after = [], []
    for i in data.sim_indices("Train"):
        residual = view.load_target("Train", i)[0]  # CMB at NILC's beam - NILC, I, uK
        truth = view.nilc_map("Train", i)[0] + residual
        before.append(rms(residual))
        after.append(rms(method.predict(data.load_obs("Train", i), data.channels)[0] - truth))
    assert np.mean(after) < 0.8 * np.mean(before), (before, after)
    layout = read_json(tmp_path / "run" / "cache" / "Train" / "manifest.json")["layout"]
    assert layout["kind"] == "nested" and layout["target"] == "cmb at the NILC beam - nilc"
    assert layout["nilc"] == {} and layout["band_inputs"] == "observed"
    obs = data.load_obs("Valid", 1)
    loaded = NILCDeepSphere.load(tmp_path / "run", device="cpu")
    np.testing.assert_array_equal(loaded.predict(obs, data.channels), method.predict(obs, data.channels))


def test_registry_yaml_and_settings():
    cls = get_method("nilc_deepsphere")
    assert cls is NILCDeepSphere and is_learned("nilc_deepsphere") and cls.corrects == "nilc"
    cfg = load_config("cmb", ["methods.nilc.ilc_bias_tol=0.01"])
    section = cfg["methods"]["nilc_deepsphere"]
    assert section["nilc"] == cfg["methods"]["nilc"] and section["nilc"]["ilc_bias_tol"] == 0.01
    assert section["levels"] == cfg["methods"]["deepsphere"]["levels"] and section["cheb_k"] == 3
    assert NILCDeepSphere(bands=["143", "nilc", "217"]).settings.bands == ["nilc", "143", "217"]
    with pytest.raises(ValueError, match="does not support dropout"):
        NILCDeepSphere(dropout=0.1)
    with pytest.raises(ValueError, match="nilc settings say fields=I"):
        NILCDeepSphere(fields="IQU", nilc={"fields": "I"})
