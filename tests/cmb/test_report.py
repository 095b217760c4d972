"""What the CMB task hands a user, read back as a user would: FITS headers of its maps (astropy) and the report."""

from __future__ import annotations

import re

import numpy as np
import pytest
from astropy.io import fits

from cosmobench.cmb.dataset import CMBDataset, obs_path, pred_path
from cosmobench.core.io import CorruptFileError, read_json, write_healpix
from cosmobench.core.seeds import rng
from cosmobench.plots import colour_limit

from .conftest import TINY


def _header(path):
    with fits.open(path) as hdul:
        return hdul[1].header


def test_fits_headers_of_observed_maps_and_predictions(tiny_run):
    ds = CMBDataset(tiny_run)
    for channel in ds.channels:
        h = _header(obs_path(tiny_run, "Test", 0, channel.band))
        assert (h["EXTNAME"], h["ORDERING"], h["COORDSYS"], h["TUNIT1"]) == ("FREQ-MAP", "RING", "G", "uK_CMB")
        assert (h["FREQ"], h["FWHM"], h["BAND"]) == (channel.center_ghz, channel.fwhm_arcmin, channel.band)
        assert "arcmin" in h.comments["FWHM"]
        assert h.get("POLCCONV") == ("COSMO" if channel.fields == "IQU" else None)
    for method, beam in (("hilc", 20.6), ("cmbnncs", 0.0)):
        h = _header(pred_path(tiny_run, method, "Test", 0))
        assert (h["EXTNAME"], h["METHOD"], h["FWHM"], h["TUNIT1"]) == ("CMB-PRED", method, beam, "uK_CMB")


def test_simulate_writes_chosen_bands_in_mjysr_and_reads_them_back(cli, tiny_run, tmp_path):
    """simulate.mjysr_bands stores those channels as Planck stores 545/857 GHz; the dataset reads the same sky."""
    root = tmp_path / "mjysr"
    args = ("cmb", "simulate", *TINY[:1], "simulate.splits={Test: 1}")
    code, err = cli(*args, "simulate.mjysr_bands=[217]", f"out_dir={root}")
    assert code == 0, err
    units = {band: _header(obs_path(root, "Test", 0, band))["TUNIT1"] for band in ("143", "217")}
    assert units == {"143": "uK_CMB", "217": "MJy/sr"}
    mine, reference = CMBDataset(root).load_obs("Test", 0), CMBDataset(tiny_run).load_obs("Test", 0)
    for band in ("143", "217"):  # the same simulation (same settings, seed, split and index), float32 rounding apart
        np.testing.assert_allclose(mine[band], reference[band], rtol=1e-6, atol=1e-6 * np.abs(reference[band]).max())
    code, err = cli(*args, "simulate.mjysr_bands=[857]", f"out_dir={tmp_path / 'bad'}")
    assert code == 1 and "mjysr_bands ['857'] are not channels of this dataset" in err


@pytest.mark.parametrize("unit", ["MJy/sr", "K_RJ", "K_CMB"])
def test_observed_maps_in_other_units_are_read_in_uk_cmb(tmp_path, unit):
    """A channel stored as Planck stores 545/857 GHz (MJy/sr, FREQ card) is read back in uK_CMB."""
    from cosmobench.cmb.dataset import _read_uk

    sky = 1e3 * rng(2).standard_normal((3, 12 * 8**2))
    path = tmp_path / "obs_857_map.fits"
    write_healpix(path, sky, unit="uK_CMB", freq_ghz=857.0, file_unit=unit, dtype=np.float64, extname="FREQ-MAP")
    assert _header(path)["TUNIT1"] == unit
    np.testing.assert_allclose(_read_uk(path), sky, rtol=1e-12)
    bare = tmp_path / "bare.fits"
    write_healpix(bare, sky[0], unit="MJy/sr", dtype=np.float64)  # no FREQ card: the unit cannot be converted
    with pytest.raises(CorruptFileError, match="FREQ card"):
        _read_uk(bare)


def test_report_links_every_figure_once_per_split_with_captions(tiny_run):
    report = tiny_run / "report"
    text = (report / "report.md").read_text()
    drawn = sorted(str(p.relative_to(report)) for p in (report / "figures").rglob("*.png"))
    linked = sorted(re.findall(r"!\[[^\]]*\]\(([^)]+\.png)\)", text))
    assert drawn and linked == drawn  # every figure linked, exactly once
    splits = read_json(report / "leaderboard.json")["splits"]
    for split, settings in splits.items():  # one spectra and one transfer figure per split, not one per beam
        assert [p for p in drawn if p.startswith(f"figures/{split}/spectra_")] == [
            f"figures/{split}/spectra_{settings['beams'][0]}.png"
        ]
        assert f"| hilc | {settings['beams'][1]} |" in text  # the other beam is in the table instead
    assert "no error bars: one simulation has no scatter" in text  # one simulation per split in the tiny run
    assert "cosmic variance on the scored sky" in text


def test_colour_limit_is_round_and_shared():
    assert colour_limit([np.array([-3.2, 1.0]), np.array([0.1])]) == pytest.approx(5.0)
    assert colour_limit([np.linspace(-0.0123, 0.0123, 1001)]) == pytest.approx(0.02)
    assert colour_limit([np.array([-200.0, 200.0])]) == pytest.approx(200.0)
    assert colour_limit([np.zeros(4)]) == 1.0


def test_learned_methods_record_their_training_foregrounds_and_the_report_names_seen_splits(tiny_run):
    """A learned method's ``method.json`` and the scores name the foreground model it was trained on; the split
    comparison says which test split is not out of distribution for a method trained on a mixture holding it."""
    import copy

    from cosmobench.cmb.compare import ood_markdown

    assert read_json(tiny_run / "cmbnncs" / "Test" / "method.json")["train_foregrounds"] == "default"
    test = read_json(tiny_run / "results" / "Test" / "summary.json")
    assert test["methods"]["cmbnncs"]["train_foregrounds"] == "default"
    assert test["methods"]["hilc"]["train_foregrounds"] is None
    same = ood_markdown({"Test": test, "TestOOD": copy.deepcopy(test)})  # a second split of the training model
    assert "Learned methods trained on foregrounds: cmbnncs default; not out of distribution" in same
    alt = copy.deepcopy(test)
    alt["settings"]["foreground_model"] = "alt"
    assert "Learned methods trained on foregrounds: cmbnncs default." in ood_markdown({"Test": test, "TestOOD": alt})
    mixed = copy.deepcopy(test)
    mixed["methods"]["cmbnncs"]["train_foregrounds"] = "mixture:default+alt"
    ood = copy.deepcopy(mixed)
    ood["settings"]["foreground_model"] = "alt"
    text = ood_markdown({"Test": mixed, "TestOOD": ood})
    assert "cmbnncs mixture:default+alt; not out of distribution" in text and "TestOOD (alt) for cmbnncs" in text
    ood["settings"]["foreground_model"] = "filament"
    assert "not out of distribution" not in ood_markdown({"Test": mixed, "TestOOD": ood})


def test_the_leaderboards_count_the_maps_a_guard_corrected(tiny_run):
    """A method whose summaries carry a ``guard`` count is named with its corrected maps per split, in the split
    comparison and in each split's leaderboard; without a guard nothing is said."""
    import copy

    from cosmobench.cmb.compare import leaderboard_markdown, ood_markdown

    test = read_json(tiny_run / "results" / "Test" / "summary.json")
    assert test["methods"]["hilc"]["guard"] is None and "guard" not in ood_markdown({"Test": test, "TestOOD": test})
    ood = copy.deepcopy(test)
    test["methods"]["hilc"]["guard"] = {"maps": 4, "corrected": 4, "kept_base": []}
    ood["methods"]["hilc"]["guard"] = {"maps": 4, "corrected": 1, "kept_base": [0, 1, 3]}
    assert "the guard corrected" in ood_markdown({"Test": test, "TestOOD": ood})
    assert "hilc Test 4/4, TestOOD 1/4." in ood_markdown({"Test": test, "TestOOD": ood})
    assert "hilc Test 4/4." in leaderboard_markdown(test)
