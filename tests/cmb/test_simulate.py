"""Dataset generation: physics of one simulation, byte-stable resumption, worker independence, bad inputs."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from cosmobench.cmb import dataset as layout
from cosmobench.cmb.dataset import CMBDataset
from cosmobench.cmb.simulate import simulate_dataset, simulate_observation
from cosmobench.core.io import CorruptFileError, sha256
from cosmobench.sky import sht
from cosmobench.sky.instrument import load_channels

FIXED = {"H0": 67.36}  # a fixed cosmology: no emulator build, one cached CAMB call
SMALL = dict(nside=16, bands=["44", "100", "353", "857"], cosmology=FIXED, spectra_method="camb", progress=False)


def _tree_hashes(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): sha256(p) for p in sorted(layout.sims_root(root).rglob("*")) if p.is_file()}


def test_observation_shapes_units_and_target_spectrum():
    channels = load_channels(bands=["70", "143", "545"])
    sim = simulate_observation(32, channels, seed=3, key=("Test", 0), cosmology=FIXED, spectra_method="camb")
    assert set(sim.obs) == {"70", "143", "545"}
    assert sim.obs["143"].shape == (3, sht.npix(32)) and sim.obs["545"].shape == (1, sht.npix(32))
    assert sim.cmb.shape == (3, sht.npix(32)) and sim.foreground_intensity.shape == (2, sht.npix(32))
    # target: the unbeamed CMB realisation, whose TT spectrum matches the theory within cosmic variance
    lmax = sht.default_lmax(32)
    cl = sht.alm2cl(sht.map2alm(sim.cmb[0], lmax, iter=3))
    ell = np.arange(2, 2 * 32)
    w = 2 * ell + 1
    ratio = np.sum(w * cl[ell] / sim.cls[0, ell]) / w.sum()
    assert abs(ratio - 1) < 5 * np.sqrt(2 / w.sum())
    # noise-free 143 GHz channel minus foregrounds is the beam-smoothed CMB: residual much smaller than the CMB
    assert 30 < np.std(sim.cmb[0]) < 300  # uK: the CMB temperature anisotropy at nside 32


def test_one_vs_two_workers_give_identical_bytes(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    simulate_dataset(a, splits={"Train": 3, "Test": 1}, seed=5, executor="serial", **SMALL)
    simulate_dataset(b, splits={"Train": 3, "Test": 1}, seed=5, executor="processes", workers=2, **SMALL)
    assert _tree_hashes(a) == _tree_hashes(b)
    assert CMBDataset(a).splits == {"Train": 3, "Test": 1}


def test_rerun_skips_finished_simulations(tmp_path):
    out = simulate_dataset(tmp_path, splits={"Train": 2}, seed=1, **SMALL)
    assert out["simulated"] == 2
    again = simulate_dataset(tmp_path, splits={"Train": 2}, seed=1, **SMALL)
    assert again["simulated"] == 0 and again["skipped"] == 2


def test_sigkill_then_rerun_gives_the_uninterrupted_bytes(tmp_path):
    """A run killed with SIGKILL mid-way, then rerun, writes exactly the files of an uninterrupted run."""
    args = [
        "simulate.nside=16",
        "simulate.bands=[44,100,353,857]",
        "simulate.cosmology={H0:67.36}",
        "simulate.spectra_method=camb",
        "simulate.splits={Train:6,Valid:0,Test:0}",
        "seed=2",
    ]
    cmd = [sys.executable, "-m", "cosmobench.cli", "cmb", "simulate"]
    killed, clean = tmp_path / "killed", tmp_path / "clean"
    proc = subprocess.Popen(
        [*cmd, *args, f"out_dir={killed}"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
    )
    deadline = time.time() + 240
    while not layout.params_path(killed, "Train", 1).is_file():
        if time.time() > deadline or proc.poll() is not None:
            break
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    done_before = CMBDataset(killed).splits["Train"]
    assert 1 <= done_before < 6, "the kill must land part-way through the run"
    # nothing half-written carries a final name: every final file of an unfinished simulation is complete or absent
    subprocess.run([*cmd, *args, f"out_dir={killed}"], check=True, capture_output=True)
    subprocess.run([*cmd, *args, f"out_dir={clean}"], check=True, capture_output=True)
    assert _tree_hashes(killed) == _tree_hashes(clean)
    assert not list(killed.rglob("*.tmp"))


def test_corrupt_finished_file_is_reported_and_nothing_is_lost(tmp_path):
    simulate_dataset(tmp_path, splits={"Train": 2}, seed=1, **SMALL)
    victim = layout.obs_path(tmp_path, "Train", 1, "100")
    victim.write_bytes(victim.read_bytes()[:1000])
    before = _tree_hashes(tmp_path)
    with pytest.raises(CorruptFileError, match="sim0001"):
        simulate_dataset(tmp_path, splits={"Train": 2}, seed=1, **SMALL)
    assert _tree_hashes(tmp_path) == before


@pytest.mark.parametrize(
    "kwargs,error,match",
    [
        ({"nside": 30}, ValueError, "power of 2"),
        ({"splits": {"Train": -1}}, ValueError, "non-negative"),
        ({"bands": ["101"]}, ValueError, "101"),
        ({"cosmology": {"omch": 0.12}}, TypeError, "omch"),
        ({"foreground_backend": "magic"}, ValueError, "synthetic"),
        ({"dtype": "float16"}, ValueError, "float32"),
    ],
)
def test_bad_inputs_fail_before_any_work(tmp_path, kwargs, error, match):
    args = dict(SMALL, splits={"Train": 1}) | kwargs
    with pytest.raises(error, match=match):
        simulate_dataset(tmp_path / "out", **args)
    assert not layout.sims_root(tmp_path / "out").exists()


def test_unwritable_output_and_changed_settings(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(PermissionError, match="cannot write"):
        simulate_dataset(blocker / "out", splits={"Train": 1}, **SMALL)
    simulate_dataset(tmp_path / "d", splits={"Train": 1}, seed=1, **SMALL)
    with pytest.raises(ValueError, match="different settings.*seed"):
        simulate_dataset(tmp_path / "d", splits={"Train": 1}, seed=2, **SMALL)
