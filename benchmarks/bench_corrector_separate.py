"""Cost of separating with a NILC corrector: NILC computed again per map, against NILC's recorded map read back.

``cosmobench cmb separate`` of a corrector (``nilc_unet``, ``regress_unet``, ``nilc_regress``, ``nilc_wiener``)
hands each map's cached NILC prediction (``<root>/nilc/<split>``, float32 FITS, the maps the corrector was trained
on) to ``predict`` under the ``"nilc"`` key; the reference is ``predict`` on the observed maps alone, which runs
NILC first. Both run side by side in this process on the same maps of a finished run (its trained models and
NILC's predictions of the split). Prints one JSON object: per method, median wall and CPU seconds per map of
each path, their ratio, and the largest difference between the two predictions (uK_CMB: NILC's float32 rounding).

    python benchmarks/bench_corrector_separate.py ROOT --split Test --maps 5
    python benchmarks/bench_corrector_separate.py ROOT --methods regress_unet --model-root OTHER_ROOT
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from functools import partial
from pathlib import Path

import numpy as np

from cosmobench.cmb.dataset import CMBDataset
from cosmobench.cmb.methods import get_method
from cosmobench.cmb.separate import model_dir, predict_maps, with_base_map
from cosmobench.core.runtime import apply_threads

CORRECTORS = ("nilc_regress", "nilc_wiener", "nilc_unet", "regress_unet")


def timed(fn) -> tuple[float, float, object]:
    """Wall and CPU seconds of ``fn()`` and its value."""
    w0, c0 = time.perf_counter(), time.process_time()
    out = fn()
    return time.perf_counter() - w0, time.process_time() - c0, out


def predict_cached(model, dataset: CMBDataset, split: str, i: int, obs: dict, channels: list, what: str):
    """``cmb separate``'s path: NILC's recorded map of simulation ``i`` read back and handed to the corrector."""
    return predict_maps(model, with_base_map(obs, model, dataset.root, split, i), channels, what=what)


def bench_method(dataset: CMBDataset, method: str, folder: Path, split: str, indices: list[int]) -> dict:
    """Both paths of one trained corrector over ``indices`` of ``split``."""
    model = get_method(method).load(folder)
    bands = list(getattr(model, "bands", None) or dataset.bands)
    computed, cached, diff = [], [], 0.0
    for i in indices:
        obs = dataset.load_obs(split, i, bands)
        channels = [dataset.channel(b) for b in obs]
        what = f"{method}, {split} simulation {i}"
        wall_a, cpu_a, (mean_a, _) = timed(partial(predict_maps, model, obs, channels, what=what))
        wall_b, cpu_b, (mean_b, _) = timed(partial(predict_cached, model, dataset, split, i, obs, channels, what))
        computed.append((wall_a, cpu_a))
        cached.append((wall_b, cpu_b))
        diff = max(diff, float(np.max(np.abs(mean_a - mean_b))))

    def median(rows: list, k: int) -> float:
        return round(statistics.median(r[k] for r in rows), 4)

    out = {
        "nilc_computed": {"wall_s": median(computed, 0), "cpu_s": median(computed, 1)},
        "nilc_cached": {"wall_s": median(cached, 0), "cpu_s": median(cached, 1)},
        "max_abs_difference_uK": diff,
    }
    out["cpu_ratio_computed_over_cached"] = round(out["nilc_computed"]["cpu_s"] / out["nilc_cached"]["cpu_s"], 2)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("root", type=Path, help="a finished run: Simulations, nilc/<split>, trained correctors")
    parser.add_argument("--split", default="Test")
    parser.add_argument("--maps", type=int, default=5, help="first N simulations of the split")
    parser.add_argument("--methods", nargs="+", default=list(CORRECTORS))
    parser.add_argument("--model-root", type=Path, default=None, help="where the models are (default: root)")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    apply_threads(args.threads)
    dataset = CMBDataset(args.root)
    indices = dataset.sim_indices(args.split)[: args.maps]
    runs = {}
    for method in args.methods:
        folder = model_dir(args.model_root or args.root, method)
        if (folder / "model.pt").is_file():  # the correctors the run trained
            runs[method] = bench_method(dataset, method, folder, args.split, indices)
    print(
        json.dumps(
            {
                "benchmark": "corrector_separate",
                "root": str(args.root),
                "nside": dataset.nside,
                "split": args.split,
                "maps": len(indices),
                "threads": args.threads,
                "methods": runs,
            },
            indent=1,
        )
    )


if __name__ == "__main__":
    main()
