"""Where a learned temperature map errs: inside each map's loss region, and in the rest of the evaluation mask.

A method trained with ``loss_fsky < 1`` is fitted on each map's faintest ``loss_fsky`` of its highest-frequency
intensity (:func:`~cosmobench.cmb.methods.loss_region.correction_region`), while ``cosmobench cmb evaluate`` scores
the split's analysis mask (``<root>/results/<split>/mask.fits``, made from the foreground template): the two differ
by a few per cent of the sky. For each root (a dataset root with the method's predictions of ``split``) and each of
the first ``--maps`` maps, the T residual (prediction minus the unbeamed truth) is smoothed by a Gaussian of
``--beam`` arcmin and its RMS taken on the mask inside the map's region and on the mask outside it (no
apodisation, monopole and dipole kept: a diagnostic, not the evaluation's RMSE). Prints one JSON object: per root,
the means over the maps of both RMS values (uK_CMB) and the mean fraction of the sky in each part.

    OMP_NUM_THREADS=1 python benchmarks/bench_loss_region.py <root> <root_m0> --method deepsphere --split Valid
"""

from __future__ import annotations

import argparse
import json

import numpy as np

from cosmobench.cmb.dataset import CMBDataset, pred_path
from cosmobench.cmb.masks import read_mask
from cosmobench.cmb.methods.loss_region import map_region
from cosmobench.core.io import read_healpix
from cosmobench.sky import sht


def region_residuals(root: str, method: str, split: str, maps: int, fsky: float, smooth_deg: float, beam: float):
    """Mean over the maps of the RMS inside / outside the region on the mask, and the parts' sky fractions."""
    data = CMBDataset(root)
    mask = read_mask(f"{root}/results/{split}/mask.fits", data.nside) > 0
    rows = []
    for i in data.sim_indices(split)[:maps]:
        region = map_region(data, split, i, {"fsky": fsky, "smooth_deg": smooth_deg})
        pred = np.atleast_2d(read_healpix(pred_path(root, method, split, i), dtype=np.float64))[0]
        resid = sht.smooth(pred - data.load_target(split, i)[0], beam, lmax=3 * data.nside - 1)
        parts = (mask & region, mask & ~region)
        rows.append([*(float(np.sqrt(np.mean(resid[p] ** 2))) for p in parts), *(float(p.mean()) for p in parts)])
    inside, outside, f_in, f_out = np.mean(rows, axis=0)
    return {"rms_inside": inside, "rms_outside": outside, "fsky_inside": f_in, "fsky_outside": f_out}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("roots", nargs="+")
    parser.add_argument("--method", default="deepsphere")
    parser.add_argument("--split", default="Valid")
    parser.add_argument("--maps", type=int, default=3)
    parser.add_argument("--fsky", type=float, default=0.8, help="the region's sky fraction (loss_fsky)")
    parser.add_argument("--smooth-deg", type=float, default=2.0, help="loss_smooth_deg")
    parser.add_argument("--beam", type=float, default=20.6, help="FWHM of the residual's smoothing, arcmin")
    args = parser.parse_args()
    result = {
        root: region_residuals(root, args.method, args.split, args.maps, args.fsky, args.smooth_deg, args.beam)
        for root in args.roots
    }
    settings = {k: v for k, v in vars(args).items() if k != "roots"}
    print(json.dumps({"settings": settings, "uK_CMB": result}, indent=2))


if __name__ == "__main__":
    main()
