"""The spread over runs (training seeds) of one split: which runs are grouped, and the numbers against hand values."""

from __future__ import annotations

import csv
import shutil

import pytest

from cosmobench.cmb.spread import CHANGE, run_groups, spread_markdown, spread_rows
from cosmobench.core.io import read_json, write_json

from .conftest import cmb

BEAM = "20.6arcmin"


def _run(root, *, seed: int, nilc: float, unet: float, cover: float, data="a", train="t", lmax: int = 64) -> dict:
    """A dataset root holding a manifest and nilc_unet's method.json, and the summary of its evaluated Test."""
    checksums = {f"Test/sim{i:04d}": {"cmb_map_fid.fits": {"sha256": f"{data}{i}"}} for i in range(2)}
    checksums["Train/sim0000"] = {"cmb_map_fid.fits": {"sha256": train}}
    write_json(root / "manifest.json", {"checksums": checksums})
    write_json(root / "nilc_unet" / "Test" / "method.json", {"settings": {"seed": seed, "lr": 0.005, "device": "cpu"}})

    def beams(value: float) -> dict:
        return {BEAM: {"rmse_filtered_t": {"mean": value}, "rmse": {"mean": value + 0.1}}}

    settings = {"root": str(root), "split": "Test", "sims": [0, 1], "beams": [BEAM], "lmax": lmax}
    return {
        "settings": {**settings, "methods": ["nilc", "nilc_unet"]},
        "methods": {
            "nilc": {"beams": beams(nilc), "coverage": None},
            "nilc_unet": {"beams": beams(unet), "coverage": {"cover1_t": {"mean": cover}}},
        },
    }


@pytest.fixture
def summaries(tmp_path):
    made = {}
    for name, kwargs in {
        "A": dict(seed=0, nilc=4.0, unet=3.0, cover=0.70),
        "B": dict(seed=1, nilc=4.0, unet=2.0, cover=0.72),
        "C": dict(seed=2, nilc=5.0, unet=4.0, cover=0.74),
        "D": dict(seed=3, nilc=4.0, unet=1.0, cover=0.5, data="other"),  # other simulations
        "E": dict(seed=4, nilc=4.0, unet=1.0, cover=0.5, lmax=32),  # scored with another band limit
        "F": dict(seed=5, nilc=4.0, unet=1.0, cover=0.5, train="u"),  # the same Test, trained on other data
    }.items():
        (tmp_path / name).mkdir()
        made[f"{name}/Test"] = _run(tmp_path / name, **kwargs)
    return made


def test_runs_of_the_same_simulations_and_protocol_are_spread_with_the_change_taken_within_each_run(summaries):
    groups = run_groups(summaries)
    assert groups == {"Test": ["A/Test", "B/Test", "C/Test"]}  # D, F: other data; E: other evaluation settings

    rows = {(r["method"], r["metric"]): r for r in spread_rows(summaries, groups)}
    # per run (unet / nilc - 1): -25 %, -50 %, -20 %; mean -31.667, sample std sqrt(516.67 / 2) = 16.073
    change = rows["nilc_unet", CHANGE.format("rmse_filtered_t")]
    assert change["n_runs"] == 3
    assert change["mean"] == pytest.approx(-31.6667, abs=1e-3)
    assert change["std"] == pytest.approx(16.073, abs=1e-3)
    assert (change["min"], change["max"]) == pytest.approx((-50.0, -20.0))
    assert rows["nilc_unet", "rmse"]["mean"] == pytest.approx(3.1)  # (3.1 + 2.1 + 4.1) / 3
    assert rows["nilc_unet", "cover1_t"]["std"] == pytest.approx(0.02)
    assert rows["nilc_unet", "cover1_t"]["beam"] == "native"
    assert ("nilc", CHANGE.format("rmse_filtered_t")) not in rows  # the baseline against itself is not a row

    text = spread_markdown(summaries, groups, list(rows.values()))
    assert "-31.7 ± 16.1 (-50.0 to -20.0)" in text
    assert "72.0 ± 2.0 (70.0 to 74.0)" in text  # coverage in percent
    assert "nilc_unet: seed 0, 1, 2." in text  # what differs, runtime settings (device) left out
    assert "Not in the spread: D/Test, E/Test, F/Test" in text  # the user is told which columns were left out


def test_a_split_without_a_manifest_is_not_spread(summaries, tmp_path):
    (tmp_path / "B" / "manifest.json").unlink()
    assert run_groups(summaries) == {"Test": ["A/Test", "C/Test"]}
    (tmp_path / "C" / "manifest.json").unlink()
    assert run_groups(summaries) == {}


def test_compare_of_two_training_seeds_writes_their_spread(tiny_run, tmp_path):
    """The tiny run and a copy whose cmbnncs was trained with another seed: compare reports them as two runs."""
    other = shutil.copytree(tiny_run, tmp_path / "seed1")
    assert cmb("train", "method=cmbnncs", "methods.cmbnncs.seed=1", "overwrite=true", f"out_dir={other}") == 0
    with pytest.warns(UserWarning, match=r"trained model's settings \(seed=1\), not the given seed=0"):
        assert cmb("separate", "method=cmbnncs", "overwrite=true", f"out_dir={other}") == 0
    # the predictions and their record name the model's settings, not the command's defaults
    assert read_json(other / "cmbnncs" / "Test" / "method.json")["settings"]["seed"] == 1
    assert read_json(other / "cmbnncs" / "Test" / "stage.json")["settings"]["settings"]["seed"] == 1
    assert cmb("evaluate", "overwrite=true", f"out_dir={other}") == 0
    dirs = f"compare.results_dirs=[{tiny_run}/results,{other}/results]"
    assert cmb("compare", f"out_dir={other}", dirs, "overwrite=true") == 0
    report = other / "report"
    with open(report / "leaderboard_spread.csv", newline="") as fh:
        rows = {(r["method"], r["beam"], r["metric"]): r for r in csv.DictReader(fh)}
    hilc = rows["hilc", "deconvolved", "rmse"]
    assert int(hilc["n_runs"]) == 2 and float(hilc["std"]) == 0.0  # the classical method is the same in both
    unet = rows["cmbnncs", "deconvolved", "rmse"]
    assert float(unet["std"]) > 0.0  # another training seed, another network
    first = read_json(tiny_run / "results" / "Test" / "summary.json")["methods"]["cmbnncs"]["beams"]["deconvolved"]
    second = read_json(other / "results" / "Test" / "summary.json")["methods"]["cmbnncs"]["beams"]["deconvolved"]
    assert float(unet["mean"]) == pytest.approx((first["rmse"]["mean"] + second["rmse"]["mean"]) / 2)
    text = (report / "leaderboard.md").read_text()
    assert text.startswith("### Spread over runs") and "cmbnncs: seed 0, 1." in text
    assert "`leaderboard_spread.csv`" in (report / "report.md").read_text()
