"""``nilc_wiener``: NILC + the least-squares isotropic filter per multipole and field.

On toys where "NILC" is the truth plus independent noise of known spectra, the fitted W_ell is the Wiener filter
C^S / (C^S + N) within the scatter the number of modes implies (full sky, and with an apodised mask against the
mask-coupled expectation), a B-free truth gives W_B = 0, and the filter lowers the pixel MSE by the predicted
amount. W = 1 returns NILC bit for bit. End to end on a small polarised dataset: fit, files, load, separate.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from cosmobench.cli import load_config
from cosmobench.cmb import masks
from cosmobench.cmb.dataset import method_info_path, pred_path
from cosmobench.cmb.methods import get_method, is_learned, method_defaults
from cosmobench.cmb.methods.nilc import NILC
from cosmobench.cmb.methods.wiener import (
    NILCWiener,
    apply_filter,
    field_alm,
    spectra_sums,
    wiener_filter,
)
from cosmobench.cmb.separate import check_model, separate, train
from cosmobench.cmb.settings import EvaluateSettings
from cosmobench.cmb.spectra import coupling_matrix
from cosmobench.core.io import read_healpix, read_json
from cosmobench.core.seeds import rng
from cosmobench.sky import sht

from .conftest import write_polarised_toy

NSIDE = 16
LMAX = 2 * NSIDE  # band limit of the toys: map -> alm -> map round trips are accurate to ~1e-4 there
ELL = np.arange(LMAX + 1)
MODES = 2 * ELL + 1
NMAPS = 20  # toy maps the filter is fitted on
NTEST = 10  # independent toy maps it is scored on


def _toy_spectra() -> tuple[np.ndarray, np.ndarray]:
    """Signal and noise C_ell (4, LMAX+1) as TT, EE, BB, TE (uK^2): a red signal over flat (white) noise, so
    W = S / (S + N) runs from ~0.98 to ~0.2 in T and E and from 0.86 to 0.02 in B."""
    s = np.zeros(LMAX + 1)
    s[2:] = 50.0 * (ELL[2:] / 10.0) ** -2
    zero = np.zeros(LMAX + 1)
    signal = np.stack([s, s / 5, s / 50, zero])
    noise = np.stack([np.full(LMAX + 1, 20.0), np.full(LMAX + 1, 4.0), np.full(LMAX + 1, 4.0), zero])
    return signal, noise


SIGNAL, NOISE = _toy_spectra()


def _toys(n: int, seed: int, signal: np.ndarray = SIGNAL):
    """``n`` pairs (toy NILC, truth) of I, Q, U maps (3, npix): NILC = truth + independent Gaussian noise."""
    for k in range(n):
        s = sht.synalm(signal, LMAX, rng(seed, "signal", k))
        noise = sht.synalm(NOISE, LMAX, rng(seed, "noise", k))
        yield sht.alm2map(s + noise, NSIDE, LMAX), sht.alm2map(s, NSIDE, LMAX)


def _fit(pairs, weight=None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """W, cross and auto sums (3, LMAX+1) of map pairs through the fit's own functions."""
    sums = [spectra_sums(field_alm(p, weight, LMAX), field_alm(t, weight, LMAX)) for p, t in pairs]
    cross = np.sum([c for c, _ in sums], axis=0)
    auto = np.sum([a for _, a in sums], axis=0)
    return wiener_filter(cross, auto), cross, auto


def test_fitted_filter_is_the_wiener_filter_within_the_sampling_scatter():
    """Regressing s on d = s + n over nu = NMAPS (2 ell + 1) Gaussian modes gives an estimate of W = S / (S + N)
    with variance W (1 - W) / nu (the residual variance S N / (S + N) over sum d^2 ~ nu (S + N))."""
    w, _, _ = _fit(_toys(NMAPS, 0))
    theory = SIGNAL[:3] / (SIGNAL[:3] + NOISE[:3])
    sigma = np.sqrt(theory * (1 - theory) / (NMAPS * MODES))
    z = ((w - theory) / np.where(sigma > 0, sigma, 1.0))[:, 2:]
    assert np.abs(z).max() < 4.5, np.abs(z).max(axis=1)
    # the scatter is the one the number of modes predicts, not smaller or larger: chi2 per multipole ~ 1 (31 ell)
    chi2 = np.mean(z**2, axis=1)
    assert np.all((chi2 > 0.4) & (chi2 < 1.9)), chi2
    assert np.all(w[1:, :2] == 0)  # no E, B at ell < 2


def test_b_free_truth_gives_no_b_filter():
    """A truth with no B: the B cross sum holds only the analysis round trip's B of the truth (independent of the
    noise), so |W_B| <= P_t / P_d + 4 sqrt(P_t / (P_d nu)) (its bias and null scatter, P = sum of |a_B|^2), with
    T and E still the Wiener filter."""
    signal = SIGNAL.copy()
    signal[2] = 0.0
    pairs = list(_toys(NMAPS, 1, signal))
    w, _, auto = _fit(pairs)
    truth_b = np.sum([spectra_sums(field_alm(t, None, LMAX), field_alm(t, None, LMAX))[1][2] for _, t in pairs], 0)
    ratio = truth_b[2:] / auto[2, 2:]
    bound = ratio + 4 * np.sqrt(ratio / (NMAPS * MODES[2:]))
    assert np.all(np.abs(w[2, 2:]) <= bound), (w[2, 2:], bound)
    assert np.abs(w[2]).max() < 1e-4
    theory = signal[:2] / (signal[:2] + NOISE[:2])
    sigma = np.sqrt(theory * (1 - theory) / (NMAPS * MODES))[:, 2:]
    assert np.abs((w[:2, 2:] - theory[:, 2:]) / sigma).max() < 4.5


def test_masked_fit_matches_the_mask_coupled_expectation():
    """With an apodised mask the fit is the ratio of pseudo-spectra: <W> = (M S) / (M (S + N)) with the coupling
    matrix M of the weight (spin 0 for T; M++ for E and B, each masked alone), within the scatter of
    nu w2^2 / w4 effective modes (conservative here: the measured chi2 per multipole is 0.35-0.6 of it)."""
    weight = masks.apodize(masks.latitude_mask(NSIDE, 20.0), 15.0)
    w, _, _ = _fit(_toys(NMAPS, 3), weight)
    m_t = coupling_matrix(weight, LMAX)
    m_pp = coupling_matrix(weight, LMAX, spin=2)[0]
    pairs = ((0, m_t), (1, m_pp), (2, m_pp))
    with np.errstate(invalid="ignore"):  # 0 / 0 for E and B at ell < 2 (not compared)
        expect = np.stack([(m @ SIGNAL[f]) / (m @ (SIGNAL[f] + NOISE[f])) for f, m in pairs])
    f_eff = np.mean(weight**2) ** 2 / np.mean(weight**4)
    sigma = np.sqrt(expect * (1 - expect) / (NMAPS * MODES * f_eff))
    z = ((w - expect) / sigma)[:, 2:]
    assert np.abs(z).max() < 4.5, np.abs(z).max(axis=1)


def test_filter_lowers_the_pixel_mse_by_the_predicted_amount():
    """Per multipole the filtered residual power is S N / (S + N) (1 + 1 / nu_train) (the last factor: the
    estimated W's variance times S + N) against N for NILC: the pixel MSE ratio is their (2 ell + 1)-weighted
    sums, within the chi-square scatter of the NTEST test maps' modes."""
    w, _, _ = _fit(_toys(NMAPS, 0))
    before, after = np.zeros(2), np.zeros(2)  # T, Q and U pooled
    for nilc, truth in _toys(NTEST, 2):
        pred = apply_filter(nilc, w, lmax=LMAX)
        for acc, resid in ((before, nilc - truth), (after, pred - truth)):
            acc += [np.mean(resid[0] ** 2), np.mean(resid[1:] ** 2)]
    measured = after / before
    s, n = SIGNAL[:3], NOISE[:3]
    modes = np.stack([MODES, MODES * (ELL >= 2), MODES * (ELL >= 2)])  # spin 2 has no ell < 2
    resid = s * n / (s + n) * (1 + 1 / (NMAPS * MODES))
    expected, rel = [], []
    for g in ([0], [1, 2]):  # T; E and B make Q and U
        m, r, nn = modes[g], resid[g], n[g]
        expected.append(np.sum(m * r) / np.sum(m * nn))
        # relative scatter of a sum of chi-square modes of variance v: sqrt(2 sum nu v^2) / sum nu v, for the
        # filtered and the unfiltered residual of the NTEST maps, and for the fitted W's own scatter (one
        # chi-square dof per multipole, of mean S N / (S + N) / nu_train per mode)
        r_a = np.sqrt(2 * np.sum(NTEST * m * r**2)) / np.sum(NTEST * m * r)
        r_b = np.sqrt(2 * np.sum(NTEST * m * nn**2)) / np.sum(NTEST * m * nn)
        r_w = np.sqrt(2 * np.sum((m * (r - s[g] * nn / (s[g] + nn))) ** 2)) / np.sum(m * r)
        rel.append(np.sqrt(r_a**2 + r_b**2 + r_w**2))
    expected = np.asarray(expected)
    tol = 4 * np.asarray(rel) * expected
    assert np.all(np.abs(measured - expected) < tol), (measured, expected, tol)
    assert np.all(measured < 0.6)  # a real reduction: by 2.4x in T, 4x in Q/U on these spectra


def test_unit_filter_returns_the_maps_exactly():
    maps = next(_toys(1, 4))[0]
    np.testing.assert_array_equal(apply_filter(maps, np.ones((3, LMAX + 1)), lmax=LMAX), maps)
    np.testing.assert_array_equal(apply_filter(maps[0], np.ones(LMAX + 1), lmax=LMAX), maps[0])
    # the correction form is the direct filtering plus the part of the map its analysis misses (round-trip error)
    w = np.stack([np.linspace(1, 0, LMAX + 1)] * 3) ** np.array([[1], [2], [3]])
    alm = sht.map2alm(maps, LMAX, 3)
    direct = sht.alm2map(sht.almxfl(alm, w), NSIDE, LMAX)
    missed = maps - sht.alm2map(alm, NSIDE, LMAX)
    assert 0 < np.abs(missed).max() < 1e-3 * np.abs(maps).max()
    np.testing.assert_allclose(apply_filter(maps, w, lmax=LMAX) - direct, missed, rtol=0, atol=1e-10)
    with pytest.raises(ValueError, match="row"):
        apply_filter(maps, np.ones(LMAX + 1), lmax=LMAX)


# --------------------------------------------------------------------------------------- the method, end to end
@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return write_polarised_toy(tmp_path_factory.mktemp("wiener") / "data", {"Train": 4, "Valid": 2}, nside=NSIDE)


@pytest.fixture(scope="module")
def fitted(data, tmp_path_factory):
    """``train`` of nilc_wiener on ``data``: (facts, run folder)."""
    run = tmp_path_factory.mktemp("wiener_run")
    return NILCWiener(progress=False).fit(data, run), run


def test_unit_filter_prediction_is_nilc_exactly(data):
    method = NILCWiener()
    lmax = method.output_lmax_for(NSIDE)
    method.filter, method.config = np.ones((3, lmax + 1)), {"nside": NSIDE}
    obs = data.load_obs("Valid", 0)
    np.testing.assert_array_equal(method.predict(obs, data.channels), NILC().predict(obs, data.channels))
    t_only = NILCWiener(fields="I")
    t_only.filter, t_only.config = np.ones((1, lmax + 1)), {"nside": NSIDE}
    np.testing.assert_array_equal(t_only.predict(obs, data.channels), NILC(fields="I").predict(obs, data.channels))


def test_fit_files_and_numbers(data, fitted):
    facts, run = fitted
    lmax = NILC().output_lmax_for(NSIDE)  # 46
    assert facts["n_train_maps"] == 4 and facts["n_val_maps"] == 2 and facts["lmax"] == lmax == 46
    assert facts["fields"] == "TEB" and all(len(facts["filter"][f]) == lmax + 1 for f in "TEB")
    assert abs(facts["fsky_fit"] - EvaluateSettings.fsky) < 1e-3 and facts["fsky_fit_w2"] <= facts["fsky_fit"]
    assert read_json(run / "training.json") == facts
    saved = np.load(run / "wiener.npz")
    assert int(saved["n_maps"]) == 4 and "".join(saved["fields"]) == "TEB"
    np.testing.assert_array_equal(saved["filter"], [facts["filter"][f] for f in "TEB"])
    # the mask keeps the faint-foreground sky: no pixel within 5 degrees of the Galactic plane
    assert saved["mask"][np.abs(np.pi / 2 - _theta()) < np.radians(5)].sum() == 0
    # the fit is the documented estimator on the cached NILC and the CMB at NILC's beam and lmax
    cross, auto = 0.0, 0.0
    for i in data.sim_indices("Train"):
        nilc = read_healpix(pred_path(data.root, "nilc", "Train", i), dtype=np.float64)
        truth = sht.smooth(data.load_target("Train", i), 20.6, lmax=lmax, iter=3)
        c, a = spectra_sums(field_alm(nilc, saved["weight"], lmax), field_alm(truth, saved["weight"], lmax))
        cross, auto = cross + c, auto + a
    np.testing.assert_allclose(saved["filter"], wiener_filter(cross, auto), rtol=0, atol=1e-9)
    w = saved["filter"]
    # T is CMB-dominated (W ~ 1); E and B are noise-dominated at high ell and shrunk
    assert np.all(np.abs(w[0, 2:30] - 1) < 0.1), w[0]
    assert np.median(w[1, 30:]) < 0.5 and np.median(w[2, 10:]) < 0.3, (w[1], w[2])
    before, after = facts["val_rmse_nilc"], facts["val_rmse_filtered"]
    assert set(before) == set(after) == {"I", "Q", "U", "E", "B"}
    assert after["E"] < 0.8 * before["E"] and after["B"] < 0.5 * before["B"], (before, after)
    assert after["I"] < 1.05 * before["I"]


def _theta() -> np.ndarray:
    """Colatitude of every pixel, radians."""
    import healpy as hp

    return hp.pix2ang(NSIDE, np.arange(sht.npix(NSIDE)))[0]


def test_load_round_trip_and_separate(data, fitted):
    facts, run = fitted
    method = NILCWiener.load(run, device="cpu")
    assert method.fields == "IQU" and method.output_beam_arcmin == 20.6 and method.output_lmax_for(NSIDE) == 46
    np.testing.assert_array_equal(method.filter, [facts["filter"][f] for f in "TEB"])
    obs = data.load_obs("Valid", 1)
    fresh = NILCWiener(progress=False)
    fresh.filter, fresh.config = method.filter, method.config
    pred = method.predict(obs, data.channels)
    assert pred.shape == (3, sht.npix(NSIDE))
    np.testing.assert_array_equal(pred, fresh.predict(obs, data.channels))
    check_model(data, "nilc_wiener", run)  # nside, channels and beams of the fit
    separate(data.root, method="nilc_wiener", settings={"progress": False}, split="Valid", model_folder=run)
    info = read_json(method_info_path(data.root, "nilc_wiener", "Valid"))
    assert (info["output_beam_arcmin"], info["output_lmax"], info["fields"], info["uncertainty"]) == (
        20.6,
        46,
        "IQU",
        False,
    )
    written = read_healpix(pred_path(data.root, "nilc_wiener", "Valid", 1), dtype=np.float64)
    np.testing.assert_allclose(written, pred, rtol=1e-6, atol=1e-6 * np.abs(pred).max())  # float32 on disk
    wider = [dataclasses.replace(c, fwhm_arcmin=c.fwhm_arcmin + 1) for c in data.channels]
    with pytest.raises(ValueError, match="beam"):
        method.predict(obs, wider)
    with pytest.raises(ValueError, match="bands"):  # NILC of other channels: another noise, another filter
        method.predict(obs, data.channels[:-1])


def test_library_train_and_registry(data, tmp_path):
    """``separate.train`` runs it like a learned method (into ``<root>/nilc_wiener/model``); registry and YAML."""
    assert get_method("nilc_wiener") is NILCWiener and is_learned("nilc_wiener")
    facts = train(data.root, method="nilc_wiener", settings={"progress": False, "fields": "I", "fsky": 1.0})
    assert facts["method"] == "nilc_wiener" and facts["fields"] == "T" and facts["fsky_fit"] == 1.0
    assert (data.root / "nilc_wiener" / "model" / "model.pt").is_file()
    assert set(facts["val_rmse_nilc"]) == {"I"}
    defaults = method_defaults("nilc_wiener")
    assert defaults["fsky"] == EvaluateSettings.fsky and defaults["apod_deg"] == EvaluateSettings.apod_deg
    cfg = load_config("cmb", [f"out_dir={tmp_path}", "methods.nilc.ilc_bias_tol=0.01"])
    assert cfg["methods"]["nilc_wiener"]["nilc"] == cfg["methods"]["nilc"]  # filters the configured NILC
    assert NILCWiener(**cfg["methods"]["nilc_wiener"]).nilc.ilc_bias_tol == 0.01
    with pytest.raises(ValueError, match="fields=I"):
        NILCWiener(nilc={"fields": "I"})
    with pytest.raises(TypeError):
        NILCWiener(epochs=3)
    with pytest.raises(ValueError, match="fsky"):
        NILCWiener(fsky=0.0)
    with pytest.raises(RuntimeError, match="not fitted"):
        NILCWiener().predict(data.load_obs("Valid", 0), data.channels)
