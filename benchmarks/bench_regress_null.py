"""A CMB-free null test that tells, on each map, whether NILC's fixed linear correction holds for its foregrounds.

``nilc_regress`` makes, on each map's correction region, the fixed combination of the bands M = NILC + sum_b a_b x_b
(sum_b a_b near 1; x_b = band b at NILC's beam minus NILC), its coefficients fitted once on Train against the
truth. On a foreground model it was not fitted on it can be worse than NILC (``alt`` at a thirtieth of Planck's
noise: docs/results.md), and the map's own variance cannot tell (bench_regress_permap.py). A second fixed
combination M2, fitted the same way without the bands ``--drop``, gives the null map M - M2 = sum_b (a_b - a2_b) x_b:
no CMB (both keep it with unit response) and, with both sums near 1, almost no NILC. Where the bands follow the
laws both were fitted on, it holds their noise and what the two fits leave; where they do not, the two foreground
residuals differ. The test: apply the correction on a map only if the rms of M - M2 on its correction region is at
most ``--factor`` times the largest value on the first ``--maps`` maps of the validation split of the model's own
root; otherwise keep NILC's map.

M2's coefficients are fitted on the first ``--train-maps`` maps of the Train split of ``--fit-root`` (the root the
model was fitted on; default ``root``) with the model's correction regions, by the model's own code
(the sums and statistic of ``nilc_regress``'s ``guard_drop``: :func:`~cosmobench.cmb.methods.regress.null_rms`),
and the threshold comes from that root's Valid split: nothing is chosen on a test split. Temperature only. Scored
like ``cosmobench cmb evaluate``'s temperature rows: RMSE (uK_CMB) against the truth at NILC's beam and band limit,
monopole and dipole removed, on the split's analysis mask ``<masks>/<split>/mask.fits``. Prints one JSON object: the
coefficients, the threshold and, per split, the mean RMSE of NILC, the fixed correction and the guarded one, the
fraction of maps corrected, and the null statistic's range (uK_CMB).

    OMP_NUM_THREADS=1 python benchmarks/bench_regress_null.py <root> <root>/nilc_regress/model \\
        --masks <out_dir>/results --splits Test TestOOD --maps 10
"""

from __future__ import annotations

import json

import numpy as np

from bench_regress_permap import regress_parser, rmse
from cosmobench.cmb.dataset import CMBDataset
from cosmobench.cmb.masks import read_mask
from cosmobench.cmb.methods.nilc_unet import NILCResidualData
from cosmobench.cmb.methods.regress import GUARD, NILCRegress, null_rms, solve_coefficients


def null_maps(model: NILCRegress, view: NILCResidualData, split: str, i: int, a2: np.ndarray, kept: list[int]):
    """One map's NILC, truth, fixed correction c on its correction region, and null statistic (:func:`null_rms`)."""
    t = model._sim_terms(view, split, model.config["region_band"], {"T": model.config["groups"]["T"]}, i)
    x, nilc, region = t["x"]["T"], t["nilc"][0], t["region"]
    c = region * (model.coefficients["T"] @ x[:, 0])
    return nilc, t["r"][0] + nilc, c, null_rms(x, model.coefficients["T"], a2, kept, region)


def main() -> None:
    parser = regress_parser(__doc__, maps=10)  # --maps: also the Valid maps that set the threshold
    parser.add_argument("--fit-root", help="root of the model's Train and Valid (default: root)")
    parser.add_argument("--drop", nargs="+", default=["217"], help="bands left out of the second combination")
    parser.add_argument("--train-maps", type=int, default=40)
    parser.add_argument("--factor", type=float, default=1.5)
    args = parser.parse_args()

    model = NILCRegress.load(args.model)
    bands = list(model.config["groups"]["T"])
    kept = [k for k, b in enumerate(bands) if b not in args.drop]
    fit_ds = CMBDataset(args.fit_root or args.root)
    fit_view = NILCResidualData(fit_ds, model.nilc)
    groups = {"T": bands}  # the method's own sums of the guard's combination (nilc_regress with guard_drop)
    sums = [
        model._sim_sums(fit_view, "Train", model.config["region_band"], groups, kept, i)[GUARD]
        for i in fit_ds.sim_indices("Train")[: args.train_maps]
    ]
    a2 = solve_coefficients(sum(m for m, _ in sums), sum(v for _, v in sums))
    valid = [null_maps(model, fit_view, "Valid", i, a2, kept)[3] for i in fit_ds.sim_indices("Valid")[: args.maps]]
    threshold = args.factor * max(valid)

    ds = CMBDataset(args.root)
    view = NILCResidualData(ds, model.nilc)
    result = {
        "root": args.root,
        "model": args.model,
        "coefficients": dict(zip(bands, model.coefficients["T"].tolist())),
        "second": dict(zip([bands[k] for k in kept], a2.tolist())),
        "valid_null_uK": [min(valid), max(valid)],
        "threshold_uK": threshold,
        "splits": {},
    }
    for split in args.splits:
        mask = read_mask(f"{args.masks}/{split}/mask.fits", ds.nside) > 0
        rows = []
        for i in ds.sim_indices(split)[: args.maps]:
            nilc, truth, c, null = null_maps(model, view, split, i, a2, kept)
            scores = {"nilc": rmse(nilc, truth, mask), "fixed": rmse(nilc + c, truth, mask)}
            rows.append({**scores, "guarded": scores["fixed"] if null <= threshold else scores["nilc"], "null": null})
        result["splits"][split] = {
            **{k: float(np.mean([r[k] for r in rows])) for k in ("nilc", "fixed", "guarded")},
            "corrected": float(np.mean([r["null"] <= threshold for r in rows])),
            "null_uK": [min(r["null"] for r in rows), max(r["null"] for r in rows)],
            "maps": len(rows),
        }
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
