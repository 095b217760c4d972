"""Simulate a multi-frequency CMB separation dataset: one cosmology, CMB and foreground sky per simulation.

:func:`simulate_observation` is the physics step (cosmology -> spectra -> CMB; foregrounds; instrument:
beams and noise) on plain arguments, in memory. :func:`simulate_dataset` writes many of them in the layout
of :mod:`cosmobench.cmb.dataset`: each simulation is an idempotent unit whose files are written atomically,
``params.json`` last, so an interrupted run resumes where it stopped and never takes a partial simulation as
finished. Every random stream is ``rng(seed, split, index, component)``, so the bytes written do not depend
on the executor, the worker count or the order of execution.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from functools import partial
from pathlib import Path

import astropy.units as u
import numpy as np

from .. import __version__
from ..core.executor import map_tasks
from ..core.io import CorruptFileError, check_writable, read_json, sha256, write_healpix, write_json, write_npy
from ..core.seeds import rng
from ..sky import sht
from . import dataset as layout

__all__ = [
    "Observation",
    "simulate_observation",
    "simulate_dataset",
    "dataset_disk_bytes",
    "DEFAULT_SPLITS",
    "DEFAULT_SPLIT_FOREGROUNDS",
]

DEFAULT_SPLITS = {"Train": 8, "Valid": 2, "Test": 2}
DEFAULT_SPLIT_FOREGROUNDS = {"TestOOD": "alt"}  # the out-of-distribution test split, when simulated
_DTYPES = {"float32": np.float32, "float64": np.float64}


@dataclass
class Observation:
    """One simulated sky as the instrument sees it.

    Attributes
    ----------
    obs : dict of str to ndarray
        Band -> observed maps (nfield, npix), uK_CMB, beam-convolved, with noise.
    cmb : ndarray, shape (3, npix)
        The CMB with no beam (the target), uK_CMB.
    foreground_intensity : ndarray, shape (2, npix)
        Foreground intensity with no beam or noise at ``foreground_bands``, uK_CMB.
    foreground_bands : list of str
    cls : ndarray, shape (4, lmax+1)
        C_ell TT, EE, BB, TE used for the CMB, uK^2.
    params : dict
        Cosmology and foreground settings of this sky.
    timings : dict of str to float
        Seconds per part: spectra, cmb, foregrounds, beams, noise.
    """

    obs: dict[str, np.ndarray]
    cmb: np.ndarray
    foreground_intensity: np.ndarray
    foreground_bands: list[str]
    cls: np.ndarray
    params: dict
    timings: dict[str, float] = field(default_factory=dict)


def simulate_observation(
    nside: int,
    channels: Sequence,
    *,
    seed: int,
    key: tuple = (),
    cosmology: Mapping | None = None,
    r: float = 0.0,
    spectra_method: str = "camb",
    cache_dir: str | None = None,
    foreground_backend: str = "synthetic",
    foreground_components: Sequence[str] = ("dust", "synchrotron", "freefree", "ame"),
    pysm_presets: Sequence[str] = (),
    freeze_foregrounds: bool = False,
    foreground_model: str | Mapping | None = None,
    fg_iter: int = 0,
    noise: bool = True,
) -> Observation:
    """Simulate one sky: CMB + foregrounds through the channels' beams, plus noise.

    Parameters
    ----------
    nside : int
        HEALPix resolution; maps are band-limited to ``3 nside - 1``.
    channels : sequence of Channel
        Instrument channels (see :func:`cosmobench.sky.instrument.load_channels`).
    seed : int
        Dataset seed.
    key : tuple
        Stream key of this simulation, e.g. ``("Train", 12)``; every component draws from
        ``rng(seed, *key, component)``.
    cosmology : mapping, optional
        Fixed cosmological parameters (``Cosmology`` fields); drawn from the Planck 2018 prior if omitted.
    r : float
        Tensor-to-scalar ratio (with a drawn cosmology).
    spectra_method : {"camb", "fast"}
        Direct CAMB (one call, the cheapest for one sky) or the cached emulator (built once from 117 CAMB
        runs; the choice for datasets) for the lensed C_ell.
    cache_dir : str, optional
        Folder of the emulator cache.
    foreground_backend : {"synthetic", "pysm3"}
    foreground_components : sequence of str
        Synthetic components (``dust``, ``synchrotron``, ``freefree``, ``ame``).
    pysm_presets : sequence of str
        PySM3 preset strings for the ``pysm3`` backend.
    freeze_foregrounds : bool
        Use one foreground sky (stream ``(seed, "frozen", "foregrounds")``, or ``(seed, "frozen", model,
        "foregrounds")`` for a model other than "default") for every simulation, as CMB-ML did.
    foreground_model : str or mapping, optional
        Synthetic foreground model: a name of :data:`cosmobench.sky.foregrounds.FOREGROUND_MODELS`
        ("default", "alt") or a mapping of :func:`~cosmobench.sky.foregrounds.synthetic_foregrounds` options;
        only "default" (or None) with the ``pysm3`` backend.
    fg_iter : int
        Jacobi iterations of the foreground map analysis.
    noise : bool
        Add instrument noise.

    Returns
    -------
    Observation
    """
    from ..sky.cmb import CMB
    from ..sky.components import Sky
    from ..sky.cosmology import Cosmology, cmb_spectra, draw_cosmology
    from ..sky.foregrounds import foreground_model as resolve_model
    from ..sky.foregrounds import make_foregrounds
    from ..sky.instrument import Instrument
    from ..sky.units import uK_RJ, unit_factor

    nside = sht.check_nside(nside)
    lmax = sht.default_lmax(nside)
    timings: dict[str, float] = {}
    t0 = time.perf_counter()
    if cosmology is not None:
        cosmo = Cosmology(**dict(cosmology))
    else:
        cosmo = draw_cosmology(rng(seed, *key, "cosmology"), r=r)
    cls = cmb_spectra(cosmo, lmax, method=spectra_method, cache_dir=cache_dir)
    t1 = time.perf_counter()
    cmb = CMB.from_spectra(cls, nside, rng(seed, *key, "cmb"))
    t2 = time.perf_counter()
    label = _model_label(foreground_backend, foreground_model)
    frozen_key = ("frozen", "foregrounds") if label in ("default", None) else ("frozen", label, "foregrounds")
    fg_key = frozen_key if freeze_foregrounds else (*key, "foregrounds")
    foregrounds = make_foregrounds(
        foreground_backend,
        nside,
        rng(seed, *fg_key),
        components=list(foreground_components),
        presets=list(pysm_presets),
        model=foreground_model,
    )
    t3 = time.perf_counter()
    timings.update(spectra=t1 - t0, cmb=t2 - t1, foregrounds=t3 - t2)
    instrument = Instrument(channels)
    obs = instrument.observe(
        Sky([cmb, *foregrounds]), seed=seed, key=key, noise=noise, lmax=lmax, fg_iter=fg_iter, timings=timings
    )
    pol_bands = [c for c in instrument.channels if c.fields == "IQU"] or list(instrument.channels)
    fg_bands = [pol_bands[0], pol_bands[-1]]
    fg_intensity = np.zeros((2, sht.npix(nside)))
    t4 = time.perf_counter()
    for row, ch in enumerate(fg_bands):
        for comp in foregrounds:
            emission = comp.emission(ch.center_ghz * u.GHz).to_value(uK_RJ)[0]
            fg_intensity[row] += emission * unit_factor(ch.center_ghz, "uK_RJ", "uK_CMB")
    timings["foregrounds"] += time.perf_counter() - t4
    params = {
        "cosmology": cosmo.to_dict(),
        "spectra_method": spectra_method,
        "foregrounds": {
            "backend": foreground_backend,
            "components": list(foreground_components),
            "pysm_presets": list(pysm_presets),
            "frozen": bool(freeze_foregrounds),
            "stream": list(fg_key),
            "model": label,
            "options": resolve_model(foreground_model) if label is not None else {},
        },
        "seed": int(seed),
        "stream": list(key),
        "noise": bool(noise),
    }
    return Observation(
        obs=obs,
        cmb=cmb.map(),
        foreground_intensity=fg_intensity,
        foreground_bands=[c.band for c in fg_bands],
        cls=cls,
        params=params,
        timings=timings,
    )


def _model_label(backend: str, model: str | Mapping | None) -> str | None:
    """Name of a foreground model as recorded: the model's name, "custom" for a mapping, None for pysm3."""
    if backend != "synthetic":
        if model not in (None, "default"):
            raise ValueError(f"foreground model {model!r} applies to the 'synthetic' backend, not {backend!r}")
        return None
    return "default" if model is None else (model if isinstance(model, str) else "custom")


def _model_record(backend: str, model: str | Mapping | None) -> dict:
    """The manifest entry of a split's foregrounds: ``{"model": label, "options": resolved options}``."""
    from ..sky.foregrounds import foreground_model as resolve_model

    label = _model_label(backend, model)
    return {"model": label, "options": resolve_model(model) if label is not None else {}}


@dataclass(frozen=True)
class _Spec:
    """Everything a worker needs to write one simulation (small and picklable)."""

    root: str
    nside: int
    channels: tuple
    seed: int
    dtype: str
    physics: tuple  # sorted (name, value) pairs for simulate_observation
    foreground_models: tuple = ()  # (split, foreground model) pairs


def _write_simulation(spec: _Spec, item: tuple[str, int]) -> dict[str, float]:
    """Simulate and write one simulation unless it is complete; returns its timings (empty when skipped)."""
    from ..sky.instrument import Channel

    split, i = item
    root = Path(spec.root)
    if layout.params_path(root, split, i).is_file():
        return {}
    for stale in layout.sim_dir(root, split, i).glob(".*.tmp"):  # left by a killed run
        stale.unlink()
    channels = [Channel(**c) for c in spec.channels]
    physics = dict(spec.physics, foreground_model=dict(spec.foreground_models).get(split))
    sim = simulate_observation(spec.nside, channels, seed=spec.seed, key=(split, i), **physics)
    t0 = time.perf_counter()
    dtype = _DTYPES[spec.dtype]
    files = {}
    for ch in channels:
        path = layout.obs_path(root, split, i, ch.band)
        write_healpix(
            path,
            sim.obs[ch.band],
            unit="uK_CMB",
            dtype=dtype,
            extra_header={"FREQ": ch.center_ghz, "FWHM": ch.fwhm_arcmin, "BAND": ch.band},
        )
        files[path.name] = path
    path = layout.target_path(root, split, i)
    write_healpix(path, sim.cmb, unit="uK_CMB", dtype=dtype, extra_header={"FWHM": 0.0})
    files[path.name] = path
    path = layout.foreground_path(root, split, i)
    write_healpix(
        path,
        sim.foreground_intensity,
        unit="uK_CMB",
        dtype=dtype,
        column_names=[f"FG_{b}" for b in sim.foreground_bands],
    )
    files[path.name] = path
    path = layout.theory_path(root, split, i)
    write_npy(path, sim.cls)
    files[path.name] = path
    params = dict(
        sim.params,
        split=split,
        index=int(i),
        foreground_bands=sim.foreground_bands,
        files={name: {"sha256": sha256(p), "bytes": p.stat().st_size} for name, p in files.items()},
    )
    write_json(layout.params_path(root, split, i), params)
    sim.timings["io"] = time.perf_counter() - t0
    return sim.timings


def dataset_disk_bytes(nside: int, channels: Sequence, n_sims: int, dtype: str = "float32") -> int:
    """Approximate bytes a dataset of ``n_sims`` simulations needs on disk."""
    npix = sht.npix(nside)
    nmaps = sum(len(c.fields) for c in channels) + 3 + 2
    per_sim = nmaps * npix * np.dtype(_DTYPES[dtype]).itemsize + 64 * 1024
    return int(per_sim * n_sims)


def _check_completed(root: Path, items: list[tuple[str, int]]) -> list[tuple[str, int]]:
    """Items not yet complete; raise :class:`CorruptFileError` for a complete one whose files changed size."""
    pending = []
    for split, i in items:
        ppath = layout.params_path(root, split, i)
        if not ppath.is_file():
            pending.append((split, i))
            continue
        params = read_json(ppath)
        for name, info in params.get("files", {}).items():
            path = ppath.parent / name
            if not path.is_file() or path.stat().st_size != info["bytes"]:
                raise CorruptFileError(
                    f"{path} is missing or has the wrong size for a finished simulation; "
                    f"delete the folder {ppath.parent} and rerun to regenerate it (other simulations are kept)"
                )
    return pending


def simulate_dataset(
    out_dir: str | Path,
    *,
    nside: int = 32,
    splits: Mapping[str, int] | None = None,
    bands: Sequence[str] | None = None,
    channel_table: str | None = None,
    fields: str | None = None,
    seed: int = 0,
    cosmology: Mapping | None = None,
    r: float = 0.0,
    spectra_method: str = "fast",
    cache_dir: str | None = None,
    foreground_backend: str = "synthetic",
    foreground_components: Sequence[str] = ("dust", "synchrotron", "freefree", "ame"),
    pysm_presets: Sequence[str] = (),
    freeze_foregrounds: bool = False,
    foreground_model: str | Mapping | None = "default",
    split_foregrounds: Mapping[str, str | Mapping] | None = None,
    fg_iter: int = 0,
    noise: bool = True,
    dtype: str = "float32",
    executor: str = "serial",
    workers: int = 1,
    scheduler_address: str | None = None,
    progress: bool = True,
) -> dict:
    """Write a dataset of simulations (resumable; finished simulations are skipped).

    Parameters
    ----------
    out_dir : path
        Dataset root (created if missing).
    nside : int
        HEALPix resolution.
    splits : mapping of str to int
        Simulations per split, e.g. ``{"Train": 1000, "Valid": 250, "Test": 200}``.
    bands, channel_table, fields
        Channels: a subset of the bands of ``channel_table`` (the packaged 9-channel table by default),
        and optionally the Stokes fields of every channel (``"I"`` or ``"IQU"``).
    seed : int
        Dataset seed; simulation ``i`` of split ``s`` draws from streams ``(seed, s, i, component)``.
    cosmology, r, spectra_method, cache_dir, foreground_backend, foreground_components, pysm_presets,
    freeze_foregrounds, fg_iter, noise
        Physics settings, see :func:`simulate_observation`.
    foreground_model : str or mapping
        Synthetic foreground model of every split (see :func:`simulate_observation`).
    split_foregrounds : mapping of str to (str or mapping), optional
        Per-split model overriding ``foreground_model``; default :data:`DEFAULT_SPLIT_FOREGROUNDS`
        (``{"TestOOD": "alt"}``: a split named TestOOD is out of distribution), ``{}`` for none. Entries for
        splits not in ``splits`` are ignored. The manifest records the model of every split
        (``split_foregrounds``); a split cannot change model on rerun.
    dtype : {"float32", "float64"}
        Stored precision of the maps.
    executor, workers, scheduler_address
        How to run the simulations, see :func:`cosmobench.core.executor.map_tasks`.
    progress : bool
        Show a progress bar.

    Returns
    -------
    dict
        ``root``, ``simulated``, ``skipped``, ``seconds``, ``disk_bytes`` and median ``timings`` per part.
    """
    from ..sky.foregrounds import FOREGROUND_BACKENDS
    from ..sky.instrument import load_channels

    nside = sht.check_nside(nside)
    splits = dict(DEFAULT_SPLITS if splits is None else splits)
    for name, n in splits.items():
        if not isinstance(n, (int, np.integer)) or isinstance(n, bool) or n < 0:
            raise ValueError(f"split {name!r} must have a non-negative integer count of simulations, got {n!r}")
    if dtype not in _DTYPES:
        raise ValueError(f"dtype must be one of {sorted(_DTYPES)}, got {dtype!r}")
    if foreground_backend not in FOREGROUND_BACKENDS:
        raise ValueError(
            f"unknown foreground backend {foreground_backend!r}; expected one of {list(FOREGROUND_BACKENDS)}"
        )
    if spectra_method not in ("fast", "camb"):
        raise ValueError(f"spectra_method must be 'fast' or 'camb', got {spectra_method!r}")
    overrides = dict(DEFAULT_SPLIT_FOREGROUNDS if split_foregrounds is None else split_foregrounds)
    split_models = {s: overrides.get(s, foreground_model) for s in splits}
    try:
        records = {s: _model_record(foreground_backend, m) for s, m in split_models.items()}
    except ValueError as err:
        raise ValueError(f"{err} (splits and their models: {split_models}; see split_foregrounds)") from None
    channels = load_channels(channel_table, bands=bands, fields=fields)
    if foreground_backend == "pysm3":
        from ..sky.pysm_backend import check_pysm_templates

        check_pysm_templates(list(pysm_presets), nside)
    if cosmology is not None:
        from ..sky.cosmology import Cosmology

        Cosmology(**dict(cosmology))  # unknown keys fail here, before any work
    root = Path(out_dir)
    check_writable(root)

    physics = {
        "cosmology": dict(cosmology) if cosmology is not None else None,
        "r": float(r),
        "spectra_method": spectra_method,
        "cache_dir": cache_dir,
        "foreground_backend": foreground_backend,
        "foreground_components": list(foreground_components),
        "pysm_presets": list(pysm_presets),
        "freeze_foregrounds": bool(freeze_foregrounds),
        "fg_iter": int(fg_iter),
        "noise": bool(noise),
    }
    settings = {
        "nside": nside,
        "seed": int(seed),
        "dtype": dtype,
        "channels": [asdict(c) for c in channels],
        **{k: v for k, v in physics.items() if k != "cache_dir"},
    }
    manifest = _open_manifest(root, settings, splits, records)

    items = [(s, i) for s, n in splits.items() for i in range(n)]
    pending = _check_completed(root, items)
    need = dataset_disk_bytes(nside, channels, len(pending), dtype)
    if progress:
        print(
            f"cosmobench: {len(items)} simulations at nside {nside} ({len(items) - len(pending)} already done); "
            f"about {need / 1e9:.2f} GB to write under {root}",
            file=sys.stderr,
        )
    spec = _Spec(
        root=str(root),
        nside=nside,
        channels=tuple(asdict(c) for c in channels),
        seed=int(seed),
        dtype=dtype,
        physics=tuple(sorted(physics.items())),
        foreground_models=tuple(split_models.items()),
    )
    t0 = time.perf_counter()
    timings = map_tasks(
        partial(_write_simulation, spec),
        pending,
        executor=executor,
        workers=workers,
        scheduler_address=scheduler_address,
        desc="simulate",
        unit="sim",
        progress=progress,
    )
    seconds = time.perf_counter() - t0

    manifest["checksums"] = {f"{s}/sim{i:04d}": read_json(layout.params_path(root, s, i))["files"] for s, i in items}
    write_json(layout.manifest_path(root), manifest)
    done = [t for t in timings if t]
    parts = sorted({k for t in done for k in t})
    return {
        "root": str(root),
        "simulated": len(done),
        "skipped": len(items) - len(done),
        "seconds": seconds,
        "disk_bytes": sum(p.stat().st_size for p in layout.sims_root(root).rglob("*") if p.is_file()),
        "timings": {k: float(np.median([t.get(k, 0.0) for t in done])) for k in parts} if done else {},
    }


def _open_manifest(root: Path, settings: dict, splits: dict, foregrounds: dict) -> dict:
    """Create the manifest, or check that an existing one was made with the same settings.

    ``foregrounds`` maps each split to its foreground-model record; a split already in the manifest must keep
    its record (a manifest written before per-split models existed counts as "default" for all its splits).
    """
    import platform

    path = layout.manifest_path(root)
    foregrounds = dict(foregrounds)
    if path.is_file():
        old = read_json(path)
        differ = sorted(
            k for k in set(settings) | set(old.get("settings", {})) if old.get("settings", {}).get(k) != settings.get(k)
        )
        if differ:
            raise ValueError(
                f"{root} already holds a dataset made with different settings ({', '.join(differ)}); "
                "use another out_dir, or delete the folder to regenerate it"
            )
        legacy = _model_record(settings["foreground_backend"], None)
        old_fg = {s: old.get("split_foregrounds", {}).get(s, legacy) for s in old.get("splits", {})}
        changed = sorted(s for s in foregrounds if s in old_fg and old_fg[s] != foregrounds[s])
        if changed:
            models = ", ".join(f"{s}: {old_fg[s]['model']} -> {foregrounds[s]['model']}" for s in changed)
            raise ValueError(
                f"{root} already holds splits {changed} made with other foreground models ({models}); "
                "use another out_dir or split name, or delete the folder to regenerate it"
            )
        foregrounds = {**old_fg, **foregrounds}
        merged = dict(old.get("splits", {}))
        merged.update({s: max(n, merged.get(s, 0)) for s, n in splits.items()})
        splits = merged
    manifest = {
        "format": "cosmobench-cmb-dataset/1",
        "nside": settings["nside"],
        "channels": settings["channels"],
        "splits": splits,
        "split_foregrounds": foregrounds,
        "settings": settings,
        "versions": _versions(),
        "python": platform.python_version(),
    }
    write_json(path, manifest)
    return manifest


def _versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    out = {"cosmobench": __version__}
    for pkg in ("numpy", "healpy", "ducc0", "camb", "pysm3", "astropy"):
        try:
            out[pkg] = version(pkg)
        except PackageNotFoundError:
            out[pkg] = "absent"
    return out
