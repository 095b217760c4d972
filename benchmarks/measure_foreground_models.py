"""Levels and spectral facts of the synthetic foreground models ("default", "alt"): the table in docs/foregrounds.md.

Prints one JSON object: per model and quantity, the mean, min and max over realisations (seeds 0..n-1,
``default_rng(seed)``) at one nside:
- "<comp>_high", "<comp>_plane": median intensity over abs(b) > 30 deg and abs(b) < 5 deg, uK_CMB, at 353 GHz
  (dust) or 30 GHz (synchrotron "sync", free-free "ff", AME "ame");
- "<comp>_pol_frac", "<comp>_slope": median P/I and slope of the full-sky C_ell^TT over ell 20-100 (dust, sync);
- "dust_index_100_353", "dust_index_353_857", "sync_index_30_100": pixel mean of the effective RJ spectral index
  ln(T2/T1)/ln(nu2/nu1);
- "dust_ratio_rms", "dust_ratio_vs_intensity": rms over the sky of ln(T_100/T_353) of dust, and its correlation
  with ln I;
- "ame_44_over_30": median T_RJ(44 GHz)/T_RJ(30 GHz) of AME.

    python benchmarks/measure_foreground_models.py [--nside 64] [--seeds 4]
"""

from __future__ import annotations

import argparse
import json

import astropy.units as u
import healpy as hp
import numpy as np

from cosmobench.sky import sht
from cosmobench.sky.foregrounds import FOREGROUND_MODELS, make_foregrounds
from cosmobench.sky.units import unit_factor


def _measure(nside: int, seed: int, model: str) -> dict[str, float]:
    theta, _ = hp.pix2ang(nside, np.arange(sht.npix(nside)))
    b = 90 - np.degrees(theta)
    high, plane = np.abs(b) > 30, np.abs(b) < 5
    ell = np.arange(3 * nside)
    sel = (ell >= 20) & (ell <= 100)
    comps = make_foregrounds("synthetic", nside, np.random.default_rng(seed), model=model)
    comps = dict(zip(("dust", "sync", "ff", "ame"), comps))

    def rj(name: str, nu: float) -> np.ndarray:
        return comps[name].emission(nu * u.GHz).value

    out = {}
    for name, nu in (("dust", 353.0), ("sync", 30.0), ("ff", 30.0), ("ame", 30.0)):
        m = rj(name, nu) * unit_factor(nu, "uK_RJ", "uK_CMB")
        out[f"{name}_high"], out[f"{name}_plane"] = np.median(m[0, high]), np.median(m[0, plane])
        if name in ("dust", "sync"):
            out[f"{name}_pol_frac"] = np.median(np.hypot(m[1], m[2]) / m[0])
            cl = sht.alm2cl(sht.map2alm(m[0], iter=3))
            out[f"{name}_slope"] = np.polyfit(np.log(ell[sel]), np.log(cl[sel]), 1)[0]
    ratio = np.log(rj("dust", 100.0)[0] / rj("dust", 353.0)[0])
    out["dust_index_100_353"] = np.mean(ratio / np.log(100 / 353))
    out["dust_index_353_857"] = np.mean(np.log(rj("dust", 857.0)[0] / rj("dust", 353.0)[0]) / np.log(857 / 353))
    out["dust_ratio_rms"] = np.std(ratio)
    out["dust_ratio_vs_intensity"] = np.corrcoef(ratio, np.log(comps["dust"].iqu[0]))[0, 1]
    out["sync_index_30_100"] = np.mean(np.log(rj("sync", 100.0)[0] / rj("sync", 30.0)[0]) / np.log(100 / 30))
    out["ame_44_over_30"] = np.median(rj("ame", 44.0)[0] / rj("ame", 30.0)[0])
    return {k: float(v) for k, v in out.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nside", type=int, default=64)
    parser.add_argument("--seeds", type=int, default=4)
    args = parser.parse_args()
    result = {}
    for model in FOREGROUND_MODELS:
        runs = [_measure(args.nside, seed, model) for seed in range(args.seeds)]
        result[model] = {
            k: {"mean": float(np.mean(v)), "min": float(np.min(v)), "max": float(np.max(v))}
            for k, v in ((k, [r[k] for r in runs]) for k in runs[0])
        }
    print(json.dumps({"nside": args.nside, "seeds": args.seeds, "models": result}, indent=2))


if __name__ == "__main__":
    main()
