"""Learned separators: reference network sizes, shapes, overfitting, resume, cached arrays, predict/load."""

from __future__ import annotations

import dataclasses
import functools
import os
from pathlib import Path

import numpy as np
import pytest
import torch

from cosmobench.cmb.learned import channel_stats, prepare_arrays
from cosmobench.cmb.methods import get_method
from cosmobench.cmb.methods.unet_fullsky import FullSkyUNet
from cosmobench.cmb.methods.unet_patch import PatchUNet
from cosmobench.cmb.nn import FullSkyNet, PatchNet, count_parameters, reference_config
from cosmobench.cmb.tiling import PatchLayout, PlaneLayout
from cosmobench.core.seeds import rng
from cosmobench.core.train import load_checkpoint
from cosmobench.sky import sht

BANDS = ["30", "100", "143", "217", "353"]
FWHM_ARCMIN = {"30": 240.0, "100": 150.0, "143": 120.0, "217": 100.0, "353": 100.0}
CENTER_GHZ = {"30": 30.0, "100": 100.0, "143": 143.0, "217": 217.0, "353": 353.0}


@dataclasses.dataclass(frozen=True)
class FakeChannel:
    band: str
    center_ghz: float
    fwhm_arcmin: float


class FakeDataset:
    """Duck-typed CMBDataset in memory. Target: Gaussian CMB (flat D_ell = 2000 uK^2, no beam); each channel:
    beamed CMB + foreground (steep-spectrum field + Galactic-plane profile, dust/synchrotron-like scaling with a
    per-simulation index) + white noise; uK_CMB, RING, seeded streams."""

    def __init__(self, root, nside=16, splits=None, seed=0, noise_uk=2.0):
        self.root, self.nside, self.seed, self.noise_uk = Path(root), nside, seed, noise_uk
        self.bands = list(BANDS)
        self.channels = [FakeChannel(b, CENTER_GHZ[b], FWHM_ARCMIN[b]) for b in BANDS]
        self.splits = dict(splits or {"Train": 4, "Valid": 2, "Test": 2})

    def sim_indices(self, split):
        return list(range(self.splits[split]))

    @functools.lru_cache(maxsize=128)  # noqa: B019 (test helper)
    def _sim(self, split, i):
        import healpy as hp

        lmax = 3 * self.nside - 1
        ell = np.arange(lmax + 1)
        cls = np.zeros(lmax + 1)
        cls[2:] = 2000.0 * 2 * np.pi / (ell[2:] * (ell[2:] + 1))
        cmb_alm = sht.synalm(cls, lmax, rng(self.seed, split, i, "cmb"))[None]
        fg_cls = np.zeros(lmax + 1)
        fg_cls[2:] = 400.0 * (ell[2:] / 10.0) ** -2.5
        fg_alm = sht.synalm(fg_cls, lmax, rng(self.seed, split, i, "fg"))[None]
        theta, _ = hp.pix2ang(self.nside, np.arange(12 * self.nside**2))
        fg = sht.alm2map(fg_alm, self.nside)[0] + 60.0 * np.exp(-np.abs(np.pi / 2 - theta) / np.radians(12.0))
        beta = 1.5 + 0.2 * rng(self.seed, split, i, "beta").standard_normal()
        obs = {}
        for c in self.channels:
            cmb = sht.alm2map(sht.almxfl(cmb_alm, sht.gauss_beam(c.fwhm_arcmin, lmax)), self.nside)[0]
            scale = (c.center_ghz / 143.0) ** beta + 0.3 * (c.center_ghz / 30.0) ** -3.0
            noise = self.noise_uk * rng(self.seed, split, i, "noise", c.band).standard_normal(cmb.size)
            obs[c.band] = (cmb + scale * fg + noise)[None]
        return obs, sht.alm2map(cmb_alm, self.nside)

    def load_obs(self, split, i, bands=None):
        obs = self._sim(split, int(i))[0]
        return {b: obs[b].copy() for b in (bands or self.bands)}

    def load_target(self, split, i):
        return self._sim(split, int(i))[1].copy()


TINY = dict(bands=BANDS, levels=3, base_channels=8, batch_size=2, lr=5e-3, progress=False, device="cpu")


def rms(a):
    return float(np.sqrt(np.mean(np.square(a))))


def test_reference_parameter_counts():
    """cmbNNCS UNet5 and UNet8 with 7 inputs: 6,266,955 and 100,690,881 parameters (UNet8: 1,200 fewer with 4)."""
    with torch.device("meta"):
        assert count_parameters(FullSkyNet(7, **reference_config(5))) == 6_266_955
        assert count_parameters(FullSkyNet(7, **reference_config(8))) == 100_690_881
        assert count_parameters(FullSkyNet(4, **reference_config(8))) == 100_690_881 - 1_200


def test_unet_output_has_the_input_plane_shape():
    torch.manual_seed(0)
    net = FullSkyNet(4, **reference_config(3, 4)).eval()
    for shape in [(16, 12), (64, 48), (128, 96)]:
        assert net(torch.zeros(2, 4, *shape)).shape == (2, 1, *shape)
    # UNet8 depth at nside 128 (384 columns are not divisible by 2^8: the reference fails), narrow widths
    unet8 = FullSkyNet(4, **reference_config(8, base_channels=1)).eval()
    assert unet8(torch.zeros(1, 4, 512, 384)).shape == (1, 1, 512, 384)
    unet5 = FullSkyNet(4, **reference_config(5, base_channels=2)).eval()
    assert unet5(torch.zeros(3, 4, 64, 48)).shape == (3, 1, 64, 48)  # nside 16: 48 not divisible by 2^5
    patch_net = PatchNet(9, levels=3, base_channels=4, crop=4)
    assert patch_net(torch.zeros(2, 9, 24, 24)).shape == (2, 1, 16, 16)


def test_tiny_unet_overfits_one_simulation(tmp_path):
    data = FakeDataset(tmp_path / "data", nside=8, splits={"Train": 1})
    method = FullSkyUNet(**{**TINY, "base_channels": 16, "batch_size": 1, "epochs": 60, "lr": 1e-2})
    facts = method.fit(data, tmp_path / "run", val_split=None)
    history = np.loadtxt(tmp_path / "run" / "train_log.csv", delimiter=",", skiprows=1)
    assert facts["epochs"] == 60
    assert facts["final_train_loss"] < history[0, 1] / 10


class Interrupt(Exception):
    pass


def _interrupt_after(epoch):
    def stop(e, record):
        if e == epoch:
            raise Interrupt

    return stop


def test_fit_resumes_where_it_stopped(tmp_path):
    data = FakeDataset(tmp_path / "data", nside=16, splits={"Train": 3, "Valid": 1})
    FullSkyUNet(**TINY, epochs=3).fit(data, tmp_path / "straight")
    with pytest.raises(Interrupt):
        FullSkyUNet(**TINY, epochs=3).fit(data, tmp_path / "resumed", on_epoch_end=_interrupt_after(0))
    assert load_checkpoint(tmp_path / "resumed" / "last.pt")["epoch"] == 0
    facts = FullSkyUNet(**TINY, epochs=3).fit(data, tmp_path / "resumed")
    assert facts["epochs"] == 3
    a, b = (load_checkpoint(tmp_path / d / "last.pt") for d in ("straight", "resumed"))
    assert a["history"]["train_loss"] == b["history"]["train_loss"]
    assert all(torch.equal(a["model"][k], b["model"][k]) for k in a["model"])
    with pytest.raises(ValueError, match="base_channels"):
        FullSkyUNet(**{**TINY, "base_channels": 4}, epochs=4).fit(data, tmp_path / "resumed")


def test_prepared_arrays_hold_the_maps_and_are_reused(tmp_path):
    data = FakeDataset(tmp_path / "data", nside=16, splits={"Train": 2})
    layout = PlaneLayout(16)
    inputs, targets = prepare_arrays(data, "Train", ["100", "353"], layout, tmp_path / "cache", progress=False)
    assert isinstance(inputs, np.memmap) and inputs.shape == (2, 2, 64, 48) and inputs.dtype == np.float32
    obs = data.load_obs("Train", 1)
    np.testing.assert_array_equal(inputs[1, 1], layout.images(obs["353"].astype(np.float32))[0, 0])
    np.testing.assert_array_equal(targets[1], layout.images(data.load_target("Train", 1).astype(np.float32))[0])
    stamp = (tmp_path / "cache" / "inputs.npy").stat().st_mtime_ns
    prepare_arrays(data, "Train", ["100", "353"], layout, tmp_path / "cache", progress=False)
    assert (tmp_path / "cache" / "inputs.npy").stat().st_mtime_ns == stamp  # matching manifest: reused
    patches, _ = prepare_arrays(data, "Train", ["100"], PatchLayout(16, 2, 4), tmp_path / "cache", progress=False)
    assert patches.shape == (2 * 48, 1, 16, 16)  # changed bands/layout: rebuilt
    stats = channel_stats(inputs, targets)
    assert stats["in_mean"][0] == pytest.approx(float(np.mean(inputs[:, 0], dtype=np.float64)), rel=1e-9)
    assert stats["target_std"] == [pytest.approx(float(np.std(targets, dtype=np.float64)), rel=1e-9)]


def test_prepared_arrays_are_reused_by_a_root_with_the_same_dataset_manifest(tmp_path):
    """A root holding the same dataset (its manifest.json equal: e.g. files linked from another root) reuses the
    arrays; a changed manifest, or a root without one elsewhere, rebuilds them."""
    layout, cache = PlaneLayout(16), tmp_path / "cache"
    roots = {k: tmp_path / k for k in ("a", "b", "c", "d")}
    for k, text in (("a", '{"seed": 0}'), ("b", '{"seed": 0}'), ("c", '{"seed": 1}')):
        roots[k].mkdir()
        (roots[k] / "manifest.json").write_text(text)

    def rebuilt(k: str) -> bool:
        prepare_arrays(FakeDataset(roots[k], splits={"Train": 1}), "Train", ["100"], layout, cache, progress=False)
        path = cache / "inputs.npy"
        new = path.stat().st_mtime_ns != 1
        os.utime(path, ns=(1, 1))  # marks the arrays of this call
        return new

    assert rebuilt("a")
    assert not rebuilt("b")  # same manifest, another root: reused
    assert rebuilt("c")  # another dataset
    assert rebuilt("d")  # no manifest: known by its path
    assert rebuilt("a")


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A tiny full-sky UNet trained for a few epochs on 8 simulations at nside 16."""
    root = tmp_path_factory.mktemp("unet")
    data = FakeDataset(root / "data", nside=16, splits={"Train": 8, "Valid": 2, "Test": 2})
    method = get_method("cmbnncs")(**{**TINY, "base_channels": 16}, epochs=25)
    facts = method.fit(data, root / "run")
    return data, method, facts, root / "run"


def test_predict_beats_doing_nothing_in_uk(trained):
    data, method, facts, _ = trained
    assert facts["n_train_maps"] == 8 and facts["train_maps_per_s"] > 0 and facts["n_params"] > 1000
    for i in data.sim_indices("Test"):
        truth = data.load_target("Test", i)[0]
        pred = method.predict(data.load_obs("Test", i), data.channels)
        assert pred.shape == truth.shape and pred.dtype == np.float64
        assert rms(pred - truth) < 0.8 * rms(truth)  # better than predicting zero (about 90 uK rms)
        assert 0.3 < np.std(pred) / np.std(truth) < 1.5  # uK_CMB, not the scaled training units


def test_load_in_a_new_process_predicts_the_same(trained):
    data, method, _, run = trained
    loaded = FullSkyUNet.load(run, device="cpu")
    obs = data.load_obs("Test", 0)
    np.testing.assert_array_equal(loaded.predict(obs, data.channels), method.predict(obs, data.channels))
    with pytest.raises(ValueError, match="not 'unet_patch'"):
        PatchUNet.load(run)
    wrong_beam = [dataclasses.replace(c, fwhm_arcmin=c.fwhm_arcmin + 10) for c in data.channels]
    with pytest.raises(ValueError, match="beam"):
        loaded.predict(obs, wrong_beam)


def test_patch_unet_trains_and_stitches(tmp_path):
    data = FakeDataset(tmp_path / "data", nside=16, splits={"Train": 2, "Valid": 1})
    method = PatchUNet(
        bands=BANDS,
        patch_nside=2,
        margin=4,
        levels=2,
        base_channels=8,
        batch_size=16,
        lr=5e-3,
        epochs=6,
        progress=False,
        device="cpu",
    )
    facts = method.fit(data, tmp_path / "run")
    history = np.loadtxt(tmp_path / "run" / "train_log.csv", delimiter=",", skiprows=1)
    assert history[-1, 1] < 0.8 * history[0, 1]
    assert facts["n_train_maps"] == 2
    pred = method.predict(data.load_obs("Valid", 0), data.channels)
    assert pred.shape == (12 * 16**2,) and np.all(np.isfinite(pred))
    loaded = PatchUNet.load(tmp_path / "run", device="cpu")
    np.testing.assert_array_equal(loaded.predict(data.load_obs("Valid", 0), data.channels), pred)


def test_settings_are_checked(tmp_path):
    with pytest.raises(TypeError, match="levles"):
        FullSkyUNet(levles=4)
    with pytest.raises(ValueError, match="loss"):
        PatchUNet(loss="huber")
    with pytest.raises(ValueError, match="schedule"):
        FullSkyUNet(schedule="step")
    method = FullSkyUNet(bands=["100", "545"], progress=False)
    with pytest.raises(ValueError, match="545"):
        method.fit(FakeDataset(tmp_path, nside=16), tmp_path / "run")
    with pytest.raises(RuntimeError, match="not trained"):
        method.predict({}, [])
    assert FullSkyUNet().output_beam_arcmin is None and PatchUNet().settings.bands[-1] == "857"
