"""Simulated spectra: right power, independent truth and contamination, noise after the beam, masked option."""

from __future__ import annotations

import numpy as np
import pytest

from cosmobench.bmodes.dataset import BModeSimulator, dl_factor, ell_range, r_label

LMAX = 47


def _templates():
    ell = np.arange(LMAX + 1, dtype=float)
    tensor = np.zeros(LMAX + 1)
    lens = np.zeros(LMAX + 1)
    tensor[2:] = 0.1 / (ell[2:] * (ell[2:] + 1))
    lens[2:] = 2e-6 * 2 * np.pi / ell[2:] ** 0.5 / (ell[2:] + 1)
    return tensor, lens


def _sim(**kw) -> BModeSimulator:
    tensor, lens = _templates()
    return BModeSimulator(cl_tensor=tensor, cl_lens=lens, **{"fg_fraction": 0.0, **kw})


def _weighted_ratio(cl_hat, cl_model, ell):
    """sum nu C_hat / C over samples and multipoles, normalised: 1 +- sqrt(2 / sum nu) per sample."""
    nu = 2 * ell + 1
    return np.sum(nu * cl_hat / cl_model) / (len(cl_hat) * nu.sum()), np.sqrt(2 / (len(cl_hat) * nu.sum()))


def test_truth_and_observation_have_the_model_power():
    sim = _sim()
    out = sim.simulate_many(np.full(150, 0.01), seed=1, split="t")
    m = sim.model()
    fac = dl_factor(sim.ell)
    ratio, sd = _weighted_ratio(out[:, 0] / fac, 0.01 * m["cl_tensor_obs"], sim.ell)
    assert abs(ratio - 1) < 5 * sd
    ratio, sd = _weighted_ratio(out[:, 1] / fac, 0.01 * m["cl_tensor_obs"] + m["cl_other"], sim.ell)
    assert abs(ratio - 1) < 5 * sd


def test_truth_is_not_a_function_of_the_observation():
    """The prototype drew tensor and total maps from one seed, so D_gt / D_obs was the same at every sample (flaw 4).
    Here tensor, lensing and noise have independent streams."""
    sim = _sim()
    out = sim.simulate_many(np.full(40, 0.01), seed=2, split="t")
    ratio = out[:, 0] / out[:, 1]
    assert np.all(np.std(ratio, axis=0) / np.mean(ratio, axis=0) > 0.1)  # the prototype: exactly 0
    again = sim.simulate(0.01, seed=2, split="t", index=3)
    np.testing.assert_array_equal(again[0], out[3, 0])
    assert not np.allclose(sim.simulate(0.01, seed=2, split="t", index=4)[0], out[3, 0])
    assert not np.allclose(sim.simulate(0.01, seed=3, split="t", index=3)[0], out[3, 0])


def test_r_zero_has_zero_truth_and_linear_scaling():
    sim = _sim()
    gt0, obs0 = sim.simulate(0.0, seed=4, split="t", index=0)
    assert np.all(gt0 == 0) and np.all(obs0 > 0)
    gt1, _ = sim.simulate(0.01, seed=4, split="t", index=0)
    gt2, _ = sim.simulate(0.04, seed=4, split="t", index=0)
    np.testing.assert_allclose(gt2, 4 * gt1, rtol=1e-10)  # same stream: the template scales linearly in r


def test_noise_is_added_after_the_beam():
    """With a huge beam the tensor power is suppressed by b_l^2 but white noise keeps N_l (the prototype smoothed
    its noise)."""
    tensor, _ = _templates()
    sim = BModeSimulator(cl_tensor=tensor, cl_lens=np.zeros(LMAX + 1), fg_fraction=0.0, beam_fwhm_arcmin=600.0)
    out = sim.simulate_many(np.zeros(60), seed=5, split="t")
    ratio, sd = _weighted_ratio(out[:, 1] / dl_factor(sim.ell), np.full(len(sim.ell), sim.noise_cl), sim.ell)
    assert abs(ratio - 1) < 5 * sd
    assert sim.beam[31] ** 2 < 0.1


def test_masked_pseudo_spectrum_is_normalised():
    sim = _sim(mask="galactic", mask_bcut_deg=20.0, mask_apod_deg=10.0)
    assert 0.4 < sim.fsky < 0.8
    out = sim.simulate_many(np.zeros(80), seed=6, split="t")
    m = sim.model()
    cl = out[:, 1] / dl_factor(sim.ell)
    # pseudo-C_l / mean(w^2) is unbiased for white noise; with lensing the mask's mode coupling is small here
    ratio = np.mean(cl) / np.mean(np.broadcast_to(m["cl_other"], cl.shape))
    assert abs(ratio - 1) < 0.05


def test_foreground_residual_scales_with_its_fraction():
    tensor, lens = _templates()
    a = BModeSimulator(cl_tensor=tensor, cl_lens=lens, fg_fraction=1e-4).foreground_cl(2, seed=7)
    b = BModeSimulator(cl_tensor=tensor, cl_lens=lens, fg_fraction=2e-4).foreground_cl(2, seed=7)
    np.testing.assert_allclose(b, 4 * a, rtol=1e-10)
    assert np.all(a > 0)
    gt_fg, obs_fg = BModeSimulator(cl_tensor=tensor, cl_lens=lens, fg_fraction=1e-2).simulate(0.01, 8, "t", 0)
    gt, obs = _sim().simulate(0.01, 8, "t", 0)
    np.testing.assert_array_equal(gt_fg, gt)  # the truth never sees the contamination
    assert np.all(obs_fg > obs)


def test_ranges_and_labels():
    np.testing.assert_array_equal(ell_range(16), np.arange(2, 32))
    assert len(ell_range(16)) == 30
    with pytest.raises(ValueError, match="ell_min"):
        ell_range(16, 2, 60)
    assert [r_label(r) for r in (0.0, 0.001, 0.005, 0.01)] == ["0", "0.001", "0.005", "0.01"]
    with pytest.raises(ValueError, match="mask"):
        _sim(mask="planck")
    with pytest.raises(ValueError, match="r must be"):
        _sim().simulate(-0.1, 0, "t", 0)
