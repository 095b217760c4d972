"""PySM3 backend: template discovery, the offline error, and emission from small templates written here."""

from __future__ import annotations

import time

import astropy.units as u
import healpy as hp
import numpy as np
import pytest
from astropy.utils.data import conf
from numpy.testing import assert_allclose

from cosmobench.sky import sht
from cosmobench.sky.foregrounds import make_foregrounds
from cosmobench.sky.pysm_backend import (
    PySMComponent,
    PySMTemplatesMissing,
    check_pysm_templates,
    pysm_template_files,
)

NSIDE = 16


@pytest.fixture
def offline(monkeypatch, tmp_path):
    """An empty PYSM_LOCAL_DATA and no internet for astropy: PySM can find nothing."""
    monkeypatch.setenv("PYSM_LOCAL_DATA", str(tmp_path / "empty"))
    with conf.set_temp("allow_internet", False):
        yield


@pytest.fixture
def s1_templates(monkeypatch, tmp_path, offline):
    """Tiny s1 templates (nside 16) under a fresh PYSM_LOCAL_DATA, with their analytic maps."""
    rng = np.random.default_rng(0)
    npix = sht.npix(NSIDE)
    maps = {
        "synch_t_new": 20 + 5 * rng.random(npix),  # uK_RJ at 408 MHz
        "synch_q_new": rng.normal(0, 2, npix),  # uK_RJ at 23 GHz
        "synch_u_new": rng.normal(0, 2, npix),
        "synch_beta": -3.0 + 0.1 * rng.standard_normal(npix),
    }
    folder = tmp_path / "pysm_data" / "pysm_2"
    folder.mkdir(parents=True)
    for name, m in maps.items():
        hp.write_map(str(folder / f"{name}.fits"), m, dtype=np.float64)
    monkeypatch.setenv("PYSM_LOCAL_DATA", str(tmp_path / "pysm_data"))
    return maps


def test_template_files_from_presets():
    files = pysm_template_files(["d1", "s1", "f1", "a1"], NSIDE)
    for name in [
        "dust_t_new",
        "dust_q_new",
        "dust_beta",
        "dust_temp",
        "synch_t_new",
        "synch_beta",
        "ff_t_new",
        "ame_t_new",
        "ame2_t_new",
    ]:
        assert f"pysm_2/{name}.fits" in files
    assert files.count("pysm_2/emissivity.txt") == 1  # listed once although both AME parts use it
    layers = pysm_template_files(["d12"], NSIDE)  # {layer} expanded over the 6 layers
    assert len(layers) == 18 and "mkd_dust/2048/thermaldust_ampl6.fits" in layers
    assert pysm_template_files(["d9"], NSIDE) == ["dust_gnilc/gnilc_dust_template_nside2048_2023.02.10.fits"]
    assert pysm_template_files(["co1"], NSIDE) == ["co/HFI_CompMap_CO-Type1_512_R2.00_ring.fits"]
    with pytest.raises(ValueError, match=r"unknown PySM3 preset.*'x9'.*'d1'"):
        pysm_template_files(["x9"], NSIDE)


def test_missing_template_fails_fast_with_instructions(offline):
    t0 = time.perf_counter()
    with pytest.raises(PySMTemplatesMissing) as err:
        check_pysm_templates(["d1", "f1"], NSIDE)
    assert time.perf_counter() - t0 < 5
    msg = str(err.value)
    assert "pysm_2/dust_t_new.fits" in msg and "pysm_2/ff_t_new.fits" in msg
    assert "PYSM_LOCAL_DATA" in msg and "synthetic" in msg
    assert isinstance(err.value, FileNotFoundError)


def test_make_foregrounds_checks_before_any_work(offline):
    t0 = time.perf_counter()
    with pytest.raises(PySMTemplatesMissing, match="dust_gnilc"):
        make_foregrounds("pysm3", NSIDE, None, presets=["d9", "s4"])
    with pytest.raises(PySMTemplatesMissing, match="pysm_2/synch_t_new.fits"):
        make_foregrounds("pysm3", NSIDE, None, components=["synchrotron"])  # maps to s1
    assert time.perf_counter() - t0 < 5
    with pytest.raises(ValueError, match="no extra parameters"):
        make_foregrounds("pysm3", NSIDE, None, presets=["d1"], dust={"beta_rms": 0.1})


def test_s1_emission_from_local_templates(s1_templates):
    """PySM's s1 from our files: I scales from 408 MHz and Q, U from 23 GHz with the per-pixel index."""
    check_pysm_templates(["s1"], NSIDE)
    (comp,) = make_foregrounds("pysm3", NSIDE, None, presets=["s1"])
    assert isinstance(comp, PySMComponent) and comp.nside == NSIDE
    nu = 44.1
    out = comp.emission(nu * u.GHz)
    assert out.shape == (3, sht.npix(NSIDE)) and out.unit.to_string() == "uK_RJ"
    beta = s1_templates["synch_beta"]
    assert_allclose(out.value[0], s1_templates["synch_t_new"] * (nu / 0.408) ** beta, rtol=1e-5)
    assert_allclose(out.value[1], s1_templates["synch_q_new"] * (nu / 23.0) ** beta, rtol=1e-5)
    assert_allclose(out.value[2], s1_templates["synch_u_new"] * (nu / 23.0) ** beta, rtol=1e-5)
