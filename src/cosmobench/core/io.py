"""Atomic file writing, HEALPix FITS maps, JSON/npy helpers and checksums.

Every file cosmobench writes goes through :func:`atomic_path`: it is written under a temporary name in
the same folder and renamed into place only when complete, so an interrupted run never leaves a
half-written file under a final name. Readers raise :class:`CorruptFileError` naming the file and the fix.
"""

from __future__ import annotations

import contextlib
import csv
import hashlib
import json
import os
import secrets
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

__all__ = [
    "CorruptFileError",
    "atomic_path",
    "write_json",
    "read_json",
    "write_csv",
    "write_npy",
    "write_npz",
    "write_text",
    "write_healpix",
    "read_healpix",
    "sha256",
    "array_sha256",
    "check_writable",
]

STOKES_COLUMNS = ("I_STOKES", "Q_STOKES", "U_STOKES")
DEFAULT_EXTNAME = "SKY-MAP"


class CorruptFileError(RuntimeError):
    """A file on disk cannot be read as what it should be."""


def check_writable(folder: Path) -> None:
    """Raise ``PermissionError`` naming ``folder`` if files cannot be created in it (it is created if missing)."""
    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".write-test-"):
            pass
    except OSError as err:
        raise PermissionError(
            f"cannot write to output folder {folder}: {err.strerror or err}. "
            "Choose another folder with out_dir=... or fix its permissions."
        ) from err


@contextlib.contextmanager
def atomic_path(path: Path | str) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it to ``path`` when the block ends without error.

    The temporary name starts with ``.`` and ends with ``.tmp`` so it is never mistaken for a result.
    It is created like :func:`open` creates files, with mode ``0o666`` less the process umask (0644 under
    umask 022), not the private 0600 of :func:`tempfile.mkstemp`, so results can be shared.
    On error the temporary file is removed and ``path`` is left as it was.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp_path = path.parent / f".{path.name}.{secrets.token_hex(8)}.tmp"
    os.close(os.open(tmp_path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o666))
    try:
        yield tmp_path
        with open(tmp_path, "rb+") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp_path, path)
    finally:
        tmp_path.unlink(missing_ok=True)


def write_json(path: Path | str, obj: Any) -> None:
    """Write ``obj`` as indented JSON, atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=2, sort_keys=True, default=_json_default) + "\n")


def write_csv(path: Path | str, rows: Sequence[dict], fields: Sequence[str] | None = None) -> None:
    """Write ``rows`` as CSV with a header, atomically; columns ``fields``, or the first row's keys."""
    with atomic_path(path) as tmp, open(tmp, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(fields if fields is not None else rows[0]))
        writer.writeheader()
        writer.writerows(rows)


def read_json(path: Path | str) -> Any:
    """Read a JSON file; a truncated or invalid file raises :class:`CorruptFileError`."""
    try:
        return json.loads(Path(path).read_text())
    except json.JSONDecodeError as err:
        raise CorruptFileError(f"{path} is not valid JSON ({err}); delete it and rerun to regenerate it.") from err


def _json_default(obj: Any) -> Any:
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"cannot write {type(obj).__name__} to JSON")


def write_text(path: Path | str, text: str) -> None:
    """Write ``text`` to ``path``, atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def write_npz(path: Path | str, **arrays: np.ndarray) -> None:
    """Save ``arrays`` with :func:`numpy.savez`, atomically."""
    with atomic_path(path) as tmp, open(tmp, "wb") as fh:
        np.savez(fh, **arrays)


def write_npy(path: Path | str, array: np.ndarray) -> None:
    """Save ``array`` with :func:`numpy.save`, atomically."""
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as fh:
            np.save(fh, np.asarray(array))


def write_healpix(
    path: Path | str,
    maps: np.ndarray,
    *,
    unit: str = "uK_CMB",
    column_names: Sequence[str] | None = None,
    dtype: type = np.float32,
    extname: str = DEFAULT_EXTNAME,
    freq_ghz: float | None = None,
    file_unit: str | None = None,
    extra_header: dict[str, Any] | None = None,
) -> None:
    """Write HEALPix maps in RING ordering, Galactic coordinates, to a FITS binary table, atomically.

    The header follows the HEALPix/Planck conventions: ``PIXTYPE``, ``ORDERING='RING'``, ``NSIDE``,
    ``COORDSYS='G'``, ``EXTNAME``, ``TUNITn``; polarised maps (a ``Q_...`` or ``U_...`` column) get
    ``POLCCONV='COSMO'``, the HEALPix sign convention that healpy and cosmobench's transforms use.

    Parameters
    ----------
    path : path
        Output file.
    maps : ndarray, shape (npix,) or (nmaps, npix)
        Maps in RING ordering, Galactic coordinates, in ``unit``.
    unit : str
        Unit of ``maps`` (see :mod:`cosmobench.sky.units` for the names).
    column_names : sequence of str, optional
        Defaults to ``I_STOKES`` (one map) or ``I/Q/U_STOKES`` (three maps).
    dtype : numpy dtype
        Stored precision; float32 by default.
    extname : str
        Name of the binary-table extension, e.g. ``"FREQ-MAP"`` for an observed channel (Planck's name) or
        ``"CMB-PRED"`` for a separated CMB map.
    freq_ghz : float, optional
        Frequency of the maps, GHz; written as the ``FREQ`` card. Needed when ``file_unit`` differs from ``unit``.
    file_unit : str, optional
        Unit stored in the file (e.g. ``"MJy/sr"`` for the 545 and 857 GHz channels, as Planck does); the maps
        are converted from ``unit`` at ``freq_ghz`` with :func:`cosmobench.sky.units.unit_factor`. Default:
        ``unit``, no conversion.
    extra_header : dict, optional
        Extra header cards: keyword (at most 8 characters, the FITS standard) -> value or (value, comment),
        e.g. ``{"FWHM": (20.6, "beam FWHM [arcmin]"), "METHOD": "nilc"}``.

    Raises
    ------
    ValueError
        Non-finite values, a keyword longer than 8 characters, or ``file_unit`` without ``freq_ghz``.
    """
    import healpy as hp

    maps = np.atleast_2d(np.asarray(maps))
    if not np.all(np.isfinite(maps)):
        raise ValueError(f"refusing to write non-finite values to {path}")
    if column_names is None:
        column_names = STOKES_COLUMNS[: len(maps)] if len(maps) <= 3 else [f"MAP{i}" for i in range(len(maps))]
    if file_unit is not None and file_unit != unit:
        if freq_ghz is None:
            raise ValueError(f"writing {path} in {file_unit} from {unit} needs the frequency: pass freq_ghz=...")
        from ..sky.units import unit_factor

        maps = maps * unit_factor(freq_ghz, unit, file_unit)
        unit = file_unit
    long_keys = [k for k in (extra_header or {}) if len(k) > 8]
    if long_keys:
        raise ValueError(f"FITS keywords have at most 8 characters; shorten {long_keys} (e.g. 'FWHM', 'METHOD')")
    cards = [("EXTNAME", extname, "name of this binary table extension")]
    if any(str(n).upper().startswith(("Q_", "U_")) for n in column_names):
        cards.append(("POLCCONV", "COSMO", "polarisation convention: COSMO (HEALPix) or IAU"))
    if freq_ghz is not None:
        cards.append(("FREQ", float(freq_ghz), "frequency [GHz]"))
    for key, value in (extra_header or {}).items():
        cards.append((key.upper(), *(value if isinstance(value, tuple) else (value,))))
    with atomic_path(path) as tmp:
        hp.write_map(
            str(tmp),
            [m.astype(dtype) for m in maps],
            nest=False,
            coord="G",
            column_names=list(column_names),
            column_units=unit,
            dtype=[dtype] * len(maps),
            extra_header=cards,
            overwrite=True,
        )


def read_healpix(path: Path | str, field: int | Sequence[int] | None = None, dtype: type = np.float32) -> np.ndarray:
    """Read a HEALPix FITS map as a RING-ordered, native-endian array.

    Parameters
    ----------
    path : path
        FITS file written by healpy or cosmobench (CMB-ML's files included).
    field : int or sequence of int, optional
        Columns to read; all columns by default.
    dtype : numpy dtype
        Returned precision.

    Returns
    -------
    ndarray, shape (npix,) for one field, else (nfield, npix)
    """
    import healpy as hp
    from astropy.io import fits

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"map file {path} does not exist")
    try:
        with fits.open(path, memmap=False) as hdul:
            header = hdul[1].header
            nfield = int(header["TFIELDS"])
        if field is None:
            field = tuple(range(nfield))
        maps = hp.read_map(str(path), field=field, dtype=None, nest=False)
    except (OSError, KeyError, IndexError, ValueError, TypeError) as err:
        raise CorruptFileError(
            f"{path} is not a readable HEALPix FITS map ({err}); delete it and rerun to regenerate it."
        ) from err
    return np.asarray(maps).astype(dtype)


def sha256(path: Path | str, chunk: int = 1 << 20) -> str:
    """Hex SHA-256 of a file's bytes."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            h.update(block)
    return h.hexdigest()


def array_sha256(*arrays: np.ndarray, chunk_bytes: int = 1 << 26) -> str:
    """Hex SHA-256 of arrays' values: each one's dtype, shape and C-order bytes, in turn.

    Memory maps are read in slices of about ``chunk_bytes`` along the first axis, so a large training array is
    hashed without loading it whole. Equal for equal values whatever the array's memory layout or file.
    """
    h = hashlib.sha256()
    for a in arrays:
        h.update(f"{a.dtype.str}{a.shape};".encode())
        rows = np.atleast_1d(a)  # a view: a memory map stays on disk
        step = max(1, chunk_bytes // max(1, rows[:1].nbytes))
        for start in range(0, len(rows), step):
            h.update(np.ascontiguousarray(rows[start : start + step]).tobytes())
    return h.hexdigest()
