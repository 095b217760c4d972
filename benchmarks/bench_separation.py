"""Speed, memory and residual of the classical separators (NILC, HILC) on synthetic skies.

Sky: CMB (CAMB, Planck 2018 lensed TT) + dust (modified black body, beta varying across the sky) + synchrotron
(power law, beta varying) with Galactic-profile templates, observed with the packaged CMB-ML channels (beams,
delta bandpasses) and white noise at each channel's ``depth_i``. Timing: median wall seconds of
``method.predict`` over ``--repeats`` runs; memory: tracemalloc peak of one extra run (numpy buffers) and the
process's maximum RSS. Residual: prediction minus the CMB at the method's output beam, band-limited to the
method's lmax, split at ell = 30 and at abs(b) > 20 deg (monopole and dipole removed there), plus the same
with the evaluation protocol's lmax = 2 nside. Prints one JSON object.

    python benchmarks/bench_separation.py                          # nside 64, 128, 256; 7 and 9 channels
    python benchmarks/bench_separation.py --nsides 128 --channels 7 --repeats 3
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import time
import tracemalloc
from pathlib import Path

import healpy as hp
import numpy as np

from cosmobench.cmb.masks import latitude_mask, remove_monopole_dipole
from cosmobench.cmb.methods.ilc import HILC
from cosmobench.cmb.methods.nilc import NILC, resize_alm
from cosmobench.core.seeds import rng
from cosmobench.sky import sht
from cosmobench.sky.cosmology import Cosmology, camb_spectra
from cosmobench.sky.instrument import load_channels
from cosmobench.sky.units import krj_to_kcmb

METHODS = {"nilc": NILC, "hilc": HILC}
ELL_SPLIT, LAT_CUT = 30, 20.0


def synthetic_sky(nside: int, n_channels: int, seed: int, cl_tt: np.ndarray, foregrounds: bool = True):
    """Observed maps {band: (1, npix) uK_CMB}, channels and the CMB alm (lmax 3 nside - 1)."""
    lmax = 3 * nside - 1
    channels = load_channels()[:n_channels]
    cmb = sht.synalm(cl_tt[: lmax + 1], lmax, rng(seed, "cmb"))
    npix = sht.npix(nside)
    _, lat = hp.pix2ang(nside, np.arange(npix), lonlat=True)
    sinb = np.abs(np.sin(np.radians(lat)))
    ell = np.arange(lmax + 1)
    cl_small = np.where(ell > 1, (np.maximum(ell, 1) / 10.0) ** -2.6, 0.0)

    def field(key: str) -> np.ndarray:
        f = sht.alm2map(sht.synalm(cl_small, lmax, rng(seed, key)), nside)
        return f / f.std()

    dust = 150.0 * (np.exp(-sinb / 0.12) + 0.02) * np.exp(0.5 * field("dust"))  # uK_RJ at 353 GHz
    sync = 30.0 * (np.exp(-sinb / 0.25) + 0.05) * np.exp(0.4 * field("sync"))  # uK_RJ at 30 GHz
    beta_d = 1.54 + 0.1 * field("beta_d")
    beta_s = -3.0 + 0.15 * field("beta_s")
    pix_arcmin = np.degrees(np.sqrt(4 * np.pi / npix)) * 60
    obs = {}
    for c in channels:
        nu = c.center_ghz
        x, x0 = 0.0479924 * nu / 19.6, 0.0479924 * 353.0 / 19.6  # h nu / k T_d
        sky_rj = dust * (nu / 353.0) ** (beta_d + 1) * np.expm1(x0) / np.expm1(x) + sync * (nu / 30.0) ** beta_s
        alm = cmb + (sht.map2alm(sky_rj * krj_to_kcmb(nu), lmax, 1) if foregrounds else 0)
        m = sht.alm2map(sht.almxfl(alm, sht.gauss_beam(c.fwhm_arcmin, lmax)), nside)
        m += rng(seed, "noise", c.band).standard_normal(npix) * c.depth_i / pix_arcmin
        obs[c.band] = m[None]
    return obs, channels, cmb


def residuals(pred: np.ndarray, cmb: np.ndarray, beam: float, lmax: int, nside: int) -> dict:
    """RMS of prediction - truth: full sky, ell < 30, ell >= 30, abs(b) > 20 deg; monopole and dipole removed."""
    truth = sht.alm2map(sht.almxfl(resize_alm(cmb, lmax), sht.gauss_beam(beam, lmax)), nside, lmax)
    full = np.ones(pred.size)
    r = remove_monopole_dipole(pred - truth, full)
    r_alm = sht.map2alm(r, lmax, 3)
    low = sht.alm2map(sht.almxfl(r_alm, (np.arange(lmax + 1) < ELL_SPLIT).astype(float)), nside, lmax)
    lat = latitude_mask(nside, LAT_CUT)
    r_lat = remove_monopole_dipole(pred - truth, lat)[lat > 0]

    def rms(x):
        return round(float(np.sqrt(np.mean(x**2))), 3)

    return {"fullsky": rms(r), "ell_lt_30": rms(low), "ell_ge_30": rms(r - low), "lat_gt_20": rms(r_lat)}


def band_limit(m: np.ndarray, lmax: int, nside: int) -> np.ndarray:
    return sht.alm2map(sht.map2alm(m, lmax, 3), nside, lmax)


def learned_method_throughput(nside: int) -> dict:
    """Training and inference maps/s of the embedded-default full-sky UNet at ``nside`` (bench_unet.bench_one)."""
    import sys
    import tempfile

    import torch

    sys.path.insert(0, str(Path(__file__).parent))
    from bench_unet import bench_one
    from cosmobench.core.runtime import resolve_device

    device = resolve_device("auto")
    with tempfile.TemporaryDirectory() as tmp:
        return bench_one(
            "tiny", nside, n_maps=8, epochs=2, device=device, amp=device.type == "cuda", folder=Path(tmp)
        ) | {"device": str(device), "torch_threads": torch.get_num_threads()}


def bench(nside: int, n_channels: int, repeats: int, cl_tt: np.ndarray, no_fg: bool) -> dict:
    obs, channels, cmb = synthetic_sky(nside, n_channels, seed=nside, cl_tt=cl_tt)
    out: dict = {"nside": nside, "channels": [c.band for c in channels]}
    for name, cls in METHODS.items():
        method = cls(fields="I")  # the synthetic sky is temperature only
        times = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            pred = method.predict(obs, channels)
            times.append(time.perf_counter() - t0)
        tracemalloc.start()
        method.predict(obs, channels)
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        lmax = method._lmax(nside)
        beam = method.output_beam_arcmin or 0.0
        entry = {
            "seconds_median": round(statistics.median(times), 3),
            "seconds_all": [round(t, 3) for t in times],
            "tracemalloc_peak_mb": round(peak / 2**20, 1),
            "bands_used": [c.band for c in method._channels(obs, channels, pol=False)],
            "lmax": lmax,
            "residual_uK": residuals(pred, cmb, beam, lmax, nside),
            "residual_uK_lmax_2nside": residuals(band_limit(pred, 2 * nside, nside), cmb, beam, 2 * nside, nside),
        }
        if no_fg:
            obs0, _, _ = synthetic_sky(nside, n_channels, seed=nside, cl_tt=cl_tt, foregrounds=False)
            entry["residual_uK_no_foregrounds"] = residuals(method.predict(obs0, channels), cmb, beam, lmax, nside)
        out[name] = entry
    out["unet_tiny"] = learned_method_throughput(nside)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nsides", type=int, nargs="+", default=[64, 128, 256])
    parser.add_argument("--channels", type=int, nargs="+", default=[7, 9], help="first N packaged channels")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--no-fg-baseline", action="store_true", help="also run without foregrounds (ILC bias)")
    args = parser.parse_args()
    cl_tt = camb_spectra(Cosmology(), 3 * max(args.nsides))[0]
    runs = [bench(n, c, args.repeats, cl_tt, args.no_fg_baseline) for n in args.nsides for c in args.channels]
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(
        json.dumps(
            {"benchmark": "separation", "threads": sht.nthreads(), "max_rss_mb": round(rss, 1), "runs": runs}, indent=1
        )
    )


if __name__ == "__main__":
    main()
