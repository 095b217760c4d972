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
