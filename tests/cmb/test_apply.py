"""``apply_method`` on user maps: Planck PR3's file layout gives the same CMB as the RING uK_CMB maps it came from."""

from __future__ import annotations

import healpy as hp
import numpy as np
import pytest
from astropy.io import fits

from cosmobench.cmb.apply import InputError, apply_method, map_spectrum
from cosmobench.cmb.methods import get_method
from cosmobench.cmb.simulate import simulate_observation
from cosmobench.core.io import read_healpix, sha256
from cosmobench.core.seeds import rng
from cosmobench.sky import sht
from cosmobench.sky.instrument import load_channels
from cosmobench.sky.units import unit_factor

NSIDE = 16
# Planck PR3 stores LFI/HFI maps in K_CMB and 545/857 GHz in MJy/sr; two channels use other units to cover them.
UNITS = {"30": "K_RJ", "44": "\u00b5K_CMB", "545": "MJy/sr", "857": "MJy/sr"}
PLANCK_COLUMNS = ("I_STOKES", "Q_STOKES", "U_STOKES", "HITS", "II_COV")


def write_planck_layout(path, maps_uk, freq_ghz, unit):
    """A PR3-like frequency map: NESTED, I/Q/U_STOKES (+ HITS, II_COV) or I_STOKES (+ ...), in ``unit``."""
    unit = unit.replace("\u00b5", "u")  # FITS headers are ASCII; the channel table may say µK_CMB
    maps = np.atleast_2d(maps_uk) * unit_factor(freq_ghz, "uK_CMB", unit)
    extra = [np.ones(maps.shape[-1]), np.full(maps.shape[-1], 1e-12)]  # hit counts, variance
    names = list(PLANCK_COLUMNS[: len(maps)]) + ["HITS", "II_COV"]
    hp.write_map(
        str(path),
        [hp.reorder(m, r2n=True) for m in [*maps, *extra]],
        nest=True,
        coord="G",
        column_names=names,
        column_units=[unit] * len(maps) + ["", f"({unit})^2"],
        dtype=[np.float64] * len(names),
        extra_header=[("EXTNAME", "FREQ-MAP"), ("FREQ", freq_ghz)],
    )


@pytest.fixture(scope="module")
def sky():
    channels = load_channels()
    sim = simulate_observation(NSIDE, channels, seed=3, key=("Test", 0))
    return channels, sim


@pytest.fixture(scope="module")
def planck_files(sky, tmp_path_factory):
    channels, sim = sky
    folder = tmp_path_factory.mktemp("planck")
    files = []
    for c in channels:
        path = folder / f"LFI_HFI_SkyMap_{c.band}_{NSIDE:04d}_R3.01_full.fits"
        write_planck_layout(path, sim.obs[c.band], c.center_ghz, UNITS.get(c.band, "K_CMB"))
        files.append(path)
    rows = [
        {"band": c.band, "center_ghz": c.center_ghz, "fwhm_arcmin": c.fwhm_arcmin, "unit": UNITS.get(c.band, "K_CMB")}
        for c in channels
    ]
    return files, rows


@pytest.mark.parametrize("method", ["nilc", "hilc"])
def test_planck_layout_gives_the_ring_uk_cmb_result(sky, planck_files, tmp_path, method):
    channels, sim = sky
    files, rows = planck_files
    reference = get_method(method)().predict(sim.obs, channels)
    out = apply_method(files, rows, method=method, out_dir=tmp_path)
    cmb = read_healpix(out["map"], dtype=np.float64)
    # The map is stored in float32: agreement to float32 rounding of each pixel.
    np.testing.assert_allclose(cmb, reference, rtol=2**-23, atol=2**-24 * np.abs(reference).max())
    assert np.std(cmb) > 10.0  # a CMB, not zeros (uK)
    with fits.open(out["map"]) as hdul:
        hdr = hdul[1].header
        assert (hdr["EXTNAME"], hdr["ORDERING"], hdr["COORDSYS"], hdr["TUNIT1"]) == ("CMB-PRED", "RING", "G", "uK_CMB")
        assert (hdr["METHOD"], hdr["FWHM"], hdr["NSIDE"], hdr["LMAX"]) == (method, 20.6, NSIDE, 3 * NSIDE - 2)
        assert hdr["FILE009"] == files[8].name and hdr["SHA009"] == sha256(files[8])
        # I, Q, U (the ILCs' default fields): Q and U were read from the seven polarised files
        assert [hdr[f"TTYPE{k}"] for k in (1, 2, 3)] == ["TEMPERATURE", "Q_POLARISATION", "U_POLARISATION"]
        assert hdr["POLCCONV"] == "COSMO"
    assert cmb.shape == (3, 12 * NSIDE**2) and out["fields"] == "IQU" and out["std_map"] is None
    assert [r["ordering"] for r in out["inputs"]] == ["NESTED"] * 9
    assert {r["column"] for r in out["inputs"]} == {"I_STOKES"}
    assert [r["pol_columns"] for r in out["inputs"]] == [["Q_STOKES", "U_STOKES"]] * 7 + [None] * 2
    # the report's spectrum is the CMB's: D_ell of the truth (same realisation) up to the ILC residual (up to
    # ~30 % per multipole at nside 16, where HILC has one bin): mode-weighted over ell 2..20 and 21..40
    with np.load(tmp_path / "cmb_spectrum.npz") as spectrum:
        ell, dl = spectrum["ell"], spectrum["dl"]
    truth = map_spectrum(sim.cmb[0], None)[1]
    for band in (slice(2, 21), slice(21, 41)):
        assert abs(np.sum((2 * ell[band] + 1) * dl[band]) / np.sum((2 * ell[band] + 1) * truth[band]) - 1) < 0.1
    report = (tmp_path / "report.md").read_text()
    for figure in ("cmb_map.png", "cmb_spectrum.png"):
        assert f"]({figure})" in report and (tmp_path / figure).stat().st_size > 1000


def test_table_file_and_header_units(sky, planck_files, tmp_path):
    """A whitespace table without a unit column: units come from the files' TUNIT cards."""
    channels, sim = sky
    files, rows = planck_files
    table = tmp_path / "channels.tbl"
    table.write_text(
        "# band GHz arcmin\nband center_ghz fwhm_arcmin\n"
        + "".join(f"{r['band']} {r['center_ghz']} {r['fwhm_arcmin']}\n" for r in rows)
    )
    out = apply_method(files, table, method="hilc", out_dir=tmp_path / "out", report=False)
    reference = get_method("hilc")().predict(sim.obs, channels)
    np.testing.assert_allclose(read_healpix(out["map"], dtype=np.float64), reference, rtol=2**-23, atol=1e-4)
    assert out["report"] is None and [r["unit"] for r in out["inputs"]][-2:] == ["MJy/sr", "MJy/sr"]


def test_mixed_nside_is_resampled_harmonically(tmp_path):
    """Band-limited skies written at nside 32 for some channels come back to the nside-16 result."""
    channels = load_channels(bands=["70", "100", "143", "217", "353"])
    lmax = 3 * NSIDE - 1
    ell = np.arange(lmax + 1)
    cmb = sht.synalm(np.r_[0, 0, 1e3 / ell[2:] ** 2], lmax, rng(1, "cmb"))
    dust = sht.synalm(np.r_[0, 0, 1e2 / ell[2:] ** 2.5], lmax, rng(1, "dust"))
    noise = [sht.synalm(np.full(lmax + 1, 1e-3), lmax, rng(1, "noise", c.band)) for c in channels]
    obs, files = {}, []
    for k, (c, n) in enumerate(zip(channels, noise)):
        alm = sht.almxfl(cmb + (c.center_ghz / 353.0) ** 3.5 * dust + n, sht.gauss_beam(c.fwhm_arcmin, lmax))
        obs[c.band] = sht.alm2map(alm, NSIDE, lmax)
        files.append(tmp_path / f"map_{c.band}.fits")
        write_planck_layout(files[-1], sht.alm2map(alm, 32 if k % 2 else NSIDE, lmax), c.center_ghz, "K_CMB")
    rows = [{"band": c.band, "center_ghz": c.center_ghz, "fwhm_arcmin": c.fwhm_arcmin} for c in channels]
    with pytest.raises(ValueError, match="at least 2 polarised.*set fields=I"):  # temperature-only files
        apply_method(files, rows, method="hilc", out_dir=tmp_path / "iqu", report=False)
    out = apply_method(files, rows, method="hilc", settings={"fields": "I"}, out_dir=tmp_path / "out", report=False)
    assert out["nside"] == NSIDE and [r["nside"] for r in out["inputs"]] == [16, 32, 16, 32, 16]
    reference = get_method("hilc")(fields="I").predict(obs, channels)
    applied = read_healpix(out["map"], dtype=np.float64)
    assert np.max(np.abs(applied - reference)) < 1e-4 * np.std(reference)


def test_bad_inputs_are_all_named_before_any_work(planck_files, tmp_path):
    files, rows = planck_files
    bad_nan = tmp_path / "nan.fits"
    maps = read_healpix(files[3], field=0, dtype=np.float64)
    maps[:7] = np.nan
    hp.write_map(str(bad_nan), maps, column_names=["TEMPERATURE"], column_units="K_CMB", dtype=np.float64)
    with pytest.raises(InputError, match="8 rows for 9 maps"):
        apply_method(files, rows[:8], method="nilc", out_dir=tmp_path / "a")
    broken = [dict(r) for r in rows]
    broken[2]["unit"] = "K_furlong"
    broken[4]["unit"] = "MJy/sr"  # the file says K_CMB
    paths = [*files]
    paths[0] = tmp_path / "absent.fits"
    with pytest.raises(InputError) as err:
        apply_method(paths, broken, method="nilc", out_dir=tmp_path / "b")
    msg = str(err.value)
    assert "absent.fits: file does not exist" in msg
    assert f"{files[2].name}: unknown unit 'K_furlong'" in msg and "set unit to one of" in msg
    assert f"{files[4].name}: the channel table says MJy/sr but the file's TUNIT1 says K_CMB" in msg
    paths = [*files]
    paths[3] = bad_nan
    with pytest.raises(InputError, match=r"nan.fits: 7 of 3072 pixels of column TEMPERATURE are NaN or UNSEEN"):
        apply_method(paths, rows, method="nilc", out_dir=tmp_path / "c")
    assert not (tmp_path / "c" / "cmb_map.fits").exists()
    with pytest.raises(InputError, match="unknown column"):
        apply_method(files, [{**r, "freq": 1} for r in rows], method="nilc", out_dir=tmp_path / "d")
    with pytest.raises(InputError, match="model_dir"):
        apply_method(files, rows, method="cmbnncs", out_dir=tmp_path / "e")


class _NoiseDataset:
    """Duck-typed CMBDataset: white-noise channels and target at nside 16 (enough to train a network for one epoch)."""

    root, nside, bands = None, NSIDE, ["100", "143", "217"]
    channels = load_channels(bands=bands)

    def sim_indices(self, split):
        return [0, 1]

    def load_obs(self, split, i, bands=None):
        return {b: rng(0, split, i, b).normal(size=(1, 12 * NSIDE**2)) for b in bands or self.bands}

    def load_target(self, split, i):
        return rng(0, split, i, "cmb").normal(size=(1, 12 * NSIDE**2))


def test_learned_method_loads_from_model_dir(sky, planck_files, tmp_path):
    """A trained UNet applied to the Planck-layout files predicts what it predicts on the RING uK_CMB maps."""
    channels, sim = sky
    files, rows = planck_files
    settings = {"bands": ["100", "143", "217"], "levels": 2, "base_channels": 4, "epochs": 1, "progress": False}
    data = _NoiseDataset()
    data.root = tmp_path / "data"
    get_method("cmbnncs")(**settings, device="cpu").fit(data, tmp_path / "model", val_split=None)
    trained = get_method("cmbnncs").load(tmp_path / "model", device="cpu")
    reference = trained.predict(sim.obs, channels)
    out = apply_method(files, rows, method="cmbnncs", settings=settings, model_dir=tmp_path / "model", out_dir=tmp_path)
    applied = read_healpix(out["map"], dtype=np.float64)
    np.testing.assert_allclose(applied, reference, rtol=1e-5, atol=1e-5 * np.abs(reference).max())
    with fits.open(out["map"]) as hdul:
        assert (hdul[1].header["METHOD"], hdul[1].header["FWHM"]) == ("cmbnncs", 0.0)  # unbeamed output
