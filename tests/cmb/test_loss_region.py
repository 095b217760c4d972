"""``loss_fsky`` of the NILC correctors and of ``deepsphere``: the losses, the epoch choice and the error bars'
calibration see only each map's loss region (its faintest ``loss_fsky`` in the highest-frequency intensity); the
pixels outside hold NaN targets that no loss, scale or calibration statistic reads."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from cosmobench.cmb.calibration import ZAccumulator
from cosmobench.cmb.dataset import pred_path
from cosmobench.cmb.learned import _on_finite, channel_stats, gaussian_nll
from cosmobench.cmb.masks import threshold_mask
from cosmobench.cmb.methods import get_method
from cosmobench.cmb.methods.deepsphere import DeepSphereUNet, NestedLayout
from cosmobench.cmb.methods.loss_region import correction_region
from cosmobench.cmb.methods.nilc_unet import NILCResidualData, NILCUNet
from cosmobench.cmb.methods.regress_unet import RegressedResidualData, RegressUNet
from cosmobench.core.io import read_json, write_healpix

from .conftest import write_polarised_toy

NSIDE = 16
TINY = dict(
    levels=3, base_channels=8, batch_size=2, lr=3e-3, progress=False, device="cpu", fields="IQU", uncertainty="gaussian"
)


def _with_gaps(seed: int = 0, shape=(3, 3, 8, 6)):
    g = torch.Generator().manual_seed(seed)
    pred, target = torch.randn(shape, generator=g), torch.randn(shape, generator=g)
    outside = torch.rand(shape[:1] + shape[2:], generator=g)[:, None].expand(shape) < 0.3  # one region per image
    return pred, target.masked_fill(outside, float("nan")), ~outside


def test_the_losses_read_only_the_pixels_with_a_target():
    pred, target, keep = _with_gaps()
    assert 0 < int((~keep).sum()) < keep.numel()
    assert float(_on_finite(F.l1_loss)(pred, target)) == pytest.approx(float((pred - target)[keep].abs().mean()))
    other = pred.masked_fill(~keep, 1e6)  # what the network says outside the region does not count
    assert float(_on_finite(F.l1_loss)(other, target)) == float(_on_finite(F.l1_loss)(pred, target))

    log_var = 0.3 * torch.randn(pred.shape, generator=torch.Generator().manual_seed(1))
    out = torch.cat([pred, log_var], dim=1)
    t, m, lv = target[keep], pred[keep], log_var[keep]
    expected = 0.5 * (lv + (t - m) ** 2 * torch.exp(-lv))
    assert float(gaussian_nll(out, target, gaps=True)) == pytest.approx(float(expected.mean()), rel=1e-6)
    beta = (m - t).abs().mean() + (0.5 * (lv + (t - m) ** 2 / torch.exp(lv)) * torch.exp(lv)).mean()
    assert float(gaussian_nll(out, target, F.l1_loss, gaps=True)) == pytest.approx(float(beta), rel=1e-6)

    full = torch.randn(pred.shape, generator=torch.Generator().manual_seed(2))  # no gap: the same as before
    assert float(gaussian_nll(out, full, gaps=True)) == float(gaussian_nll(out, full))


def test_scales_and_coverage_statistics_leave_the_gaps_out():
    pred, target, keep = _with_gaps(3)
    inputs = np.random.default_rng(0).standard_normal((3, 2, 8, 6))
    stats = channel_stats(inputs, target.numpy())
    expected = [float(np.std(target[:, f][keep[:, f]].double().numpy())) for f in range(3)]
    np.testing.assert_allclose(stats["target_std"], expected, rtol=1e-12)

    z2 = (pred - target.nan_to_num()) ** 2
    gapped, dense = ZAccumulator(3, torch.device("cpu")), ZAccumulator(3, torch.device("cpu"))
    gapped.add(z2, keep)
    for f in range(3):  # the same pixels, field by field, with nothing left out
        only = ZAccumulator(1, torch.device("cpu"))
        only.add(z2[:, f][keep[:, f]].reshape(1, 1, -1))
        np.testing.assert_allclose(gapped.result().sum_z2[f], only.result().sum_z2[0], rtol=1e-12)
        np.testing.assert_array_equal(gapped.result().counts[f], only.result().counts[0])
    dense.add(z2)
    assert dense.result().n == z2[:, 0].numel() > gapped.result().n == int(keep[:, 0].sum())


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return write_polarised_toy(tmp_path_factory.mktemp("loss_region") / "data", {"Train": 4, "Valid": 2}, nside=NSIDE)


@pytest.mark.parametrize("method", ["nilc_unet", "regress_unet"])
def test_a_corrector_trains_and_calibrates_on_its_loss_region(data, tmp_path, method):
    """The cached targets are NaN exactly outside each map's region (60 % of the pixels kept), the manifest records
    the region (another one builds other arrays), and training, the epoch choice and the calibration stay finite;
    the prediction covers the whole sky."""
    cls = get_method(method)
    fitted = cls(**TINY, epochs=2, loss_fsky=0.6, loss_smooth_deg=3.0)
    facts = fitted.fit(data, tmp_path / "run")
    manifest = read_json(tmp_path / "run" / "cache" / "Train" / "manifest.json")
    assert manifest["layout"]["loss_region"] == {"fsky": 0.6, "smooth_deg": 3.0}
    view_cls = RegressedResidualData if cls is RegressUNet else NILCResidualData
    extra = (fitted.regress,) if cls is RegressUNet else ()
    view = view_cls(data, fitted.nilc, "observed", *extra, loss_region={"fsky": 0.6, "smooth_deg": 3.0})
    plain_view = view_cls(data, fitted.nilc, "observed", *extra)
    npix = 12 * NSIDE**2
    for i in data.sim_indices("Train"):  # 353 GHz: the toy's highest frequency
        target, full = view.load_target("Train", i), plain_view.load_target("Train", i)
        region = correction_region(data.load_obs("Train", i, ["353"])["353"][0], fsky=0.6, smooth_deg=3.0)
        assert np.isnan(target[:, region == 0]).all() and int(region.sum()) == round(0.6 * npix)
        np.testing.assert_array_equal(target[:, region == 1], full[:, region == 1])
    for key in ("best_val_loss", "initial_val_loss", "final_train_loss"):
        assert np.isfinite(facts[key]), key
    assert all(np.isfinite(facts["std_calibration"])) and facts["n_train_maps"] == 4
    mean, std = fitted.predict_with_std(data.load_obs("Valid", 0), data.channels)
    assert mean.shape == std.shape == (3, npix) and np.isfinite(mean).all() and (std > 0).all()


def test_deepsphere_trains_on_its_loss_region(data, tmp_path):
    """The spherical network's cached targets are the CMB inside each map's region and NaN outside; another region
    (or none) builds other arrays; the prediction and its error cover the whole sky."""
    settings = dict(TINY, levels=2, epochs=2)
    region = {"fsky": 0.6, "smooth_deg": 3.0}
    fitted = DeepSphereUNet(**settings, loss_fsky=0.6, loss_smooth_deg=3.0)
    facts = fitted.fit(data, tmp_path / "run")
    cache = tmp_path / "run" / "cache" / "Train"
    assert read_json(cache / "manifest.json")["layout"]["loss_region"] == region
    assert "loss_region" not in NestedLayout(NSIDE).describe()
    layout, targets = NestedLayout(NSIDE), np.load(cache / "targets.npy")
    for row, i in enumerate(data.sim_indices("Train")):
        target, truth = layout.to_map(targets[row : row + 1]), data.load_target("Train", i)
        kept = correction_region(data.load_obs("Train", i, ["353"])["353"][0], **region) == 1
        assert np.isnan(target[:, ~kept]).all() and int(kept.sum()) == round(0.6 * 12 * NSIDE**2)
        np.testing.assert_array_equal(target[:, kept], truth[:, kept].astype(np.float32))
    for key in ("best_val_loss", "final_val_loss", "final_train_loss"):  # no untrained base: no initial loss
        assert np.isfinite(facts[key]), key
    assert all(np.isfinite(facts["std_calibration"]))
    mean, std = fitted.predict_with_std(data.load_obs("Valid", 0), data.channels)
    assert mean.shape == std.shape == (3, 12 * NSIDE**2) and np.isfinite(mean).all() and (std > 0).all()

    whole = DeepSphereUNet(**settings, cache_dir=str(cache.parent))  # the same cache folder, every pixel
    whole.fit(data, tmp_path / "whole")
    assert "loss_region" not in read_json(cache / "manifest.json")["layout"]
    assert np.isfinite(np.load(cache / "targets.npy")).all()


def test_loss_region_benchmark_splits_the_mask_by_the_region(tmp_path):
    """docs/cmb_unets.md, "A loss on the evaluated sky only is worse": a prediction off by 2 uK inside each map's
    region and by 6 uK elsewhere gives those RMS values on the two parts of the mask, and their sky fractions."""
    benchmarks = str(Path(__file__).parents[2] / "benchmarks")
    sys.path.insert(0, benchmarks)
    try:
        from bench_loss_region import region_residuals
    finally:
        sys.path.remove(benchmarks)

    data = write_polarised_toy(tmp_path / "root", {"Valid": 2}, nside=16)
    mask = threshold_mask(np.abs(data.load_foreground("Valid", 0)[0]), 0.8, smooth_deg=2.0)
    write_healpix(tmp_path / "root" / "results" / "Valid" / "mask.fits", mask, unit="")
    parts = []
    for i in data.sim_indices("Valid"):
        region = correction_region(data.load_obs("Valid", i, ["353"])["353"][0], fsky=0.6, smooth_deg=3.0) > 0
        truth = data.load_target("Valid", i)[0]
        path = pred_path(tmp_path / "root", "m", "Valid", i)
        path.parent.mkdir(parents=True)
        write_healpix(path, truth + np.where(region, 2.0, 6.0))
        parts.append([(mask > 0) & region, (mask > 0) & ~region])
    result = region_residuals(str(tmp_path / "root"), "m", "Valid", 2, 0.6, 3.0, beam=0.0)
    assert 0 < result["fsky_outside"] < result["fsky_inside"]
    assert result["fsky_inside"] == pytest.approx(np.mean([p[0].mean() for p in parts]), abs=1e-12)
    assert result["fsky_outside"] == pytest.approx(np.mean([p[1].mean() for p in parts]), abs=1e-12)
    assert result["rms_inside"] == pytest.approx(2.0, rel=0.1) and result["rms_outside"] == pytest.approx(6.0, rel=0.1)


@pytest.mark.parametrize("cls", [NILCUNet, DeepSphereUNet])
def test_loss_fsky_is_checked(cls):
    with pytest.raises(ValueError, match="loss_fsky"):
        cls(loss_fsky=0.0)
    with pytest.raises(ValueError, match="loss_fsky"):
        cls(loss_fsky=1.2)
    assert cls().settings.loss_region() is None and cls(loss_fsky=0.5).settings.loss_region()["fsky"] == 0.5
