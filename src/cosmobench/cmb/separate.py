"""Run a separation method over a dataset split: train a learned method, check the observed maps, predict.

Library functions on plain arguments; ``cosmobench cmb train`` and ``cosmobench cmb separate``
(:mod:`cosmobench.cmb.stages`) add the stage records. Predictions go to
``<root>/<method>/<split>/simNNNN/cmb_pred.fits``, uK_CMB, written atomically: one column (``TEMPERATURE``) for a
method with ``fields="I"``, three (``TEMPERATURE``, ``Q_POLARISATION``, ``U_POLARISATION``, ``POLCCONV='COSMO'``) with
``fields="IQU"``. A method that estimates its error (``uncertainty``, :meth:`predict_with_std`) also gets
``cmb_pred_std.fits`` beside it (same columns, ``EXTNAME='CMB-PRED-STD'``, written first, so a prediction that exists
is complete); finished predictions are kept on rerun. Both headers hold ``METHOD``, ``FWHM`` (the output beam,
arcmin), ``LMAX`` and what a method records of the map (its ``prediction_cards()``: ``nilc_regress``'s and
``regress_unet``'s guard writes ``GNULL``, ``GTHRESH`` and ``TCORR``). ``<root>/<method>/<split>/method.json`` records
the method's settings, the beam (``output_beam_arcmin``) and band limit (``output_lmax``) of its output, its
``fields`` and whether it has an ``uncertainty``, which the evaluation needs. A learned method's model is
``<root>/<method>/model/model.pt``.
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Mapping, Sequence
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

from ..core.executor import map_tasks
from ..core.io import read_json, write_healpix, write_json
from ..core.settings import plain
from .dataset import CMBDataset, method_info_path, obs_path, pred_path, pred_std_path
from .methods import RUNTIME_SETTINGS, get_method
from .methods import is_learned as _is_learned

__all__ = [
    "train",
    "separate",
    "predict_split",
    "predict_maps",
    "check_observed",
    "with_base_map",
    "check_model",
    "trained_settings",
    "model_dir",
    "prediction_header",
    "map_cards",
    "prediction_columns",
    "method_facts",
    "PREDICTION_COLUMNS",
]

PREDICTION_COLUMNS = ("TEMPERATURE", "Q_POLARISATION", "U_POLARISATION")
"""FITS column names of a predicted CMB map's I, Q, U."""


def _build(method: str, settings: Mapping | None):
    """An instance of method ``method`` with ``settings``; bad settings raise naming the method."""
    cls = get_method(method)
    try:
        return cls(**dict(settings or {}))
    except TypeError as err:
        raise TypeError(f"bad settings for method {method!r}: {err}") from err


def model_dir(root: Path | str, method: str) -> Path:
    """Folder of a learned method's training run, ``<root>/<method>/model`` (the model is ``model.pt``)."""
    return Path(root) / method / "model"


def train(
    root: str | Path,
    *,
    method: str,
    settings: Mapping | None = None,
    train_split: str = "Train",
    val_split: str = "Valid",
) -> dict:
    """Train a learned method on a dataset into :func:`model_dir` (resumes from its checkpoint).

    Parameters
    ----------
    root : path
        Dataset root.
    method : str
        Registered method name (see :data:`cosmobench.cmb.methods.METHODS`); a classical method returns ``{}``.
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
    if not _is_learned(method):
        return {}
    t0 = time.perf_counter()
    facts = dict(model.fit(dataset, model_dir(dataset.root, method), train_split=train_split, val_split=val_split))
    facts.setdefault("seconds", time.perf_counter() - t0)
    facts["method"] = method
    return facts


def check_model(dataset: CMBDataset, method: str, folder: str | Path) -> Any:
    """Refuse, before any work, a trained model that cannot separate ``dataset``; return it (loaded on the CPU).

    Parameters
    ----------
    dataset : CMBDataset
    method : str
        A learned method.
    folder : path
        Its trained model folder (``<root>/<method>/model``, possibly of another dataset).

    Returns
    -------
    The trained method (``Method.load``), e.g. for :func:`trained_settings`.

    Raises
    ------
    ValueError
        The model was trained at another nside, on channels the dataset lacks, with other beams, or reads Q and U
        of channels that are intensity-only in the dataset (each named).
    """
    import math

    model = get_method(method).load(folder, device="cpu")
    config = model.config
    # the observed channels it was trained on (derived inputs, e.g. nilc_unet's NILC map, have no beam)
    trained = {b: fwhm for b, fwhm in zip(model.settings.bands, config["fwhm_arcmin"]) if fwhm is not None}
    problems = []
    if int(config["nside"]) != int(dataset.nside):
        problems.append(f"it was trained at nside {config['nside']}, the dataset is nside {dataset.nside}")
    missing = [b for b in trained if b not in dataset.bands]
    if missing:
        problems.append(f"it reads bands {missing} that the dataset lacks (it has {dataset.bands})")
    beams = [
        b
        for b, fwhm in trained.items()
        if b not in missing and not math.isclose(dataset.channel(b).fwhm_arcmin, fwhm, rel_tol=1e-6)
    ]
    if beams:
        problems.append(f"its channels {beams} had other beams in training")
    unpolarised = [
        b
        for b in config.get("pol_bands", [])
        if b in trained and b not in missing and dataset.channel(b).fields != "IQU"
    ]
    if unpolarised:
        problems.append(f"it reads Q and U of {unpolarised}, which are intensity-only in the dataset")
    if problems:
        raise ValueError(
            f"the {method} model in {folder} cannot separate the dataset {dataset.root}: {'; '.join(problems)}. "
            "Use a model trained on a dataset with the same nside and channels (train one there)"
        )
    return model


def _check_sim(root: str, split: str, bands: Sequence[str], nside: int, i: int) -> list[str]:
    """Problems of the observed maps of one simulation (missing, wrong pixel count, NaN/inf), one line each."""
    from ..core.io import read_healpix

    problems = []
    for band in bands:
        path = obs_path(root, split, i, band)
        if not path.is_file():
            problems.append(f"{path} is missing")
            continue
        maps = np.atleast_2d(read_healpix(path, dtype=np.float64))
        if maps.shape[-1] != 12 * nside**2:
            problems.append(
                f"{path} has {maps.shape[-1]} pixels (nside {int(np.sqrt(maps.shape[-1] / 12))}), the dataset is "
                f"nside {nside} ({12 * nside**2} pixels)"
            )
        bad = int(np.count_nonzero(~np.isfinite(maps)))
        if bad:
            problems.append(f"{path} has {bad} NaN or infinite pixel value(s)")
    return problems


def check_observed(
    dataset: CMBDataset,
    split: str,
    bands: Sequence[str],
    *,
    executor: str = "serial",
    workers: int = 1,
    scheduler_address: str | None = None,
    progress: bool = False,
) -> list[int]:
    """Check every observed map of ``split`` that a method reads, before any work; return the simulation indices.

    Raises
    ------
    ValueError
        The split has no simulation, or maps are missing, at another nside or hold NaN/inf pixels (each file is
        named with its pixel count, and the fix).
    """
    indices = dataset.sim_indices(split)
    if not indices:
        raise ValueError(
            f"split {split!r} of {dataset.root} has no finished simulations; simulate it "
            f"(`cosmobench cmb simulate out_dir={dataset.root}` with simulate.splits including {split})"
        )
    found = map_tasks(
        partial(_check_sim, str(dataset.root), split, list(bands), int(dataset.nside)),
        indices,
        executor=executor,
        workers=workers,
        scheduler_address=scheduler_address,
        desc="check maps",
        unit="sim",
        progress=progress,
    )
    problems = [p for sim in found for p in sim]
    if problems:
        raise ValueError(
            f"{len(problems)} observed map(s) of split {split!r} cannot be separated:\n  "
            + "\n  ".join(problems[:10])
            + ("\n  ..." if len(problems) > 10 else "")
            + "\nRegenerate them (`cosmobench cmb simulate overwrite=true`, or delete the simulation folders and "
            "rerun simulate), or copy them again from their source"
        )
    return indices


_LOADED: dict = {}


def _normalised(method: str, settings: Mapping) -> dict:
    """The settings as the method holds them (e.g. ``nilc_unet`` puts its NILC input first in ``bands``)."""
    held = getattr(_build(method, dict(settings)), "settings", None)
    return plain(held.as_dict()) if hasattr(held, "as_dict") else plain(dict(settings))


def trained_settings(method: str, settings: Mapping, model: Any) -> dict:
    """A learned method's settings as it predicts: ``settings`` with the trained ``model``'s value of every key
    (but the runtime ones, :data:`~cosmobench.cmb.methods.RUNTIME_SETTINGS`) where they differ, since the model,
    not this run's configuration, is what predicts; those keys are named in a warning.

    Parameters
    ----------
    method : str
    settings : mapping
        The method's settings given to this run (its defaults and overrides).
    model
        The loaded trained method (``Method.load``); its ``settings`` are compared, as the method holds them.

    Returns
    -------
    dict
        What the predictions' ``method.json`` and the separate record hold: ``settings`` itself when the model
        was trained with them.
    """
    held = getattr(model, "settings", None)
    if not hasattr(held, "as_dict"):
        return dict(settings)
    given, trained = _normalised(method, settings), plain(held.as_dict())
    differ = [k for k in sorted(given) if k in trained and k not in RUNTIME_SETTINGS and given[k] != trained[k]]
    if differ:
        warnings.warn(
            f"{method} predicts with its trained model's settings "
            f"({', '.join(f'{k}={trained[k]!r}' for k in differ)}), not the given "
            f"{', '.join(f'{k}={given[k]!r}' for k in differ)}: training settings take effect through "
            f"`cosmobench cmb train` (give the same methods.{method}.* to both stages to silence this)",
            stacklevel=2,
        )
    return {**settings, **{k: trained[k] for k in differ}}


def _load(method: str, settings: dict, root: str, model_folder: str | None):
    """Build the method once per process (learned methods load their trained weights from ``model_folder``)."""
    key = (method, repr(sorted(settings.items())), root, model_folder)
    if key not in _LOADED:
        model = _build(method, settings)  # validates the settings
        if _is_learned(method):
            model = get_method(method).load(model_folder, device=settings.get("device", "auto"))
        _LOADED.clear()
        _LOADED[key] = model
    return _LOADED[key]


def prediction_header(method: str, beam_arcmin: float | None, lmax: int | None = None) -> dict[str, tuple]:
    """FITS cards of a predicted CMB map: ``FWHM`` (its output beam, arcmin; 0 = unbeamed), ``METHOD`` and, for
    a band-limited output, ``LMAX``."""
    cards = {
        "FWHM": (float(beam_arcmin or 0.0), "output beam FWHM [arcmin], 0 = unbeamed"),
        "METHOD": (method, "cosmobench separation method"),
    }
    if lmax is not None:
        cards["LMAX"] = (int(lmax), "band limit of the output map")
    return cards


def map_cards(model) -> dict[str, tuple]:
    """FITS cards a method records of the map it predicted last (its ``prediction_cards()``, e.g. ``nilc_regress``'s
    guard decision); none for a method without them."""
    return getattr(model, "prediction_cards", dict)()


def prediction_columns(maps: np.ndarray) -> list[str]:
    """FITS column names of predicted maps of shape (npix,) (I) or (3, npix) (I, Q, U)."""
    return list(PREDICTION_COLUMNS[: len(np.atleast_2d(maps))])


def method_facts(model, nside: int) -> dict:
    """What the evaluation needs to know of a method's output at ``nside``, as recorded in ``method.json``.

    Returns
    -------
    dict
        ``output_beam_arcmin`` (float or None), ``fields`` (``"I"`` or ``"IQU"``), ``output_lmax`` (int or None:
        the method's ``output_lmax_for(nside)``, else its ``output_lmax`` attribute) and ``uncertainty`` (bool:
        whether it has a usable ``predict_with_std``; a method's own ``uncertainty`` attribute decides); for a
        trained method ``train_foregrounds``, the foreground model of its training split (None if not recorded).
    """
    lmax_for = getattr(model, "output_lmax_for", None)
    lmax = lmax_for(int(nside)) if lmax_for is not None else getattr(model, "output_lmax", None)
    return {
        "output_beam_arcmin": model.output_beam_arcmin,
        "fields": _fields(model),
        "output_lmax": None if lmax is None else int(lmax),
        "uncertainty": _has_std(model),
        **({"train_foregrounds": model.train_foregrounds} if hasattr(model, "train_foregrounds") else {}),
    }


def _fields(model) -> str:
    """A method's predicted fields, ``"I"`` (the default of methods that do not say) or ``"IQU"``."""
    return getattr(model, "fields", "I")


def _corrects(model) -> bool:
    """Whether a method corrects NILC's cached maps (its ``corrects`` attribute, :mod:`~cosmobench.cmb.methods`)."""
    return getattr(model, "corrects", None) is not None


def with_base_map(obs: dict, model: Any, root: str | Path, split: str, i: int) -> dict:
    """The maps ``cmb separate`` hands ``model`` for simulation ``i`` of ``split``: ``obs``, plus, for a corrector,
    the recorded NILC map it corrects (``<root>/nilc/<split>``) under ``"nilc"``, as in training (not computed again).
    """
    if not _corrects(model):
        return obs
    from .methods.nilc_unet import NILC_BAND, read_nilc

    return {**obs, NILC_BAND: read_nilc(root, split, i, model.nilc)}


def _has_std(model) -> bool:
    """Whether a method estimates its error: its ``uncertainty`` attribute, else whether it has ``predict_with_std``."""
    return bool(getattr(model, "uncertainty", hasattr(model, "predict_with_std")))


def predict_maps(model, obs: dict[str, np.ndarray], channels, *, what: str) -> tuple[np.ndarray, np.ndarray | None]:
    """A method's prediction (and standard deviation when it estimates one), checked.

    Parameters
    ----------
    model
        A method instance (trained, for a learned one).
    obs, channels
        As for the method's ``predict``.
    what : str
        Names the prediction in error messages (e.g. ``"method 'nilc', Test sim 3"``).

    Returns
    -------
    mean : ndarray, shape (npix,) or (3, npix), float64, uK_CMB
    std : ndarray of the same shape, or None when the method does not estimate its error

    Raises
    ------
    RuntimeError
        A shape that does not match the method's ``fields`` and the maps' pixels, non-finite values, or a
        negative standard deviation.
    """
    fields = _fields(model)
    npix = np.atleast_2d(next(iter(obs.values()))).shape[-1]
    expected = (npix,) if fields == "I" else (3, npix)
    if _has_std(model):
        mean, std = (np.asarray(m, dtype=np.float64) for m in model.predict_with_std(obs, channels))
    else:
        mean, std = np.asarray(model.predict(obs, channels), dtype=np.float64), None
    for name, maps in (("prediction", mean), ("standard deviation", std)):
        if maps is None:
            continue
        if maps.shape != expected:
            raise RuntimeError(
                f"{what}: the {name} has shape {maps.shape}, expected {expected} (fields={fields}, {npix} pixels)"
            )
        bad = int(np.count_nonzero(~np.isfinite(maps)))
        if bad:
            raise RuntimeError(f"{what}: the {name} has {bad} NaN or infinite pixel value(s)")
    if std is not None and np.any(std < 0):
        raise RuntimeError(f"{what}: the standard deviation has {int(np.count_nonzero(std < 0))} negative pixel(s)")
    return mean, std


def _predict_one(
    root: str, method: str, settings: dict, split: str, bands: list[str], model_folder: str | None, i: int
) -> float:
    """Predict one simulation unless done; returns seconds spent (0 when skipped)."""
    out = pred_path(root, method, split, i)
    if out.is_file():
        return 0.0
    dataset = CMBDataset(root)
    model = _load(method, settings, root, model_folder)
    obs = dataset.load_obs(split, i, bands)
    channels = [dataset.channel(b) for b in obs]
    obs = with_base_map(obs, model, root, split, i)
    t0 = time.perf_counter()
    mean, std = predict_maps(model, obs, channels, what=f"method {method!r}, {split} simulation {i}")
    seconds = time.perf_counter() - t0
    header = prediction_header(method, model.output_beam_arcmin, method_facts(model, dataset.nside)["output_lmax"])
    header.update(map_cards(model))
    columns = prediction_columns(mean)
    if std is not None:  # first: the prediction's presence marks a finished simulation
        write_healpix(
            pred_std_path(root, method, split, i),
            std,
            unit="uK_CMB",
            column_names=columns,
            extname="CMB-PRED-STD",
            extra_header=header,
        )
    write_healpix(out, mean, unit="uK_CMB", column_names=columns, extname="CMB-PRED", extra_header=header)
    return seconds


def predict_split(
    dataset: CMBDataset,
    method: str,
    settings: Mapping,
    split: str,
    indices: Sequence[int],
    *,
    model_folder: str | Path | None = None,
    executor: str = "serial",
    workers: int = 1,
    scheduler_address: str | None = None,
    progress: bool = True,
) -> dict:
    """Predict simulations ``indices`` of ``split`` (checked by :func:`check_observed`); see :func:`separate`."""
    settings = dict(settings)
    model = _build(method, settings)
    folder = None
    if _is_learned(method):  # fields, uncertainty and every setting but the runtime ones are the trained model's
        folder = str(model_folder if model_folder is not None else model_dir(dataset.root, method))
        model = _load(method, settings, str(dataset.root), folder)
        settings = trained_settings(method, settings, model)
    if _corrects(model):  # NILC's maps of the split first (kept when finished), which the correction reads
        from .methods.nilc_unet import cache_nilc

        cache_nilc(dataset, settings.get(model.corrects) or {}, [split], workers=workers, progress=progress)
    facts = method_facts(model, dataset.nside)
    info = {"method": method, "settings": settings, **facts}
    info_path = method_info_path(dataset.root, method, split)
    if info_path.is_file() and read_json(info_path) != info:  # e.g. nilc_unet's NILC cache, another NILC
        raise ValueError(
            f"{info_path.parent} holds predictions made with other settings of {method!r}; delete that folder "
            "(or rerun the separate stage with overwrite=true) to predict again with the new settings"
        )
    write_json(info_path, info)
    bands = list(getattr(model, "bands", None) or dataset.bands)
    fn = partial(_predict_one, str(dataset.root), method, settings, split, bands, folder)
    seconds = map_tasks(
        fn,
        list(indices),
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
        "kept": len(seconds) - len(done),
        "seconds_per_map": float(np.median(done)) if done else 0.0,
        **facts,
    }


def separate(
    root: str | Path,
    *,
    method: str,
    settings: Mapping | None = None,
    split: str = "Test",
    model_folder: str | Path | None = None,
    executor: str = "serial",
    workers: int = 1,
    scheduler_address: str | None = None,
    progress: bool = True,
) -> dict:
    """Predict the CMB of every simulation of ``split`` with ``method`` (finished predictions are kept).

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
    model_folder : path, optional
        A learned method's trained model folder; default :func:`model_dir`.
    executor, workers, scheduler_address
        See :func:`cosmobench.core.executor.map_tasks`.
    progress : bool
        Show a progress bar.

    Returns
    -------
    dict
        ``method``, ``split``, ``predicted``, ``kept`` (predictions already there), ``seconds_per_map`` (median
        over the predicted maps), and :func:`method_facts`: ``output_beam_arcmin``, ``fields``, ``output_lmax``,
        ``uncertainty``.
    """
    dataset = CMBDataset(root)
    model = _build(method, settings)
    bands = list(getattr(model, "bands", None) or dataset.bands)
    indices = check_observed(dataset, split, bands, executor=executor, workers=workers)
    return predict_split(
        dataset,
        method,
        dict(settings or {}),
        split,
        indices,
        model_folder=model_folder,
        executor=executor,
        workers=workers,
        scheduler_address=scheduler_address,
        progress=progress,
    )
