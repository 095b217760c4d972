"""Calibration of the learned per-pixel errors: Gaussian head (calibrated or not), deep ensembles and MC dropout.

Trains ``nilc_unet`` (the settings of ``cosmobench cmb config``'s ``methods.nilc_unet``, i.e. the preset's, with
``--set`` overrides as on the command line) on ``<root>``'s Train split (validated on Valid) several times:
Gaussian heads (``uncertainty="gaussian"``) and point models (``uncertainty="none"``), one per seed, and MC-dropout
models (``uncertainty="mc_dropout"``, first seed) for each ``--dropouts`` probability, all under ``--out``. The
dropout probability is chosen on the Valid split only: the lowest mean Gaussian negative log-likelihood of the truth
under the calibrated MC prediction over Valid's maps, fields and pixels (full sky), as Gal & Ghahramani (2016)
chose theirs by validation log-likelihood. On each test split it scores seven per-pixel errors:

``a_gaussian``
    the seed-0 Gaussian head with its validation calibration (``predict_with_std``);
``b_gaussian_uncalibrated``
    the same head with calibration factors 1;
``c_ensemble_gaussian``
    the deep ensemble of the Gaussian heads (Lakshminarayanan et al. 2017): mean of the means, variance = mean of
    the members' uncalibrated variances + variance of the means;
``c_ensemble_gaussian_calibrated``
    the same with the members' calibrated variances;
``d_ensemble_point``
    the ensemble of the point models: mean of the means, std = sample std (ddof 1) of the means;
``e_mc_dropout``
    the chosen MC-dropout model: mean and sample std of ``--mc-samples`` stochastic passes, times its validation
    calibration (``predict_with_std``);
``e_mc_dropout_uncalibrated``
    the same with calibration factors 1 (the raw spread of the passes).

Coverage is measured as ``cosmobench cmb evaluate`` measures it (``evaluate._native_truth``, ``evaluate._coverage``):
truth at the method's output beam and ``output_lmax``, pixels of the split's analysis mask
``<root>/results/<split>/mask.fits`` (run ``cosmobench cmb evaluate`` first), T and Q/U pooled, averaged over the
split's simulations (also listed per simulation). ``mean_std`` / ``rms_std`` / ``rms_resid`` compare the predicted
error with the actual residual on the same pixels (uK_CMB). The dataset root is only read, except that training
caches NILC on Train and Valid under ``<root>/nilc`` where it is missing. An existing run folder under ``--out`` is
resumed (``resumed`` true: its seconds are those of the missing epochs only).

    OMP_NUM_THREADS=1 python benchmarks/bench_uncertainty.py --root /tmp/cmb_def --out /tmp/unc2/models
    python benchmarks/bench_uncertainty.py --root data/cmb --set preset=bench128 --device cuda --threads 4
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from cosmobench.cli import load_config
from cosmobench.cmb.dataset import CMBDataset
from cosmobench.cmb.evaluate import _coverage, _native_truth, _rms, coverage_column
from cosmobench.cmb.methods.nilc_unet import NILCUNet
from cosmobench.cmb.separate import method_facts
from cosmobench.core.io import read_healpix
from cosmobench.core.runtime import apply_threads

SPLITS = ("Test", "TestOOD", "TestOOD2")
REPORTED = [coverage_column(k, f) for f in ("t", "p") for k in (1, 2)]  # cover1_t, cover2_t, cover1_p, cover2_p


def train(dataset: CMBDataset, settings: dict, out: Path) -> tuple[NILCUNet, dict]:
    """Train one ``nilc_unet`` into ``out`` (resuming a run there) and time it.

    Parameters
    ----------
    dataset : CMBDataset
        The dataset (Train and Valid splits).
    settings : dict
        Keyword settings of :class:`NILCUNet`.
    out : Path
        Run folder.

    Returns
    -------
    method : NILCUNet
        The trained method (best-validation weights; calibrated with a Gaussian head).
    facts : dict
        ``seed``, ``uncertainty``, ``dropout``, ``resumed``, ``cpu_s`` (process CPU seconds of the whole ``fit``:
        NILC cache check, array conversion, training, calibration), ``wall_s``, and from ``fit``:
        ``train_loop_s`` (the epochs' wall seconds), ``prepare_s``, ``best_val_loss``, ``std_calibration``.
    """
    method = NILCUNet(**settings)
    resumed = (out / "last.pt").is_file()
    cpu, wall = time.process_time(), time.perf_counter()
    fit = method.fit(dataset, out)
    return method, {
        "seed": settings["seed"],
        "uncertainty": settings["uncertainty"],
        "dropout": settings.get("dropout", 0.0),
        "resumed": resumed,
        "cpu_s": round(time.process_time() - cpu, 2),
        "wall_s": round(time.perf_counter() - wall, 2),
        "train_loop_s": round(fit["seconds"], 2),
        "prepare_s": round(fit["prepare_seconds"], 2),
        "best_val_loss": fit["best_val_loss"],
        "std_calibration": fit["std_calibration"],
    }


def ensemble(means: Sequence[np.ndarray], stds: Sequence[np.ndarray] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Mean and 1-sigma error of an ensemble's per-pixel predictions.

    Parameters
    ----------
    means : sequence of ndarray, same shape
        The members' predictions.
    stds : sequence of ndarray, optional
        The members' predicted standard deviations (Gaussian heads).

    Returns
    -------
    mean : ndarray
        The mean of the members' means.
    std : ndarray
        With ``stds``: the standard deviation of the equal-weight Gaussian mixture,
        ``sqrt(mean(std_m^2) + mean(mean_m^2) - mean^2)`` (Lakshminarayanan et al. 2017); without: the sample
        standard deviation (ddof 1) of the means.
    """
    stacked = np.stack(means)
    mean = stacked.mean(axis=0)
    if stds is None:
        return mean, stacked.std(axis=0, ddof=1)
    return mean, np.sqrt(np.mean(np.stack(stds) ** 2, axis=0) + stacked.var(axis=0))


def validation_nll(method: NILCUNet, dataset: CMBDataset, split: str = "Valid") -> float:
    """Mean Gaussian negative log-likelihood of the truth under a method's calibrated prediction.

    Parameters
    ----------
    method : NILCUNet
        A trained method with an uncertainty.
    dataset : CMBDataset
    split : str
        The split scored (the validation split: this chooses settings).

    Returns
    -------
    float
        ``0.5 log(2 pi std^2) + 0.5 (mean - truth)^2 / std^2`` (nats) averaged over the split's maps, the fields
        I, Q, U and every pixel (full sky), the truth in the method's output frame; std in uK_CMB, so only
        differences between methods are meaningful.
    """
    facts = method_facts(method, dataset.nside)
    frame = (facts["output_beam_arcmin"], facts["output_lmax"])
    nll = []
    for i in dataset.sim_indices(split):
        mean, std = method.predict_with_std(dataset.load_obs(split, i), dataset.channels)
        truth = _native_truth(dataset.load_target(split, i)[:3], *frame)
        nll.append(np.mean(0.5 * np.log(2 * np.pi * std**2) + 0.5 * ((mean - truth) / std) ** 2))
    return float(np.mean(nll))


def score(resid: np.ndarray, std: np.ndarray, mask: np.ndarray) -> dict:
    """Coverage and error scales of one variant on one split.

    Parameters
    ----------
    resid, std : ndarray, shape (nsim, 3, npix)
        Prediction minus truth (in the method's output frame) and the predicted 1-sigma error, I, Q, U, uK_CMB.
    mask : ndarray, shape (npix,)
        Analysis mask.

    Returns
    -------
    dict
        ``cover1_t``, ``cover2_t``, ``cover1_p``, ``cover2_p`` (mean over simulations), the same per simulation
        (``per_sim``), and per field group ``t`` (I) and ``p`` (Q and U pooled): ``mean_std``, ``rms_std`` and
        ``rms_resid`` over the masked pixels of all simulations.
    """
    per_sim = [_coverage(r, s, mask) for r, s in zip(resid, std)]
    out = {k: round(float(np.mean([c[k] for c in per_sim])), 4) for k in REPORTED}
    out["per_sim"] = {k: [round(c[k], 4) for c in per_sim] for k in REPORTED}
    for field, rows in (("t", slice(0, 1)), ("p", slice(1, 3))):
        out[field] = {
            "mean_std": round(float(np.mean(std[:, rows][..., mask > 0])), 4),
            "rms_std": round(_rms(std[:, rows], mask), 4),
            "rms_resid": round(_rms(resid[:, rows], mask), 4),
        }
    return out


def evaluate_split(
    dataset: CMBDataset,
    split: str,
    gaussian: list[NILCUNet],
    point: list[NILCUNet],
    mc: NILCUNet,
    mask: np.ndarray,
) -> dict:
    """Score every variant (see the module notes) on ``split``.

    Parameters
    ----------
    dataset : CMBDataset
    split : str
    gaussian : list of NILCUNet
        Trained Gaussian heads, the first one being variant (a).
    point : list of NILCUNet
        Trained point models (at least two).
    mc : NILCUNet
        The chosen trained MC-dropout model.
    mask : ndarray, shape (npix,)
        The split's analysis mask.

    Returns
    -------
    dict
        Variant name -> :func:`score`.
    """
    facts = method_facts(gaussian[0], dataset.nside)
    frame = (facts["output_beam_arcmin"], facts["output_lmax"])
    preds: dict[str, list[tuple[np.ndarray, np.ndarray]]] = {}
    truths = []
    for i in dataset.sim_indices(split):
        obs = dataset.load_obs(split, i)
        truths.append(_native_truth(dataset.load_target(split, i)[:3], *frame))
        members = [m.predict_with_std(obs, dataset.channels) for m in gaussian]
        raw = [s / np.sqrt(m.config["calibration"])[:, None] for m, (_, s) in zip(gaussian, members)]
        mc_mean, mc_std = mc.predict_with_std(obs, dataset.channels)
        variants = {
            "a_gaussian": members[0],
            "b_gaussian_uncalibrated": (members[0][0], raw[0]),
            "c_ensemble_gaussian": ensemble([mu for mu, _ in members], raw),
            "c_ensemble_gaussian_calibrated": ensemble(*zip(*members)),
            "d_ensemble_point": ensemble([m.predict(obs, dataset.channels) for m in point]),
            "e_mc_dropout": (mc_mean, mc_std),
            "e_mc_dropout_uncalibrated": (mc_mean, mc_std / np.sqrt(mc.config["calibration"])[:, None]),
        }
        for name, pred in variants.items():
            preds.setdefault(name, []).append(pred)
    truth = np.stack(truths)
    return {
        name: score(np.stack([mu for mu, _ in p]) - truth, np.stack([s for _, s in p]), mask)
        for name, p in preds.items()
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", required=True, help="dataset root (simulated, NILC'd and evaluated)")
    parser.add_argument("--out", default="/tmp/unc/models", help="folder of the trained models")
    parser.add_argument("--splits", nargs="*", default=list(SPLITS))
    parser.add_argument("--seeds", type=int, nargs="*", default=[0, 1, 2], help="ensemble seeds; the first is (a)")
    parser.add_argument("--dropouts", type=float, nargs="*", default=[0.1, 0.2], help="MC-dropout candidates")
    parser.add_argument("--mc-samples", type=int, default=20, help="stochastic passes of MC dropout")
    parser.add_argument("--set", nargs="*", default=[], help="cosmobench cmb config overrides, e.g. preset=tiny")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--threads", type=int, default=1, help="torch, BLAS and ducc0 threads")
    args = parser.parse_args()
    threads = apply_threads(args.threads)
    cpu0, wall0 = time.process_time(), time.perf_counter()
    root, out = Path(args.root), Path(args.out)
    dataset = CMBDataset(root)
    masks = {}
    for split in args.splits:
        path = root / "results" / split / "mask.fits"
        if not path.is_file():
            raise FileNotFoundError(f"{path} is missing; run `cosmobench cmb evaluate out_dir={root}` first")
        masks[split] = read_healpix(path, dtype=np.float64)
    preset = load_config("cmb", args.set)["methods"]["nilc_unet"]
    base = {**preset, "device": args.device, "progress": False, "cache_dir": str(out / "cache")}
    models: dict[str, list[NILCUNet]] = {"gaussian": [], "none": []}
    trainings = []
    for uncertainty, members in models.items():
        for seed in args.seeds:
            settings = {**base, "seed": seed, "uncertainty": uncertainty}
            method, facts = train(dataset, settings, out / f"{uncertainty}_s{seed}")
            members.append(method)
            trainings.append(facts)
    candidates, selection = [], {}
    for p in args.dropouts:
        seed = args.seeds[0]
        settings = {**base, "seed": seed, "uncertainty": "mc_dropout", "dropout": p, "mc_samples": args.mc_samples}
        method, facts = train(dataset, settings, out / f"mc_dropout_p{p:g}_s{seed}")
        candidates.append(method)
        trainings.append(facts)
        selection[f"{p:g}"] = round(validation_nll(method, dataset), 5)
    mc = candidates[int(np.argmin(list(selection.values())))]
    results = {
        split: evaluate_split(dataset, split, models["gaussian"], models["none"], mc, masks[split])
        for split in args.splits
    }
    print(
        json.dumps(
            {
                "benchmark": "bench_uncertainty",
                "root": str(root.resolve()),
                "splits": {split: len(dataset.sim_indices(split)) for split in ["Train", "Valid", *args.splits]},
                "nside": dataset.nside,
                "settings": {k: v for k, v in preset.items() if k not in ("seed", "uncertainty", "progress")},
                "overrides": args.set,
                "seeds": args.seeds,
                "mc_dropout": {
                    "valid_nll": selection,
                    "chosen_dropout": mc.settings.dropout,
                    "mc_samples": args.mc_samples,
                },
                "device": str(models["gaussian"][0].model.in_mean.device),
                "threads": threads,
                "trainings": trainings,
                "train_cpu_s": round(sum(t["cpu_s"] for t in trainings), 1),
                "total_cpu_s": round(time.process_time() - cpu0, 1),
                "total_wall_s": round(time.perf_counter() - wall0, 1),
                "results": results,
            },
            indent=1,
        )
    )


if __name__ == "__main__":
    main()
