"""Needlet windows and needlet ILC: partition of unity, CMB-ML's settings, unit response, separation quality."""

from __future__ import annotations

from types import SimpleNamespace

import healpy as hp
import numpy as np
import pytest
from numpy.testing import assert_allclose

from cosmobench.cmb import needlets
from cosmobench.cmb.methods.nilc import NILC, bias_smoothing_sigma, default_gaussian_fwhms, resize_alm
from cosmobench.core.io import write_healpix
from cosmobench.core.seeds import rng
from cosmobench.sky import sht

FWHM_DEG = np.sqrt(8 * np.log(2)) * 180 / np.pi  # sigma (rad) -> FWHM (deg)


@pytest.mark.parametrize("nside", [16, 32, 128, 512, 2048])
def test_default_cosine_windows_sum_to_one_in_quadrature(nside):
    lmax = needlets.default_lmax(nside)
    h = needlets.cosine_windows(needlets.default_ellpeaks(nside), lmax)
    assert_allclose(np.sum(h**2, axis=0), 1.0, atol=1e-14)
    assert np.all(h >= 0)


def test_gaussian_windows_sum_to_one_in_quadrature():
    h = needlets.gaussian_windows(default_gaussian_fwhms(128), 382)
    assert h.shape == (5, 383)
    assert_allclose(np.sum(h**2, axis=0), 1.0, atol=1e-14)
    with pytest.raises(ValueError, match="decreasing"):
        needlets.gaussian_windows([60.0, 120.0], 100)


def test_cmbml_needlet_settings_are_reproduced():
    """CMB-ML's nside-512 CNILC: N_modes and covariance FWHM per scale (reference doc, section 5.1)."""
    assert needlets.default_lmax(512) == 1024 and needlets.default_ellpeaks(512) == [200, 715, 1025]
    assert needlets.default_lmax(128) == 382 and needlets.default_ellpeaks(128) == [100, 200, 300, 383]
    h = needlets.cosine_windows([200, 715, 1025], 1024)
    assert [round(needlets.n_modes(w)) for w in h] == [11995, 210330, 539997, 288304]
    fwhm = [bias_smoothing_sigma(needlets.n_modes(w), n, 1e-3) * FWHM_DEG for w, n in zip(h, [8, 5, 4, 4])]
    assert_allclose(fwhm, [145.8, 26.3, 14.2, 19.5], atol=0.05)
    assert [needlets.window_support(w) for w in h] == [(0, 199), (1, 714), (201, 1024), (716, 1024)]


def test_beam_criterion_drops_channels_like_pyilc():
    """At nside 512, scale 1 (ell <= 714) keeps 143-857 GHz, scales 2-3 keep 217-857 GHz (reference doc)."""
    fwhm = {"44": 65.0, "70": 55.0, "100": 43.0, "143": 32.4, "217": 22.3, "353": 22.0, "545": 21.5, "857": 20.6}
    beams = np.stack([sht.gauss_beam(f, 1024) for f in fwhm.values()])
    nilc = NILC()
    windows = needlets.cosine_windows([200, 715, 1025], 1024)
    used = [len(nilc._usable(beams, needlets.window_support(w)[1])) for w in windows]
    assert used == [8, 5, 4, 4]


def test_resize_alm_round_trip():
    a = sht.synalm(np.ones(41), 40, rng(0, "alm"))
    small = resize_alm(a, 20)
    assert_allclose(sht.alm2cl(small), sht.alm2cl(a)[:21])
    back = resize_alm(small, 40)
    assert_allclose(back[sht.alm_ell(40) <= 20], a[sht.alm_ell(40) <= 20])
    assert np.all(back[sht.alm_ell(40) > 20] == 0)


def _channel(band: str, fwhm: float, fields: str = "I") -> SimpleNamespace:
    return SimpleNamespace(band=band, center_ghz=float(band), fwhm_arcmin=fwhm, fields=fields, depth_i=1.0, depth_p=1.4)


BEAMS = {"44": 65.0, "70": 55.0, "100": 43.0, "143": 32.4, "217": 22.3, "353": 22.0}


def _cmb_cl(lmax: int) -> np.ndarray:
    ell = np.arange(lmax + 1)
    cl = np.zeros((4, lmax + 1))
    cl[0, 2:] = 2 * np.pi * 3000.0 / (ell[2:] * (ell[2:] + 1))
    cl[1, 2:] = cl[0, 2:] * 0.02
    cl[2, 2:] = cl[0, 2:] * 0.002
    cl[3, 2:] = cl[0, 2:] * 0.1
    return cl


def _fg_sed(nu: float) -> float:
    """Foreground amplitude (uK_CMB per unit template) at ``nu`` GHz: dust-like plus synchrotron-like."""
    return 300.0 * (nu / 353.0) ** 3.5 + 50.0 * (nu / 44.0) ** -3.0


def _sky(nside: int, seed: int, *, fg: bool, noise: float, pol: bool = False, fg_scale: float = 1.0):
    """Band-limited (ell <= 2 nside) CMB + dust-like + synchrotron-like foreground + white noise, beams above."""
    lmax = 2 * nside
    cmb = sht.synalm(_cmb_cl(lmax), lmax, rng(seed, "cmb"))[: 3 if pol else 1]
    _, lat = hp.pix2ang(nside, np.arange(sht.npix(nside)), lonlat=True)
    profile = np.exp(-np.abs(np.sin(np.radians(lat))) / 0.2)
    ell = np.arange(lmax + 1)
    ell = np.arange(3 * nside)
    cl_fg = np.where(ell > 0, np.maximum(ell, 1.0) ** -2.5, 0.0)
    template = profile * (2 + 0.3 * sht.alm2map(sht.synalm(cl_fg, 3 * nside - 1, rng(seed, "fg")), nside))
    obs, chans = {}, []
    for band, fwhm in BEAMS.items():
        nu = float(band)
        sky = sht.alm2map(cmb, nside)
        sky = sky[None] if sky.ndim == 1 else sky
        if fg:
            amp = fg_scale * _fg_sed(nu)
            sky = sky + np.stack([amp * template] * sky.shape[0])
        alm = sht.map2alm(sky, lmax, 10)
        bl = sht.gauss_beam(fwhm, lmax, pol=True)[: sky.shape[0]]
        m = sht.alm2map(sht.almxfl(alm, bl), nside)
        m = m + noise * rng(seed, "noise", band).standard_normal(m.shape)
        obs[band] = np.atleast_2d(m)
        chans.append(_channel(band, fwhm, "IQU" if pol else "I"))
    return obs, chans, cmb, template


def _at_beam(alm: np.ndarray, fwhm: float, lmax: int, nside: int, pol: bool = False) -> np.ndarray:
    bl = sht.gauss_beam(fwhm, lmax, pol=True)[: alm.shape[0]] if pol else sht.gauss_beam(fwhm, lmax)
    return sht.alm2map(sht.almxfl(resize_alm(alm, lmax), bl), nside)


@pytest.mark.parametrize("needlet", ["cosine", "gaussian"])
def test_nilc_has_unit_response_to_the_cmb(needlet):
    """CMB only, different beams, no noise: any unit-response combination returns the CMB at the output beam."""
    nside = 32
    obs, chans, cmb, _ = _sky(nside, 1, fg=False, noise=0.0)
    lmax = 2 * nside
    out = NILC(fields="I", needlet=needlet, lmax=lmax, sht_iter=10).predict(obs, chans)
    truth = _at_beam(cmb[0], 20.6, lmax, nside)
    assert np.sqrt(np.mean((out - truth) ** 2)) < 1e-7 * truth.std()


def test_nilc_unit_response_holds_with_a_mask(tmp_path):
    nside = 32
    obs, chans, cmb, _ = _sky(nside, 2, fg=False, noise=0.0)
    _, lat = hp.pix2ang(nside, np.arange(sht.npix(nside)), lonlat=True)
    write_healpix(tmp_path / "mask.fits", (np.abs(lat) > 20).astype(float))
    out = NILC(fields="I", lmax=64, sht_iter=10, mask=tmp_path / "mask.fits").predict(obs, chans)
    truth = _at_beam(cmb[0], 20.6, 64, nside)
    assert np.sqrt(np.mean((out - truth) ** 2)) < 1e-7 * truth.std()


def test_nilc_removes_foregrounds():
    """A foreground with one SED costs the ILC one degree of freedom whatever its brightness.

    Its only trace in the output is the chance CMB-foreground correlation (ILC bias), which does not scale
    with the foreground: making the foreground 30 times brighter leaves the residual unchanged, while a
    single channel's contamination grows 30-fold.
    """
    nside, lmax = 32, 64
    resid = {}
    for scale in (1.0, 30.0):
        obs, chans, cmb, template = _sky(nside, 3, fg=True, noise=3.0, fg_scale=scale)
        truth = _at_beam(cmb[0], 20.6, lmax, nside)
        for needlet in ("cosine", "gaussian"):
            resid[needlet, scale] = NILC(fields="I", needlet=needlet, lmax=lmax).predict(obs, chans) - truth
    fg = _at_beam(sht.map2alm(template, lmax, 10), 20.6, lmax, nside)
    cleanest = min(_fg_sed(float(b)) for b in BEAMS) * np.std(fg)
    for needlet in ("cosine", "gaussian"):
        low, high = resid[needlet, 1.0], resid[needlet, 30.0]
        assert np.std(high - low) < 0.1 * np.std(low)
        assert np.std(high) < 0.25 * truth.std()
        assert np.std(high) < 0.2 * 30 * cleanest


def test_nilc_polarisation_has_unit_response():
    """fields=IQU (the default): I, Q, U of the CMB at the output beam (E and B beams), band-limited at lmax."""
    nside = 16
    obs, chans, cmb, _ = _sky(nside, 4, fg=False, noise=0.0, pol=True)
    lmax = 2 * nside
    nilc = NILC(lmax=lmax, sht_iter=10)
    iqu = nilc.predict(obs, chans)
    truth = _at_beam(cmb, 20.6, lmax, nside, pol=True)
    assert iqu.shape == (3, sht.npix(nside)) and nilc.output_lmax_for(nside) == lmax
    for field in range(3):
        assert np.sqrt(np.mean((iqu[field] - truth[field]) ** 2)) < 1e-7 * truth[field].std()
    np.testing.assert_array_equal(iqu[1:], nilc.predict_pol(obs, chans))


def test_nilc_rejects_bad_settings():
    with pytest.raises(ValueError, match="needlet"):
        NILC(needlet="mexican")
    with pytest.raises(ValueError, match="ilc_bias_tol"):
        NILC(ilc_bias_tol=0)
    with pytest.raises(TypeError):
        NILC(ellpeak=[10])
