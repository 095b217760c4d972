"""Training ``o3_err`` with the moment loss through :func:`cosmobench.core.train.fit` (the one training loop).

The recipe is the CMD benchmark's: AdamW with betas (0.5, 0.999), a triangular CyclicLR from 1e-9 to ``lr`` with
``cycle_steps`` up and down (500 in the reference), stepped every batch, best-validation checkpointing. Unlike
the reference:

- an **epoch is one pass over every training map**, each seen once under one random element of the dihedral group
  (the reference stops its epochs after 18,000 maps and its flip draw never flips);
- input standardisation comes from the training simulations only and is stored with the model, together with the
  label scaling (the training suite's prior box), the fields, the split indices and the settings;
- the validation loss is the sample-weighted mean of batch moment losses (``fit``'s definition), not the log of
  epoch-averaged terms; with large validation batches the two agree closely.

A trained model is a folder with ``model.pt`` (weights + metadata, loadable with ``weights_only``), ``model.json``
(the metadata), ``losses.csv`` and fit's ``last.pt``/``best.pt`` checkpoints (so an interrupted run resumes).
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..core.io import atomic_path, read_json, write_json
from ..core.train import fit
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

__all__ = [
    "TrainSettings",
    "settings_from",
    "PreparedData",
    "prepare_data",
    "train_model",
    "load_model",
    "fields_tag",
    "set_threads",
    "model_dir",
]


@dataclass(frozen=True, kw_only=True)
class TrainSettings:
    """Everything that defines a training run; unknown keys raise ``TypeError``.

    Attributes
    ----------
    params : tuple of int
        Parameter columns in the loss (0 Omega_m, 1 sigma_8, 2-5 astrophysical). All 12 outputs exist anyway.
    hidden, dropout : int, float
        o3_err width multiplier h and dropout rate.
    lr, weight_decay : float
        Peak learning rate of the cycle and AdamW weight decay.
    betas : (float, float)
        AdamW betas; the reference uses (0.5, 0.999).
    epochs, batch_size : int
        Full passes over the training maps, and the batch size (128 in the reference).
    cycle_steps : int
        CyclicLR step_size_up = step_size_down, in batches (500 in the reference).
    base_lr : float
        Bottom of the learning-rate cycle (1e-9 in the reference).
    split : (float, float, float)
        Train/valid/test fractions of the simulations (CMD: 900/50/50).
    split_seed : int
        Seed of the split permutation.
    maps_per_sim : int
        Train and validate on the first ``maps_per_sim`` maps of each simulation, spread over the three projection
        axes (15 = all; fewer for quick CPU runs). Tests always use all 15.
    log_astro : bool
        Scale the log-uniform astrophysical labels in log (the reference scales them linearly).
    smoothing : float
        Gaussian smoothing of the inputs, pixels (0 = none).
    set_name : str
        CMD set (``LH``).
    device : str, optional
        ``cuda``, ``cpu``...; default CUDA when available.
    amp : bool
        bfloat16 autocast on CUDA.
    channels_last : bool
        Channels-last memory format (faster convolutions on GPUs).
    in_memory : bool, optional
        Hold the standardised maps in memory (default: when they take < 8 GB).
    device_data : bool
        Copy the standardised training and validation maps to ``device`` once (GPU training without a host-side
        input pipeline; CMD's 13,500 training maps take 3.5 GB per field at 256^2).
    progress : bool
        Show fit's progress bar.
    """

    params: tuple[int, ...] = (0, 1, 2, 3, 4, 5)
    hidden: int = 8
    dropout: float = 0.2
    lr: float = 1e-3
    weight_decay: float = 1e-5
    betas: tuple[float, float] = (0.5, 0.999)
    epochs: int = 200
    batch_size: int = 128
    cycle_steps: int = 500
    base_lr: float = 1e-9
    split: tuple[float, float, float] = (0.9, 0.05, 0.05)
    split_seed: int = 1
    maps_per_sim: int = 15
    log_astro: bool = True
    smoothing: float = 0.0
    set_name: str = "LH"
    device: str | None = None
    amp: bool = False
    channels_last: bool = True
    in_memory: bool | None = None
    device_data: bool = False
    progress: bool = False

    def __post_init__(self):
        if not self.params or any(p not in range(len(PARAM_NAMES)) for p in self.params):
            raise ValueError(f"params must be column indices in 0..5, got {self.params}")
        if self.epochs < 1 or self.batch_size < 2 or self.cycle_steps < 1 or self.hidden < 1:
            raise ValueError("epochs, cycle_steps and hidden must be >= 1 and batch_size >= 2 (moment loss)")
        if not 1 <= self.maps_per_sim <= 15:
            raise ValueError(f"maps_per_sim must be in 1..15, got {self.maps_per_sim}")
        if not 0 < self.lr < 1 or self.weight_decay < 0:
            raise ValueError(f"lr must be in (0, 1) and weight_decay >= 0, got {self.lr}, {self.weight_decay}")


def settings_from(settings: TrainSettings | dict | None = None, **overrides) -> TrainSettings:
    """A :class:`TrainSettings` from a dict (e.g. a config section; lists become tuples) and overrides."""
    if isinstance(settings, TrainSettings):
        base = dataclasses.asdict(settings)
    else:
        base = dict(settings or {})
    base.update(overrides)
    for key in ("params", "betas", "split"):
        if key in base and base[key] is not None:
            base[key] = tuple(base[key])
    try:
        return TrainSettings(**base)
    except TypeError as err:
        valid = [f.name for f in dataclasses.fields(TrainSettings)]
        raise TypeError(f"{err}; valid training keys: {valid}") from None


def fields_tag(fields: Sequence[str]) -> str:
    """Folder-name tag of a field list, e.g. ``Mgas_T`` (order kept: it is the channel order)."""
    return "_".join(fields)


def set_threads(n: int | None = None) -> int:
    """Cap torch's intra-op threads and return the cap.

    ``n``, else ``$COSMOBENCH_THREADS``, else ``min(2, cores)``. The cap never depends on the machine's load, so
    a run's numbers do not either; on a machine shared with other jobs set ``COSMOBENCH_THREADS=1`` (measured on 2
    busy shared cores: o3_err at 64^2 trains at 19 images/s with 2 threads, 347 with 1).
    """
    import os

    cores = len(os.sched_getaffinity(0))
    env = os.environ.get("COSMOBENCH_THREADS")
    if n is None:
        n = int(env) if env else min(2, cores)
    if torch.get_num_threads() > n:
        torch.set_num_threads(n)
    return n


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
    settings: TrainSettings


def prepare_data(data_dir: Path | str, suite: str, fields: Sequence[str], settings: TrainSettings) -> PreparedData:
    """Split by simulation, compute the training-only field statistics, and build train/valid arrays."""
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
        stack = MapStack(data_dir, suite, stats, maps, set_name=settings.set_name, in_memory=settings.in_memory)
        labels = torch.as_tensor(scaler.normalise(theta[maps // MAPS_PER_SIM]), dtype=torch.float32)
        if settings.device_data:
            dev = torch.device(settings.device or ("cuda" if torch.cuda.is_available() else "cpu"))
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


def _log_flags(settings: TrainSettings) -> tuple[bool, ...]:
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


def _optimizer(settings: TrainSettings):
    return lambda p: torch.optim.AdamW(p, lr=settings.lr, weight_decay=settings.weight_decay, betas=settings.betas)


def _scheduler(settings: TrainSettings):
    return lambda opt: torch.optim.lr_scheduler.CyclicLR(
        opt,
        base_lr=settings.base_lr,
        max_lr=settings.lr,
        step_size_up=settings.cycle_steps,
        step_size_down=settings.cycle_steps,
        cycle_momentum=False,
    )


def train_model(
    data: PreparedData,
    run_dir: Path | str,
    settings: TrainSettings,
    *,
    seed: int = 0,
    on_epoch_end: Callable[[int, dict], None] | None = None,
) -> dict:
    """Train one o3_err (or load it when ``run_dir/model.pt`` exists with the same settings).

    Parameters
    ----------
    data : PreparedData
    run_dir : path
        Output folder (model.pt, model.json, losses.csv, last.pt, best.pt).
    settings : TrainSettings
        Model and optimiser settings (the data-related ones were used by :func:`prepare_data`).
    seed : int
        Run seed (weights initialisation, shuffling, augmentation draws).
    on_epoch_end : callable, optional
        Passed to fit, e.g. optuna reporting and pruning.

    Returns
    -------
    dict
        ``model_path``, ``best_val_loss``, ``epochs``, ``seconds``, ``train_maps_per_s``, ``n_parameters``.
    """
    run_dir = Path(run_dir)
    model_path = run_dir / "model.pt"
    config = {
        "suite": data.suite,
        "fields": list(data.fields),
        "npix": data.npix,
        "seed": seed,
        "settings": _plain(dataclasses.asdict(settings)),
        "data_dir": str(data.data_dir),
    }
    config_path = run_dir / "config.json"
    if config_path.exists():
        old = read_json(config_path)
        keep = ("suite", "fields", "npix", "seed")
        same = all(old.get(k) == config[k] for k in keep) and _same_settings(old["settings"], config["settings"])
        if not same:
            raise ValueError(f"{run_dir} holds a run with other settings; delete it or choose another out_dir")
    else:
        write_json(config_path, config)
    if model_path.exists():
        return read_json(run_dir / "model.json")["summary"]

    torch.manual_seed(_torch_init_seed(seed))
    model = O3Err(len(data.fields), settings.hidden, settings.dropout, data.npix, len(PARAM_NAMES))
    if settings.channels_last:
        model = model.to(memory_format=torch.channels_last)
    t0 = time.perf_counter()
    history = fit(
        model,
        data.train,
        data.valid,
        loss_fn=make_loss_fn(settings.params, settings.channels_last),
        epochs=settings.epochs,
        batch_size=settings.batch_size,
        lr=settings.lr,
        optimizer=_optimizer(settings),
        scheduler=_scheduler(settings),
        amp=settings.amp,
        device=settings.device,
        ckpt=run_dir / "last.pt",
        config=config,
        seed=seed,
        log_csv=run_dir / "losses.csv",
        on_epoch_end=on_epoch_end,
        progress=settings.progress,
    )
    seconds = time.perf_counter() - t0
    speeds = [s for s in history["samples_per_s"] if math.isfinite(s)]
    summary = {
        "model_path": str(model_path),
        "best_val_loss": float(history["best_val_loss"][0]),
        "epochs": len(history["epoch"]),
        "seconds": seconds,
        "train_maps_per_s": float(np.median(speeds)) if speeds else math.nan,
        "n_parameters": sum(p.numel() for p in model.parameters()),
    }
    meta = {
        **config,
        "hidden": settings.hidden,
        "dropout": settings.dropout,
        "params": list(settings.params),
        "stats": data.stats.as_dict(),
        "labels": data.scaler.as_dict(),
        "split": {k: v.tolist() for k, v in data.split.items()},
        "summary": summary,
        "history": {k: list(map(float, v)) for k, v in history.items()},
    }
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    with atomic_path(model_path) as tmp:
        torch.save({"model": state, "meta": meta}, tmp)
    write_json(run_dir / "model.json", meta)
    return summary


def _torch_init_seed(seed: int) -> int:
    from ..core.seeds import torch_seed

    return torch_seed(seed, "multifield", "init")


def _plain(d: dict) -> dict:
    return {k: list(v) if isinstance(v, tuple) else v for k, v in d.items()}


_RUNTIME_ONLY = ("progress", "device", "in_memory", "device_data")  # settings that do not change the trained model


def _same_settings(a: dict, b: dict) -> bool:
    return {k: v for k, v in a.items() if k not in _RUNTIME_ONLY} == {
        k: v for k, v in b.items() if k not in _RUNTIME_ONLY
    }


def model_dir(out_dir: Path | str, suite: str, fields: Sequence[str], settings: TrainSettings, seed: int = 0) -> Path:
    """Folder of the model trained on ``suite``/``fields`` with ``settings`` and ``seed``: a pure function.

    ``out_dir/models/{suite}_{fields}_{hash}`` with a hash of the settings that define the model (device and
    progress excluded), so stages that need the same model (train, robustness, fields, test, calibrate) share it.
    """
    import hashlib
    import json

    spec = {k: v for k, v in _plain(dataclasses.asdict(settings)).items() if k not in _RUNTIME_ONLY}
    digest = hashlib.sha256(json.dumps({"settings": spec, "seed": seed}, sort_keys=True).encode()).hexdigest()[:10]
    return Path(out_dir) / "models" / f"{suite}_{fields_tag(fields)}_{digest}"


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
