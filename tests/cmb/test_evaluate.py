"""The evaluation protocol and the report on a tiny dataset folder written here (nside 16, 3 simulations per split).

Two splits: Test, and TestOOD recorded as the "alt" foreground model, whose "noisy" predictions carry twice the
noise (a method that degrades out of distribution).
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from cosmobench.cmb.compare import compare
from cosmobench.cmb.evaluate import evaluate
from cosmobench.core.io import read_json, write_healpix, write_json
from cosmobench.core.seeds import rng
from cosmobench.sky import sht

NSIDE, LMAX, NSIM, NOISE = 16, 32, 3, 5.0


def _cl(lmax: int) -> np.ndarray:
    ell = np.arange(lmax + 1)
    cl = np.zeros((4, lmax + 1))
    cl[0, 2:] = 2 * np.pi * 2000.0 / (ell[2:] * (ell[2:] + 1))
    return cl


def _channel(band: str, fwhm: float) -> dict:
    return {"band": band, "center_ghz": float(band), "fwhm_arcmin": fwhm, "fields": "I", "depth_i": 1.0, "depth_p": 1.0}


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    """Manifest, truth band-limited to 2 nside, foregrounds, theory; three methods' predictions."""
    import healpy as hp

    root = tmp_path_factory.mktemp("ds")
    write_json(
        root / "manifest.json",
        {
            "nside": NSIDE,
            "channels": [_channel("100", 40.0), _channel("143", 30.0)],
            "splits": {"Test": NSIM, "TestOOD": NSIM},
            "split_foregrounds": {"Test": {"model": "default"}, "TestOOD": {"model": "alt"}},
        },
    )
    _, lat = hp.pix2ang(NSIDE, np.arange(sht.npix(NSIDE)), lonlat=True)
    beam = sht.gauss_beam(20.6, LMAX)
    for split, seed, noise in (("Test", 1, NOISE), ("TestOOD", 2, 2 * NOISE)):
        _write_split(root, split, seed, noise, lat, beam)
    return root


def _write_split(root, split, seed, noise, lat, beam):
    for i in range(NSIM):
        sim = root / "Simulations" / split / f"sim{i:04d}"
        alm = sht.synalm(_cl(LMAX)[0], LMAX, rng(seed, "cmb", i))
        truth = sht.alm2map(alm, NSIDE)
        write_healpix(sim / "cmb_map_fid.fits", truth, dtype=np.float64, column_names=["TEMPERATURE"])
        fg = np.stack([np.exp(-np.abs(lat) / 15.0), 2 * np.exp(-np.abs(lat) / 10.0)]) * (1 + 0.1 * i)
        write_healpix(sim / "foreground_I_map.fits", fg, dtype=np.float64)
        np.save(sim / "theory_cls.npy", _cl(3 * NSIDE))
        write_json(sim / "params.json", {"i": i})
        preds = {
            "perfect": truth,
            "beamed": sht.alm2map(sht.almxfl(alm, beam), NSIDE),
            "noisy": truth + noise * rng(seed, "noise", i).standard_normal(truth.size),
        }
        for name, m in preds.items():
            write_healpix(root / name / split / f"sim{i:04d}" / "cmb_pred.fits", m, dtype=np.float64)
    for name, fwhm in (("perfect", None), ("beamed", 20.6), ("noisy", None)):
        info = {"method": name, "settings": {}, "output_beam_arcmin": fwhm}
        write_json(root / name / split / "method.json", info)


def test_evaluate_scores_known_cases(dataset):
    out = dataset / "results"
    summary = evaluate(
        dataset, methods=["perfect", "beamed", "noisy"], fsky=0.7, nbins=6, apod_deg=10.0, out_dir=out, progress=False
    )
    s = summary["settings"]
    assert s["lmax"] == 2 * NSIDE and s["beams"] == ["deconvolved", "20.6arcmin", "60arcmin"]
    assert s["fsky"] == pytest.approx(0.7, abs=1 / sht.npix(NSIDE))
    res = summary["methods"]
    for tag in s["beams"]:
        assert res["perfect"]["beams"][tag]["rmse"]["mean"] < 1e-10
        assert res["perfect"]["beams"][tag]["psnr"]["mean"] is None  # infinite PSNR -> null in JSON
        # a prediction at 20.6' is brought back to the truth's beam exactly (up to SHT precision)
        assert res["beamed"]["beams"][tag]["rmse"]["mean"] < 1e-4 * res["noisy"]["beams"][tag]["rmse"]["mean"]
    # white noise of 5 uK per pixel band-limited to lmax: rms = 5 sqrt(sum_l (2l+1) / npix), within 10 %
    expected = NOISE * np.sqrt((LMAX + 1) ** 2 / sht.npix(NSIDE))
    noisy = res["noisy"]["beams"]["deconvolved"]
    assert noisy["rmse"]["mean"] == pytest.approx(expected, rel=0.1)
    assert noisy["rmse"]["se"] == pytest.approx(noisy["rmse"]["std"] / np.sqrt(NSIM))
    # at a 1 degree common beam the noise is smoothed: rms^2 = 25 sum_l (2l+1) b_l^2 / npix
    ell = np.arange(LMAX + 1)
    smoothed = NOISE * np.sqrt(np.sum((2 * ell + 1) * sht.gauss_beam(60.0, LMAX) ** 2) / sht.npix(NSIDE))
    assert res["noisy"]["beams"]["60arcmin"]["rmse"]["mean"] == pytest.approx(smoothed, rel=0.1)
    # the residual spectrum of the noisy method is white noise, N_l = sigma^2 4 pi / npix, through MASTER
    spec = np.load(out / "noisy" / "deconvolved" / "spectra.npz")
    n_ell = NOISE**2 * 4 * np.pi / sht.npix(NSIDE)
    ell = spec["ell_eff"]
    ratio = spec["resid"].mean(0) / (n_ell * ell * (ell + 1) / (2 * np.pi))
    assert np.all(np.abs(ratio - 1) < 0.35)
    assert spec["pred"].shape == (NSIM, len(ell)) and spec["theory"].shape == (NSIM, len(ell))
    # the truth spectrum scatters around the theory within cosmic variance (3 sims, 6 wide bins)
    assert np.all(np.abs(spec["truth"].mean(0) / spec["theory"].mean(0) - 1) < 0.5)
    rows = (out / "noisy" / "deconvolved" / "metrics.csv").read_text().splitlines()
    assert rows[0].startswith("sim,mae,rmse,nrmse,psnr,rmse_ell_lo") and len(rows) == NSIM + 1
    assert json.loads((out / "summary.json").read_text())["methods"]["noisy"]["output_beam_arcmin"] is None


def test_evaluate_skips_finished_methods_and_redoes_changed_ones(dataset):
    out = dataset / "results_skip"
    kwargs = {"methods": ["perfect", "noisy"], "beams": ["deconvolved"], "nbins": 4, "out_dir": out, "progress": False}
    evaluate(dataset, **kwargs)
    csv_noisy = out / "noisy" / "deconvolved" / "metrics.csv"
    csv_perfect = out / "perfect" / "deconvolved" / "metrics.csv"
    before = csv_noisy.stat().st_mtime_ns, csv_perfect.stat().st_mtime_ns
    evaluate(dataset, **kwargs)
    assert (csv_noisy.stat().st_mtime_ns, csv_perfect.stat().st_mtime_ns) == before
    pred = dataset / "noisy" / "Test" / "sim0001" / "cmb_pred.fits"
    pred.write_bytes(pred.read_bytes())  # a re-predicted map (new mtime)
    evaluate(dataset, **kwargs)
    assert csv_noisy.stat().st_mtime_ns != before[0] and csv_perfect.stat().st_mtime_ns == before[1]


def test_evaluate_refuses_missing_predictions_and_bad_settings(dataset):
    with pytest.raises(FileNotFoundError, match="cosmobench cmb separate method=absent"):
        evaluate(dataset, methods=["absent"], out_dir=dataset / "r2", progress=False)
    with pytest.raises(ValueError, match="lmax"):
        evaluate(dataset, methods=["perfect"], lmax=3 * NSIDE, out_dir=dataset / "r2", progress=False)
    with pytest.raises(ValueError, match="beam"):
        evaluate(dataset, methods=["perfect"], beams=["wide"], out_dir=dataset / "r2", progress=False)


def test_user_mask_is_used(dataset, tmp_path):
    import healpy as hp

    _, lat = hp.pix2ang(NSIDE, np.arange(sht.npix(NSIDE)), lonlat=True)
    write_healpix(tmp_path / "mask.fits", (np.abs(lat) > 30).astype(float))
    summary = evaluate(
        dataset,
        methods=["noisy"],
        beams=[60.0],
        mask_path=tmp_path / "mask.fits",
        nbins=4,
        out_dir=tmp_path / "res",
        progress=False,
    )
    assert summary["settings"]["fsky"] == pytest.approx(np.mean(np.abs(lat) > 30))


def test_compare_writes_leaderboard_and_report(dataset):
    out = dataset / "results"
    if not (out / "summary.json").is_file():
        evaluate(dataset, methods=["perfect", "beamed", "noisy"], fsky=0.7, nbins=6, out_dir=out, progress=False)
    report = compare(out, report_dir=dataset / "report", map_beams=["deconvolved"])
    folder = report.parent
    board = (folder / "leaderboard.md").read_text()
    assert "| 20.6arcmin | noisy |" in board and "±" in board
    assert "| deconvolved | perfect | **0" in board  # best MAE in bold
    rows = read_json(folder / "leaderboard.json")["rows"]
    # one row per beam, method and field T, E, B; the temperature-only predictions have empty E and B values
    assert len(rows) == 27 and {"rmse_mean", "rmse_std", "rmse_se", "n", "field_rmse_mean"} <= set(rows[0])
    assert [r["field"] for r in rows[:3]] == ["T", "E", "B"]
    assert rows[0]["field_rmse_mean"] == rows[0]["rmse_mean"] and rows[1]["field_rmse_mean"] is None
    header = (folder / "leaderboard.csv").read_text().splitlines()[0]
    assert header.startswith("split,foreground_model,beam,method,field,output_beam_arcmin,field_rmse_mean")
    assert "| noisy | T |" in board and "| noisy | B |" in board and "RMSE (μK_CMB, 20.6′ beam)" in board
    text = report.read_text()
    # one figure of each kind, at the map beam; every figure linked; the other beams in a table
    drawn = sorted(str(p.relative_to(folder)) for p in (folder / "figures").rglob("*.png"))
    assert drawn == [f"figures/Test/{k}_deconvolved.png" for k in ("correlation", "maps", "spectra", "transfer")]
    for png in drawn:
        assert f"]({png})" in text and (folder / png).stat().st_size > 10_000
    assert "| noisy | 60arcmin |" in text and "error bars are the standard deviation" in text
    with pytest.raises(ValueError, match="not evaluated"):
        compare(out, report_dir=dataset / "report", map_beams=[5.0])


def test_ood_split_is_scored_and_shown_beside_test(dataset):
    """Both test splits evaluated into results/<split>; the report shows them side by side with the ratio."""
    results = dataset / "results_ood"
    kwargs = {"methods": ["perfect", "noisy"], "beams": ["deconvolved", 60.0], "nbins": 4, "progress": False}
    for split in ("TestOOD", "Test"):
        summary = evaluate(dataset, split=split, out_dir=results / split, **kwargs)
        assert summary["settings"]["split"] == split
        assert summary["settings"]["foreground_model"] == {"Test": "default", "TestOOD": "alt"}[split]
    report = compare(results, report_dir=dataset / "report_ood", map_beams=[])
    folder = report.parent
    rows = read_json(folder / "leaderboard.json")["rows"]
    assert [r["split"] for r in rows] == ["Test"] * 12 + ["TestOOD"] * 12  # Test first, then the OOD split
    assert {r["foreground_model"] for r in rows if r["split"] == "TestOOD"} == {"alt"}
    rmse = {(r["split"], r["beam"], r["method"]): r["rmse_mean"] for r in rows}
    ratio = rmse["TestOOD", "deconvolved", "noisy"] / rmse["Test", "deconvolved", "noisy"]
    assert ratio == pytest.approx(2.0, rel=0.1)  # the OOD predictions carry twice the noise
    board = (folder / "leaderboard.md").read_text()
    assert "| Common beam | Method | RMSE Test, default (μK) | RMSE TestOOD, alt (μK) | TestOOD / Test |" in board
    assert "### TestOOD (foregrounds: alt)" in board and "### Test (foregrounds: default)" in board
    line = next(x for x in board.splitlines() if x.startswith("| deconvolved | noisy |"))
    assert float(line.rstrip(" |").split("|")[-1]) == pytest.approx(ratio, rel=1e-2)
    text = report.read_text()
    assert "**TestOOD** (3 simulations, foreground model alt" in text
    assert "figures/TestOOD/spectra_deconvolved.png" in text
    assert (folder / "figures/TestOOD/spectra_deconvolved.png").is_file()
    assert not list((folder / "figures").rglob("maps_*"))


def test_compare_prefers_split_folders_over_an_old_layout_result(dataset):
    """A results folder evaluated first without split folders (old layout: results/summary.json), then per split:
    the report shows the split folders (Test and TestOOD), warning about the old top-level result."""
    results = dataset / "results_mixed"
    kwargs = {"methods": ["perfect", "noisy"], "beams": [60.0], "nbins": 4, "progress": False}
    evaluate(dataset, out_dir=results, **kwargs)  # the old layout: one split, at the top
    for split in ("Test", "TestOOD"):
        evaluate(dataset, split=split, out_dir=results / split, **kwargs)
    with pytest.warns(UserWarning, match="layout without split folders"):
        report = compare(results, report_dir=dataset / "report_mixed", map_beams=[])
    rows = read_json(report.parent / "leaderboard.json")["rows"]
    assert [r["split"] for r in rows] == ["Test"] * 6 + ["TestOOD"] * 6
    assert "TestOOD / Test" in (report.parent / "leaderboard.md").read_text()
    (results / "Copy").mkdir()
    (results / "Copy" / "summary.json").write_bytes((results / "Test" / "summary.json").read_bytes())
    with pytest.warns(UserWarning), pytest.raises(ValueError, match="both hold results of split 'Test'"):
        compare(results, report_dir=dataset / "report_mixed", map_beams=[])
