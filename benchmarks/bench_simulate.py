"""Seconds per simulation and peak memory of CMB dataset generation, split by part.

Each nside runs in its own process (so its peak RSS is its own); the parts are spectra, CMB, foregrounds,
beams (harmonic beam + synthesis), noise and I/O (FITS writes + checksums). Prints one JSON object.

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
    from cosmobench.cmb.simulate import _Spec, _write_simulation
    from cosmobench.sky.cosmology import Cosmology, cmb_spectra
    from cosmobench.sky.instrument import load_channels
    from cosmobench.sky.sht import default_lmax

    channels = load_channels()
    t0 = time.perf_counter()
    cmb_spectra(Cosmology(), default_lmax(nside), method=spectra)  # builds or loads the emulator cache once
    warm = time.perf_counter() - t0
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        from dataclasses import asdict

        spec = _Spec(
            root=tmp,
            nside=nside,
            channels=tuple(asdict(c) for c in channels),
            seed=0,
            dtype="float32",
            physics=tuple(
                sorted(
                    {
                        "cosmology": None,
                        "r": 0.0,
                        "spectra_method": spectra,
                        "cache_dir": None,
                        "foreground_backend": "synthetic",
                        "foreground_components": ["dust", "synchrotron", "freefree", "ame"],
                        "pysm_presets": [],
                        "freeze_foregrounds": False,
                        "fg_iter": 0,
                        "noise": True,
                    }.items()
                )
            ),
        )
        for i in range(repeats):
            t = time.perf_counter()
            parts = _write_simulation(spec, ("Train", i))
            parts["total"] = time.perf_counter() - t
            rows.append(parts)
    med = {k: sorted(r[k] for r in rows)[len(rows) // 2] for k in rows[0]}
    return {
        "nside": nside,
        "channels": len(channels),
        "repeats": repeats,
        "seconds_median": med,
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
    results = []
    for nside in args.nsides:
        out = subprocess.run(
            [sys.executable, __file__, "--child", str(nside), "--repeats", str(args.repeats)],
            capture_output=True,
            text=True,
            check=True,
        )
        results.append(json.loads(out.stdout.strip().splitlines()[-1]))
    import os

    print(json.dumps({"benchmark": "simulate", "cores": len(os.sched_getaffinity(0)), "results": results}, indent=2))


if __name__ == "__main__":
    main()
