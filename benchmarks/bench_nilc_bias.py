"""Where NILC's temperature error comes from with and without foregrounds: its ILC bias, scale by scale.

Simulates ``--sims`` skies twice with the same seeds (so the same CMB and noise), with the four synthetic foreground
components and with none, and runs NILC (temperature only) on each, with foregrounds at ``ilc_bias_tol`` 1e-3 (the
default) and without them at every ``--tols``. The error is NILC's map minus the truth at NILC's 20.6' output beam
and band limit (as ``cosmobench cmb evaluate`` builds it), its monopole and dipole removed on the kept sky; the kept
sky is the faintest ``--fsky`` of the foreground sky's intensity (``cmb.masks.threshold_mask``, the evaluation's
rule), "galactic" is the rest. Per needlet scale j (the error and the truth filtered by NILC's window h_j):

``share_kept`` / ``share_galactic``
    variance of the error over variance of the truth, on the kept sky / the rest (fraction);
``rho_kept``
    -<e s> / <e e> on the kept sky: 1 when the error is the CMB's own projection onto the nuisance (the ILC bias of
    Delabrouille et al. 2009: -P s, whose <e s> = -<e e>), 0 for an error independent of the CMB (noise);
``bias_rule``
    (N_ch - 1) / N_modes(h_j), the ILC bias of one covariance domain holding every mode of the scale (the whole
    sky), and ``sigma_deg``, the covariance smoothing PyILC's rule asks for at that tolerance (degrees).

Prints one JSON object (CPU seconds of the NILC runs included)::

    OMP_NUM_THREADS=1 python benchmarks/bench_nilc_bias.py --sims 2
    OMP_NUM_THREADS=1 python benchmarks/bench_nilc_bias.py --sims 2 --channel-table deep30.tbl   # docs/results.md
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np

from cosmobench.cmb import needlets
from cosmobench.cmb.evaluate import _native_truth, _rms
from cosmobench.cmb.masks import remove_monopole_dipole, threshold_mask
from cosmobench.cmb.methods.nilc import NILC, bias_smoothing_sigma
from cosmobench.cmb.simulate import simulate_observation
from cosmobench.sky import sht
from cosmobench.sky.instrument import load_channels

FOREGROUNDS = ("dust", "synchrotron", "freefree", "ame")


def scale_terms(err: np.ndarray, truth: np.ndarray, windows: np.ndarray, keep: np.ndarray) -> list[dict]:
    """Per needlet window: the error's share of the truth's variance (kept sky, rest) and rho on the kept sky."""
    nside = sht.nside_of(err)
    lmax = windows.shape[-1] - 1
    e_alm, s_alm = sht.map2alm(err, lmax, 3), sht.map2alm(truth, lmax, 3)
    rows = []
    for h in windows:
        e, s = sht.alm2map(sht.almxfl(e_alm, h), nside, lmax), sht.alm2map(sht.almxfl(s_alm, h), nside, lmax)
        rows.append(
            {
                "share_kept": float(e[keep].var() / s[keep].var()),
                "share_galactic": float(e[~keep].var() / s[~keep].var()),
                "rho_kept": float(-np.mean(e[keep] * s[keep]) / np.mean(e[keep] ** 2)),
            }
        )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nside", type=int, default=128)
    parser.add_argument("--sims", type=int, default=2)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--channel-table", default=None, help="channel table (default: the packaged Planck-like one)")
    parser.add_argument("--tols", type=float, nargs="+", default=[1e-3, 1e-4])
    parser.add_argument("--fsky", type=float, default=0.8)
    args = parser.parse_args()

    channels = load_channels(args.channel_table)
    nilc = NILC(fields="I")
    windows = nilc.windows(args.nside)
    lmax_out = nilc.output_lmax_for(args.nside)
    n_ch = len(channels)
    scales = []
    for h in windows:
        lo, hi = needlets.window_support(h)
        n_modes = needlets.n_modes(h)
        scales.append(
            {
                "ell": [int(lo), int(hi)],
                "bias_rule": (n_ch - 1) / n_modes,
                "sigma_deg": {str(t): float(np.degrees(bias_smoothing_sigma(n_modes, n_ch, t))) for t in args.tols},
            }
        )
    runs = []
    for i in range(args.sims):
        sims = {
            fg: simulate_observation(
                args.nside, channels, seed=args.seed, key=("Test", i), foreground_components=FOREGROUNDS if fg else ()
            )
            for fg in (True, False)
        }
        if not np.array_equal(sims[True].cmb, sims[False].cmb):
            raise RuntimeError("the two skies of one seed should share their CMB")
        keep = threshold_mask(sims[True].foreground_intensity, args.fsky) > 0
        truth = _native_truth(sims[True].cmb[:1], nilc.output_beam_arcmin, lmax_out)[0]
        for fg, tol in [(True, 1e-3), *((False, t) for t in args.tols)]:
            t0 = time.process_time()
            pred = NILC(fields="I", ilc_bias_tol=tol).predict(sims[fg].obs, channels)
            cpu = time.process_time() - t0
            err = remove_monopole_dipole(pred - truth, keep)
            runs.append(
                {
                    "sim": i,
                    "foregrounds": fg,
                    "ilc_bias_tol": tol,
                    "cpu_s": round(cpu, 2),
                    "rmse_kept_uK": _rms(err, keep),
                    "rmse_galactic_uK": _rms(err, ~keep),
                    "scales": scale_terms(err, truth, windows, keep),
                }
            )
    result = {"nside": args.nside, "channels": n_ch, "fsky": args.fsky, "scales": scales, "runs": runs}
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
