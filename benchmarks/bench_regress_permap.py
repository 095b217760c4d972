"""Can NILC's linear correction be fitted on each map without the truth? Per-map against fixed coefficients.

``nilc_regress`` corrects NILC with ``region * sum_b a_b x_b`` (x_b: band-minus-NILC maps at NILC's beam), its
coefficients fitted once on the Train split against the true residual; on a foreground model it never saw they can
make the map worse (docs/results.md, sessions 16-17). The data-only alternative fits the temperature coefficients on
each map alone, minimising the variance of the corrected map over the correction region, on the multipoles
``>= lmin`` only to keep the large-scale CMB out of the fit, and applies them to the whole maps. x_b = band - NILC
holds no CMB at unit response, but it holds NILC's residual, which NILC's ILC bias correlates with the CMB.

The one-parameter version keeps the fixed correction c = region * sum_b a_b x_b and fits only its scale on each
map, ``scale = -<c, NILC> / <c, c>`` on the same pixels and multipoles (the variance-minimising scale;
``_clipped``: limited to [0, 1], the data may only shrink the correction). Beside it: the scale fitted against the
truth, ``<c, r> / <c, c>`` (r = CMB - NILC); the CMB's part of the data's scale, ``-<c, s> / <c, c>`` (s the true
CMB; the data's scale is the sum of the two); and the regression on the CMB of NILC's error and of the fixed
correction's, ``<e, s> / <s, s>`` with e = -r and c - r (-(N_ch - 1)/N_modes for an ILC's bias, about 0 for an
error independent of the CMB; tests/cmb/test_ilc.py).

Scored like ``cosmobench cmb evaluate``'s temperature rows: RMSE (uK_CMB) against the truth at NILC's beam and band
limit, monopole and dipole removed, on the split's analysis mask ``<masks>/<split>/mask.fits`` (``<out_dir>/results``
of an evaluate run). Prints one JSON object: per split, the mean over the first ``--maps`` maps of NILC, the fixed
coefficients and, for each ``lmin``, the per-map fits and the scales.

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


def regress_parser(doc: str, maps: int) -> argparse.ArgumentParser:
    """The arguments of the per-map benchmarks of a fitted ``nilc_regress``: root, model, masks, splits, maps."""
    parser = argparse.ArgumentParser(description=doc.splitlines()[0])
    parser.add_argument("root", help="dataset root holding the splits' NILC maps under nilc/")
    parser.add_argument("model", help="a fitted nilc_regress model folder")
    parser.add_argument("--masks", required=True, help="folder of <split>/mask.fits (an evaluate run's results/)")
    parser.add_argument("--splits", nargs="+", default=["Test", "TestOOD"])
    parser.add_argument("--maps", type=int, default=maps, help="maps per split")
    return parser


def main() -> None:
    parser = regress_parser(__doc__, maps=5)
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
            c = region * (model.coefficients["T"] @ x)
            row = {"nilc": rmse(nilc, truth, mask), "fixed": rmse(nilc + c, truth, mask)}
            for lmin in args.lmins:
                xh = np.stack([highpass(xb, lmin, ds.nside, lmax) for xb in x])
                nh, ch, rh, sh = (highpass(m, lmin, ds.nside, lmax)[fit] for m in (nilc, c, terms["r"][0], truth))
                a = np.linalg.lstsq(xh[:, fit].T, -nh, rcond=None)[0]
                row[f"per_map_lmin{lmin}"] = rmse(nilc + region * (a @ x), truth, mask)
                scale = -float(ch @ nh) / float(ch @ ch)
                row[f"scale_data_lmin{lmin}"] = scale
                row[f"scale_truth_lmin{lmin}"] = float(ch @ rh) / float(ch @ ch)
                row[f"scale_cmb_part_lmin{lmin}"] = -float(ch @ sh) / float(ch @ ch)
                row[f"nilc_error_on_cmb_lmin{lmin}"] = -float(rh @ sh) / float(sh @ sh)
                row[f"fixed_error_on_cmb_lmin{lmin}"] = float((ch - rh) @ sh) / float(sh @ sh)
                row[f"scaled_lmin{lmin}"] = rmse(nilc + scale * c, truth, mask)
                row[f"scaled_clipped_lmin{lmin}"] = rmse(nilc + np.clip(scale, 0.0, 1.0) * c, truth, mask)
            rows.append(row)
        result["splits"][split] = {k: float(np.mean([r[k] for r in rows])) for k in rows[0]} | {"maps": len(rows)}
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
