"""The on-disk B-mode dataset: writing it (resumable, one file per set) and reading it back.

Layout of ``out_dir/data``::

    stage.json               the simulate stage's record (settings, status, output checksums)
    metadata.json            ell, units, counts, fixed-r values, Fisher sigma(r), cosmology of the templates
    templates.npz            CAMB tensor (r = 1) and lensing BB templates
    model_spectra.json       the data model's expected spectra (the likelihood's ingredients)
    dl_gt_train.npy, dl_noisy_train.npy, r_train.npy (and _val)   amortised pairs, r ~ U[0, r_max]
    dl_gt_val_r{r}.npy, dl_noisy_val_r{r}.npy                      fixed-r validation pairs (choices)
    dl_gt_r{r}.npy, dl_noisy_r{r}.npy                              fixed-r test pairs (the final table only)
    dl_train_r{r}.npy                                              clean spectra at r (the prototype's files)

Every set is drawn from its own stream ``(seed, set name, index)``, so adding or resuming sets never changes
another one.
"""

from __future__ import annotations

import functools
from pathlib import Path

import numpy as np

from ..core.executor import map_tasks
from ..core.io import read_json, write_json, write_npy
from ..core.seeds import rng as stream
from .settings import SimulateSettings

__all__ = ["SPLITS", "set_files", "write_dataset", "load_metadata", "check_resources"]

SPLITS = ("val", "test")  # the two kinds of fixed-r sets


def set_files(split: str, r: float) -> tuple[str, str]:
    """File names (clean, observed) of the fixed-r set at ``r`` of ``split`` ("val" or "test")."""
    from .dataset import r_label

    if split not in SPLITS:
        raise ValueError(f"unknown fixed-r split {split!r}; expected one of {list(SPLITS)}")
    tag = f"r{r_label(r)}" if split == "test" else f"val_r{r_label(r)}"
    return f"dl_gt_{tag}.npy", f"dl_noisy_{tag}.npy"


def _simulate_chunk(item: tuple) -> np.ndarray:
    """Worker: (simulator settings, templates, seed, set name, start, r values) -> (n, 2, n_ell) array."""
    from .dataset import BModeSimulator

    settings, cl_tensor, cl_lens, seed, name, start, r_values = item
    sim = BModeSimulator(cl_tensor=cl_tensor, cl_lens=cl_lens, **settings)
    return sim.simulate_many(r_values, seed, name, start)


def simulator_settings(s: SimulateSettings) -> dict:
    """The keyword arguments of :class:`~cosmobench.bmodes.dataset.BModeSimulator` from the stage settings."""
    return {
        "nside": int(s.nside),
        "ell_min": int(s.ell_min),
        "ell_max": s.ell_max,
        "beam_fwhm_arcmin": s.beam_fwhm_arcmin,
        "noise_depth": s.noise_depth,
        "fg_fraction": s.fg_fraction,
        "fg_freq_ghz": s.fg_freq_ghz,
        "fg_components": list(s.fg_components),
        "fg_modulation": s.fg_modulation,
        "fg_scatter": s.fg_scatter,
        "mask": s.mask,
        "mask_bcut_deg": s.mask_bcut_deg,
        "mask_apod_deg": s.mask_apod_deg,
    }


def check_resources(s: SimulateSettings, folder: Path) -> int:
    """Bytes the dataset needs on disk; refuse (unless ``force``) when it exceeds the free disk or memory (the
    largest set is held in memory once)."""
    from ..core.resources import require_resources
    from .dataset import ell_range

    n_ell = len(ell_range(s.nside, s.ell_min, s.ell_max))
    n_spectra = s.n_train + s.n_val + 2 * len(s.r_test) * s.n_test + len(s.r_test) * s.n_train_per_r
    need = 2 * n_spectra * n_ell * 8 + s.n_train + s.n_val
    require_resources(folder, disk=need, memory=need, force=s.force, fix="lower n_train, n_val or n_test")
    return need


def write_dataset(s: SimulateSettings, data: Path) -> dict:
    """Write (or complete) the dataset of settings ``s`` into ``data``; return its metadata.

    Finished set files are kept, so an interrupted run resumes; the stage record guarantees that they were made
    with the same settings.
    """
    from ..sky import sht
    from .dataset import BModeSimulator, bb_templates, r_label
    from .likelihood import fisher_sigma_r

    tpl = bb_templates(sht.default_lmax(s.nside), s.cosmology, cache=data / "templates.npz")
    sim = BModeSimulator(cl_tensor=tpl["cl_tensor"], cl_lens=tpl["cl_lens"], **simulator_settings(s))
    model_path = data / "model_spectra.json"
    if model_path.exists():
        model = read_json(model_path)
    else:
        model = sim.model(sim.foreground_cl(s.n_fg_mc, s.seed))
        model = {k: (v.tolist() if isinstance(v, np.ndarray) else v) for k, v in model.items()}
        write_json(model_path, model)
    run = functools.partial(_write_set, data, sim, tpl, s)
    prior = stream(s.seed, "bmodes", "r-prior")
    r_train, r_val = prior.uniform(0, s.r_max, s.n_train), prior.uniform(0, s.r_max, s.n_val)
    files = run("train", r_train) + run("val", r_val)
    for r in s.r_test:
        for split in SPLITS:
            name = f"r{r_label(r)}" if split == "test" else f"val_r{r_label(r)}"
            files += run(name, np.full(int(s.n_test), float(r)), names=set_files(split, r))
        if s.n_train_per_r:
            path = data / f"dl_train_r{r_label(r)}.npy"
            if not path.exists():
                write_npy(path, sim.clean_many(float(r), s.seed, f"train_r{r_label(r)}", int(s.n_train_per_r)))
            files.append(path.name)
    ell, ct, co = np.asarray(model["ell"]), np.asarray(model["cl_tensor_obs"]), np.asarray(model["cl_other"])
    fisher = {r_label(r): fisher_sigma_r(r, ct, co, ell, model["fsky"]) for r in s.r_test}
    meta = {
        "format": 2,
        "seed": int(s.seed),
        "settings": simulator_settings(s),
        "r_max": float(s.r_max),
        "cosmology": s.cosmology,
        "ell": ell.tolist(),
        "n_ell": len(ell),
        "units": "D_ell = l(l+1)C_l/2pi, uK_CMB^2",
        "truth": "spectrum of the beam-convolved tensor B-mode map (full sky)",
        "observed": "(tensor + lensing) * beam + foreground residual + white noise"
        + (", apodised Galactic mask, pseudo-C_l / mean(mask^2)" if s.mask != "none" else ""),
        "counts": {"train": s.n_train, "val": s.n_val, "per_fixed_r_set": s.n_test},
        "r_test": [float(r) for r in s.r_test],
        "fisher_sigma_r": fisher,
        "files": sorted(files),
        "templates": tpl["cosmology"],
    }
    write_json(data / "metadata.json", meta)
    return meta


def _write_set(data: Path, sim, tpl: dict, s: SimulateSettings, name: str, r_values, names=None) -> list[str]:
    gt_name, obs_name = names or (f"dl_gt_{name}.npy", f"dl_noisy_{name}.npy")
    out = [gt_name, obs_name] + ([f"r_{name}.npy"] if names is None else [])
    if all((data / f).exists() for f in out):
        return out
    starts = range(0, len(r_values), int(s.chunk))
    items = [
        (sim.settings(), tpl["cl_tensor"], tpl["cl_lens"], s.seed, name, i, r_values[i : i + int(s.chunk)])
        for i in starts
    ]
    parts = map_tasks(
        _simulate_chunk,
        items,
        executor=s.executor,
        workers=s.workers,
        desc=f"simulate {name}",
        unit="chunk",
        progress=s.progress,
    )
    arr = np.concatenate(parts) if parts else np.zeros((0, 2, len(sim.ell)))
    if names is None:
        write_npy(data / f"r_{name}.npy", r_values)
    write_npy(data / obs_name, arr[:, 1])
    write_npy(data / gt_name, arr[:, 0])
    return out


def load_metadata(data: Path) -> tuple[dict, dict]:
    """The dataset's metadata and model spectra."""
    return read_json(Path(data) / "metadata.json"), read_json(Path(data) / "model_spectra.json")
