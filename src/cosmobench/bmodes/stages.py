"""Stages of ``cosmobench bmodes <stage>``: simulate, train, sample, infer, run.

Every stage is a plain function of keyword arguments (the sections of ``conf/bmodes.yaml``), writes under
``out_dir`` atomically, skips finished work on rerun and returns a JSON-ready summary. Layout of ``out_dir``::

    data/     metadata.json, templates.npz, model_spectra.json,
              dl_gt_train.npy, dl_noisy_train.npy, r_train.npy (and _val): amortised pairs, r ~ U[0, r_max]
              dl_gt_r{r}.npy, dl_noisy_r{r}.npy: test pairs at fixed r; dl_train_r{r}.npy: clean spectra at r
    model/    model.pth, last.pt, best.pt, history.csv, history.json, training_loss.npy, loss.png
    samples/  <mode>/r{r}/denoised.npy (posterior mean), draws.npy, metrics.json, spectra.png,
              trajectories.png; prior_check.json and .png; summary.json
    infer/    r_table.md, r_table.json, estimates_r{r}.npz, r_estimates.png
    report.md
"""

from __future__ import annotations

import functools
import inspect
import time
from pathlib import Path

import numpy as np

from ..core.executor import map_tasks
from ..core.io import CorruptFileError, atomic_path, check_writable, read_json, write_json, write_npy
from ..core.seeds import rng as stream

__all__ = ["simulate", "train", "sample", "infer", "run"]

DEFAULT_R_TEST = (0.0, 0.001, 0.005, 0.01)


# ---------------------------------------------------------------------------------------------- simulate
def _simulate_chunk(item: tuple) -> np.ndarray:
    """Worker: (simulator settings, templates, seed, split, start, r values) -> (n, 2, n_ell) array."""
    from .dataset import BModeSimulator

    settings, cl_tensor, cl_lens, seed, split, start, r_values = item
    sim = BModeSimulator(cl_tensor=cl_tensor, cl_lens=cl_lens, **settings)
    return sim.simulate_many(r_values, seed, split, start)


def simulate(
    out_dir: str,
    seed: int = 0,
    nside: int = 16,
    r_test: list[float] = DEFAULT_R_TEST,
    n_test: int = 100,
    n_train: int = 4000,
    n_val: int = 300,
    r_max: float = 0.02,
    n_train_per_r: int = 0,
    ell_min: int = 2,
    ell_max: int | None = None,
    beam_fwhm_arcmin: float = 24.8,
    noise_depth: float = 11.9,
    fg_fraction: float = 1e-4,
    fg_freq_ghz: float = 95.0,
    fg_components: list[str] = ("dust", "synchrotron"),
    n_fg_mc: int = 32,
    mask: str = "none",
    mask_bcut_deg: float = 20.0,
    mask_apod_deg: float = 10.0,
    cosmology: dict | None = None,
    executor: str = "serial",
    workers: int = 1,
    chunk: int = 100,
    progress: bool = True,
) -> dict:
    """Simulate the spectra dataset: amortised train/val pairs and fixed-r test pairs.

    Parameters
    ----------
    out_dir : str
        Run folder; the data go to ``out_dir/data``.
    seed : int
        Dataset seed (all streams derive from it).
    nside : int
        HEALPix resolution of the simulated maps.
    r_test : list of float
        r of the test sets (``dl_gt_r{r}.npy``, ``dl_noisy_r{r}.npy``).
    n_test, n_train, n_val : int
        Spectra per test set, in the amortised training and validation sets.
    r_max : float
        Training prior r ~ U[0, r_max].
    n_train_per_r : int
        Clean spectra per test r in ``dl_train_r{r}.npy`` (the prototype's per-r training files; 0: none).
    ell_min, ell_max : int
        Data multipoles (default 2..2 nside - 1).
    beam_fwhm_arcmin, noise_depth, fg_fraction, fg_freq_ghz, fg_components, mask, mask_bcut_deg, mask_apod_deg :
        Instrument and contamination, see :class:`~cosmobench.bmodes.dataset.BModeSimulator`.
    n_fg_mc : int
        Foreground skies averaged for the foreground-residual model spectrum.
    cosmology : dict, optional
        Cosmology fields (default: the prototype's).
    executor, workers : str, int
        :func:`~cosmobench.core.executor.map_tasks` settings.
    chunk : int
        Spectra per work item.
    progress : bool

    Returns
    -------
    dict
        Counts, files, the Fisher sigma(r) of each test r, seconds.
    """
    from .dataset import BModeSimulator, bb_templates, r_label
    from .likelihood import fisher_sigma_r

    t0 = time.perf_counter()
    data = Path(out_dir) / "data"
    check_writable(data)
    if not 0 < r_max:
        raise ValueError(f"r_max must be positive, got {r_max}")
    if any(r < 0 for r in r_test):
        raise ValueError(f"r_test values must be >= 0, got {list(r_test)}")
    if min(n_train, n_val) < 1 or n_test < 0:
        raise ValueError("n_train and n_val must be >= 1 and n_test >= 0")
    settings = {
        "nside": int(nside),
        "ell_min": int(ell_min),
        "ell_max": ell_max,
        "beam_fwhm_arcmin": beam_fwhm_arcmin,
        "noise_depth": noise_depth,
        "fg_fraction": fg_fraction,
        "fg_freq_ghz": fg_freq_ghz,
        "fg_components": list(fg_components),
        "mask": mask,
        "mask_bcut_deg": mask_bcut_deg,
        "mask_apod_deg": mask_apod_deg,
    }
    meta = {
        "format": 1,
        "seed": int(seed),
        "settings": settings,
        "r_max": float(r_max),
        "n_fg_mc": int(n_fg_mc),
        "cosmology": cosmology,
    }
    meta_path = data / "metadata.json"
    if meta_path.exists():
        old = read_json(meta_path)
        if {k: old.get(k) for k in meta} != _jsonable(meta):
            raise ValueError(f"{data} holds a dataset made with other settings; use another out_dir or delete it")
    else:  # written first, so that an interrupted run is never resumed with other settings
        write_json(meta_path, meta)
    from ..sky import sht

    tpl = bb_templates(sht.default_lmax(nside), cosmology, cache=data / "templates.npz")
    sim = BModeSimulator(cl_tensor=tpl["cl_tensor"], cl_lens=tpl["cl_lens"], **settings)
    model_path = data / "model_spectra.json"
    if model_path.exists():
        model = read_json(model_path)
    else:
        model = sim.model(sim.foreground_cl(n_fg_mc, seed))
        model = {k: (v.tolist() if isinstance(v, np.ndarray) else v) for k, v in model.items()}
        write_json(model_path, model)
    run = functools.partial(_run_split, data, sim, tpl, seed, chunk, executor, workers, progress)
    prior = stream(seed, "bmodes", "r-prior")
    r_train, r_val = prior.uniform(0, r_max, n_train), prior.uniform(0, r_max, n_val)
    files = run("train", r_train) + run("val", r_val)
    for r in r_test:
        files += run(
            f"r{r_label(r)}",
            np.full(int(n_test), float(r)),
            names=(f"dl_gt_r{r_label(r)}.npy", f"dl_noisy_r{r_label(r)}.npy"),
        )
        if n_train_per_r:
            path = data / f"dl_train_r{r_label(r)}.npy"
            if not path.exists():
                write_npy(path, sim.clean_many(float(r), seed, f"train_r{r_label(r)}", int(n_train_per_r)))
            files.append(path.name)
    ell, ct, co = np.asarray(model["ell"]), np.asarray(model["cl_tensor_obs"]), np.asarray(model["cl_other"])
    fisher = {r_label(r): fisher_sigma_r(r, ct, co, ell, model["fsky"]) for r in r_test}
    meta.update(
        {
            "ell": ell.tolist(),
            "n_ell": len(ell),
            "units": "D_ell = l(l+1)C_l/2pi, uK_CMB^2",
            "truth": "spectrum of the beam-convolved tensor B-mode map (full sky)",
            "observed": "(tensor + lensing) * beam + foreground residual + white noise"
            + (", apodised Galactic mask, pseudo-C_l / mean(mask^2)" if mask != "none" else ""),
            "counts": {"train": n_train, "val": n_val, "test_per_r": n_test},
            "r_test": [float(r) for r in r_test],
            "fisher_sigma_r": fisher,
            "files": sorted(files),
            "templates": tpl["cosmology"],
        }
    )
    write_json(meta_path, meta)
    return {
        "data_dir": str(data),
        "files": len(files),
        "fisher_sigma_r": fisher,
        "seconds": round(time.perf_counter() - t0, 1),
    }


_PLOTTED = {"exact": "exact", "diffusion_median": "diffusion"}


def _write_text(path: Path, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def _write_npz(path: Path, **arrays) -> None:
    with atomic_path(path) as tmp, open(tmp, "wb") as fh:
        np.savez(fh, **arrays)


def _jsonable(obj):
    import json

    return json.loads(json.dumps(obj))


def _run_split(
    data, sim, tpl, seed, chunk, executor, workers, progress, split, r_values, names: tuple[str, str] | None = None
) -> list[str]:
    gt_name, obs_name = names or (f"dl_gt_{split}.npy", f"dl_noisy_{split}.npy")
    if (data / gt_name).exists() and (data / obs_name).exists():
        return [gt_name, obs_name] + ([f"r_{split}.npy"] if names is None else [])
    starts = range(0, len(r_values), int(chunk))
    items = [
        (sim.settings(), tpl["cl_tensor"], tpl["cl_lens"], seed, split, s, r_values[s : s + int(chunk)]) for s in starts
    ]
    parts = map_tasks(
        _simulate_chunk,
        items,
        executor=executor,
        workers=workers,
        desc=f"simulate {split}",
        unit="chunk",
        progress=progress,
    )
    arr = np.concatenate(parts) if parts else np.zeros((0, 2, len(sim.ell)))
    out = [gt_name, obs_name]
    if names is None:
        write_npy(data / f"r_{split}.npy", r_values)
        out.append(f"r_{split}.npy")
    write_npy(data / obs_name, arr[:, 1])
    write_npy(data / gt_name, arr[:, 0])
    return out


def _load_data(out_dir: str) -> tuple[Path, dict, dict]:
    data = Path(out_dir) / "data"
    if not (data / "metadata.json").exists() or not (data / "model_spectra.json").exists():
        raise FileNotFoundError(f"no dataset in {data}; run `cosmobench bmodes simulate out_dir={out_dir}` first")
    meta = read_json(data / "metadata.json")
    if "files" not in meta:
        raise CorruptFileError(f"{data} holds an unfinished dataset; rerun the simulate stage to complete it")
    return data, meta, read_json(data / "model_spectra.json")


# ------------------------------------------------------------------------------------------------ train
def train(
    out_dir: str,
    seed: int = 0,
    sde: dict | None = None,
    device: str | None = None,
    progress: bool = True,
    **options,
) -> dict:
    """Train the (conditional) score model on the amortised pairs.

    Parameters
    ----------
    out_dir : str
        Run folder (needs ``data``); writes ``out_dir/model``. A finished model (``model.pth``) is not retrained.
    seed : int
    sde : dict, optional
        ``{"name": "ve"|"vp"|"subvp", **arguments}`` (default VE, sigma_min 0.01, sigma_max from the data).
    device : str, optional
    progress : bool
    **options
        The other keyword arguments of :func:`cosmobench.bmodes.train.train_score_model` (``conditional``,
        ``p_uncond``, architecture, transform, weighting, optimisation, ``ema_decay``).
    """
    from .dataset import dl_factor
    from .figures import plot_loss
    from .train import train_score_model

    data, meta, model_spectra = _load_data(out_dir)
    folder = Path(out_dir) / "model"
    if (folder / "model.pth").exists():
        hist = read_json(folder / "history.json")
        return {"skipped": True, "model": str(folder / "model.pth"), "best_val_loss": hist["best_val_loss"][0]}
    check_writable(folder)
    arrays = [np.load(data / f"dl_{k}.npy") for k in ("gt_train", "noisy_train", "gt_val", "noisy_val")]
    template_dl = np.asarray(model_spectra["cl_tensor_obs"]) * dl_factor(np.asarray(model_spectra["ell"]))
    # the checkpoint records every training setting, the defaults of train_score_model included
    settings = {
        name: p.default
        for name, p in inspect.signature(train_score_model).parameters.items()
        if p.kind is p.KEYWORD_ONLY and name not in ("device", "config", "progress")
    }
    settings.update(seed=seed, sde=sde, **options)
    config = {"train": settings, "data": meta["settings"], "r_max": meta["r_max"]}
    summary = train_score_model(
        folder,
        *arrays,
        template_dl,
        sde=sde or {"name": "ve", "sigma_min": 0.01, "sigma_max": None},
        device=device,
        seed=seed,
        config=config,
        progress=progress,
        **options,
    )
    plot_loss(read_json(folder / "history.json"), folder / "loss.png")
    return summary


# ----------------------------------------------------------------------------------------------- sample
def sample(
    out_dir: str,
    seed: int = 0,
    modes: list[str] = ("conditional", "prototype"),
    sampler: str = "em",
    n_steps: int = 1000,
    sampler_options: dict | None = None,
    n_draws: int = 16,
    r_values: list[float] | None = None,
    n_spectra: int | None = None,
    n_prior_check: int = 1000,
    chunk_size: int = 4096,
    trajectory_every: int = 20,
    device: str | None = None,
    progress: bool = True,
) -> dict:
    """Denoise the test sets: posterior draws per observed spectrum, MSE against the truth, figures.

    Parameters
    ----------
    out_dir : str
        Run folder (needs ``data`` and ``model``).
    seed : int
    modes : list of str
        Any of "conditional" (p(x | y)), "unconditional" (p(x)) and "prototype" (reverse process started from y
        at t = 1), see :mod:`cosmobench.bmodes.conditional`.
    sampler : {"em", "ode", "pc"}
    n_steps : int
        Sampler steps.
    sampler_options : dict, optional
        Other sampler options (``snr``, ``n_corrector_steps``, ``predictor``, ``step_norm``, ``solver``, ``eps``).
    n_draws : int
        Draws per observed spectrum; ``denoised.npy`` holds their mean (a single draw when 1).
    r_values : list of float, optional
        Test sets to denoise (default: all of the dataset).
    n_spectra : int, optional
        Use only the first spectra of each test set.
    n_prior_check : int
        Unconditional samples compared with the held-out clean spectra (mean and covariance); 0 to skip.
    chunk_size : int
        Trajectories per sampler call.
    trajectory_every : int
        Store and plot trajectories every this many steps (0: none).
    device : str, optional
    progress : bool

    Returns
    -------
    dict
        Per mode and r: MSE of the denoised spectra and of the baselines; the prior check; throughput.
    """
    from tqdm.auto import tqdm

    from ..core.train import default_device
    from .conditional import MODES, denoise_spectra
    from .dataset import dl_factor, r_label
    from .figures import plot_prior_check, plot_spectra, plot_trajectories
    from .train import load_score_model

    data, meta, model_spectra = _load_data(out_dir)
    unknown = [m for m in modes if m not in MODES]
    if unknown:
        raise ValueError(f"unknown modes {unknown}; expected some of {list(MODES)}")
    model, tx, ty, ckpt = load_score_model(Path(out_dir) / "model" / "model.pth", device or default_device())
    if "conditional" in modes and not ckpt["conditional"]:
        raise ValueError(
            "the trained model is unconditional; drop 'conditional' from modes or retrain with conditional=true"
        )
    folder = Path(out_dir) / "samples"
    check_writable(folder)
    opts = {"n_steps": int(n_steps), **(sampler_options or {})}
    r_values = meta["r_test"] if r_values is None else [float(r) for r in r_values]
    ell = np.asarray(meta["ell"])
    template_dl = np.asarray(model_spectra["cl_tensor_obs"]) * dl_factor(ell)
    contamination_dl = np.asarray(model_spectra["cl_other"]) * dl_factor(ell)
    summary: dict = {"sampler": sampler, "options": opts, "n_draws": int(n_draws), "results": {}}
    for r in r_values:
        gt_all = np.load(data / f"dl_gt_r{r_label(r)}.npy")
        obs_all = np.load(data / f"dl_noisy_r{r_label(r)}.npy")
        gt, obs = gt_all[:n_spectra], obs_all[:n_spectra]
        for mode in modes:
            sub = folder / mode / f"r{r_label(r)}"
            if (sub / "metrics.json").exists():
                summary["results"][f"{mode}/r{r_label(r)}"] = read_json(sub / "metrics.json")
                continue
            bar = tqdm(
                total=len(obs) * n_draws,
                desc=f"sample {mode} r={r_label(r)}",
                unit="traj",
                disable=not progress,
                dynamic_ncols=True,
            )
            t0 = time.perf_counter()
            with bar:
                res = denoise_spectra(
                    model,
                    tx,
                    ty,
                    obs,
                    mode=mode,
                    sampler=sampler,
                    n_draws=n_draws,
                    sampler_options=opts,
                    chunk_size=chunk_size,
                    seed=seed,
                    tag=r_label(r),
                    device=device,
                    trajectory_every=trajectory_every,
                    progress=bar.update,
                )
            seconds = time.perf_counter() - t0
            draws = res["draws"]
            mean = draws.mean(1)
            metrics = {
                "mode": mode,
                "r": r,
                "n_spectra": len(obs),
                "n_draws": int(n_draws),
                "seconds": seconds,
                "nfe_per_trajectory": res["nfe"],
                "spectra_steps_per_s": len(obs) * n_draws * opts["n_steps"] / seconds,
                **_mse_table(gt, obs, mean, draws[:, 0], contamination_dl, template_dl),
            }
            write_npy(sub / "denoised.npy", mean)
            if n_draws > 1:
                write_npy(sub / "draws.npy", draws)
            plot_spectra(ell, gt, obs, draws, template_dl, sub / "spectra.png", title=f"{mode} r={r_label(r)}")
            if "trajectory" in res:
                _write_npz(sub / "trajectory.npz", times=res["times"], trajectory=res["trajectory"])
                plot_trajectories(res["times"], res["trajectory"], ell, sub / "trajectories.png")
            write_json(sub / "metrics.json", metrics)
            summary["results"][f"{mode}/r{r_label(r)}"] = metrics
    if n_prior_check and not (folder / "prior_check.json").exists():
        x_true = tx.forward(np.load(data / "dl_gt_val.npy"))[: int(n_prior_check)]
        res = denoise_spectra(
            model,
            tx,
            ty,
            np.ones((len(x_true), len(ell))),
            mode="unconditional",
            sampler=sampler,
            sampler_options=opts,
            chunk_size=chunk_size,
            seed=seed,
            tag="prior-check",
            device=device,
        )
        check = _prior_check(x_true, res["x"][:, 0])
        write_json(folder / "prior_check.json", check)
        plot_prior_check(ell, x_true, res["x"][:, 0], folder / "prior_check.png")
    if n_prior_check:
        summary["prior_check"] = read_json(folder / "prior_check.json")
    write_json(folder / "summary.json", summary)
    return summary


def _mse_table(gt, obs, mean, single, contamination_dl, template_dl) -> dict:
    """MSE of estimates of the clean D_l: in uK^4, and in template units (D_l / D_l^{t, r=1}, i.e. r per l)."""
    estimates = {
        "observed": obs,
        "observed_minus_expected_contamination": obs - contamination_dl,
        "posterior_mean": mean,
        "single_draw": single,
    }
    out = {}
    for name, est in estimates.items():
        out[f"mse_{name}"] = float(np.mean((est - gt) ** 2))
        out[f"mse_r_units_{name}"] = float(np.mean(((est - gt) / template_dl) ** 2))
    return out


def _prior_check(x_true: np.ndarray, x_model: np.ndarray) -> dict:
    """Compare model samples with held-out clean spectra (transformed units): mean z-scores, std ratios and the
    largest correlation difference, with the tolerances expected from the sample sizes."""
    n1, n2 = len(x_true), len(x_model)
    m1, m2 = x_true.mean(0), x_model.mean(0)
    s1, s2 = x_true.std(0, ddof=1), x_model.std(0, ddof=1)
    z = (m2 - m1) / np.sqrt(s1**2 / n1 + s2**2 / n2)
    c1, c2 = np.corrcoef(x_true.T), np.corrcoef(x_model.T)
    return {
        "n_true": n1,
        "n_model": n2,
        "max_abs_mean_z": float(np.abs(z).max()),
        "mean_z": z.tolist(),
        "std_ratio": (s2 / s1).tolist(),
        "max_abs_log_std_ratio": float(np.abs(np.log(s2 / s1)).max()),
        "std_ratio_tolerance_1sigma": float(np.sqrt(0.5 / n1 + 0.5 / n2)),
        "max_abs_corr_diff": float(np.abs(c2 - c1).max()),
        "corr_diff_tolerance_1sigma": float(np.sqrt(1 / n1 + 1 / n2)),
    }


# ------------------------------------------------------------------------------------------------ infer
def infer(
    out_dir: str,
    seed: int = 0,
    mode: str = "conditional",
    n_per_draw: int = 8,
    r_max_search: float = 0.2,
    progress: bool = True,
) -> dict:
    """Estimate r on every test set: exact likelihood, diffusion posterior, oracle; table against Fisher.

    Parameters
    ----------
    out_dir : str
        Run folder (needs ``data`` and ``samples/<mode>``).
    seed : int
    mode : str
        Which sampled draws give the diffusion estimates (normally "conditional").
    n_per_draw : int
        r draws per posterior spectrum draw.
    r_max_search : float
        Upper edge of the exact-likelihood search.
    progress : bool

    Returns
    -------
    dict
        ``rows`` (one per r and estimator), ``table`` (Markdown), files.
    """
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

    data, meta, model_spectra = _load_data(out_dir)
    folder = Path(out_dir) / "infer"
    check_writable(folder)
    rows, hist = [], {}
    for r in meta["r_test"]:
        label = r_label(r)
        sigma_f = float(meta["fisher_sigma_r"][label])
        gt = np.load(data / f"dl_gt_r{label}.npy")
        obs = np.load(data / f"dl_noisy_r{label}.npy")
        bayes = exact_posterior_estimates(obs, model_spectra, r_max=meta["r_max"])
        est = {
            "exact": exact_estimates(obs, model_spectra, r_max=r_max_search),
            "exact_bayes_median": {"r_hat": bayes["median"], "lo": bayes["lo"], "hi": bayes["hi"]},
            "oracle": oracle_estimates(gt, model_spectra),
        }
        draws_path = Path(out_dir) / "samples" / mode / f"r{label}" / "draws.npy"
        if draws_path.exists():
            draws = np.load(draws_path)
            d = diffusion_estimates(
                draws,
                model_spectra,
                r_max=meta["r_max"],
                n_per_draw=n_per_draw,
                rng=stream(seed, "bmodes-infer", label),
            )
            for point in ("mean", "median"):
                est[f"diffusion_{point}"] = {"r_hat": d[point], "lo": d["lo"], "hi": d["hi"]}
            est["diffusion_ml"] = d["ml"]
        n_used = min(len(v["r_hat"]) for v in est.values())
        hist[label] = {"r0": float(r), "sigma_fisher": sigma_f}
        for name, e in est.items():
            sc = score_estimates(e["r_hat"][:n_used], float(r), sigma_f, e["lo"][:n_used], e["hi"][:n_used])
            rows.append({"r0": float(r), "estimator": name, "sigma_fisher": sigma_f, **sc})
            if name in _PLOTTED:
                hist[label][_PLOTTED[name]] = e["r_hat"][:n_used]
        _write_npz(folder / f"estimates_r{label}.npz", **{f"{k}_{q}": v[q] for k, v in est.items() for q in v})
    table = r_table_markdown(rows)
    _write_text(folder / "r_table.md", table)
    write_json(folder / "r_table.json", rows)
    plot_r_estimates(hist, folder / "r_estimates.png")
    return {"rows": rows, "table": table, "folder": str(folder)}


# -------------------------------------------------------------------------------------------------- run
def run(config: dict) -> dict:
    """The whole pipeline: simulate, train, sample, infer; writes ``out_dir/report.md``.

    Parameters
    ----------
    config : dict
        The resolved configuration (sections ``simulate``, ``train``, ``sample``, ``infer``).
    """
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
    out_dir = Path(config["infer"]["out_dir"])
    lines = [
        "# B-mode diffusion run",
        "",
        f"Folder: `{out_dir}`; total {time.perf_counter() - t0:.0f} s.",
        "",
        "## MSE of the denoised spectra (template units: D_l / D_l^{t,r=1}, i.e. r per multipole)",
        "",
        "| set | posterior mean | single draw | observed | observed - E[contamination] |",
        "|---|---|---|---|---|",
    ]
    for key, m in out["sample"]["results"].items():
        lines.append(
            f"| {key} | {m['mse_r_units_posterior_mean']:.3g} | {m['mse_r_units_single_draw']:.3g} | "
            f"{m['mse_r_units_observed']:.3g} | {m['mse_r_units_observed_minus_expected_contamination']:.3g} |"
        )
    if "prior_check" in out["sample"]:
        pc = out["sample"]["prior_check"]
        lines += [
            "",
            f"Prior check (model vs held-out clean spectra, standardised logs): max |mean z| = "
            f"{pc['max_abs_mean_z']:.2f}, max |log std ratio| = {pc['max_abs_log_std_ratio']:.3f} "
            f"(1 sigma {pc['std_ratio_tolerance_1sigma']:.3f}), max |corr diff| = "
            f"{pc['max_abs_corr_diff']:.3f} (1 sigma {pc['corr_diff_tolerance_1sigma']:.3f}).",
        ]
    lines += ["", "## r estimates", "", out["infer"]["table"]]
    _write_text(out_dir / "report.md", "\n".join(lines) + "\n")
    out["report"] = str(out_dir / "report.md")
    out["seconds"] = round(time.perf_counter() - t0, 1)
    out["infer"] = {k: v for k, v in out["infer"].items() if k != "rows"}
    return out
