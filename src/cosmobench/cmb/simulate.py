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
from typing import Any

import astropy.units as u
import numpy as np

from .. import __version__
from ..core.executor import map_tasks
from ..core.io import CorruptFileError, check_writable, read_json, sha256, write_healpix, write_json, write_npy
from ..core.seeds import rng
from ..core.stage import digest
from ..sky import sht
from . import dataset as layout
from .settings import DEFAULT_SPLIT_FOREGROUNDS, DEFAULT_SPLITS

__all__ = [
    "Observation",
    "simulate_observation",
    "simulate_dataset",
    "dataset_disk_bytes",
    "plan_dataset",
    "pending_simulations",
    "write_dataset",
    "check_resources",
    "check_manifest",
    "DatasetPlan",
    "DEFAULT_SPLITS",
    "DEFAULT_SPLIT_FOREGROUNDS",
]

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
        ("default", "alt", "filament") or a mapping of :func:`~cosmobench.sky.foregrounds.synthetic_foregrounds`
        options; only "default" (or None) with the ``pysm3`` backend.
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
    label = _model_label(foreground_backend, foreground_model, pysm_presets)
    frozen_key = ("frozen", "foregrounds") if label == "default" else ("frozen", label, "foregrounds")
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
            "frozen": bool(freeze_foregrounds) or foreground_backend != "synthetic",  # PySM: one fixed sky
            "stream": list(fg_key),
            "model": label,
            "options": resolve_model(foreground_model) if foreground_backend == "synthetic" else {},
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


def _model_label(backend: str, model: str | Mapping | None, presets: Sequence[str] = ()) -> str:
    """Name of a foreground model as recorded: the model's name, "custom" for a mapping, ``pysm3:d1,s1,...`` for
    PySM presets (:func:`cosmobench.cmb.dataset.pysm_label`)."""
    if backend != "synthetic":
        if model not in (None, "default"):
            raise ValueError(f"foreground model {model!r} applies to the 'synthetic' backend, not {backend!r}")
        return layout.pysm_label(presets)
    return "default" if model is None else (model if isinstance(model, str) else "custom")


def _model_record(backend: str, model: str | Mapping | None, presets: Sequence[str] = ()) -> dict:
    """The manifest entry of a split's foregrounds: ``{"model": label, "options": resolved options}``, plus
    ``backend`` and ``presets`` for PySM (one fixed sky)."""
    from ..sky.foregrounds import foreground_model as resolve_model

    label = _model_label(backend, model, presets)
    if backend != "synthetic":
        return {"model": label, "backend": backend, "presets": [str(p) for p in presets], "options": {}}
    return {"model": label, "options": resolve_model(model)}


def _split_foregrounds(
    splits: Sequence[str], backend: str, presets: Sequence[str], model: str | Mapping | None, overrides: Mapping
) -> dict[str, list[dict]]:
    """Split -> list of keywords of :func:`simulate_observation` for its foregrounds (backend, presets, model);
    simulation ``i`` of a split takes entry ``i mod len(list)``.

    A split named in ``overrides`` takes a synthetic model (a name or a mapping of options), PySM presets,
    ``{"backend": "pysm3", "presets": [...]}``, or a list of these (a mixture: the models alternate with the
    index); the others take ``backend``, ``presets`` and ``model``.
    """
    out = {}
    for split in splits:
        if split not in overrides:
            out[split] = [{"foreground_backend": backend, "pysm_presets": list(presets), "foreground_model": model}]
            continue
        entry = overrides[split]
        entries = list(entry) if isinstance(entry, Sequence) and not isinstance(entry, str) else [entry]
        if not entries:
            raise ValueError(
                f"split_foregrounds.{split} is an empty list: give one model (e.g. perturbed) or a mixture of "
                "several, e.g. [default, perturbed]"
            )
        out[split] = [_override_keywords(split, e) for e in entries]
    return out


def _override_keywords(split: str, entry: Any) -> dict:
    """Foreground keywords of :func:`simulate_observation` for one model named in ``split_foregrounds``."""
    if isinstance(entry, Mapping) and "backend" in entry:
        if entry["backend"] != "pysm3" or set(entry) != {"backend", "presets"} or not entry["presets"]:
            raise ValueError(
                f"split_foregrounds.{split} = {dict(entry)}: PySM skies are given as "
                "{backend: pysm3, presets: [d1, s1, f1, a1]} (any PySM preset strings, at least one); a "
                "synthetic model as its name (default, alt, filament, perturbed) or a dict of its options"
            )
        return {
            "foreground_backend": "pysm3",
            "pysm_presets": [str(p) for p in entry["presets"]],
            "foreground_model": None,
        }
    if not isinstance(entry, (str, Mapping)):
        raise ValueError(
            f"split_foregrounds.{split} holds {entry!r}: each model is a name (default, alt, filament, "
            "perturbed), a dict of synthetic options or {backend: pysm3, presets: [...]}; a mixture is one flat "
            "list of them"
        )
    return {"foreground_backend": "synthetic", "pysm_presets": [], "foreground_model": entry}


def _split_record(models: Sequence[dict]) -> dict:
    """The manifest entry of a split's foregrounds (:func:`_model_record`); for a mixture,
    ``{"model": "mixture:<label>+<label>...", "mixture": [record, ...]}``, simulation i taking record i mod n."""
    records = [_model_record(m["foreground_backend"], m["foreground_model"], m["pysm_presets"]) for m in models]
    if len(records) == 1:
        return records[0]
    return {"model": "mixture:" + "+".join(r["model"] for r in records), "mixture": records}


@dataclass(frozen=True)
class _Spec:
    """Everything a worker needs to write one simulation (small and picklable)."""

    root: str
    nside: int
    channels: tuple
    seed: int
    dtype: str
    physics: tuple  # sorted (name, value) pairs for simulate_observation
    foreground_models: tuple = ()  # (split, list of foreground keywords of simulate_observation) pairs
    digests: tuple = ()  # (split, settings digest) pairs, recorded in params.json
    mjysr_bands: tuple = ()  # bands whose observed maps are stored in MJy/sr


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
    models = dict(spec.foreground_models)[split]
    physics = dict(spec.physics, **models[i % len(models)])
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
            extname="FREQ-MAP",
            freq_ghz=ch.center_ghz,
            file_unit="MJy/sr" if ch.band in spec.mjysr_bands else None,
            extra_header={"FWHM": (ch.fwhm_arcmin, "beam FWHM [arcmin]"), "BAND": ch.band},
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
        settings_digest=dict(spec.digests).get(split),
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


def simulation_memory_bytes(nside: int, channels: Sequence, n_components: int) -> int:
    """Approximate peak memory of simulating one sky, bytes: every map of the sky and the instrument in float64,
    with room for the harmonic transforms' temporaries (a factor 3)."""
    nmaps = sum(len(c.fields) for c in channels) + 3 + 3 * max(1, n_components) + 2
    return int(3 * nmaps * sht.npix(nside) * 8)


@dataclass(frozen=True)
class DatasetPlan:
    """A validated dataset job, built by :func:`plan_dataset` (which writes nothing), written by
    :func:`write_dataset`.

    Attributes
    ----------
    root : str
    nside : int
    channels : list of Channel
    seed : int
    dtype : str
    splits : dict of str to int
    physics : dict
        Keywords of :func:`simulate_observation` shared by every simulation.
    split_models : dict
        Split -> list of foreground keywords of :func:`simulate_observation` (backend, PySM presets, synthetic
        model); simulation i of the split takes entry i mod the list's length (one entry but for a mixture).
    records : dict
        Split -> the manifest entry of its foreground model.
    settings : dict
        What every simulation depends on besides its split and index (recorded in the manifest).
    mjysr_bands : tuple of str
        Bands whose observed maps are stored in MJy/sr.
    digests : dict of str to str
        Split -> digest of ``settings`` and the split's foreground record, stored in each ``params.json`` and
        checked, so simulations of other settings (another seed...) can never mix in one split.
    """

    root: str
    nside: int
    channels: list
    seed: int
    dtype: str
    splits: dict
    physics: dict
    split_models: dict
    records: dict
    settings: dict
    digests: dict
    mjysr_bands: tuple = ()

    @property
    def items(self) -> list[tuple[str, int]]:
        """Every simulation of the dataset, (split, index)."""
        return [(s, i) for s, n in self.splits.items() for i in range(n)]


def check_resources(plan: DatasetPlan, pending: Sequence, workers: int = 1, *, force: bool = False) -> int:
    """Bytes the pending simulations need on disk; refuse (unless ``force``) a job larger than the free disk or
    one whose working set (one sky per worker) exceeds the available memory.

    Raises
    ------
    ValueError
        Naming both sizes and the ways out (lower nside or fewer simulations, another ``out_dir``, fewer
        workers, ``force=true``).
    """
    from ..core.resources import require_resources

    need = dataset_disk_bytes(plan.nside, plan.channels, len(pending), plan.dtype)
    memory = simulation_memory_bytes(plan.nside, plan.channels, len(plan.physics["foreground_components"]))
    require_resources(
        plan.root,
        disk=need,
        memory=memory * max(1, int(workers)) if pending else 0,
        force=force,
        fix=f"{len(pending)} simulations at nside {plan.nside} with {workers} worker(s): lower nside, the split "
        "sizes or workers",
    )
    return need


def plan_dataset(
    out_dir: str | Path,
    *,
    nside: int = 32,
    splits: Mapping[str, int] = DEFAULT_SPLITS,
    bands: Sequence[str] | None = None,
    channel_table: str | None = None,
    fields: str | None = None,
    seed: int = 0,
    cosmology: Mapping | None = None,
    r: float = 0.0,
    spectra_method: str = "camb",
    cache_dir: str | None = None,
    foreground_backend: str = "synthetic",
    foreground_components: Sequence[str] = ("dust", "synchrotron", "freefree", "ame"),
    pysm_presets: Sequence[str] = (),
    freeze_foregrounds: bool = False,
    foreground_model: str | Mapping | None = "default",
    split_foregrounds: Mapping[str, str | Mapping | Sequence] = DEFAULT_SPLIT_FOREGROUNDS,
    fg_iter: int = 0,
    noise: bool = True,
    dtype: str = "float32",
    mjysr_bands: Sequence[str] = (),
) -> DatasetPlan:
    """Validate every setting of a dataset; reads and writes nothing.

    Parameters are those of :func:`simulate_dataset`.

    Raises
    ------
    ValueError
        A setting out of range, naming it and the fix.
    """
    from ..sky.cosmology import Cosmology
    from ..sky.foregrounds import COMPONENTS, FOREGROUND_BACKENDS
    from ..sky.instrument import load_channels

    nside = sht.check_nside(nside)
    splits = dict(splits)
    for name, n in splits.items():
        if not str(name).isidentifier():
            raise ValueError(f"split name {name!r} must be a plain name (letters, digits, _), e.g. Test")
        if not isinstance(n, (int, np.integer)) or isinstance(n, bool) or n < 0:
            raise ValueError(f"split {name!r} must have a non-negative integer count of simulations, got {n!r}")
    if dtype not in _DTYPES:
        raise ValueError(f"dtype must be one of {sorted(_DTYPES)}, got {dtype!r}")
    mjysr_bands = tuple(str(b) for b in mjysr_bands)
    if foreground_backend not in FOREGROUND_BACKENDS:
        raise ValueError(
            f"unknown foreground backend {foreground_backend!r}; expected one of {list(FOREGROUND_BACKENDS)}"
        )
    if spectra_method not in ("fast", "camb"):
        raise ValueError(f"spectra_method must be 'fast' or 'camb', got {spectra_method!r}")
    if not (np.isfinite(r) and 0 <= r <= 1):
        raise ValueError(f"r (the tensor-to-scalar ratio) must be in [0, 1], got {r}; fix simulate.r")
    unknown = sorted(set(foreground_components) - set(COMPONENTS))
    if foreground_backend == "synthetic" and unknown:
        raise ValueError(f"unknown foreground components {unknown}; expected some of {list(COMPONENTS)}")
    split_models = _split_foregrounds(splits, foreground_backend, pysm_presets, foreground_model, split_foregrounds)
    try:
        records = {s: _split_record(m) for s, m in split_models.items()}
    except (ValueError, TypeError) as err:
        models = {s: [r.get("foreground_model") or r["foreground_backend"] for r in m] for s, m in split_models.items()}
        raise ValueError(f"{err} (splits and their models: {models}; see split_foregrounds)") from None
    channels = load_channels(channel_table, bands=bands, fields=fields)
    unknown = sorted(set(mjysr_bands) - {c.band for c in channels})
    if unknown:
        raise ValueError(
            f"mjysr_bands {unknown} are not channels of this dataset ({[c.band for c in channels]}); "
            "fix simulate.mjysr_bands, e.g. [545, 857]"
        )
    pysm_skies = {
        tuple(m["pysm_presets"]) for ms in split_models.values() for m in ms if m["foreground_backend"] == "pysm3"
    }
    if pysm_skies:
        from ..sky.pysm_backend import check_pysm_templates

        if () in pysm_skies:
            raise ValueError("the pysm3 backend needs pysm_presets, e.g. simulate.pysm_presets=[d1,s1,f1,a1]")
        for presets in sorted(pysm_skies):
            check_pysm_templates(list(presets), nside)
    if cosmology is not None:
        Cosmology(**dict(cosmology))  # unknown keys fail here, before any work
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
        # only when set: datasets written before the option keep their digest
        **({"mjysr_bands": sorted(mjysr_bands)} if mjysr_bands else {}),
    }
    digests = {s: digest({**settings, "foregrounds": records[s]}) for s in splits}
    return DatasetPlan(
        root=str(out_dir),
        nside=nside,
        channels=channels,
        seed=int(seed),
        dtype=dtype,
        splits=splits,
        physics=physics,
        split_models=split_models,
        records=records,
        settings=settings,
        digests=digests,
        mjysr_bands=mjysr_bands,
    )


def write_dataset(
    plan: DatasetPlan,
    pending: Sequence[tuple[str, int]],
    *,
    executor: str = "serial",
    workers: int = 1,
    scheduler_address: str | None = None,
    progress: bool = True,
) -> dict:
    """Write the ``pending`` simulations of ``plan`` (:func:`pending_simulations`), then the manifest; returns the
    summary of :func:`simulate_dataset`."""
    root = Path(plan.root)
    check_writable(root)
    items = plan.items
    need = dataset_disk_bytes(plan.nside, plan.channels, len(pending), plan.dtype)
    if progress:
        print(
            f"cosmobench: {len(items)} simulations at nside {plan.nside} ({len(items) - len(pending)} already "
            f"done); about {need / 1e9:.2f} GB to write under {root}",
            file=sys.stderr,
        )
    spec = _Spec(
        root=str(root),
        nside=plan.nside,
        channels=tuple(asdict(c) for c in plan.channels),
        seed=plan.seed,
        dtype=plan.dtype,
        physics=tuple(sorted(plan.physics.items())),
        foreground_models=tuple(plan.split_models.items()),
        digests=tuple(plan.digests.items()),
        mjysr_bands=plan.mjysr_bands,
    )
    t0 = time.perf_counter()
    timings = map_tasks(
        partial(_write_simulation, spec),
        list(pending),
        executor=executor,
        workers=workers,
        scheduler_address=scheduler_address,
        desc="simulate",
        unit="sim",
        progress=progress,
    )
    seconds = time.perf_counter() - t0
    manifest = _manifest(root, plan.settings, plan.splits, plan.records)
    manifest["checksums"] = {f"{s}/sim{i:04d}": read_json(layout.params_path(root, s, i))["files"] for s, i in items}
    write_json(layout.manifest_path(root), manifest)
    done = [t for t in timings if t]
    parts = sorted({k for t in done for k in t})
    return {
        "root": str(root),
        "simulated": len(done),
        "kept": len(items) - len(done),
        "seconds": seconds,
        "disk_bytes": sum(p.stat().st_size for p in layout.sims_root(root).rglob("*") if p.is_file()),
        "timings": {k: float(np.median([t.get(k, 0.0) for t in done])) for k in parts} if done else {},
    }


def simulate_dataset(
    out_dir: str | Path,
    *,
    nside: int = 32,
    splits: Mapping[str, int] = DEFAULT_SPLITS,
    bands: Sequence[str] | None = None,
    channel_table: str | None = None,
    fields: str | None = None,
    seed: int = 0,
    cosmology: Mapping | None = None,
    r: float = 0.0,
    spectra_method: str = "camb",
    cache_dir: str | None = None,
    foreground_backend: str = "synthetic",
    foreground_components: Sequence[str] = ("dust", "synchrotron", "freefree", "ame"),
    pysm_presets: Sequence[str] = (),
    freeze_foregrounds: bool = False,
    foreground_model: str | Mapping | None = "default",
    split_foregrounds: Mapping[str, str | Mapping | Sequence] = DEFAULT_SPLIT_FOREGROUNDS,
    fg_iter: int = 0,
    noise: bool = True,
    dtype: str = "float32",
    mjysr_bands: Sequence[str] = (),
    executor: str = "serial",
    workers: int = 1,
    scheduler_address: str | None = None,
    force: bool = False,
    progress: bool = True,
) -> dict:
    """Write a dataset of simulations (resumable; finished simulations are verified and skipped).

    The library function (:func:`plan_dataset`, :func:`check_resources`, :func:`write_dataset`);
    ``cosmobench cmb simulate`` (:func:`cosmobench.cmb.stages.simulate`) adds the stage record. A simulation
    depends only on (settings, seed, split, index), and every ``params.json`` carries the digest of the
    settings, so a split can grow and an interrupted run resumes, but simulations of other settings never mix.

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
        Physics settings, see :func:`simulate_observation` (``r`` in [0, 1]; ``spectra_method="camb"``, direct
        CAMB, is the cheaper below ~100 simulations, ``"fast"`` builds the emulator once).
    foreground_model : str or mapping
        Synthetic foreground model of every split (see :func:`simulate_observation`).
    split_foregrounds : mapping of str to (str, mapping or list)
        Per-split foregrounds overriding ``foreground_backend`` and ``foreground_model``: a synthetic model
        ("alt", "filament", "perturbed" or a mapping of options), PySM presets, ``{"backend": "pysm3", "presets":
        ["d1", "s1", "f1", "a1"]}`` (one fixed sky, the same in every simulation of the split), or a list of
        these, a mixture: simulation i takes model i mod the list's length (``{"Train": ["default",
        "perturbed"]}`` trains on two foreground models). Default ``{"TestOOD": "alt", "TestOOD2": "filament"}``
        (splits of these names are out of distribution), ``{}`` for none. Entries for splits not in ``splits``
        are ignored. The manifest records the model of every split (``split_foregrounds``; a mixture as
        ``mixture:<model>+<model>`` with each model's record) and each ``params.json`` its simulation's; a split
        cannot change model on rerun.
    dtype : {"float32", "float64"}
        Stored precision of the maps.
    mjysr_bands : sequence of str
        Bands whose observed maps are stored in MJy/sr (monochromatic conversion at the channel's centre
        frequency, ``FREQ`` card), as Planck stores 545 and 857 GHz: ``["545", "857"]``; the reader converts them
        back to uK_CMB. Default: every map in uK_CMB.
    executor, workers, scheduler_address
        How to run the simulations, see :func:`cosmobench.core.executor.map_tasks`.
    force : bool
        Start even when the job looks larger than the free disk or the memory.
    progress : bool
        Show a progress bar.

    Returns
    -------
    dict
        ``root``, ``simulated``, ``kept`` (already there), ``seconds``, ``disk_bytes`` and median ``timings`` per part.
    """
    plan = plan_dataset(
        out_dir,
        nside=nside,
        splits=splits,
        bands=bands,
        channel_table=channel_table,
        fields=fields,
        seed=seed,
        cosmology=cosmology,
        r=r,
        spectra_method=spectra_method,
        cache_dir=cache_dir,
        foreground_backend=foreground_backend,
        foreground_components=foreground_components,
        pysm_presets=pysm_presets,
        freeze_foregrounds=freeze_foregrounds,
        foreground_model=foreground_model,
        split_foregrounds=split_foregrounds,
        fg_iter=fg_iter,
        noise=noise,
        dtype=dtype,
        mjysr_bands=mjysr_bands,
    )
    check_manifest(Path(out_dir), plan)
    pending = pending_simulations(plan)
    check_resources(plan, pending, workers if executor != "serial" else 1, force=force)
    return write_dataset(
        plan, pending, executor=executor, workers=workers, scheduler_address=scheduler_address, progress=progress
    )


def pending_simulations(plan: DatasetPlan) -> list[tuple[str, int]]:
    """Simulations of ``plan`` not yet written; refuse a finished one made with other settings or whose files
    changed (each file is checked against the SHA-256 recorded in its ``params.json``).

    Raises
    ------
    ValueError
        A finished simulation records another seed or settings digest (its folder and both seeds are named).
    CorruptFileError
        A file of a finished simulation is missing or its size or SHA-256 differs from ``params.json``.
    """
    pending = []
    seed = plan.seed
    for split, i in plan.items:
        ppath = layout.params_path(plan.root, split, i)
        if not ppath.is_file():
            pending.append((split, i))
            continue
        params = read_json(ppath)
        if params.get("seed") != seed or params.get("settings_digest") != plan.digests[split]:
            what = f"seed {params.get('seed')}, not {seed}" if params.get("seed") != seed else "other physics"
            raise ValueError(
                f"{ppath.parent} was simulated with other settings ({what}): simulations of different settings "
                "cannot share a dataset. Use another out_dir, or overwrite=true to delete the dataset and "
                "simulate it again"
            )
        for name, info in params.get("files", {}).items():
            path = ppath.parent / name
            if not path.is_file() or path.stat().st_size != info["bytes"] or sha256(path) != info["sha256"]:
                raise CorruptFileError(
                    f"{path} is missing or differs from the checksum recorded in {ppath.name} for a finished "
                    f"simulation; delete the folder {ppath.parent} and rerun to regenerate it (other simulations "
                    "are kept)"
                )
    return pending


def check_manifest(root: Path, plan: DatasetPlan) -> None:
    """Refuse a dataset folder whose manifest records other settings, or another foreground model of a split."""
    path = layout.manifest_path(root)
    if not path.is_file():
        return
    old = read_json(path)
    settings = plan.settings
    differ = sorted(
        k for k in set(settings) | set(old.get("settings", {})) if old.get("settings", {}).get(k) != settings.get(k)
    )
    if differ:
        raise ValueError(
            f"{root} already holds a dataset made with different settings ({', '.join(differ)}); "
            "use another out_dir, or delete the folder to regenerate it"
        )
    old_fg = _old_foregrounds(old, settings)
    changed = sorted(s for s in plan.records if s in old_fg and old_fg[s] != plan.records[s])
    if changed:
        models = ", ".join(f"{s}: {old_fg[s]['model']} -> {plan.records[s]['model']}" for s in changed)
        raise ValueError(
            f"{root} already holds splits {changed} made with other foreground models ({models}); "
            "use another out_dir or split name, or delete the folder to regenerate it"
        )


def _old_foregrounds(old: dict, settings: dict) -> dict:
    """Split -> foreground record of an existing manifest (one from before per-split models counts as default)."""
    legacy = _model_record(settings["foreground_backend"], None, settings.get("pysm_presets", ()))
    return {s: old.get("split_foregrounds", {}).get(s, legacy) for s in old.get("splits", {})}


def _manifest(root: Path, settings: dict, splits: dict, foregrounds: dict) -> dict:
    """The manifest of the dataset: the splits and foreground models of an earlier manifest, grown by these."""
    import platform

    path = layout.manifest_path(root)
    foregrounds = dict(foregrounds)
    if path.is_file():
        old = read_json(path)
        foregrounds = {**_old_foregrounds(old, settings), **foregrounds}
        merged = dict(old.get("splits", {}))
        merged.update({s: max(n, merged.get(s, 0)) for s, n in splits.items()})
        splits = merged
    return {
        "format": "cosmobench-cmb-dataset/1",
        "nside": settings["nside"],
        "channels": settings["channels"],
        "splits": splits,
        "split_foregrounds": foregrounds,
        "settings": settings,
        "versions": _versions(),
        "python": platform.python_version(),
    }


def _versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    out = {"cosmobench": __version__}
    for pkg in ("numpy", "healpy", "ducc0", "camb", "pysm3", "astropy"):
        try:
            out[pkg] = version(pkg)
        except PackageNotFoundError:
            out[pkg] = "absent"
    return out
