"""Training ``o3_err`` with the moment loss through :func:`cosmobench.core.train.fit` (the one training loop).

The reference recipe is the CMD benchmark's: AdamW with betas (0.5, 0.999), a triangular CyclicLR from 1e-9 to
``lr`` with ``cycle_steps`` up and down (500 in the reference), stepped every batch, best-validation checkpointing
(``training.schedule=cyclic``). The demo's default is a one-cycle schedule over ``epochs`` with early stopping on
the validation loss (``training.patience``), chosen on the validation split (docs/multifield.md). Unlike the
reference:

- an **epoch is one pass over every training map**, each seen once under one random element of the dihedral group
  (the reference stops its epochs after 18,000 maps and its flip draw never flips);
- input standardisation comes from the training simulations only and is stored with the model, together with the
  label scaling (the training suite's prior box), the fields, the split indices and the settings;
- the validation loss is the sample-weighted mean of batch moment losses (``fit``'s definition), not the log of
  epoch-averaged terms; with large validation batches the two agree closely.

A trained model is a folder with ``model.pt`` (weights + metadata, loadable with ``weights_only``; its bytes depend
on the trained model only, so identical trainings give identical files), ``model.json`` (the metadata with the
training history and timings), ``losses.csv`` and fit's ``last.pt``/``best.pt`` checkpoints (so an interrupted run
resumes). The settings are :class:`~cosmobench.multifield.settings.TrainingSettings` (the ``training:`` section).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..core.io import read_json, write_json
from ..core.runtime import resolve_device
from ..core.settings import as_dict, build
from ..core.train import fit, load_checkpoint, save_state
from .augment import random_transform
from .cmd import (
    MAPS_PER_SIM,
    PARAM_NAMES,
    FieldStats,
    LabelScaler,
    MapStack,
    field_stats,
    load_params,
    sims_to_maps,
    split_sims,
    suite_prior,
)
from .loss import moment_loss
from .network import O3Err
from .settings import TrainingSettings

__all__ = [
    "training_settings",
    "PreparedData",
    "prepare_data",
    "train_model",
    "load_model",
    "fields_tag",
    "should_stop",
]


def training_settings(settings: TrainingSettings | dict | None = None, **overrides) -> TrainingSettings:
    """A :class:`~cosmobench.multifield.settings.TrainingSettings` from a dict (a config section) and overrides.

    Raises
    ------
    TypeError
        Unknown keys, naming them and listing the valid ones.
    ValueError
        Invalid values (see the class).
    """
    return build(TrainingSettings, settings, **overrides)


def fields_tag(fields: Sequence[str]) -> str:
    """Folder-name tag of a field list, e.g. ``Mgas_T`` (order kept: it is the channel order)."""
    return "_".join(fields)


@dataclass
class PreparedData:
    """Standardised training/validation maps and normalised labels of one suite and field list."""

    data_dir: Path
    suite: str
    fields: tuple[str, ...]
    npix: int
    split: dict[str, np.ndarray]
    stats: FieldStats
    scaler: LabelScaler
    train: tuple
    valid: tuple
    settings: TrainingSettings


def prepare_data(
    data_dir: Path | str,
    suite: str,
    fields: Sequence[str],
    settings: TrainingSettings,
    *,
    in_memory: bool | None = None,
    device_data: bool = False,
    device: str | torch.device | None = "auto",
) -> PreparedData:
    """Split by simulation, compute the training-only field statistics, and build train/valid arrays.

    Parameters
    ----------
    data_dir, suite, fields : where the CMD files are, and the input channels in order
    settings : TrainingSettings
    in_memory : bool, optional
        Hold the standardised maps in memory (default: when they take < 8 GB).
    device_data : bool
        Copy the standardised maps and labels to ``device`` once (GPU training without a host-side pipeline).
    device : str or torch.device
        Where ``device_data`` puts them ("auto": CUDA when available).
    """
    data_dir = Path(data_dir)
    fields = tuple(fields)
    if not fields:
        raise ValueError("fields is empty; give at least one field, e.g. fields=[Mtot]")
    theta = load_params(data_dir, suite, settings.set_name)
    split = split_sims(len(theta), settings.split, settings.split_seed)
    train_maps = _subsample(sims_to_maps(split["train"]), settings.maps_per_sim)
    stats = field_stats(data_dir, suite, fields, train_maps, set_name=settings.set_name, smoothing=settings.smoothing)
    scaler = LabelScaler(suite_prior(suite), log=_log_flags(settings))
    parts = {}
    for name in ("train", "valid"):
        maps = _subsample(sims_to_maps(split[name]), settings.maps_per_sim)
        stack = MapStack(data_dir, suite, stats, maps, set_name=settings.set_name, in_memory=in_memory)
        labels = torch.as_tensor(scaler.normalise(theta[maps // MAPS_PER_SIM]), dtype=torch.float32)
        if device_data:
            dev = resolve_device(device)
            stack = torch.as_tensor(stack[np.arange(len(stack))]).to(dev)
            labels = labels.to(dev)
        parts[name] = (stack, labels)
    npix = parts["train"][0].shape[-1]
    return PreparedData(data_dir, suite, fields, npix, split, stats, scaler, parts["train"], parts["valid"], settings)


def _subsample(maps: np.ndarray, per_sim: int) -> np.ndarray:
    """Keep ``per_sim`` of the 15 maps of each simulation: in-sim indices 0, 5, 10, 1, 6, 11, ... (axes first)."""
    if per_sim >= MAPS_PER_SIM:
        return maps
    keep = np.array([axis * 5 + slab for slab in range(5) for axis in range(3)][:per_sim])
    return maps[np.isin(maps % MAPS_PER_SIM, keep)]


def _log_flags(settings: TrainingSettings) -> tuple[bool, ...]:
    return (False, False) + (settings.log_astro,) * 4


def make_loss_fn(params: Sequence[int], channels_last: bool) -> Callable:
    """``loss_fn(model, (x, theta))`` for :func:`fit`: random dihedral element per map while training."""
    params = list(params)

    def loss_fn(model: torch.nn.Module, batch) -> torch.Tensor:
        x, theta = batch
        if model.training:
            x = random_transform(x)
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        out = model(x)
        n = theta.shape[1]
        return moment_loss(out[:, :n], out[:, n:], theta, params)

    return loss_fn


def _optimizer(settings: TrainingSettings):
    return lambda p: torch.optim.AdamW(p, lr=settings.lr, weight_decay=settings.weight_decay, betas=settings.betas)


def _scheduler(settings: TrainingSettings, steps_per_epoch: int):
    """``scheduler(optimizer)`` for :func:`fit`, stepped every batch (see ``TrainingSettings.schedule``)."""
    total = settings.epochs * steps_per_epoch
    sched = torch.optim.lr_scheduler
    if settings.schedule == "onecycle":  # momentum not cycled: the AdamW betas stay the recipe's
        return lambda opt: sched.OneCycleLR(opt, max_lr=settings.lr, total_steps=total, cycle_momentum=False)
    if settings.schedule == "cosine":
        return lambda opt: sched.CosineAnnealingLR(opt, T_max=total)
    return lambda opt: sched.CyclicLR(
        opt,
        base_lr=settings.base_lr,
        max_lr=settings.lr,
        step_size_up=settings.cycle_steps,
        step_size_down=settings.cycle_steps,
        cycle_momentum=False,
    )


class _EarlyStop(Exception):
    """Raised from fit's epoch callback when the validation loss stopped improving."""


def should_stop(val_loss: Sequence[float], patience: int) -> bool:
    """Early-stopping rule: the best (lowest) validation loss is ``patience`` or more epochs old.

    Parameters
    ----------
    val_loss : sequence of float
        Validation loss per epoch so far (NaN epochs never count as the best).
    patience : int
        Epochs without improvement tolerated; 0 never stops.
    """
    vals = np.asarray(val_loss, dtype=np.float64)
    if patience <= 0 or not np.isfinite(vals).any():
        return False
    return len(vals) - 1 - int(np.nanargmin(np.where(np.isfinite(vals), vals, np.nan))) >= patience


def train_model(
    data: PreparedData,
    run_dir: Path | str,
    settings: TrainingSettings,
    *,
    seed: int = 0,
    device: str | torch.device | None = "auto",
    progress: bool = True,
    on_epoch_end: Callable[[int, dict], None] | None = None,
) -> dict:
    """Train one o3_err into ``run_dir`` (or return its summary when ``run_dir/model.pt`` exists).

    ``model.pt`` is written last, atomically, with :func:`~cosmobench.core.train.save_state`: weights and the
    metadata that defines the model (no timings, no paths), so identical trainings give byte-identical files. An
    interrupted training resumes from ``last.pt``; the caller's stage record guarantees the settings are the same.

    Parameters
    ----------
    data : PreparedData
    run_dir : path
        Output folder (model.pt, model.json, losses.csv, last.pt, best.pt).
    settings : TrainingSettings
        Model and optimiser settings (the data-related ones were used by :func:`prepare_data`).
    seed : int
        Run seed (weights initialisation, shuffling, augmentation draws).
    device : str or torch.device
        "auto": CUDA when available.
    progress : bool
        Show fit's progress bar.
    on_epoch_end : callable, optional
        Called after every epoch, e.g. optuna reporting and pruning (before the early-stopping check).

    Returns
    -------
    dict
        ``model_path``, ``best_val_loss``, ``best_epoch``, ``epochs`` (trained), ``stopped_early``, ``seconds``,
        ``train_maps_per_s``, ``n_parameters``.
    """
    run_dir = Path(run_dir)
    model_path = run_dir / "model.pt"
    if model_path.exists():
        return read_json(run_dir / "model.json")["summary"]
    config = {
        "suite": data.suite,
        "fields": list(data.fields),
        "npix": data.npix,
        "seed": seed,
        "settings": as_dict(settings),
    }
    torch.manual_seed(_torch_init_seed(seed))
    model = O3Err(len(data.fields), settings.hidden, settings.dropout, data.npix, len(PARAM_NAMES))
    if settings.channels_last:
        model = model.to(memory_format=torch.channels_last)
    ckpt = run_dir / "last.pt"
    val_losses = list(load_checkpoint(ckpt)["history"]["val_loss"]) if ckpt.exists() else []

    def epoch_end(epoch: int, record: dict) -> None:
        if on_epoch_end is not None:
            on_epoch_end(epoch, record)
        val_losses.append(record["val_loss"])
        if should_stop(val_losses, settings.patience):
            raise _EarlyStop

    t0 = time.perf_counter()
    stopped = should_stop(val_losses, settings.patience)  # an early stop interrupted before model.pt was written
    if not stopped:
        try:
            history = fit(
                model,
                data.train,
                data.valid,
                loss_fn=make_loss_fn(settings.params, settings.channels_last),
                epochs=settings.epochs,
                batch_size=settings.batch_size,
                lr=settings.lr,
                optimizer=_optimizer(settings),
                scheduler=_scheduler(settings, math.ceil(len(data.train[1]) / settings.batch_size)),
                amp=settings.amp,
                device=device,
                ckpt=ckpt,
                config=config,
                seed=seed,
                log_csv=run_dir / "losses.csv",
                on_epoch_end=epoch_end,
                progress=progress,
            )
        except _EarlyStop:
            stopped = True
    if stopped:  # fit wrote last.pt (the history) and best.pt (the best weights) before the callback raised
        state = load_checkpoint(ckpt)
        history = {**state["history"], "best_val_loss": [state["best_val_loss"]]}
        model.load_state_dict(torch.load(run_dir / "best.pt", map_location="cpu", weights_only=True)["model"])
    seconds = time.perf_counter() - t0
    speeds = [s for s in history["samples_per_s"] if math.isfinite(s)]
    summary = {
        "model_path": str(model_path),
        "best_val_loss": float(history["best_val_loss"][0]),
        "best_epoch": int(np.nanargmin(history["val_loss"])) if np.isfinite(history["val_loss"]).any() else -1,
        "epochs": len(history["epoch"]),
        "stopped_early": stopped,
        "seconds": seconds,
        "train_maps_per_s": float(np.median(speeds)) if speeds else math.nan,
        "n_parameters": sum(p.numel() for p in model.parameters()),
    }
    if not math.isfinite(summary["best_val_loss"]):
        raise RuntimeError(
            f"the training in {run_dir} diverged (validation loss {summary['best_val_loss']}); lower training.lr "
            "or check the inputs, then rerun with overwrite=true"
        )
    meta = {
        **config,
        "hidden": settings.hidden,
        "dropout": settings.dropout,
        "params": list(settings.params),
        "stats": data.stats.as_dict(),
        "labels": data.scaler.as_dict(),
        "split": {k: v.tolist() for k, v in data.split.items()},
    }
    history = {k: list(map(float, v)) for k, v in history.items()}
    write_json(run_dir / "model.json", {**meta, "data_dir": str(data.data_dir), "summary": summary, "history": history})
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    save_state(model_path, {"model": state, "meta": meta})
    return summary


def _torch_init_seed(seed: int) -> int:
    from ..core.seeds import torch_seed

    return torch_seed(seed, "multifield", "init")


def load_model(path: Path | str, device: str | torch.device | None = None) -> tuple[O3Err, dict]:
    """A trained o3_err and its metadata (fields, stats, label scaling, split, settings) from ``model.pt``."""
    path = Path(path)
    if path.is_dir():
        path = path / "model.pt"
    if not path.is_file():
        raise FileNotFoundError(f"no trained model at {path}; run `cosmobench multifield train` (or search) first")
    bundle = torch.load(path, map_location="cpu", weights_only=True)
    meta = bundle["meta"]
    model = O3Err(len(meta["fields"]), meta["hidden"], meta["dropout"], meta["npix"], len(PARAM_NAMES))
    model.load_state_dict(bundle["model"])
    model.eval()
    if device is not None:
        model.to(device)
    return model, meta
