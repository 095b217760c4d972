"""Polarisation and coverage columns of the evaluation, and their leaderboard, on a tiny polarised dataset written
here (nside 16, 3 simulations, truth I, Q, U band-limited at 2 nside).

Methods with known answers: ``perfect`` (the truth, I, Q, U), ``rotated`` (polarisation angle turned by 10
degrees: E -> B leakage sin 20 degrees), ``tonly`` (the truth's I only), ``gauss`` (60' output beam: the truth at
that beam plus Gaussian noise of a known per-pixel std, written as its error map), ``overconfident`` (the same
maps with half that std), ``shrunk`` (``rotated`` times 0.4) and the registered null method ``zero`` (its
prediction made by the method itself).
"""

from __future__ import annotations

import csv
import math

import healpy as hp
import numpy as np
import pytest

from cosmobench.cmb import masks
from cosmobench.cmb.dataset import pred_path, pred_std_path
from cosmobench.cmb.evaluate import COVERAGE_LEVELS, POL_COLUMNS, coverage_column, evaluate
from cosmobench.cmb.methods import get_method
from cosmobench.core.io import read_json, write_healpix, write_json
from cosmobench.core.seeds import rng
from cosmobench.sky import sht

NSIDE, LMAX, NSIM = 16, 32, 3
ALPHA = np.radians(10.0)
GAUSS_FWHM = 60.0
METHODS = ["perfect", "rotated", "shrunk", "tonly", "gauss", "overconfident", "zero"]
SHRINK = 0.4


def _cl(lmax: int) -> np.ndarray:
    """C_ell TT, EE, BB, TE (uK^2): flat D_ell of 2000, 20 and 0.5 uK^2, no TE."""
    ell = np.arange(lmax + 1)
    cl = np.zeros((4, lmax + 1))
    cl[:3, 2:] = np.array([2000.0, 20.0, 0.5])[:, None] * 2 * np.pi / (ell[2:] * (ell[2:] + 1))
    return cl


def _channel(band: str, fwhm: float) -> dict:
    return {
        "band": band,
        "center_ghz": float(band),
        "fwhm_arcmin": fwhm,
        "fields": "IQU",
        "depth_i": 1.0,
        "depth_p": 1.0,
    }


def _rotate(iqu: np.ndarray, alpha: float) -> np.ndarray:
    """Q + iU -> exp(2 i alpha) (Q + iU): E' = cos(2 alpha) E - sin(2 alpha) B, B' = sin(2 alpha) E + cos(2 alpha) B."""
    c, s = np.cos(2 * alpha), np.sin(2 * alpha)
    return np.stack([iqu[0], c * iqu[1] - s * iqu[2], s * iqu[1] + c * iqu[2]])


def _sigma(lat: np.ndarray) -> np.ndarray:
    """Per-pixel noise std (uK_CMB) of I, Q, U: heteroscedastic, larger near the Galactic plane."""
    shape = 1.0 + 2.0 * np.exp(-np.abs(lat) / 20.0)
    return np.stack([2.0 * shape, shape, shape])


def _method(root, name, fields, fwhm=None, lmax=None, uncertainty=False):
    info = {"method": name, "settings": {}, "output_beam_arcmin": fwhm, "fields": fields, "output_lmax": lmax}
    write_json(root / name / "Test" / "method.json", {**info, "uncertainty": uncertainty})


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    root = tmp_path_factory.mktemp("pol")
    write_json(
        root / "manifest.json",
        {
            "nside": NSIDE,
            "channels": [_channel("100", 40.0), _channel("143", 30.0)],
            "splits": {"Test": NSIM},
            "split_foregrounds": {"Test": {"model": "default"}},
        },
    )
    _, lat = hp.pix2ang(NSIDE, np.arange(sht.npix(NSIDE)), lonlat=True)
    sigma = _sigma(lat)
    beam = sht.gauss_beam(GAUSS_FWHM, LMAX)
    for i in range(NSIM):
        sim = root / "Simulations" / "Test" / f"sim{i:04d}"
        alm = sht.synalm(_cl(LMAX), LMAX, rng(5, "cmb", i))
        truth = sht.alm2map(alm, NSIDE)
        write_healpix(sim / "cmb_map_fid.fits", truth, dtype=np.float64)
        fg = np.stack([np.exp(-np.abs(lat) / 15.0), 2 * np.exp(-np.abs(lat) / 10.0)]) * (1 + 0.1 * i)
        write_healpix(sim / "foreground_I_map.fits", fg, dtype=np.float64)
        np.save(sim / "theory_cls.npy", _cl(3 * NSIDE))
        write_json(sim / "params.json", {"i": i})
        noisy = sht.alm2map(sht.almxfl(alm, beam), NSIDE) + sigma * rng(5, "noise", i).standard_normal(sigma.shape)
        preds = {"perfect": truth, "rotated": _rotate(truth, ALPHA), "tonly": truth[0], "gauss": noisy}
        preds["shrunk"] = SHRINK * preds["rotated"]
        preds["overconfident"] = noisy
        preds["zero"] = get_method("zero")().predict({"100": noisy}, [])
        for name, m in preds.items():
            write_healpix(pred_path(root, name, "Test", i), m, dtype=np.float64)
        write_healpix(pred_std_path(root, "gauss", "Test", i), sigma, dtype=np.float64)
        write_healpix(pred_std_path(root, "overconfident", "Test", i), sigma / 2, dtype=np.float64)
    for name in ("perfect", "rotated", "shrunk", "zero"):
        _method(root, name, "IQU")
    _method(root, "tonly", "I")
    for name in ("gauss", "overconfident"):
        _method(root, name, "IQU", fwhm=GAUSS_FWHM, lmax=LMAX, uncertainty=True)
    return root


@pytest.fixture(scope="module")
def results(dataset):
    out = dataset / "results" / "Test"
    summary = evaluate(dataset, methods=METHODS, fsky=0.7, nbins=6, apod_deg=10.0, out_dir=out, progress=False)
    return out, summary


def _csv(path):
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def test_polarisation_columns_have_their_exact_values(dataset, results):
    """rmse_q/u from the pixels, rmse_e/b from healpy's synthesis of the exact E and B residual alm (deconvolved
    beam), eb_leak = sin(2 alpha) for a rotation by alpha, about 0 for the truth."""
    out, summary = results
    mask = hp.read_map(out / "mask.fits") > 0
    rows = _csv(out / "rotated" / "deconvolved" / "metrics.csv")
    c, s = np.cos(2 * ALPHA), np.sin(2 * ALPHA)
    for i, row in enumerate(rows):
        alm = sht.synalm(_cl(LMAX), LMAX, rng(5, "cmb", i))
        truth = sht.alm2map(alm, NSIDE)
        d_qu = (_rotate(truth, ALPHA) - truth)[1:, mask]
        assert float(row["rmse_q"]) == pytest.approx(np.sqrt(np.mean(d_qu[0] ** 2)), rel=1e-5)
        assert float(row["rmse_u"]) == pytest.approx(np.sqrt(np.mean(d_qu[1] ** 2)), rel=1e-5)
        zero = np.zeros_like(alm[0])
        d_e, d_b = (c - 1) * alm[1] - s * alm[2], s * alm[1] + (c - 1) * alm[2]  # residual E and B alm
        for col, teb in (("rmse_e", [zero, d_e, zero]), ("rmse_b", [zero, zero, d_b])):
            qu = hp.alm2map(np.stack(teb), NSIDE, lmax=LMAX)[1:, mask]
            assert float(row[col]) == pytest.approx(np.sqrt(np.mean(qu**2)), rel=1e-5)
        assert float(row["eb_leak"]) == pytest.approx(s, abs=0.03)  # one cut sky: 0.337 to 0.357 measured
    stats = summary["methods"]["rotated"]["beams"]
    for tag in ("deconvolved", "20.6arcmin", "60arcmin"):  # the leakage does not depend on the common beam
        assert stats[tag]["eb_leak"]["mean"] == pytest.approx(s, abs=0.01)  # 0.3435 against 0.3420 measured
        assert abs(summary["methods"]["perfect"]["beams"][tag]["eb_leak"]["mean"]) < 0.01  # 0.0016 measured
        assert summary["methods"]["perfect"]["beams"][tag]["rmse_b"]["mean"] < 1e-6
        # transfer: the perfect map keeps all of the truth; the rotation keeps cos(2 alpha) of the true E
        for col in ("transfer_t", "transfer_e", "transfer_b"):
            assert summary["methods"]["perfect"]["beams"][tag][col]["mean"] == pytest.approx(1, abs=1e-6)
        assert stats[tag]["transfer_t"]["mean"] == pytest.approx(1, abs=1e-6)
        assert stats[tag]["transfer_e"]["mean"] == pytest.approx(c, abs=0.01)  # 0.9391 against 0.9397
    # the residual B = sin(2 alpha) E + (cos(2 alpha) - 1) B: its BB spectrum from the truth's EE and BB
    spec = np.load(out / "rotated" / "deconvolved" / "spectra.npz")
    model = s**2 * spec["truth_ee"] + (1 - c) ** 2 * spec["truth_bb"]
    assert np.abs(spec["resid_bb"].mean(1) / model.mean(1) - 1).max() < 0.02  # 0.5 % measured
    power = [float(r["resid_power_b"]) for r in rows]
    assert power == pytest.approx(list(spec["resid_bb"].mean(1)), rel=1e-12)


def test_the_null_map_scores_the_rms_of_the_truth(results):
    """``zero`` predicts nothing: its T, E and B RMSE are the rms of the true CMB's T (monopole and dipole removed),
    E-part and B-part on the mask, exactly, and its transfer is 0."""
    out, summary = results
    mask = hp.read_map(out / "mask.fits")
    keep = mask > 0
    for i, row in enumerate(_csv(out / "zero" / "deconvolved" / "metrics.csv")):
        alm = sht.synalm(_cl(LMAX), LMAX, rng(5, "cmb", i))
        zero = np.zeros_like(alm[0])
        t = masks.remove_monopole_dipole(hp.alm2map(alm[0], NSIDE, lmax=LMAX), mask)[keep]
        assert float(row["rmse"]) == pytest.approx(np.sqrt(np.mean(t**2)), rel=1e-5)
        for col, teb in (("rmse_e", [zero, alm[1], zero]), ("rmse_b", [zero, zero, alm[2]])):
            qu = hp.alm2map(np.stack(teb), NSIDE, lmax=LMAX)[1:, keep]
            assert float(row[col]) == pytest.approx(np.sqrt(np.mean(qu**2)), rel=1e-5)
    for col in ("transfer_t", "transfer_e", "transfer_b"):
        assert summary["methods"]["zero"]["beams"]["deconvolved"][col]["mean"] == 0


def test_the_filter_equalised_rmse_ignores_shrinkage(results):
    """Scaling a map by 0.4 changes its RMSE but not its filter-equalised RMSE (T, E, B, every beam); the truth
    scores 0 (tests/cmb/test_filtered.py checks the score's values on Gaussian skies)."""
    _, summary = results
    methods = summary["methods"]
    for tag in ("deconvolved", "20.6arcmin", "60arcmin"):
        rotated, shrunk = methods["rotated"]["beams"][tag], methods["shrunk"]["beams"][tag]
        assert shrunk["rmse_e"]["mean"] > 5 * rotated["rmse_e"]["mean"]  # 3.15 against 0.43
        for field in "teb":
            col = f"rmse_filtered_{field}"
            assert shrunk[col]["mean"] == pytest.approx(rotated[col]["mean"], rel=1e-9, abs=1e-5)  # T: both 0
            assert methods["perfect"]["beams"][tag][col]["mean"] < 1e-6
            assert shrunk[col]["n"] == NSIM and (field == "t" or shrunk[col]["se"] > 0)
    assert methods["tonly"]["beams"]["deconvolved"]["rmse_filtered_e"]["mean"] is None


def test_polarised_spectra_follow_the_theory(results):
    """Truth EE and BB against the MASTER expectation of theory_cls.npy rows 1 and 2 (3 sims, 6 bins)."""
    out, _ = results
    spec = np.load(out / "perfect" / "20.6arcmin" / "spectra.npz")
    for k in ("ee", "bb"):
        assert spec[f"truth_{k}"].shape == spec[f"theory_{k}"].shape == (NSIM, 6)
        np.testing.assert_allclose(spec[f"pred_{k}"], spec[f"truth_{k}"], rtol=1e-6, atol=1e-9)
    flat = np.ones_like(spec["ell_eff"])
    assert spec["theory_ee"].mean(0) == pytest.approx(20.0 * flat, rel=0.02)  # flat D_ell = 20 uK^2 in
    assert spec["theory_bb"].mean(0) == pytest.approx(0.5 * flat, rel=0.02)
    # cosmic variance of 3 sims of ~ (2 ell + 1) dell f_sky modes per bin; BB is leaked-E noise dominated at low ell
    assert np.all(np.abs(spec["truth_ee"].mean(0) / spec["theory_ee"].mean(0) - 1) < 0.3)
    assert np.abs(spec["truth_bb"].mean(0)[1:] / spec["theory_bb"].mean(0)[1:] - 1).max() < 0.7


def test_temperature_only_methods_get_empty_polarisation_columns(results):
    out, summary = results
    rows = _csv(out / "tonly" / "deconvolved" / "metrics.csv")
    assert all(math.isnan(float(r[k])) for r in rows for k in POL_COLUMNS)
    assert all(summary["methods"]["tonly"]["beams"]["60arcmin"][k]["mean"] is None for k in POL_COLUMNS)
    assert "truth_ee" not in np.load(out / "tonly" / "deconvolved" / "spectra.npz").files
    assert summary["methods"]["tonly"]["fields"] == "I" and summary["methods"]["tonly"]["coverage"] is None
    assert float(rows[0]["rmse"]) < 1e-8  # the temperature is still scored


def test_coverage_in_the_native_frame_is_nominal(results):
    """Noise of known std on the truth at the method's 60' output beam: the coverage at k sigma is erf(k / sqrt 2)
    within 4 binomial sigma, on the mask and the full sky, at every level; half the std gives erf(k / 2 sqrt 2)."""
    out, summary = results
    n_mask = NSIM * round(0.7 * sht.npix(NSIDE))
    for method, scale in (("gauss", 1.0), ("overconfident", 0.5)):
        cover = summary["methods"][method]["coverage"]
        for k in COVERAGE_LEVELS:
            nominal = math.erf(scale * k / math.sqrt(2))
            for field, npts in (("t", n_mask), ("p", 2 * n_mask)):
                tol = 4 * math.sqrt(nominal * (1 - nominal) / npts)
                assert cover[coverage_column(k, field)]["mean"] == pytest.approx(nominal, abs=tol)
                full = cover[coverage_column(k, field, "fullsky")]["mean"]
                assert full == pytest.approx(nominal, abs=tol * math.sqrt(n_mask / (NSIM * sht.npix(NSIDE))))
        # the same coverage at every common beam (it is measured in the method's own frame)
        firsts = {
            tag: [r["cover1_t"] + r["cover2_p"] for r in _csv(out / method / tag / "metrics.csv")]
            for tag in ("deconvolved", "60arcmin")
        }
        assert firsts["deconvolved"] == firsts["60arcmin"]
        assert summary["methods"][method]["beams"]["20.6arcmin"]["cover1_t"]["mean"] == cover["cover1_t"]["mean"]
    assert summary["methods"]["perfect"]["coverage"] is None
    assert summary["methods"]["perfect"]["beams"]["deconvolved"]["cover1_p"]["mean"] is None
    rows = _csv(out / "gauss" / "coverage.csv")
    assert len(rows) == NSIM and set(rows[0]) == {"sim"} | {
        coverage_column(k, f, r) for k in COVERAGE_LEVELS for f in "tp" for r in ("mask", "fullsky")
    }


def test_error_maps_are_inputs_of_the_rerun_check(dataset, tmp_path):
    out = tmp_path / "res"
    kwargs = {"methods": ["perfect", "gauss"], "beams": [60.0], "nbins": 4, "out_dir": out, "progress": False}
    evaluate(dataset, **kwargs)
    files = {m: out / m / "60arcmin" / "metrics.csv" for m in ("perfect", "gauss")}
    before = {m: f.stat().st_mtime_ns for m, f in files.items()}
    evaluate(dataset, **kwargs)
    assert {m: f.stat().st_mtime_ns for m, f in files.items()} == before
    std = pred_std_path(dataset, "gauss", "Test", 1)
    std.write_bytes(std.read_bytes())  # a re-estimated error map (new mtime)
    evaluate(dataset, **kwargs)
    assert files["gauss"].stat().st_mtime_ns != before["gauss"]
    assert files["perfect"].stat().st_mtime_ns == before["perfect"]


def test_bad_error_maps_and_fields_are_refused(dataset, tmp_path):
    npix = sht.npix(NSIDE)
    for i in range(NSIM):
        write_healpix(pred_path(dataset, "bad", "Test", i), np.zeros((3, npix)), dtype=np.float64)
        write_healpix(pred_std_path(dataset, "bad", "Test", i), np.ones((3, npix)), dtype=np.float64)
    kwargs = {"methods": ["bad"], "out_dir": tmp_path, "progress": False}
    _method(dataset, "bad", "I")
    with pytest.raises(ValueError, match="has 3 map\\(s\\), but its method.json says the method predicts I"):
        evaluate(dataset, **kwargs)
    _method(dataset, "bad", "IQU", uncertainty=True)
    pred_std_path(dataset, "bad", "Test", 2).unlink()
    with pytest.raises(FileNotFoundError, match="1 of its 3 error maps are missing"):
        evaluate(dataset, **kwargs)
    write_healpix(pred_std_path(dataset, "bad", "Test", 2), -np.ones((3, npix)), dtype=np.float64)
    with pytest.raises(ValueError, match="negative standard deviation"):
        evaluate(dataset, **kwargs)
    assert read_json(dataset / "bad" / "Test" / "method.json")["uncertainty"] is True


def test_leaderboard_has_t_e_b_rows_a_coverage_table_and_figures(dataset, results):
    from cosmobench.cmb.compare import compare

    out, summary = results
    report = compare(out.parent, report_dir=dataset / "report", map_beams=[])
    folder = report.parent
    rows = _csv(folder / "leaderboard.csv")
    assert len(rows) == 3 * len(METHODS) * 3  # beams x methods x fields
    by = {(r["beam"], r["method"], r["field"]): r for r in rows}
    stats = summary["methods"]["rotated"]["beams"]["60arcmin"]
    for field, col in (("T", "rmse"), ("E", "rmse_e"), ("B", "rmse_b")):
        assert float(by["60arcmin", "rotated", field]["field_rmse_mean"]) == pytest.approx(stats[col]["mean"])
    assert float(by["60arcmin", "rotated", "B"]["field_resid_power_mean"]) == stats["resid_power_b"]["mean"]
    filtered = stats["rmse_filtered_e"]
    assert float(by["60arcmin", "rotated", "E"]["field_rmse_filtered_mean"]) == pytest.approx(filtered["mean"])
    assert float(by["60arcmin", "rotated", "E"]["field_rmse_filtered_se"]) == pytest.approx(filtered["se"])
    assert by["deconvolved", "tonly", "E"]["field_rmse_mean"] == "" and by["deconvolved", "tonly", "E"]["n"] == "3"
    board = (folder / "leaderboard.md").read_text()
    rmse_b = summary["methods"]["rotated"]["beams"]["deconvolved"]["rmse_b"]["mean"]
    assert f"| rotated | B | {rmse_b:.4g} ± " in board and "| tonly | E | — |" in board
    assert "RMSE (μK_CMB, 60′ beam)" in board and "E→B leakage ε (no unit)" in board
    assert "filter-equalised RMSE (μK_CMB, no beam)" in board
    lines = board.splitlines()
    head = lines.index(next(x for x in lines if x.startswith("| Method | T 1σ, mask (68.3 %) | T 2σ, mask (95.4 %)")))
    assert [x.split("|")[1].strip() for x in lines[head + 2 : head + 4]] == ["gauss", "overconfident"]
    cover1_t = float(lines[head + 2].split("|")[2].split("±")[0])  # percent
    assert cover1_t == pytest.approx(100 * summary["methods"]["gauss"]["coverage"]["cover1_t"]["mean"], abs=0.01)
    text = report.read_text()
    drawn = sorted(str(p.relative_to(folder)) for p in (folder / "figures").rglob("*.png"))
    expected = ["calibration", "bb_spectra_deconvolved", "ee_spectra_deconvolved", "spectra_deconvolved"]
    assert drawn == sorted(
        f"figures/Test/{k}.png" for k in [*expected, "transfer_deconvolved", "correlation_deconvolved"]
    )
    for png in drawn:
        assert f"]({png})" in text and (folder / png).stat().st_size > 10_000
    assert "## EE and BB power spectra, Test" in text and "## Calibration of the per-pixel errors, Test" in text
    assert "Coverage (methods with a per-pixel error map)" in text and "correlation with the true CMB, Test" in text
