import hashlib
import os
import stat

import numpy as np
import pytest

from cosmobench.core.io import (
    CorruptFileError,
    array_sha256,
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


def test_array_digest_is_the_values_whatever_the_storage(tmp_path):
    rng = np.random.default_rng(3)
    a, b = rng.standard_normal((7, 2, 4, 4)).astype(np.float32), rng.standard_normal((7, 1, 2, 2)).astype(np.float32)
    expected = hashlib.sha256(b"<f4(7, 2, 4, 4);" + a.tobytes() + b"<f4(7, 1, 2, 2);" + b.tobytes()).hexdigest()
    assert array_sha256(a, b) == expected
    # a memory map read in slices of one row, and a Fortran-ordered copy, hold the same values
    np.save(tmp_path / "a.npy", a)
    assert array_sha256(np.load(tmp_path / "a.npy", mmap_mode="r"), b, chunk_bytes=1) == expected
    assert array_sha256(np.asfortranarray(a), b) == expected
    # one value moved by one unit in the last place, the arrays' order or a reshape are other data
    c = a.copy()
    c[6, 1, 3, 3] = np.nextafter(c[6, 1, 3, 3], np.float32(np.inf))
    assert len({expected, array_sha256(c, b), array_sha256(b, a), array_sha256(a.reshape(7, 32), b)}) == 4


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


def test_healpix_header_follows_healpix_and_planck_conventions(tmp_path):
    from astropy.io import fits

    npix = 12 * 8**2
    write_healpix(
        tmp_path / "pred.fits",
        np.zeros((3, npix)),
        extname="CMB-PRED",
        extra_header={"FWHM": (20.6, "beam FWHM [arcmin]"), "METHOD": "nilc"},
    )
    write_healpix(tmp_path / "t.fits", np.zeros(npix), column_names=["TEMPERATURE"])
    with fits.open(tmp_path / "pred.fits") as hdul:
        hdr = hdul[1].header
        assert (hdr["COORDSYS"], hdr["POLCCONV"], hdr["EXTNAME"]) == ("G", "COSMO", "CMB-PRED")
        assert (hdr["FWHM"], hdr["METHOD"], hdr["ORDERING"], hdr["NSIDE"]) == (20.6, "nilc", "RING", 8)
        assert hdr.comments["FWHM"] == "beam FWHM [arcmin]"
    with fits.open(tmp_path / "t.fits") as hdul:
        hdr = hdul[1].header
        assert hdr["EXTNAME"] not in ("xtension", "") and hdr["COORDSYS"] == "G"
        assert "POLCCONV" not in hdr  # intensity only: no polarisation convention to state
    assert read_healpix(tmp_path / "pred.fits").shape == (3, npix)


def test_healpix_long_keywords_are_refused_not_truncated(tmp_path):
    with pytest.raises(ValueError, match="at most 8 characters"):
        write_healpix(tmp_path / "m.fits", np.zeros(12 * 4**2), extra_header={"BEAM_FWHM": 5.0})
    assert not (tmp_path / "m.fits").exists()


def test_healpix_mjysr_output_converts_with_the_sky_units(tmp_path):
    from astropy.io import fits

    from cosmobench.sky.units import unit_factor

    maps = np.linspace(-100.0, 100.0, 12 * 4**2)  # uK_CMB
    write_healpix(tmp_path / "m.fits", maps, dtype=np.float64, freq_ghz=857.0, file_unit="MJy/sr")
    with fits.open(tmp_path / "m.fits") as hdul:
        assert hdul[1].header["TUNIT1"] == "MJy/sr" and hdul[1].header["FREQ"] == 857.0
    back = read_healpix(tmp_path / "m.fits", dtype=np.float64)
    np.testing.assert_allclose(back, maps * unit_factor(857.0, "uK_CMB", "MJy/sr"), rtol=1e-15)
    with pytest.raises(ValueError, match="freq_ghz"):
        write_healpix(tmp_path / "n.fits", maps, file_unit="MJy/sr")


@pytest.mark.parametrize("mask", [0o022, 0o077])
def test_written_files_honour_the_umask(tmp_path, mask):
    old = os.umask(mask)
    try:
        write_healpix(tmp_path / "m.fits", np.zeros(12 * 4**2))
        write_json(tmp_path / "p.json", {"a": 1})
    finally:
        os.umask(old)
    for name in ("m.fits", "p.json"):
        assert stat.S_IMODE((tmp_path / name).stat().st_mode) == 0o666 & ~mask
