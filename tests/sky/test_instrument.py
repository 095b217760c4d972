"""Instrument: channel table, bandpasses, beams (against the analytic B_ell), unit response, noise streams."""

from __future__ import annotations

import astropy.units as u
import numpy as np
import pytest
from numpy.testing import assert_allclose
from scipy import constants, integrate

from cosmobench.core.seeds import rng
from cosmobench.sky import sht, units
from cosmobench.sky.components import Component, Sky
from cosmobench.sky.foregrounds import make_foregrounds, synthetic_foregrounds
from cosmobench.sky.instrument import (
    Channel,
    Instrument,
    bandpass_weights,
    beam_lmax,
    load_channels,
    planck_like,
)
from cosmobench.sky.noise import noise_maps, pixel_side_arcmin
from cosmobench.sky.units import kcmb_to_krj, unit_factor

NSIDE = 16
CENTERS = [28.4, 44.1, 70.4, 100.89, 142.876, 221.156, 357.5, 555.2, 866.8]
FWHMS = [75.0, 65.0, 55.0, 43.0, 32.4, 22.3, 22.0, 21.5, 20.6]


class ExactCMB(Component):
    """A CMB-like component with exact alm (flat SED in K_CMB), as cosmobench.sky.cmb.CMB provides."""

    def __init__(self, nside: int, seed: int):
        self.nside = nside
        self.lmax = sht.default_lmax(nside)
        ell = np.arange(self.lmax + 1)
        cl = np.zeros((4, self.lmax + 1))
        cl[0, 2:] = 2 * np.pi * 2500 / (ell[2:] * (ell[2:] + 1))
        cl[1, 2:] = cl[0, 2:] / 30
        cl[2, 2:] = cl[0, 2:] / 300
        cl[3, 2:] = 0.3 * np.sqrt(cl[0, 2:] * cl[1, 2:])
        self.alm = sht.synalm(cl, self.lmax, np.random.default_rng(seed))  # uK_CMB

    def emission_alm(self, freq, lmax, iter=0):
        keep = np.concatenate([m * (2 * self.lmax + 3 - m) // 2 + np.arange(lmax + 1 - m) for m in range(lmax + 1)])
        return self.alm[:, keep] * kcmb_to_krj(freq.to_value(u.GHz)) << units.uK_RJ

    def emission(self, freq):
        return sht.alm2map(self.emission_alm(freq, self.lmax).value, self.nside) << units.uK_RJ


class MapComponent(Component):
    """A fixed I, Q, U map in uK_RJ with no frequency dependence (analysed like any foreground)."""

    def __init__(self, maps):
        self.maps = np.asarray(maps)
        self.nside = sht.nside_of(self.maps)

    def emission(self, freq):
        return self.maps << units.uK_RJ


# ------------------------------------------------------------------------------------------ channel table


def test_default_table_values():
    chans = load_channels()
    assert [c.band for c in chans] == ["30", "44", "70", "100", "143", "217", "353", "545", "857"]
    assert [c.center_ghz for c in chans] == CENTERS
    assert [c.fwhm_arcmin for c in chans] == FWHMS
    assert [c.fields for c in chans] == ["IQU"] * 7 + ["I"] * 2
    assert all(c.bandpass == "delta" and c.ell_knee == 0 for c in chans)
    # Planck 2018 I, Table 4, uK_CMB deg -> uK arcmin
    assert_allclose([c.depth_i for c in chans[:7]], np.array([2.5, 2.7, 3.5, 1.29, 0.55, 0.78, 2.56]) * 60)
    assert_allclose([c.depth_p for c in chans[:7]], np.array([3.5, 4.0, 5.0, 1.96, 1.17, 1.75, 7.31]) * 60)
    # 545/857: kJy/sr deg converted at the delta-band centre
    for ch, kjy in zip(chans[7:], [0.78, 0.72]):
        expected = kjy * 1e-3 * unit_factor(ch.center_ghz, "MJy/sr", "uK_CMB") * 60
        assert_allclose(ch.depth_i, expected, rtol=1e-4)
        assert_allclose(ch.depth_p, np.sqrt(2) * expected, rtol=1e-4)


def test_select_bands_and_fields():
    chans = load_channels(bands=["857", "100"], fields="IQU")
    assert [c.band for c in chans] == ["857", "100"]
    assert all(c.fields == "IQU" for c in chans)
    assert [c.band for c in load_channels(bands=[100, 143])] == ["100", "143"]
    with pytest.raises(ValueError, match=r"unknown band.*'90'.*'30'"):
        load_channels(bands=["90"])
    with pytest.raises(ValueError, match="fields"):
        load_channels(fields="QU")


def test_user_table(tmp_path):
    path = tmp_path / "mine.tbl"
    path.write_text(
        "# my instrument\nband center_ghz fwhm_arcmin depth_i depth_p bandpass bandwidth\n"
        "90 90.0 10.0 5.0 7.0 tophat 0.25\n150 150 7 6 8.5 delta 0\n"
    )
    chans = load_channels(path)
    assert chans[0] == Channel(
        band="90", center_ghz=90.0, fwhm_arcmin=10.0, depth_i=5.0, depth_p=7.0, bandpass="tophat", bandwidth=0.25
    )
    assert chans[1].fields == "IQU" and chans[1].alpha_knee == -2.0
    path.write_text("band center_ghz fwhm depth_i depth_p\n90 90 10 5 7\n")
    with pytest.raises(ValueError, match="unknown column"):
        load_channels(path)


@pytest.mark.parametrize(
    "bad, match",
    [
        ({"fields": "QU"}, "fields"),
        ({"bandpass": "gauss"}, "bandpass"),
        ({"bandpass": "tophat"}, "bandwidth"),
        ({"center_ghz": -1.0}, "center_ghz"),
        ({"depth_i": -1.0}, "depth_i"),
    ],
)
def test_channel_validation(bad, match):
    kw = dict(band="x", center_ghz=100.0, fwhm_arcmin=10.0, depth_i=1.0, depth_p=1.0) | bad
    with pytest.raises(ValueError, match=match):
        Channel(**kw)


def test_instrument_validation():
    ch = load_channels(bands=["100"])[0]
    with pytest.raises(ValueError, match="duplicate"):
        Instrument([ch, ch])
    with pytest.raises(ValueError, match="at least one"):
        Instrument([])


# ------------------------------------------------------------------------------------------ bandpasses


def test_delta_bandpass_weight_is_rj_to_cmb():
    ch = load_channels(bands=["353"])[0]
    freqs, w = bandpass_weights(ch)
    assert_allclose(freqs, [357.5])
    assert_allclose(w, [unit_factor(357.5, "uK_RJ", "uK_CMB")], rtol=1e-14)


def test_tophat_leaves_cmb_unchanged_and_integrates_a_power_law():
    ch = Channel(band="x", center_ghz=150.0, fwhm_arcmin=5.0, depth_i=1, depth_p=1, bandpass="tophat", bandwidth=0.3)
    freqs, w = bandpass_weights(ch)
    assert freqs.min() == pytest.approx(127.5) and freqs.max() == pytest.approx(172.5)
    assert_allclose(np.sum(w * unit_factor(freqs, "uK_CMB", "uK_RJ")), 1.0, rtol=1e-12)
    # a power law in RJ temperature: <I_nu> / <dB/dT_CMB> with the exact integrals
    x = lambda nu: constants.h * nu * 1e9 / (constants.k * 2.7255)  # noqa: E731
    rj = lambda nu: 2 * constants.k * (nu * 1e9) ** 2 / constants.c**2  # noqa: E731
    dbdt = lambda nu: rj(nu) * x(nu) ** 2 * np.exp(x(nu)) / np.expm1(x(nu)) ** 2  # noqa: E731
    t_rj = lambda nu: (nu / 150.0) ** -3.0  # noqa: E731
    exact = integrate.quad(lambda nu: rj(nu) * t_rj(nu), 127.5, 172.5)[0] / integrate.quad(dbdt, 127.5, 172.5)[0]
    assert_allclose(np.sum(w * t_rj(freqs)), exact, rtol=2e-3)  # 11-point trapezoid


# ------------------------------------------------------------------------------------------ beams


def test_beam_lmax_cut_is_where_the_beam_vanishes():
    lmax = 2000
    cut = beam_lmax(75.0, lmax, tol=1e-7)
    bl = sht.gauss_beam(75.0, lmax)
    assert bl[cut] < 1e-7 <= bl[cut - 1]
    assert beam_lmax(0.0, lmax) == lmax
    assert beam_lmax(1.0, 100) == 100


def test_beam_smoothing_matches_analytic_bl():
    """A foreground map observed without noise: output alm / input alm = B_ell (T) and the pol beam (E, B)."""
    lmax = 2 * NSIDE  # HEALPix analysis with Jacobi iterations is exact to ~1e-8 below 2 nside
    cl = np.ones((4, lmax + 1))
    cl[3] = 0.0
    alm_in = sht.synalm(cl, lmax, np.random.default_rng(2))
    comp = MapComponent(sht.alm2map(alm_in, NSIDE))
    ch = Channel(band="b", center_ghz=100.0, fwhm_arcmin=300.0, depth_i=0, depth_p=0)
    bl = sht.gauss_beam(300.0, lmax, pol=True)
    ell = sht.alm_ell(lmax)
    for tol in (0.0, 0.01):  # without, then with the sky window (a scalar Gaussian on T, E and B alike)
        inst = Instrument([ch], beam_tol=0, sky_window_tol=tol)
        out = inst.observe(comp, seed=0, noise=False, lmax=lmax, fg_iter=10)["b"]
        alm_out = sht.map2alm(out, lmax=lmax, iter=10) / unit_factor(100.0, "uK_RJ", "uK_CMB")
        window = sht.gauss_beam(inst.sky_window_fwhm(lmax), lmax)
        assert (inst.sky_window_fwhm(lmax) > 0) == (tol > 0)
        for k in range(3):
            sel = ell >= (2 if k else 0)
            assert_allclose(alm_out[k, sel], alm_in[k, sel] * (bl[k] * window)[ell[sel]], atol=1e-6)
    assert bl[1, 30] > bl[0, 30]  # the spin-2 beam differs from the temperature one


def test_sky_window_width():
    """Window x narrowest beam = tol at the band limit; no window where the beams alone vanish (nside 512)."""
    inst = planck_like()
    for lmax in (95, 383):
        total = np.hypot(inst.sky_window_fwhm(lmax), 20.6)  # 20.6' is the narrowest beam (857 GHz)
        assert_allclose(sht.gauss_beam(total, lmax)[-1], 0.01, rtol=0.06)  # ell (ell + 1) here, ell^2 in the width
    assert inst.sky_window_fwhm(1535) == 0.0
    assert Instrument(inst.channels, sky_window_tol=0).sky_window_fwhm(95) == 0.0
    with pytest.raises(ValueError, match="sky_window_tol"):
        Instrument(inst.channels, sky_window_tol=1.0)


def _check_no_ringing(nside: int, model: str, seed: int) -> None:
    """Foregrounds alone, noise-free, at 353 and 857 GHz: no pixel below -(5 sigma_noise + 5 sigma_CMB).

    sigma_noise is the white-noise rms per pixel at the mean hit count, sigma_CMB = 110 uK_CMB; before the sky
    window the minima were -2.6e3 / -5.1e6 uK_CMB at nside 64 (seed 0) against thresholds of -514 / -3.6e3.
    """
    inst = planck_like(bands=["353", "857"])
    fgs = make_foregrounds("synthetic", nside, np.random.default_rng(seed), model=model)
    obs = inst.observe(Sky(fgs), seed=0, noise=False)
    for ch in inst.channels:
        floor = -(5 * ch.depth_i / pixel_side_arcmin(nside) + 5 * 110.0)
        assert obs[ch.band][0].min() > floor, (ch.band, obs[ch.band][0].min(), floor)


@pytest.mark.parametrize("nside", [32, 64])
@pytest.mark.parametrize("model", ["default", "alt", "filament"])
def test_no_beam_ringing_around_the_galactic_plane(nside, model):
    _check_no_ringing(nside, model, seed=0)


@pytest.mark.slow
@pytest.mark.parametrize("seed", [1, 2])
def test_no_beam_ringing_nside_128(seed):
    _check_no_ringing(128, "default", seed)


def test_unit_response_cmb_only():
    """A pure CMB sky gives the beam-smoothed CMB in uK_CMB in every channel, delta or top-hat."""
    cmb = ExactCMB(NSIDE, seed=5)
    chans = load_channels(fields="IQU") + [
        Channel(band="th", center_ghz=150.0, fwhm_arcmin=30.0, bandpass="tophat", bandwidth=0.25, depth_i=1, depth_p=1)
    ]
    obs = Instrument(chans).observe(Sky([cmb]), seed=0, noise=False)
    for ch in chans:
        bl = sht.gauss_beam(ch.fwhm_arcmin, cmb.lmax, pol=True)
        expected = sht.alm2map(sht.almxfl(cmb.alm, bl), NSIDE)
        assert_allclose(obs[ch.band], expected, atol=1e-6 * expected.std())


# ------------------------------------------------------------------------------------------ observe


@pytest.fixture(scope="module")
def sky():
    fgs = synthetic_foregrounds(NSIDE, np.random.default_rng(0))
    return Sky([ExactCMB(NSIDE, seed=1), *fgs])


def test_observe_shapes_fields_and_timings(sky):
    inst = planck_like()
    timings = {}
    obs = inst.observe(sky, seed=3, key=("Train", 0), timings=timings)
    assert list(obs) == inst.bands
    for ch in inst.channels:
        assert obs[ch.band].shape == (ch.nfield, sht.npix(NSIDE))
        assert obs[ch.band].dtype == np.float64
        assert np.all(np.isfinite(obs[ch.band]))
    assert obs["545"].shape[0] == 1 and obs["100"].shape[0] == 3
    assert set(timings) == {"foregrounds", "beams", "noise"} and all(v > 0 for v in timings.values())
    # foregrounds dominate at 857 GHz and at 30 GHz in the plane; the CMB at 100 GHz at high latitude
    assert obs["857"][0].std() > 10 * obs["143"][0].std()


def test_observe_sky_is_sum_of_parts(sky):
    """observe is linear: sky = CMB part + foreground part, channel by channel (noise off)."""
    inst = planck_like(bands=["44", "217"])
    total = inst.observe(sky, seed=0, noise=False, fg_iter=1)
    cmb = inst.observe(sky.components[0], seed=0, noise=False)
    fgs = inst.observe(Sky(sky.components[1:]), seed=0, noise=False, fg_iter=1)
    for band in inst.bands:
        assert_allclose(total[band], cmb[band] + fgs[band], atol=1e-8 * np.abs(total[band]).max())


def test_observe_noise_streams(sky):
    inst = planck_like(bands=["70", "857"])
    clean = inst.observe(sky, seed=4, key=("Valid", 2), noise=False)
    noisy = inst.observe(sky, seed=4, key=("Valid", 2))
    again = inst.observe(sky, seed=4, key=("Valid", 2))
    other = inst.observe(sky, seed=4, key=("Valid", 3))
    for ch in inst.channels:
        expected = noise_maps(ch, NSIDE, rng(4, "Valid", 2, "noise", ch.band))
        assert_allclose(noisy[ch.band] - clean[ch.band], expected, atol=1e-9 * np.abs(expected).max())
        assert np.array_equal(noisy[ch.band], again[ch.band])
        assert not np.allclose(noisy[ch.band], other[ch.band])
