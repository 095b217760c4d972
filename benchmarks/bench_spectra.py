"""CMB power spectra per simulation: direct CAMB against the fast emulator (speed and accuracy).

Prints one JSON object:
- "camb_seconds_per_call": median wall time of direct CAMB lensed total spectra (``camb_spectra``) at ``lmax``,
- "emulator_build_seconds" and "emulator_camb_calls": the one-off emulator build (or the values recorded in the
  cache file when it was built earlier; "emulator_from_cache" says which),
- "predict_seconds": median over ``--predict-repeats`` calls of ``cmb_spectra(method="fast")`` on a warm emulator,
- "max_rel_error": max over the draws and ell in [2, lmax] of |fast / CAMB - 1| for TT, EE, BB, and of
  |TE_fast - TE| / sqrt(TT EE) for TE, over ``--draws`` prior draws (r = ``--r``) and as many +-3 sigma corners,
  split into "draws" and "corners".

    python benchmarks/bench_spectra.py [--lmax 1536] [--draws 10] [--camb-calls 2] [--cache DIR]
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time

import numpy as np


def _errors(fast: np.ndarray, ref: np.ndarray) -> np.ndarray:
    rel = np.abs(fast[:3, 2:] / ref[:3, 2:] - 1).max(axis=1)
    te = np.abs(fast[3, 2:] - ref[3, 2:]) / np.sqrt(ref[0, 2:] * ref[1, 2:])
    return np.append(rel, te.max())


def main() -> None:
    from cosmobench.sky.cosmology import PLANCK2018_PRIOR, Cosmology, SpectrumEmulator, camb_spectra, draw_cosmology

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lmax", type=int, default=1536)
    parser.add_argument("--draws", type=int, default=10, help="prior draws (and as many +-3 sigma corners)")
    parser.add_argument("--camb-calls", type=int, default=2)
    parser.add_argument("--predict-repeats", type=int, default=20)
    parser.add_argument("--r", type=float, default=0.01)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--cache", default=None, help="emulator cache folder (default $COSMOBENCH_CACHE)")
    args = parser.parse_args()

    times = []
    for _ in range(args.camb_calls):
        t0 = time.perf_counter()
        camb_spectra(Cosmology(r=args.r), args.lmax)
        times.append(time.perf_counter() - t0)

    emu = SpectrumEmulator(args.lmax)
    from_cache = emu.cache_path(args.cache).exists()
    emu.load_or_build(args.cache)

    rng = np.random.default_rng(args.seed)
    draws = [draw_cosmology(rng, r=args.r) for _ in range(args.draws)]
    names = list(PLANCK2018_PRIOR)
    corners = []
    for _ in range(args.draws):
        signs = rng.choice([-3.0, 3.0], size=len(names))
        corners.append(
            Cosmology(r=args.r, **{n: m + s * sd for n, (m, sd), s in zip(names, PLANCK2018_PRIOR.values(), signs)})
        )

    predict = []
    for i in range(args.predict_repeats):
        t0 = time.perf_counter()
        emu.predict(draws[i % len(draws)])
        predict.append(time.perf_counter() - t0)

    labels = ("TT", "EE", "BB", "TE_over_sqrt_TTEE")
    errors = {}
    for name, group in (("draws", draws), ("corners", corners)):
        worst = np.zeros(4)
        for c in group:
            worst = np.maximum(worst, _errors(emu.predict(c), camb_spectra(c, args.lmax)))
        errors[name] = dict(zip(labels, worst.round(6).tolist()))

    print(
        json.dumps(
            {
                "benchmark": "cmb_spectra",
                "lmax": args.lmax,
                "r": args.r,
                "camb_seconds_per_call": round(statistics.median(times), 3),
                "emulator_camb_calls": emu.build_info.get("camb_calls"),
                "emulator_build_seconds": round(emu.build_info.get("build_seconds", float("nan")), 1),
                "emulator_from_cache": from_cache,
                "predict_seconds": round(statistics.median(predict), 5),
                "n_draws": args.draws,
                "max_rel_error": errors,
                "machine": platform.node(),
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
