"""CMB realisations: spectra within cosmic variance of their input, units, exact alm, reproducibility."""

from __future__ import annotations

import astropy.units as u
import numpy as np
import pytest
from numpy.testing import assert_allclose

from cosmobench.sky import sht, units
from cosmobench.sky.cmb import CMB, cmb_alm, cmb_map
from cosmobench.sky.components import Sky
from cosmobench.sky.cosmology import Cosmology, camb_spectra

NSIDE = 64
LMAX = 3 * NSIDE - 1


@pytest.fixture(scope="module")
def cls() -> np.ndarray:
    """Lensed total spectra with r = 0.05 (so that B has a tensor part too), C_ell in uK^2, to LMAX."""
    return camb_spectra(Cosmology(r=0.05), LMAX)


def _mean_ratio_ok(cl_hat: np.ndarray, cl: np.ndarray, lmin: int = 2) -> tuple[float, float]:
    """Weighted mean of cl_hat / cl over ell >= lmin and its 5-sigma cosmic-variance tolerance (STYLE G5)."""
    ell = np.arange(lmin, len(cl))
    w = 2 * ell + 1
    return abs(np.sum(w * cl_hat[lmin:] / cl[lmin:]) / w.sum() - 1), 5 * np.sqrt(2 / w.sum())


def test_map_spectra_match_input_within_cosmic_variance(cls):
    """T, E, B power of a map (no beam, no pixel window) analysed back: weighted mean ratio 1 within 5 sigma."""
    maps = cmb_map(cls, NSIDE, np.random.default_rng(11))
    assert maps.shape == (3, 12 * NSIDE**2)
    alm = sht.map2alm(maps, lmax=LMAX, iter=3)
    for k in range(3):
        dev, tol = _mean_ratio_ok(sht.alm2cl(alm[k]), cls[k])
        assert dev < tol, ("TEB"[k], dev, tol)
    # a wrong input (B scaled by 1.2) must fail the same test: the test has power
    dev, tol = _mean_ratio_ok(sht.alm2cl(alm[2]), 1.2 * cls[2])
    assert dev > tol


def test_te_cross_spectrum_matches_input(cls):
    """Standardised TE residuals, Var = (TT EE + TE^2) / (2 ell + 1), have mean 0 and variance 1."""
    alm = sht.map2alm(cmb_map(cls, NSIDE, np.random.default_rng(12)), lmax=LMAX, iter=3)
    ell = np.arange(2, LMAX + 1)
    te_hat = sht.alm2cl(alm[0], alm[1])[2:]
    sd = np.sqrt((cls[0, 2:] * cls[1, 2:] + cls[3, 2:] ** 2) / (2 * ell + 1))
    z = (te_hat - cls[3, 2:]) / sd
    assert abs(z.mean()) < 5 / np.sqrt(len(z))
    assert abs(np.mean(z**2) - 1) < 5 * np.sqrt(2 / len(z))
    # and it is a positive correlation where TE > 0 (sign convention of Q, U)
    assert np.sum(te_hat * cls[3, 2:]) > 0


def test_map_is_band_limited(cls):
    """Nothing above lmax = 3 nside - 1: the map is synthesised from alm truncated there."""
    rng = np.random.default_rng(13)
    maps = cmb_map(cls, 16, rng, lmax=20)
    alm = sht.map2alm(maps, lmax=32, iter=5)  # quadrature is near exact to 2 nside
    cl = sht.alm2cl(alm)
    assert np.all(cl[:, 21:].max(axis=1) < 1e-5 * cl[:, 2:21].min(axis=1))


def test_emission_is_map_times_krj_factor(cls):
    cmb = CMB.from_spectra(cls, NSIDE, np.random.default_rng(14))
    em = cmb.emission(100 * u.GHz)
    assert em.unit == units.uK_RJ
    assert_allclose(em.value, cmb.map() * units.kcmb_to_krj(100.0), rtol=1e-13)
    assert 0.77 < units.kcmb_to_krj(100.0) < 0.78  # x^2 e^x / (e^x - 1)^2 at 100 GHz
    # same in MHz, and through a Sky
    assert_allclose(cmb.emission(1e5 * u.MHz).value, em.value, rtol=1e-12)
    assert_allclose(Sky([cmb]).emission(100 * u.GHz).to_value(units.uK_RJ), em.value, rtol=1e-13)


def test_emission_alm_is_exact_and_truncates(cls):
    cmb = CMB.from_spectra(cls, 16, np.random.default_rng(15))
    f = units.kcmb_to_krj(143.0)
    alm = cmb.emission_alm(143 * u.GHz, lmax=cmb.lmax).to_value(units.uK_RJ)
    assert_allclose(alm, cmb.alm * f, rtol=1e-14)
    assert_allclose(sht.alm2map(alm, 16), cmb.emission(143 * u.GHz).value, rtol=1e-12, atol=1e-12)
    low = cmb.emission_alm(143 * u.GHz, lmax=20).to_value(units.uK_RJ)
    high = cmb.emission_alm(143 * u.GHz, lmax=80).to_value(units.uK_RJ)
    ell_low, ell_high = sht.alm_ell(20), sht.alm_ell(80)
    cl = sht.alm2cl(cmb.alm)
    assert_allclose(sht.alm2cl(low), cl[:, :21] * f**2, rtol=1e-12)
    assert_allclose(sht.alm2cl(high)[:, : cmb.lmax + 1], cl * f**2, rtol=1e-12)
    assert np.all(high[:, ell_high > cmb.lmax] == 0) and len(ell_low) == low.shape[1]


def test_realisations_are_reproducible_and_seed_dependent(cls):
    a = cmb_alm(cls, 30, np.random.default_rng(3))
    assert_allclose(a, cmb_alm(cls, 30, np.random.default_rng(3)))
    assert not np.allclose(a, cmb_alm(cls, 30, np.random.default_rng(4)))


def test_bad_inputs_raise(cls):
    with pytest.raises(ValueError, match="shape"):
        cmb_alm(cls[:3], 30, np.random.default_rng(0))
    with pytest.raises(ValueError, match="shape"):
        CMB(np.zeros((2, sht.alm_size(10)), complex), 16)
    with pytest.raises(ValueError, match="power of 2"):
        CMB(np.zeros((3, sht.alm_size(10)), complex), 15)
