import numpy as np
import pytest

from cosmobench.core.io import (
    CorruptFileError,
    atomic_path,
    check_writable,
    read_healpix,
    read_json,
    sha256,
    write_healpix,
    write_json,
)


def test_atomic_path_leaves_nothing_on_error(tmp_path):
    target = tmp_path / "out.txt"
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_text("half")
            raise RuntimeError("killed")
    assert not target.exists()
    assert list(tmp_path.iterdir()) == []


def test_atomic_path_keeps_old_file_until_complete(tmp_path):
    target = tmp_path / "out.txt"
    target.write_text("old")
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_text("new")
            raise RuntimeError
    assert target.read_text() == "old"
    with atomic_path(target) as tmp:
        tmp.write_text("new")
    assert target.read_text() == "new"


def test_healpix_round_trip_is_ring_float32_with_units(tmp_path):
    from astropy.io import fits

    maps = np.random.default_rng(0).normal(size=(3, 12 * 16**2))
    path = tmp_path / "m.fits"
    write_healpix(path, maps, unit="uK_CMB")
    back = read_healpix(path)
    np.testing.assert_array_equal(back, maps.astype(np.float32))
    with fits.open(path) as hdul:
        hdr = hdul[1].header
        assert hdr["ORDERING"] == "RING" and hdr["TUNIT1"] == "uK_CMB" and hdr["TTYPE2"] == "Q_STOKES"


def test_healpix_writes_are_byte_identical(tmp_path):
    maps = np.arange(12 * 4**2, dtype=float)
    write_healpix(tmp_path / "a.fits", maps)
    write_healpix(tmp_path / "b.fits", maps)
    assert sha256(tmp_path / "a.fits") == sha256(tmp_path / "b.fits")


def test_nan_maps_are_refused(tmp_path):
    maps = np.zeros(12 * 4**2)
    maps[3] = np.nan
    with pytest.raises(ValueError, match="non-finite"):
        write_healpix(tmp_path / "m.fits", maps)
    assert not (tmp_path / "m.fits").exists()


def test_corrupt_files_give_clear_errors(tmp_path):
    bad = tmp_path / "bad.fits"
    bad.write_bytes(b"SIMPLE  = T" + b"\0" * 100)
    with pytest.raises(CorruptFileError, match="delete it and rerun"):
        read_healpix(bad)
    js = tmp_path / "p.json"
    write_json(js, {"a": np.float32(1.5), "b": np.arange(2)})
    assert read_json(js) == {"a": 1.5, "b": [0, 1]}
    js.write_text('{"a": ')
    with pytest.raises(CorruptFileError):
        read_json(js)


def test_unwritable_folder_is_reported(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(PermissionError, match="cannot write"):
        check_writable(blocker / "sub")
