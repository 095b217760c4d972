"""Polarised learned separators: the I, Q, U input layout, exact tiling of Q and U, network shapes, the untrained
polarised hybrid (NILC's I, Q, U exactly), what ``separate`` writes for I, Q, U and a standard deviation, and the
temperature-only path unchanged (its numbers and its old checkpoints)."""

from __future__ import annotations

import dataclasses
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from astropy.io import fits

from cosmobench.cmb.dataset import CMBDataset, method_info_path, pred_path, pred_std_path
from cosmobench.cmb.learned import input_planes, prepare_arrays
from cosmobench.cmb.methods.nilc import NILC
from cosmobench.cmb.methods.nilc_unet import NILCResidualData, NILCUNet
from cosmobench.cmb.methods.unet_fullsky import FullSkyUNet
from cosmobench.cmb.methods.unet_patch import PatchUNet
from cosmobench.cmb.separate import check_model, separate
from cosmobench.cmb.tiling import PatchLayout, PlaneLayout
from cosmobench.core.io import read_healpix, read_json, write_healpix
from cosmobench.core.seeds import rng
from cosmobench.core.train import load_checkpoint, save_state
from cosmobench.sky import sht
from cosmobench.sky.instrument import load_channels

from .test_unets import BANDS as FAKE_BANDS
from .test_unets import FakeDataset

NSIDE = 16
BANDS = ["100", "143", "217", "353", "545"]  # the first four polarised, 545 GHz intensity only
TINY = dict(levels=3, base_channels=8, batch_size=2, progress=False, device="cpu")


def _write_pol_dataset(root, splits: dict[str, int], seed: int = 0) -> CMBDataset:
    """A CMB-ML-layout dataset: beamed Gaussian CMB (T, E, B) + a dust-like I, Q, U foreground + white noise;
    I, Q, U files up to 353 GHz, I at 545 GHz; target I, Q, U; uK_CMB, RING."""
    channels = load_channels(bands=BANDS)
    lmax = 3 * NSIDE - 1
    ell = np.arange(lmax + 1)
    tt = np.zeros(lmax + 1)
    tt[2:] = 2000.0 * 2 * np.pi / (ell[2:] * (ell[2:] + 1))
    cmb_cls = np.stack([tt, tt / 30, tt / 300, np.zeros(lmax + 1)])
    fg = np.zeros(lmax + 1)
    fg[2:] = 400.0 * (ell[2:] / 10.0) ** -2.5
    fg_cls = np.stack([fg, fg / 10, fg / 10, np.zeros(lmax + 1)])
    for split, n in splits.items():
        for i in range(n):
            folder = root / "Simulations" / split / f"sim{i:04d}"
            cmb = sht.synalm(cmb_cls, lmax, rng(seed, split, i, "cmb"))
            dust = sht.synalm(fg_cls, lmax, rng(seed, split, i, "dust"))
            for c in channels:
                nfield = 3 if c.fields == "IQU" else 1
                alm = (cmb + (c.center_ghz / 143.0) ** 2 * dust)[:nfield]
                sky = sht.alm2map(sht.almxfl(alm, sht.gauss_beam(c.fwhm_arcmin, lmax, pol=True)[:nfield]), NSIDE)
                noise = rng(seed, split, i, "noise", c.band).standard_normal(sky.shape)
                write_healpix(folder / f"obs_{c.band}_map.fits", sky + noise)
            write_healpix(folder / "cmb_map_fid.fits", sht.alm2map(cmb, NSIDE))
    return CMBDataset(root)


@pytest.fixture(scope="module")
def pol_data(tmp_path_factory):
    return _write_pol_dataset(tmp_path_factory.mktemp("pol") / "data", {"Train": 2, "Valid": 2})


def test_input_planes_are_the_intensities_then_q_and_u_of_the_polarised_bands():
    assert input_planes(["nilc", "100", "545"], ["nilc", "100"]) == [
        ("nilc", 0),
        ("100", 0),
        ("545", 0),
        ("nilc", 1),
        ("nilc", 2),
        ("100", 1),
        ("100", 2),
    ]
    assert input_planes(["100", "545"]) == [("100", 0), ("545", 0)]


def test_q_and_u_round_trip_exactly_through_the_plane_and_the_patches(pol_data, tmp_path):
    """Images are pixel permutations: I, Q, U come back bit for bit, and the cached arrays hold each band's
    I, Q, U in the documented order, with the target's I, Q, U."""
    iqu = rng(1, "iqu").standard_normal((3, 12 * NSIDE**2))
    for layout in (PlaneLayout(NSIDE), PatchLayout(NSIDE, 2, 4)):
        np.testing.assert_array_equal(layout.to_map(layout.images(iqu)), iqu)
        np.testing.assert_array_equal(layout.to_map(layout.target_images(iqu)), iqu)
    layout = PlaneLayout(NSIDE)
    pol = ["100", "353"]
    inputs, targets = prepare_arrays(
        pol_data, "Valid", BANDS, layout, tmp_path / "cache", pol_bands=pol, fields="IQU", progress=False
    )
    assert inputs.shape == (2, len(BANDS) + 2 * len(pol), 4 * NSIDE, 3 * NSIDE)
    assert targets.shape == (2, 3, 4 * NSIDE, 3 * NSIDE)
    obs = pol_data.load_obs("Valid", 1)
    for k, (band, row) in enumerate(input_planes(BANDS, pol)):
        np.testing.assert_array_equal(inputs[1, k], layout.images(obs[band][row].astype(np.float32))[0])
    truth = pol_data.load_target("Valid", 1).astype(np.float32)
    np.testing.assert_array_equal(layout.to_map(targets[1:2]), truth)


def test_polarised_networks_output_a_mean_and_a_log_variance_per_field():
    config = {"nside": 8, "pol_bands": ["100"], "stats": {"in_mean": [0.0] * 4, "in_std": [1.0] * 4}}
    x = torch.zeros(2, 4, 32, 24)  # I of 100 and 143, Q and U of 100
    for uncertainty, nout in (("none", 3), ("gaussian", 6)):
        stats = {**config["stats"], "target_std": [80.0, 2.0, 2.0]}
        net = FullSkyUNet(bands=["100", "143"], fields="IQU", uncertainty=uncertainty, levels=2, base_channels=4)
        model = net._build({**config, "stats": stats}).eval()
        assert model(x).shape == (2, nout, 32, 24)
        assert model.scales().tolist() == [80.0, 2.0, 2.0]  # one scale per field (float32: exact here)
    patch = PatchUNet(bands=["100", "143"], fields="IQU", uncertainty="gaussian", patch_nside=1, margin=2, levels=2)
    model = patch._build({**config, "stats": {**config["stats"], "target_std": [1.0, 1.0, 1.0]}}).eval()
    assert model(torch.zeros(3, 4, 12, 12)).shape == (3, 6, 8, 8)


@pytest.fixture(scope="module")
def untrained_hybrid(pol_data, tmp_path_factory):
    """nilc_unet with fields=IQU and a Gaussian head, not trained (epochs=0), and its predictions of Valid."""
    run = tmp_path_factory.mktemp("hybrid") / "run"
    settings = {**TINY, "bands": BANDS[:4], "fields": "IQU", "uncertainty": "gaussian", "epochs": 0}
    settings["calibration_rule"] = "variance"  # the calibrated std is then the residual's RMS exactly
    method = NILCUNet(**settings)
    facts = method.fit(pol_data, run)
    out = separate(
        pol_data.root, method="nilc_unet", settings=settings, split="Valid", model_folder=run, progress=False
    )
    return method, facts, out, run


def test_untrained_polarised_hybrid_is_nilc_iqu_and_its_std_the_validation_rms(pol_data, untrained_hybrid):
    """The zero last layer outputs mean 0 and log variance 0: the hybrid is NILC's I, Q, U exactly, and the
    standard deviation calibrated by the variance rule is the RMS of NILC's residual over the validation pixels,
    per field."""
    method, facts, _, run = untrained_hybrid
    assert method.config["pol_bands"] == ["nilc", "100", "143", "217", "353"]
    assert method.output_lmax_for(NSIDE) == 3 * NSIDE - 2
    obs = pol_data.load_obs("Valid", 0)
    nilc = NILC().predict(obs, pol_data.channels)
    mean, std = method.predict_with_std(obs, pol_data.channels)
    assert mean.shape == std.shape == (3, 12 * NSIDE**2)
    np.testing.assert_array_equal(mean, nilc)
    np.testing.assert_array_equal(method.predict(obs, pol_data.channels), nilc)
    view = NILCResidualData(pol_data, method.nilc)
    residual = np.stack([view.load_target("Valid", i).astype(np.float32) for i in (0, 1)]).astype(np.float64)
    rms = np.sqrt(np.mean(residual**2, axis=(0, 2)))
    assert rms[0] > 3 * rms[1]  # Q, U residuals far below T's: one scale per field
    np.testing.assert_allclose(std, np.broadcast_to(rms[:, None], std.shape), rtol=1e-5)
    scales = method.model.scales()
    np.testing.assert_allclose(facts["std_calibration"], (rms / scales) ** 2, rtol=1e-5)
    loaded = NILCUNet.load(run, device="cpu")  # the calibration travels in model.pt
    np.testing.assert_array_equal(loaded.predict_with_std(obs, pol_data.channels)[1], std)


def test_separate_writes_iqu_and_std_maps_and_records_fields_lmax_uncertainty(pol_data, untrained_hybrid):
    method, _, out, _ = untrained_hybrid
    assert (out["fields"], out["output_lmax"], out["uncertainty"], out["predicted"]) == ("IQU", 46, True, 2)
    info = read_json(method_info_path(pol_data.root, "nilc_unet", "Valid"))
    assert (info["fields"], info["output_lmax"], info["uncertainty"], info["output_beam_arcmin"]) == (
        "IQU",
        46,
        True,
        20.6,
    )
    mean, std = method.predict_with_std(pol_data.load_obs("Valid", 1), pol_data.channels)
    for path, extname, maps in (
        (pred_path(pol_data.root, "nilc_unet", "Valid", 1), "CMB-PRED", mean),
        (pred_std_path(pol_data.root, "nilc_unet", "Valid", 1), "CMB-PRED-STD", std),
    ):
        with fits.open(path) as hdul:
            hdr = hdul[1].header
            assert [hdr[f"TTYPE{k}"] for k in (1, 2, 3)] == ["TEMPERATURE", "Q_POLARISATION", "U_POLARISATION"]
            assert (hdr["EXTNAME"], hdr["POLCCONV"], hdr["LMAX"], hdr["FWHM"], hdr["TUNIT2"]) == (
                extname,
                "COSMO",
                46,
                20.6,
                "uK_CMB",
            )
        np.testing.assert_allclose(read_healpix(path, dtype=np.float64), maps, rtol=2**-23, atol=1e-30)
    # hilc (fields=IQU by default, no error estimate): three columns, no std file, the band limit recorded
    hilc = separate(pol_data.root, method="hilc", split="Valid", progress=False)
    assert (hilc["fields"], hilc["output_lmax"], hilc["uncertainty"]) == ("IQU", 46, False)
    assert read_healpix(pred_path(pol_data.root, "hilc", "Valid", 0)).shape == (3, 12 * NSIDE**2)
    assert not pred_std_path(pol_data.root, "hilc", "Valid", 0).exists()
    with pytest.raises(ValueError, match="other settings"):  # changed fields: the method.json comparison refuses
        separate(pol_data.root, method="hilc", settings={"fields": "I"}, split="Valid", progress=False)


def test_polarised_settings_and_inputs_are_checked(pol_data, tmp_path):
    with pytest.raises(ValueError, match="fields"):
        FullSkyUNet(fields="QU")
    with pytest.raises(ValueError, match="uncertainty"):
        FullSkyUNet(uncertainty="ensemble")
    fake = FakeDataset(tmp_path / "fake", nside=8, splits={"Train": 1})  # channels without polarisation
    with pytest.raises(ValueError, match="none of the bands .* is an IQU channel.*set fields=I"):
        FullSkyUNet(bands=FAKE_BANDS, fields="IQU", progress=False).fit(fake, tmp_path / "run")
    with pytest.raises(ValueError, match="set methods.nilc.fields=IQU"):
        NILCUNet(fields="IQU", nilc={"fields": "I"})
    method = FullSkyUNet(**TINY, bands=BANDS, fields="IQU", epochs=0)
    method.fit(pol_data, tmp_path / "iqu", val_split=None)
    obs = pol_data.load_obs("Valid", 0)
    assert method.predict(obs, pol_data.channels).shape == (3, 12 * NSIDE**2)
    with pytest.raises(ValueError, match="reads the Q map of band 100, but it has 1 field"):
        method.predict({**obs, "100": obs["100"][:1]}, pol_data.channels)
    with pytest.raises(ValueError, match="uncertainty=gaussian"):
        method.predict_with_std(obs, pol_data.channels)
    # separating a dataset whose 100 GHz channel has no Q and U is refused before any work
    temperature_100 = {c.band: dataclasses.replace(c, fields="I") if c.band == "100" else c for c in pol_data.channels}
    other = SimpleNamespace(root="other", nside=NSIDE, bands=BANDS, channel=temperature_100.get)
    with pytest.raises(ValueError, match=r"reads Q and U of \['100'\], which are intensity-only"):
        check_model(other, "cmbnncs", tmp_path / "iqu")
    check_model(pol_data, "cmbnncs", tmp_path / "iqu")


def test_temperature_only_predictions_are_unchanged(tmp_path):
    """fields=I, uncertainty=none: the numbers of the code before polarised learned methods (commit 33cc436).
    Float32 training for two steps: another CPU's kernels (AVX2 against AVX-512) move single pixels by up to 2e-3
    relative and the map's std by 2e-5 (measured), hence the tolerances."""
    data = FakeDataset(tmp_path / "data", nside=8, splits={"Train": 2, "Valid": 1, "Test": 1})
    settings = dict(bands=FAKE_BANDS, levels=2, base_channels=4, batch_size=2, lr=5e-3, epochs=2, progress=False)
    method = FullSkyUNet(**settings, device="cpu")
    method.fit(data, tmp_path / "run")
    pred = method.predict(data.load_obs("Test", 0), data.channels)
    assert pred.shape == (12 * 8**2,) and pred.dtype == np.float64
    expected = [-3.126350164413452, 3.8388638496398926, 6.081357002258301]
    np.testing.assert_allclose(pred[[0, 100, 700]], expected, rtol=1e-2)
    assert float(np.std(pred)) == pytest.approx(17.573445062293242, rel=1e-4)
    # a checkpoint written before fields, uncertainty, pol_bands and per-field scales still loads and predicts
    state = load_checkpoint(tmp_path / "run" / "model.pt")
    config = state["config"]
    config["settings"] = {k: v for k, v in config["settings"].items() if k not in ("fields", "uncertainty")}
    config.pop("pol_bands")
    config["stats"]["target_std"] = config["stats"]["target_std"][0]
    save_state(tmp_path / "run" / "model.pt", state)
    old = FullSkyUNet.load(tmp_path / "run", device="cpu")
    assert (old.fields, old.uncertainty) == ("I", False)
    np.testing.assert_array_equal(old.predict(data.load_obs("Test", 0), data.channels), pred)
    method = FullSkyUNet(**{**settings, "epochs": 3}, device="cpu")
    assert method.fit(data, tmp_path / "run")["epochs"] == 3  # and resumes (last.pt from this code)
