"""Can NILC's linear correction be fitted on each map without the truth? Per-map against fixed coefficients.

``nilc_regress`` corrects NILC with ``region * sum_b a_b x_b`` (x_b: band-minus-NILC maps at NILC's beam), its
coefficients fitted once on the Train split against the true residual; on a foreground model it never saw they can
make the map worse (docs/results.md, sessions 16-17). The data-only alternative fits the temperature coefficients on
each map alone, minimising the variance of the corrected map over the correction region (the x_b hold no CMB, so the
fit sees the CMB only through its chance correlation with them), on the multipoles ``>= lmin`` only to keep the
large-scale CMB out of the fit, and applies them to the whole maps. Scored like ``cosmobench cmb evaluate``'s
temperature rows: RMSE (uK_CMB) against the truth at NILC's beam and band limit, monopole and dipole removed, on the
split's analysis mask ``<masks>/<split>/mask.fits`` (``<out_dir>/results`` of an evaluate run). Prints one JSON
object: per split, the mean over the first ``--maps`` maps of NILC, the fixed coefficients and each ``lmin``.

    OMP_NUM_THREADS=1 python benchmarks/bench_regress_permap.py <dataset root> <root>/nilc_regress/model \\
        --masks <out_dir>/results --splits Test TestOOD --maps 5
"""

from __future__ import annotations

import argparse
import json

import numpy as np

from cosmobench.cmb.dataset import CMBDataset
from cosmobench.cmb.evaluate import _rms
from cosmobench.cmb.masks import read_mask, remove_monopole_dipole
from cosmobench.cmb.methods.nilc_unet import NILCResidualData
from cosmobench.cmb.methods.regress import NILCRegress
from cosmobench.sky import sht


def highpass(m: np.ndarray, lmin: int, nside: int, lmax: int) -> np.ndarray:
    """The map's multipoles ``lmin <= ell <= lmax`` (the map itself for ``lmin`` 0)."""
    if lmin == 0:
        return m
    keep = (np.arange(lmax + 1) >= lmin).astype(float)
    return sht.alm2map(sht.almxfl(sht.map2alm(m, lmax, 3), keep), nside, lmax)


def rmse(pred: np.ndarray, truth: np.ndarray, mask: np.ndarray) -> float:
    """RMSE (uK_CMB) on ``mask`` after the monopole and dipole of the error are removed there."""
    return _rms(remove_monopole_dipole(pred - truth, mask), mask)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("root", help="dataset root holding the split's NILC maps under nilc/")
    parser.add_argument("model", help="a fitted nilc_regress model folder")
    parser.add_argument("--masks", required=True, help="folder of <split>/mask.fits (an evaluate run's results/)")
    parser.add_argument("--splits", nargs="+", default=["Test", "TestOOD"])
    parser.add_argument("--maps", type=int, default=5)
    parser.add_argument("--lmins", type=int, nargs="+", default=[0, 30, 100, 200])
    args = parser.parse_args()

    ds = CMBDataset(args.root)
    model = NILCRegress.load(args.model)
    view = NILCResidualData(ds, model.nilc)
    groups = {"T": model.config["groups"]["T"]}
    lmax = model.output_lmax_for(ds.nside)
    result = {"root": args.root, "model": args.model, "bands": groups["T"], "lmins": args.lmins, "splits": {}}
    for split in args.splits:
        mask = read_mask(f"{args.masks}/{split}/mask.fits", ds.nside) > 0
        rows = []
        for i in ds.sim_indices(split)[: args.maps]:
            terms = model._sim_terms(view, split, model.config["region_band"], groups, i)
            x, nilc, region = terms["x"]["T"][:, 0], terms["nilc"][0], terms["region"]
            truth = terms["r"][0] + nilc
            fit = region > 0
            fixed = nilc + region * (model.coefficients["T"] @ x)
            row = {"nilc": rmse(nilc, truth, mask), "fixed": rmse(fixed, truth, mask)}
            for lmin in args.lmins:
                xh = np.stack([highpass(xb, lmin, ds.nside, lmax) for xb in x])
                a = np.linalg.lstsq(xh[:, fit].T, -highpass(nilc, lmin, ds.nside, lmax)[fit], rcond=None)[0]
                row[f"per_map_lmin{lmin}"] = rmse(nilc + region * (a @ x), truth, mask)
            rows.append(row)
        result["splits"][split] = {k: float(np.mean([r[k] for r in rows])) for k in rows[0]} | {"maps": len(rows)}
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
