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
    assert again["simulated"] == 0 and again["kept"] == 2


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
        ({"foreground_model": "nope"}, ValueError, "unknown foreground model"),
        ({"split_foregrounds": {"Train": {"dusty": {}}}}, ValueError, "foreground-model options"),
        ({"foreground_backend": "pysm3", "pysm_presets": ["d1"], "foreground_model": "alt"}, ValueError, "synthetic"),
        ({"split_foregrounds": {"Train": {"backend": "pysm3", "presets": []}}}, ValueError, "presets: \\[d1"),
        ({"split_foregrounds": {"Train": []}}, ValueError, "empty list.*\\[default, perturbed\\]"),
        ({"split_foregrounds": {"Train": ["default", ["alt"]]}}, ValueError, "one flat list"),
        ({"split_foregrounds": {"Train": ["default", "nope"]}}, ValueError, "unknown foreground model"),
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


def test_ood_split_has_the_alt_foregrounds_and_its_own_streams(tmp_path):
    """TestOOD (default split_foregrounds) is simulated with the "alt" model, from streams of its own."""
    import json

    simulate_dataset(tmp_path, splits={"Test": 1, "TestOOD": 1}, seed=4, **SMALL)
    ds = CMBDataset(tmp_path)
    manifest = ds.manifest
    assert manifest["splits"] == {"Test": 1, "TestOOD": 1}
    assert {s: r["model"] for s, r in manifest["split_foregrounds"].items()} == {"Test": "default", "TestOOD": "alt"}
    assert manifest["split_foregrounds"]["TestOOD"]["options"]["dust_model"] == "two_mbb"
    assert ds.foreground_model("Test") == "default" and ds.foreground_model("TestOOD") == "alt"
    params = json.loads(layout.params_path(tmp_path, "TestOOD", 0).read_text())["foregrounds"]
    assert params["model"] == "alt" and params["stream"] == ["TestOOD", 0, "foregrounds"]
    # the stored foregrounds are the alt model's sky of this stream, not the default model's
    physics = {k: v for k, v in SMALL.items() if k not in ("nside", "bands", "progress")}
    channels = load_channels(bands=SMALL["bands"])
    stored = ds.load_foreground("TestOOD", 0)
    for model, same in (("alt", True), ("default", False)):
        sim = simulate_observation(16, channels, seed=4, key=("TestOOD", 0), foreground_model=model, **physics)
        assert np.allclose(stored, sim.foreground_intensity, rtol=1e-5) is same, model
    # independent streams: the CMB (and noise) of TestOOD sim0 is not Test sim0's
    cmb = [ds.load_target(s, 0)[0] for s in ("Test", "TestOOD")]
    assert abs(np.corrcoef(*cmb)[0, 1]) < 0.3


def test_a_split_keeps_its_foreground_model(tmp_path):
    import json

    simulate_dataset(tmp_path, splits={"Test": 1}, seed=1, **SMALL)
    with pytest.raises(ValueError, match="other foreground models.*Test: default -> alt"):
        simulate_dataset(tmp_path, splits={"Test": 1}, seed=1, split_foregrounds={"Test": "alt"}, **SMALL)
    # a manifest from before per-split models counts as "default"; a new OOD split can join it
    mpath = layout.manifest_path(tmp_path)
    old = json.loads(mpath.read_text())
    del old["split_foregrounds"]
    mpath.write_text(json.dumps(old))
    simulate_dataset(tmp_path, splits={"TestOOD": 1}, seed=1, **SMALL)
    manifest = CMBDataset(tmp_path).manifest
    assert manifest["splits"] == {"Test": 1, "TestOOD": 1}
    assert {s: r["model"] for s, r in manifest["split_foregrounds"].items()} == {"Test": "default", "TestOOD": "alt"}
    with pytest.raises(ValueError, match="TestOOD: alt -> default"):
        simulate_dataset(tmp_path, splits={"TestOOD": 1}, seed=1, split_foregrounds={}, **SMALL)


def test_a_mixture_split_alternates_its_foreground_models(tmp_path):
    """``split_foregrounds={Train: [default, perturbed]}``: simulation i takes model i mod 2, byte for byte the
    simulation of a split made with that model alone; a one-model list is that model."""
    import json

    def maps(root: Path, i: int) -> dict[str, str]:
        folder = layout.sim_dir(root, "Train", i)
        return {p.name: sha256(p) for p in sorted(folder.iterdir()) if p.name != "params.json"}

    mixed, alone = tmp_path / "mixed", {m: tmp_path / m for m in ("default", "perturbed")}
    simulate_dataset(mixed, splits={"Train": 4}, seed=2, split_foregrounds={"Train": ["default", "perturbed"]}, **SMALL)
    for model, root in alone.items():
        simulate_dataset(root, splits={"Train": 4}, seed=2, split_foregrounds={"Train": [model]}, **SMALL)
    ds = CMBDataset(mixed)
    assert ds.foreground_model("Train") == "mixture:default+perturbed"
    record = ds.manifest["split_foregrounds"]["Train"]
    assert [r["model"] for r in record["mixture"]] == ["default", "perturbed"]
    assert record["mixture"][1]["options"]["dust"]["beta_mean"] == 1.5
    for i in range(4):
        model = ("default", "perturbed")[i % 2]
        params = json.loads(layout.params_path(mixed, "Train", i).read_text())
        assert params["foregrounds"]["model"] == model
        assert maps(mixed, i) == maps(alone[model], i)
        assert maps(mixed, i) != maps(alone[("perturbed", "default")[i % 2]], i)
    # a one-model list is recorded as the bare model (same digest): the default-model dataset resumes as is
    assert CMBDataset(alone["default"]).manifest["split_foregrounds"]["Train"] == {"model": "default", "options": {}}
    assert simulate_dataset(alone["default"], splits={"Train": 4}, seed=2, split_foregrounds={}, **SMALL)["kept"] == 4
    with pytest.raises(ValueError, match="mixture:default\\+perturbed -> mixture:default\\+alt"):
        simulate_dataset(mixed, splits={"Train": 4}, seed=2, split_foregrounds={"Train": ["default", "alt"]}, **SMALL)
