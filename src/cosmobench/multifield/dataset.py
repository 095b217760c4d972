"""The multifield dataset as the stages see it: writing a simulated one, sizing it, and naming its identity.

:func:`write_dataset` runs the offline simulator (:mod:`cosmobench.multifield.simulate`) for every suite of the
settings and records the per-simulation seeds (``seeds_{set}_{suite}.txt``); :func:`check_resources` refuses a
dataset larger than the free disk or memory before any work; :func:`data_identity` checks a dataset and returns
its identity for the consumers' stage records: the simulate stage's record when the folder has one (refusing an
unfinished one), else the checksums of the parameter files and the names and sizes of the map files (real CMD data,
whose 4 GB map files are not hashed).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ..core.io import atomic_path, sha256
from ..core.seeds import seed_sequence
from ..core.stage import RECORD, digest, identity, require
from .cmd import MAPS_PER_SIM, check_dataset, find_map_file, params_path
from .power import load_or_build_power_table
from .settings import SimulateSettings

__all__ = ["check_simulate", "check_resources", "write_dataset", "data_identity", "SIM_BYTES_PER_CELL"]

EXECUTORS = ("serial", "processes", "dask")
#: Working memory of one simulation per cell of its npix^3 grid, bytes (float64 fields, FFTs and projections).
SIM_BYTES_PER_CELL = 200


def check_simulate(s: SimulateSettings) -> None:
    """Refuse settings the simulator cannot run, before any work or write (suites, fields, sizes, executor)."""
    from .simulate import SUITES

    unknown = [x for x in s.suites if x not in SUITES]
    if unknown or not s.suites:
        raise ValueError(f"unknown simulate.suites {unknown or '[]'}; choose among {sorted(SUITES)}")
    if s.n_sims < 3:
        raise ValueError(f"simulate.n_sims must be >= 3 (train/valid/test split by simulation), got {s.n_sims}")
    if s.npix < 8 or s.npix & (s.npix - 1):
        raise ValueError(f"simulate.npix must be a power of two >= 8 (o3_err halves it repeatedly), got {s.npix}")
    if s.executor not in EXECUTORS or s.workers < 1:
        raise ValueError(f"simulate.executor must be one of {list(EXECUTORS)} and workers >= 1")
    for suite in s.suites:
        have = SUITES[suite].fields
        if s.fields is not None and not set(s.fields) & set(have):
            raise ValueError(f"none of simulate.fields {list(s.fields)} exist in suite {suite} (it has {list(have)})")


def _fields(s: SimulateSettings, suite: str) -> tuple[str, ...]:
    from .simulate import SUITES

    have = SUITES[suite].fields
    return have if s.fields is None else tuple(f for f in s.fields if f in have)


def check_resources(s: SimulateSettings, folder: Path) -> int:
    """Bytes the dataset needs on disk (maps, and their per-simulation chunks while it is written); refuse (unless
    ``force``) when they exceed the free disk, or when the simulations' working set exceeds the free memory."""
    from ..core.resources import require_resources

    maps = sum(len(_fields(s, suite)) for suite in s.suites) * s.n_sims * MAPS_PER_SIM * s.npix**2 * 4
    need = 2 * maps  # the maps, and as much again in per-simulation chunks while they are written
    memory = SIM_BYTES_PER_CELL * s.npix**3 * (s.workers if s.executor != "serial" else 1)
    require_resources(
        folder, disk=need, memory=memory, force=s.force, fix="lower simulate.n_sims, simulate.npix or simulate.workers"
    )
    return need


def write_dataset(s: SimulateSettings, folder: Path) -> dict:
    """Simulate every suite of ``s`` into ``folder`` (finished files are kept, so an interrupted run resumes).

    Besides CMD's files, ``seeds_{set}_{suite}.txt`` records each simulation's seed: the first 32-bit word of
    ``SeedSequence(seed, spawn_key=(suite ics, i, "ics"))``, the stream of its initial conditions.

    Returns
    -------
    dict
        ``data_dir``, ``suites`` (what :func:`~cosmobench.multifield.simulate.simulate_suite` returns),
        ``power_table_s``, ``wall_s``, ``maps_per_s``.
    """
    from ..sky.cosmology import default_cache_dir
    from .simulate import SUITES, simulate_suite

    t0 = time.perf_counter()
    power = load_or_build_power_table(s.cache_dir or default_cache_dir() / "multifield")
    t_power = time.perf_counter() - t0
    done = []
    for suite in s.suites:
        ics = SUITES[suite].ics
        seeds = [seed_sequence(s.seed, ics, i, "ics").generate_state(1)[0] for i in range(s.n_sims)]
        with atomic_path(folder / f"seeds_{s.set_name}_{suite}.txt") as tmp:
            header = f"simulation, seed of its initial conditions: SeedSequence({s.seed}, ({ics!r}, i, 'ics'))"
            np.savetxt(tmp, np.column_stack([np.arange(s.n_sims), seeds]), fmt="%d", header=header)
        done.append(
            simulate_suite(
                folder,
                suite,
                n_sims=s.n_sims,
                npix=s.npix,
                seed=s.seed,
                fields=_fields(s, suite),
                power=power,
                set_name=s.set_name,
                executor=s.executor,
                workers=s.workers,
                progress=s.progress,
            )
        )
    wall = time.perf_counter() - t0
    return {
        "data_dir": str(folder),
        "suites": done,
        "power_table_s": round(t_power, 2),
        "wall_s": round(wall, 2),
        "maps_per_s": round(sum(d["n_sims"] for d in done) * MAPS_PER_SIM / max(wall - t_power, 1e-9), 2),
    }


def data_identity(data_dir: Path | str, suites: Sequence[str], fields: Sequence[str], set_name: str = "LH") -> str:
    """Check the maps and parameters of ``suites``/``fields`` (:func:`~cosmobench.multifield.cmd.check_dataset`)
    and return the dataset's identity for a consumer's stage record.

    Raises
    ------
    StageNotFinished
        ``data_dir`` holds a simulate record of an interrupted run (the message names the command that finishes it).
    FileNotFoundError, ValueError
        Missing or invalid files (naming the file, the count and the fix).
    """
    data_dir = Path(data_dir)
    record = None
    if (data_dir / RECORD).is_file():
        record = require(
            data_dir, "multifield.simulate", f"cosmobench multifield simulate data_dir={data_dir}", what="the dataset"
        )
    for suite in suites:
        check_dataset(data_dir, suite, fields, set_name)
    if record is not None:
        return identity(record)
    files = {}
    for suite in suites:
        files[params_path(data_dir, suite, set_name).name] = sha256(params_path(data_dir, suite, set_name))
        for field in fields:
            path = find_map_file(data_dir, field, suite, set_name)
            files[path.name] = path.stat().st_size
    return digest(files)
