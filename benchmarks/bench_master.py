"""MASTER decoupling per multipole (cosmobench) against the binned-coupling form, side by side: cost and bias.

The evaluation's estimator (:class:`cosmobench.cmb.spectra.MasterPol`) inverts the mode coupling multipole by
multipole and then bins; the reference here is the binned form ``(P M B^2 Q)^-1 P`` it replaced, built in this
script from the same coupling. For an apodised Galactic cut of f_sky ``--fsky`` at each ``--nside`` (lmax 3 nside
- 1, 25 linear bins from l = 2, a 20.6' beam), prints one JSON object with, per nside:

- "coupling_seconds": wall and CPU seconds of the spin-2 coupling matrix (ducc0; shared by both forms),
- "build_seconds": wall and CPU seconds to build each estimator from that coupling ("per_multipole",
  "binned_reference"), and "extra_beam_seconds": one more beam with ``with_beam`` (the inverse shared),
- "decouple_seconds_per_map": wall seconds of one decoupling of EE, EB, BE, BB pseudo spectra, each form,
- "condition": the 1-norm condition number of the inverted coupling,
- "first_bb_bin_over_true": the expected decoupled BB of CAMB-like lensed spectra (EE with its reionisation bump,
  lensing BB) in the first bin over the binned true BB, each form (1 is unbiased), and "max_ee_bias": the largest
  |expected EE / binned EE - 1| over the bins, each form.

    python benchmarks/bench_master.py [--nside 128 512] [--fsky 0.8]
"""

from __future__ import annotations

import argparse
import json
import platform
import time

import numpy as np


def _timed(fn):
    wall, cpu = time.perf_counter(), time.process_time()
    out = fn()
    return out, {"wall": time.perf_counter() - wall, "cpu": time.process_time() - cpu}


def _spectra(lmax: int) -> np.ndarray:
    """EE, EB, BE, BB C_l (uK^2): EE with a reionisation bump, lensing-like BB (C_l flat)."""
    ell = np.arange(lmax + 1, dtype=float)
    to_cl = np.zeros(lmax + 1)
    to_cl[2:] = 2 * np.pi / (ell[2:] * (ell[2:] + 1))
    ee = (0.03 * np.exp(-((ell - 3.0) ** 2) / 8.0) + 0.002 * (ell / 100.0) ** 2 / (1 + (ell / 1000.0) ** 4)) * to_cl
    bb = np.where(ell >= 2, 2e-6, 0.0)
    zero = np.zeros(lmax + 1)
    return np.stack([ee, zero, zero, bb])


def run(nside: int, fsky: float) -> dict:
    from cosmobench.cmb import masks
    from cosmobench.cmb.spectra import MasterPol, binning_operators, coupling_matrix, linear_bins
    from cosmobench.sky import sht

    lmax = 3 * nside - 1
    cut = np.degrees(np.arcsin(1 - fsky))  # |b| > cut keeps f_sky of the sphere
    weight = masks.apodize(masks.latitude_mask(nside, cut), 2.0)
    edges = linear_bins(2, lmax, 25)
    beam = sht.gauss_beam(20.6, lmax)
    coupling, t_coupling = _timed(lambda: coupling_matrix(weight, lmax, spin=2))
    est, t_new = _timed(lambda: MasterPol(weight, lmax, edges, beam=beam, coupling=coupling))
    _, t_beam = _timed(lambda: est.with_beam(sht.gauss_beam(60.0, lmax)))

    def reference():
        p, q = binning_operators(edges, lmax)
        p4, q4 = np.kron(np.eye(4), p), np.kron(np.eye(4), q)
        return np.linalg.inv(p4 @ est._forward @ q4) @ p4

    ref, t_ref = _timed(reference)
    cl = _spectra(lmax)
    pseudo = est._apply(est._forward, cl)
    reps = 20
    _, t_dec_new = _timed(lambda: [est.decouple(pseudo) for _ in range(reps)])
    _, t_dec_ref = _timed(lambda: [est._apply(ref, pseudo) for _ in range(reps)])
    p, _ = binning_operators(edges, lmax)
    true = np.stack([p @ cl[0], p @ cl[3]])
    forms = {"per_multipole": est.expected(cl), "binned_reference": est._apply(ref, pseudo)}
    return {
        "nside": nside,
        "lmax": lmax,
        "fsky_weight_mean": float(np.mean(weight)),
        "coupling_seconds": t_coupling,
        "build_seconds": {"per_multipole": t_new, "binned_reference": t_ref},
        "extra_beam_seconds": t_beam,
        "decouple_seconds_per_map": {
            "per_multipole": t_dec_new["wall"] / reps,
            "binned_reference": t_dec_ref["wall"] / reps,
        },
        "condition": est.condition,
        "first_bb_bin_over_true": {k: float(v[3][0] / true[1][0]) for k, v in forms.items()},
        "max_ee_bias": {k: float(np.max(np.abs(v[0] / true[0] - 1))) for k, v in forms.items()},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nside", type=int, nargs="+", default=[128, 512])
    parser.add_argument("--fsky", type=float, default=0.8)
    args = parser.parse_args()
    out = {
        "machine": platform.platform(),
        "processor": platform.processor(),
        "results": [run(n, args.fsky) for n in args.nside],
    }
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
