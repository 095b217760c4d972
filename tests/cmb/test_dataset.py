"""The reader loads CMB-ML's official layout as released: Simulation/, bare band names, K_CMB float64 columns."""

import healpy as hp
import numpy as np

from cosmobench.cmb.dataset import CMBDataset


def test_reads_cmbml_official_layout_in_kcmb(tmp_path):
    nside = 8
    rng = np.random.default_rng(0)
    maps = {b: rng.normal(size=12 * nside**2) * 1e-4 for b in ("100", "143", "857")}  # K_CMB
    truth = rng.normal(size=12 * nside**2) * 1e-4
    for split in ("Train", "Test"):
        sim = tmp_path / "Simulation" / split / "sim0000"
        sim.mkdir(parents=True)
        for band, m in maps.items():
            hp.write_map(
                sim / f"obs_{band}_map.fits", m, column_names=["I_STOKES"], column_units="K_CMB", dtype=np.float64
            )
        hp.write_map(sim / "cmb_map_fid.fits", truth, column_units="K_CMB", dtype=np.float64)
    ds = CMBDataset(tmp_path)
    assert ds.nside == nside and ds.bands == ["100", "143", "857"] and ds.splits == {"Test": 1, "Train": 1}
    obs = ds.load_obs("Test", 0)
    np.testing.assert_allclose(obs["143"][0], maps["143"] * 1e6, rtol=1e-12)  # converted to uK_CMB
    np.testing.assert_allclose(ds.load_target("Test", 0)[0], truth * 1e6, rtol=1e-12)
    assert ds.channel("857").fields == "I" and ds.channel("100").fwhm_arcmin == 43.0
