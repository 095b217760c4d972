"""MASTER spectra (ducc0 coupling matrix), binning, and the analysis masks."""

from __future__ import annotations

import healpy as hp
import numpy as np
import pytest
from numpy.testing import assert_allclose

from cosmobench.cmb.masks import apodize, latitude_mask, remove_monopole_dipole, sky_fraction, threshold_mask
from cosmobench.cmb.spectra import Master, binning_operators, coupling_matrix, linear_bins
from cosmobench.core.seeds import rng
from cosmobench.sky import sht

NSIDE, LMAX = 32, 64


def _cl(lmax: int) -> np.ndarray:
    ell = np.arange(lmax + 1)
    cl = np.zeros(lmax + 1)
    cl[2:] = 2 * np.pi * 1000.0 * (1 + 0.5 * np.cos(ell[2:] / 6.0)) / (ell[2:] * (ell[2:] + 1))
    return cl


def test_full_sky_coupling_is_the_identity():
    # 6e-6: HEALPix quadrature of the unit map's monopole at nside 32
    assert_allclose(coupling_matrix(np.ones(sht.npix(NSIDE)), LMAX), np.eye(LMAX + 1), atol=2e-5)


def test_coupling_matches_the_fsky_sum_rule():
    """sum_l' M_ll' = mean of w^2 over the sphere (for l far from lmax), Hivon et al. 2002."""
    w = apodize(latitude_mask(NSIDE, 20.0), 10.0)
    m = coupling_matrix(w, LMAX)
    assert_allclose(m[2:30].sum(axis=1), np.mean(w**2), rtol=2e-3)


def test_binning_operators_invert_on_binned_spectra():
    edges = linear_bins(2, LMAX, 8)
    p, q = binning_operators(edges, LMAX)
    assert edges[0] == 2 and edges[-1] == LMAX + 1
    assert_allclose(p @ q, np.eye(len(edges) - 1), atol=1e-12)


def test_master_is_unbiased_on_gaussian_skies_with_a_mask_and_a_beam():
    """Mean of 40 masked, beamed sims = the MASTER expectation within 5 sigma; it is close to the binned theory."""
    mask = apodize(latitude_mask(NSIDE, 20.0), 10.0)
    edges = linear_bins(2, LMAX, 8)
    beam = sht.gauss_beam(120.0, LMAX)
    est = Master(mask, LMAX, edges, beam=beam)
    cl = _cl(LMAX)
    nsim = 40
    sims = [sht.alm2map(sht.almxfl(sht.synalm(cl, LMAX, rng(7, "sim", i)), beam), NSIDE) for i in range(nsim)]
    d = np.array([est.spectrum(m) for m in sims])
    expected = est.expected(cl)
    err = d.std(axis=0, ddof=1) / np.sqrt(nsim)
    assert np.all(np.abs(d.mean(axis=0) - expected) < 5 * err)
    p, _ = binning_operators(edges, LMAX)
    # the coupling is inverted multipole by multipole: the expectation is the binned spectrum exactly, although it
    # wiggles within bins of 8 multipoles (the binned-coupling form K^-1 P missed it by up to 5 %)
    assert_allclose(expected, p @ cl, rtol=1e-10)
    # a naive pseudo-C_l divided by f_sky is biased by the beam and the mask; MASTER is not
    assert np.abs(d.mean(axis=0) / (p @ cl) - 1).max() < 0.15


def test_an_estimator_for_another_beam_shares_the_inverted_coupling():
    """with_beam gives the estimator built for that beam (1e-12) without inverting the coupling again."""
    mask = apodize(latitude_mask(NSIDE, 20.0), 10.0)
    edges = linear_bins(2, LMAX, 8)
    beam = sht.gauss_beam(120.0, LMAX)
    plain = Master(mask, LMAX, edges)
    moved = plain.with_beam(beam)
    assert moved._inverse is plain._inverse and plain.beam2.max() == 1.0
    built = Master(mask, LMAX, edges, beam=beam, coupling=plain.coupling)
    assert_allclose(moved.expected(_cl(LMAX)), built.expected(_cl(LMAX)), rtol=1e-12)
    pseudo = plain.pseudo_cl(plain.pseudo_alm(sht.alm2map(sht.synalm(_cl(LMAX), LMAX, rng(3, "b")), NSIDE)))
    assert_allclose(moved.decouple(pseudo), built.decouple(pseudo), rtol=1e-12)


def test_a_mask_that_keeps_too_little_sky_is_refused():
    """A 5-degree cap cannot be decoupled multipole by multipole up to l = 64: refused, naming the fix."""
    cap = np.zeros(sht.npix(NSIDE))
    cap[hp.query_disc(NSIDE, (0.0, 0.0, 1.0), np.radians(5.0))] = 1.0
    with pytest.raises(ValueError, match="nearly singular.*larger sky fraction"):
        Master(cap, LMAX, linear_bins(2, LMAX, 8))


def test_cross_spectrum_of_identical_maps_is_the_auto_spectrum():
    mask = apodize(latitude_mask(NSIDE, 30.0), 5.0)
    est = Master(mask, LMAX, linear_bins(2, LMAX, 6))
    m = sht.alm2map(sht.synalm(_cl(LMAX), LMAX, rng(8, "x")), NSIDE)
    assert_allclose(est.spectrum(m, m), est.spectrum(m), rtol=1e-12)


def test_threshold_mask_keeps_the_faintest_fraction():
    _, lat = hp.pix2ang(NSIDE, np.arange(sht.npix(NSIDE)), lonlat=True)
    fg = np.stack([np.exp(-np.abs(lat) / 10.0), 3 * np.exp(-np.abs(lat) / 20.0)])
    mask = threshold_mask(fg, 0.6, smooth_deg=0.0)
    assert sky_fraction(mask) == pytest.approx(0.6, abs=1.0 / mask.size)
    assert np.abs(lat[mask > 0]).min() >= np.abs(lat[mask == 0]).max() - 1e-9  # Galactic plane removed
    with pytest.raises(ValueError, match="fsky"):
        threshold_mask(fg, 1.5)


def test_apodized_mask_is_smooth_and_bounded():
    mask = latitude_mask(NSIDE, 20.0)
    w = apodize(mask, 10.0)
    assert np.all(w[mask == 0] == 0) and np.all((w >= 0) & (w <= 1))
    _, lat = hp.pix2ang(NSIDE, np.arange(mask.size), lonlat=True)
    assert np.all(w[np.abs(lat) > 32] == 1.0)  # beyond the apodisation scale (plus a pixel)
    assert 0 < w[(np.abs(lat) > 21) & (np.abs(lat) < 25)].mean() < 0.6


def test_monopole_dipole_removal_outside_the_mask():
    nside = 16
    x, y, z = hp.pix2vec(nside, np.arange(sht.npix(nside)))
    signal = sht.alm2map(sht.synalm(_cl(40), 40, rng(9, "s")), nside)
    mask = latitude_mask(nside, 30.0)
    out = remove_monopole_dipole(signal + 5.0 + 3 * x - 2 * z, mask)
    ref = remove_monopole_dipole(signal, mask)
    assert_allclose(out, ref, atol=1e-9)
    design = np.column_stack([np.ones(int(mask.sum())), x[mask > 0], y[mask > 0], z[mask > 0]])
    assert_allclose(design.T @ out[mask > 0], 0.0, atol=1e-8)
