"""CMB-ML's released layout end to end through the command line: ``Simulation/<Split>/simNNNN/obs_<band>GHz_map.fits``
in K_CMB, no manifest, no ``foreground_I_map.fits``, no ``theory_cls.npy``: separate, evaluate (mask from the observed
857 GHz map or from a FITS file; theory from CAMB at the Planck 2018 fiducial cosmology), compare."""

from __future__ import annotations

import shutil

import healpy as hp
import numpy as np
import pytest

from cosmobench.cmb.dataset import CMBDataset
from cosmobench.cmb.evaluate import theory_tt
from cosmobench.core.io import read_json, write_json
from cosmobench.core.seeds import rng
from cosmobench.sky import cosmology, sht
from cosmobench.sky.instrument import load_channels

NSIDE, NSIM = 8, 2
BANDS = ["100", "143", "217", "353", "857"]


@pytest.fixture(scope="module")
def cmbml(tmp_path_factory):
    """Two Test simulations: a CMB with a flat D_ell = 1000 uK^2 (the Sachs-Wolfe plateau of the fiducial TT), a
    Galactic dust disc (steep SED) and noise, in K_CMB float64."""
    root = tmp_path_factory.mktemp("cmbml")
    lmax = 3 * NSIDE - 1
    ell = np.arange(lmax + 1)
    tt = np.r_[0.0, 0.0, 2 * np.pi * 1000.0 / (ell[2:] * (ell[2:] + 1))]
    _, lat = hp.pix2ang(NSIDE, np.arange(sht.npix(NSIDE)), lonlat=True)
    for i in range(NSIM):
        sim = root / "Simulation" / "Test" / f"sim{i:04d}"
        sim.mkdir(parents=True)
        cmb = sht.synalm(tt, lmax, rng(1, "cmb", i))
        dust = 50.0 * np.exp(-np.abs(lat) / 10.0) * (1 + 0.3 * rng(1, "dust", i).random(lat.size))
        hp.write_map(sim / "cmb_map_fid.fits", sht.alm2map(cmb, NSIDE) * 1e-6, column_units="K_CMB", dtype=np.float64)
        for c in load_channels(bands=BANDS):
            beamed = sht.alm2map(sht.almxfl(cmb, sht.gauss_beam(c.fwhm_arcmin, lmax)), NSIDE)
            obs = beamed + (c.center_ghz / 353.0) ** 3.5 * dust + rng(1, "noise", i, c.band).normal(size=lat.size)
            hp.write_map(
                sim / f"obs_{c.band}GHz_map.fits",
                obs * 1e-6,
                column_names=["I_STOKES"],
                column_units="K_CMB",
                dtype=np.float64,
            )
    return root


def test_separate_evaluate_compare_on_cmbml_release(cli, cmbml, tmp_path):
    common = (f"out_dir={cmbml}", "threads=1")
    evaluate = ("evaluate.methods=[hilc]", "evaluate.beams=[60.0]", "evaluate.nbins=4", "evaluate.progress=false")
    # the fixture's maps carry intensity only: HILC separates the temperature
    code, err = cli("cmb", "separate", "method=hilc", "methods.hilc.fields=I", "separate.progress=false", *common)
    assert code == 0, err
    code, err = cli("cmb", "evaluate", *evaluate, *common)
    assert code == 0, err
    results = cmbml / "results" / "Test"
    s = read_json(results / "summary.json")["settings"]
    assert s["mask_source"] == "observed 857 GHz map" and s["theory"] == ["CAMB, Planck 2018 fiducial cosmology"]
    # the threshold mask on the 857 GHz map removes the dust disc: no pixel within 5 degrees of the plane is kept
    mask = hp.read_map(results / "mask.fits")
    _, lat = hp.pix2ang(NSIDE, np.arange(mask.size), lonlat=True)
    assert mask.mean() == pytest.approx(0.8, abs=0.01) and not mask[np.abs(lat) < 5].any()
    # the theory column is CAMB's fiducial TT through the estimator: the truth scatters around it
    spec = np.load(results / "hilc" / "60arcmin" / "spectra.npz")
    assert np.all(np.abs(spec["truth"].mean(0) / spec["theory"].mean(0) - 1) < 0.6)
    rmse = read_json(results / "summary.json")["methods"]["hilc"]["beams"]["60arcmin"]["rmse"]["mean"]
    assert 0 < rmse < 0.3 * np.std(hp.read_map(cmbml / "Simulation/Test/sim0000/cmb_map_fid.fits")) * 1e6
    assert cli("cmb", "compare", "compare.map_beams=[60.0]", *common)[0] == 0
    assert "observed 857 GHz map" in (cmbml / "report" / "report.md").read_text()

    # a user mask (values 0.95 and 0.5: binarised at 0.9) replaces the threshold mask
    user = np.where(np.abs(lat) > 30, 0.95, 0.5)
    hp.write_map(tmp_path / "mask.fits", user, dtype=np.float64)
    code, err = cli("cmb", "evaluate", *evaluate, f"evaluate.mask_path={tmp_path / 'mask.fits'}", *common)
    assert code == 1 and "mask_path" in err and "overwrite=true" in err  # other settings: refused
    code, err = cli(
        "cmb", "evaluate", *evaluate, f"evaluate.mask_path={tmp_path / 'mask.fits'}", "overwrite=true", *common
    )
    assert code == 0, err
    s = read_json(results / "summary.json")["settings"]
    assert s["mask_source"] == "mask_path" and s["fsky"] == pytest.approx(np.mean(np.abs(lat) > 30))


def test_theory_from_the_cosmology_of_params_json(cmbml, tmp_path, monkeypatch):
    """A simulation whose params.json gives its cosmology gets CAMB's TT of that cosmology."""
    root = shutil.copytree(cmbml / "Simulation", tmp_path / "Simulation").parent
    write_json(root / "Simulation" / "Test" / "sim0001" / "params.json", {"cosmology": {"H0": 70.5, "ln10As": 3.1}})
    asked = []
    monkeypatch.setattr(cosmology, "camb_spectra", lambda cosmo, lmax: asked.append(cosmo) or np.ones((4, lmax + 1)))
    ds = CMBDataset(root)
    assert theory_tt(ds, "Test", 1, 2 * NSIDE).shape == (2 * NSIDE + 1,)
    assert asked == [cosmology.Cosmology(H0=70.5, ln10As=3.1)]
