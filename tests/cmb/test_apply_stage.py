"""``cosmobench cmb apply`` under the stage contract, on Planck-PR3-layout files (NESTED, I/Q/U_STOKES, K_CMB,
545/857 GHz in MJy/sr): run, skip, refuse changed maps before any write, redo with ``overwrite=true``."""

from __future__ import annotations

import numpy as np
import pytest
from astropy.io import fits

from cosmobench.core.io import read_json
from cosmobench.core.seeds import rng
from cosmobench.sky.instrument import load_channels

from .test_apply import NSIDE, UNITS, write_planck_layout

BANDS = ["100", "143", "217", "353", "545", "857"]


@pytest.fixture
def planck(tmp_path):
    """Six Planck-layout files of white-noise skies and the channel table naming them."""
    channels = load_channels(bands=BANDS)
    files = []
    for c in channels:
        files.append(tmp_path / f"HFI_SkyMap_{c.band}_{NSIDE:04d}_R3.01_full.fits")
        sky = 100.0 * rng(5, c.band).standard_normal((3, 12 * NSIDE**2))
        write_planck_layout(files[-1], sky, c.center_ghz, UNITS.get(c.band, "K_CMB"))
    table = tmp_path / "channels.txt"
    table.write_text(
        "band center_ghz fwhm_arcmin unit\n"
        + "".join(f"{c.band} {c.center_ghz} {c.fwhm_arcmin} {UNITS.get(c.band, 'K_CMB')}\n" for c in channels)
    )
    return files, table


def _args(files, table, out, *extra):
    maps = ",".join(f"'{f}'" for f in files)
    return (
        "cmb",
        "apply",
        "method=hilc",
        f"apply.maps=[{maps}]",
        f"apply.channels={table}",
        f"apply.out_dir={out}",
        *extra,
    )


def test_apply_stage_runs_skips_refuses_and_redoes(cli, planck, tmp_path, snapshot):
    files, table = planck
    out = tmp_path / "out"
    code, err = cli(*_args(files, table, out, "apply.threads=1"))
    assert code == 0, err
    record = read_json(out / "stage.json")
    assert (record["stage"], record["status"]) == ("cmb.apply", "finished")
    assert {"channels", "map 100", "map 857"} <= set(record["inputs"])
    assert record["settings"]["method"] == "hilc" and "delta_ell" in record["settings"]["settings"]
    with fits.open(out / "cmb_map.fits") as hdul:
        assert (hdul[1].header["EXTNAME"], hdul[1].header["METHOD"], hdul[1].header["NSIDE"]) == (
            "CMB-PRED",
            "hilc",
            16,
        )
    assert {r["unit"] for r in read_json(out / "apply.json")["inputs"]} == {"K_CMB", "MJy/sr"}
    report = (out / "report.md").read_text()
    assert "](cmb_map.png)" in report and "](cmb_spectrum.png)" in report

    before = snapshot(out)
    assert cli(*_args(files, table, out))[0] == 0  # same maps, same settings: skipped, nothing rewritten
    assert snapshot(out) == before

    files[-1].unlink()
    write_planck_layout(files[-1], 50.0 * rng(6).standard_normal(12 * NSIDE**2), 857.0, "MJy/sr")  # a new 857 map
    code, err = cli(*_args(files, table, out))
    assert code == 1 and "input map 857" in err and "overwrite=true" in err
    assert snapshot(out) == before  # refused before any write
    assert cli(*_args(files, table, out, "overwrite=true"))[0] == 0
    assert read_json(out / "stage.json")["inputs"]["map 857"] != record["inputs"]["map 857"]


def test_apply_stage_validates_before_writing_anything(cli, planck, tmp_path):
    files, table = planck
    with fits.open(files[2], mode="update") as hdul:
        hdul[1].data["I_STOKES"][:5] = np.nan
    code, err = cli(*_args(files, table, tmp_path / "bad"))
    assert code == 1 and "of 3072 pixels of column I_STOKES are NaN or UNSEEN" in err, err
    assert not (tmp_path / "bad").exists()
    code, err = cli(*_args(files[:-1], table, tmp_path / "bad"))
    assert code == 1 and "6 rows for 5 maps" in err and not (tmp_path / "bad").exists()
    files[2].unlink()
    write_planck_layout(files[2], np.zeros(12 * NSIDE**2), 217.0, "K_CMB")
    code, err = cli(*_args(files, table, tmp_path / "bad", "method=cmbnncs"))
    assert code == 1 and "apply.model_dir" in err and not (tmp_path / "bad").exists()
