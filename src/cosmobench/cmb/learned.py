"""Shared machinery of the learned separators: cached image arrays, normalisation, training, prediction.

A learned method (:class:`LearnedMethod` subclass) names a :mod:`~cosmobench.cmb.tiling` layout (full-sky plane
or patches) and a network. :meth:`LearnedMethod.fit`

1. converts each split once to two memory-mappable float32 ``.npy`` arrays, ``inputs`` (N, C, H, W) uK_CMB and
   ``targets`` (N, nfield, h, w) uK_CMB, written atomically beside a ``manifest.json`` that says what they hold
   (reused while it matches, rebuilt otherwise);
2. wraps the network in :class:`Standardised`, whose buffers hold the per-channel input mean/std and the
   per-field target scale measured on the training split, so every checkpoint carries its own normalisation;
3. trains through :func:`cosmobench.core.train.fit` (the one training loop): checkpoints ``last.pt`` /
   ``best.pt`` and ``train_log.csv`` under ``out_dir``, automatic resume, seeds, bfloat16 autocast on CUDA;
4. keeps the best-validation weights for :meth:`LearnedMethod.predict` (each of the temperature's and the
   polarisation's networks its own, with ``field_networks="separate"``; the untrained weights among the
   candidates for a corrector whose untrained network is its base method), measures the calibration of the
   predicted standard deviation on the validation split (``uncertainty="gaussian"`` or ``"mc_dropout"``) and,
   last, writes the final model ``model.pt``. :meth:`LearnedMethod.load` rebuilds a trained method from
   ``out_dir`` in a new process.

Fields (``fields``)
    ``"I"``: the network reads the intensity of every band and predicts the CMB temperature. ``"IQU"``: it reads
    I of every band, then Q and U of every polarised band (:func:`input_planes`), and predicts I, Q, U in the
    HEALPix (COSMO) Q/U basis of the maps. The images are pixel permutations of the maps, so Q and U keep
    HEALPix's local basis; a per-pixel combination of the channels' Q and U commutes with that basis, which is
    why Q/U rather than E/B are the targets (and per-pixel errors are wanted in Q and U).
Uncertainty (``uncertainty``)
    ``"gaussian"``: the model outputs a mean and a log variance per field and pixel (``2 nfield`` channels,
    means first). With ``gaussian_mean="loss"`` (the default) they come from two networks
    (:class:`MeanVarianceNet`): the mean network is trained by the point ``loss`` exactly as a model without the
    head (bit for bit: same initialisation, same steps, the epoch chosen by the mean's validation loss), the
    variance network by the Gaussian negative log-likelihood of the mean's residual with the mean held fixed
    (gradient stopped, as in the "faithful" heteroscedastic regression of Stirn et al. 2023), each pixel's term
    weighted by its variance held fixed (beta-NLL with beta = 1, Seitzer et al. 2022), so the error bar cannot
    buy a worse mean and its gradient stays bounded; ``gaussian_mean="likelihood"`` trains one network for both
    by the plain likelihood (:func:`gaussian_nll`), which down-weights the pixels it declares noisy and, at
    bench128's learning rate, diverged at epoch 2 and left the epoch-1 weights (docs/cmb_methods.md). The log
    variance is clamped to :data:`LOG_VAR_RANGE`. The variance networks keep their means' epoch; with
    ``variance_epochs`` they are then trained again on the residual of the chosen means, frozen
    (:meth:`LearnedMethod._fit_variance`).

    ``"mc_dropout"`` (MC dropout, Gal & Ghahramani 2016; needs ``dropout > 0``): the network (``nfield``
    outputs, dropout layers at the places :mod:`cosmobench.cmb.nn` documents) is trained by the point ``loss``
    as without uncertainty. A prediction runs ``mc_samples`` forward passes with the dropout layers, and only
    them, in training mode (BatchNorm keeps its running statistics), torch's generators forked and seeded from
    ``seed`` (the same masks on every call: reruns are identical); the mean is the passes' mean (also what
    :meth:`LearnedMethod.predict` returns), the variance their sample variance (ddof 1), floored at the Gaussian
    head's smallest variance ``exp(LOG_VAR_RANGE[0])`` (so an untrained zero-output network gets a finite
    calibration). The spread measures the model's (epistemic) uncertainty only, not the noise of the data.

    Either way, after training one factor per field ``s_f^2`` is chosen on the validation pixels'
    ``z = (target - mean) / sqrt(variance)`` by ``calibration_rule`` (:mod:`cosmobench.cmb.calibration`):
    ``"coverage"`` (default) matches the fractions within 1 and 2 sigma to a Gaussian's, ``"variance"`` sets
    ``s_f^2`` to the mean of ``z^2`` (:func:`std_calibration`). It is stored in the checkpoint's config
    (``calibration``) and multiplies the variance in :meth:`LearnedMethod.predict_with_std`. With
    ``calibration_splits`` (e.g. a validation split simulated with another foreground model), the rule reads the
    validation split and those splits with one weight per split: the error bar then spans the foreground models
    they hold, not only the training one.
Ensembles (``members``)
    ``members=M > 1`` trains member k (the method with ``seed + k``, so member 0 is the single model) in
    ``out_dir/member<k>``, the members sharing one array cache, and predicts with :class:`Ensemble` (Lakshminarayanan
    et al. 2017): the mean of the members' means and, with ``uncertainty="gaussian"``, the variance of the mixture
    of their Gaussians (their uncalibrated variances plus the spread of their means), calibrated on the validation
    split as one head's. The ensemble's ``model.pt`` holds every member's weights.

Training arrays go to the GPU whole when they fit in a third of its free memory (UNet5 at nside 128: 3 MB per
map), so the input pipeline costs nothing there; otherwise batches are sliced from the memory map.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import os
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from ..core.executor import map_tasks
from ..core.io import array_sha256, atomic_path, check_writable, read_json, sha256, write_json
from ..core.runtime import compute_context, resolve_device, retain_freed_memory
from ..core.seeds import torch_seed
from ..core.train import fit as train_loop
from ..core.train import iterate_batches, load_checkpoint, save_state
from .calibration import RULES, ZAccumulator, ZStatistics, calibration_factors, coverage
from .methods import CALIBRATION_SETTINGS
from .nn import count_parameters

__all__ = [
    "LearnedSettings",
    "LearnedMethod",
    "Standardised",
    "Ensemble",
    "prepare_arrays",
    "channel_stats",
    "input_planes",
    "check_beams",
    "gaussian_nll",
    "std_calibration",
    "z_statistics",
    "resolve_device",
    "place_arrays",
    "LOSSES",
    "SCHEDULES",
    "NORMS",
    "FIELDS",
    "UNCERTAINTIES",
    "GAUSSIAN_MEANS",
    "FIELD_NETWORKS",
    "FieldSplitNet",
    "MeanVarianceNet",
    "LOG_VAR_RANGE",
]

LOSSES = {"l1": F.l1_loss, "mse": F.mse_loss}
SCHEDULES = ("constant", "exp", "cosine")
NORMS = ("standard", "reference")
FIELDS = ("I", "IQU")
UNCERTAINTIES = ("none", "gaussian", "mc_dropout")
GAUSSIAN_MEANS = ("loss", "likelihood")
FIELD_NETWORKS = ("separate", "shared")
LOG_VAR_RANGE = (-12.0, 8.0)
"""Clamp of the predicted log variance, in units of the scaled target: sigma from 0.0025 to 55 target scales."""
REFERENCE_TARGET_SCALE = 5.0  # cmbNNCS trains on CMB / 5 with unscaled inputs
MODEL_FILE = "model.pt"  # the final model, written last by fit

# settings that may change between a run and its resumption (they do not change what is learned)
_RESUMABLE = (
    "epochs",
    "device",
    "workers",
    "cache_dir",
    "progress",
    "tensorboard",
    "mc_samples",
    *CALIBRATION_SETTINGS,
)
MEMBER_DIR = "member{}"  # the folder of an ensemble's member k, in the ensemble's out_dir
# settings added after the first checkpoints were written: a checkpoint without them was trained with these
_ADDED_SETTINGS = {
    "fields": "I",
    "uncertainty": "none",
    "gaussian_mean": "likelihood",
    "dropout": 0.0,
    "mc_samples": 20,
    "field_networks": "shared",
    "members": 1,
    "calibration_splits": [],
    "calibration_rule": "variance",
    "variance_epochs": 0,
}


@dataclasses.dataclass(frozen=True, kw_only=True)
class LearnedSettings:
    """Settings shared by the learned methods (keyword-only; an unknown key raises ``TypeError``).

    Parameters
    ----------
    bands : sequence of str
        Input channels, in order.
    epochs : int
        Training epochs (a resumed run trains only the missing ones).
    batch_size : int
        Images per optimiser step.
    lr : float
        Peak Adam learning rate.
    schedule : {"constant", "exp", "cosine"}
        Per-step learning-rate schedule: ``exp`` decays as ``lr * lr_decay**(step/total)`` (cmbNNCS uses
        ``lr=0.1, lr_decay=1e-5``), ``cosine`` goes from ``lr`` to ``lr * lr_decay`` on a half cosine.
    lr_decay : float
        Final over initial learning rate for ``exp`` and ``cosine``.
    loss : {"l1", "mse"}
        Mean pixel loss on the scaled target (cmbNNCS: L1); with ``uncertainty="gaussian"`` it trains the
        mean when ``gaussian_mean="loss"``.
    norm : {"standard", "reference"}
        ``standard``: inputs standardised per channel and target divided by its standard deviation, both
        measured on the training split; ``reference``: cmbNNCS's raw inputs and target / 5.
    grad_clip : float, optional
        Clip the global gradient norm.
    seed : int
        Run seed (weight initialisation, shuffling, dropout masks in training and in MC prediction).
    device : str
        ``"auto"`` (CUDA when available), ``"cpu"``, ``"cuda"``, ``"cuda:1"``...
    amp : bool
        bfloat16 autocast on CUDA (ignored on CPU).
    workers : int
        Processes for the one-time conversion of the dataset to arrays.
    cache_dir : str, optional
        Folder of the converted arrays; default ``<out_dir>/cache``.
    tensorboard : bool
        Also log per-epoch scalars to TensorBoard under ``<out_dir>/tensorboard`` (append-only event files).
    progress : bool
        Progress bars.
    fields : {"I", "IQU"}
        Predicted fields: the temperature, or I, Q, U (inputs: I of every band, then Q and U of every polarised
        band; see the module notes).
    uncertainty : {"none", "gaussian", "mc_dropout"}
        Also predict a per-pixel standard deviation, calibrated on the validation split: ``"gaussian"``, a
        variance head (Gaussian likelihood); ``"mc_dropout"``, the spread of ``mc_samples`` passes with dropout
        on (needs ``dropout > 0``). See the module notes.
    gaussian_mean : {"loss", "likelihood"}
        How a Gaussian head is trained: a mean network by ``loss`` beside a variance network fitted by the
        likelihood of its residual (default), or one network for both by the likelihood (see the module notes).
    dropout : float
        Probability of the network's dropout layers, in [0, 1); 0: none (the networks of earlier releases).
        They are active in training whatever ``uncertainty`` is, and in prediction with ``"mc_dropout"``.
    mc_samples : int
        Stochastic forward passes per prediction (and in the validation calibration) with ``"mc_dropout"``;
        at least 2. Changing it does not change what is learned (a run resumes with another value).
    field_networks : {"separate", "shared"}
        With ``fields="IQU"``: one network for the temperature (reading the I planes: the temperature-only
        model) and one for Q and U (reading every plane), side by side (:class:`FieldSplitNet`; default), or one
        network for all three fields. Measured on bench128: the shared network learned Q and U and left the
        temperature unchanged. Separate networks are chosen apart: each keeps the weights of the epoch with its
        own lowest validation loss (the T field's; the Q and U fields'), :data:`FIELD_GROUPS`.
    members : int
        Networks of a deep ensemble (Lakshminarayanan et al. 2017; module notes): member k is the method trained
        with ``seed + k`` (so member 0 is the single model, and ``members=1`` the method itself), each in
        ``out_dir/member<k>``; the prediction is their mean and, with ``uncertainty="gaussian"``, the variance of
        the mixture of their Gaussians, calibrated on the validation split as a single head's. Not with
        ``"mc_dropout"``.
    calibration_splits : list of str
        Further splits of the dataset on which the predicted standard deviation is calibrated, beside the
        validation split (module notes), one weight per split, e.g. ``[ValidOOD]``
        simulated with another foreground model (docs/cmb_methods.md). Needs an ``uncertainty``; changing it
        does not change what is learned (a run resumes and is calibrated again).
    calibration_rule : {"coverage", "variance"}
        How the factor ``s_f^2`` is chosen (:mod:`cosmobench.cmb.calibration`): ``"coverage"`` matches the
        fraction of pixels within 1 and 2 sigma to 68.27 % and 95.45 % (minimising the larger of the two misses;
        what ``evaluate`` reports), ``"variance"`` gives the calibrated residual unit second moment (what a
        chi^2 of the map assumes; the rule of checkpoints written before this setting). Changing it does not
        change what is learned (a run resumes and is calibrated again).
    variance_epochs : int
        With a Gaussian head whose means have their own networks (``gaussian_mean="loss"``): after the epochs are
        chosen, train the variance networks this many more epochs on the residual of the chosen means, held fixed
        (:meth:`LearnedMethod._fit_variance`), each field group keeping the epoch with its lowest validation
        likelihood; 0 (default): the variance networks keep the epoch of their means, trained on the residuals of
        the means of that epoch.
    """

    bands: Sequence[str] = ()
    epochs: int = 30
    batch_size: int = 8
    lr: float = 2e-3
    schedule: str = "cosine"
    lr_decay: float = 1e-2
    loss: str = "l1"
    norm: str = "standard"
    grad_clip: float | None = None
    seed: int = 0
    device: str = "auto"
    amp: bool = True
    workers: int = 1
    cache_dir: str | None = None
    tensorboard: bool = False
    progress: bool = True
    fields: str = "I"
    uncertainty: str = "none"
    gaussian_mean: str = "loss"
    dropout: float = 0.0
    mc_samples: int = 20
    field_networks: str = "separate"
    members: int = 1
    calibration_splits: Sequence[str] = ()
    calibration_rule: str = "coverage"
    variance_epochs: int = 0

    def __post_init__(self):
        object.__setattr__(self, "bands", [str(b) for b in self.bands])
        object.__setattr__(self, "calibration_splits", [str(c) for c in self.calibration_splits])
        if len(set(self.calibration_splits)) != len(self.calibration_splits):
            raise ValueError(f"calibration_splits contains duplicates: {self.calibration_splits}")
        if self.calibration_splits and self.uncertainty == "none":
            raise ValueError(
                f"calibration_splits={self.calibration_splits} calibrate a predicted standard deviation, but "
                "uncertainty=none predicts none; set uncertainty=gaussian (or drop calibration_splits)"
            )
        if not self.bands:
            raise ValueError("bands must name at least one input channel, e.g. bands=['100', '143', '217', '353']")
        if len(set(self.bands)) != len(self.bands):
            raise ValueError(f"bands contains duplicates: {self.bands}")
        if self.loss not in LOSSES:
            raise ValueError(f"unknown loss {self.loss!r}; expected one of {sorted(LOSSES)}")
        if self.schedule not in SCHEDULES:
            raise ValueError(f"unknown schedule {self.schedule!r}; expected one of {list(SCHEDULES)}")
        if self.norm not in NORMS:
            raise ValueError(f"unknown norm {self.norm!r}; expected one of {list(NORMS)}")
        if self.fields not in FIELDS:
            raise ValueError(f"unknown fields {self.fields!r}; expected one of {list(FIELDS)}")
        if self.uncertainty not in UNCERTAINTIES:
            raise ValueError(f"unknown uncertainty {self.uncertainty!r}; expected one of {list(UNCERTAINTIES)}")
        if self.calibration_rule not in RULES:
            raise ValueError(f"unknown calibration_rule {self.calibration_rule!r}; expected one of {list(RULES)}")
        if self.gaussian_mean not in GAUSSIAN_MEANS:
            raise ValueError(f"unknown gaussian_mean {self.gaussian_mean!r}; expected one of {list(GAUSSIAN_MEANS)}")
        if self.field_networks not in FIELD_NETWORKS:
            raise ValueError(f"unknown field_networks {self.field_networks!r}; expected one of {list(FIELD_NETWORKS)}")
        if not 0 <= self.dropout < 1 or int(self.mc_samples) < 2:
            raise ValueError(f"need 0 <= dropout < 1 and mc_samples >= 2; got {self.dropout}, {self.mc_samples}")
        if int(self.members) < 1:
            raise ValueError(f"members must be at least 1 (1: a single network), got {self.members}")
        if int(self.members) > 1 and self.uncertainty == "mc_dropout":
            raise ValueError(
                "an ensemble (members > 1) combines Gaussian heads or point models, not MC-dropout models; use "
                "uncertainty=gaussian (or members=1)"
            )
        if self.uncertainty == "mc_dropout" and not self.dropout:
            raise ValueError(
                "uncertainty=mc_dropout samples the network's dropout layers, but dropout=0 gives it none; "
                "set dropout > 0 (e.g. dropout=0.1)"
            )
        if int(self.variance_epochs) < 0:
            raise ValueError(f"variance_epochs must be >= 0 (0: none), got {self.variance_epochs}")
        if int(self.variance_epochs) and (self.uncertainty, self.gaussian_mean) != ("gaussian", "loss"):
            raise ValueError(
                f"variance_epochs={self.variance_epochs} fits the variance networks of a Gaussian head with its own "
                "mean network again; it needs uncertainty=gaussian and gaussian_mean=loss (or variance_epochs=0)"
            )
        if int(self.epochs) < 0 or int(self.batch_size) < 1 or not self.lr > 0 or not 0 < self.lr_decay <= 1:
            raise ValueError(
                f"need epochs >= 0, batch_size >= 1, lr > 0 and 0 < lr_decay <= 1; got epochs={self.epochs}, "
                f"batch_size={self.batch_size}, lr={self.lr}, lr_decay={self.lr_decay}"
            )

    def as_dict(self) -> dict[str, Any]:
        """Plain-type dict (lists, not tuples), as stored in checkpoints."""
        return {k: list(v) if isinstance(v, (tuple, list)) else v for k, v in dataclasses.asdict(self).items()}


#: the groups of :class:`FieldSplitNet`'s two networks: name -> (substring of their state-dict keys, fields)
FIELD_GROUPS = {"T": ("net_t.", (0,)), "P": ("net_p.", (1, 2))}


class FieldSplitNet(nn.Module):
    """Two networks side by side: the temperature's reads the I planes, the polarisation's every plane.

    Parameters
    ----------
    net_t : nn.Module
        (B, n_i, ...) -> (B, k, ...): the temperature's mean (and log variance with ``k = 2``).
    net_p : nn.Module
        (B, C, ...) -> (B, 2 k, ...): Q and U means (then their log variances with ``k = 2``).
    n_i : int
        Number of intensity planes, first among the inputs (:func:`input_planes`).
    head : bool
        Whether the outputs hold log variances (``k = 2``): they are then interleaved as one network's,
        means (T, Q, U) first, then log variances (T, Q, U).
    """

    def __init__(self, net_t: nn.Module, net_p: nn.Module, n_i: int, head: bool):
        super().__init__()
        self.net_t, self.net_p, self.n_i, self.head = net_t, net_p, int(n_i), bool(head)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, ...) standardised planes -> (B, 3 k, ...), ordered as a single network's output."""
        t, p = self.net_t(x[:, : self.n_i]), self.net_p(x)
        if not self.head:
            return torch.cat([t, p], dim=1)
        return torch.cat([t[:, :1], p[:, :2], t[:, 1:], p[:, 2:]], dim=1)


class MeanVarianceNet(nn.Module):
    """A Gaussian head as two networks: one for the means, one for the log variances, of the same inputs.

    With ``gaussian_mean="loss"`` the means learn from the point loss and the log variances from the likelihood
    of the means' residual held fixed (:func:`gaussian_nll`), so no layer serves both: the mean is the point
    model's, whatever the variance fit does.

    Parameters
    ----------
    net_mean, net_var : nn.Module
        (B, C, ...) -> (B, nfield, ...) each.
    """

    def __init__(self, net_mean: nn.Module, net_var: nn.Module):
        super().__init__()
        self.net_mean, self.net_var = net_mean, net_var

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, ...) standardised planes -> (B, 2 nfield, ...): means, then log variances."""
        return torch.cat([self.net_mean(x), self.net_var(x)], dim=1)


class _FrozenMeans(nn.Module):
    """A Gaussian head's model (:class:`Standardised` of a :class:`MeanVarianceNet`) whose mean networks do not
    train: no gradient, and evaluation mode (BatchNorm's running statistics) whatever :meth:`train` is asked, so
    only the variance networks learn (:meth:`LearnedMethod._fit_variance`); :meth:`release` gives the means their
    gradients back."""

    def __init__(self, model: Standardised):
        super().__init__()
        self.model = model
        self.model.net.net_mean.requires_grad_(False)

    def train(self, mode: bool = True) -> _FrozenMeans:
        super().train(mode)
        self.model.net.net_mean.eval()
        return self

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)

    def scale_for(self, y: torch.Tensor) -> torch.Tensor:
        return self.model.scale_for(y)

    def release(self) -> None:
        self.model.net.net_mean.requires_grad_(True)


def _no_point_loss(mean: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """A point loss of zero: the means are not trained (:func:`gaussian_nll` then fits the variance alone)."""
    return mean.new_zeros(())


class Standardised(nn.Module):
    """A network that takes uK_CMB maps and returns the target in units of ``target_scale``.

    Parameters
    ----------
    net : nn.Module
        Maps (B, C, ...) standardised inputs to (B, nout, ...) outputs: the scaled target (B, nfield, ...), or
        with a Gaussian head its mean and log variance (B, 2 nfield, ...), means first.
    in_mean, in_std : array, shape (C,), uK_CMB
        Per-channel shift and scale of the inputs.
    target_scale : float or array of shape (nfield,), uK_CMB
        The network predicts ``target / target_scale``, one scale per target field (a single scale is stored
        as a 0-d buffer, as in checkpoints written before polarised targets).

    Notes
    -----
    The buffers have shape (1, C, 1, 1) (and (1, nfield, 1, 1) for several scales); :meth:`forward` and
    :meth:`scale_for` reshape them to the rank of the data, so images may have any number of spatial axes.
    """

    def __init__(self, net: nn.Module, in_mean, in_std, target_scale: float | Sequence[float]):
        super().__init__()
        self.net = net
        shape = (1, -1, 1, 1)
        scale = np.asarray(target_scale, dtype=np.float32)
        self.register_buffer("in_mean", torch.as_tensor(np.asarray(in_mean), dtype=torch.float32).reshape(shape))
        self.register_buffer("in_std", torch.as_tensor(np.asarray(in_std), dtype=torch.float32).reshape(shape))
        self.register_buffer(
            "target_scale", torch.as_tensor(scale.reshape(() if scale.size == 1 else shape), dtype=torch.float32)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, ...) uK_CMB -> (B, nout, ...): the target in units of ``target_scale`` (and log variances)."""
        return self.net((x - _like(self.in_mean, x)) / _like(self.in_std, x))

    def scale_for(self, y: torch.Tensor) -> torch.Tensor:
        """``target_scale`` broadcastable against targets ``y`` of shape (B, nfield, ...)."""
        return _like(self.target_scale, y)

    def scales(self) -> np.ndarray:
        """The target scale of each field, ndarray (nfield,) float64, uK_CMB (length 1 for one scale)."""
        return self.target_scale.detach().double().cpu().reshape(-1).numpy()


def _foreground_model(dataset: Any, split: str) -> str | None:
    """The foreground model ``split`` of ``dataset`` was simulated with (``foreground_model(split)`` of a
    :class:`~cosmobench.cmb.dataset.CMBDataset`, ``mixture:...`` for a mixture), or None for data without one."""
    model_of = getattr(dataset, "foreground_model", None)
    return model_of(split) if model_of is not None else None


class Ensemble(nn.Module):
    """A deep ensemble (Lakshminarayanan et al. 2017): trained models of the same inputs, one prediction.

    Parameters
    ----------
    members : sequence of Standardised
        Models with the same inputs and target scales, all point models (``nfield`` outputs) or all Gaussian heads
        (``2 nfield`` outputs, means first).
    nfield : int
        Target fields.

    Notes
    -----
    :meth:`forward` returns what one member would, in the members' scaled-target units: the mean of the members'
    means ``mu_k`` and, for Gaussian heads, the log variance of the equal-weight mixture of their Gaussians,
    ``mean_k(var_k) + mean_k((mu_k - mu)^2)`` (each ``log var_k`` clamped to :data:`LOG_VAR_RANGE` first, as for
    a single head), computed in float64.
    """

    def __init__(self, members: Sequence[Standardised], nfield: int):
        super().__init__()
        self.members = nn.ModuleList(members)
        self.nfield = int(nfield)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, ...) uK_CMB -> (B, nfield, ...) mean, or (B, 2 nfield, ...) mean and log variance."""
        outs = torch.stack([m(x).double() for m in self.members])
        mu_k = outs[:, :, : self.nfield]
        mu = mu_k.mean(0)
        if outs.shape[2] == self.nfield:
            return mu.float()
        var_k = torch.exp(outs[:, :, self.nfield :].clamp(*LOG_VAR_RANGE))
        var = var_k.mean(0) + ((mu_k - mu) ** 2).mean(0)
        return torch.cat([mu, var.log()], dim=1).float()

    def scale_for(self, y: torch.Tensor) -> torch.Tensor:
        """The members' ``target_scale`` broadcastable against targets ``y`` (see :meth:`Standardised.scale_for`)."""
        return self.members[0].scale_for(y)

    def scales(self) -> np.ndarray:
        """The members' target scale of each field, ndarray (nfield,) float64, uK_CMB."""
        return self.members[0].scales()


def _like(buffer: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """A per-channel buffer (1, C, 1, 1) reshaped to (1, C, 1, ...) for the rank of ``x``; 0-d stays 0-d."""
    if buffer.ndim == 0 or buffer.ndim == x.ndim:
        return buffer
    return buffer.reshape(1, -1, *([1] * (x.ndim - 2)))


def _split_head(out: torch.Tensor, nfield: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Means (B, nfield, ...) and clamped log variances (B, nfield, ...) of a Gaussian head's float32 output."""
    return out[:, :nfield], out[:, nfield:].clamp(*LOG_VAR_RANGE)


def gaussian_nll(
    out: torch.Tensor,
    target: torch.Tensor,
    mean_loss: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None,
    *,
    gaps: bool = False,
) -> torch.Tensor:
    """Mean Gaussian negative log-likelihood, ``0.5 (log var + (target - mean)^2 / var)`` (no constant).

    Parameters
    ----------
    out : torch.Tensor, shape (B, 2 nfield, ...)
        Means, then log variances (clamped to :data:`LOG_VAR_RANGE`), in the units of ``target`` (squared).
    target : torch.Tensor, shape (B, nfield, ...)
    mean_loss : callable, optional
        A point loss ``(mean, target) -> 0-d tensor`` (of the pixels kept, flattened, with ``gaps``). When
        given, the result is ``mean_loss(mean, target)``
        plus the likelihood of the residual ``r`` of the mean held fixed (gradient stopped), each pixel's term
        weighted by its variance held fixed (beta-NLL with beta = 1, Seitzer et al. 2022): the means learn from
        ``mean_loss`` only, and the log variance's gradient is ``(var - r^2) / 2``, a fit of the variance to the
        squared residual with the likelihood's optimum (``var = E[r^2]``) and no ``r^2 / var`` blow-up.

    gaps : bool
        The target is NaN where a pixel is outside the loss region: average over the other pixels only.

    Returns
    -------
    torch.Tensor, 0-d, float32: the mean over batch, fields and pixels (plus ``mean_loss``).
    """
    target = target.float()
    mean, log_var = _split_head(out.float(), target.shape[1])
    if gaps:
        keep = torch.isfinite(target)
        mean, log_var, target = mean[keep], log_var[keep], target[keep]
    if mean_loss is None:
        return 0.5 * (log_var + (target - mean) ** 2 * torch.exp(-log_var)).mean()
    var = torch.exp(log_var)
    nll = 0.5 * (log_var + (target - mean.detach()) ** 2 / var) * var.detach()
    return mean_loss(mean, target) + nll.mean()


def field_group_losses(
    out: torch.Tensor,
    target: torch.Tensor,
    point_loss: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None,
    *,
    gaps: bool = False,
) -> torch.Tensor:
    """The validation loss of each group of :data:`FIELD_GROUPS` (T; Q and U), as a 1-D tensor.

    Parameters
    ----------
    out : torch.Tensor, shape (B, nfield, ...) or (B, 2 nfield, ...)
        The means (then the log variances of a Gaussian head), scaled-target units.
    target : torch.Tensor, shape (B, nfield, ...), with ``nfield = 3``
    point_loss : callable or None
        ``(mean, target) -> 0-d tensor`` of the means; None: the Gaussian likelihood of the head (:func:`gaussian_nll`).
    gaps : bool
        As for :func:`gaussian_nll` (``point_loss`` handles its own).
    """
    nfield, losses = target.shape[1], []
    for _, fields in FIELD_GROUPS.values():
        f = list(fields)
        if point_loss is None:
            losses.append(gaussian_nll(out[:, f + [nfield + k for k in f]], target[:, f], gaps=gaps))
        else:
            losses.append(point_loss(out[:, f].float(), target[:, f].float()))
    return torch.stack(losses)


def z_statistics(
    model: Standardised,
    data: tuple,
    *,
    batch_size: int,
    device: torch.device,
    amp: bool = False,
    mc_samples: int = 0,
    seed: int = 0,
) -> ZStatistics:
    """The standardised residuals ``z = (target - mean) / sqrt(variance)`` of a model on one split, per field.

    Parameters
    ----------
    model : Standardised
        On ``device``: a network with a Gaussian head (``2 nfield`` outputs), or with ``mc_samples``, a network
        with dropout layers (``nfield`` outputs) whose variance is that of its stochastic passes.
    data : tuple (inputs, targets)
        Arrays or tensors (N, C, ...) and (N, nfield, ...), uK_CMB (the validation split's, as placed by
        :func:`place_arrays`); the pixels whose target is NaN (outside a loss region) are left out.
    batch_size : int
    device : torch.device
    amp : bool
        bfloat16 autocast on CUDA, as in prediction.
    mc_samples : int
        0: the Gaussian head's variance; else the MC-dropout variance of that many passes (module notes).
    seed : int
        Seed of the dropout masks with ``mc_samples`` (:func:`torch_seed` of the run's; unused without).

    Returns
    -------
    ZStatistics
        The sum of ``z^2`` and the histogram of ``log2|z|`` per field (:mod:`cosmobench.cmb.calibration`).
    """
    nfield = data[1].shape[1]
    gathered = ZAccumulator(nfield, device)
    with _inference(model, device, amp=amp, mc_samples=mc_samples, seed=seed):
        for x, y in iterate_batches(data, batch_size, shuffle=False):
            y = y.to(device).float()
            mean, var = _moments(model, x.to(device), nfield, mc_samples)
            keep = torch.isfinite(y)  # a NaN target: a pixel outside the loss region
            gathered.add((y.nan_to_num() / model.scale_for(y) - mean) ** 2 / var, None if bool(keep.all()) else keep)
    return gathered.result()


def std_calibration(model: Standardised, data: tuple, *, rule: str, **kwargs: Any) -> list[float]:
    """Calibration factors of a model's predicted errors on one split: per field, ``s_f^2`` of ``rule``.

    Parameters
    ----------
    model, data
        As for :func:`z_statistics`, with its keyword arguments (``batch_size``, ``device``...) in ``kwargs``.
    rule : {"variance", "coverage"}
        ``"variance"``: the mean over pixels of residual^2 / variance; ``"coverage"``: the factor matching the
        1 and 2 sigma coverage (:func:`cosmobench.cmb.calibration.calibration_factors`).

    Returns
    -------
    list of nfield floats: ``s_f^2``; the calibrated standard deviation is ``s_f`` times the predicted one.
    """
    return calibration_factors([z_statistics(model, data, **kwargs)], rule)


@contextlib.contextmanager
def _inference(model: nn.Module, device: torch.device, *, amp: bool, mc_samples: int = 0, seed: int = 0):
    """Prediction mode: ``model`` in eval mode, no gradients, bfloat16 autocast on CUDA when ``amp``, torch's
    generators forked (restored on exit) and seeded with ``seed``; with ``mc_samples`` the dropout layers, and
    only them, in training mode (back in eval mode on exit)."""
    model.eval()
    dropouts = [m for m in model.modules() if isinstance(m, nn.modules.dropout._DropoutNd)] if mc_samples else []
    cuda = list(range(torch.cuda.device_count())) if device.type == "cuda" else []
    with (
        torch.no_grad(),
        torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp and device.type == "cuda"),
        torch.random.fork_rng(devices=cuda),
    ):
        torch.manual_seed(seed)
        for m in dropouts:
            m.train()
        try:
            yield
        finally:
            for m in dropouts:
                m.eval()


def _moments(
    model: Standardised, x: torch.Tensor, nfield: int, mc_samples: int
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Predicted mean and variance of the scaled target for one batch, in :func:`_inference` mode.

    Parameters
    ----------
    model : Standardised
    x : torch.Tensor, shape (B, C, ...), uK_CMB, on the model's device
    nfield : int
    mc_samples : int
        0: one pass (a point model or a Gaussian head); else that many passes (MC dropout).

    Returns
    -------
    mean : torch.Tensor, shape (B, nfield, ...), scaled-target units (float32; float64 with ``mc_samples``)
    var : torch.Tensor or None, same shape, float64, squared scaled-target units: the Gaussian head's
        variance, the passes' sample variance (ddof 1, accumulated around the first pass, so identical passes
        give exactly 0) floored at ``exp(LOG_VAR_RANGE[0])``, or None for a point model.
    """
    if mc_samples:
        first = model(x).double()
        shift, square = torch.zeros_like(first), torch.zeros_like(first)
        for _ in range(mc_samples - 1):
            d = model(x).double() - first
            shift += d
            square += d * d
        var = (square - shift * shift / mc_samples) / (mc_samples - 1)
        return first + shift / mc_samples, var.clamp_min(math.exp(LOG_VAR_RANGE[0]))
    out = model(x).float()
    if out.shape[1] == nfield:
        return out, None
    mean, log_var = _split_head(out, nfield)
    return mean, torch.exp(log_var.double())


def check_beams(channels: Sequence[Any], trained: dict[str, float | None], what: str) -> None:
    """Refuse channels whose beam differs from the one a model saw in training.

    Parameters
    ----------
    channels : sequence of Channel
        The channels given (``band``, ``fwhm_arcmin``).
    trained : dict of str to float or None
        Band -> beam FWHM (arcmin) in training; bands absent or None are not checked.
    what : str
        Subject of the error message, e.g. ``"the model was trained"``.

    Raises
    ------
    ValueError
        A channel's FWHM differs from its training value (relative tolerance 1e-6).
    """
    for c in channels:
        want, got = trained.get(c.band), getattr(c, "fwhm_arcmin", None)
        if want is not None and got is not None and not math.isclose(want, got, rel_tol=1e-6):
            raise ValueError(f"channel {c.band} has a {got}' beam but {what} with {want}'")


def input_planes(bands: Sequence[str], pol_bands: Sequence[str] = ()) -> list[tuple[str, int]]:
    """The network's input maps as (band, field row): I of every band, then Q and U of every polarised band.

    Parameters
    ----------
    bands : sequence of str
        Input bands, in order.
    pol_bands : sequence of str
        Those whose Q and U are read too (empty for ``fields="I"``).

    Returns
    -------
    list of (band, row), row 0 = I, 1 = Q, 2 = U; e.g. ``[("100", 0), ("143", 0), ("100", 1), ("100", 2)]``.
    """
    return [(b, 0) for b in bands] + [(b, row) for b in bands if b in pol_bands for row in (1, 2)]


def _stack_planes(obs: dict[str, np.ndarray], planes: Sequence[tuple[str, int]]) -> np.ndarray:
    """Input maps (C, npix) float32 from ``obs`` (band -> (nfield, npix)) in the order of ``planes``."""
    maps = []
    for band, row in planes:
        fields = np.atleast_2d(obs[band])
        if row >= len(fields):
            raise ValueError(
                f"the network reads the {'IQU'[row]} map of band {band}, but it has {len(fields)} field(s); "
                "give I, Q, U maps for its polarised bands (or use a model trained with fields=I)"
            )
        maps.append(fields[row])
    return np.stack(maps).astype(np.float32)


def channel_stats(inputs: np.ndarray, targets: np.ndarray, *, max_images: int = 512, chunk: int = 16) -> dict[str, Any]:
    """Per-channel mean and standard deviation of ``inputs`` and per-field standard deviation of ``targets``.

    Parameters
    ----------
    inputs : ndarray, shape (N, C, ...), uK_CMB
        May be a memory map; read ``chunk`` images at a time, accumulated in float64.
    targets : ndarray, shape (N, nfield, ...), uK_CMB (NaN pixels, outside a loss region, are left out)
    max_images : int
        Use at most this many images, evenly spaced (plenty for a mean and a scale; bounds the cost at nside 512).

    Returns
    -------
    dict with ``in_mean`` and ``in_std`` (lists of C floats) and ``target_std`` (list of nfield floats).
    """
    rows = np.unique(np.linspace(0, len(inputs) - 1, min(len(inputs), max_images)).round().astype(int))
    axes = (0, *range(2, inputs.ndim))
    nfield = targets.shape[1]
    s1 = np.zeros(inputs.shape[1])
    s2 = np.zeros(inputs.shape[1])
    t1, t2, n_t = [0.0] * nfield, [0.0] * nfield, [0] * nfield
    for start in range(0, len(rows), chunk):
        block = np.asarray(inputs[rows[start : start + chunk]], dtype=np.float64)
        s1 += block.sum(axis=axes)
        s2 += (block**2).sum(axis=axes)
        tblock = np.asarray(targets[rows[start : start + chunk]], dtype=np.float64)
        for f in range(nfield):
            t1[f] += np.nansum(tblock[:, f])
            t2[f] += np.nansum(tblock[:, f] ** 2)
            n_t[f] += int(np.isfinite(tblock[:, f]).sum())
    n_in = len(rows) * math.prod(inputs.shape[2:])
    mean = s1 / n_in
    std = np.sqrt(np.maximum(s2 / n_in - mean**2, 0.0))
    target_std = [math.sqrt(max(b / n - (a / n) ** 2, 0.0)) if n else 0.0 for a, b, n in zip(t1, t2, n_t)]
    if not np.all(std > 0) or not all(t > 0 for t in target_std):
        raise ValueError("a training channel or a target field is constant; cannot standardise it")
    return {"in_mean": mean.tolist(), "in_std": std.tolist(), "target_std": target_std}


def _layout_manifest(dataset, split: str, planes: list[tuple[str, int]], fields: str, layout) -> dict[str, Any]:
    root = Path(getattr(dataset, "root", "."))
    manifest_file = root / "manifest.json"
    return {
        "dataset": str(root.resolve()),
        "dataset_manifest_sha256": sha256(manifest_file) if manifest_file.is_file() else None,
        "split": split,
        "sims": [int(i) for i in dataset.sim_indices(split)],
        "bands": list(dict.fromkeys(b for b, _ in planes)),
        "inputs": [[b, row] for b, row in planes],
        "fields": fields,
        "nside": int(dataset.nside),
        "layout": layout.describe(),
        "dtype": "float32",
        "unit": "uK_CMB",
    }


def _same_arrays(found: dict[str, Any], wanted: dict[str, Any]) -> bool:
    """Whether cached arrays with manifest ``found`` are those ``wanted`` describes. A dataset with a manifest is
    known by its hash (a root whose files are linked from, or copied from, another holds the same maps: the
    simulations are a function of that manifest), one without by its path."""
    if wanted["dataset_manifest_sha256"] is not None:
        found, wanted = ({k: v for k, v in m.items() if k != "dataset"} for m in (found, wanted))
    return found == wanted


def prepare_arrays(
    dataset,
    split: str,
    bands: Sequence[str],
    layout,
    folder: Path | str,
    *,
    pol_bands: Sequence[str] = (),
    fields: str = "I",
    workers: int = 1,
    progress: bool = True,
) -> tuple[np.ndarray, np.ndarray]:
    """Convert one split to image arrays once, and return them memory-mapped.

    Parameters
    ----------
    dataset : CMBDataset
        Anything with ``root``, ``nside``, ``sim_indices(split)``, ``load_obs(split, i, bands)`` and
        ``load_target(split, i)`` (see :class:`cosmobench.cmb.dataset.CMBDataset`).
    split : str
        Split name, e.g. ``"Train"``.
    bands : sequence of str
        Input channels, in order.
    layout : PlaneLayout or PatchLayout
        How maps become images (:mod:`cosmobench.cmb.tiling`).
    folder : path
        Output folder: ``inputs.npy``, ``targets.npy``, ``manifest.json`` (written last).
    pol_bands : sequence of str
        Bands whose Q and U are inputs too (:func:`input_planes`).
    fields : {"I", "IQU"}
        Target fields: the first one or three rows of ``load_target``.
    workers : int
        Conversion processes.
    progress : bool
        Progress bar.

    Returns
    -------
    inputs : ndarray (memory map), shape (n_sims * images_per_map, C, H, W), float32, uK_CMB, with
        ``C = len(bands) + 2 len(pol_bands)`` in the order of :func:`input_planes`
    targets : ndarray (memory map), shape (n_sims * images_per_map, nfield, h, w), float32, uK_CMB (the target's
        I, or I, Q, U)
    """
    folder = Path(folder)
    planes = input_planes(bands, pol_bands)
    manifest = _layout_manifest(dataset, split, planes, fields, layout)
    paths = {"inputs": folder / "inputs.npy", "targets": folder / "targets.npy"}
    mpath = folder / "manifest.json"
    if mpath.is_file() and all(p.is_file() for p in paths.values()) and _same_arrays(read_json(mpath), manifest):
        return tuple(np.load(paths[k], mmap_mode="r") for k in ("inputs", "targets"))
    if not manifest["sims"]:
        raise ValueError(f"split {split!r} of {manifest['dataset']} holds no simulations")
    check_writable(folder)
    mpath.unlink(missing_ok=True)
    k, n = layout.images_per_map, len(manifest["sims"])
    shapes = {
        "inputs": (n * k, len(planes), *layout.image_shape),
        "targets": (n * k, len(fields), *layout.target_shape),
    }
    with atomic_path(paths["inputs"]) as tmp_in, atomic_path(paths["targets"]) as tmp_t:
        for tmp, key in ((tmp_in, "inputs"), (tmp_t, "targets")):
            np.lib.format.open_memmap(tmp, mode="w+", dtype=np.float32, shape=shapes[key]).flush()
        tasks = [
            (dataset, split, int(i), row, planes, len(fields), layout, str(tmp_in), str(tmp_t))
            for row, i in enumerate(manifest["sims"])
        ]
        map_tasks(
            _convert_sim,
            tasks,
            executor="processes" if workers > 1 else "serial",
            workers=max(1, workers),
            desc=f"arrays {split}",
            unit="sim",
            progress=progress,
        )
    write_json(mpath, manifest)
    return tuple(np.load(paths[k], mmap_mode="r") for k in ("inputs", "targets"))


def _convert_sim(task) -> None:
    dataset, split, i, row, planes, nfield, layout, path_in, path_t = task
    obs = dataset.load_obs(split, i, bands=list(dict.fromkeys(b for b, _ in planes)))
    maps = _stack_planes(obs, planes)
    target = np.atleast_2d(dataset.load_target(split, i))
    if len(target) < nfield:
        raise ValueError(
            f"the target of simulation {i} of split {split!r} has {len(target)} field(s); fields=IQU needs I, Q, U "
            "(a polarised dataset): set fields=I"
        )
    target = target[:nfield].astype(np.float32)
    k = layout.images_per_map
    inputs = np.load(path_in, mmap_mode="r+")
    targets = np.load(path_t, mmap_mode="r+")
    inputs[row * k : (row + 1) * k] = layout.images(maps)
    targets[row * k : (row + 1) * k] = layout.target_images(target)
    inputs.flush()
    targets.flush()


def place_arrays(inputs: np.ndarray, targets: np.ndarray, device: torch.device):
    """The training arrays where batches are cheapest to slice.

    Whole on the GPU as tensors when they fit in a third of its free memory; else in RAM when they fit in a
    third of the available memory; else the memory maps themselves (``fit`` then reads each batch from disk).
    """
    nbytes = inputs.nbytes + targets.nbytes
    if device.type == "cuda" and nbytes < torch.cuda.mem_get_info(device)[0] / 3:
        return tuple(torch.from_numpy(np.ascontiguousarray(a)).to(device) for a in (inputs, targets))
    if nbytes < os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE") / 3:
        return tuple(np.ascontiguousarray(a) for a in (inputs, targets))
    return inputs, targets


def _make_scheduler(settings: LearnedSettings, steps: int):
    """``optimizer -> LambdaLR`` for the settings' schedule over ``steps`` optimiser steps (None: constant)."""
    if settings.schedule == "constant":
        return None
    total, final = max(1, steps), settings.lr_decay

    def factor(step: int) -> float:
        progress = min(step, total) / total
        if settings.schedule == "exp":
            return final**progress
        return final + (1 - final) * 0.5 * (1 + math.cos(math.pi * progress))

    return lambda opt: torch.optim.lr_scheduler.LambdaLR(opt, factor)


class LearnedMethod:
    """Base class of the learned separators (see :mod:`cosmobench.cmb.methods` for the interface).

    Subclasses set ``name`` and ``Settings`` (a :class:`LearnedSettings` subclass) and implement
    ``_layout(nside)`` and ``_network(in_channels, nside, out_channels=1)``. A subclass whose untrained network
    is a method of its own (a residual corrector starting from the identity) sets ``untrained_is_base = True``:
    its untrained weights are then a candidate for the best-validation weights, scored before the first epoch.
    """

    name = "learned"
    Settings = LearnedSettings
    output_beam_arcmin = None
    untrained_is_base = False

    def __init__(self, **settings):
        self.settings = self.Settings(**settings)
        self.model: Standardised | Ensemble | None = None
        self.config: dict[str, Any] | None = None

    @property
    def fields(self) -> str:
        """Predicted fields, ``"I"`` or ``"IQU"`` (the ``fields`` setting)."""
        return self.settings.fields

    @property
    def uncertainty(self) -> bool:
        """Whether the method predicts a standard deviation (:meth:`predict_with_std`)."""
        return self.settings.uncertainty != "none"

    @property
    def train_foregrounds(self) -> str | None:
        """Foreground model of the split the network was trained on (``mixture:default+perturbed`` for a mixture;
        None before training, for data without one, or for a model saved before it was recorded)."""
        return (self.config or {}).get("train_foregrounds")

    def output_lmax_for(self, nside: int) -> int | None:
        """Band limit of the output at ``nside``: None, the network's output is not band-limited."""
        return None

    # hooks
    def _layout(self, nside: int):
        raise NotImplementedError

    def _network(self, in_channels: int, nside: int, out_channels: int = 1) -> nn.Module:
        raise NotImplementedError

    def _sampling(self) -> dict[str, int]:
        """``mc_samples`` and ``seed`` of the stochastic passes (:func:`std_calibration`): 0 passes without MC
        dropout, else the ``mc_samples`` setting with a seed drawn from the run's ``seed``."""
        s = self.settings
        if s.uncertainty != "mc_dropout":
            return {"mc_samples": 0, "seed": 0}
        return {"mc_samples": int(s.mc_samples), "seed": torch_seed(s.seed, self.name, "mc_dropout")}

    def _view(self, dataset):
        """The dataset as the network trains on it (:meth:`fit` reads the dataset through it): the dataset."""
        return dataset

    def _target_gaps(self) -> bool:
        """Whether the training targets are NaN outside a loss region (the losses then average the other pixels):
        settings with a loss region (:class:`~cosmobench.cmb.methods.loss_region.LossRegionSettings`) and
        ``loss_fsky < 1``."""
        region = getattr(self.settings, "loss_region", None)
        return region is not None and region() is not None

    def _polarised_bands(self, dataset) -> list[str]:
        """The input bands whose Q and U the network reads with ``fields="IQU"``: the dataset's IQU channels."""
        fields = {c.band: getattr(c, "fields", "I") for c in dataset.channels}
        return [b for b in self.settings.bands if fields.get(b) == "IQU"]

    def _build(self, config: dict[str, Any]) -> Standardised | Ensemble:
        """The network of a run's ``config`` (``nside``, ``stats``, ``pol_bands``) in :class:`Standardised` (an
        :class:`Ensemble` of them with ``members > 1``)."""
        s = self.settings
        if s.members > 1:
            return Ensemble([self._member(k)._build(config) for k in range(s.members)], len(s.fields))
        planes = input_planes(s.bands, config.get("pol_bands", ()))
        nfield = len(s.fields)  # one target field per letter
        nside = int(config["nside"])

        def fields_net(k: int) -> nn.Module:  # k outputs per field (2: mean and log variance)
            if s.fields == "IQU" and s.field_networks == "separate":
                n_i = len(s.bands)
                net_t = self._network(n_i, nside, k)
                return FieldSplitNet(net_t, self._network(len(planes), nside, 2 * k), n_i, k == 2)
            return self._network(len(planes), nside, nfield * k)

        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(torch_seed(s.seed, self.name, "init"))
            if s.uncertainty == "gaussian" and s.gaussian_mean == "loss":
                net = MeanVarianceNet(fields_net(1), fields_net(1))
            else:
                net = fields_net(2 if s.uncertainty == "gaussian" else 1)
        if s.norm == "reference":
            return Standardised(net, np.zeros(len(planes)), np.ones(len(planes)), [REFERENCE_TARGET_SCALE] * nfield)
        stats = config["stats"]
        return Standardised(net, stats["in_mean"], stats["in_std"], stats["target_std"])

    def _member(self, k: int, cache_dir: str | None = None) -> LearnedMethod:
        """Member ``k`` of the ensemble: the same method with ``seed + k`` and one network (and ``cache_dir``)."""
        s = self.settings.as_dict()
        cache = {"cache_dir": cache_dir} if cache_dir is not None else {}
        return type(self)(**{**s, "seed": int(s["seed"]) + k, "members": 1, **cache})

    def _cache(self, out_dir: Path) -> Path:
        """The folder of the cached image arrays: ``cache_dir``, or ``out_dir/cache``."""
        return Path(self.settings.cache_dir) if self.settings.cache_dir else out_dir / "cache"

    def _arrays(self, dataset, split: str, cache: Path) -> tuple[np.ndarray, np.ndarray]:
        """The image arrays of ``split`` under ``cache/<split>`` (:func:`prepare_arrays` with these settings)."""
        s = self.settings
        return prepare_arrays(
            dataset,
            split,
            s.bands,
            self._layout(int(dataset.nside)),
            cache / split,
            pol_bands=self._polarised_bands(dataset) if s.fields == "IQU" else [],
            fields=s.fields,
            workers=s.workers,
            progress=s.progress,
        )

    def _calibration(
        self, model: nn.Module, dataset, val: tuple[str, Any] | None, cache: Path, device: torch.device
    ) -> tuple[list[float] | None, dict[str, Any]]:
        """The factors ``s_f^2`` of the model's variance, and what ``training.json`` says of them.

        ``val`` is the validation split's name and placed arrays (None: trained without validation). The factors
        are those of ``calibration_rule`` on it and the ``calibration_splits``, one weight per split (1 without any
        split; None without an ``uncertainty``). The facts: ``std_calibration_splits`` (each split's own factors)
        and ``std_calibration_coverage`` (the fraction within 1 and 2 calibrated sigma on those splits, per field).
        """
        s = self.settings
        none = {"std_calibration_splits": {}, "std_calibration_coverage": None}
        if not self.uncertainty:
            return None, none
        sampling = self._sampling()

        def statistics(data) -> ZStatistics:
            return z_statistics(model, data, batch_size=int(s.batch_size), device=device, amp=s.amp, **sampling)

        per_split = {val[0]: statistics(val[1])} if val is not None else {}
        for split in s.calibration_splits:
            per_split[split] = statistics(place_arrays(*self._arrays(dataset, split, cache), device))
        if not per_split:
            return [1.0] * len(s.fields), none
        stats = list(per_split.values())
        factors = calibration_factors(stats, s.calibration_rule)
        return factors, {
            "std_calibration_splits": {k: calibration_factors([v], s.calibration_rule) for k, v in per_split.items()},
            "std_calibration_coverage": coverage(stats, factors),
        }

    def fit(
        self,
        dataset,
        out_dir: Path | str,
        *,
        train_split: str = "Train",
        val_split: str | None = "Valid",
        on_epoch_end: Callable[[int, dict], None] | None = None,
    ) -> dict:
        """Train on ``train_split`` (validate on ``val_split``), resuming from ``out_dir/last.pt`` if present.

        With ``members > 1``, trains (or resumes) each member in ``out_dir/member<k>`` one after the other, then
        calibrates the ensemble on ``val_split`` and writes its ``model.pt`` (every member's weights) and
        ``training.json`` in ``out_dir``.

        Parameters
        ----------
        dataset : CMBDataset
            The dataset (see :func:`prepare_arrays` for what is used; ``channels`` with ``fields`` says which
            bands are polarised).
        out_dir : path
            Run folder: ``last.pt``, ``best.pt``, ``train_log.csv``, ``training.json``, ``cache/``.
        train_split, val_split : str
            Split names; ``val_split=None`` (or an empty split) trains without validation.
        on_epoch_end : callable, optional
            ``on_epoch_end(epoch, record)`` after each epoch's checkpoint (e.g. optuna pruning; raising stops
            training, and a later ``fit`` resumes from that checkpoint).

        Returns
        -------
        dict
            ``epochs``, ``seconds`` (training, all runs), ``train_maps_per_s`` (median over epochs),
            ``final_train_loss``, ``final_val_loss``, ``best_val_loss`` (scaled-target units), ``best_epoch``
            (the epoch whose weights are kept, -1 for the untrained ones; None without validation and epochs; a
            dict ``{"T": e, "P": e}`` for separate field networks),
            ``initial_val_loss`` (the untrained weights' validation loss with ``untrained_is_base``, else None),
            ``n_params``, ``n_train_maps``, ``n_val_maps``, ``prepare_seconds``, ``device``, ``threads``,
            ``cpu_capability``, ``torch`` (:func:`~cosmobench.core.runtime.compute_context`), ``data_sha256``
            (``train`` and ``valid``: :func:`~cosmobench.core.io.array_sha256` of the image arrays the network
            read, inputs then targets; two runs that disagree with equal digests and context differ in training,
            not in their data), ``std_calibration`` (the factors ``s_f^2`` per field with an ``uncertainty``,
            else None), ``std_calibration_splits`` (the factors of each split alone: the validation split and
            ``calibration_splits``), ``std_calibration_coverage`` (``cover1``, ``cover2``: the fraction of those
            splits' pixels within 1 and 2 calibrated sigma per field, one weight per split; None without a
            split) and, with ``variance_epochs``, ``variance_best_epoch`` and ``variance_best_val_nll``
            (:meth:`_fit_variance`). An ensemble's:
            ``epochs`` and ``train_maps_per_s`` of its first member, ``seconds``, ``prepare_seconds`` and
            ``n_params`` summed over the members, the losses their mean, ``best_epoch`` the members' list, the
            calibration facts the ensemble's, ``members`` (the count) and ``member_facts`` (each member's dict).
        """
        dataset = self._view(dataset)
        self.check_calibration_splits(dataset, val_split)
        kwargs = {"train_split": train_split, "val_split": val_split, "on_epoch_end": on_epoch_end}
        if self.settings.members == 1:
            return self._train(dataset, Path(out_dir), **kwargs)
        return self._train_ensemble(dataset, Path(out_dir), **kwargs)

    def check_calibration_splits(self, dataset, val_split: str | None) -> None:
        """Refuse, before any work, a calibration split the dataset does not hold (naming the command that adds
        it) or the validation split again; :meth:`fit` and the ``cmb train`` stage (before its record) call it."""
        for split in self.settings.calibration_splits:
            if split == val_split:
                raise ValueError(
                    f"calibration_splits names the validation split {split!r}, which is always calibrated on; "
                    "drop it from calibration_splits"
                )
            try:
                found = dataset.sim_indices(split)
            except ValueError:  # a dataset on disk refuses a split it does not have
                found = []
            if not found:
                root = getattr(dataset, "root", "the dataset")
                held = dict(getattr(dataset, "splits", {}))
                grown = {**held, split: held.get(val_split) or 4}
                sizes = "{" + ", ".join(f"{k}: {v}" for k, v in grown.items()) + "}"
                raise ValueError(
                    f"calibration split {split!r} has no simulation in {root} (its splits: {held}); add it, e.g. "
                    f"`cosmobench cmb simulate out_dir={root} 'simulate.splits={sizes}'` with "
                    f"`simulate.split_foregrounds` giving {split} its foreground model (e.g. perturbed; "
                    f"docs/cmb_methods.md), or drop it from methods.{self.name}.calibration_splits"
                )

    def _train_ensemble(self, dataset, out_dir: Path, **kwargs) -> dict:
        """:meth:`fit` with ``members > 1`` (members trained one after the other, sharing one array cache)."""
        s = self.settings
        check_writable(out_dir)
        cache = self._cache(out_dir)
        members = [self._member(k, str(cache)) for k in range(s.members)]
        member_facts = [m._train(dataset, out_dir / MEMBER_DIR.format(k), **kwargs) for k, m in enumerate(members)]
        config = {**members[0].config, "settings": s.as_dict()}
        config.pop("calibration", None)
        model = Ensemble([m.model for m in members], len(s.fields))
        device = next(model.parameters()).device
        val_split = config["val_split"]
        val = (val_split, place_arrays(*self._arrays(dataset, val_split, cache), device)) if val_split else None
        calibration, calibrated = self._calibration(model, dataset, val, cache, device)
        if calibration is not None:
            config["calibration"] = calibration
        model.eval()
        self.model, self.config = model, config
        first = member_facts[0]

        def mean(key: str) -> float | None:
            values = [f[key] for f in member_facts]
            return None if any(v is None for v in values) else float(np.mean(values))

        facts = {
            **first,
            "seconds": float(sum(f["seconds"] for f in member_facts)),
            "prepare_seconds": float(sum(f["prepare_seconds"] for f in member_facts)),
            "n_params": count_parameters(model),
            **{k: mean(k) for k in ("final_train_loss", "final_val_loss", "best_val_loss", "initial_val_loss")},
            "best_epoch": [f["best_epoch"] for f in member_facts],
            "std_calibration": calibration,
            **calibrated,
            "members": s.members,
            "member_facts": member_facts,
        }
        write_json(out_dir / "training.json", facts)
        save_state(out_dir / MODEL_FILE, {"model": model.state_dict(), "epoch": -1, "config": config})
        return facts

    def _train(
        self,
        dataset,
        out_dir: Path,
        *,
        train_split: str,
        val_split: str | None,
        on_epoch_end: Callable[[int, dict], None] | None,
    ) -> dict:
        """:meth:`fit` of one network."""
        s = self.settings
        missing = [b for b in s.bands if b not in dataset.bands]
        if missing:
            raise ValueError(f"bands {missing} are not in the dataset (it has {dataset.bands}); fix bands=...")
        pol_bands = self._polarised_bands(dataset) if s.fields == "IQU" else []
        if s.fields == "IQU" and not pol_bands:
            raise ValueError(
                f"fields=IQU needs polarised inputs, but none of the bands {s.bands} is an IQU channel of the "
                "dataset; add a polarised band to bands=..., or set fields=I"
            )
        check_writable(out_dir)
        device = resolve_device(s.device)
        layout = self._layout(int(dataset.nside))
        cache = self._cache(out_dir)
        t0 = time.perf_counter()
        has_val = val_split is not None and len(dataset.sim_indices(val_split)) > 0
        train = self._arrays(dataset, train_split, cache)
        val = self._arrays(dataset, val_split, cache) if has_val else None
        data_sha256 = {"train": array_sha256(*train), **({"valid": array_sha256(*val)} if has_val else {})}
        prepare_seconds = time.perf_counter() - t0
        ckpt = out_dir / "last.pt"
        saved = load_checkpoint(ckpt)["config"] if ckpt.is_file() else None
        fwhm = {c.band: getattr(c, "fwhm_arcmin", None) for c in dataset.channels}
        config = {
            "method": self.name,
            "settings": s.as_dict(),
            "nside": int(dataset.nside),
            "fwhm_arcmin": [fwhm.get(b) for b in s.bands],
            "pol_bands": pol_bands,
            "stats": saved["stats"] if saved is not None else channel_stats(*train),
            "train_split": train_split,
            "val_split": val_split if has_val else None,
            "dataset": str(Path(getattr(dataset, "root", "."))),
            "train_foregrounds": _foreground_model(dataset, train_split),
        }
        if saved is not None:
            _check_resumable(saved, config, ckpt)
        model = self._build(config)
        if device.type == "cuda":
            model = model.to(memory_format=torch.channels_last)
        gaps = self._target_gaps()
        point_loss = _on_finite(LOSSES[s.loss]) if gaps else LOSSES[s.loss]
        grouped = self._field_groups() is not None  # two networks: each keeps its best epoch
        if s.uncertainty == "gaussian":
            mean_loss = LOSSES[s.loss] if s.gaussian_mean == "loss" else None  # gaussian_nll drops the gaps

            def loss_fn(m, batch):
                target, out = batch[1] / m.scale_for(batch[1]), m(batch[0])
                if grouped and not m.training:
                    return field_group_losses(out, target, point_loss if mean_loss is not None else None, gaps=gaps)
                if mean_loss is not None and not m.training:  # validation: the mean's loss chooses the epoch
                    return point_loss(out[:, : target.shape[1]].float(), target.float())
                return gaussian_nll(out, target, mean_loss, gaps=gaps)
        else:  # a point model, or MC dropout (its training is the point model's, with dropout)
            loss = point_loss

            def loss_fn(m, batch):
                if grouped and not m.training:
                    return field_group_losses(m(batch[0]), batch[1] / m.scale_for(batch[1]), loss)
                return loss(m(batch[0]), batch[1] / m.scale_for(batch[1]))

        train_data = place_arrays(*train, device)
        val_data = place_arrays(*val, device) if val is not None else None
        history = self._run_epochs(
            model,
            (train_data, val_data),
            loss_fn,
            int(s.epochs),
            out_dir,
            config,
            device,
            s.seed,
            on_epoch_end=_callbacks(
                on_epoch_end, _tensorboard_logger(out_dir / "tensorboard") if s.tensorboard else None
            ),
            score_initial=self.untrained_is_base,
        )
        variance = (
            self._fit_variance(model, train_data, val_data, out_dir, config, device, gaps) if s.variance_epochs else {}
        )
        val_named = (val_split, val_data) if val_data is not None else None
        calibration, calibrated = self._calibration(model, dataset, val_named, cache, device)
        if calibration is not None:
            config["calibration"] = calibration
        model.eval()
        self.model, self.config = model, config
        per_map = layout.images_per_map
        facts = {
            "method": self.name,
            "epochs": len(history["epoch"]),
            "seconds": float(sum(history["seconds"])),
            "train_maps_per_s": float(np.median(history["samples_per_s"]) / per_map) if history["epoch"] else None,
            "final_train_loss": history["train_loss"][-1] if history["epoch"] else None,
            "final_val_loss": history["val_loss"][-1] if history["epoch"] else None,
            "best_val_loss": history["best_val_loss"][0],
            "best_epoch": history["best_epoch"][0],
            "initial_val_loss": history["initial_val_loss"][0],
            "n_params": count_parameters(model),
            "n_train_maps": len(train[0]) // per_map,
            "n_val_maps": len(val[0]) // per_map if val is not None else 0,
            "prepare_seconds": prepare_seconds,
            **compute_context(device),
            "data_sha256": data_sha256,
            **variance,
            "std_calibration": calibration,
            **calibrated,
        }
        facts = {k: None if isinstance(v, float) and not math.isfinite(v) else v for k, v in facts.items()}
        write_json(out_dir / "training.json", facts)
        best = out_dir / "best.pt"
        if best.is_file() and calibration is None:
            # the final model is the best checkpoint's bytes, so a resumed fit gives the same file
            with atomic_path(out_dir / MODEL_FILE) as tmp:
                tmp.write_bytes(best.read_bytes())
        else:  # the model holds the best weights; the config now holds the calibration
            save_state(out_dir / MODEL_FILE, {"model": model.state_dict(), "epoch": -1, "config": config})
        return facts

    def _run_epochs(
        self,
        model: nn.Module,
        data: tuple,
        loss_fn: Callable,
        epochs: int,
        folder: Path,
        config: dict,
        device,
        seed,
        **options,
    ) -> dict:
        """:func:`~cosmobench.core.train.fit` of ``model`` on ``data`` (train, validation) for ``epochs`` epochs with
        these settings' batch size, learning rate and schedule, clipping and precision, checkpointed and logged in
        ``folder`` (``last.pt``, ``best.pt``, ``train_log.csv``), each of :meth:`_field_groups` keeping its own best
        epoch; ``options`` go to ``fit``."""
        s = self.settings
        steps = int(epochs) * math.ceil(len(data[0][0]) / s.batch_size)
        return train_loop(
            model,
            *data,
            loss_fn=loss_fn,
            epochs=int(epochs),
            batch_size=int(s.batch_size),
            lr=s.lr,
            scheduler=_make_scheduler(s, steps),
            grad_clip=s.grad_clip,
            amp=s.amp,
            device=device,
            ckpt=folder / "last.pt",
            config=config,
            seed=seed,
            log_csv=folder / "train_log.csv",
            progress=s.progress,
            groups=self._field_groups(),
            **options,
        )

    def _field_groups(self) -> dict[str, str] | None:
        """The networks that keep their own best epoch (:data:`FIELD_GROUPS`: name -> state-dict key substring), for
        separate temperature and polarisation networks; None for one network."""
        if self.settings.fields == "IQU" and self.settings.field_networks == "separate":
            return {name: key for name, (key, _) in FIELD_GROUPS.items()}
        return None

    def _fit_variance(
        self, model: Standardised, train_data, val_data, out_dir: Path, config: dict, device: torch.device, gaps: bool
    ) -> dict[str, Any]:
        """Train the variance networks of a Gaussian head (``gaussian_mean="loss"``) ``variance_epochs`` more epochs
        on the residual of its chosen means, frozen (no gradient, BatchNorm in evaluation mode), in
        ``out_dir/variance`` (``last.pt``, ``best.pt``, ``train_log.csv``; resumed like the first fit).

        The loss is the first fit's likelihood of the means' residual (beta-NLL, the means held fixed) without
        the means' point loss; each field group keeps the epoch with its lowest validation likelihood, the
        variance it started from (epoch -1) among them. Returns ``variance_best_epoch`` and
        ``variance_best_val_nll`` (scaled-target units) for ``training.json``.
        """
        s = self.settings
        grouped = self._field_groups() is not None
        frozen = _FrozenMeans(model)

        def loss_fn(m, batch):
            target, out = batch[1] / m.scale_for(batch[1]), m(batch[0])
            if not m.training:  # the likelihood of each field group (or of all fields), variance included
                return (
                    field_group_losses(out, target, None, gaps=gaps)
                    if grouped
                    else gaussian_nll(out, target, gaps=gaps)
                )
            return gaussian_nll(out, target, _no_point_loss, gaps=gaps)

        history = self._run_epochs(
            frozen,
            (train_data, val_data),
            loss_fn,
            int(s.variance_epochs),
            out_dir / "variance",
            config,
            device,
            torch_seed(s.seed, self.name, "variance"),
            score_initial=val_data is not None,
        )
        frozen.release()
        return {"variance_best_epoch": history["best_epoch"][0], "variance_best_val_nll": history["best_val_loss"][0]}

    def predict(self, obs: dict[str, np.ndarray], channels) -> np.ndarray:
        """CMB map from the observed channels (the mean with an ``uncertainty``: with ``"mc_dropout"`` the mean
        of the ``mc_samples`` stochastic passes, not the deterministic network's output).

        Parameters
        ----------
        obs : dict of str to ndarray, shape (nfield, npix) or (npix,), uK_CMB, RING
            Observed maps by band (row 0, the intensity, is used; rows 1 and 2, Q and U, of the polarised bands
            with ``fields="IQU"``); must include the trained ``bands``.
        channels : list of Channel
            The channels of ``obs``; their beams must match those the model was trained with.

        Returns
        -------
        ndarray, float64, uK_CMB, at ``output_beam_arcmin`` (unbeamed for the plain UNets): shape (npix,) (I)
        with ``fields="I"``, (3, npix) (I, Q, U) with ``fields="IQU"``.
        """
        return self._predict(obs, channels)[0]

    def predict_with_std(self, obs: dict[str, np.ndarray], channels) -> tuple[np.ndarray, np.ndarray]:
        """CMB map and its calibrated 1-sigma error per pixel and field (``uncertainty`` not ``"none"``).

        Parameters
        ----------
        obs, channels
            As for :meth:`predict`.

        Returns
        -------
        mean : ndarray, the shape :meth:`predict` returns, float64, uK_CMB
        std : ndarray, same shape, float64, uK_CMB: the predicted standard deviation of ``mean - truth``, the
            square root of the variance (the head's, or the MC passes') times the validation calibration
            ``s_f^2`` of each field.
        """
        if not self.uncertainty:
            raise ValueError(
                f"{type(self).__name__} was set up with uncertainty='none' and predicts no standard deviation; "
                "train it with uncertainty=gaussian (or uncertainty=mc_dropout with dropout > 0)"
            )
        return self._predict(obs, channels)

    def _predict(self, obs: dict[str, np.ndarray], channels) -> tuple[np.ndarray, np.ndarray | None]:
        """(mean, std) as :meth:`predict_with_std` returns them; std is None without an uncertainty."""
        if self.model is None:
            raise RuntimeError(
                f"{type(self).__name__} is not trained: call fit(...) or {type(self).__name__}.load(out_dir)"
            )
        s = self.settings
        missing = [b for b in s.bands if b not in obs]
        if missing:
            raise ValueError(f"obs lacks bands {missing} that the model was trained on ({s.bands})")
        check_beams(channels, dict(zip(s.bands, self.config["fwhm_arcmin"])), "the model was trained")
        maps = _stack_planes(obs, input_planes(s.bands, self.config.get("pol_bands", ())))
        nside = self.config["nside"]
        if maps.shape[-1] != 12 * nside**2:
            raise ValueError(f"the model was trained at nside {nside} ({12 * nside**2} pixels), got {maps.shape[-1]}")
        layout = self._layout(nside)
        images = torch.from_numpy(np.ascontiguousarray(layout.images(maps)))
        device = next(self.model.parameters()).device
        nfield = len(s.fields)
        sampling = self._sampling()
        means, variances = [], []
        with _inference(self.model, device, amp=s.amp, **sampling):
            for start in range(0, len(images), s.batch_size):
                batch = images[start : start + s.batch_size].to(device)
                mu, var = _moments(self.model, batch, nfield, sampling["mc_samples"])
                scale = self.model.scale_for(mu)
                means.append((mu * scale).cpu())
                if var is not None:
                    variances.append((var * scale.double() ** 2).cpu())
        mean = layout.to_map(torch.cat(means).numpy()).astype(np.float64)
        std = None
        if variances:
            calibration = np.asarray(self.config.get("calibration", [1.0] * nfield), dtype=np.float64)
            std = np.sqrt(calibration[:, None] * layout.to_map(torch.cat(variances).numpy()))
        if s.fields == "I":
            return mean[0], None if std is None else std[0]
        return mean, std

    @classmethod
    def load(cls, out_dir: Path | str, *, device: str = "auto", which: str = "model"):
        """A trained method from ``out_dir``: ``model.pt`` (the final model of a finished :meth:`fit`), or the
        checkpoints ``best.pt`` / ``last.pt`` of a running one.

        Parameters
        ----------
        out_dir : path
            The ``out_dir`` given to :meth:`fit`.
        device : str
            Where to run predictions (on the CPU the process keeps freed memory for reuse, as in training:
            :func:`~cosmobench.core.runtime.retain_freed_memory`).
        which : {"model", "best", "last"}
            Final model (the best-validation weights and, with an ``uncertainty``, the calibration, written
            when training finished), or the current best-validation or last-epoch checkpoint (whose
            standard deviations are uncalibrated). An ensemble's folder has ``model.pt`` only; its members'
            checkpoints are in ``member<k>``.
        """
        if which not in ("model", "best", "last"):
            raise ValueError(f"which must be 'model', 'best' or 'last', got {which!r}")
        path = Path(out_dir) / f"{which}.pt"
        if not path.is_file():
            if (Path(out_dir) / MEMBER_DIR.format(0)).is_dir():
                raise FileNotFoundError(
                    f"{path} does not exist: {out_dir} is an ensemble's folder, whose checkpoints are its members'; "
                    f"load one with which={which!r} from {Path(out_dir) / MEMBER_DIR.format('<k>')}"
                    + ("" if which != "model" else ", or finish the ensemble's fit (it writes model.pt last)")
                )
            raise FileNotFoundError(
                f"{path} does not exist; train first with {cls.__name__}(...).fit(dataset, out_dir)"
            )
        state = load_checkpoint(path)
        config = state["config"]
        if config.get("method") != cls.name:
            raise ValueError(f"{path} holds a {config.get('method')!r} model, not {cls.name!r}")
        method = cls(**{**_ADDED_SETTINGS, **config["settings"], "device": device})
        model = method._build(config)
        model.load_state_dict(state["model"])
        target = resolve_device(device)
        if target.type == "cpu":
            retain_freed_memory()  # a prediction's activations are reused from map to map
        method.model = model.to(target).eval()
        method.config = config
        return method


def _on_finite(loss: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]):
    """``loss(pred, target)`` over the pixels whose target is finite (NaN: outside the loss region)."""

    def masked(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        keep = torch.isfinite(target)
        return loss(pred[keep], target[keep])

    return masked


def _learning_settings(settings: dict) -> dict:
    """The settings that change what is learned: not the resumable ones, nor ``gaussian_mean`` without a Gaussian
    head, nor ``field_networks`` for a temperature-only model (a model trained before those settings existed
    resumes under their new defaults where they do not apply)."""
    drop = set(_RESUMABLE) | ({"gaussian_mean"} if settings.get("uncertainty") != "gaussian" else set())
    drop |= {"field_networks"} if settings.get("fields") != "IQU" else set()
    return {k: v for k, v in settings.items() if k not in drop}


def _check_resumable(saved: dict, config: dict, ckpt: Path) -> None:
    a, b = (
        _learning_settings({**_ADDED_SETTINGS, **saved.get("settings", {})}),
        _learning_settings(config["settings"]),
    )
    mismatch = sorted(k for k in set(a) | set(b) if a.get(k) != b.get(k))
    for key in ("method", "nside", "fwhm_arcmin", "train_split"):
        if saved.get(key) != config[key]:
            mismatch.append(key)
    if saved.get("pol_bands", []) != config["pol_bands"]:
        mismatch.append("pol_bands")
    if mismatch:
        raise ValueError(
            f"{ckpt} was trained with different {mismatch}; use another out_dir or delete {ckpt.parent} to retrain"
        )


def _callbacks(*fns):
    fns = [f for f in fns if f is not None]
    if not fns:
        return None

    def call(epoch: int, record: dict) -> None:
        for f in reversed(fns):  # loggers first, then the caller's (which may raise)
            f(epoch, record)

    return call


def _tensorboard_logger(folder: Path):
    from torch.utils.tensorboard import SummaryWriter

    writer = SummaryWriter(log_dir=str(folder))

    def log(epoch: int, record: dict) -> None:
        for key in ("train_loss", "val_loss", "lr", "samples_per_s"):
            if not math.isnan(record[key]):
                writer.add_scalar(key, record[key], epoch)
        writer.flush()

    return log
