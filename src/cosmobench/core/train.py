"""The one training loop of cosmobench: UNets, score networks and CNNs all train through :func:`fit`.

``fit`` takes a model, training and validation data, and a ``loss_fn(model, batch) -> scalar tensor``. It logs
the true mean loss of each epoch (every sample weighted once), writes a resumable checkpoint (model,
optimiser, scheduler, EMA, epoch, history, config) after each epoch, keeps the best-validation weights (the
weights before training among the candidates when asked: a residual corrector whose untrained state is its base
method), and re-seeds torch at each epoch from the run seed so a resumed run continues exactly as an
uninterrupted one.
"""

from __future__ import annotations

import copy
import csv
import io
import math
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .io import atomic_path
from .runtime import resolve_device, retain_freed_memory
from .seeds import torch_seed

__all__ = ["fit", "load_checkpoint", "save_state", "iterate_batches"]

Batch = Sequence[torch.Tensor]
Data = Sequence[torch.Tensor] | torch.utils.data.Dataset


def iterate_batches(
    data: Data, batch_size: int, *, shuffle: bool, generator: torch.Generator | None = None, num_workers: int = 0
):
    """Yield batches (tuples of tensors) from ``data``.

    ``data`` is either a tuple of equally long tensors (sliced directly, the fast path for in-memory or
    memory-mapped arrays) or a :class:`torch.utils.data.Dataset` (through a ``DataLoader``).
    """
    if isinstance(data, (tuple, list)):
        n = len(data[0])
        order = torch.randperm(n, generator=generator) if shuffle else torch.arange(n)
        for start in range(0, n, batch_size):
            idx = order[start : start + batch_size]
            yield tuple(torch.as_tensor(d[idx.numpy()] if isinstance(d, np.ndarray) else d[idx]) for d in data)
    else:
        loader = torch.utils.data.DataLoader(
            data, batch_size=batch_size, shuffle=shuffle, generator=generator, num_workers=num_workers
        )
        yield from loader


def _num_samples(data: Data) -> int:
    return len(data[0]) if isinstance(data, (tuple, list)) else len(data)


def _batch_len(batch) -> int:
    first = batch[0] if isinstance(batch, (tuple, list)) else batch
    return len(first)


def _run_epoch(
    model,
    data,
    loss_fn,
    batch_size,
    device,
    *,
    optimizer=None,
    scheduler=None,
    generator=None,
    grad_clip=None,
    ema=None,
    ema_decay=0.0,
    amp_dtype=None,
    num_workers=0,
) -> float | list[float]:
    """One pass over ``data``; returns the sample-weighted mean loss (a list for a loss with one value per group
    of parameters, in validation). Trains when ``optimizer`` is given."""
    training = optimizer is not None
    model.train(training)
    total, count = torch.zeros((), dtype=torch.float64, device=device), 0
    with torch.set_grad_enabled(training):
        for batch in iterate_batches(data, batch_size, shuffle=training, generator=generator, num_workers=num_workers):
            batch = tuple(b.to(device, non_blocking=True) for b in batch)
            with torch.autocast(device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
                loss = loss_fn(model, batch)
            if training:
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                if grad_clip:
                    torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
                optimizer.step()
                if scheduler is not None:
                    scheduler.step()
                if ema is not None:
                    with torch.no_grad():
                        for e, p in zip(ema.values(), model.state_dict().values()):
                            if e.dtype.is_floating_point:
                                e.mul_(ema_decay).add_(p.detach(), alpha=1 - ema_decay)
                            else:
                                e.copy_(p)
            n = _batch_len(batch)
            total = total + loss.detach().double() * n  # summed on the device: no host sync per batch
            count += n
    model.train(True)
    mean = (total / max(count, 1)).cpu()
    return float(mean) if mean.ndim == 0 else mean.tolist()


def fit(
    model: torch.nn.Module,
    train_data: Data,
    val_data: Data | None = None,
    *,
    loss_fn: Callable[[torch.nn.Module, Batch], torch.Tensor],
    epochs: int,
    batch_size: int = 32,
    lr: float = 1e-3,
    optimizer: Callable[[Any], torch.optim.Optimizer] | None = None,
    scheduler: Callable[[torch.optim.Optimizer], Any] | None = None,
    grad_clip: float | None = None,
    ema_decay: float | None = None,
    amp: bool = False,
    device: str | torch.device | None = None,
    ckpt: Path | str | None = None,
    resume: bool = True,
    config: dict | None = None,
    seed: int = 0,
    log_csv: Path | str | None = None,
    on_epoch_end: Callable[[int, dict], None] | None = None,
    progress: bool = True,
    num_workers: int = 0,
    score_initial: bool = False,
    groups: Mapping[str, str] | None = None,
) -> dict[str, list[float]]:
    """Train ``model`` and return its per-epoch history.

    Parameters
    ----------
    model : torch.nn.Module
        Trained in place; at the end it holds the best-validation weights (the last weights without
        validation data; the EMA weights when ``ema_decay`` is set).
    train_data, val_data : tuple of tensors/arrays or Dataset
        Training and validation samples. Tuples are sliced directly (fast path).
    loss_fn : callable
        ``loss_fn(model, batch) -> scalar tensor``, the mean loss over the batch.
    epochs : int
        Total number of epochs (a resumed run trains only the missing ones).
    batch_size, lr : int, float
        Batch size and learning rate of the default Adam optimiser.
    optimizer : callable, optional
        ``optimizer(model.parameters()) -> Optimizer``; default ``Adam(lr=lr)``.
    scheduler : callable, optional
        ``scheduler(optimizer) -> LRScheduler``, stepped after every optimiser step.
    grad_clip : float, optional
        Clip the global gradient norm.
    ema_decay : float, optional
        Keep an exponential moving average of the weights (e.g. 0.999) and evaluate with it.
    amp : bool
        bfloat16 autocast (used on CUDA only).
    device : str or torch.device, optional
        "auto" or None: CUDA when available, else CPU (:func:`~cosmobench.core.runtime.resolve_device`). On the
        CPU the process keeps freed memory for reuse (:func:`~cosmobench.core.runtime.retain_freed_memory`).
    ckpt : path, optional
        ``last.pt`` checkpoint written atomically after each epoch (``best.pt`` beside it); if it exists and
        ``resume`` is true, training continues from it.
    config : dict, optional
        Resolved configuration stored in the checkpoints.
    seed : int
        Run seed; epoch ``e`` re-seeds torch with stream ``(seed, "epoch", e)``.
    log_csv : path, optional
        Per-epoch CSV log (epoch, train_loss, val_loss, lr, seconds, samples_per_s).
    on_epoch_end : callable, optional
        ``on_epoch_end(epoch, record)``, e.g. optuna pruning (raising stops training).
    progress : bool
        Show a progress bar over epochs.
    num_workers : int
        DataLoader workers for Dataset inputs.
    score_initial : bool
        Score the weights before the first epoch on the validation data and keep them, as epoch -1, unless an
        epoch's validation loss is lower (needs ``val_data``): training cannot end worse on validation than
        the model it started from.
    groups : mapping of str to str, optional
        Independent groups of parameters, each named by a substring of its state-dict keys (e.g. ``{"T":
        "net_t.", "P": "net_p."}`` for two networks side by side): in validation ``loss_fn`` returns one loss per
        group (a 1-D tensor, in this order), and each group keeps its own best weights (and initial ones with
        ``score_initial``); the other keys follow the first kept weights. ``val_loss`` is the mean over groups.
        Without validation data the groups are not used.

    Returns
    -------
    dict of lists
        ``epoch``, ``train_loss``, ``val_loss`` (NaN without validation data), ``lr``, ``seconds``,
        ``samples_per_s``; one-element lists: ``best_val_loss`` (the mean of the groups' best), ``best_epoch``
        (-1: the initial weights; None without validation data and ``epochs`` = 0; with ``groups`` a dict of
        each group's) and ``initial_val_loss`` (NaN unless ``score_initial``).
    """
    from tqdm.auto import tqdm

    if epochs < 0:
        raise ValueError(f"epochs must be >= 0, got {epochs}")
    device = resolve_device(device)
    if device.type == "cpu":
        retain_freed_memory()  # activations are reused across steps, not faulted in from the kernel each time
    model.to(device)
    opt = optimizer(model.parameters()) if optimizer else torch.optim.Adam(model.parameters(), lr=lr)
    sched = scheduler(opt) if scheduler else None
    ema = copy.deepcopy(model.state_dict()) if ema_decay else None
    amp_dtype = torch.bfloat16 if amp and device.type == "cuda" else None
    keys = ("epoch", "train_loss", "val_loss", "lr", "seconds", "samples_per_s")
    history: dict[str, list[float]] = {k: [] for k in keys}
    chosen = dict(groups) if groups and val_data is not None else {"": ""}  # name -> state-dict key substring
    names, parts = list(chosen), list(chosen.values())
    best_vals, best_epochs = [math.inf] * len(names), [None] * len(names)
    best_state, initial_val, start = None, math.nan, 0

    ckpt = Path(ckpt) if ckpt is not None else None

    def save_best(epoch: int) -> None:
        if ckpt is not None:
            best = {"model": best_state, "epoch": epoch, "group_epochs": best_epochs, "config": config}
            save_state(ckpt.with_name("best.pt"), best)

    if ckpt is not None and resume and ckpt.exists():
        state = load_checkpoint(ckpt, model)
        opt.load_state_dict(state["optimizer"])
        if sched is not None and state.get("scheduler") is not None:
            sched.load_state_dict(state["scheduler"])
        if ema is not None and state.get("ema") is not None:
            ema = {k: v.to(device) for k, v in state["ema"].items()}
        history = {k: list(state["history"].get(k, [])) for k in keys}
        best_vals = list(state.get("best_group_loss", [state.get("best_val_loss", math.inf)]))
        initial_val = state.get("initial_val_loss", math.nan)
        best_path = ckpt.with_name("best.pt")
        if best_path.exists():
            best = torch.load(best_path, map_location=device, weights_only=True)
            best_state, best_epochs = best["model"], list(best.get("group_epochs", [int(best["epoch"])]))
        start = int(state["epoch"]) + 1
        if len(best_vals) != len(names):  # a run started without these groups: its best holds for each
            best_vals, best_epochs = best_vals[:1] * len(names), best_epochs[:1] * len(names)
    elif score_initial and val_data is not None:
        initial = _run_epoch(model, val_data, loss_fn, batch_size, device, amp_dtype=amp_dtype, num_workers=num_workers)
        best_vals = _per_group(initial, names)
        initial_val, best_epochs = float(np.mean(best_vals)), [-1] * len(names)
        best_state = copy.deepcopy(model.state_dict())
        save_best(-1)

    n_train = _num_samples(train_data)
    bar = tqdm(range(start, epochs), desc="train", unit="epoch", disable=not progress, dynamic_ncols=True)
    for epoch in bar:
        torch.manual_seed(torch_seed(seed, "epoch", epoch))
        gen = torch.Generator().manual_seed(torch_seed(seed, "shuffle", epoch))
        t0 = time.perf_counter()
        train_loss = _run_epoch(
            model,
            train_data,
            loss_fn,
            batch_size,
            device,
            optimizer=opt,
            scheduler=sched,
            generator=gen,
            grad_clip=grad_clip,
            ema=ema,
            ema_decay=ema_decay or 0.0,
            amp_dtype=amp_dtype,
            num_workers=num_workers,
        )
        seconds = time.perf_counter() - t0
        val_loss, scores = math.nan, [train_loss]
        if val_data is not None:
            eval_model = _with_weights(model, ema) if ema is not None else model
            scores = _per_group(
                _run_epoch(
                    eval_model, val_data, loss_fn, batch_size, device, amp_dtype=amp_dtype, num_workers=num_workers
                ),
                names,
            )
            val_loss = float(np.mean(scores))
        record = {
            "epoch": epoch,
            "train_loss": train_loss,
            "val_loss": val_loss,
            "lr": opt.param_groups[0]["lr"],
            "seconds": seconds,
            "samples_per_s": n_train / seconds,
        }
        for k in keys:
            history[k].append(record[k])
        improved = [g for g, score in enumerate(scores) if score < best_vals[g]]
        if improved:
            current = ema if ema is not None else model.state_dict()
            if best_state is None:
                best_state = copy.deepcopy(current)
            else:
                for key in current:
                    if any(parts[g] in key for g in improved):
                        best_state[key] = current[key].detach().clone()
            for g in improved:
                best_vals[g], best_epochs[g] = scores[g], epoch
            save_best(epoch)
        if ckpt is not None:
            save_state(
                ckpt,
                {
                    "model": model.state_dict(),
                    "optimizer": opt.state_dict(),
                    "scheduler": sched.state_dict() if sched is not None else None,
                    "ema": ema,
                    "epoch": epoch,
                    "history": history,
                    "best_val_loss": float(np.mean(best_vals)),
                    "best_group_loss": best_vals,
                    "initial_val_loss": initial_val,
                    "config": config,
                },
            )
        if log_csv is not None:
            _write_csv(Path(log_csv), history)
        bar.set_postfix(train=f"{train_loss:.4g}", val=f"{val_loss:.4g}")
        if on_epoch_end is not None:
            on_epoch_end(epoch, record)

    if best_state is not None:
        model.load_state_dict(best_state)
    elif ema is not None:
        model.load_state_dict(ema)
    best_epoch = dict(zip(names, best_epochs)) if len(names) > 1 else best_epochs[0]
    history.update(best_val_loss=[float(np.mean(best_vals))], best_epoch=[best_epoch], initial_val_loss=[initial_val])
    return history


def _per_group(loss: float | list[float], names: Sequence[str]) -> list[float]:
    """A validation loss as one value per group of :func:`fit` (a scalar loss for one group)."""
    values = [loss] if isinstance(loss, float) else list(loss)
    if len(values) != len(names):
        raise ValueError(f"loss_fn returned {len(values)} validation loss(es) for the parameter groups {names}")
    return values


def _with_weights(model: torch.nn.Module, state: dict) -> torch.nn.Module:
    clone = copy.deepcopy(model)
    clone.load_state_dict(state)
    return clone


def save_state(path: Path | str, state: dict) -> None:
    """``torch.save`` ``state`` to ``path`` atomically, with bytes that depend on ``state`` only.

    Saving to a file name stores that name inside the archive; the temporary name would make two identical
    trainings give different bytes, so the archive is built in memory under a fixed name.
    """
    buffer = io.BytesIO()
    torch.save(state, buffer)
    with atomic_path(path) as tmp:
        tmp.write_bytes(buffer.getvalue())


def _write_csv(path: Path, history: dict[str, list[float]]) -> None:
    keys = [k for k in history if k != "best_val_loss"]
    with atomic_path(path) as tmp, open(tmp, "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(keys)
        writer.writerows(zip(*(history[k] for k in keys)))


def load_checkpoint(path: Path | str, model: torch.nn.Module | None = None) -> dict:
    """Load a checkpoint written by :func:`fit` (state dicts only, ``weights_only``), optionally into ``model``."""
    path = Path(path)
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise
    except Exception as err:
        raise RuntimeError(f"{path} is not a readable cosmobench checkpoint ({err}); delete it to retrain.") from err
    if model is not None:
        model.load_state_dict(state["model"])
    return state
