"""The filter-equalised RMSE (cosmobench.cmb.filtered) against exact answers: the Wiener residual of a filtered,
noisy map on Gaussian skies, invariance under any bin-constant filter, the null and perfect maps, and the conversion
from binned D_b to a map's pixel RMS (healpy's synthesis, T and Q/U)."""

from __future__ import annotations

import healpy as hp
import numpy as np
import pytest

from cosmobench.cmb.filtered import correlation, filtered_rmse, filtered_scores
from cosmobench.core.seeds import rng
from cosmobench.sky import sht

EDGES = np.arange(2, 99, 8)  # 12 bins of 8 multipoles, l = 2 .. 97
SIGNAL, NOISE = 50.0, 400.0  # flat D_l, uK^2


def _dl_to_cl(d: float, lmax: int) -> np.ndarray:
    ell = np.arange(lmax + 1)
    cl = np.zeros(lmax + 1)
    cl[2:] = d * 2 * np.pi / (ell[2:] * (ell[2:] + 1))
    return cl


def _binned_dl(cl: np.ndarray, edges: np.ndarray) -> np.ndarray:
    ell = np.arange(cl.size)
    dl = ell * (ell + 1) * cl / (2 * np.pi)
    return np.array([dl[a:b].mean() for a, b in zip(edges[:-1], edges[1:])])


def _spectra(gain: np.ndarray, nsim: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-simulation binned D_b of truth s, prediction p = gain_l s + n and their cross; full sky."""
    lmax = EDGES[-1] - 1
    out = []
    for i in range(nsim):
        s = sht.synalm(_dl_to_cl(SIGNAL, lmax), lmax, rng(seed, "s", i))
        n = sht.synalm(_dl_to_cl(NOISE, lmax), lmax, rng(seed, "n", i))
        p = hp.almxfl(s, gain) + n
        out.append([_binned_dl(hp.alm2cl(a, b), EDGES) for a, b in ((s, s), (p, p), (p, s))])
    truth, pred, cross = np.moveaxis(np.array(out), 1, 0)
    return truth, pred, cross


def _weights(fwhm: float, spin: int) -> np.ndarray:
    ell = np.arange(EDGES[-1])
    b2 = sht.gauss_beam(fwhm, EDGES[-1] - 1) ** 2
    w = np.zeros(ell.size)
    w[2:] = (2 * ell[2:] + 1) / (2 * ell[2:] * (ell[2:] + 1)) * b2[2:] / (2 if spin == 2 else 1)
    return np.array([w[a:b].sum() for a, b in zip(EDGES[:-1], EDGES[1:])])


def test_a_filtered_noisy_map_scores_its_wiener_residual():
    """p = g s + n, g bin-constant: the best filter leaves S N / (g^2 S + N) per bin whatever g is; the score agrees
    with that power converted to a 20.6' RMS within its jackknife error, and the error matches the scatter of
    independent repeats."""
    g_bin = np.linspace(0.2, 1.5, EDGES.size - 1)
    gain = np.concatenate([np.zeros(2), np.repeat(g_bin, np.diff(EDGES))])
    expected = np.sqrt(np.sum(_weights(20.6, 0) * SIGNAL * NOISE / (g_bin**2 * SIGNAL + NOISE)))
    values, ses = [], []
    for seed in range(8):
        value, se = filtered_rmse(*_spectra(gain, 10, seed), EDGES, 20.6)
        values.append(value)
        ses.append(se)
    values = np.array(values)
    assert np.abs(values - expected).max() < 4 * np.mean(ses)  # 1.3 measured
    assert values.mean() == pytest.approx(expected, rel=0.01)  # 0.2 % measured
    assert np.mean(ses) == pytest.approx(values.std(ddof=1), rel=0.35)  # jackknife vs repeats: 1.007 measured


def test_bin_constant_filters_change_nothing_and_the_unfiltered_rmse_is_the_noise():
    """Multiplying the prediction by any w_b (sign included) scales the cross by w_b and the power by w_b^2: the score
    is unchanged to rounding, while the residual power of the map itself changes."""
    truth, pred, cross = _spectra(np.ones(EDGES[-1]), 6, 3)
    w = rng(1, "w").uniform(-2.0, 2.0, EDGES.size - 1)
    for spin in (0, 2):
        a = filtered_rmse(truth, pred, cross, EDGES, 20.6, spin=spin)
        b = filtered_rmse(truth, pred * w**2, cross * w, EDGES, 20.6, spin=spin)
        assert b[0] == pytest.approx(a[0], rel=1e-12) and b[1] == pytest.approx(a[1], rel=1e-9)
    # spin 2 is half the power of spin 0 (the RMS per Q/U component)
    assert filtered_rmse(truth, pred, cross, EDGES, None, spin=2)[0] == pytest.approx(
        filtered_rmse(truth, pred, cross, EDGES, None)[0] / np.sqrt(2), rel=1e-12
    )


def test_null_and_perfect_maps():
    """A map with no power keeps the whole truth as residual (the best filter is zero); the truth scores 0."""
    truth, _, _ = _spectra(np.ones(EDGES[-1]), 4, 2)
    zero = np.zeros_like(truth)
    rms = np.sqrt(np.sum(_weights(60.0, 0) * truth.mean(0)))
    assert filtered_rmse(truth, zero, zero, EDGES, 60.0)[0] == pytest.approx(rms, rel=1e-12)
    assert filtered_rmse(truth, truth, truth, EDGES, 60.0)[0] == 0.0
    # a decoupled truth spectrum below 0 in a bin (noise of a few masked maps) adds nothing, and stays finite
    low = truth.copy()
    low[:, 0] = -1.0
    value, se = filtered_rmse(low, zero, zero, EDGES, 60.0)
    assert value == pytest.approx(np.sqrt(np.sum((_weights(60.0, 0) * truth.mean(0))[1:])), rel=1e-12)
    assert np.isfinite(se)


@pytest.mark.parametrize("spin", [0, 2])
def test_the_score_of_the_null_map_is_the_pixel_rms_of_the_truth(spin):
    """With one multipole per bin, the null map's score is exactly the pixel RMS of the truth at the common beam
    (healpy synthesis, nside 64; Q and U pooled for spin 2): the conversion from D_b to uK_CMB."""
    nside, lmax, fwhm = 64, 96, 60.0
    edges = np.arange(2, lmax + 2)
    cl = np.zeros((4, lmax + 1))
    cl[spin // 2] = _dl_to_cl(SIGNAL, lmax)  # TT for spin 0, EE for spin 2; nothing at l < 2
    raw = sht.synalm(cl, lmax, rng(7, "truth"))
    maps = hp.alm2map(np.array([hp.almxfl(a, sht.gauss_beam(fwhm, lmax)) for a in raw]), nside, lmax=lmax)
    pixel_rms = np.sqrt(np.mean(maps[0] ** 2)) if spin == 0 else np.sqrt(np.mean(maps[1:] ** 2))
    d = _binned_dl(hp.alm2cl(raw[spin // 2]), edges)[None]
    score = filtered_rmse(d, np.zeros_like(d), np.zeros_like(d), edges, fwhm, spin=spin)[0]
    assert score == pytest.approx(pixel_rms, rel=1e-4)  # HEALPix quadrature: 2e-6 (T), 5e-6 (Q/U) measured


def test_scores_of_a_spectra_file():
    """filtered_scores reads a method's spectra.npz arrays: T always, E and B when present, None otherwise."""
    truth, pred, cross = _spectra(np.ones(EDGES[-1]), 3, 4)
    t_only = filtered_scores({"edges": EDGES, "truth": truth, "pred": pred, "cross": cross}, 20.6)
    assert t_only["rmse_filtered_t"]["n"] == 3 and t_only["rmse_filtered_t"]["std"] is None
    assert t_only["rmse_filtered_e"]["mean"] is None and t_only["rmse_filtered_b"]["mean"] is None
    both = {"edges": EDGES, "truth": truth, "pred": pred, "cross": cross}
    both.update({f"{k}_{f}": v for f in ("ee", "bb") for k, v in (("truth", truth), ("pred", pred), ("cross", cross))})
    scores = filtered_scores(both, 20.6)
    assert scores["rmse_filtered_e"]["mean"] == pytest.approx(scores["rmse_filtered_t"]["mean"] / np.sqrt(2))
    with pytest.raises(ValueError, match="do not match 12 bins"):
        filtered_rmse(truth[:, :-1], pred[:, :-1], cross[:, :-1], EDGES, 20.6)


def test_correlation_per_bin():
    """rho_b of p = g_b s + n against its expectation g S / sqrt((g^2 S + N) S) (full sky, 10 simulations); the sign
    of g is kept, the null map gives 0 and decoupled noise beyond |rho| = 1 is clipped."""
    g_bin = np.linspace(-1.0, 1.5, EDGES.size - 1)
    gain = np.concatenate([np.zeros(2), np.repeat(g_bin, np.diff(EDGES))])
    truth, pred, cross = _spectra(gain, 10, 11)
    expected = g_bin * SIGNAL / np.sqrt((g_bin**2 * SIGNAL + NOISE) * SIGNAL)
    assert np.abs(correlation(truth, pred, cross) - expected).max() < 0.06  # 0.033 measured
    assert np.all(correlation(truth, np.zeros_like(pred), np.zeros_like(cross)) == 0)
    assert np.all(correlation(truth, truth, 1.1 * truth) == 1.0)
