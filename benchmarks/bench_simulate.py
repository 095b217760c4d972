"""Seconds per simulation and peak memory of CMB dataset generation, split by part.

Each nside runs in its own process (so its peak RSS is its own); the parts are spectra, CMB, foregrounds,
beams (harmonic beam + synthesis), noise and I/O (FITS writes + checksums), medians over the repeats, each
simulation written by the simulate stage's own writer. Prints one JSON object.

    python benchmarks/bench_simulate.py [--nsides 64 128 256 512] [--repeats 3]
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time


def one_nside(nside: int, repeats: int, spectra: str) -> dict:
    from cosmobench.cmb.simulate import plan_dataset, write_dataset
    from cosmobench.sky.cosmology import Cosmology, cmb_spectra
    from cosmobench.sky.sht import default_lmax

    t0 = time.perf_counter()
    cmb_spectra(Cosmology(), default_lmax(nside), method=spectra)  # builds or loads the emulator cache once
    warm = time.perf_counter() - t0
    with tempfile.TemporaryDirectory() as tmp:
        # the simulate stage's own writer, serial, on a dataset of `repeats` Train simulations
        plan = plan_dataset(tmp, nside=nside, splits={"Train": repeats}, spectra_method=spectra)
        out = write_dataset(plan, plan.items, progress=False)
    return {
        "nside": nside,
        "channels": len(plan.channels),
        "repeats": repeats,
        "seconds_median": out["timings"],
        "seconds_mean": out["seconds"] / repeats,  # the first simulation's warm-up included
        "spectra_method": spectra,
        "first_spectra_call_seconds": warm,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--nsides", type=int, nargs="+", default=[64, 128, 256, 512])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument(
        "--spectra",
        choices=["fast", "camb"],
        default="fast",
        help="emulator (its one-off build is timed separately) or direct CAMB per simulation",
    )
    parser.add_argument("--child", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(one_nside(args.child, args.repeats, args.spectra)))
        return
    results, spectra = [], args.spectra
    for nside in args.nsides:
        out = subprocess.run(
            [sys.executable, __file__, "--child", str(nside), "--repeats", str(args.repeats), "--spectra", spectra],
            capture_output=True,
            text=True,
            check=True,
        )
        results.append(json.loads(out.stdout.strip().splitlines()[-1]))
    import os

    print(json.dumps({"benchmark": "simulate", "cores": len(os.sched_getaffinity(0)), "results": results}, indent=2))


if __name__ == "__main__":
    main()
