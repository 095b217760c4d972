"""Noise: hit map, white-noise depth per channel, independence of streams, correlated-noise spectrum."""

from __future__ import annotations

import healpy as hp
import numpy as np
import pytest

from cosmobench.core.seeds import rng
from cosmobench.sky import sht
from cosmobench.sky.instrument import Channel, load_channels
from cosmobench.sky.noise import correlated_noise, hit_map, noise_maps, pixel_side_arcmin, white_noise

NSIDE = 32


def test_hit_map_is_deterministic_positive_mean_one():
    h = hit_map(NSIDE)
    assert h.shape == (sht.npix(NSIDE),)
    assert np.all(h > 0)
    assert abs(h.mean() - 1) < 1e-12
    hit_map.cache_clear()
    assert np.array_equal(hit_map(NSIDE), h)


def test_hit_map_scan_geometry():
    """More hits near the ecliptic poles than on the ecliptic, as in Planck's scan."""
    h = hit_map(NSIDE)
    vec = np.array(hp.pix2vec(NSIDE, np.arange(h.size)))
    ecl_lat = np.degrees(np.arcsin(hp.Rotator(coord=["G", "E"])(vec)[2]))
    near_pole, near_ecliptic = np.abs(ecl_lat) > 80, np.abs(ecl_lat) < 10
    assert h[near_pole].mean() > 3 * h[near_ecliptic].mean()


def test_pixel_side():
    assert np.isclose(pixel_side_arcmin(512), 6.87, atol=0.01)


@pytest.mark.parametrize("channel", load_channels(), ids=lambda c: c.band)
def test_white_noise_rms_matches_depth_per_channel(channel):
    """Pixel variance x hits x pixel area is depth^2 on average, per Stokes map (5 sigma of chi^2 scatter)."""
    hits = hit_map(NSIDE)
    maps = noise_maps(channel, NSIDE, rng(0, "test", channel.band), hits)
    assert maps.shape == (channel.nfield, sht.npix(NSIDE))
    depths = [channel.depth_i] + [channel.depth_p] * (channel.nfield - 1)
    tol = 5 * np.sqrt(2 / hits.size)
    for m, depth in zip(maps, depths):
        normalised = m**2 * hits * pixel_side_arcmin(NSIDE) ** 2 / depth**2
        assert abs(normalised.mean() - 1) < tol
    assert abs(np.corrcoef(maps[0] ** 2, 1 / hits)[0, 1]) > 0.1  # anisotropic: follows the hits


def test_white_noise_uniform_without_hits():
    m = white_noise(NSIDE, 30.0, np.random.default_rng(1), nfield=2)
    assert m.shape == (2, sht.npix(NSIDE)) and m.dtype == np.float64
    assert abs(m.std() * pixel_side_arcmin(NSIDE) / 30.0 - 1) < 5 / np.sqrt(m.size)


def test_white_noise_rejects_bad_hits():
    with pytest.raises(ValueError, match="hits"):
        white_noise(NSIDE, 1.0, np.random.default_rng(0), hits=np.ones(10))
    with pytest.raises(ValueError, match="positive"):
        white_noise(NSIDE, 1.0, np.random.default_rng(0), hits=np.zeros(sht.npix(NSIDE)))


def test_noise_independent_across_channels_and_simulations():
    ch = load_channels(bands=["100"])[0]
    a = noise_maps(ch, NSIDE, rng(3, "Train", 0, "noise", "100"))
    b = noise_maps(ch, NSIDE, rng(3, "Train", 1, "noise", "100"))  # next simulation
    c = noise_maps(ch, NSIDE, rng(3, "Train", 0, "noise", "143"))  # other channel, same simulation
    again = noise_maps(ch, NSIDE, rng(3, "Train", 0, "noise", "100"))
    assert np.array_equal(a, again)
    limit = 5 / np.sqrt(a.size)
    for other in (b, c):
        assert abs(np.corrcoef(a.ravel(), other.ravel())[0, 1]) < limit
    assert abs(np.corrcoef(a[1], a[2])[0, 1]) < 5 / np.sqrt(a.shape[1])  # Q and U independent


@pytest.mark.parametrize("nfield", [1, 3])
def test_correlated_noise_spectrum(nfield):
    """Binned spectrum of the map over N_ell = depth^2 (ell/ell_knee)^alpha is 1 within 5 sigma of sampling."""
    depth, knee, alpha = 40.0, 15.0, -2.5
    lmax = sht.default_lmax(NSIDE)
    maps = correlated_noise(NSIDE, depth, knee, alpha, np.random.default_rng(7), nfield=nfield)
    cl = sht.alm2cl(sht.map2alm(maps, lmax=lmax, iter=3))
    ell = np.arange(lmax + 1)
    nl = (depth * np.pi / 180 / 60) ** 2 * (np.maximum(ell, 1) / knee) ** alpha
    for spec in cl:  # TT, or TT, EE, BB
        for lo, hi in [(2, 10), (10, 30), (30, 60)]:
            w = 2 * ell[lo:hi] + 1
            ratio = np.sum(w * spec[lo:hi] / nl[lo:hi]) / w.sum()
            assert abs(ratio - 1) < 5 * np.sqrt(2 / w.sum())


def test_correlated_component_added_by_noise_maps():
    """A channel with ell_knee > 0 has excess large-scale power over the white level."""
    base = dict(band="x", center_ghz=100.0, fwhm_arcmin=0.0, depth_i=50.0, depth_p=70.0)
    white = noise_maps(Channel(**base), NSIDE, np.random.default_rng(0))
    knee = noise_maps(Channel(**base, ell_knee=30.0, alpha_knee=-2.0), NSIDE, np.random.default_rng(0))
    cl_w, cl_k = (sht.alm2cl(sht.map2alm(m, iter=3))[:, 2:10].mean(axis=1) for m in (white, knee))
    assert np.all(cl_k > 5 * cl_w)


def test_correlated_noise_rejects_bad_knee():
    with pytest.raises(ValueError, match="ell_knee"):
        correlated_noise(NSIDE, 1.0, 0.0, -2.0, np.random.default_rng(0))
