"""Run a separation method over a dataset split: ``train`` (learned methods) and ``separate`` (every method).

Predictions go to ``<root>/<method>/<split>/simNNNN/cmb_pred.fits`` (one column, I, uK_CMB), written
atomically; finished predictions are skipped on rerun. ``<root>/<method>/method.json`` records the method's
settings and the beam of its output, which the evaluation needs.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from functools import partial
from pathlib import Path

import numpy as np

from ..core.executor import map_tasks
from ..core.io import read_json, write_healpix, write_json
from .dataset import CMBDataset, method_info_path, pred_path
from .methods import get_method

__all__ = ["train", "separate"]


def _build(method: str, settings: Mapping | None):
    cls = get_method(method)
    try:
        return cls(**dict(settings or {}))
    except TypeError as err:
        raise TypeError(f"bad settings for method {method!r}: {err}") from err


def _model_dir(root: Path, method: str) -> Path:
    return Path(root) / method / "model"


def train(
    root: str | Path,
    *,
    method: str,
    settings: Mapping | None = None,
    train_split: str = "Train",
    val_split: str = "Valid",
) -> dict:
    """Train a learned method on a dataset (resumes from its checkpoint; a no-op for classical methods).

    Parameters
    ----------
    root : path
        Dataset root.
    method : str
        Registered method name (see :data:`cosmobench.cmb.methods.METHODS`).
    settings : mapping, optional
        The method's keyword settings.
    train_split, val_split : str
        Splits used for training and validation.

    Returns
    -------
    dict
        Training facts reported by the method (epochs, seconds, maps/s, losses), plus ``method``.
    """
    dataset = CMBDataset(root)
    model = _build(method, settings)
    t0 = time.perf_counter()
    facts = dict(
        model.fit(dataset, _model_dir(dataset.root, method), train_split=train_split, val_split=val_split) or {}
    )
    facts.setdefault("seconds", time.perf_counter() - t0)
    facts["method"] = method
    write_json(Path(root) / method / "train.json", facts)
    return facts


def _predict_one(root: str, method: str, settings: dict, split: str, bands: list[str] | None, i: int) -> float:
    """Predict one simulation unless done; returns seconds spent (0 when skipped)."""
    out = pred_path(root, method, split, i)
    if out.is_file():
        return 0.0
    dataset = CMBDataset(root)
    model = _load(method, settings, dataset)
    obs = dataset.load_obs(split, i, bands)
    channels = [dataset.channel(b) for b in obs]
    t0 = time.perf_counter()
    pred = np.asarray(model.predict(obs, channels), dtype=np.float64)
    seconds = time.perf_counter() - t0
    if pred.shape != (obs[channels[0].band].shape[-1],):
        raise RuntimeError(
            f"method {method!r} returned shape {pred.shape}, expected one map of "
            f"{obs[channels[0].band].shape[-1]} pixels"
        )
    write_healpix(out, pred, unit="uK_CMB", column_names=["TEMPERATURE"])
    return seconds


_LOADED: dict = {}


def _is_learned(method: str) -> bool:
    """Learned methods are the ones that can ``load`` a trained model."""
    return hasattr(get_method(method), "load")


def _load(method: str, settings: dict, dataset: CMBDataset):
    """Build the method once per process (learned methods load their trained weights)."""
    key = (method, repr(sorted(settings.items())), str(dataset.root))
    if key not in _LOADED:
        if _is_learned(method):
            _build(method, settings)  # validates the settings
            model = get_method(method).load(_model_dir(dataset.root, method), device=settings.get("device", "auto"))
        else:
            model = _build(method, settings)
        _LOADED.clear()
        _LOADED[key] = model
    return _LOADED[key]


def separate(
    root: str | Path,
    *,
    method: str,
    settings: Mapping | None = None,
    split: str = "Test",
    executor: str = "serial",
    workers: int = 1,
    scheduler_address: str | None = None,
    progress: bool = True,
) -> dict:
    """Predict the CMB of every simulation of ``split`` with ``method`` (resumable).

    Parameters
    ----------
    root : path
        Dataset root.
    method : str
        Registered method name.
    settings : mapping, optional
        The method's keyword settings (the same as for :func:`train`).
    split : str
        Split to predict.
    executor, workers, scheduler_address
        See :func:`cosmobench.core.executor.map_tasks`.
    progress : bool
        Show a progress bar.

    Returns
    -------
    dict
        ``method``, ``split``, ``predicted``, ``skipped``, ``seconds_per_map`` (median over the predicted maps).
    """
    dataset = CMBDataset(root)
    settings = dict(settings or {})
    model = _build(method, settings)
    if _is_learned(method) and not _model_dir(dataset.root, method).exists():
        raise FileNotFoundError(
            f"method {method!r} is not trained for {root}; run `cosmobench cmb train method={method}` first"
        )
    info_path = method_info_path(dataset.root, method)
    info = {"method": method, "settings": settings, "output_beam_arcmin": model.output_beam_arcmin}
    if info_path.is_file() and read_json(info_path) != info:
        raise ValueError(
            f"{info_path.parent} holds predictions made with other settings; delete that folder "
            "to predict again with the new settings"
        )
    write_json(info_path, info)
    indices = dataset.sim_indices(split)
    if not indices:
        raise ValueError(f"split {split!r} of {root} has no finished simulations")
    bands = list(getattr(model, "bands", None) or dataset.bands)
    fn = partial(_predict_one, str(dataset.root), method, settings, split, bands)
    seconds = map_tasks(
        fn,
        indices,
        executor=executor,
        workers=workers,
        scheduler_address=scheduler_address,
        desc=f"separate {method}",
        unit="map",
        progress=progress,
    )
    done = [s for s in seconds if s > 0]
    return {
        "method": method,
        "split": split,
        "predicted": len(done),
        "skipped": len(seconds) - len(done),
        "seconds_per_map": float(np.median(done)) if done else 0.0,
    }
