"""A finished tiny CMB run (nside 8, 3 simulations): dataset, a trained cmbnncs, hilc and cmbnncs predictions,
results and report, made once per session through the command line; tests work on copies of it."""

from __future__ import annotations

import shutil

import numpy as np
import pytest

# the `tiny` preset with one simulation per split (three CAMB calls)
TINY = ("preset=tiny", "simulate.splits={Train: 1, Valid: 1, Test: 1}", "run.methods=[hilc,cmbnncs]")


#: channels of :func:`write_polarised_toy`, all polarised
TOY_BANDS = ["100", "143", "217", "353"]


def write_polarised_toy(root, splits: dict[str, int], *, nside: int = 16, seed: int = 0):
    """A CMB-ML-layout polarised dataset: beamed Gaussian CMB (T, E, B) + a Galactic-plane dust-like I, Q, U
    foreground (SED (nu / 143 GHz)^2) + white noise (5 uK in I, 30 uK in Q and U per pixel, so NILC's E and B are
    noise-dominated at high ell); target I, Q, U; ``foreground_I_map.fits`` for the mask; uK_CMB, RING. Returns
    the :class:`~cosmobench.cmb.dataset.CMBDataset`."""
    import healpy as hp

    from cosmobench.cmb.dataset import CMBDataset
    from cosmobench.core.io import write_healpix
    from cosmobench.core.seeds import rng
    from cosmobench.sky import sht
    from cosmobench.sky.instrument import load_channels

    channels = load_channels(bands=TOY_BANDS)
    lmax = 3 * nside - 1
    ell = np.arange(lmax + 1)
    tt = np.zeros(lmax + 1)
    tt[2:] = 2000.0 * 2 * np.pi / (ell[2:] * (ell[2:] + 1))
    cls = np.stack([tt, tt / 30, tt / 300, np.zeros(lmax + 1)])
    theta, _ = hp.pix2ang(nside, np.arange(sht.npix(nside)))
    plane = 100.0 * np.exp(-np.abs(np.pi / 2 - theta) / np.radians(10.0))
    for split, n in splits.items():
        for i in range(n):
            folder = root / "Simulations" / split / f"sim{i:04d}"
            cmb = sht.synalm(cls, lmax, rng(seed, split, i, "cmb"))
            dust = np.stack([plane, 0.1 * plane, -0.05 * plane]) * (1 + 0.1 * rng(seed, split, i, "d").random())
            for c in channels:
                sky = sht.alm2map(sht.almxfl(cmb, sht.gauss_beam(c.fwhm_arcmin, lmax, pol=True)), nside)
                noise = rng(seed, split, i, "noise", c.band).standard_normal(sky.shape) * np.array([[5.0], [30], [30]])
                write_healpix(folder / f"obs_{c.band}_map.fits", sky + (c.center_ghz / 143.0) ** 2 * dust + noise)
            write_healpix(folder / "cmb_map_fid.fits", sht.alm2map(cmb, nside))
            write_healpix(folder / "foreground_I_map.fits", np.stack([plane, plane]), column_names=["I30", "I353"])
    return CMBDataset(root)


def cmb(*args: str) -> int:
    """``cosmobench cmb <args> <TINY>`` in-process; returns the exit code."""
    from cosmobench.cli import main

    return main(["cmb", *args, *TINY])


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory):
    """Path of the finished tiny run (do not modify it: use ``tiny_copy``)."""
    root = tmp_path_factory.mktemp("cmb_tiny") / "run"
    for args in (
        ("simulate",),
        ("train", "method=cmbnncs"),
        ("separate", "method=hilc"),
        ("separate", "method=cmbnncs"),
        ("evaluate",),
        ("compare",),
    ):
        assert cmb(*args, f"out_dir={root}") == 0, args
    return root


@pytest.fixture
def tiny_copy(tiny_run, tmp_path):
    """A private copy of the finished tiny run."""
    return shutil.copytree(tiny_run, tmp_path / "run")
