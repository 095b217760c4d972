"""Separation methods and their registry.

A method turns the observed channels of one simulation into a CMB map in uK_CMB on the same grid. Every
method is a class with this interface:

``Method(**settings)``
    Keyword-only settings (the method's YAML section); unknown keys raise ``TypeError``.
``method.output_beam_arcmin``
    FWHM of the Gaussian beam of its output map, or ``None`` for an unbeamed map (like the target).
``method.fit(dataset, out_dir, *, train_split="Train", val_split="Valid")``
    Learned methods train here (checkpoints under ``out_dir``) and return a dict of training facts;
    classical methods return ``{}``.
``method.predict(obs, channels)``
    ``obs`` maps band name -> ndarray (nfield, npix) uK_CMB; ``channels`` is the list of
    :class:`cosmobench.sky.instrument.Channel` of those bands. Returns ndarray (npix,) uK_CMB (temperature).

Adding a method: one module here, one entry in :data:`METHODS`, one section in ``conf/cmb.yaml``.
"""

from __future__ import annotations

import importlib

__all__ = ["METHODS", "get_method"]

METHODS = {
    "hilc": "cosmobench.cmb.methods.ilc:HILC",
    "nilc": "cosmobench.cmb.methods.nilc:NILC",
    "cmbnncs": "cosmobench.cmb.methods.unet_fullsky:FullSkyUNet",
    "unet_patch": "cosmobench.cmb.methods.unet_patch:PatchUNet",
    "nilc_unet": "cosmobench.cmb.methods.nilc_unet:NILCUNet",
}


def get_method(name: str) -> type:
    """The method class registered as ``name``."""
    if name not in METHODS:
        raise ValueError(f"unknown separation method {name!r}; expected one of {sorted(METHODS)}")
    module, attr = METHODS[name].split(":")
    return getattr(importlib.import_module(module), attr)
