"""``nilc_unet``: NILC + UNet residual corrector. Untrained it is NILC exactly; trained it improves on NILC."""

from __future__ import annotations

import numpy as np
import pytest

from cosmobench.cli import load_config
from cosmobench.cmb.dataset import CMBDataset, method_info_path, pred_path
from cosmobench.cmb.methods import get_method
from cosmobench.cmb.methods.nilc import NILC
from cosmobench.cmb.methods.nilc_unet import NILC_BAND, NILCResidualData, NILCUNet, subtract_nilc
from cosmobench.cmb.separate import separate, train
from cosmobench.core.io import read_json, write_healpix
from cosmobench.core.seeds import rng
from cosmobench.sky import sht
from cosmobench.sky.instrument import load_channels

BANDS = ["30", "100", "143", "217", "353"]
NSIDE = 16
NILC_I = {"fields": "I"}  # the maps below are temperature-only
TINY = dict(levels=3, base_channels=8, batch_size=2, lr=3e-3, progress=False, device="cpu", nilc=NILC_I)


def _write_dataset(root, splits: dict[str, int], seed: int = 0) -> CMBDataset:
    """A CMB-ML-layout dataset on disk: beamed Gaussian CMB + two foregrounds whose spectral indices vary
    across the sky (which a pixel-domain ILC at nside 16 cannot follow) + white noise; uK_CMB, RING."""
    import healpy as hp

    channels = load_channels(bands=BANDS)
    lmax = 3 * NSIDE - 1
    ell = np.arange(lmax + 1)
    cls = np.zeros(lmax + 1)
    cls[2:] = 2000.0 * 2 * np.pi / (ell[2:] * (ell[2:] + 1))
    fg_cls = np.zeros(lmax + 1)
    fg_cls[2:] = 400.0 * (ell[2:] / 10.0) ** -2.5
    theta, phi = hp.pix2ang(NSIDE, np.arange(12 * NSIDE**2))
    plane = np.exp(-np.abs(np.pi / 2 - theta) / np.radians(15.0))
    for split, n in splits.items():
        for i in range(n):
            folder = root / "Simulations" / split / f"sim{i:04d}"
            cmb_alm = sht.synalm(cls, lmax, rng(seed, split, i, "cmb"))[None]
            dust = sht.alm2map(sht.synalm(fg_cls, lmax, rng(seed, split, i, "dust"))[None], NSIDE)[0] + 80 * plane
            sync = sht.alm2map(sht.synalm(fg_cls, lmax, rng(seed, split, i, "sync"))[None], NSIDE)[0] + 40 * plane
            beta_d = 1.5 + 0.4 * np.cos(phi + rng(seed, split, i, "phase").uniform(0, 2 * np.pi))
            beta_s = -3.0 + 0.3 * np.sin(2 * theta)
            for c in channels:
                cmb = sht.alm2map(sht.almxfl(cmb_alm, sht.gauss_beam(c.fwhm_arcmin, lmax)), NSIDE)[0]
                nu = c.center_ghz
                fg = dust * (nu / 143.0) ** beta_d + sync * (nu / 30.0) ** beta_s
                noise = 1.0 * rng(seed, split, i, "noise", c.band).standard_normal(cmb.size)
                write_healpix(folder / f"obs_{c.band}_map.fits", (cmb + fg + noise)[None], column_names=["I"])
            write_healpix(folder / "cmb_map_fid.fits", sht.alm2map(cmb_alm, NSIDE), column_names=["I"])
    return CMBDataset(root)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return _write_dataset(tmp_path_factory.mktemp("hybrid") / "data", {"Train": 6, "Valid": 2})


def rms(a):
    return float(np.sqrt(np.mean(np.square(a))))


def test_untrained_hybrid_is_nilc_exactly(data, tmp_path):
    method = NILCUNet(**TINY, epochs=0)
    method.fit(data, tmp_path / "run")
    assert method.output_beam_arcmin == NILC().output_beam_arcmin == 20.6
    obs = data.load_obs("Valid", 0)
    nilc = NILC(**NILC_I).predict(obs, data.channels)
    hybrid = method.predict(obs, data.channels)
    np.testing.assert_array_equal(hybrid, nilc)
    # the NILC maps of both splits were cached in the dataset layout, with nilc's method.json
    assert all(pred_path(data.root, "nilc", s, i).is_file() for s in ("Train", "Valid") for i in data.sim_indices(s))
    assert read_json(method_info_path(data.root, "nilc", "Valid"))["output_beam_arcmin"] == 20.6
    cached = NILCResidualData(data, method.nilc).nilc_map("Valid", 0)
    np.testing.assert_allclose(cached[0], nilc, rtol=0, atol=1e-4 * np.abs(nilc).max())  # float32 on disk
    # given the cached map (as `cmb separate` gives it), the hybrid corrects that map and runs no NILC
    np.testing.assert_array_equal(method.predict({**obs, NILC_BAND: cached}, data.channels), cached[0])


def test_training_that_only_hurts_on_validation_ends_as_nilc(data, tmp_path):
    """At a learning rate of 1 every epoch's correction is worse than none on the validation maps: the untrained
    weights (NILC itself, scored before the first epoch) are kept, so the hybrid predicts NILC exactly."""
    method = NILCUNet(**{**TINY, "lr": 1.0, "schedule": "constant"}, epochs=3)
    facts = method.fit(data, tmp_path / "run")
    assert facts["best_epoch"] == -1 and facts["best_val_loss"] == facts["initial_val_loss"] > 0
    assert facts["final_val_loss"] > facts["initial_val_loss"]
    obs = data.load_obs("Valid", 0)
    nilc = NILC(**NILC_I).predict(obs, data.channels)
    np.testing.assert_array_equal(method.predict(obs, data.channels), nilc)
    np.testing.assert_array_equal(NILCUNet.load(tmp_path / "run", device="cpu").predict(obs, data.channels), nilc)


@pytest.mark.parametrize("band_inputs", ["observed", "minus_nilc"])
def test_training_reduces_the_residual_of_nilc(data, tmp_path, band_inputs):
    """A few hundred steps on six simulations (no validation: the best training-loss weights) fit NILC's residual,
    with the bands as observed or minus the NILC map at their beams."""
    method = NILCUNet(**{**TINY, "lr": 1e-2}, epochs=20, band_inputs=band_inputs)
    facts = method.fit(data, tmp_path / "run", val_split=None)
    assert facts["epochs"] == 20 and facts["n_train_maps"] == 6
    view = NILCResidualData(data, method.nilc)
    before, after = [], []
    for i in data.sim_indices("Train"):
        residual = view.load_target("Train", i)[0]  # CMB at NILC's beam - NILC, uK
        truth = view.nilc_map("Train", i)[0] + residual
        before.append(rms(residual))
        after.append(rms(method.predict(data.load_obs("Train", i), data.channels) - truth))
    assert np.mean(after) < 0.8 * np.mean(before), (before, after)
    loaded = NILCUNet.load(tmp_path / "run", device="cpu")
    assert loaded.settings.band_inputs == band_inputs
    obs = data.load_obs("Valid", 1)
    np.testing.assert_array_equal(loaded.predict(obs, data.channels), method.predict(obs, data.channels))
    manifest = read_json(tmp_path / "run" / "cache" / "Train" / "manifest.json")
    assert manifest["layout"]["band_inputs"] == band_inputs  # another choice builds other arrays


def test_minus_nilc_inputs_are_the_foregrounds_and_noise_of_each_band():
    """Bands = CMB at the band's beam + a foreground, NILC map = the CMB at NILC's output beam (both band-limited
    at NILC's lmax, 2 nside): ``subtract_nilc`` leaves each band's foreground, in I, Q and U (the E, B beams), to
    1e-6 of the CMB; a temperature-only NILC leaves a band's Q, U as observed; a band outside the instrument is
    refused."""
    nside = 16
    nilc = NILC(lmax=2 * nside, sht_iter=10)  # where the analysis of a band-limited map is exact to ~1e-8
    lmax = nilc.output_lmax_for(nside)
    g = rng(0, "minus_nilc")
    cls = np.zeros((4, lmax + 1))
    cls[:3, 2:] = 1.0
    cmb_alm = sht.synalm(cls, lmax, g)
    channels = load_channels(bands=["30", "143", "353"])

    def beamed(fwhm):
        return sht.alm2map(sht.almxfl(cmb_alm, sht.gauss_beam(fwhm, lmax, pol=True)), nside, lmax)

    fg = {c.band: 3.0 * g.standard_normal((3, 12 * nside**2)) for c in channels}
    obs = {c.band: beamed(c.fwhm_arcmin) + fg[c.band] for c in channels}
    obs[NILC_BAND] = beamed(nilc.output_beam_arcmin)
    out = subtract_nilc(obs, channels, nilc)
    assert list(out) == list(obs)
    np.testing.assert_array_equal(out[NILC_BAND], obs[NILC_BAND])
    for c in channels:
        np.testing.assert_allclose(out[c.band], fg[c.band], rtol=0, atol=1e-6 * np.abs(obs[NILC_BAND]).max())
    out = subtract_nilc({**obs, NILC_BAND: obs[NILC_BAND][:1]}, channels, nilc)  # a temperature-only NILC
    np.testing.assert_array_equal(out["143"][1:], obs["143"][1:])
    np.testing.assert_allclose(out["143"][0], fg["143"][0], rtol=0, atol=1e-6 * np.abs(obs[NILC_BAND]).max())
    with pytest.raises(ValueError, match="'70' is not among"):
        subtract_nilc({**obs, "70": obs["30"]}, channels, nilc)


def test_registry_yaml_and_settings(tmp_path):
    assert get_method("nilc_unet") is NILCUNet
    cfg = load_config("cmb", [f"out_dir={tmp_path}", "methods.nilc.ilc_bias_tol=0.01"])
    settings = cfg["methods"]["nilc_unet"]
    assert settings["nilc"] == cfg["methods"]["nilc"]  # corrects the configured NILC
    assert settings["nilc"]["ilc_bias_tol"] == 0.01
    method = NILCUNet(**settings)
    assert method.settings.bands == ["nilc", "100", "143", "217", "353"]
    assert method.nilc.ilc_bias_tol == 0.01
    assert NILCUNet(**method.settings.as_dict()).settings == method.settings  # load() round trip
    with pytest.raises(TypeError, match="nilc"):
        NILCUNet(nilc=["cosine"])
    with pytest.raises(TypeError, match="needlets"):
        NILCUNet(nilc={"needlets": "cosine"})
    with pytest.raises(ValueError, match="band_inputs must be one of observed, minus_nilc"):
        NILCUNet(band_inputs="templates")


def test_nilc_cache_must_match_the_nilc_method(data, tmp_path):
    """The hybrid reuses ``<root>/nilc``: other NILC settings are refused rather than silently mixed."""
    separate(data.root, method="nilc", settings=NILC_I, split="Valid", progress=False)
    with pytest.raises(ValueError, match="other settings"):
        train(data.root, method="nilc_unet", settings={**TINY, "epochs": 0, "nilc": {**NILC_I, "ilc_bias_tol": 0.01}})


def test_an_ensemble_of_hybrids_averages_its_members_corrections(tmp_path):
    """``members=2``: both members train on the NILC residual from one array cache, and the ensemble's map is NILC
    plus the mean of the members' corrections (the mean of their maps). Its own dataset: the module's shared one
    may hold another test's NILC predictions of other settings."""
    data = _write_dataset(tmp_path / "data", {"Train": 6, "Valid": 2})
    method = NILCUNet(**TINY, epochs=2, uncertainty="gaussian", members=2)
    facts = method.fit(data, tmp_path / "run", val_split=None)  # without validation each keeps its last weights
    assert facts["members"] == 2 and [f["epochs"] for f in facts["member_facts"]] == [2, 2]
    assert (tmp_path / "run" / "cache").is_dir()
    assert not any((tmp_path / "run" / f"member{k}" / "cache").exists() for k in range(2))
    obs = data.load_obs("Valid", 0)
    members = [NILCUNet.load(tmp_path / "run" / f"member{k}", device="cpu") for k in range(2)]
    maps = [m.predict(obs, data.channels) for m in members]
    assert not np.array_equal(*maps)  # two seeds, two corrections
    np.testing.assert_allclose(method.predict(obs, data.channels), np.mean(maps, axis=0), rtol=0, atol=1e-5)
    loaded = NILCUNet.load(tmp_path / "run", device="cpu")
    np.testing.assert_array_equal(loaded.predict(obs, data.channels), method.predict(obs, data.channels))
