"""Unit conversions of cosmobench.sky.units against closed-form expressions and round trips."""

from __future__ import annotations

import numpy as np
import pytest
from numpy.testing import assert_allclose
from scipy import constants

from cosmobench.sky.units import T_CMB, kcmb_to_krj, krj_to_kcmb, mjysr_to_kcmb, unit_factor

FREQS = [28.4, 44.1, 70.4, 100.89, 142.876, 221.156, 357.5, 555.2, 866.8]


def _x(nu_ghz):
    return constants.h * nu_ghz * 1e9 / (constants.k * T_CMB.value)


@pytest.mark.parametrize("nu", FREQS)
def test_kcmb_to_krj_matches_planck_derivative(nu):
    x = _x(nu)
    assert_allclose(kcmb_to_krj(nu), x**2 * np.exp(x) / np.expm1(x) ** 2, rtol=1e-10)


@pytest.mark.parametrize("nu", FREQS)
def test_rj_specific_intensity_is_2kv2_over_c2(nu):
    jy_per_krj = 2 * constants.k * (nu * 1e9) ** 2 / constants.c**2 * 1e26
    assert_allclose(unit_factor(nu, "K_RJ", "Jy/sr"), jy_per_krj, rtol=1e-10)
    assert_allclose(unit_factor(nu, "K_RJ", "MJy/sr"), jy_per_krj * 1e-6, rtol=1e-10)


@pytest.mark.parametrize("nu", FREQS)
def test_round_trips(nu):
    t = 123.456
    assert_allclose(krj_to_kcmb(nu) * kcmb_to_krj(nu), 1.0, rtol=1e-12)
    loop = (
        t
        * unit_factor(nu, "uK_CMB", "uK_RJ")
        * unit_factor(nu, "uK_RJ", "MJy/sr")
        * unit_factor(nu, "MJy/sr", "uK_CMB")
    )
    assert_allclose(loop, t, rtol=1e-12)
    assert_allclose(mjysr_to_kcmb(nu) * unit_factor(nu, "K_CMB", "MJy/sr"), 1.0, rtol=1e-12)


def test_prefixes_and_identity():
    assert_allclose(unit_factor(100.0, "K_CMB", "uK_CMB"), 1e6, rtol=1e-14)
    assert_allclose(unit_factor(100.0, "mK_RJ", "uK_RJ"), 1e3, rtol=1e-14)
    assert_allclose(unit_factor(100.0, "uK_CMB", "uK_CMB"), 1.0, rtol=1e-14)


def test_rayleigh_jeans_limit():
    assert_allclose(kcmb_to_krj(0.1), 1.0, atol=1e-5)  # h nu << k T_CMB: the two temperatures agree


def test_array_frequencies():
    freqs = np.array([30.0, 100.0, 353.0])
    assert_allclose(unit_factor(freqs, "K_CMB", "K_RJ"), [kcmb_to_krj(f) for f in freqs], rtol=1e-14)


@pytest.mark.parametrize("bad", ["uK", "K_XYZ", "furlong", "qK_CMB"])
def test_unknown_unit_raises(bad):
    with pytest.raises(ValueError, match="unknown unit"):
        unit_factor(100.0, bad, "uK_CMB")
