"""Stage functions of ``cosmobench multifield <stage>``: plain keyword arguments, outputs under ``out_dir``.

``simulate`` writes CMD-format maps (or point ``data_dir`` at real CMD files and skip it); ``train`` fits one
o3_err; ``search`` runs the optuna study; ``test`` writes the true parameters, posterior means and standard
deviations of every test map with the metrics; ``robustness`` the cross-suite matrix; ``fields`` the smallest
field sets; ``calibrate`` coverage, TARP and the NPE posterior; ``run`` chains them. Every stage skips finished
work on rerun and returns a JSON-serialisable summary.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ..core.io import check_writable, read_json, write_json
from .cmd import PARAM_NAMES, LabelScaler
from .search import SEARCH_SPACE, STUDY_NAME
from .train import fields_tag, set_threads, settings_from

__all__ = ["simulate", "train", "search", "test", "robustness", "fields", "calibrate", "run", "STAGES"]

STAGES = ("simulate", "train", "search", "test", "robustness", "fields", "calibrate")


def simulate(
    *,
    out_dir: str | Path,
    seed: int = 0,
    suites: Sequence[str] = ("TNGlike", "SIMBAlike", "Nbody_TNGlike"),
    n_sims: int = 1000,
    npix: int = 64,
    fields: Sequence[str] | None = None,
    set_name: str = "LH",
    cache_dir: str | None = None,
    executor: str = "serial",
    workers: int = 1,
    progress: bool = True,
) -> dict:
    """Simulate CMD-format multifield maps of several suites offline (log-normal matter + baryonic responses).

    Parameters
    ----------
    out_dir : path
        Data folder; files get CMD's names (``Maps_{field}_{suite}_{set}_z=0.00.npy``, ``params_{set}_{suite}.txt``).
    seed : int
        Dataset seed (Latin hypercube and initial conditions; N-body twins share their hydro twin's).
    suites : list of str
        Names from :data:`cosmobench.multifield.simulate.SUITES`.
    n_sims, npix : int
        Simulations per suite (15 maps each) and map side (64 default, 256 like CMD).
    fields : list of str, optional
        Subset of fields (default: all the suite has).
    cache_dir : str, optional
        Where the CAMB P(k) table is cached (default ``$COSMOBENCH_CACHE`` or ``~/.cache/cosmobench``).
    executor, workers : str, int
        ``serial`` / ``processes`` / ``dask`` over simulations.
    """
    from ..sky.cosmology import default_cache_dir
    from .power import load_or_build_power_table
    from .simulate import get_suite, simulate_suite

    out_dir = Path(out_dir)
    check_writable(out_dir)
    if n_sims < 3:
        raise ValueError(f"n_sims must be >= 3 (train/valid/test split by simulation), got {n_sims}")
    for s in suites:
        get_suite(s)
    t0 = time.perf_counter()
    power = load_or_build_power_table(cache_dir or default_cache_dir() / "multifield")
    t_power = time.perf_counter() - t0
    done = [
        simulate_suite(
            out_dir,
            s,
            n_sims=n_sims,
            npix=npix,
            seed=seed,
            fields=fields,
            power=power,
            set_name=set_name,
            executor=executor,
            workers=workers,
            progress=progress,
        )
        for s in suites
    ]
    wall = time.perf_counter() - t0
    return {
        "data_dir": str(out_dir),
        "suites": done,
        "power_table_s": t_power,
        "wall_s": wall,
        "maps_per_s": sum(d["n_sims"] for d in done) * 15 / max(wall - t_power, 1e-9),
    }


def train(
    *,
    out_dir: str | Path,
    data_dir: str | Path,
    suite: str,
    fields: Sequence[str],
    training: dict | None = None,
    seed: int = 0,
) -> dict:
    """Train one o3_err on ``fields`` of ``suite`` (settings: ``training``, see ``TrainSettings``).

    The model goes to ``out_dir/models/{suite}_{fields}_{settings hash}/`` (see ``train.model_dir``), where the
    robustness, fields, test and calibrate stages find it.

    Parameters
    ----------
    out_dir, data_dir : path
        Output root and CMD-format data folder (simulated, or the real CMD ``2D_maps/data``).
    suite : str
        Suite name in the file names (``IllustrisTNG``, ``TNGlike``...).
    fields : list of str
        Fields stacked as input channels, in order.
    training : dict
        ``TrainSettings`` keys (unknown keys raise ``TypeError``).
    seed : int
        Weights initialisation, shuffling and augmentation draws.

    Returns
    -------
    dict
        ``run_dir``, ``model_path``, ``best_val_loss``, ``epochs``, ``seconds``, ``train_maps_per_s``,
        ``n_parameters``.
    """
    from .train import model_dir, prepare_data, train_model

    set_threads()
    settings = settings_from(training)
    run_dir = model_dir(out_dir, suite, fields, settings, seed)
    check_writable(run_dir)
    if (run_dir / "model.pt").exists():
        summary = read_json(run_dir / "model.json")["summary"]
    else:
        summary = train_model(prepare_data(data_dir, suite, fields, settings), run_dir, settings, seed=seed)
    return {"run_dir": str(run_dir), **summary}


def search(
    *,
    out_dir: str | Path,
    data_dir: str | Path,
    suite: str,
    fields: Sequence[str],
    training: dict | None = None,
    seed: int = 0,
    n_trials: int = 50,
    n_startup_trials: int = 20,
    storage: str | None = None,
    study_name: str = STUDY_NAME,
    lr_range: Sequence[float] = SEARCH_SPACE["lr"],
    wd_range: Sequence[float] = SEARCH_SPACE["wd"],
    dropout_range: Sequence[float] = SEARCH_SPACE["dr"],
    hidden_range: Sequence[int] = SEARCH_SPACE["hidden"],
    prune_warmup: int = 2,
) -> dict:
    """Optuna search over lr, weight decay, dropout and width with an RDB storage (SQLite file by default).

    Start the same command on several machines with ``storage=postgresql://...`` (or one SQLite file on a shared
    disk for a few workers) to share the study; the study stops at ``n_trials`` finished trials in total.
    """
    from .search import run_search
    from .train import prepare_data

    set_threads()
    settings = settings_from(training)
    folder = Path(out_dir) / "search" / f"{suite}_{fields_tag(fields)}"
    check_writable(folder)
    data = prepare_data(data_dir, suite, fields, settings)
    out = run_search(
        data,
        folder,
        settings,
        n_trials=n_trials,
        n_startup_trials=n_startup_trials,
        storage=storage,
        study_name=study_name,
        lr_range=lr_range,
        wd_range=wd_range,
        dropout_range=dropout_range,
        hidden_range=hidden_range,
        prune_warmup=prune_warmup,
        seed=seed,
    )
    return {"folder": str(folder), **{k: v for k, v in out.items() if k != "trials"}}


def _model_path(
    out_dir: Path, suite: str, fields: Sequence[str], source: str, model_path: str | None, training, seed: int
) -> Path:
    from .train import model_dir

    if model_path:
        return Path(model_path)
    if source == "train":
        return model_dir(out_dir, suite, fields, settings_from(training), seed) / "model.pt"
    if source == "search":
        best = out_dir / "search" / f"{suite}_{fields_tag(fields)}" / "best.json"
        if not best.exists():
            raise FileNotFoundError(f"{best} does not exist; run `cosmobench multifield search` first")
        return Path(read_json(best)["best"]["model_path"])
    raise ValueError(f"source must be 'train' or 'search' (or give model_path), got {source!r}")


def _model_tag(path: Path) -> str:
    """Folder tag of a model: its folder name, with the search folder for trials."""
    return "_".join(path.parent.parts[-2:]) if path.parent.name.startswith("trial_") else path.parent.name


def test(
    *,
    out_dir: str | Path,
    data_dir: str | Path,
    suite: str,
    fields: Sequence[str],
    training: dict | None = None,
    source: str = "train",
    model_path: str | None = None,
    test_suite: str | None = None,
    split: str = "test",
    tta: bool = True,
    batch_size: int = 128,
    device: str | None = None,
    seed: int = 0,
    recalibration: str | None = "loglinear",
) -> dict:
    """Write true parameters, posterior means and standard deviations of every map of a split, and the metrics.

    The model is the train stage's for ``training`` (``source="train"``), the best search trial
    (``source="search"``), or ``model_path``. Outputs in ``out_dir/test/<model tag>_on_<test_suite>/``:
    ``predictions.txt`` (the reference's 18
    columns), ``predictions.npz`` (with map/simulation indices and per-transform predictions), ``metrics.json``
    (R^2, relative error, chi^2, coverage..., per map with bootstrap intervals over simulations, and per-simulation
    aggregates; with ``recalibration``, chi^2, coverage and mean sigma of the recalibrated sigma's with the suffix
    ``_cal``, the fitted scales, and ``coverage68_cal_total_ci``/``coverage95_cal_total_ci``: 68 % bands that
    resample the validation simulations of the fit as well as the test ones), ``split.json`` (the simulation
    indices used) and ``predictions.png``.

    Parameters
    ----------
    out_dir, data_dir : path
    suite, fields, training, seed : the training suite, fields, settings and seed that identify the model.
    source : {"train", "search"}
    model_path : str, optional
        An explicit ``model.pt`` (overrides ``source``).
    test_suite : str, optional
        Suite to predict (default ``suite``); normalised with the model's own statistics.
    split : {"test", "valid", "train"}
    tta : bool
        Average over the 8 dihedral transforms.
    batch_size : int
    device : str, optional
    recalibration : {"loglinear", "conformal", "chi2"}, optional
        Post-hoc sigma recalibration fitted on the validation split of the model's own suite (see
        :func:`cosmobench.multifield.calibration.fit_recalibration`) and applied to ``test_suite`` as it is: on
        another suite it shows what an in-suite calibration is worth there. ``None`` skips it.
    """
    from .calibration import recalibrated_coverage_band
    from .evaluate import metrics, predict_split, recalibrate_on_valid, split_indices, write_predictions
    from .figures import predictions_figure
    from .train import load_model

    set_threads()
    out_dir = Path(out_dir)
    test_suite = test_suite or suite
    path = _model_path(out_dir, suite, fields, source, model_path, training, seed)
    folder = out_dir / "test" / f"{_model_tag(path)}_on_{test_suite}"
    if (folder / "metrics.json").exists():
        return read_json(folder / "metrics.json")
    check_writable(folder)
    model, meta = load_model(path, device=device)
    s = meta["settings"]
    sims = split_indices(meta, data_dir, test_suite, split)
    options = {"tta": tta, "batch_size": batch_size, "device": device}
    pred = predict_split(model, meta, data_dir, split, suite=test_suite, **options)
    write_predictions(folder, pred)
    write_json(
        folder / "split.json",
        {
            "suite": test_suite,
            "split": split,
            "sims": sims.tolist(),
            "split_fractions": s["split"],
            "split_seed": s["split_seed"],
        },
    )
    recal, valid = (
        recalibrate_on_valid(model, meta, data_dir, method=recalibration, **options) if recalibration else 2 * (None,)
    )
    result = {
        "model": str(path),
        "trained_on": meta["suite"],
        "tested_on": test_suite,
        "fields": list(fields),
        "tta": tta,
        "metrics": metrics(
            pred["theta"],
            pred["mu"],
            pred["sigma"],
            pred["sim_index"],
            params=tuple(meta["params"]),
            seed=seed,
            recalibration=recal,
        ),
    }
    if recal is not None:
        result["recalibration"] = {**recal.as_dict(PARAM_NAMES), "fitted_on": f"valid split of {meta['suite']}"}
        # the band of the calibrated coverage with the validation fit's own noise (validation and test resampled)
        band = recalibrated_coverage_band(
            tuple(valid[k] for k in ("theta", "mu", "sigma", "sim_index")),
            tuple(pred[k] for k in ("theta", "mu", "sigma", "sim_index")),
            columns=meta["params"],
            method=recalibration,
            seed=seed,
        )
        for j, p in enumerate(meta["params"]):
            for i, lvl in enumerate((68, 95)):
                result["metrics"][PARAM_NAMES[p]][f"coverage{lvl}_cal_total_ci"] = band[:, i, j].tolist()
    predictions_figure(pred, folder / "predictions.png", params=[p for p in (0, 1) if p in meta["params"]])
    write_json(folder / "metrics.json", result)
    return result


def robustness(
    *,
    out_dir: str | Path,
    data_dir: str | Path,
    suites: Sequence[str],
    fields: Sequence[str] = ("Mtot",),
    training: dict | None = None,
    seed: int = 0,
    params: Sequence[int] = (0, 1),
    tta: bool = True,
    recalibration: str | None = "loglinear",
) -> dict:
    """Train on each suite, test on every suite; print and return the matrix of errors for Omega_m and sigma_8.

    Parameters
    ----------
    out_dir, data_dir : path
    suites : list of str
        At least two suites that all have ``fields`` (N-body suites: Mtot only).
    fields : list of str
    training : dict
        ``TrainSettings`` keys; ``params`` is overridden by ``params``.
    seed : int
    params : list of int
        Parameters trained and reported (cosmology only by default: astrophysical parameters differ between suites).
    tta : bool
        Average predictions over the 8 dihedral transforms.
    recalibration : {"loglinear", "conformal", "chi2"}, optional
        Sigma recalibration fitted on each training suite's validation split and applied to every test suite
        (coverage before and after is reported; ``None`` skips it).
    """
    from .figures import robustness_figure
    from .robustness import cross_suite

    set_threads()
    settings = settings_from(training, params=tuple(params))
    folder = Path(out_dir) / "robustness"
    check_writable(folder)
    result = cross_suite(
        data_dir, out_dir, suites, fields, settings, seed=seed, params=params, tta=tta, recalibration=recalibration
    )
    robustness_figure(result, folder / f"robustness_{fields_tag(fields)}.png")
    print(result["table"])
    keys = ("rel_err", "bias", "coverage68", "coverage95") + (
        ("coverage68_cal", "coverage95_cal") if recalibration else ()
    )
    return {
        "folder": str(folder),
        "suites": result["suites"],
        "fields": result["fields"],
        **{
            key: {a: {b: {p: result["matrix"][a][b][p][key] for p in result["params"]} for b in suites} for a in suites}
            for key in keys
        },
    }


def fields(
    *,
    out_dir: str | Path,
    data_dir: str | Path,
    suite: str,
    fields: Sequence[str],
    training: dict | None = None,
    seed: int = 0,
    params: Sequence[int] = (0, 1),
    strategy: str = "auto",
    kind: str = "empirical",
    select_split: str = "valid",
    thresholds: Sequence[float] = (0.9, 0.95),
) -> dict:
    """Smallest field sets holding 90 % and 95 % of the full multifield model's information (see ``fields.py``).

    Parameters
    ----------
    out_dir, data_dir : path
    suite : str
    fields : list of str
        Candidate fields; the full set is the reference (information fraction 1).
    training : dict
        ``TrainSettings`` keys; ``params`` is overridden by ``params``.
    seed : int
    params : list of int
        Parameters whose information is measured (default Omega_m, sigma_8).
    strategy : {"auto", "exhaustive", "greedy"}
    kind : {"empirical", "posterior"}
        Information from actual errors (inverse MSE) or from predicted posterior precision.
    select_split : {"valid", "test"}
    thresholds : list of float
    """
    from .fields import field_importance
    from .figures import fields_figure

    set_threads()
    settings = settings_from(training, params=tuple(params))
    folder = Path(out_dir) / "fields"
    check_writable(folder)
    result = field_importance(
        data_dir,
        out_dir,
        suite,
        fields,
        settings,
        seed=seed,
        params=params,
        strategy=strategy,
        kind=kind,
        select_split=select_split,
        thresholds=thresholds,
    )
    fields_figure(result, folder / f"fields_{suite}_{fields_tag(fields)}.png")
    return {
        "folder": str(folder),
        "smallest": result["smallest"],
        "definition": result["definition"],
        "fractions": {"+".join(e["fields"]): e[select_split]["fraction"] for e in result["subsets"]},
        "test_metrics": {"+".join(e["fields"]): e["test"]["metrics"] for e in result["subsets"]},
    }


def calibrate(
    *,
    out_dir: str | Path,
    data_dir: str | Path,
    suite: str,
    fields: Sequence[str],
    training: dict | None = None,
    source: str = "train",
    model_path: str | None = None,
    seed: int = 0,
    recalibration: str | None = "loglinear",
    npe: bool = True,
    npe_split: str = "valid",
    npe_epochs: int = 200,
    n_samples: int = 500,
    tta: bool = True,
    batch_size: int = 128,
    device: str | None = None,
) -> dict:
    """Coverage of the mean +- std intervals (per map and per simulation), TARP, and an NPE posterior on CNN summaries.

    The raw moment-network intervals, the same intervals recalibrated on the validation split and the NPE (``sbi``)
    trained on the summaries of ``npe_split`` simulations, which the CNN was not fitted on, are all evaluated on the
    test split.

    Parameters
    ----------
    out_dir, data_dir : path
        Output root and CMD-format data folder.
    suite, fields, training, seed : as for :func:`train`, to find the model (or ``source="search"``, ``model_path``).
    recalibration : {"loglinear", "conformal", "chi2"}, optional
        Sigma recalibration fitted on the validation split at every nominal level of the coverage curve
        (:func:`cosmobench.multifield.calibration.fit_recalibration`); its TARP uses the 68 % scale. ``None`` skips it.
    npe : bool
        Also train and evaluate the NPE posterior (needs ``sbi``).
    npe_split : {"valid", "train"}
        Simulations whose CNN summaries train the NPE (``train`` ones are over-fitted by the CNN: optimistic).
    npe_epochs : int
        Maximum NPE training epochs.
    n_samples : int
        Posterior samples per map for TARP and the NPE intervals.
    tta, batch_size, device : prediction options (see :func:`cosmobench.multifield.evaluate.predict`).

    Returns
    -------
    dict
        Per parameter: coverage at 68 % and 95 % per map and per simulation (with bootstrap intervals); TARP
        (ATC, largest deviation, KS p-value) per map and per simulation; the same for the recalibrated intervals
        (``gaussian_recalibrated``, with the scales) and for the NPE, with its leakage.
    """
    from .calibration import (
        coverage_curve,
        coverage_from_samples,
        default_levels,
        fit_npe,
        fit_recalibration,
        gaussian_samples,
        sample_npe,
        tarp,
    )
    from .evaluate import predict_split
    from .figures import coverage_figure
    from .train import load_model

    set_threads()
    out_dir = Path(out_dir)
    path = _model_path(out_dir, suite, fields, source, model_path, training, seed)
    folder = out_dir / "calibration" / _model_tag(path)
    if (folder / "calibration.json").exists():
        return read_json(folder / "calibration.json")
    check_writable(folder)
    model, meta = load_model(path, device=device)
    params = list(meta["params"])
    names = [PARAM_NAMES[p] for p in params]
    scaler = LabelScaler(meta["labels"]["prior"], meta["labels"]["log"])
    options = {"tta": tta, "batch_size": batch_size, "device": device}
    preds = {name: predict_split(model, meta, data_dir, name, **options) for name in {"test", "valid", npe_split}}

    def normalised(pred):
        """Normalised truths, means and standard deviations of the trained parameters."""
        return scaler.normalise(pred["theta"])[:, params], pred["mu_norm"][:, params], pred["sigma_norm"][:, params]

    theta_n, mu_n, sd_n = normalised(preds["test"])
    sims = preds["test"]["sim_index"]
    first = np.unique(sims, return_index=True)[1]
    levels = default_levels()

    def gaussian_diagnostics(recal=None):
        """Coverage curve (raw or recalibrated intervals), TARP per map and per simulation of the Gaussians
        N(mu_n, sd^2) on the test split (recalibrated: the 68 % sigma)."""
        cov = coverage_curve(theta_n, mu_n, sd_n, sims, levels, recalibration=recal, seed=seed)
        sd = sd_n if recal is None else recal.sigma(sd_n, 0.68)
        per_map = tarp(gaussian_samples(mu_n, sd, n_samples, seed), theta_n, seed=seed)
        per_sim = tarp(gaussian_samples(mu_n[first], sd[first], n_samples, seed), theta_n[first], seed=seed)
        return cov, per_map, per_sim

    gauss_cov, gauss_tarp, gauss_tarp_sim = gaussian_diagnostics()
    curves = {"moment network": {"coverage": gauss_cov, "tarp": gauss_tarp, "params": names}}
    result = {
        "model": str(path),
        "suite": suite,
        "fields": list(fields),
        "params": names,
        "n_test_maps": int(len(theta_n)),
        "n_test_sims": int(len(first)),
        "gaussian": _summarise(gauss_cov, gauss_tarp, gauss_tarp_sim, names, levels),
    }
    result["gaussian"]["rmse_norm"] = dict(zip(names, np.sqrt(np.mean((mu_n - theta_n) ** 2, 0)).tolist()))
    if recalibration:
        v_theta, v_mu, v_sd = normalised(preds["valid"])
        recal = fit_recalibration(
            v_theta,
            v_mu,
            v_sd,
            preds["valid"]["sim_index"],
            columns=range(len(params)),
            levels=levels,
            method=recalibration,
        )
        cal_cov, cal_tarp, cal_tarp_sim = gaussian_diagnostics(recal)
        curves["recalibrated"] = {"coverage": cal_cov, "tarp": cal_tarp, "params": names}
        result["gaussian_recalibrated"] = {
            **_summarise(cal_cov, cal_tarp, cal_tarp_sim, names, levels),
            "recalibration": {**recal.as_dict(names, levels=(0.68, 0.95)), "fitted_on": "valid split"},
            "mean_std_norm": dict(zip(names, recal.sigma(sd_n, 0.68).mean(0).tolist())),
        }
    if npe:

        def summaries(pred):
            return np.concatenate([pred["mu_norm"][:, params], np.log(pred["sigma_norm"][:, params] + 1e-6)], axis=1)

        theta_cal = normalised(preds[npe_split])[0]
        posterior = fit_npe(summaries(preds[npe_split]), theta_cal, seed=seed, max_epochs=npe_epochs)
        samples, leakage = sample_npe(posterior, summaries(preds["test"]), n_samples, seed=seed)
        npe_cov = coverage_from_samples(samples, theta_n, sims, levels, seed=seed)
        npe_tarp = tarp(samples, theta_n, seed=seed)
        npe_tarp_sim = tarp(samples[:, first], theta_n[first], seed=seed)
        curves["NPE"] = {"coverage": npe_cov, "tarp": npe_tarp, "params": names}
        npe_mu, npe_sd = samples.mean(0), samples.std(0)
        result["npe"] = {
            **_summarise(npe_cov, npe_tarp, npe_tarp_sim, names, levels),
            "trained_on": f"{npe_split} split, {len(theta_cal)} maps",
            "leakage": leakage,
            "rmse_norm": dict(zip(names, np.sqrt(np.mean((npe_mu - theta_n) ** 2, 0)).tolist())),
            "mean_std_norm": dict(zip(names, npe_sd.mean(0).tolist())),
        }
    coverage_figure(curves, folder / "calibration.png")
    write_json(folder / "calibration.json", result)
    return result


def _summarise(cov: dict, tarp_map: dict, tarp_sim: dict, names, levels) -> dict:
    i68, i95 = int(np.argmin(np.abs(levels - 0.68))), int(np.argmin(np.abs(levels - 0.95)))
    out = {}
    for j, name in enumerate(names):
        out[name] = {
            f"coverage{lvl}_{kind}": float(cov[kind][i, j])
            for lvl, i in (("68", i68), ("95", i95))
            for kind in ("per_map", "per_sim")
        }
        for lvl, i in (("68", i68), ("95", i95)):
            out[name][f"coverage{lvl}_per_sim_ci"] = [float(cov["ci"][0][i, j]), float(cov["ci"][1][i, j])]
    out["tarp_per_map"] = {k: tarp_map[k] for k in ("atc", "max_dev", "ks_p")}
    out["tarp_per_sim"] = {k: tarp_sim[k] for k in ("atc", "max_dev", "ks_p")}
    return out


def run(config: dict) -> dict:
    """The whole pipeline: the stages listed in ``config["run"]["stages"]`` (default all), in order."""
    stages = (config.get("run") or {}).get("stages", list(STAGES))
    unknown = sorted(set(stages) - set(STAGES))
    if unknown:
        raise ValueError(f"unknown stages {unknown} in run.stages; expected a subset of {list(STAGES)}")
    functions = {
        "simulate": simulate,
        "train": train,
        "search": search,
        "test": test,
        "robustness": robustness,
        "fields": fields,
        "calibrate": calibrate,
    }
    out, timings = {}, {}
    for stage in STAGES:
        if stage not in stages:
            continue
        if stage not in config:
            raise ValueError(f"the configuration has no section {stage!r}")
        t0 = time.perf_counter()
        out[stage] = functions[stage](**config[stage])
        timings[stage] = time.perf_counter() - t0
    out["timings_s"] = timings
    folder = Path(config.get("out_dir", "."))
    write_json(folder / "run_summary.json", out)
    return out
