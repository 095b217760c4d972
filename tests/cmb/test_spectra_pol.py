"""Spin-2 MASTER (:class:`MasterPol`): the coupling of the E/B pseudo spectra and the joint decoupling.

The sky: Gaussian T, E, B skies (seeded) with known spectra, a 120' beam, nside 32, lmax 64, and an apodised cut
sky without north-south symmetry (a 20 degree Galactic cut and a 25 degree hole).
"""

from __future__ import annotations

import healpy as hp
import numpy as np
import pytest
from numpy.testing import assert_allclose

from cosmobench.cmb.masks import apodize, latitude_mask
from cosmobench.cmb.spectra import MasterPol, binning_operators, coupling_matrix, linear_bins
from cosmobench.core.seeds import rng
from cosmobench.sky import sht

NSIDE, LMAX, NSIM, FWHM = 32, 64, 100, 120.0
EDGES = linear_bins(2, LMAX, 8)
ALPHA = np.radians(30.0)  # polarisation angle of the rotated copy in the cross-spectrum test


def _cls(bb_amp: float) -> np.ndarray:
    """C_ell TT, EE, BB, TE (uK^2); EE and BB smooth across bins, TE correlated at 30 %."""
    ell = np.arange(LMAX + 1)
    to_cl = np.zeros(LMAX + 1)
    to_cl[2:] = 2 * np.pi / (ell[2:] * (ell[2:] + 1))
    cl = np.zeros((4, LMAX + 1))
    cl[0] = 1000.0 * (1 + 0.5 * np.cos(ell / 6.0)) * to_cl
    cl[1] = 20.0 * (1 + ell / 30.0) * to_cl
    cl[2] = bb_amp * (1 + ell / 40.0) * to_cl
    cl[3] = 0.3 * np.sqrt(cl[0] * cl[1])
    return cl


def _weight() -> np.ndarray:
    binary = latitude_mask(NSIDE, 20.0)
    binary[hp.query_disc(NSIDE, hp.ang2vec(60.0, 40.0, lonlat=True), np.radians(25.0))] = 0
    return apodize(binary, 10.0)


def _rotate(iqu: np.ndarray, alpha: float) -> np.ndarray:
    """Q + iU -> exp(2 i alpha) (Q + iU): E' = cos(2 alpha) E - sin(2 alpha) B, B' = sin(2 alpha) E + cos(2 alpha) B."""
    c, s = np.cos(2 * alpha), np.sin(2 * alpha)
    return np.stack([iqu[0], c * iqu[1] - s * iqu[2], s * iqu[1] + c * iqu[2]])


@pytest.fixture(scope="module")
def setup():
    weight = _weight()
    return weight, MasterPol(weight, LMAX, EDGES, beam=sht.gauss_beam(FWHM, LMAX))


def _sims(cl: np.ndarray, seed: int) -> list[np.ndarray]:
    beam = sht.gauss_beam(FWHM, LMAX)
    return [sht.alm2map(sht.almxfl(sht.synalm(cl, LMAX, rng(seed, "pol", i)), beam), NSIDE) for i in range(NSIM)]


def _theory(ee, eb, be, bb) -> np.ndarray:
    return np.stack([ee, eb, be, bb])


def test_full_sky_spin2_coupling_is_the_identity():
    plus, minus = coupling_matrix(np.ones(sht.npix(NSIDE)), LMAX, spin=2)
    # 6e-6: HEALPix quadrature of the unit map's monopole at nside 32 (as for spin 0); l = 0, 1 carry no E, B
    assert_allclose(plus[2:, 2:], np.eye(LMAX - 1), atol=2e-5)
    assert_allclose(plus[:2], 0.0, atol=1e-12)
    assert_allclose(minus, 0.0, atol=2e-5)
    est = MasterPol(np.ones(sht.npix(NSIDE)), LMAX, EDGES)
    iqu = sht.alm2map(sht.synalm(_cls(5.0), LMAX, rng(3, "full")), NSIDE)
    alm = sht.map2alm(iqu, LMAX, 3)[1:]
    p, _ = binning_operators(EDGES, LMAX)
    direct = sht.alm2cl(alm[[0, 0, 1, 1]], alm[[0, 1, 0, 1]]) @ p.T
    assert_allclose(est.spectrum(iqu), direct, rtol=1e-4, atol=1e-4 * np.abs(direct).max())


def test_spin2_coupling_sum_rule_and_parity():
    """sum_l' (M++ + M--)_ll' = mean of w^2 (l far from lmax, Hivon et al. 2002). A weight with power at even L
    only (the Galactic cut, symmetric under z -> -z) has M-- = 0 for even l + l' (the factor 1 - (-1)^(l+l'+L)),
    so its diagonal vanishes; the cut with a hole has odd-L power and a nonzero M-- diagonal."""
    weight = _weight()
    plus, minus = coupling_matrix(weight, LMAX, spin=2)
    assert_allclose((plus + minus)[2:30].sum(axis=1), np.mean(weight**2), rtol=2e-3)
    sym_plus, sym_minus = coupling_matrix(apodize(latitude_mask(NSIDE, 20.0), 10.0), LMAX, spin=2)
    assert_allclose(np.diag(sym_minus), 0.0, atol=1e-12)
    assert np.diag(sym_plus)[2:].min() > 0.1
    assert np.diag(minus)[2:].max() > 1e-3  # 5.3e-3 measured


@pytest.mark.parametrize("bb_amp", [5.0, 0.0])
def test_decoupled_ee_bb_are_unbiased(setup, bb_amp):
    """Mean of 100 masked beamed sims = the MASTER expectation within 4 sigma (MC error of the mean) in every bin;
    with BB = 0 the cut sky's E -> B leakage, tens of sigma in the naive pseudo-C_l / f_sky, is removed."""
    weight, est = setup
    cl = _cls(bb_amp)
    d = np.array([est.spectrum(m) for m in _sims(cl, 11)])
    err = d.std(axis=0, ddof=1) / np.sqrt(NSIM)
    zero = np.zeros(LMAX + 1)
    expected = est.expected(_theory(cl[1], zero, zero, cl[2]))
    assert np.abs((d.mean(0) - expected) / err).max() < 4.0
    p, _ = binning_operators(EDGES, LMAX)
    binned = p @ np.stack([cl[1], cl[2]]).T
    # exact: the coupling inverted multipole by multipole (1e-15 where BB = 0)
    assert_allclose(expected[[0, 3]], binned.T, rtol=1e-10, atol=1e-12)
    assert np.abs(d.mean(0)[[1, 2]] / err[[1, 2]]).max() < 4.0  # no EB in the sky
    if bb_amp == 0:
        assert np.abs(d.mean(0)[3] / err[3]).max() < 4.0
        beam2 = sht.gauss_beam(FWHM, LMAX) ** 2
        naive = np.array([p @ (est.pseudo_cl(est.pseudo_alm(m))[3] / beam2) for m in _sims(cl, 11)[:20]])
        assert (naive.mean(0) / np.mean(weight**2) / err[3]).min() > 10.0


def test_a_steep_ee_leaks_nothing_into_the_first_bb_bin(setup):
    """EE with a reionisation-like bump (D_l 30x higher at l = 2 than at l = 9) over a BB 100x fainter: the
    expected decoupled EE and BB are their binned spectra in every bin (1e-10), where the binned-coupling form
    K^-1 P (K = P M B^2 Q, D flat within each bin) puts E power into the first BB bin, 137 times the BB there
    (measured; the second bin -6 times, EE's second bin at 0.38 of its value)."""
    _, est = setup
    ell = np.arange(LMAX + 1)
    to_cl = np.zeros(LMAX + 1)
    to_cl[2:] = 2 * np.pi / (ell[2:] * (ell[2:] + 1))
    ee = (1.0 + 30.0 * np.exp(-((ell - 2.0) ** 2) / 8.0)) * to_cl
    bb = 0.01 * to_cl
    zero = np.zeros(LMAX + 1)
    sky = _theory(ee, zero, zero, bb)
    p, q = binning_operators(EDGES, LMAX)
    expected = est.expected(sky)
    assert_allclose(expected[[0, 3]], np.stack([p @ ee, p @ bb]), rtol=1e-10)
    assert np.abs(expected[[1, 2]]).max() < 1e-12
    p4, q4 = np.kron(np.eye(4), p), np.kron(np.eye(4), q)
    flat_form = np.linalg.solve(p4 @ est._forward @ q4, p4 @ est._forward @ sky.ravel()).reshape(4, -1)
    assert flat_form[3, 0] > 10 * (p @ bb)[0], flat_form[3, 0] / (p @ bb)[0]


def test_pseudo_spectra_match_the_coupling_and_the_eb_cross_is_decoupled(setup):
    """The coupling itself against simulation: the mean pseudo spectra of a sky and its copy rotated by 30 degrees
    (EE, EB, BE, BB of the pair) = M B^2 C binned, within 4 sigma; the decoupled cross spectra = expectation."""
    _, est = setup
    cl = _cls(5.0)
    c, s = np.cos(2 * ALPHA), np.sin(2 * ALPHA)
    theory = _theory(c * cl[1], s * cl[1], -s * cl[2], c * cl[2])  # E1 E2, E1 B2, B1 E2, B1 B2
    pseudo, dec = [], []
    for m in _sims(cl, 12):
        a1, a2 = est.pseudo_alm(m), est.pseudo_alm(_rotate(m, ALPHA))
        pc = est.pseudo_cl(a1, a2)
        pseudo.append(pc)
        dec.append(est.decouple(pc))
    p, _ = binning_operators(EDGES, LMAX)
    binned = np.array(pseudo) @ p.T
    beam2 = sht.gauss_beam(FWHM, LMAX) ** 2
    plus, minus = (est.coupling * beam2) @ theory.T  # (lmax+1, 4): M++ B^2 C and M-- B^2 C of each spectrum
    # Kogut et al. 2003 / Brown et al. 2005, written out independently of MasterPol's stacked matrix
    ee, eb, be, bb = (
        plus[:, 0] + minus[:, 3],
        plus[:, 1] - minus[:, 2],
        plus[:, 2] - minus[:, 1],
        minus[:, 0] + plus[:, 3],
    )
    model = np.stack([ee, eb, be, bb]) @ p.T
    err = binned.std(0, ddof=1) / np.sqrt(NSIM)
    assert np.abs((binned.mean(0) - model) / err).max() < 4.0
    wrong = p @ (plus[:, 2] + minus[:, 1])  # the opposite sign of the EB <-> BE mixing
    assert np.abs((binned.mean(0)[2] - wrong) / err[2]).min() > 5.0  # 9 to 46 sigma measured
    d = np.array(dec)
    derr = d.std(0, ddof=1) / np.sqrt(NSIM)
    assert np.abs((d.mean(0) - est.expected(theory)) / derr).max() < 4.0
    assert est.expected(theory)[1] == pytest.approx(s * est.expected(_theory(cl[1], 0 * cl[1], 0 * cl[1], cl[2]))[0])


def test_spin2_estimator_refuses_bins_below_ell_2():
    with pytest.raises(ValueError, match="start at ell = 2"):
        MasterPol(np.ones(sht.npix(8)), 16, linear_bins(0, 16, 4))
    with pytest.raises(ValueError, match="Q, U"):
        MasterPol(np.ones(sht.npix(8)), 16, linear_bins(2, 16, 4)).pseudo_alm(np.zeros(sht.npix(8)))
