"""The CMB bad-input catalogue: every case exits with an error naming the problem and the fix, before any work.

Each case runs ``cosmobench cmb ...`` on a private copy of the finished tiny run (``tiny_copy``), after an optional
``setup`` that breaks something, and checks the exit code, the message and that no file under the run folder (or
under a fresh ``out_dir``) changed. The cases cover the CMB findings of issue 9 (1, 3, 4, 5, 6, 7, 9) and the
common user errors.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from cosmobench.core.io import read_json, write_healpix, write_json

from .conftest import TINY


def _obs(root: Path, band: str = "100") -> Path:
    return root / "Simulations" / "Test" / "sim0000" / f"obs_{band}_map.fits"


def _nan_pixel(path: Path) -> None:
    """Put one NaN in a map in place, keeping its size (so only a check of the values can see it)."""
    from astropy.io import fits

    with fits.open(path, mode="update") as hdul:
        column = hdul[1].columns[0].name
        hdul[1].data[column].reshape(-1)[5] = np.nan


def _set_status(record: Path, status: str) -> None:
    data = read_json(record)
    data["status"] = status
    write_json(record, data)


def killed_training(root: Path) -> None:
    """Finding 1: a training killed after some epochs leaves its record `running`."""
    _set_status(root / "cmbnncs" / "model" / "stage.json", "running")


def retrained(root: Path) -> None:
    """Finding 1: the model is retrained (other settings) after its predictions were made."""
    from cosmobench.cli import main

    assert (
        main(["cmb", "train", *TINY, "method=cmbnncs", "methods.cmbnncs.epochs=2", "overwrite=true", f"out_dir={root}"])
        == 0
    )


def nan_in_observed_map(root: Path) -> list[Path]:
    _nan_pixel(_obs(root))
    return [_obs(root)]  # as simulate wrote it: the values must be caught, not the change


def wrong_nside_map(root: Path) -> None:
    write_healpix(_obs(root), np.zeros((1, 12 * 16**2)), dtype=np.float32, unit="uK_CMB")


def cmbml_with_wrong_nside_map(root: Path) -> None:
    """Finding 3: one nside-16 map in an nside-8 dataset of CMB-ML's layout (no record to catch it)."""
    shutil.copytree(root / "Simulations", root / "cmbml" / "Simulations")
    wrong_nside_map(root / "cmbml")


def nan_in_prediction(root: Path) -> list[Path]:
    path = root / "hilc" / "Test" / "sim0000" / "cmb_pred.fits"
    _nan_pixel(path)
    return [path]  # as separate wrote it: the values must be caught, not the change


def manifest_deleted(root: Path) -> None:
    (root / "manifest.json").unlink()


def manifest_and_record_deleted(root: Path) -> None:
    (root / "manifest.json").unlink()
    (root / "stage.json").unlink()


def same_size_bytes_in_fits(root: Path) -> None:
    """Finding 6: random bytes of the same size in a finished FITS file (the header is kept)."""
    path = _obs(root, "143")
    data = bytearray(path.read_bytes())
    data[-200:-100] = np.random.default_rng(0).integers(0, 256, 100, dtype=np.uint8).tobytes()
    path.write_bytes(bytes(data))


def cmbml_with_empty_sim(root: Path) -> None:
    """Finding 7: a CMB-ML-layout dataset (no manifest) with an empty simNNNN folder."""
    other = root / "cmbml"
    shutil.copytree(root / "Simulations", other / "Simulations")
    (other / "Simulations" / "Test" / "sim0001").mkdir()


def results_deleted(root: Path) -> None:
    shutil.rmtree(root / "results")


FRESH = "fresh"  # run in a new, empty out_dir beside the run: nothing may be created there

# id, arguments after `cosmobench cmb`, setup, exit code, fragments the message must hold (problem, then fix)
CASES = [
    # finding 1: unfinished or changed models
    (
        "killed-training-separate",
        ["separate", "method=cmbnncs"],
        killed_training,
        1,
        ["not finished", "cosmobench cmb train method=cmbnncs"],
    ),
    (
        "killed-training-separate-valid",
        ["separate", "method=cmbnncs", "separate.split=Valid"],
        killed_training,
        1,
        ["not finished", "cosmobench cmb train method=cmbnncs"],
    ),
    (
        "retrained-model-separate",
        ["separate", "method=cmbnncs", "methods.cmbnncs.epochs=2"],
        retrained,
        1,
        ["input model", "overwrite=true"],
    ),
    # finding 3: NaN, inf and wrong-nside maps
    (
        "nan-in-observed-map",
        ["separate", "method=hilc", "overwrite=true"],
        nan_in_observed_map,
        1,
        ["obs_100_map.fits", "1 NaN", "Regenerate"],
    ),
    (
        "wrong-nside-observed-map",
        ["separate", "method=nilc"],
        wrong_nside_map,
        1,
        ["obs_100_map.fits", "changed size", "cosmobench cmb simulate", "overwrite=true"],
    ),
    (
        "wrong-nside-map-cmbml",
        ["separate", "method=nilc", "out_dir=cmbml"],
        cmbml_with_wrong_nside_map,
        1,
        ["obs_100_map.fits", "3072 pixels", "nside 8", "Regenerate"],
    ),
    (
        "nan-in-prediction",
        ["evaluate"],
        nan_in_prediction,
        1,
        ["cmb_pred.fits", "1 NaN", "cosmobench cmb separate method=hilc separate.split=Test overwrite=true"],
    ),
    # finding 4: seeds can never mix
    ("manifest-deleted-seed-7", ["simulate", "seed=7"], manifest_deleted, 1, ["seed: 0 -> 7", "overwrite=true"]),
    (
        "record-deleted-seed-7",
        ["simulate", "seed=7"],
        manifest_and_record_deleted,
        1,
        ["no stage record accounts for", "overwrite=true"],
    ),
    # finding 5: size guard
    ("nside-8192", ["simulate", "nside=8192", FRESH], None, 1, ["GB", "force=true"]),
    # finding 6: validation before any write; finished files verified
    ("negative-r", ["simulate", "simulate.r=-0.1", FRESH], None, 1, ["r (the tensor-to-scalar ratio)", "simulate.r"]),
    (
        "same-size-bytes-in-fits",
        ["simulate"],
        same_size_bytes_in_fits,
        1,
        ["obs_143_map.fits", "changed since", "overwrite=true"],
    ),
    # finding 7: user errors without tracebacks
    (
        "unknown-method-separate",
        ["separate", "method=nosuch"],
        None,
        1,
        [
            "unknown separation method 'nosuch'",
            "cmbnncs, deepsphere, hilc, nilc, nilc_deepsphere, nilc_regress, nilc_unet, nilc_wiener, regress_unet, "
            "unet_patch, zero",
        ],
    ),
    ("unknown-method-train", ["train", "method=nosuch"], None, 1, ["'nosuch'", "registered methods"]),
    ("unknown-method-run", ["run", "run.methods=[hilc,nosuch]"], None, 1, ["'nosuch'", "registered methods"]),
    (
        "empty-sim-folder-cmbml",
        ["separate", "method=hilc", "out_dir=cmbml"],
        cmbml_with_empty_sim,
        1,
        ["sim0001 holds no obs_<band>_map.fits", "Copy those folders again, or delete them"],
    ),
    # finding 9: configuration
    ("override-without-equals", ["simulate", "nside"], None, 2, ["not of the form key=value", "seed=1"]),
    ("override-bad-dict", ["simulate", "simulate.splits={Test: 2"], None, 2, ["bad override"]),
    ("unknown-key", ["simulate", "nsidee=3"], None, 2, ["unknown configuration key 'nsidee'", "cosmobench cmb config"]),
    ("unknown-section-key", ["simulate", "simulate.nsid=3"], None, 2, ["'simulate.nsid'", "cosmobench cmb config"]),
    ("unknown-method-key", ["separate", "methods.hilc.nosuch=1"], None, 2, ["'methods.hilc.nosuch'"]),
    ("unknown-preset", ["simulate", "preset=huge"], None, 2, ["Unknown preset", "bench128, cmbml_512_1450, default"]),
    (
        "dict-override-replaces",
        ["simulate", "simulate.splits={Test: 2}"],
        None,
        1,
        ["Train: 1 -> 0 simulations", "replaces the whole dict", "'simulate.splits={Test: 1, Train: 1, Valid: 1, <new"],
    ),
    (
        "pysm3-backend-without-templates",
        [
            "simulate",
            "simulate.foreground_backend=pysm3",
            "simulate.pysm_presets=[d1,s1]",
            "simulate.split_foregrounds={}",
            FRESH,
        ],
        None,
        1,
        ["PySM3 templates", "PYSM_LOCAL_DATA"],
    ),
    (
        "pysm3-backend-with-a-synthetic-model",
        [
            "simulate",
            "simulate.foreground_backend=pysm3",
            "simulate.pysm_presets=[d1]",
            "simulate.foreground_model=alt",
            FRESH,
        ],
        None,
        1,
        ["applies to the 'synthetic' backend", "split_foregrounds"],
    ),
    (
        "pysm3-split-without-presets",
        ["simulate", "simulate.splits={TestPySM: 1}", "simulate.split_foregrounds={TestPySM: {backend: pysm3}}", FRESH],
        None,
        1,
        ["split_foregrounds.TestPySM", "{backend: pysm3, presets: [d1, s1, f1, a1]}"],
    ),
    (
        "separate-model-dir-without-model",
        ["separate", "method=cmbnncs", "separate.model_dir=nowhere/cmbnncs/model"],
        None,
        1,
        [
            "the trained cmbnncs model is not in nowhere/cmbnncs/model",
            "cosmobench cmb train method=cmbnncs out_dir=nowhere",
        ],
    ),
    (
        "separate-model-dir-classical",
        ["separate", "method=hilc", "separate.model_dir=nowhere/cmbnncs/model"],
        None,
        1,
        ["hilc is a classical method", "drop separate.model_dir"],
    ),
    ("run-with-model-dir", ["run", "separate.model_dir=nowhere/cmbnncs/model"], None, 1, ["drop separate.model_dir"]),
    ("nside-not-power-of-2", ["simulate", "nside=30", FRESH], None, 1, ["power of 2"]),
    ("negative-split-count", ["simulate", "simulate.splits={Test: -1}", FRESH], None, 1, ["non-negative"]),
    (
        "unknown-foreground-component",
        ["simulate", "simulate.foreground_components=[dust,nosuch]", FRESH],
        None,
        1,
        ["unknown foreground components ['nosuch']", "dust"],
    ),
    ("bad-dtype", ["simulate", "simulate.dtype=float16", FRESH], None, 1, ["dtype must be one of"]),
    ("bad-threads", ["separate", "method=hilc", "threads=0"], None, 1, ["threads must be 'auto' or a positive"]),
    # stages in the wrong order, or on data that is not there
    ("no-dataset", ["separate", "method=hilc", FRESH], None, 1, ["does not exist", "cosmobench cmb simulate"]),
    (
        "train-without-train-split",
        ["train", "method=cmbnncs", "train.train_split=Nope"],
        None,
        1,
        ["no simulation in the training split 'Nope'", "separate.model_dir=<root A>/cmbnncs/model", "train_split"],
    ),
    (
        "train-without-val-split",
        ["train", "method=cmbnncs", "train.val_split=Nope"],
        None,
        1,
        ["no split 'Nope'", "train.val_split=null"],
    ),
    (
        "separate-missing-split",
        ["separate", "method=hilc", "separate.split=TestOOD"],
        None,
        1,
        ["no simulation in split 'TestOOD'", "choose a split it holds"],
    ),
    (
        "evaluate-before-separate",
        ["evaluate", "run.methods=[nilc]"],
        None,
        1,
        ["the nilc predictions of Test", "cosmobench cmb separate method=nilc"],
    ),
    (
        "evaluate-lmax-too-large",
        ["evaluate", "evaluate.lmax=1000", "overwrite=true"],
        None,
        1,
        ["lmax=1000 must be between"],
    ),
    (
        "evaluate-bad-beam",
        ["evaluate", "evaluate.beams=[wide]", "overwrite=true"],
        None,
        1,
        ["beam 'wide' must be 'deconvolved' or a Gaussian FWHM"],
    ),
    ("compare-before-evaluate", ["compare"], results_deleted, 1, ["no summary.json", "cosmobench cmb evaluate"]),
    (
        "compare-unevaluated-beam",
        ["compare", "compare.map_beams=[5.0]"],
        None,
        1,
        ["map_beams ['5arcmin'] were not evaluated", "compare.map_beams"],
    ),
    ("bad-method-setting", ["separate", "method=nilc", "methods.nilc.needlet=square"], None, 1, ["square"]),
    (
        "missing-calibration-split",
        ["train", "method=nilc_unet", "methods.nilc_unet.calibration_splits=[ValidOOD]"],
        None,
        1,
        ["calibration split 'ValidOOD' has no simulation in", "ValidOOD: 1", "methods.nilc_unet.calibration_splits"],
    ),
    (
        "calibration-split-is-the-validation-split",
        ["train", "method=nilc_unet", "methods.nilc_unet.calibration_splits=[Valid]"],
        None,
        1,
        ["names the validation split 'Valid'", "drop it from calibration_splits"],
    ),
    (
        "calibration-split-without-uncertainty",
        ["train", "method=cmbnncs", "methods.cmbnncs.calibration_splits=[Valid2]"],
        None,
        1,
        ["uncertainty=none predicts none"],
    ),
]


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_bad_input_is_refused_before_any_work(case, tiny_copy, cli, snapshot, as_produced):
    _, args, setup, code, fragments = case
    root = tiny_copy
    for path in (setup(root) if setup is not None else None) or ():
        as_produced(path)
    out_dir = root
    args = list(args)
    if FRESH in args:
        args.remove(FRESH)
        out_dir = root.parent / "fresh"
    if "out_dir=cmbml" in args:
        args.remove("out_dir=cmbml")
        out_dir = root / "cmbml"
    before, fresh_before = snapshot(root), snapshot(root.parent / "fresh")
    rc, err = cli("cmb", args[0], *TINY, *args[1:], f"out_dir={out_dir}")
    assert rc == code, err
    for fragment in fragments:
        assert fragment in err, (fragment, err)
    assert "Traceback" not in err and "unexpected" not in err, err
    assert snapshot(root) == before  # nothing written, nothing deleted
    assert snapshot(root.parent / "fresh") == fresh_before == {}
    assert not (root.parent / "fresh").exists()


def test_catalogue_covers_the_findings():
    """At least 25 cases, and one per CMB finding of issue 9 (1, 3, 4, 5, 6, 7)."""
    ids = {c[0] for c in CASES}
    assert len(CASES) >= 25 and len(ids) == len(CASES)
    for needed in (
        "killed-training-separate",
        "retrained-model-separate",
        "nan-in-observed-map",
        "wrong-nside-observed-map",
        "nan-in-prediction",
        "manifest-deleted-seed-7",
        "nside-8192",
        "negative-r",
        "same-size-bytes-in-fits",
        "empty-sim-folder-cmbml",
        "unknown-method-separate",
        "dict-override-replaces",
        "pysm3-backend-without-templates",
    ):
        assert needed in ids
    assert json.dumps([c[1] for c in CASES])  # plain arguments only
