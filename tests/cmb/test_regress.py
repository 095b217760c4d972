"""``nilc_regress``: NILC + the least-squares regression of its residual on band-minus-NILC maps.

Exact answers on toys: a foreground of known SED left in a "NILC" map is removed to the transforms' accuracy, and
CMB-only bands give regressors of zero (the correction cannot touch the CMB). End to end on a small polarised
dataset: the fit is the documented estimator, lowers NILC's validation residual, and loads, separates and refuses
changed channels like the other fitted methods.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from astropy.io import fits
from numpy.testing import assert_allclose

from cosmobench.cli import load_config
from cosmobench.cmb.dataset import method_info_path, pred_path
from cosmobench.cmb.evaluate import guard_counts
from cosmobench.cmb.methods import get_method, is_learned, method_defaults
from cosmobench.cmb.methods.guard import GuardDecision
from cosmobench.cmb.methods.ilc import ilc_weights
from cosmobench.cmb.methods.loss_region import correction_region
from cosmobench.cmb.methods.nilc import NILC
from cosmobench.cmb.methods.nilc_unet import NILCResidualData
from cosmobench.cmb.methods.regress import (
    NILCRegress,
    normal_equations,
    null_rms,
    regressors,
    solve_coefficients,
)
from cosmobench.cmb.separate import check_model, separate, train
from cosmobench.cmb.settings import EvaluateSettings
from cosmobench.core.io import read_healpix, read_json
from cosmobench.core.seeds import rng
from cosmobench.sky import sht
from cosmobench.sky.instrument import load_channels

from .conftest import TOY_BANDS, write_polarised_toy

NSIDE = 16
LMAX = 2 * NSIDE  # band limit of the toys: map -> alm -> map round trips are accurate to ~1e-4 there
OUT_BEAM = 20.6


def _field(seed: str, amplitude: float) -> np.ndarray:
    """I, Q, U alm (3, nalm) of a red Gaussian field band-limited at LMAX."""
    ell = np.arange(LMAX + 1)
    cl = np.zeros(LMAX + 1)
    cl[2:] = amplitude / (ell[2:] * (ell[2:] + 1))
    return sht.synalm(np.stack([cl, cl / 10, cl / 20, np.zeros_like(cl)]), LMAX, rng(0, seed))


def _toy(seds: dict[str, float], kept: str) -> tuple[dict, np.ndarray, np.ndarray, dict, dict]:
    """Bands = CMB + sed_b * F at their beams; "NILC" = CMB + sed_kept * F at OUT_BEAM (a NILC that kept band
    ``kept``'s foreground). Returns obs, NILC map, truth (CMB at OUT_BEAM), beams, the foreground at OUT_BEAM."""
    beams = {c.band: c.fwhm_arcmin for c in load_channels(bands=list(seds))}
    cmb, fg = _field("cmb", 1e4), _field("fg", 3e3)

    def at(alm, fwhm):
        return sht.alm2map(sht.almxfl(alm, sht.gauss_beam(fwhm, LMAX, pol=True)), NSIDE, LMAX)

    obs = {b: at(cmb + s * fg, beams[b]) for b, s in seds.items()}
    truth, fg_out = at(cmb, OUT_BEAM), at(fg, OUT_BEAM)
    return obs, truth + seds[kept] * fg_out, truth, beams, fg_out


def _rms(maps: np.ndarray) -> np.ndarray:
    return np.sqrt(np.mean(maps**2, axis=1))


def _fit_and_correct(obs, nilc_map, truth, beams, groups, region) -> np.ndarray:
    x = regressors(obs, nilc_map, beams, groups, output_beam_arcmin=OUT_BEAM, lmax=LMAX)
    out = nilc_map.copy()
    for g, rows in {"T": slice(0, 1), "P": slice(1, 3)}.items():
        a = solve_coefficients(*normal_equations(x[g], (truth - nilc_map)[rows], region))
        out[rows] += region * np.tensordot(a, x[g], axes=1)
    return out


def test_a_foreground_of_known_sed_is_removed_exactly():
    seds = {"100": 0.5, "143": 1.0, "217": 2.2, "353": 7.0}
    obs, nilc_map, truth, beams, fg = _toy(seds, kept="143")
    groups = {"T": list(seds), "P": list(seds)}
    before = np.sqrt(np.mean((nilc_map - truth) ** 2, axis=1))
    assert np.all(before > 0.1 * np.sqrt(np.mean(truth**2, axis=1)))  # a foreground worth removing
    for region in (np.ones(sht.npix(NSIDE)), (np.arange(sht.npix(NSIDE)) % 2).astype(float)):
        corrected = _fit_and_correct(obs, nilc_map, truth, beams, groups, region)
        after = np.sqrt(np.mean((corrected - truth)[:, region > 0] ** 2, axis=1))
        assert np.all(after < 1e-3 * before), (before, after)
        np.testing.assert_array_equal(corrected[:, region == 0], nilc_map[:, region == 0])
    # with 143 and 217 alone (x_143 = 0) the 217 map carries the correction; with its beam mistaken (5 degrees too
    # wide, which matters at these multipoles) its CMB no longer cancels and the fit cannot be exact
    pair = {"T": ["143", "217"], "P": ["143", "217"]}
    assert np.all(
        _rms(_fit_and_correct(obs, nilc_map, truth, beams, pair, np.ones(sht.npix(NSIDE))) - truth) < 1e-3 * before
    )
    wrong = {**beams, "217": beams["217"] + 300.0}
    corrected = _fit_and_correct(obs, nilc_map, truth, wrong, pair, np.ones(sht.npix(NSIDE)))
    assert np.any(_rms(corrected - truth) > 0.01 * before), _rms(corrected - truth)


def test_cmb_only_bands_give_no_correction():
    seds = dict.fromkeys(["100", "143", "217", "353"], 0.0)
    obs, nilc_map, truth, beams, _ = _toy(seds, kept="143")
    x = regressors(obs, nilc_map, beams, {"T": list(seds), "P": list(seds)}, output_beam_arcmin=OUT_BEAM, lmax=LMAX)
    scale = np.sqrt(np.mean(truth**2))
    assert max(np.abs(x["T"]).max(), np.abs(x["P"]).max()) < 1e-3 * scale
    assert x["T"].shape == (4, 1, sht.npix(NSIDE)) and x["P"].shape == (4, 2, sht.npix(NSIDE))


def test_the_fitted_correction_removes_the_ilc_bias_that_the_data_variance_rejects():
    """An ILC fitted on each map's own N_p samples of CMB + white noise errs by its ILC bias: (N_c - 1)/N_p of the
    CMB's power, along the CMB (<e s> / <s s> = -(N_c - 1)/N_p; test_ilc.py), on top of the noise. The regression
    on band-minus-ILC maps fitted against the truth over many maps removes the bias: the corrected map is a fixed
    unit-response combination of the bands, whose error is the inverse-variance noise floor 1/sum(sigma^-2) and
    independent of the CMB. Each map's own variance cannot ask for that correction: ILC + lambda c keeps unit
    response for every lambda, and the ILC is the minimum-variance such combination of the map, so the
    variance-minimising lambda is 0 exactly (benchmarks/bench_regress_permap.py measures the same on NILC,
    docs/results.md)."""
    n_p, sigma = 300, 0.1 * np.array([1.0, 1.5, 2.0, 1.0, 3.0])
    floor, bias = 1 / np.sum(sigma**-2), (len(sigma) - 1) / n_p

    def one_map(t: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        s = rng(13, "cmb", t).standard_normal(n_p)
        d = s + sigma[:, None] * rng(13, "noise", t).standard_normal((len(sigma), n_p))
        ilc = ilc_weights(d @ d.T / n_p, ridge=0.0) @ d
        return s, ilc, (d - ilc)[:, None]

    sums = [normal_equations(x, (s - ilc)[None], np.ones(n_p)) for s, ilc, x in map(one_map, range(300))]
    a = solve_coefficients(sum(m for m, _ in sums), sum(v for _, v in sums))
    err_ilc, err_fixed, along_ilc, along_fixed, scale_data, scale_truth = ([] for _ in range(6))
    for t in range(1000, 1200):
        s, ilc, x = one_map(t)
        c = a @ x[:, 0]
        for err, along in ((ilc - s, along_ilc), (ilc + c - s, along_fixed)):
            along.append((err @ s) / (s @ s))
        err_ilc.append(np.mean((ilc - s) ** 2))
        err_fixed.append(np.mean((ilc + c - s) ** 2))
        scale_data.append(-(c @ ilc) / (c @ c))
        scale_truth.append((c @ (s - ilc)) / (c @ c))
    assert np.mean(err_ilc) == pytest.approx(bias + floor, rel=0.1)
    assert np.mean(err_fixed) == pytest.approx(floor, rel=0.05)
    assert np.mean(along_ilc) == pytest.approx(-bias, rel=0.1)  # the error's regression on the CMB
    assert abs(np.mean(along_fixed)) < 0.1 * bias  # 5 standard errors of an error independent of the CMB
    assert np.abs(scale_data).max() < 1e-8
    assert np.mean(scale_truth) == pytest.approx(1.0, abs=0.05)


def test_normal_equations_do_not_depend_on_the_thread_count():
    """The fitted coefficients (and the image arrays of regress_unet, keyed by them) must be the same bits at every
    ``threads`` setting; BLAS's matrix-vector product changes its rounding with the thread count."""
    from threadpoolctl import threadpool_limits

    x = 30 * rng(14, "x").standard_normal((9, 1, 150_000))
    r = rng(14, "r").standard_normal((1, 150_000))
    region = (rng(14, "region").random(150_000) < 0.8).astype(float)
    found = []
    for threads in (1, 2, 4):
        with threadpool_limits(threads):
            found.append(normal_equations(x, r, region))
    for xtx, xtr in found[1:]:
        assert xtx.tobytes() == found[0][0].tobytes() and xtr.tobytes() == found[0][1].tobytes()
    keep = region > 0
    assert_allclose(found[0][1], x[:, 0, keep] @ r[0, keep], rtol=1e-12)


def test_the_guard_null_vanishes_on_the_fitted_law_and_not_on_another():
    """Two corrections fitted on one foreground law, one without 217 GHz, both remove it: their difference (the
    guard's null, no CMB in it) is the transforms' error. On a sky whose 353 GHz foreground follows another law they
    leave different residuals and the null is a sizeable part of the foreground."""
    seds = {"100": 0.3, "143": 1.0, "217": 3.0, "353": 10.0}
    obs, nilc_map, truth, beams, fg = _toy(seds, kept="143")
    bands, region = list(seds), np.ones(sht.npix(NSIDE))
    kept = [0, 1, 3]
    x = regressors(obs, nilc_map, beams, {"T": bands}, output_beam_arcmin=OUT_BEAM, lmax=LMAX)["T"]
    r = (truth - nilc_map)[:1]
    a = solve_coefficients(*normal_equations(x, r, region))
    a2 = solve_coefficients(*normal_equations(x[kept], r, region))
    scale = np.sqrt(np.mean(fg[0] ** 2))
    assert null_rms(x, a, a2, kept, region) < 1e-5 * scale
    other, other_nilc, *_ = _toy({**seds, "353": 20.0}, kept="143")
    x_other = regressors(other, other_nilc, beams, {"T": bands}, output_beam_arcmin=OUT_BEAM, lmax=LMAX)["T"]
    assert null_rms(x_other, a, a2, kept, region) > 0.05 * scale


def test_the_guard_threshold_comes_from_validation_and_keeps_nilc_above_it(data, tmp_path):
    facts = NILCRegress(progress=False, guard_drop=["217"], guard_factor=1.5).fit(data, tmp_path)
    model = NILCRegress.load(tmp_path)
    guard = model.config["guard"]
    view = NILCResidualData(data, model.nilc)
    groups, band = model.config["groups"], model.config["region_band"]
    coef = model.coefficients
    terms = [model._sim_terms(view, "Valid", band, groups, i) for i in (0, 1)]
    nulls = [null_rms(t["x"]["T"], coef["T"], coef["guard"], guard["kept"], t["region"]) for t in terms]
    assert guard["threshold"] == pytest.approx(1.5 * max(nulls), rel=1e-12)
    assert facts["guard"]["kept"] == ["100", "143", "353"] and len(facts["guard"]["coefficients"]) == 3
    obs = data.load_obs("Valid", 0)
    nilc_map = view.nilc_map("Valid", 0)
    corrected = model.correct(obs, data.channels, nilc_map)
    assert not np.allclose(corrected[0], nilc_map[0])  # under the threshold: corrected
    assert model.last_guard == GuardDecision(nulls[0], guard["threshold"], True)
    model.config["guard"] = {**guard, "threshold": 0.0}
    flagged = model.correct(obs, data.channels, nilc_map)
    assert_allclose(flagged[0], nilc_map[0], rtol=0, atol=0)  # above it: NILC's temperature
    assert_allclose(flagged[1:], corrected[1:], rtol=0, atol=0)  # the polarisation is corrected either way
    assert model.prediction_cards()["TCORR"][0] is False and model.prediction_cards()["GNULL"][0] == nulls[0]
    fallback = model.fallback()  # the guard's fallback on every map, no decision recorded
    assert_allclose(fallback.correct(obs, data.channels, nilc_map), flagged, rtol=0, atol=0)
    assert fallback.prediction_cards() == {} and model.config["guard"]["threshold"] == 0.0
    with pytest.raises(ValueError, match="guard_drop"):
        NILCRegress(progress=False, guard_drop=TOY_BANDS).fit(data, tmp_path / "all")


def test_separate_records_the_guards_decision_in_each_maps_header(tmp_path):
    """The FITS header of each predicted map says whether its temperature was corrected, with the null and the
    threshold (uK_CMB); the evaluation counts the corrected maps of a split from those headers."""
    data = write_polarised_toy(tmp_path / "data", {"Train": 4, "Valid": 2}, nside=NSIDE)
    run = tmp_path / "guarded"
    low, high = NILCRegress(progress=False, guard_drop=["217"]).fit(data, tmp_path / "first")["guard"]["valid_null"]
    factor = (low + high) / (2 * high)  # a threshold between the two validation maps' nulls: one of them is flagged
    settings = {"progress": False, "guard_drop": ["217"], "guard_factor": factor}
    NILCRegress(**settings).fit(data, run)
    separate(data.root, method="nilc_regress", settings=settings, split="Valid", model_folder=run)
    model = NILCRegress.load(run)
    decisions = {}
    for i in data.sim_indices("Valid"):
        header = fits.getheader(pred_path(data.root, "nilc_regress", "Valid", i), 1)
        model.correct(data.load_obs("Valid", i), data.channels, NILCResidualData(data, model.nilc).nilc_map("Valid", i))
        assert header["GNULL"] == pytest.approx(model.last_guard.null, rel=1e-12)
        assert header["GTHRESH"] == pytest.approx(factor * high, rel=1e-12)
        decisions[i] = GuardDecision.from_header(header)
        assert decisions[i].corrected is model.last_guard.corrected is (model.last_guard.null <= factor * high)
    flagged = [i for i, d in decisions.items() if d.null == pytest.approx(high, rel=1e-12)]
    assert guard_counts(data.root, "nilc_regress", "Valid", [0, 1]) == {"maps": 2, "corrected": 1, "kept_base": flagged}
    assert guard_counts(data.root, "nilc", "Valid", [0, 1]) is None  # NILC's maps (cached by the fit): no guard


def test_correction_region_keeps_the_faint_sky():
    intensity = np.arange(sht.npix(NSIDE), dtype=float)
    region = correction_region(intensity, fsky=0.25, smooth_deg=0.0)
    assert region.sum() == sht.npix(NSIDE) // 4 and region[: sht.npix(NSIDE) // 4].all()
    assert correction_region(intensity, fsky=1.0, smooth_deg=2.0).all()


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return write_polarised_toy(tmp_path_factory.mktemp("regress") / "data", {"Train": 4, "Valid": 2}, nside=NSIDE)


@pytest.fixture(scope="module")
def fitted(data, tmp_path_factory):
    """``fit`` of nilc_regress on ``data``: (facts, run folder)."""
    run = tmp_path_factory.mktemp("regress_run")
    return NILCRegress(progress=False).fit(data, run), run


def test_fit_is_the_documented_estimator_and_lowers_nilc_residual(data, fitted):
    facts, run = fitted
    lmax = NILC().output_lmax_for(NSIDE)
    assert facts["n_train_maps"] == 4 and facts["n_val_maps"] == 2 and facts["lmax"] == lmax
    assert facts["bands"] == {"T": TOY_BANDS, "P": TOY_BANDS}
    assert read_json(run / "training.json") == facts
    beams = {c.band: c.fwhm_arcmin for c in data.channels}
    sums = {g: [0.0, 0.0] for g in "TP"}
    for i in data.sim_indices("Train"):
        nilc_map = read_healpix(pred_path(data.root, "nilc", "Train", i), dtype=np.float64)
        truth = sht.smooth(data.load_target("Train", i), OUT_BEAM, lmax=lmax, iter=3)
        obs = data.load_obs("Train", i)
        region = correction_region(obs["353"][0], fsky=EvaluateSettings.fsky, smooth_deg=2.0)
        assert abs(region.mean() - EvaluateSettings.fsky) < 1e-3
        x = regressors(obs, nilc_map, beams, facts["bands"], output_beam_arcmin=OUT_BEAM, lmax=lmax)
        for g, rows in {"T": slice(0, 1), "P": slice(1, 3)}.items():
            xtx, xtr = normal_equations(x[g], (truth - nilc_map)[rows], region)
            sums[g][0], sums[g][1] = sums[g][0] + xtx, sums[g][1] + xtr
    for g in "TP":
        np.testing.assert_allclose(
            [facts["coefficients"][g][b] for b in TOY_BANDS], solve_coefficients(*sums[g]), rtol=1e-9, atol=1e-12
        )
    before, after = facts["val_rmse_nilc"], facts["val_rmse_corrected"]
    assert set(before) == set(after) == {"I", "Q", "U", "E", "B"}
    assert after["I"] < before["I"] and after["E"] < before["E"], (before, after)


def test_load_round_trip_separate_and_refusals(data, fitted):
    facts, run = fitted
    method = NILCRegress.load(run, device="cpu")
    assert method.fields == "IQU" and method.output_beam_arcmin == OUT_BEAM and method.config["region_band"] == "353"
    for g in "TP":
        np.testing.assert_array_equal(method.coefficients[g], [facts["coefficients"][g][b] for b in TOY_BANDS])
    obs = data.load_obs("Valid", 1)
    pred = method.predict(obs, data.channels)
    assert pred.shape == (3, sht.npix(NSIDE))
    check_model(data, "nilc_regress", run)
    separate(data.root, method="nilc_regress", settings={"progress": False}, split="Valid", model_folder=run)
    info = read_json(method_info_path(data.root, "nilc_regress", "Valid"))
    assert (info["output_beam_arcmin"], info["fields"], info["uncertainty"]) == (OUT_BEAM, "IQU", False)
    written = read_healpix(pred_path(data.root, "nilc_regress", "Valid", 1), dtype=np.float64)
    np.testing.assert_allclose(written, pred, rtol=1e-6, atol=1e-6 * np.abs(pred).max())  # float32 on disk
    wider = [dataclasses.replace(c, fwhm_arcmin=c.fwhm_arcmin + 1) for c in data.channels]
    with pytest.raises(ValueError, match="beam"):
        method.predict(obs, wider)
    with pytest.raises(ValueError, match="bands"):  # NILC of other channels
        method.predict(obs, data.channels[:-1])
    with pytest.raises(ValueError, match="give their maps"):
        method.predict({b: m for b, m in obs.items() if b != "100"}, data.channels)


def test_library_train_registry_and_settings(data, tmp_path):
    assert get_method("nilc_regress") is NILCRegress and is_learned("nilc_regress")
    settings = {"progress": False, "fields": "I", "bands": ["143", "217"]}
    facts = train(data.root, method="nilc_regress", settings=settings)
    assert facts["bands"] == {"T": ["143", "217"]} and set(facts["val_rmse_nilc"]) == {"I"}
    assert method_defaults("nilc_regress")["fsky"] == EvaluateSettings.fsky
    cfg = load_config("cmb", [f"out_dir={tmp_path}", "methods.nilc.ilc_bias_tol=0.01"])
    assert cfg["methods"]["nilc_regress"]["nilc"] == cfg["methods"]["nilc"]  # corrects the configured NILC
    with pytest.raises(ValueError, match="fields=I"):
        NILCRegress(nilc={"fields": "I"})
    with pytest.raises(ValueError, match="fsky"):
        NILCRegress(fsky=1.5)
    with pytest.raises(TypeError):
        NILCRegress(epochs=3)
    with pytest.raises(ValueError, match="not among the channels"):  # before NILC of any split is computed
        NILCRegress(bands=["999"], progress=False).fit(data, tmp_path / "bad")
    assert not (tmp_path / "bad").exists()
    with pytest.raises(RuntimeError, match="not fitted"):
        NILCRegress().predict(data.load_obs("Valid", 0), data.channels)


def test_fit_is_independent_of_the_worker_count(data, fitted, tmp_path):
    """Per-map normal equations summed in map order: two processes give the serial fit's bytes."""
    facts, _ = fitted
    parallel = NILCRegress(progress=False, workers=2).fit(data, tmp_path / "run")
    assert parallel["coefficients"] == facts["coefficients"]
    assert parallel["val_rmse_corrected"] == facts["val_rmse_corrected"]
