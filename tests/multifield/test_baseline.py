"""Classical baselines: map power spectra on exact toys, the Gaussian ridge on a linear toy, and on simulated maps."""

from __future__ import annotations

import numpy as np
import pytest

from cosmobench.core.seeds import rng
from cosmobench.multifield.baseline import (
    SummaryRidge,
    band_edges,
    baryon_fraction_omega_m,
    predict_baseline,
    summaries,
    summary_names,
)
from cosmobench.multifield.cmd import split_sims
from cosmobench.multifield.power import CMD_FIXED, map_band_power, slab_band_power, slab_power
from cosmobench.multifield.simulate import simulate_suite

BOX = 25.0


def test_band_power_of_white_noise_is_its_variance_times_pixel_area():
    npix, s, n_maps = 64, 3.0, 200
    edges = band_edges(npix, 6)
    maps = s * rng(0, "white").standard_normal((n_maps, npix, npix))
    p = map_band_power(maps, edges, box=BOX).mean(0)
    kf = 2 * np.pi * np.fft.fftfreq(npix, BOX / npix)
    kk = np.hypot(kf[:, None], kf[None, :])
    modes = np.array([np.sum((kk >= a) & (kk < b)) for a, b in zip(edges[:-1], edges[1:])])
    # |F_k|^2 is exponential: relative scatter 1 / sqrt(independent modes), a conjugate pair counting once
    tol = 5 / np.sqrt(modes / 2 * n_maps)
    assert np.all(np.abs(p / (s**2 * (BOX / npix) ** 2) - 1) < tol)


def test_band_power_of_one_fourier_mode_is_exact_and_cross_power_is_its_own_auto():
    npix, amp = 32, 2.0
    x = np.arange(npix) * BOX / npix
    k0 = 2 * np.pi * 3 / BOX  # third harmonic, along x
    m = amp * np.cos(k0 * x)[:, None] * np.ones(npix)[None, :]
    edges = np.array([0.5, 0.7, 0.8, 2.0])  # k0 = 0.754 h/Mpc falls in the middle band
    p = map_band_power(m, edges, box=BOX)
    kf = 2 * np.pi * np.fft.fftfreq(npix, BOX / npix)
    kk = np.hypot(kf[:, None], kf[None, :])
    n_modes = np.sum((kk >= 0.7) & (kk < 0.8))  # |n| in [2.79, 3.18): (3, 0), (1, 3), (2, 2), images
    assert n_modes == 16
    assert p[0] == pytest.approx(0.0, abs=1e-20) and p[2] == pytest.approx(0.0, abs=1e-20)
    assert p[1] == pytest.approx(amp**2 * BOX**2 / 4 * 2 / n_modes, rel=1e-12)  # A^2 box^2 / 4 at +-k0, averaged
    np.testing.assert_allclose(map_band_power(m, edges, box=BOX, other=m), p, rtol=1e-12)
    np.testing.assert_allclose(map_band_power(m, edges, box=BOX, other=-m), -p, rtol=1e-12)
    with pytest.raises(ValueError, match="no mode"):
        map_band_power(m, np.array([0.01, 0.02]), box=BOX)


def test_slab_projection_of_white_noise_is_p_over_slab_depth():
    """A white 3-D spectrum P0 averaged over a slab of depth L has P_2D = P0 / L (sum of sinc^2 over k_z = box/L)."""
    p0 = 7.0
    got = slab_power(lambda k: np.full_like(k, p0), np.array([0.3, 2.0]), box=BOX, slab=5.0, n=256)
    np.testing.assert_allclose(got, p0 / 5.0, rtol=5e-3)  # |m| > 128 hold ~(box/slab)/(pi^2 128) = 0.4 %
    bands = slab_band_power(lambda k: np.full_like(k, p0), band_edges(32, 4), npix=32, box=BOX, slab=5.0)
    np.testing.assert_allclose(bands, p0 / 5.0 * (1 - 5 / (np.pi**2 * 16)), rtol=5e-3)  # same tail at |m| > 16


def test_summaries_have_named_columns_and_exact_moments_of_lognormal_maps():
    g = rng(0, "maps").standard_normal((4, 32, 32))
    maps = {"Mtot": 10 ** (2 + 0.5 * g), "T": 10 ** (4 - 0.2 * g)}
    s = summaries(maps, nbands=5)
    names = summary_names(["Mtot", "T"], 5)
    assert s.shape == (4, len(names)) == (4, 2 * (10 + 5) + 5)
    col = {n: s[:, i] for i, n in enumerate(names)}
    np.testing.assert_allclose(col["Mtot:mean"], 2 + 0.5 * g.mean((1, 2)), rtol=1e-6)
    np.testing.assert_allclose(col["T:std"], 0.2 * g.std((1, 2)), rtol=1e-5)
    np.testing.assert_allclose(col["MtotxT:r0"], -1.0, atol=1e-6)  # T's log is an exact negative multiple of Mtot's


def test_ridge_recovers_a_linear_model_with_heteroscedastic_noise():
    gen = rng(0, "linear")
    d, n_sims, per = 6, 200, 5
    w = np.array([[1.0, -0.5], [0.5, 0.0], [0.0, 2.0], [0, 0], [0, 0], [0, 0]])

    def draw(n):
        x = gen.standard_normal((n * per, d))
        sd = 0.1 * np.exp(0.5 * x[:, [0]]) * np.ones((1, 2))  # noise grows with the first feature
        return x, x @ w + sd * gen.standard_normal(sd.shape), sd

    (xt, yt, _), (xv, yv, _), (xs, ys, sd) = draw(n_sims), draw(200), draw(200)
    model = SummaryRidge().fit(xt, yt, np.repeat(np.arange(n_sims), per), xv, yv)
    mu, sigma = model.predict(xs)
    assert np.sqrt(np.mean((mu - xs @ w) ** 2)) < 0.02  # mean recovered to 1/5 of the noise
    z2 = np.mean(((ys - mu) / sigma) ** 2, axis=0)
    assert np.all(np.abs(z2 - 1) < 0.15)  # calibrated on validation, checked on fresh data
    assert np.corrcoef(np.log(sigma[:, 0]), np.log(sd[:, 0]))[0, 1] > 0.8  # sigma follows the true noise
    with pytest.raises(RuntimeError, match="before fit"):
        SummaryRidge().predict(xs)


@pytest.fixture(scope="module")
def small_data(tmp_path_factory, toy_power):
    root = tmp_path_factory.mktemp("baseline_data")
    simulate_suite(
        root, "TNGlike", n_sims=80, npix=32, seed=5, fields=["Mtot", "Mgas", "T"], power=toy_power, progress=False
    )
    return root


def test_baselines_on_simulated_maps(small_data):
    split = split_sims(80, (0.5, 0.25, 0.25), seed=1)
    ridge = predict_baseline(small_data, "TNGlike", ["Mtot", "Mgas", "T"], split)
    theta, mu = ridge["theta"], ridge["mu"]
    prior_mean_err = np.sqrt(np.mean((theta[:, 1] - 0.8) ** 2))
    err = np.sqrt(np.mean((theta[:, 1] - mu[:, 1]) ** 2))
    assert err < 0.8 * prior_mean_err  # sigma_8 from the maps (measured: 0.074 vs 0.115)
    assert ridge["sigma"].shape == theta.shape and np.all(ridge["sigma"][:, :2] > 0)
    bf = predict_baseline(small_data, "TNGlike", ["Mtot", "Mgas"], split, method="baryon_fraction")
    rel = bf["mu"][:, 0] / bf["theta"][:, 0] - 1
    assert abs(np.median(rel)) < 0.02 and np.sqrt(np.mean(rel**2)) < 0.03  # measured 0.0004, 0.005
    assert np.all(np.isnan(bf["mu"][:, 1]))


def test_baryon_fraction_is_exact_without_stars_or_redistribution():
    mtot = rng(0, "m").random((3, 8, 8)) + 1
    np.testing.assert_allclose(baryon_fraction_omega_m(CMD_FIXED["omega_b"] / 0.3 * mtot, mtot), 0.3, rtol=1e-12)
