"""The CAMELS Multifield Dataset (CMD) 2D maps on disk: names, priors, reading, splitting, normalisation.

One reader serves the real CMD files and the offline simulator's (:mod:`cosmobench.multifield.simulate`), which
writes the same names and layout:

- maps: ``Maps_{field}_{suite}_{set}_z=0.00.npy``, float32, shape (15 n_sims, H, W), memory-mapped on read;
  map ``k`` belongs to simulation ``k // 15`` (index within the simulation = axis * 5 + slab);
- parameters: ``params_{set}_{suite}.txt``, shape (n_sims, 6), columns Omega_m, sigma_8, A_SN1, A_AGN1, A_SN2,
  A_AGN2.

Inputs are transformed per field as in the CMD benchmark: ``log10(x)``, ``log10(x + 1)`` for Mstar (it has
zeros), optionally after a periodic Gaussian smoothing; then standardised with one scalar mean and standard
deviation per field computed from the *training* simulations only and stored with the model. Labels are scaled to
[0, 1] with the suite's own prior box (Astrid's A_AGN2 prior is [0.25, 4], not [0.5, 2]), log-scaled for the
log-uniform astrophysical parameters unless ``log_astro=False``. The split is by simulation, never by map.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..core.seeds import rng
from .settings import TrainingSettings

__all__ = [
    "CMD_FIELDS",
    "PARAM_NAMES",
    "MAPS_PER_SIM",
    "CMD_PRIORS",
    "map_path",
    "params_path",
    "find_map_file",
    "available_fields",
    "load_params",
    "load_maps",
    "check_maps",
    "check_dataset",
    "suite_prior",
    "split_sims",
    "sims_to_maps",
    "transform",
    "FieldStats",
    "field_stats",
    "LabelScaler",
    "MapStack",
]

#: The 13 fields of CMD (SIMBA and Astrid have no B; N-body suites have Mtot only).
CMD_FIELDS = ("Mgas", "Vgas", "T", "P", "Z", "HI", "ne", "B", "MgFe", "Mcdm", "Vcdm", "Mstar", "Mtot")
#: Columns of ``params_{set}_{suite}.txt``.
PARAM_NAMES = ("Omega_m", "sigma_8", "A_SN1", "A_AGN1", "A_SN2", "A_AGN2")
#: Maps per simulation: 3 projection axes x 5 slabs of 5 Mpc/h.
MAPS_PER_SIM = 15
#: Which parameters are sampled log-uniformly (the astrophysical ones).
LOG_PARAMS = (False, False, True, True, True, True)

_CMD_BOX = ((0.1, 0.5), (0.6, 1.0), (0.25, 4.0), (0.25, 4.0), (0.5, 2.0), (0.5, 2.0))
_ASTRID_BOX = ((0.1, 0.5), (0.6, 1.0), (0.25, 4.0), (0.25, 4.0), (0.5, 2.0), (0.25, 4.0))
#: Prior boxes (min, max) per parameter of the real CMD suites (N-body twins share their hydro twin's box).
CMD_PRIORS = {
    "IllustrisTNG": _CMD_BOX,
    "SIMBA": _CMD_BOX,
    "Astrid": _ASTRID_BOX,
    "Nbody_IllustrisTNG": _CMD_BOX,
    "Nbody_SIMBA": _CMD_BOX,
    "Nbody_Astrid": _ASTRID_BOX,
}


def map_path(root: Path | str, field: str, suite: str, set_name: str = "LH") -> Path:
    """Canonical CMD name of a map file: ``root/Maps_{field}_{suite}_{set}_z=0.00.npy``."""
    return Path(root) / f"Maps_{field}_{suite}_{set_name}_z=0.00.npy"


def params_path(root: Path | str, suite: str, set_name: str = "LH") -> Path:
    """Canonical CMD name of a parameter file: ``root/params_{set}_{suite}.txt``."""
    return Path(root) / f"params_{set_name}_{suite}.txt"


def find_map_file(root: Path | str, field: str, suite: str, set_name: str = "LH") -> Path:
    """The map file of ``field``: the canonical name, else the variants seen in CMD/CMC releases.

    Tries ``z=0.00``, then ``z=0.0``, then the older CMC name ``Images_{field}_{suite}_{set}_z=0.00.npy``;
    raises ``FileNotFoundError`` listing the map files present otherwise.
    """
    root = Path(root)
    candidates = [
        map_path(root, field, suite, set_name),
        root / f"Maps_{field}_{suite}_{set_name}_z=0.0.npy",
        root / f"Images_{field}_{suite}_{set_name}_z=0.00.npy",
    ]
    for path in candidates:
        if path.is_file():
            return path
    present = sorted(p.name for p in root.glob("*.npy") if p.name.startswith(("Maps_", "Images_")))
    raise FileNotFoundError(
        f"no map file for field {field!r}, suite {suite!r}, set {set_name!r} in {root} (tried "
        f"{', '.join(c.name for c in candidates)}). Present: {present or 'none'}. Point data_dir at the CMD "
        "2D_maps folder, or simulate maps with `cosmobench multifield simulate`."
    )


def available_fields(root: Path | str, suite: str, set_name: str = "LH") -> list[str]:
    """Fields with a map file for ``suite``/``set_name`` in ``root``, in CMD order then alphabetical."""
    import re

    pattern = re.compile(rf"^(?:Maps|Images)_([A-Za-z0-9]+)_{re.escape(suite)}_{re.escape(set_name)}_z=0\.00?\.npy$")
    found = {m.group(1) for p in Path(root).glob("*.npy") if (m := pattern.match(p.name))}
    order = {f: i for i, f in enumerate(CMD_FIELDS)}
    return sorted(found, key=lambda f: (order.get(f, len(order)), f))


def load_params(root: Path | str, suite: str, set_name: str = "LH") -> np.ndarray:
    """Parameters of every simulation, shape (n_sims, 6): Omega_m, sigma_8, A_SN1, A_AGN1, A_SN2, A_AGN2.

    The file is checked on read: CMD's parameter files have exactly 6 finite columns, and every value lies in the
    suite's prior box (:func:`suite_prior`, when the suite is known).

    Raises
    ------
    FileNotFoundError
        No parameter file.
    ValueError
        Unreadable rows, another number of columns, a non-finite value, or a value outside the prior; the message
        names the file, the row (1-based, header lines not counted) and the fix.
    """
    path = params_path(root, suite, set_name)
    if not path.is_file():
        raise FileNotFoundError(
            f"parameter file {path} does not exist (expected CMD name params_{set_name}_{suite}.txt beside the "
            "maps). Point data_dir at the CMD 2D_maps folder, or simulate maps with `cosmobench multifield simulate`."
        )
    fix = f"fix or replace {path.name} (CMD files hold 6 numbers per simulation: {', '.join(PARAM_NAMES)})"
    try:
        params = np.atleast_2d(np.loadtxt(path, dtype=np.float64))
    except ValueError as err:
        raise ValueError(f"{path} is not a table of numbers ({str(err).splitlines()[0]}); {fix}") from None
    if params.ndim != 2 or params.shape[1] != len(PARAM_NAMES):
        raise ValueError(f"{path} has {params.shape[-1]} columns; expected 6 ({', '.join(PARAM_NAMES)}); {fix}")
    bad = ~np.isfinite(params)
    if bad.any():
        row, col = np.argwhere(bad)[0]
        raise ValueError(
            f"{path}: row {row + 1} holds {params[row, col]} for {PARAM_NAMES[col]} ({int(bad.any(1).sum())} "
            f"row(s) with NaN or inf); {fix}"
        )
    try:
        prior = np.asarray(suite_prior(suite))
    except ValueError:
        return params  # a suite of unknown prior (neither CMD's nor the simulator's): finite values suffice
    tol = 1e-6 * (prior[:, 1] - prior[:, 0])
    outside = (params < prior[:, 0] - tol) | (params > prior[:, 1] + tol)
    if outside.any():
        row, col = np.argwhere(outside)[0]
        lo, hi = prior[col]
        raise ValueError(
            f"{path}: row {row + 1} has {PARAM_NAMES[col]} = {params[row, col]:g}, outside the prior of suite "
            f"{suite} [{lo:g}, {hi:g}] ({int(outside.sum())} value(s) outside); {fix}, or check that suite= names "
            "the suite these parameters belong to"
        )
    return params


def load_maps(root: Path | str, field: str, suite: str, set_name: str = "LH", *, mmap: bool = True) -> np.ndarray:
    """The maps of one field, shape (15 n_sims, H, W) float32, memory-mapped by default.

    Raises ``ValueError`` when the array is not 3-D float32 with a multiple of 15 maps, or when its number of
    simulations differs from the parameter file's.
    """
    path = find_map_file(root, field, suite, set_name)
    fix = "replace the file (re-simulate it, or copy it again from CMD)"
    try:
        maps = np.load(path, mmap_mode="r" if mmap else None)
    except (OSError, ValueError) as err:
        raise ValueError(f"{path} is not a readable .npy array ({err}); {fix}") from None
    if maps.ndim != 3 or maps.dtype != np.float32 or maps.shape[1] != maps.shape[2]:
        raise ValueError(f"{path} holds {maps.dtype} {maps.shape}; CMD maps are float32 (15 n_sims, H, H): {fix}")
    if len(maps) % MAPS_PER_SIM:
        raise ValueError(
            f"{path} holds {len(maps)} maps, not a multiple of {MAPS_PER_SIM} (maps per simulation): {fix}"
        )
    n_sims = len(load_params(root, suite, set_name))
    if len(maps) != MAPS_PER_SIM * n_sims:
        raise ValueError(
            f"{path} holds {len(maps)} maps but {params_path(root, suite, set_name).name} has "
            f"{n_sims} simulations; expected {MAPS_PER_SIM * n_sims} maps: {fix}, or the parameter file"
        )
    return maps


def check_maps(root: Path | str, field: str, suite: str, set_name: str = "LH", *, chunk: int = 256) -> tuple[int, int]:
    """Check every pixel of one field's map file: finite, and positive (Mstar: non-negative), as the log needs.

    Reads the file in chunks of ``chunk`` maps (a CMD file at 256^2 takes a few seconds).

    Returns
    -------
    (int, int)
        Number of maps and map side of the file (after :func:`load_maps`' shape checks).

    Raises
    ------
    ValueError
        Naming the file, the number of bad pixels and maps, the first bad map and the fix.
    """
    maps = load_maps(root, field, suite, set_name)
    path = find_map_file(root, field, suite, set_name)
    n_bad = n_low = 0
    bad_maps: list[int] = []
    low_maps: list[int] = []
    for start in range(0, len(maps), chunk):
        x = np.asarray(maps[start : start + chunk])
        bad = ~np.isfinite(x)
        low = (x < 0) if field == "Mstar" else (x <= 0)
        n_bad += int(bad.sum())
        n_low += int((low & ~bad).sum())
        bad_maps += (start + np.flatnonzero(bad.any(axis=(1, 2)))).tolist()
        low_maps += (start + np.flatnonzero(low.any(axis=(1, 2)))).tolist()
    fix = "replace the file (re-simulate with `cosmobench multifield simulate overwrite=true`, or copy it from CMD)"
    if n_bad:
        raise ValueError(
            f"{path} holds {n_bad} non-finite pixel(s) (NaN or inf) in {len(bad_maps)} map(s), the first in map "
            f"{bad_maps[0]} (simulation {bad_maps[0] // MAPS_PER_SIM}); the network needs finite inputs: {fix}"
        )
    if n_low:
        sign = "negative" if field == "Mstar" else "zero or negative"
        raise ValueError(
            f"{path} holds {n_low} {sign} pixel(s) in {len(low_maps)} map(s), the first in map {low_maps[0]}; "
            f"field {field} is read through a log10: {fix}"
        )
    return len(maps), int(maps.shape[-1])


def check_dataset(root: Path | str, suite: str, fields: Sequence[str], set_name: str = "LH") -> int:
    """Check the parameter file and the maps of ``fields`` of ``suite`` before any work (see :func:`load_params`,
    :func:`check_maps`); all fields must have the same map side, a power of two >= 8 (o3_err halves it).

    Returns
    -------
    int
        The map side in pixels.
    """
    if not fields:
        raise ValueError("fields is empty; give at least one field, e.g. fields=[Mtot]")
    load_params(root, suite, set_name)
    sides = {f: check_maps(root, f, suite, set_name)[1] for f in fields}
    first = fields[0]
    for f, side in sides.items():
        if side != sides[first]:
            raise ValueError(
                f"{find_map_file(root, f, suite, set_name)} holds {side}x{side} maps but "
                f"{find_map_file(root, first, suite, set_name).name} holds {sides[first]}x{sides[first]}; every field "
                "of a suite must have the same map size: replace the odd file or choose fields of one size"
            )
    npix = sides[first]
    if npix < 8 or npix & (npix - 1):
        raise ValueError(
            f"{find_map_file(root, first, suite, set_name)} holds {npix}x{npix} maps; o3_err needs a power-of-two "
            "side >= 8: resample the maps or simulate with simulate.npix=64"
        )
    return npix


def suite_prior(suite: str) -> tuple[tuple[float, float], ...]:
    """Prior box of ``suite``: the real CMD table, else the offline simulator's registry."""
    if suite in CMD_PRIORS:
        return CMD_PRIORS[suite]
    from .simulate import SUITES

    if suite in SUITES:
        return SUITES[suite].priors
    raise ValueError(f"unknown suite {suite!r}; known suites: {sorted(CMD_PRIORS) + sorted(SUITES)}")


def split_sims(
    n_sims: int, fractions: Sequence[float] = TrainingSettings.split, seed: int = TrainingSettings.split_seed
) -> dict[str, np.ndarray]:
    """Split simulation indices into train/valid/test by simulation (all 15 maps of a sim stay together).

    The permutation comes from the generator ``core.seeds.rng(seed, "split")`` (no global state). Sizes are
    ``round(f * n_sims)`` for valid and test, the rest for train; each part is returned sorted.

    Parameters
    ----------
    n_sims : int
    fractions : (train, valid, test), summing to 1; CMD's benchmark uses 900/50/50 of 1000 (default: the
        ``training.split`` default).
    seed : int
    """
    fractions = tuple(float(f) for f in fractions)
    if len(fractions) != 3 or min(fractions) < 0 or abs(sum(fractions) - 1) > 1e-6:
        raise ValueError(f"split fractions must be three non-negative numbers summing to 1, got {fractions}")
    n_valid, n_test = round(fractions[1] * n_sims), round(fractions[2] * n_sims)
    n_train = n_sims - n_valid - n_test
    if n_train < 1 or (fractions[1] > 0 and n_valid < 1) or (fractions[2] > 0 and n_test < 1):
        raise ValueError(f"{n_sims} simulations are too few for the split {fractions}; simulate more")
    order = rng(seed, "split").permutation(n_sims)
    return {
        "train": np.sort(order[:n_train]),
        "valid": np.sort(order[n_train : n_train + n_valid]),
        "test": np.sort(order[n_train + n_valid :]),
    }


def sims_to_maps(sims: np.ndarray) -> np.ndarray:
    """Map indices of simulations ``sims``: 15 s, ..., 15 s + 14 for each s, in order."""
    sims = np.asarray(sims, dtype=np.int64)
    return (sims[:, None] * MAPS_PER_SIM + np.arange(MAPS_PER_SIM)).ravel()


def transform(field: str, maps: np.ndarray, smoothing: float = 0.0) -> np.ndarray:
    """The network input of raw maps: optional periodic Gaussian smoothing, then log10 (log10(x + 1) for Mstar).

    Parameters
    ----------
    field : str
    maps : ndarray, shape (..., H, W), the field's physical units
    smoothing : float
        Gaussian sigma in pixels (0 = none), applied with wrap-around boundaries before the log.

    Returns
    -------
    ndarray, float32, same shape
    """
    x = np.asarray(maps, dtype=np.float64)
    if smoothing > 0:
        from scipy.ndimage import gaussian_filter

        sigma = (0,) * (x.ndim - 2) + (smoothing, smoothing)
        x = gaussian_filter(x, sigma=sigma, mode="wrap")
    if field == "Mstar":
        return np.log10(x + 1.0).astype(np.float32)
    if np.any(x <= 0):
        raise ValueError(f"field {field} has non-positive values; log10 is undefined (only Mstar may be zero)")
    return np.log10(x).astype(np.float32)


@dataclass(frozen=True)
class FieldStats:
    """Scalar mean and standard deviation of each transformed field over the training maps."""

    fields: tuple[str, ...]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    smoothing: float = 0.0

    def as_dict(self) -> dict:
        return {
            "fields": list(self.fields),
            "mean": list(self.mean),
            "std": list(self.std),
            "smoothing": self.smoothing,
        }

    @classmethod
    def from_dict(cls, d: dict) -> FieldStats:
        return cls(tuple(d["fields"]), tuple(d["mean"]), tuple(d["std"]), float(d.get("smoothing", 0.0)))


def field_stats(
    root: Path | str,
    suite: str,
    fields: Sequence[str],
    map_index: np.ndarray,
    *,
    set_name: str = "LH",
    smoothing: float = 0.0,
    chunk: int = 256,
) -> FieldStats:
    """Mean and std of each transformed field over ``map_index`` (the training maps only), streamed in chunks."""
    means, stds = [], []
    idx = np.sort(np.asarray(map_index))
    for field in fields:
        maps = load_maps(root, field, suite, set_name)
        s1 = s2 = n = 0.0
        for start in range(0, len(idx), chunk):
            x = transform(field, maps[idx[start : start + chunk]], smoothing).astype(np.float64)
            s1 += x.sum()
            s2 += np.square(x).sum()
            n += x.size
        mean = s1 / n
        means.append(float(mean))
        stds.append(float(np.sqrt(max(s2 / n - mean**2, 0.0))))
        if stds[-1] == 0:
            raise ValueError(f"field {field} is constant over the training maps; it cannot be standardised")
    return FieldStats(tuple(fields), tuple(means), tuple(stds), smoothing)


class LabelScaler:
    """Map parameters to [0, 1] with a prior box, linearly or (for log-uniform parameters) in log.

    Parameters
    ----------
    prior : sequence of (min, max), length 6
    log : sequence of bool, length 6
        Scale these parameters in log (default: the astrophysical ones, see ``LOG_PARAMS``).
    """

    def __init__(self, prior: Sequence[Sequence[float]], log: Sequence[bool] = LOG_PARAMS):
        self.prior = np.asarray(prior, dtype=np.float64)
        self.log = np.asarray(log, dtype=bool)
        if self.prior.shape != (len(PARAM_NAMES), 2) or np.any(self.prior[:, 1] <= self.prior[:, 0]):
            raise ValueError(f"prior must be 6 (min, max) pairs with max > min, got {prior}")
        lo, hi = self.prior[:, 0], self.prior[:, 1]
        self._lo = np.where(self.log, np.log(lo), lo)
        self._width = np.where(self.log, np.log(hi) - np.log(lo), hi - lo)

    def normalise(self, theta: np.ndarray) -> np.ndarray:
        """Physical (n, 6) -> normalised (n, 6)."""
        theta = np.asarray(theta, dtype=np.float64)
        return (np.where(self.log, np.log(theta), theta) - self._lo) / self._width

    def denormalise(self, mean: np.ndarray, std: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Normalised posterior mean and std (n, 6) -> physical ones.

        Linear parameters: ``mu * width + min``, ``sigma * width``. Log-scaled ones: ``exp`` of the mean in log
        (the posterior median under a log-normal reading) and the delta-method std ``theta * width * sigma``.
        """
        mean = np.asarray(mean, dtype=np.float64)
        std = np.asarray(std, dtype=np.float64)
        lin = mean * self._width + self._lo
        mu = np.where(self.log, np.exp(lin), lin)
        sd = np.where(self.log, mu * self._width * std, self._width * std)
        return mu, sd

    def as_dict(self) -> dict:
        return {"prior": self.prior.tolist(), "log": self.log.tolist()}


class MapStack:
    """Standardised multifield maps as a sliceable array: ``stack[idx] -> float32 (len(idx), C, H, W)``.

    Memory-maps the field files and transforms on access, or holds the transformed maps in memory when
    ``in_memory`` (the default when they take less than ``max_memory_gb``). Usable directly as training data
    by :func:`cosmobench.core.train.fit` (tuples of sliceable arrays are its fast path).

    Parameters
    ----------
    root, suite, set_name : where the CMD files are
    stats : FieldStats
        Fields (channel order) and their standardisation (from the training maps of the *training* suite).
    map_index : ndarray of int
        Global map indices (row k of every field file) in this stack's order.
    in_memory : bool, optional
    max_memory_gb : float
    """

    def __init__(
        self,
        root: Path | str,
        suite: str,
        stats: FieldStats,
        map_index: np.ndarray,
        *,
        set_name: str = "LH",
        in_memory: bool | None = None,
        max_memory_gb: float = 8.0,
    ):
        self.stats = stats
        self.map_index = np.asarray(map_index, dtype=np.int64)
        self._maps = [load_maps(root, f, suite, set_name) for f in stats.fields]
        h, w = self._maps[0].shape[1:]
        for field, maps in zip(stats.fields, self._maps):
            if maps.shape != self._maps[0].shape:
                raise ValueError(
                    f"field {field} has maps of shape {maps.shape}, unlike {stats.fields[0]}'s {self._maps[0].shape}"
                )
        self.shape = (len(self.map_index), len(stats.fields), h, w)
        nbytes = 4 * np.prod(self.shape)
        self._data = None
        if in_memory or (in_memory is None and nbytes < max_memory_gb * 1e9):
            data = np.empty(self.shape, dtype=np.float32)
            for start in range(0, len(self), 512):
                rows = np.arange(start, min(start + 512, len(self)))
                data[rows] = self._read(rows)
            self._data = data

    def __len__(self) -> int:
        return len(self.map_index)

    def _read(self, rows: np.ndarray) -> np.ndarray:
        idx = self.map_index[rows]
        order = np.argsort(idx, kind="stable")
        out = np.empty((len(idx), *self.shape[1:]), dtype=np.float32)
        for c, (field, maps) in enumerate(zip(self.stats.fields, self._maps)):
            x = transform(field, maps[idx[order]], self.stats.smoothing)
            out[order, c] = (x - self.stats.mean[c]) / self.stats.std[c]
        return out

    def __getitem__(self, rows) -> np.ndarray:
        if hasattr(rows, "numpy"):
            rows = rows.numpy()
        rows = np.arange(len(self))[rows] if isinstance(rows, slice) else np.asarray(rows, dtype=np.int64)
        if self._data is not None:
            return self._data[rows]
        return self._read(np.atleast_1d(rows))
