"""Separation methods and their registry.

A method turns the observed channels of one simulation into a CMB map in uK_CMB on the same grid. Every
method is a class with this interface:

``Method(**settings)``
    Keyword-only settings (the method's section ``methods.<name>`` of the configuration); unknown keys raise
    ``TypeError``. The defaults of that section are the method's own (:func:`method_defaults`): the fields of
    its ``Settings`` dataclass when it has one (the learned methods), else its constructor's keyword defaults.
``method.output_beam_arcmin``
    FWHM of the Gaussian beam of its output map, or ``None`` for an unbeamed map (like the target).
``method.fields``
    ``"I"`` (temperature) or ``"IQU"`` (temperature and the Stokes Q, U maps; HEALPix/COSMO convention).
``method.output_lmax_for(nside)`` (optional)
    Band limit of its output at ``nside``, or ``None`` when it is not band-limited below the map's resolution.
``method.fit(dataset, out_dir, *, train_split="Train", val_split="Valid")``
    Learned methods train here (the final weights in ``out_dir/model.pt``) and return a dict of training
    facts; classical methods return ``{}``.
``Method.load(out_dir, device=...)``
    Learned methods only (this is what makes a method "learned"): the trained method from ``out_dir``.
``method.predict(obs, channels)``
    ``obs`` maps band name -> ndarray (nfield, npix) uK_CMB; ``channels`` is the list of
    :class:`cosmobench.sky.instrument.Channel` of those bands. Returns ndarray (npix,) uK_CMB with
    ``fields="I"``, (3, npix) I, Q, U with ``fields="IQU"``.
``method.predict_with_std(obs, channels)`` (optional)
    ``(mean, std)``, both shaped like ``predict``'s output: the per-pixel 1-sigma error of the prediction
    against the CMB at the output beam and band limit; ``separate`` writes it as ``cmb_pred_std.fits``.

Adding a method: one class, one :func:`register` call (or one entry in :data:`METHODS`); its settings appear
under ``methods.<name>`` with its defaults, and ``cosmobench cmb separate method=<name>`` runs it
(docs/adding.md).
"""

from __future__ import annotations

import dataclasses
import importlib
import inspect
from typing import Any

from ...core.settings import plain
from ...core.stage import RUNTIME_KEYS

__all__ = [
    "METHODS",
    "RUNTIME_SETTINGS",
    "CALIBRATION_SETTINGS",
    "get_method",
    "register",
    "method_defaults",
    "is_learned",
]

#: method settings that change how a method runs, not what it computes (not compared between runs)
RUNTIME_SETTINGS = RUNTIME_KEYS | {"tensorboard"}
#: learned-method settings that change only the calibration of the error bars (a finished training is kept and
#: calibrated again when only they change)
CALIBRATION_SETTINGS = ("calibration_splits", "calibration_rule")

# name -> "module:Class" (imported on first use) or the class itself (registered at run time)
METHODS: dict[str, str | type] = {
    "hilc": "cosmobench.cmb.methods.ilc:HILC",
    "nilc": "cosmobench.cmb.methods.nilc:NILC",
    "cmbnncs": "cosmobench.cmb.methods.unet_fullsky:FullSkyUNet",
    "unet_patch": "cosmobench.cmb.methods.unet_patch:PatchUNet",
    "nilc_unet": "cosmobench.cmb.methods.nilc_unet:NILCUNet",
    "nilc_wiener": "cosmobench.cmb.methods.wiener:NILCWiener",
    "nilc_regress": "cosmobench.cmb.methods.regress:NILCRegress",
    "regress_unet": "cosmobench.cmb.methods.regress_unet:RegressUNet",
    "deepsphere": "cosmobench.cmb.methods.deepsphere:DeepSphereUNet",
    "nilc_deepsphere": "cosmobench.cmb.methods.nilc_deepsphere:NILCDeepSphere",
    "zero": "cosmobench.cmb.methods.null:ZeroMap",
}


def register(name: str, target: str | type) -> None:
    """Register a separation method under ``name``: a class, or ``"module:Class"`` imported on first use.

    Raises
    ------
    ValueError
        ``name`` is not a plain identifier (it becomes a folder and a configuration key).
    """
    if not name.isidentifier():
        raise ValueError(f"method name {name!r} must be an identifier (it names a folder and a config section)")
    METHODS[name] = target


def get_method(name: str) -> type:
    """The method class registered as ``name``.

    Raises
    ------
    ValueError
        ``name`` is not registered; the message lists the registered methods.
    """
    if name not in METHODS:
        raise ValueError(
            f"unknown separation method {name!r}; registered methods: {', '.join(sorted(METHODS))} "
            "(method=NAME; a new one is added with cosmobench.cmb.methods.register, see docs/adding.md)"
        )
    target = METHODS[name]
    if isinstance(target, str):
        module, attr = target.split(":")
        return getattr(importlib.import_module(module), attr)
    return target


def is_learned(name: str) -> bool:
    """Whether the method ``name`` is trained (it can ``load`` a trained model)."""
    return hasattr(get_method(name), "load")


def method_defaults(name: str) -> dict[str, Any]:
    """The default settings of method ``name`` as plain values (tuples become lists).

    The fields of the class's ``Settings`` dataclass when it has one, else the keyword-only parameters with
    defaults of the constructors along its class hierarchy (``**settings`` forwards to the parent's).
    """
    cls = get_method(name)
    settings = getattr(cls, "Settings", None)
    if settings is not None and dataclasses.is_dataclass(settings):
        values = {
            f.name: f.default if f.default is not dataclasses.MISSING else f.default_factory()
            for f in dataclasses.fields(settings)
        }
    else:
        values = {}
        for klass in reversed(cls.__mro__):
            init = klass.__dict__.get("__init__")
            if init is None:
                continue
            for p in inspect.signature(init).parameters.values():
                if p.kind is p.KEYWORD_ONLY and p.default is not p.empty:
                    values[p.name] = p.default
    return plain(values)
