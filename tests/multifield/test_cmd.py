"""The CMD reader on small files written in the exact CMD format (names, dtype, shape, map -> simulation)."""

from __future__ import annotations

import numpy as np
import pytest

from cosmobench.multifield import cmd


def _write_cmd(
    root, suite="IllustrisTNG", n_sims=4, npix=8, fields=("Mgas", "Mstar"), name="Maps_{f}_{s}_LH_z=0.00.npy"
):
    """CMD-format files whose map k holds the value 10 * (k // 15) + 1 + (k % 15) / 100 (Mstar: that minus 1)."""
    k = np.arange(15 * n_sims)
    value = 10.0 * (k // 15) + 1 + (k % 15) / 100
    for f in fields:
        maps = np.broadcast_to(value[:, None, None], (len(k), npix, npix)).astype(np.float32)
        if f == "Mstar":
            maps = maps - 1
        np.save(root / name.format(f=f, s=suite), maps)
    params = np.column_stack([np.linspace(0.1, 0.5, n_sims), np.linspace(0.6, 1.0, n_sims)] + [np.ones(n_sims)] * 4)
    np.savetxt(root / f"params_LH_{suite}.txt", params)
    return params


def test_reader_on_exact_cmd_format(tmp_path):
    params = _write_cmd(tmp_path)
    assert cmd.map_path(tmp_path, "Mgas", "IllustrisTNG").name == "Maps_Mgas_IllustrisTNG_LH_z=0.00.npy"
    maps = cmd.load_maps(tmp_path, "Mgas", "IllustrisTNG")
    assert isinstance(maps, np.memmap) and maps.dtype == np.float32 and maps.shape == (60, 8, 8)
    np.testing.assert_allclose(cmd.load_params(tmp_path, "IllustrisTNG"), params)
    # map k belongs to simulation k // 15
    k = np.array([0, 14, 15, 59])
    np.testing.assert_allclose(maps[k, 0, 0] // 10, k // 15)
    np.testing.assert_array_equal(cmd.sims_to_maps(np.array([1, 3])), np.r_[15:30, 45:60])
    assert cmd.available_fields(tmp_path, "IllustrisTNG") == ["Mgas", "Mstar"]  # CMD's field order


def test_name_variants_and_twin_suites_are_not_confused(tmp_path):
    _write_cmd(tmp_path, suite="Nbody_IllustrisTNG", fields=("Mtot",), name="Maps_{f}_{s}_LH_z=0.0.npy")
    _write_cmd(tmp_path, suite="IllustrisTNG", fields=("Mgas",))
    assert cmd.find_map_file(tmp_path, "Mtot", "Nbody_IllustrisTNG").name.endswith("z=0.0.npy")
    assert cmd.available_fields(tmp_path, "IllustrisTNG") == ["Mgas"]
    assert cmd.available_fields(tmp_path, "Nbody_IllustrisTNG") == ["Mtot"]
    with pytest.raises(FileNotFoundError, match="Present"):
        cmd.find_map_file(tmp_path, "T", "IllustrisTNG")


def test_bad_files_fail_loudly(tmp_path):
    _write_cmd(tmp_path, n_sims=2)
    np.save(tmp_path / "Maps_T_IllustrisTNG_LH_z=0.00.npy", np.ones((29, 8, 8), np.float32))
    with pytest.raises(ValueError, match="multiple of 15"):
        cmd.load_maps(tmp_path, "T", "IllustrisTNG")
    np.save(tmp_path / "Maps_T_IllustrisTNG_LH_z=0.00.npy", np.ones((45, 8, 8), np.float32))
    with pytest.raises(ValueError, match="2 simulations"):
        cmd.load_maps(tmp_path, "T", "IllustrisTNG")
    np.save(tmp_path / "Maps_T_IllustrisTNG_LH_z=0.00.npy", np.ones((30, 8, 8), np.float64))
    with pytest.raises(ValueError, match="float32"):
        cmd.load_maps(tmp_path, "T", "IllustrisTNG")


def test_split_by_simulation_is_seeded_disjoint_and_complete():
    a = cmd.split_sims(1000, (0.9, 0.05, 0.05), seed=1)
    assert [len(a[k]) for k in ("train", "valid", "test")] == [900, 50, 50]
    assert np.array_equal(np.sort(np.concatenate(list(a.values()))), np.arange(1000))
    b = cmd.split_sims(1000, (0.9, 0.05, 0.05), seed=1)
    c = cmd.split_sims(1000, (0.9, 0.05, 0.05), seed=2)
    assert all(np.array_equal(a[k], b[k]) for k in a)
    assert not np.array_equal(a["test"], c["test"])
    with pytest.raises(ValueError, match="sum"):
        cmd.split_sims(10, (0.5, 0.2, 0.2))


def test_transform_and_training_only_statistics(tmp_path):
    _write_cmd(tmp_path, n_sims=4)
    x = cmd.transform("Mstar", np.array([0.0, 9.0]))
    np.testing.assert_allclose(x, [0.0, 1.0])  # log10(x + 1) for Mstar: zeros allowed
    with pytest.raises(ValueError, match="non-positive"):
        cmd.transform("Mgas", np.array([0.0, 1.0]))
    train = cmd.sims_to_maps(np.array([0, 1]))
    stats = cmd.field_stats(tmp_path, "IllustrisTNG", ["Mgas"], train, chunk=7)
    raw = np.log10(cmd.load_maps(tmp_path, "Mgas", "IllustrisTNG")[train].astype(np.float64))
    assert np.isclose(stats.mean[0], raw.mean()) and np.isclose(stats.std[0], raw.std())
    everything = np.log10(cmd.load_maps(tmp_path, "Mgas", "IllustrisTNG")[:].astype(np.float64))
    assert not np.isclose(stats.mean[0], everything.mean())  # test simulations do not leak in
    stack = cmd.MapStack(tmp_path, "IllustrisTNG", stats, train, in_memory=False)
    np.testing.assert_allclose(stack[np.arange(len(train))][:, 0].mean(), 0.0, atol=1e-5)
    np.testing.assert_allclose(stack[np.array([3, 1])], cmd.MapStack(tmp_path, "IllustrisTNG", stats, train)[[3, 1]])


def test_label_scaling_uses_each_suites_prior():
    """Flaw 3 of the reference: Astrid's A_AGN2 in [0.25, 4] was scaled with [0.5, 2]."""
    astrid = cmd.LabelScaler(cmd.suite_prior("Astrid"))
    theta = np.array([[0.1, 0.6, 0.25, 0.25, 0.5, 0.25], [0.5, 1.0, 4.0, 4.0, 2.0, 4.0]])
    np.testing.assert_allclose(astrid.normalise(theta), [[0] * 6, [1] * 6], atol=1e-12)
    mu, sd = astrid.denormalise(astrid.normalise(theta), np.full((2, 6), 0.1))
    np.testing.assert_allclose(mu, theta, rtol=1e-12)
    np.testing.assert_allclose(sd[:, :2], [[0.04, 0.04]] * 2)  # linear: sigma * width
    np.testing.assert_allclose(sd[1, 2], 4.0 * np.log(16.0) * 0.1)  # log: delta method
    with pytest.raises(ValueError, match="unknown suite"):
        cmd.suite_prior("Illustris")
