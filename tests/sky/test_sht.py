"""cosmobench.sky.sht (ducc0) against healpy's reference implementation, and the statistics of synalm."""

from __future__ import annotations

import healpy as hp
import numpy as np
import pytest
from numpy.testing import assert_allclose

from cosmobench.sky import sht

NSIDE = 16
LMAX = 3 * NSIDE - 1


def _random_alm(lmax: int, ncomp: int, seed: int) -> np.ndarray:
    """Random complex alm with real m = 0 coefficients and zero ell < |spin| modes for E, B."""
    rng = np.random.default_rng(seed)
    n = sht.alm_size(lmax)
    alm = rng.standard_normal((ncomp, n)) + 1j * rng.standard_normal((ncomp, n))
    alm[:, : lmax + 1] = alm[:, : lmax + 1].real  # m = 0
    if ncomp == 3:
        alm[1:, sht.alm_ell(lmax) < 2] = 0.0
    return alm


def test_alm2map_matches_healpy_t_and_tqu():
    alm = _random_alm(LMAX, 3, seed=1)
    assert_allclose(sht.alm2map(alm[0], NSIDE), hp.alm2map(alm[0], NSIDE, lmax=LMAX), rtol=0, atol=1e-11)
    ref = np.array(hp.alm2map(tuple(alm), NSIDE, lmax=LMAX, pol=True))
    assert_allclose(sht.alm2map(alm, NSIDE), ref, rtol=0, atol=1e-11)


@pytest.mark.parametrize("iter_", [0, 3])
def test_map2alm_matches_healpy(iter_):
    maps = np.random.default_rng(2).standard_normal((3, hp.nside2npix(NSIDE)))
    ref = np.array(hp.map2alm(maps, lmax=LMAX, iter=iter_, pol=True, use_weights=False))
    assert_allclose(sht.map2alm(maps, lmax=LMAX, iter=iter_), ref, rtol=0, atol=1e-11)
    assert_allclose(sht.map2alm(maps[0], lmax=LMAX, iter=iter_), ref[0], rtol=0, atol=1e-11)


def test_round_trip_recovers_band_limited_alm():
    """A map synthesised from alm with lmax <= 2 nside is analysed back to the same alm (Jacobi iterations)."""
    lmax = 2 * NSIDE
    alm = _random_alm(lmax, 3, seed=3)
    back = sht.map2alm(sht.alm2map(alm, NSIDE), lmax=lmax, iter=10)
    assert np.max(np.abs(back - alm)) < 1e-6 * np.max(np.abs(alm))


def test_alm2cl_and_almxfl_match_healpy():
    alm = _random_alm(LMAX, 3, seed=4)
    assert_allclose(sht.alm2cl(alm[0]), hp.alm2cl(alm[0]), rtol=1e-12)
    assert_allclose(sht.alm2cl(alm[0], alm[1]), hp.alm2cl(alm[0], alm[1]), rtol=1e-12, atol=1e-14)
    fl = np.linspace(1.0, 0.1, LMAX + 1)
    assert_allclose(sht.almxfl(alm[2], fl), hp.almxfl(alm[2], fl), rtol=1e-14)


def test_gauss_beam_matches_healpy():
    fwhm = 30.0
    ref = hp.gauss_beam(np.radians(fwhm / 60), lmax=500, pol=True)  # (lmax+1, 4): T, E, B, TE
    assert_allclose(sht.gauss_beam(fwhm, 500), ref[:, 0], rtol=1e-12)
    assert_allclose(sht.gauss_beam(fwhm, 500, pol=True), ref[:, :3].T, rtol=1e-12)
    assert np.all(sht.gauss_beam(0.0, 10) == 1.0)


def test_smooth_matches_healpy():
    maps = np.random.default_rng(5).standard_normal((3, hp.nside2npix(NSIDE)))
    ref = np.array(hp.smoothing(maps, fwhm=np.radians(2.0), lmax=LMAX, iter=3, pol=True, use_weights=False))
    assert_allclose(sht.smooth(maps, 120.0, lmax=LMAX), ref, rtol=0, atol=1e-10)


def test_reconvolve_changes_the_beam_both_ways():
    """Band-limited I, Q, U at a 3 deg beam: to 5 deg equals healpy's smoothing of the unbeamed maps by 5 deg, and
    back to 3 deg recovers the maps (exact below 2 nside, where the analysis is exact)."""
    lmax = 2 * NSIDE
    alm = _random_alm(lmax, 3, seed=4)
    sky = sht.alm2map(alm, NSIDE, lmax)
    at3 = np.array(hp.smoothing(sky, fwhm=np.radians(3.0), lmax=lmax, iter=10, pol=True, use_weights=False))
    at5 = np.array(hp.smoothing(sky, fwhm=np.radians(5.0), lmax=lmax, iter=10, pol=True, use_weights=False))
    assert_allclose(sht.reconvolve(at3, 180.0, 300.0, lmax=lmax, iter=10), at5, rtol=0, atol=1e-8 * np.abs(at5).max())
    assert_allclose(sht.reconvolve(at5, 300.0, 180.0, lmax=lmax, iter=10), at3, rtol=0, atol=1e-7 * np.abs(at3).max())
    from_sky = sht.reconvolve(sky[0], 0.0, 180.0, lmax=lmax, iter=10)
    assert_allclose(from_sky, at3[0], rtol=0, atol=1e-8 * np.abs(at3).max())


def test_synalm_spectra_match_input_within_cosmic_variance():
    """Weighted mean of C_hat / C over ell is 1 within 5 sigma (sigma^2 = 2 / sum(2 ell + 1)); TE likewise."""
    lmax = 200
    ell = np.arange(lmax + 1)
    cls = np.zeros((4, lmax + 1))
    cls[0, 2:] = 1000.0 / ell[2:] ** 2
    cls[1, 2:] = 10.0 / ell[2:]
    cls[2, 2:] = 0.5 / ell[2:]
    cls[3, 2:] = 0.6 * np.sqrt(cls[0, 2:] * cls[1, 2:]) * np.cos(ell[2:] / 10)
    alm = sht.synalm(cls, lmax, np.random.default_rng(6))
    w = 2 * ell[2:] + 1
    tol = 5 * np.sqrt(2 / w.sum())
    for k, (a, b) in enumerate([(0, 0), (1, 1), (2, 2)]):
        ratio = sht.alm2cl(alm[a], alm[b])[2:] / cls[k, 2:]
        assert abs(np.sum(w * ratio) / w.sum() - 1) < tol, k
    # cross spectrum: Var(C_TE_hat) = (TT EE + TE^2) / (2 ell + 1); chi-square of the standardized residuals
    te_hat = sht.alm2cl(alm[0], alm[1])[2:]
    sd = np.sqrt((cls[0, 2:] * cls[1, 2:] + cls[3, 2:] ** 2) / w)
    z = (te_hat - cls[3, 2:]) / sd
    assert abs(np.mean(z)) < 5 / np.sqrt(len(z))
    assert abs(np.mean(z**2) - 1) < 5 * np.sqrt(2 / len(z))
    # temperature-only input gives the same T draws as the polarised one
    t_only = sht.synalm(cls[0], lmax, np.random.default_rng(6))
    assert_allclose(t_only, alm[0])


def test_synalm_rejects_bad_input():
    with pytest.raises(ValueError, match="lmax"):
        sht.synalm(np.ones((4, 10)), 20, np.random.default_rng(0))
    with pytest.raises(ValueError, match="non-negative"):
        sht.synalm(-np.ones((4, 10)), 5, np.random.default_rng(0))


def test_nside_helpers():
    assert sht.nside_of(np.zeros((3, 12 * 64**2))) == 64
    assert sht.default_lmax(512) == 1535
    for bad in (0, 3, 12.5, "a"):
        with pytest.raises(ValueError, match="power of 2"):
            sht.check_nside(bad)
    with pytest.raises(ValueError, match="HEALPix"):
        sht.nside_of(np.zeros(100))
    assert sht.alm_lmax(sht.alm_size(47)) == 47
    assert_allclose(sht.alm_ell(3), [hp.Alm.getlm(3, i)[0] for i in range(sht.alm_size(3))])
