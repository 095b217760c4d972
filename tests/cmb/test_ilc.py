"""ILC weights and harmonic ILC: unit response, minimum variance, exact recovery without noise."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
from numpy.testing import assert_allclose

from cosmobench.cmb.methods.ilc import HILC, cross_spectra, ilc_weights
from cosmobench.core.seeds import rng
from cosmobench.sky import sht


def _spd_stack(n: int, nch: int, seed: int) -> np.ndarray:
    x = rng(seed, "spd").standard_normal((n, nch, 3 * nch))
    return x @ np.swapaxes(x, -1, -2) / (3 * nch) + 0.1 * np.eye(nch)


def _channel(band: str, fwhm: float, fields: str = "I") -> SimpleNamespace:
    return SimpleNamespace(band=band, center_ghz=float(band), fwhm_arcmin=fwhm, fields=fields, depth_i=1.0, depth_p=1.4)


def test_weights_sum_to_one_on_cmb_sed():
    cov = _spd_stack(200, 6, seed=1) * np.logspace(0, 6, 6)[:, None] * np.logspace(0, 6, 6)[None, :]
    w = ilc_weights(cov)
    assert w.shape == (200, 6)
    assert_allclose(w.sum(axis=-1), 1.0, atol=1e-12)


def test_weights_are_the_minimum_variance_solution():
    cov = _spd_stack(50, 5, seed=2)
    w = ilc_weights(cov, ridge=0.0)
    cinv_a = np.linalg.solve(cov, np.ones((50, 5, 1)))[..., 0]
    assert_allclose(w, cinv_a / cinv_a.sum(-1, keepdims=True), rtol=1e-10, atol=1e-12)
    # any other unit-response weights have larger variance
    delta = rng(2, "perturb").standard_normal((50, 5))
    delta -= delta.mean(-1, keepdims=True)  # keeps sum(w) = 1
    var = np.einsum("pi,pij,pj->p", w, cov, w)
    var_other = np.einsum("pi,pij,pj->p", w + 0.1 * delta, cov, w + 0.1 * delta)
    assert np.all(var_other > var)


def test_constrained_weights_null_the_deprojected_sed():
    cov = _spd_stack(30, 5, seed=3)
    sed = np.linspace(0.5, 1.5, 5)
    dust = np.array([0.1, 0.3, 1.0, 3.0, 10.0])
    w = ilc_weights(cov, sed, deproject=dust[None])
    assert_allclose(w @ sed, 1.0, atol=1e-12)
    assert_allclose(w @ dust, 0.0, atol=1e-10)


def test_ilc_recovers_cmb_exactly_with_one_uncorrelated_foreground_and_no_noise():
    """d_p = c_p a + g_p f with the foreground uncorrelated with the CMB: the ILC output is c_p to rounding."""
    npix, nch = 5000, 4
    c = rng(4, "cmb").standard_normal(npix)
    g = rng(4, "fg").standard_normal(npix) * 30
    g -= (g @ c) / (c @ c) * c  # zero empirical correlation: no ILC bias
    f = np.array([0.2, 1.0, 4.0, 15.0])
    d = np.ones(nch)[:, None] * c + f[:, None] * g
    w = ilc_weights(d @ d.T / npix)  # rank 2, singular without the ridge
    assert_allclose(w @ d, c, atol=1e-7 * np.abs(c).max())
    assert abs(w @ f) < 1e-8


@pytest.mark.parametrize("sigma_n", [1e-3, 3e-2])
def test_ilc_bias_is_the_cmb_projected_on_the_nuisance(sigma_n):
    """The ILC bias of Delabrouille et al. (2009): weights fitted on N_p samples of CMB + white noise in N_c
    channels leave an error -P s + (1-P) w.n, P the projection onto the N_c-1 constraint-free nuisance
    combinations, so its power is (N_c - 1)/N_p of the CMB's plus the noise's sigma^2/N_c, whatever the noise
    level; and <e s> = -<e e> up to the noise term (the error is the CMB's own chance correlation)."""
    n_p, n_c, trials = 4000, 9, 200
    frac, rho = [], []
    for t in range(trials):
        s = rng(11, "cmb", t).standard_normal(n_p)
        d = s + sigma_n * rng(11, "noise", t).standard_normal((n_c, n_p))
        e = ilc_weights(d @ d.T / n_p) @ d - s
        frac.append(e @ e / (s @ s))
        rho.append(-(e @ s) / (e @ e))
    expected = (n_c - 1) / n_p + sigma_n**2 / n_c
    assert np.mean(frac) == pytest.approx(expected, rel=0.1)  # MC error 3.5 %
    assert np.mean(rho) == pytest.approx((n_c - 1) / n_p / expected, rel=0.1)


def test_ilc_bias_lands_where_the_nuisance_is():
    """The same fit with a bright nuisance of full rank in a fifth of the samples (a galactic plane): the free
    combinations are spent on it, so the CMB's projection falls there and the other samples keep under 1 % of the
    (N_c - 1)/N_p the noise-only sky spreads everywhere (NILC without foregrounds, docs/cmb_methods.md)."""
    n_p, n_c, trials = 4000, 9, 50
    gal = np.arange(n_p) < n_p // 5
    share = []
    for t in range(trials):
        s = rng(12, "cmb", t).standard_normal(n_p)
        d = s + 1e-3 * rng(12, "noise", t).standard_normal((n_c, n_p))
        mix = rng(12, "sed", t).standard_normal((n_c, n_c))
        d[:, gal] += 30.0 * mix @ rng(12, "fg", t).standard_normal((n_c, int(gal.sum())))
        e = ilc_weights(d @ d.T / n_p) @ d - s
        share.append(e[~gal] @ e[~gal] / (s[~gal] @ s[~gal]))
    assert np.mean(share) < 0.01 * (n_c - 1) / n_p


def test_ilc_weights_rejects_bad_input():
    with pytest.raises(ValueError, match="shape"):
        ilc_weights(np.ones((3, 4, 5)))
    with pytest.raises(ValueError, match="diagonal"):
        ilc_weights(np.zeros((2, 2)))


def _white_alm(lmax: int, seed: int, key: str, amp: float, slope: float) -> np.ndarray:
    ell = np.arange(lmax + 1)
    cl = amp * (np.maximum(ell, 2) / 10.0) ** slope
    return sht.synalm(cl, lmax, rng(seed, key))


def test_hilc_returns_cmb_with_foreground_and_no_noise():
    """HILC on CMB + one foreground (orthogonal to the CMB in every bin), different beams, no noise."""
    nside, lmax, dl = 32, 64, 16
    cmb = _white_alm(lmax, 5, "cmb", 100.0, -2.0)
    fg = _white_alm(lmax, 5, "fg", 3000.0, -2.5)
    # orthogonalise the foreground against the CMB within each HILC bin, as HILC weighs modes at its output
    # beam (no chance correlation, so no ILC bias)
    b_out = sht.gauss_beam(20.6, lmax)
    cl = cross_spectra(np.stack([cmb, fg])) * b_out**2
    ell_alm = sht.alm_ell(lmax)
    two_l = 2 * np.arange(lmax + 1) + 1
    for lo in range(0, lmax + 1, dl):
        sl = slice(lo, min(lo + dl, lmax + 1))
        coef = np.sum(two_l[sl] * cl[0, 1, sl]) / np.sum(two_l[sl] * cl[0, 0, sl])
        sel = (ell_alm >= sl.start) & (ell_alm < sl.stop)
        fg[sel] -= coef * cmb[sel]
    sed = {"70": 5.0, "100": 2.0, "143": 1.0, "217": 3.0}
    beams = {"70": 55.0, "100": 43.0, "143": 32.4, "217": 22.3}
    chans = [_channel(b, beams[b]) for b in sed]
    obs = {b: sht.alm2map(sht.almxfl(cmb + sed[b] * fg, sht.gauss_beam(beams[b], lmax)), nside)[None] for b in sed}
    out = HILC(fields="I", delta_ell=dl, lmax=lmax, output_beam_arcmin=20.6, sht_iter=10).predict(obs, chans)
    truth = sht.alm2map(sht.almxfl(cmb, b_out), nside)
    assert np.sqrt(np.mean((out - truth) ** 2)) < 1e-8 * truth.std()


def test_hilc_beats_the_best_channel_with_noise():
    nside, lmax = 32, 64
    cmb = _white_alm(lmax, 6, "cmb", 100.0, -2.0)
    dust = sht.alm2map(_white_alm(lmax, 6, "dust", 2000.0, -2.5), nside)
    sed = {"100": 0.3, "143": 0.6, "217": 2.0, "353": 10.0}
    chans = [_channel(b, 30.0) for b in sed]
    bl = sht.gauss_beam(30.0, lmax)
    cmb_map = sht.alm2map(sht.almxfl(cmb, bl), nside)
    obs = {}
    for b, s in sed.items():
        noise = rng(6, "noise", b).standard_normal(cmb_map.size) * 2.0
        obs[b] = (cmb_map + s * sht.smooth(dust, 30.0, lmax) + noise)[None]
    out = HILC(fields="I", lmax=lmax, output_beam_arcmin=30.0).predict(obs, chans)
    rms = np.sqrt(np.mean((out - cmb_map) ** 2))
    best_channel = min(np.sqrt(np.mean((obs[b][0] - cmb_map) ** 2)) for b in sed)
    assert rms < 0.3 * best_channel
    assert rms < 0.1 * cmb_map.std()


def test_channel_selection_defaults_and_errors():
    chans = [_channel(b, 30.0) for b in ("30", "44", "70")]
    obs = {c.band: np.zeros((1, 12 * 16**2)) for c in chans}
    assert [c.band for c in HILC()._channels(obs, chans, pol=False)] == ["44", "70"]
    with pytest.raises(ValueError, match="not among"):
        HILC(bands=["44", "999"])._channels(obs, chans, pol=False)
    with pytest.raises(ValueError, match="at least 2"):
        HILC(bands=["44"])._channels(obs, chans, pol=False)
    with pytest.raises(ValueError, match="at least 2 polarised"):
        HILC()._channels(obs, chans, pol=True)
    with pytest.raises(TypeError):
        HILC(delta=10)


def test_iqu_prediction_stacks_the_temperature_and_the_polarisation_ilcs():
    """fields=IQU (the default) returns (3, npix): the T ILC, then Q, U of the E and B ILCs, exactly."""
    nside, lmax = 16, 40
    chans = [_channel(b, 30.0, "IQU") for b in ("70", "100", "143")] + [_channel("545", 5.0)]
    obs = {c.band: rng(7, "sky", c.band).standard_normal((3 if c.fields == "IQU" else 1, 12 * nside**2)) for c in chans}
    hilc = HILC(lmax=lmax)
    assert hilc.fields == "IQU" and hilc.output_lmax_for(nside) == lmax
    out = hilc.predict(obs, chans)
    assert out.shape == (3, 12 * nside**2)
    np.testing.assert_array_equal(out[0], HILC(lmax=lmax, fields="I").predict(obs, chans))
    np.testing.assert_array_equal(out[0], hilc.predict_temperature(obs, chans))
    np.testing.assert_array_equal(out[1:], hilc.predict_pol(obs, chans))
    assert HILC().output_lmax_for(nside) == 3 * nside - 2  # CMB-ML's default band limit at nside <= 256


def test_iqu_without_two_polarised_channels_names_the_fix():
    chans = [_channel(b, 30.0) for b in ("70", "100", "143")] + [_channel("217", 30.0, "IQU")]
    obs = {c.band: np.ones((1, 12 * 8**2)) for c in chans}
    with pytest.raises(ValueError, match=r"at least 2 polarised \(IQU\) channels, got \['217'\].*set fields=I"):
        HILC().predict(obs, chans)
    with pytest.raises(ValueError, match="fields"):
        HILC(fields="QU")
