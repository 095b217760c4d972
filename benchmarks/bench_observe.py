"""Seconds to draw a synthetic foreground sky and to observe it with the 9-channel instrument (I, Q, U).

Prints one JSON object: per nside, the median over repeats of
- "foregrounds_generate": synthetic_foregrounds (dust, synchrotron, free-free, AME),
- "observe_total" and its parts "observe_foregrounds" (emission + analysis, CMB alm), "observe_beams"
  (beam + synthesis) and "observe_noise", for CMB + foregrounds through ``planck_like()`` with noise,
- "per_simulation" (wall, generation + observe) and "cpu_per_simulation" (CPU seconds of all threads, which
  a busy shared machine inflates less than wall time).
The CMB is a Gaussian realisation with exact alm (a stand-in for cosmobench.sky.cmb.CMB, which the
instrument treats the same way: scaled alm, no analysis).

    python benchmarks/bench_observe.py [--nside 64 128 256 512] [--repeats 3] [--max-seconds 60]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time

import numpy as np


def _cmb_standin(nside: int, seed: int):
    import astropy.units as u

    from cosmobench.sky import sht, units
    from cosmobench.sky.components import Component
    from cosmobench.sky.units import unit_factor

    lmax = sht.default_lmax(nside)
    ell = np.arange(lmax + 1)
    cl = np.zeros((4, lmax + 1))
    cl[0, 2:] = 2 * np.pi * 2500.0 / (ell[2:] * (ell[2:] + 1))
    cl[1, 2:] = cl[0, 2:] / 50
    alm = sht.synalm(cl, lmax, np.random.default_rng(seed))

    class ExactCMB(Component):
        def __init__(self):
            self.nside = nside

        def emission(self, freq):
            return sht.alm2map(self.emission_alm(freq, lmax).value, nside) << units.uK_RJ

        def emission_alm(self, freq, lmax_out, iter=0):
            factor = unit_factor(freq.to_value(u.GHz), "uK_CMB", "uK_RJ")
            m_max = lmax_out + 1
            keep = np.concatenate([m * (2 * lmax + 3 - m) // 2 + np.arange(m_max - m) for m in range(m_max)])
            return (alm[:, keep] * factor) << units.uK_RJ

    return ExactCMB()


def bench(nside: int, repeats: int) -> dict:
    from cosmobench.sky.components import Sky
    from cosmobench.sky.foregrounds import synthetic_foregrounds
    from cosmobench.sky.instrument import planck_like

    inst = planck_like()
    synthetic_foregrounds(nside, np.random.default_rng(99))  # warm-up: imports, cached geometry and profiles
    parts = {
        k: []
        for k in (
            "foregrounds_generate",
            "observe_total",
            "observe_foregrounds",
            "observe_beams",
            "observe_noise",
            "cpu_per_simulation",
        )
    }
    for rep in range(repeats):
        c0, t0 = time.process_time(), time.perf_counter()
        fgs = synthetic_foregrounds(nside, np.random.default_rng(rep))
        parts["foregrounds_generate"].append(time.perf_counter() - t0)
        sky = Sky([_cmb_standin(nside, rep), *fgs])
        timings: dict = {}
        c1, t1 = time.process_time(), time.perf_counter()
        inst.observe(sky, seed=rep, key=("bench",), timings=timings)
        parts["observe_total"].append(time.perf_counter() - t1)
        parts["cpu_per_simulation"].append(time.process_time() - c1 + (c1 - c0))
        for name in ("foregrounds", "beams", "noise"):
            parts[f"observe_{name}"].append(timings[name])
    out = {k: statistics.median(v) for k, v in parts.items()}
    out["per_simulation"] = out["foregrounds_generate"] + out["observe_total"]
    return {k: round(v, 3) for k, v in out.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nside", type=int, nargs="+", default=[64, 128, 256, 512])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument(
        "--max-seconds", type=float, default=60.0, help="skip larger nsides once one repeat is predicted to exceed this"
    )
    args = parser.parse_args()
    from cosmobench.sky import sht

    result = {
        "benchmark": "observe",
        "repeats": args.repeats,
        "threads": sht.nthreads(),
        "machine": platform.machine(),
        "cpus": os.cpu_count(),
        "nside": {},
    }
    last = None  # (nside, seconds per simulation) of the previous size; cost grows about as nside^2
    for nside in sorted(args.nside):
        if last is not None and last[1] * (nside / last[0]) ** 2 > args.max_seconds:
            result["nside"][str(nside)] = "skipped: predicted over --max-seconds"
            continue
        result["nside"][str(nside)] = row = bench(nside, args.repeats)
        last = (nside, row["per_simulation"])
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
