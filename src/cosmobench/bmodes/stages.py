"""Stages of ``cosmobench bmodes <stage>``: simulate, train, sample, infer, run.

Each stage turns its settings (:mod:`cosmobench.bmodes.settings`, the sections of ``conf/bmodes.yaml``) into
library calls under the stage contract of :mod:`cosmobench.core.stage`: validate, check the record, work, record
the outputs. Layout of ``out_dir``::

    data/               the dataset (:mod:`cosmobench.bmodes.store`)
    model/              model.pt (the trained score model), last.pt/best.pt, history.csv/.json, loss.png
    samples/<split>/    <mode>/r{r}/denoised.npy, draws.npy, metrics.json, figures; prior_check.*; summary.json
    infer/<split>/      r_table.md, r_table.json, estimates_r{r}.npz, r_estimates.png
    report.md

``<split>`` is ``val`` (fixed-r validation sets: every choice is made there) or ``test`` (the final table).
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from ..core.io import read_json, write_json, write_npy, write_npz, write_text
from ..core.runtime import apply_threads, resolve_device
from ..core.settings import as_dict, build
from ..core.stage import RUNTIME_KEYS, Stage, identity, require
from . import ood
from .settings import (
    CheckSettings,
    CompareSettings,
    InferSettings,
    SampleSettings,
    SimulateSettings,
    TrainSettings,
)
from .store import SPLITS, check_resources, load_metadata, set_files, write_dataset

__all__ = ["simulate", "train", "sample", "infer", "check", "compare", "run"]

_SAMPLERS = ("em", "ode", "pc")


def _command(stage: str, out_dir: str) -> str:
    return f"cosmobench bmodes {stage} out_dir={out_dir}"


def _require_data(out_dir: str) -> dict:
    return require(Path(out_dir) / "data", "bmodes.simulate", _command("simulate", out_dir), what="the dataset")


def _require_model(out_dir: str) -> dict:
    return require(Path(out_dir) / "model", "bmodes.train", _command("train", out_dir), what="the trained score model")


def _recorded(settings) -> dict:
    return {k: v for k, v in as_dict(settings).items() if k not in RUNTIME_KEYS}


# ---------------------------------------------------------------------------------------------- simulate
def simulate(**settings) -> dict:
    """Simulate the spectra dataset: amortised train/val pairs, fixed-r validation and test pairs.

    Parameters
    ----------
    **settings
        Fields of :class:`~cosmobench.bmodes.settings.SimulateSettings`.

    Returns
    -------
    dict
        Data folder, file count, the Fisher sigma(r) of each fixed r, seconds; ``skipped`` when already done.
    """
    s = build(SimulateSettings, settings)
    if not s.r_max > 0:
        raise ValueError(f"r_max must be positive, got {s.r_max}")
    if any(not np.isfinite(r) or r < 0 for r in s.r_test):
        raise ValueError(f"r_test values must be finite and >= 0, got {list(s.r_test)}")
    if min(s.n_train, s.n_val) < 1 or s.n_test < 0 or s.n_train_per_r < 0:
        raise ValueError("n_train and n_val must be >= 1, n_test and n_train_per_r >= 0")
    if s.cosmology is not None:
        from ..sky.cosmology import Cosmology

        Cosmology(**dict(s.cosmology))  # unknown keys fail here, before any work
    data = Path(s.out_dir) / "data"
    check_resources(s, data)
    stage = Stage(data, "bmodes.simulate", as_dict(s), command=_command("simulate", s.out_dir))
    if (done := stage.start(overwrite=s.overwrite)) is not None:
        return done
    apply_threads(s.threads)
    t0 = time.perf_counter()
    meta = write_dataset(s, data)
    summary = {
        "data_dir": str(data),
        "files": len(meta["files"]),
        "fisher_sigma_r": meta["fisher_sigma_r"],
        "seconds": round(time.perf_counter() - t0, 1),
    }
    return stage.finish(summary, outputs=[data])


# ------------------------------------------------------------------------------------------------ train
def train(**settings) -> dict:
    """Train the (conditional) score model on the amortised pairs.

    Parameters
    ----------
    **settings
        Fields of :class:`~cosmobench.bmodes.settings.TrainSettings`.

    Returns
    -------
    dict
        Losses, epochs, seconds, the model path; ``skipped`` when already trained with these settings.
    """
    from .dataset import dl_factor
    from .figures import plot_loss
    from .train import train_score_model

    s = build(TrainSettings, settings)
    device = resolve_device(s.device)
    data_record = _require_data(s.out_dir)
    data = Path(s.out_dir) / "data"
    meta, model_spectra = load_metadata(data)
    folder = Path(s.out_dir) / "model"
    stage = Stage(
        folder, "bmodes.train", as_dict(s), {"data": identity(data_record)}, command=_command("train", s.out_dir)
    )
    if (done := stage.start(overwrite=s.overwrite)) is not None:
        return done
    apply_threads(s.threads)
    arrays = [np.load(data / f"dl_{k}.npy") for k in ("gt_train", "noisy_train", "gt_val", "noisy_val")]
    template_dl = np.asarray(model_spectra["cl_tensor_obs"]) * dl_factor(np.asarray(model_spectra["ell"]))
    recorded = _recorded(s)
    options = {k: v for k, v in recorded.items() if k not in ("out_dir",)}
    config = {"train": recorded, "data": meta["settings"], "r_max": meta["r_max"]}
    summary = train_score_model(
        folder, *arrays, template_dl, device=device, config=config, progress=s.progress, **options
    )
    plot_loss(read_json(folder / "history.json"), folder / "loss.png")
    return stage.finish(summary, outputs=[folder / "model.pt", folder / "history.json"])


# ----------------------------------------------------------------------------------------------- sample
def sample(**settings) -> dict:
    """Denoise the fixed-r sets of one split: posterior draws per observed spectrum, MSE, figures.

    Parameters
    ----------
    **settings
        Fields of :class:`~cosmobench.bmodes.settings.SampleSettings`.

    Returns
    -------
    dict
        Per mode and r: MSE of the denoised spectra and of the baselines; the prior check; throughput.
    """
    from tqdm.auto import tqdm

    from .conditional import MODES, denoise_spectra
    from .dataset import dl_factor, r_label
    from .evaluation import mse_table, prior_check
    from .figures import plot_aggregate, plot_prior_check, plot_spectra, plot_trajectories
    from .infer import exact_estimates
    from .train import load_score_model

    s = build(SampleSettings, settings)
    unknown = [m for m in s.modes if m not in MODES]
    if unknown:
        raise ValueError(f"unknown modes {unknown}; expected some of {list(MODES)}")
    if s.sampler not in _SAMPLERS:
        raise ValueError(f"unknown sampler {s.sampler!r}; expected one of {list(_SAMPLERS)}")
    if s.split not in SPLITS:
        raise ValueError(f"split must be one of {list(SPLITS)} (fixed-r validation or test sets), got {s.split!r}")
    if s.n_draws < 1 or s.n_steps < 1:
        raise ValueError(f"n_draws and n_steps must be >= 1, got {s.n_draws} and {s.n_steps}")
    device = resolve_device(s.device)
    inputs = {"data": identity(_require_data(s.out_dir)), "model": identity(_require_model(s.out_dir))}
    data = Path(s.out_dir) / "data"
    meta, model_spectra = load_metadata(data)
    r_values = meta["r_test"] if s.r_values is None else [float(r) for r in s.r_values]
    missing = sorted(set(r_values) - set(meta["r_test"]))
    if missing:
        raise ValueError(f"r_values {missing} are not fixed-r sets of {data}; it has {meta['r_test']}")
    reference = np.load(data / "dl_noisy_train.npy")
    for r in r_values:
        obs_name = set_files(s.split, r)[1]
        ood.check(np.load(data / obs_name)[: s.n_spectra], reference, meta["ell"], data / obs_name, s.ood_alpha)
    model, tx, ty, ckpt = load_score_model(Path(s.out_dir) / "model" / "model.pt", device)
    if "conditional" in s.modes and not ckpt["conditional"]:
        raise ValueError(
            "the trained model is unconditional; drop 'conditional' from modes or retrain with conditional=true"
        )
    folder = Path(s.out_dir) / "samples" / s.split
    stage = Stage(folder, "bmodes.sample", as_dict(s), inputs, command=_command("sample", s.out_dir))
    if (done := stage.start(overwrite=s.overwrite)) is not None:
        return done
    apply_threads(s.threads)
    opts = {"n_steps": int(s.n_steps), **s.sampler_options}
    ell = np.asarray(meta["ell"])
    template_dl = np.asarray(model_spectra["cl_tensor_obs"]) * dl_factor(ell)
    contamination_dl = np.asarray(model_spectra["cl_other"]) * dl_factor(ell)
    summary: dict = {"split": s.split, "sampler": s.sampler, "options": opts, "n_draws": s.n_draws, "results": {}}
    for r in r_values:
        gt_name, obs_name = set_files(s.split, r)
        gt, obs = np.load(data / gt_name)[: s.n_spectra], np.load(data / obs_name)[: s.n_spectra]
        r_ml = exact_estimates(obs, model_spectra, r_max=10 * meta["r_max"])["r_hat"]  # template projection
        for mode in s.modes:
            sub = folder / mode / f"r{r_label(r)}"
            key = f"{mode}/r{r_label(r)}"
            if (sub / "metrics.json").exists():  # finished in an interrupted run of these same settings
                summary["results"][key] = read_json(sub / "metrics.json")
                continue
            bar = tqdm(total=len(obs) * s.n_draws, desc=f"sample {key}", unit="traj", disable=not s.progress)
            t0 = time.perf_counter()
            with bar:
                res = denoise_spectra(
                    model,
                    tx,
                    ty,
                    obs,
                    mode=mode,
                    sampler=s.sampler,
                    n_draws=s.n_draws,
                    sampler_options=opts,
                    chunk_size=s.chunk_size,
                    seed=s.seed,
                    tag=f"{s.split}-{r_label(r)}" if s.split != "test" else r_label(r),
                    device=device,
                    trajectory_every=s.trajectory_every,
                    reduced_precision=s.reduced_precision,
                    progress=bar.update,
                )
            seconds = time.perf_counter() - t0
            draws = res["draws"]
            mean = draws.mean(1)
            metrics = {
                "mode": mode,
                "r": r,
                "n_spectra": len(obs),
                "n_draws": s.n_draws,
                "seconds": seconds,
                "nfe_per_trajectory": res["nfe"],
                "spectra_steps_per_s": len(obs) * s.n_draws * opts["n_steps"] / seconds,
                **mse_table(gt, obs, mean, draws[:, 0], contamination_dl, template_dl, r_ml),
            }
            write_npy(sub / "denoised.npy", mean)
            if s.n_draws > 1:
                write_npy(sub / "draws.npy", draws)
            plot_spectra(ell, gt, obs, draws, template_dl, sub / "spectra.png", title=f"{mode} r={r_label(r)}")
            plot_aggregate(ell, gt, obs, mean, template_dl, sub / "aggregate.png", title=f"{mode} r={r_label(r)}")
            if "trajectory" in res:
                write_npz(sub / "trajectory.npz", times=res["times"], trajectory=res["trajectory"])
                plot_trajectories(res["times"], res["trajectory"], ell, sub / "trajectories.png", title=key)
            write_json(sub / "metrics.json", metrics)
            summary["results"][key] = metrics
    if s.n_prior_check:
        x_true = tx.forward(np.load(data / "dl_gt_val.npy"))[: s.n_prior_check]
        res = denoise_spectra(
            model,
            tx,
            ty,
            np.ones((len(x_true), len(ell))),
            mode="unconditional",
            sampler=s.sampler,
            n_draws=1,
            trajectory_every=0,
            sampler_options=opts,
            chunk_size=s.chunk_size,
            seed=s.seed,
            tag="prior-check",
            device=device,
        )
        summary["prior_check"] = prior_check(x_true, res["x"][:, 0])
        write_json(folder / "prior_check.json", summary["prior_check"])
        plot_prior_check(ell, x_true, res["x"][:, 0], folder / "prior_check.png")
    write_json(folder / "summary.json", summary)
    return stage.finish(summary, outputs=[folder])


# ------------------------------------------------------------------------------------------------ infer
_PLOTTED = {"exact": "exact", "diffusion_median": "diffusion"}


def infer(**settings) -> dict:
    """Estimate r on every sampled fixed-r set: exact likelihood, diffusion posterior, oracle; table vs Fisher.

    Parameters
    ----------
    **settings
        Fields of :class:`~cosmobench.bmodes.settings.InferSettings`.

    Returns
    -------
    dict
        ``rows`` (one per r and estimator), ``table`` (Markdown), the folder.
    """
    from ..core.seeds import rng as stream
    from .dataset import r_label
    from .figures import plot_r_estimates
    from .infer import (
        diffusion_estimates,
        exact_estimates,
        exact_posterior_estimates,
        oracle_estimates,
        r_table_markdown,
        score_estimates,
    )

    s = build(InferSettings, settings)
    if s.split not in SPLITS:
        raise ValueError(f"split must be one of {list(SPLITS)}, got {s.split!r}")
    data_record = _require_data(s.out_dir)
    samples = Path(s.out_dir) / "samples" / s.split
    samples_record = require(
        samples, "bmodes.sample", f"{_command('sample', s.out_dir)} sample.split={s.split}", what="the sampled draws"
    )
    data = Path(s.out_dir) / "data"
    meta, model_spectra = load_metadata(data)
    folder = Path(s.out_dir) / "infer" / s.split
    inputs = {"data": identity(data_record), "samples": identity(samples_record)}
    stage = Stage(folder, "bmodes.infer", as_dict(s), inputs, command=_command("infer", s.out_dir))
    if (done := stage.start(overwrite=s.overwrite)) is not None:
        return done
    rows, hist = [], {}
    sampled = {float(v["r"]) for k, v in samples_record["summary"]["results"].items() if k.startswith(f"{s.mode}/")}
    for r in meta["r_test"]:
        label = r_label(r)
        sigma_f = float(meta["fisher_sigma_r"][label])
        gt_name, obs_name = set_files(s.split, r)
        gt, obs = np.load(data / gt_name), np.load(data / obs_name)
        bayes = exact_posterior_estimates(obs, model_spectra, r_max=meta["r_max"])
        est = {
            "exact": exact_estimates(obs, model_spectra, r_max=s.r_max_search),
            "exact_bayes_median": {"r_hat": bayes["median"], **_intervals(bayes)},
            "oracle": oracle_estimates(gt, model_spectra),
        }
        draws_path = samples / s.mode / f"r{label}" / "draws.npy"
        if float(r) in sampled and draws_path.exists():
            d = diffusion_estimates(
                np.load(draws_path),
                model_spectra,
                r_max=meta["r_max"],
                n_per_draw=s.n_per_draw,
                rng=stream(s.seed, "bmodes-infer", s.split, label),
            )
            for point in ("mean", "median"):
                est[f"diffusion_{point}"] = {"r_hat": d[point], **_intervals(d)}
            est["diffusion_ml"] = d["ml"]
        n_used = min(len(v["r_hat"]) for v in est.values())
        hist[label] = {"r0": float(r), "sigma_fisher": sigma_f}
        for name, e in est.items():
            sc = score_estimates(e["r_hat"][:n_used], float(r), sigma_f, e)
            rows.append({"r0": float(r), "estimator": name, "sigma_fisher": sigma_f, **sc})
            if name in _PLOTTED:
                hist[label][_PLOTTED[name]] = e["r_hat"][:n_used]
        write_npz(folder / f"estimates_r{label}.npz", **{f"{k}_{q}": v[q] for k, v in est.items() for q in v})
    table = r_table_markdown(rows)
    write_text(folder / "r_table.md", table)
    write_json(folder / "r_table.json", rows)
    plot_r_estimates(hist, folder / "r_estimates.png")
    return stage.finish({"rows": rows, "table": table, "folder": str(folder)}, outputs=[folder])


def _intervals(summary: dict) -> dict:
    return {k: summary[k] for k in ("lo", "hi", "lo95", "hi95")}


# ------------------------------------------------------------------------------------------------ check
def check(**settings) -> dict:
    """Compare spectra files (e.g. the prototype's) with the training distribution; warn on the ones outside it.

    Parameters
    ----------
    **settings
        Fields of :class:`~cosmobench.bmodes.settings.CheckSettings`.

    Returns
    -------
    dict
        Per file: spectra count, how many lie outside the training distribution, the largest per-ell z-scores.
    """
    import sys

    s = build(CheckSettings, settings)
    if s.kind not in ("observed", "clean"):
        raise ValueError(f"kind must be 'observed' or 'clean', got {s.kind!r}")
    if not s.files:
        raise ValueError("no files to check; pass files=[path/dl_noisy_r0.01.npy, ...]")
    _require_data(s.out_dir)
    data = Path(s.out_dir) / "data"
    meta, _ = load_metadata(data)
    reference = np.load(data / ("dl_noisy_train.npy" if s.kind == "observed" else "dl_gt_train.npy"))
    arrays = {}
    for name in s.files:
        arrays[name] = _load_spectra(Path(name), len(meta["ell"]))
    out = {}
    for name, dl in arrays.items():
        out[name] = ood.summary(dl, reference, meta["ell"])
        if out[name]["flagged"]:
            print(
                f"cosmobench: warning: {out[name]['flagged']} of {out[name]['n']} spectra in {name} lie outside the "
                f"training distribution (largest |z| {out[name]['worst_max_abs_z']:.3g} > "
                f"{out[name]['threshold_max_abs_z']:.3g})",
                file=sys.stderr,
            )
    return {"reference": f"{data}/dl_{'noisy' if s.kind == 'observed' else 'gt'}_train.npy", "files": out}


def _load_spectra(path: Path, n_ell: int) -> np.ndarray:
    """A (n, n_ell) array of D_l from ``path``, or an error naming the file, the problem and the fix."""
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist")
    try:
        dl = np.load(path, allow_pickle=False)
    except ValueError as err:
        raise ValueError(f"{path} is not a .npy array of spectra ({err})") from None
    if dl.ndim != 2 or dl.shape[1] != n_ell:
        raise ValueError(
            f"{path} has shape {dl.shape}; expected (n_spectra, {n_ell}): one D_l per multipole of the dataset"
        )
    bad = int((~np.isfinite(dl)).sum())
    if bad:
        raise ValueError(f"{path} holds {bad} NaN/inf values; remove those spectra first")
    return dl


# ---------------------------------------------------------------------------------------------- compare
def compare(**settings) -> dict:
    """The r table over several runs (training seeds) with the spread between them.

    Parameters
    ----------
    **settings
        Fields of :class:`~cosmobench.bmodes.settings.CompareSettings`.

    Returns
    -------
    dict
        ``rows`` (mean and spread per r and estimator), ``table`` (Markdown), the folder.
    """
    from .infer import seed_table, seed_table_markdown

    s = build(CompareSettings, settings)
    if len(s.runs) < 2:
        raise ValueError(f"compare needs at least two runs (e.g. three training seeds), got {list(s.runs)}")
    records = {
        run: require(
            Path(run) / "infer" / s.split,
            "bmodes.infer",
            f"cosmobench bmodes run out_dir={run} split={s.split}",
            what=f"the r table of {run}",
        )
        for run in s.runs
    }
    folder = Path(s.out_dir) / "compare" / s.split
    inputs = {run: identity(rec) for run, rec in records.items()}
    stage = Stage(folder, "bmodes.compare", as_dict(s), inputs, command=_command("compare", s.out_dir))
    if (done := stage.start(overwrite=s.overwrite)) is not None:
        return done
    rows = seed_table([read_json(Path(run) / "infer" / s.split / "r_table.json") for run in s.runs])
    table = seed_table_markdown(rows)
    write_json(folder / "r_table_runs.json", rows)
    write_text(folder / "r_table_runs.md", table)
    return stage.finish({"rows": rows, "table": table, "runs": list(s.runs)}, outputs=[folder])


# -------------------------------------------------------------------------------------------------- run
def run(config: dict) -> dict:
    """The whole pipeline: simulate, train, sample, infer; writes ``out_dir/report.md``.

    Parameters
    ----------
    config : dict
        The resolved configuration (sections ``simulate``, ``train``, ``sample``, ``infer``).

    Returns
    -------
    dict
        A short summary of every stage and the report's path.
    """
    from .report import write_report

    missing = [k for k in ("simulate", "train", "sample", "infer") if k not in config]
    if missing:
        raise ValueError(f"the configuration lacks the sections {missing}")
    t0 = time.perf_counter()
    out = {
        "simulate": simulate(**config["simulate"]),
        "train": train(**config["train"]),
        "sample": sample(**config["sample"]),
        "infer": infer(**config["infer"]),
    }
    report = write_report(config["infer"]["out_dir"], out["sample"], out["infer"], time.perf_counter() - t0)
    return {
        "report": str(report),
        "seconds": round(time.perf_counter() - t0, 1),
        "fisher_sigma_r": out["simulate"]["fisher_sigma_r"],
        "r_table": out["infer"]["table"],
        "train": {k: out["train"].get(k) for k in ("epochs", "best_val_loss", "seconds", "skipped")},
    }
