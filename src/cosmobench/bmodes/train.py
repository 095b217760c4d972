"""Training a (conditional) score model on spectra, through :func:`cosmobench.core.train.fit`.

Data are standardised logs: x = (log(D_l + offset_l) - mean_l) / std_l, per multipole (default) or with one global
mean and std (the prototype's). The clean tensor spectrum can be 0 (r = 0), so its offset is a small floor,
``log_offset_r`` times the r = 1 tensor template (default 1e-4, i.e. the power of r = 1e-4); the observed spectra
are always positive and use no offset. The transforms, the network architecture and the SDE are stored in the
checkpoint (``model.pt``), so :func:`load_score_model` rebuilds everything from the file alone.
"""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import numpy as np
import torch

from ..core.io import write_json, write_npy
from ..core.runtime import resolve_device
from ..core.train import fit, save_state
from .losses import dsm_loss
from .score_net import ScoreModel, ScoreNet1D
from .sde import SDE, get_sde

__all__ = ["SpectrumTransform", "auto_sigma_max", "train_score_model", "load_score_model"]

NORMALIZATIONS = ("per_ell", "global")


@dataclasses.dataclass(frozen=True)
class SpectrumTransform:
    """x = (log(D + offset) - mean) / std and its inverse, per multipole.

    Attributes
    ----------
    offset, mean, std : ndarray, shape (n_ell,)
        ``offset`` in the unit of D (uK^2); ``mean`` and ``std`` of log(D + offset).
    """

    offset: np.ndarray
    mean: np.ndarray
    std: np.ndarray

    @classmethod
    def fit(cls, dl: np.ndarray, offset: np.ndarray | float = 0.0, normalization: str = "per_ell") -> SpectrumTransform:
        """Statistics of log(dl + offset) over samples (per multipole, or one global value)."""
        if normalization not in NORMALIZATIONS:
            raise ValueError(f"unknown normalization {normalization!r}; expected one of {list(NORMALIZATIONS)}")
        dl = np.asarray(dl, dtype=np.float64)
        offset = np.broadcast_to(np.asarray(offset, dtype=np.float64), dl.shape[-1:]).copy()
        if np.any(dl + offset <= 0):
            raise ValueError("D_l + offset must be positive to take its log; raise the offset (log_offset_r)")
        logs = np.log(dl + offset)
        if normalization == "per_ell":
            mean, std = logs.mean(0), logs.std(0)
        else:
            mean, std = np.full(dl.shape[-1], logs.mean()), np.full(dl.shape[-1], logs.std())
        return cls(offset, mean, np.maximum(std, 1e-12))

    def forward(self, dl: np.ndarray) -> np.ndarray:
        """D (..., n_ell) -> x; values with D + offset <= 0 are clipped to a tiny positive number first."""
        return (np.log(np.maximum(np.asarray(dl) + self.offset, 1e-300)) - self.mean) / self.std

    def inverse(self, x: np.ndarray) -> np.ndarray:
        """x (..., n_ell) -> D (the log is capped at 700 so that a diverged sample gives a huge, finite D)."""
        return np.exp(np.minimum(np.asarray(x) * self.std + self.mean, 700.0)) - self.offset

    def to_dict(self) -> dict:
        """Lists of floats (checkpoint- and JSON-ready)."""
        return {k: np.asarray(getattr(self, k)).tolist() for k in ("offset", "mean", "std")}

    @classmethod
    def from_dict(cls, d: dict) -> SpectrumTransform:
        """Inverse of :meth:`to_dict`."""
        return cls(*(np.asarray(d[k], dtype=np.float64) for k in ("offset", "mean", "std")))


def auto_sigma_max(x: np.ndarray, n_max: int = 2000) -> float:
    """Largest Euclidean distance between two of (at most ``n_max``) training points: the VE sigma_max rule of
    Song & Ermon (2020)."""
    from scipy.spatial.distance import pdist

    x = np.asarray(x, dtype=np.float64).reshape(len(x), -1)[:n_max]
    return float(pdist(x).max())


def _cosine_warmup(total_steps: int, warmup: int):
    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        return 0.5 * (1 + math.cos(math.pi * min(1.0, (step - warmup) / max(1, total_steps - warmup))))

    return lambda opt: torch.optim.lr_scheduler.LambdaLR(opt, factor)


def train_score_model(
    out_dir: Path | str,
    dl_gt: np.ndarray,
    dl_noisy: np.ndarray | None,
    dl_gt_val: np.ndarray,
    dl_noisy_val: np.ndarray | None,
    template_dl: np.ndarray,
    *,
    sde: dict,
    conditional: bool = True,
    p_uncond: float = 0.2,
    hidden_dim: int = 256,
    embed_dim: int = 128,
    num_layers: int = 5,
    fourier_scale: float = 30.0,
    normalization: str = "per_ell",
    log_offset_r: float = 1e-4,
    weighting: str = "sigma2",
    epochs: int = 200,
    batch_size: int = 256,
    lr: float = 2e-3,
    warmup_steps: int = 200,
    grad_clip: float | None = 1.0,
    ema_decay: float | None = 0.999,
    device: str | None = "auto",
    seed: int = 0,
    config: dict | None = None,
    progress: bool = True,
) -> dict:
    """Train a score model of clean spectra (conditional on observed spectra if ``conditional``).

    Parameters
    ----------
    out_dir : path
        Receives ``model.pt`` (weights, architecture, SDE, transforms), ``last.pt``/``best.pt`` (the loop's
        resumable checkpoints), ``history.csv``, ``training_loss.npy`` (per-epoch training loss) and ``history.json``.
    dl_gt, dl_noisy : ndarray, shape (n, n_ell), uK^2
        Clean (target) and observed (condition) D_l; ``dl_noisy`` may be None for an unconditional model.
    dl_gt_val, dl_noisy_val : ndarray, shape (n_val, n_ell)
        Validation pairs.
    template_dl : ndarray, shape (n_ell,)
        Tensor D_l at r = 1 (as in ``dl_gt``), which sets the log offset.
    sde : dict
        ``{"name": "ve"|"vp"|"subvp", **arguments}``; for VE, ``sigma_max: null`` takes the largest distance
        between training points (:func:`auto_sigma_max`).
    conditional : bool
        Train s(x_t, t | y) on (clean, observed) pairs, dropping the condition with probability ``p_uncond``.
    hidden_dim, embed_dim, num_layers, fourier_scale :
        :class:`~cosmobench.bmodes.score_net.ScoreNet1D` architecture.
    normalization : {"per_ell", "global"}
    log_offset_r : float
        Offset of the clean log transform in units of the r = 1 template.
    weighting : {"sigma2", "likelihood"}
        DSM weighting lambda(t).
    epochs, batch_size, lr, warmup_steps, grad_clip :
        Optimisation (Adam with linear warm-up then cosine decay, stepped per batch).
    ema_decay : float, optional
        Exponential moving average of the weights (used for validation and saved). The training loop's EMA starts
        from the initial weights without bias correction, so the decay is lowered to 1 - 10 / (total steps) when
        needed: the initial weights then weigh e^-10 at the end (a 0.999 EMA over 2000 steps keeps 14 % of the
        random initial weights, which ruins the samples).
    device : str, optional
    seed : int
    config : dict, optional
        Stored in the checkpoints.
    progress : bool

    Returns
    -------
    dict
        Summary: final and best losses, epochs, seconds, samples/s, the SDE configuration.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    if conditional and (dl_noisy is None or dl_noisy_val is None):
        raise ValueError("a conditional model needs observed spectra (dl_noisy) for training and validation")
    tx = SpectrumTransform.fit(dl_gt, log_offset_r * np.asarray(template_dl), normalization)
    x, xv = tx.forward(dl_gt).astype(np.float32), tx.forward(dl_gt_val).astype(np.float32)
    ty = SpectrumTransform.fit(dl_noisy, 0.0, normalization) if conditional else None
    sde_cfg = dict(sde)
    if sde_cfg.get("name", "ve") == "ve" and sde_cfg.get("sigma_max") is None:
        sde_cfg["sigma_max"] = auto_sigma_max(x)
    sde_obj = get_sde(**sde_cfg)
    torch.manual_seed(int(seed))
    net = ScoreNet1D(
        x.shape[1],
        hidden_dim,
        embed_dim,
        num_layers,
        cond_dim=x.shape[1] if conditional else 0,
        fourier_scale=fourier_scale,
    )
    model = ScoreModel(net, sde_obj)
    train = (x, ty.forward(dl_noisy).astype(np.float32)) if conditional else (x,)
    val = (xv, ty.forward(dl_noisy_val).astype(np.float32)) if conditional else (xv,)
    steps = epochs * math.ceil(len(x) / batch_size)
    if ema_decay:
        ema_decay = min(float(ema_decay), 1.0 - 10.0 / max(steps, 11))
    history = fit(
        model,
        train,
        val,
        loss_fn=dsm_loss(sde_obj, weighting=weighting, p_uncond=p_uncond),
        epochs=epochs,
        batch_size=batch_size,
        lr=lr,
        scheduler=_cosine_warmup(steps, warmup_steps),
        grad_clip=grad_clip,
        ema_decay=ema_decay,
        device=resolve_device(device),
        ckpt=out_dir / "last.pt",
        config=config,
        seed=seed,
        log_csv=out_dir / "history.csv",
        progress=progress,
    )
    state = {
        "model": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "arch": net.arch,
        "sde": sde_obj.config(),
        "transform_x": tx.to_dict(),
        "transform_y": ty.to_dict() if ty is not None else None,
        "conditional": bool(conditional),
        "p_uncond": float(p_uncond),
        "weighting": weighting,
        "ema_decay": ema_decay,
        "config": config,
    }
    save_state(out_dir / "model.pt", state)
    write_npy(out_dir / "training_loss.npy", np.asarray(history["train_loss"]))
    write_json(out_dir / "history.json", history)
    return {
        "epochs": len(history["epoch"]),
        "final_train_loss": history["train_loss"][-1] if history["epoch"] else None,
        "best_val_loss": history["best_val_loss"][0],
        "seconds": float(np.sum(history["seconds"])),
        "samples_per_s": float(np.median(history["samples_per_s"])) if history["epoch"] else None,
        "sde": sde_obj.config(),
        "ema_decay_used": ema_decay,
        "conditional": bool(conditional),
        "model": str(out_dir / "model.pt"),
    }


def load_score_model(
    path: Path | str, device: str | torch.device | None = None
) -> tuple[ScoreModel, SpectrumTransform, SpectrumTransform | None, dict]:
    """Rebuild a model written by :func:`train_score_model`.

    Returns
    -------
    model : ScoreModel
        In eval mode on ``device`` (CPU by default).
    transform_x, transform_y : SpectrumTransform
        Clean and observed transforms (``transform_y`` None for an unconditional model).
    meta : dict
        The rest of the checkpoint (``sde``, ``arch``, ``conditional``, ``config``, ...).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no model at {path}; run the train stage first")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:
        raise RuntimeError(f"{path} is not a readable score-model checkpoint ({err}); delete it to retrain") from err
    sde: SDE = get_sde(**state["sde"])
    net = ScoreNet1D(**state["arch"])
    model = ScoreModel(net, sde)
    model.load_state_dict(state["model"])
    model.to(device or "cpu").eval()
    ty = SpectrumTransform.from_dict(state["transform_y"]) if state.get("transform_y") else None
    meta = {k: v for k, v in state.items() if k != "model"}
    return model, SpectrumTransform.from_dict(state["transform_x"]), ty, meta
