"""`cosmobench cmb run` end to end at nside 16 with the classical methods: every stage connects."""

import json

from cosmobench.cli import load_config
from cosmobench.cmb.stages import run


def test_run_writes_a_leaderboard_and_ilc_recovers_the_cmb(tmp_path):
    cfg = load_config(
        "cmb",
        [
            f"out_dir={tmp_path}",
            "nside=16",
            "simulate.splits={Train:1,Valid:0,Test:2,TestOOD:2}",
            "run.methods=[hilc,nilc]",
            "simulate.progress=false",
            "separate.progress=false",
            "evaluate.progress=false",
        ],
    )
    out = run(config=cfg)
    assert out["report"].endswith("report.md") and (tmp_path / "report" / "report.md").is_file()
    rows = json.loads((tmp_path / "report" / "leaderboard.json").read_text())["rows"]
    # both test splits, in distribution and with the "alt" foregrounds, for every method and beam
    assert {(r["split"], r["foreground_model"], r["method"], r["beam"]) for r in rows} == {
        (s, fg, m, b)
        for s, fg in (("Test", "default"), ("TestOOD", "alt"))
        for m in ("hilc", "nilc")
        for b in ("deconvolved", "20.6arcmin", "60arcmin")
    }
    assert (tmp_path / "results" / "TestOOD" / "summary.json").is_file()
    assert "TestOOD / Test" in (tmp_path / "report" / "leaderboard.md").read_text()
    # the channels hold foregrounds far brighter than the CMB in the plane; the ILCs leave a small residual
    assert all(r["nrmse_mean"] < 0.3 and r["n"] == 2 for r in rows)
    # every stage recorded its run: a second `run` skips them all
    assert all(json.loads(p.read_text())["status"] == "finished" for p in tmp_path.rglob("stage.json"))
    assert len(list(tmp_path.rglob("stage.json"))) == 1 + 2 * 2 + 2 + 1


def test_tiny_run_has_a_polarised_learned_prediction_with_its_error_map(tmp_path):
    """The presets' nilc_unet predicts I, Q, U with a per-pixel sigma; the report shows E, B and the coverage."""
    import healpy as hp
    import numpy as np

    from cosmobench.cmb.dataset import pred_path, pred_std_path

    cfg = load_config("cmb", ["preset=tiny", f"out_dir={tmp_path}", "run.methods=[nilc,nilc_unet]"])
    run(config=cfg)
    pred, std = pred_path(tmp_path, "nilc_unet", "Test", 0), pred_std_path(tmp_path, "nilc_unet", "Test", 0)
    maps, sigma = hp.read_map(pred, field=None), hp.read_map(std, field=None)
    assert maps.shape == sigma.shape == (3, 12 * 8**2) and np.all(sigma > 0)
    assert hp.read_map(pred_path(tmp_path, "nilc", "Test", 0), field=None).shape == (3, 12 * 8**2)
    board = json.loads((tmp_path / "report" / "leaderboard.json").read_text())["rows"]
    rows = {(r["method"], r["field"]): r for r in board if r["split"] == "Test" and r["beam"] == "60arcmin"}
    assert all(rows[m, f]["field_rmse_mean"] > 0 for m in ("nilc", "nilc_unet") for f in "TEB")
    assert 0 < rows["nilc_unet", "T"]["cover1_t_mean"] < 1 and rows["nilc", "T"]["cover1_t_mean"] is None
    report = (tmp_path / "report" / "report.md").read_text()
    assert all(word in report for word in ("coverage", "EE", "BB", "calibration.png"))
