"""Apply a separation method to your own frequency maps (``cosmobench cmb apply``).

:func:`apply_method` runs any registered method (:data:`cosmobench.cmb.methods.METHODS`; a learned one from
the folder it was trained in) on a list of HEALPix FITS maps described by a channel table, for example Planck
PR3 frequency maps::

    from cosmobench.cmb.apply import apply_method

    channels = [
        {"band": "100", "center_ghz": 100.89, "fwhm_arcmin": 9.68, "unit": "K_CMB"},
        {"band": "143", "center_ghz": 142.876, "fwhm_arcmin": 7.30, "unit": "K_CMB"},
        # ...
        {"band": "857", "center_ghz": 866.8, "fwhm_arcmin": 4.64, "unit": "MJy/sr", "to_uk_cmb": 1e6 / 2.27},
    ]
    apply_method(files, channels, method="nilc", out_dir="planck_nilc", nside=512)

What is read
    The intensity column of each file: the first column named ``I_STOKES``, ``TEMPERATURE``, ``I``, ``T`` or
    ``INTENSITY`` (any case), else the first column (healpy's default ``field=0``). For a method that predicts
    I, Q, U (``fields="IQU"``, the ILCs' default) also the Q and U columns, the first named ``Q_STOKES``,
    ``Q_POLARISATION`` or ``Q`` (and the same for U), in the I column's unit and the file's Q/U convention
    (HEALPix/COSMO, as Planck's): a file with both is a polarised channel, one without is intensity-only. Pixels
    are reordered from the file's ``ORDERING`` (RING or NESTED) to RING by :func:`healpy.read_map`.
Units
    ``K_CMB``, ``mK_CMB``, ``uK_CMB`` (or ``µK_CMB``), ``K_RJ``, ``mK_RJ``, ``uK_RJ``, ``MJy/sr``, ``Jy/sr``,
    from the table's ``unit`` or, when the table has none, the file's ``TUNITn`` (a table unit that contradicts
    a readable ``TUNITn`` is an error). Maps are converted to uK_CMB with
    :func:`cosmobench.sky.units.unit_factor` at ``center_ghz``: the monochromatic conversion of cosmobench's
    own instrument. Planck's 545 and 857 GHz maps follow the IRAS convention over a broad bandpass, for which
    the band-averaged factors of the Planck unit-conversion tables (58.04 and 2.27 MJy/sr per K_CMB) differ
    from the monochromatic ones (51.4 at 555.2 GHz, 1.26 at 866.8 GHz); give them with ``to_uk_cmb``.
Resolution
    Every map is brought to the target ``nside`` by harmonic resampling: analysis up to
    ``3 min(nside_in, nside) - 1`` (3 Jacobi iterations) and synthesis at ``nside``, which band-limits the map
    instead of averaging or repeating pixels (:func:`healpy.ud_grade` aliases power above the new band limit
    and leaves a pixel-block pattern when upgrading). Maps already at ``nside`` are used as read. No pixel
    window is corrected (healpy's pixel-window files are downloaded at run time).

Outputs in ``out_dir``: ``cmb_map.fits`` (RING, uK_CMB, Galactic, ``EXTNAME='CMB-PRED'``, columns
``TEMPERATURE`` or ``TEMPERATURE``, ``Q_POLARISATION``, ``U_POLARISATION`` as the method's ``fields``, with
``FWHM`` (the output beam, arcmin; 0 = unbeamed), ``LMAX`` (its band limit, when it has one), ``METHOD``,
``RESAMPLE`` and per input file ``FILEnnn`` and ``SHAnnn``, its name and SHA-256), ``cmb_map_std.fits`` (the
same for the 1-sigma error per pixel, ``EXTNAME='CMB-PRED-STD'``, from a method that estimates it),
``cmb_map.png``, ``cmb_spectrum.png`` and ``cmb_spectrum.npz`` (``ell``, ``dl``: the full-sky temperature D_ell
with the output beam deconvolved, uK^2, :func:`map_spectrum`), ``report.md`` and ``apply.json`` (what
:func:`apply_method` returns).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .. import __version__
from ..core.io import check_writable, read_healpix, sha256, write_healpix, write_json, write_npz, write_text
from ..core.settings import plain
from ..sky import sht
from ..sky.units import unit_factor

__all__ = [
    "apply_method",
    "input_identities",
    "read_channel_table",
    "map_spectrum",
    "InputError",
    "TEMPERATURE_COLUMNS",
    "POLARISATION_COLUMNS",
    "CHANNEL_KEYS",
]

TEMPERATURE_COLUMNS = ("I_STOKES", "TEMPERATURE", "I", "T", "INTENSITY")
POLARISATION_COLUMNS = (("Q_STOKES", "Q_POLARISATION", "Q"), ("U_STOKES", "U_POLARISATION", "U"))
CHANNEL_KEYS = ("band", "center_ghz", "fwhm_arcmin", "unit", "to_uk_cmb")
_REQUIRED_KEYS = ("band", "center_ghz", "fwhm_arcmin")
_UNIT_HINT = "K_CMB, uK_CMB, K_RJ, uK_RJ or MJy/sr"
_SHT_ITER = 3
# Pixels at or below this value are HEALPix's UNSEEN (-1.6375e30) or a file's BAD_DATA sentinel.
_BAD_VALUE = -1e30


class InputError(ValueError):
    """The maps or the channel table given to :func:`apply_method` cannot be used; the message lists every problem."""


@dataclass(frozen=True)
class _Input:
    """One validated input map: where it is, what it is, how to turn it into uK_CMB."""

    path: Path
    band: str
    center_ghz: float
    fwhm_arcmin: float
    unit: str
    to_uk_cmb: float
    column: str
    field: int
    ordering: str
    nside: int
    pol_columns: tuple[str, str] | None
    pol_fields: tuple[int, int] | None


def read_channel_table(path: str | Path) -> list[dict[str, str]]:
    """Rows of a whitespace channel table: ``#`` comment lines, a header line, one line per map.

    Columns are :data:`CHANNEL_KEYS`: ``band``, ``center_ghz`` (GHz), ``fwhm_arcmin`` (arcmin), and optionally
    ``unit`` and ``to_uk_cmb`` (uK_CMB per unit of the file; overrides the conversion from ``unit``). Values
    are returned as strings; :func:`apply_method` checks them.
    """
    import pandas as pd

    path = Path(path)
    if not path.is_file():
        raise InputError(f"channel table {path} does not exist; give the path of a table or a list of rows")
    frame = pd.read_csv(path, sep=r"\s+", comment="#", dtype=str, keep_default_na=False)
    return frame.to_dict("records")


def _normalise_unit(unit: str) -> str:
    """``µK_CMB`` -> ``uK_CMB`` (either micro sign), surrounding blanks removed."""
    return str(unit).strip().replace("\u00b5", "u").replace("\u03bc", "u")


def _known_unit(unit: str, freq_ghz: float) -> bool:
    try:
        unit_factor(freq_ghz, unit, "uK_CMB")
    except ValueError:
        return False
    return True


def _header_problems(path: Path, row: Mapping[str, Any], where: str) -> tuple[list[str], _Input | None]:
    """Check one file's header against its table row; returns (problems, input or None)."""
    from astropy.io import fits

    if not path.is_file():
        return [f"{path}: file does not exist; fix the path in maps=... ({where})"], None
    try:
        with fits.open(path, memmap=False) as hdul:
            header = hdul[1].header
    except (OSError, IndexError) as err:
        return [f"{path}: not a FITS file with a binary-table extension ({err}); give a HEALPix map file"], None
    names = [str(header.get(f"TTYPE{k}", "")).strip() for k in range(1, int(header.get("TFIELDS", 0)) + 1)]
    ordering = str(header.get("ORDERING", "")).strip().upper()
    problems = []
    if not names or "NSIDE" not in header or str(header.get("PIXTYPE", "HEALPIX")).strip().upper() != "HEALPIX":
        problems.append(f"{path}: not a HEALPix map table (PIXTYPE, NSIDE or columns missing); give a HEALPix map file")
    if ordering not in ("RING", "NESTED"):
        problems.append(
            f"{path}: ORDERING card is {header.get('ORDERING')!r}, expected RING or NESTED; add it to the header "
            "(e.g. astropy.io.fits.setval(path, 'ORDERING', value='NESTED', ext=1))"
        )
    if problems:
        return problems, None
    upper = [n.upper() for n in names]
    field = next((upper.index(c) for c in TEMPERATURE_COLUMNS if c in upper), 0)
    freq = float(row["center_ghz"])
    file_unit = _normalise_unit(header.get(f"TUNIT{field + 1}", ""))
    unit = _normalise_unit(row["unit"]) if row.get("unit") else file_unit
    given = row.get("to_uk_cmb") not in (None, "")
    if not given and not _known_unit(unit, freq):
        source = "the channel table" if row.get("unit") else f"its TUNIT{field + 1} card"
        return [f"{path}: unknown unit {unit!r} (from {source}); set unit to one of {_UNIT_HINT} ({where})"], None
    if (
        row.get("unit")
        and _known_unit(unit, freq)
        and _known_unit(file_unit, freq)
        and not math.isclose(unit_factor(freq, unit, file_unit), 1.0)
    ):
        return [
            f"{path}: the channel table says {unit} but the file's TUNIT{field + 1} says {file_unit}; "
            f"correct the table's unit ({where})"
        ], None
    factor = float(row["to_uk_cmb"]) if given else unit_factor(freq, unit, "uK_CMB")
    pol = [next((upper.index(c) for c in names_qu if c in upper), None) for names_qu in POLARISATION_COLUMNS]
    pol_fields = None if None in pol else (pol[0], pol[1])
    return [], _Input(
        path=path,
        band=str(row["band"]),
        center_ghz=freq,
        fwhm_arcmin=float(row["fwhm_arcmin"]),
        unit=unit,
        to_uk_cmb=float(factor),
        column=names[field],
        field=field,
        ordering=ordering,
        nside=int(header["NSIDE"]),
        pol_columns=None if pol_fields is None else (names[pol_fields[0]], names[pol_fields[1]]),
        pol_fields=pol_fields,
    )


def _row_problems(rows: Sequence[Mapping[str, Any]], n_maps: int) -> list[str]:
    """Table-level problems: row count, unknown or missing keys, non-numeric values, duplicate bands."""
    if len(rows) != n_maps:
        return [f"the channel table has {len(rows)} rows for {n_maps} maps; give one row per map, in the same order"]
    problems = []
    for k, row in enumerate(rows):
        where = f"channel table row {k + 1}"
        unknown = sorted(set(row) - set(CHANNEL_KEYS))
        missing = [key for key in _REQUIRED_KEYS if row.get(key) in (None, "")]
        if unknown:
            problems.append(f"{where}: unknown column(s) {unknown}; columns are {list(CHANNEL_KEYS)}")
        if missing:
            problems.append(f"{where}: missing {missing}; every row needs {list(_REQUIRED_KEYS)}")
        for key in ("center_ghz", "fwhm_arcmin", "to_uk_cmb"):
            value = row.get(key)
            if value in (None, ""):
                continue
            try:
                ok = float(value) > 0 or (key == "fwhm_arcmin" and float(value) == 0)
            except (TypeError, ValueError):
                ok = False
            if not ok:
                problems.append(f"{where}: {key} must be a positive number, got {value!r}")
    bands = [str(r.get("band")) for r in rows]
    duplicated = sorted({b for b in bands if bands.count(b) > 1})
    if duplicated:
        problems.append(f"channel table: bands {duplicated} appear more than once; give each map its own band name")
    return problems


def _channel_rows(channels: Sequence[Mapping[str, Any]] | str | Path) -> list[dict[str, Any]]:
    """The channel table's rows, from a table file or a sequence of mappings."""
    return read_channel_table(channels) if isinstance(channels, (str, Path)) else [dict(r) for r in channels]


def input_identities(maps: Sequence[str | Path], channels: Sequence[Mapping[str, Any]] | str | Path) -> dict[str, str]:
    """Check the maps' headers against the channel table (as :func:`apply_method` does) and identify them.

    Parameters
    ----------
    maps, channels
        As for :func:`apply_method`.

    Returns
    -------
    dict of str to str
        ``"channels"``: digest of the table's rows; ``"map <band>"``: SHA-256 of each map file.

    Raises
    ------
    InputError
        Listing every problem of the table and the headers.
    """
    from ..core.stage import digest

    if not maps:
        raise InputError("no maps given; pass maps=[path, ...], one FITS file per channel")
    rows = _channel_rows(channels)
    inputs = _validate(maps, rows)
    return {"channels": digest(rows), **{f"map {i.band}": sha256(i.path) for i in inputs}}


def _validate(maps: Sequence[str | Path], rows: Sequence[Mapping[str, Any]]) -> list[_Input]:
    problems = _row_problems(rows, len(maps))
    if problems:
        raise InputError("cannot apply the method:\n  " + "\n  ".join(problems))
    inputs = []
    for k, (path, row) in enumerate(zip(maps, rows)):
        found, item = _header_problems(Path(path), row, f"channel table row {k + 1}, band {row['band']!r}")
        problems += found
        if item is not None:
            inputs.append(item)
    if problems:
        raise InputError("cannot apply the method:\n  " + "\n  ".join(problems))
    return inputs


def _read(inputs: Sequence[_Input], pol: bool) -> list[np.ndarray]:
    """The maps, RING, in the files' units: (1, npix) I, or with ``pol`` (3, npix) I, Q, U for the files with Q
    and U columns; raises listing every file and column with NaN or UNSEEN pixels."""
    maps, problems = [], []
    for item in inputs:
        columns, fields = [item.column], [item.field]
        if pol and item.pol_fields is not None:
            columns, fields = [*columns, *item.pol_columns], [*fields, *item.pol_fields]
        m = np.atleast_2d(read_healpix(item.path, field=tuple(fields), dtype=np.float64))
        for column, values in zip(columns, m):
            bad = int(np.count_nonzero(~np.isfinite(values) | (values <= _BAD_VALUE)))
            if bad:
                problems.append(
                    f"{item.path}: {bad} of {values.size} pixels of column {column} are NaN or UNSEEN; the methods "
                    "need full-sky maps: fill them (e.g. inpaint, or use the mission's filled product) and rerun"
                )
        maps.append(m)
    if problems:
        raise InputError("cannot apply the method:\n  " + "\n  ".join(problems))
    return maps


def _resample(m: np.ndarray, nside: int) -> np.ndarray:
    """Harmonic resampling of RING maps (1, npix) I or (3, npix) I, Q, U (spin 2) to ``nside``, band-limited at
    3 min(nside_in, nside) - 1."""
    nside_in = sht.nside_of(m)
    if nside_in == nside:
        return m
    lmax = 3 * min(nside_in, nside) - 1
    return sht.alm2map(sht.map2alm(m, lmax, _SHT_ITER), nside, lmax)


def _load_method(method: str, settings: Mapping[str, Any], model_dir: str | Path | None):
    """The method, built from ``settings`` (classical) or loaded from ``model_dir`` (learned)."""
    from .methods import get_method, is_learned
    from .separate import _build

    model = _build(method, settings)  # unknown settings raise here
    if not is_learned(method):
        return model
    if model_dir is None:
        raise InputError(
            f"method {method!r} is learned: give model_dir=<dataset root>/{method}/model, the folder "
            f"`cosmobench cmb train method={method}` wrote"
        )
    return get_method(method).load(Path(model_dir), device=settings.get("device", "auto"))


def apply_method(
    maps: Sequence[str | Path],
    channels: Sequence[Mapping[str, Any]] | str | Path,
    *,
    method: str,
    out_dir: str | Path,
    settings: Mapping[str, Any] | None = None,
    model_dir: str | Path | None = None,
    nside: int | None = None,
    report: bool = True,
    before_write: Callable[[], Any] | None = None,
) -> dict[str, Any]:
    """Separate the CMB from your own frequency maps with a registered method.

    Every input is checked before any work: a missing file, a header without RING/NESTED ordering, an unknown
    or contradicting unit, NaN or UNSEEN pixels (counted) or a channel table that does not match the maps
    raises :class:`InputError` listing each problem with the file and the fix.

    Parameters
    ----------
    maps : sequence of path
        HEALPix FITS maps, one per channel, in any ordering, column layout, unit (see the module notes) and nside.
    channels : sequence of mapping, or path
        One row per map, in the same order (a list of dicts, e.g. a YAML section, or a table file read by
        :func:`read_channel_table`): ``band`` (name, e.g. "100"; methods select and exclude channels by it),
        ``center_ghz`` (GHz), ``fwhm_arcmin`` (Gaussian beam FWHM, arcmin), optionally ``unit`` (default: the
        file's ``TUNITn``) and ``to_uk_cmb`` (uK_CMB per unit, overriding the conversion from ``unit``).
    method : str
        Registered method name (:data:`cosmobench.cmb.methods.METHODS`).
    out_dir : path
        Output folder.
    settings : mapping, optional
        The method's keyword settings (its section of ``conf/cmb.yaml``); validated for learned methods too.
    model_dir : path, optional
        Folder of a trained learned method (``<dataset root>/<method>/model``); required for learned methods.
    nside : int, optional
        Target resolution: the trained nside for a learned method, else the smallest input nside.
    report : bool
        Write ``report.md`` with the map and its power spectrum.
    before_write : callable, optional
        Called once every input is checked, the maps read and the method loaded, before the first write (the
        ``cmb apply`` stage writes its record there).

    Returns
    -------
    dict
        ``method``, ``map`` (path of the CMB map), ``std_map`` (path of its error map, or None), ``report``
        (path or None), ``nside``, ``fields``, ``output_beam_arcmin``, ``output_lmax``, ``seconds``
        (prediction), ``inputs`` (per file: path, sha256, band, center_ghz, fwhm_arcmin, unit, to_uk_cmb,
        column, ordering, nside, pol_columns: the Q and U columns or None).
    """
    from ..sky.instrument import Channel
    from .separate import map_cards, method_facts, predict_maps, prediction_columns, prediction_header

    if not maps:
        raise InputError("no maps given; pass maps=[path, ...], one FITS file per channel")
    inputs = _validate(maps, _channel_rows(channels))
    settings = dict(settings or {})
    model = _load_method(method, settings, model_dir)
    out_dir = Path(out_dir)
    trained = getattr(model, "config", None) or {}
    target = sht.check_nside(nside or trained.get("nside") or min(item.nside for item in inputs))
    facts = method_facts(model, target)
    raw = _read(inputs, pol=facts["fields"] == "IQU")
    if before_write is not None:
        before_write()
    check_writable(out_dir)
    obs = {item.band: np.atleast_2d(_resample(m * item.to_uk_cmb, target)) for item, m in zip(inputs, raw)}
    chans = [
        Channel(
            band=i.band,
            center_ghz=i.center_ghz,
            fwhm_arcmin=i.fwhm_arcmin,
            fields="IQU" if len(obs[i.band]) == 3 else "I",
            depth_i=0,
            depth_p=0,
        )
        for i in inputs
    ]
    t0 = time.perf_counter()
    cmb, std = predict_maps(model, obs, chans, what=f"method {method!r}")
    seconds = time.perf_counter() - t0
    beam = model.output_beam_arcmin
    records = [
        {
            "path": str(i.path),
            "sha256": sha256(i.path),
            **plain({k: v for k, v in asdict(i).items() if k not in ("path", "field", "pol_fields")}),
        }
        for i in inputs
    ]
    header: dict[str, Any] = {
        **prediction_header(method, beam, facts["output_lmax"]),
        **map_cards(model),
        "CREATOR": f"cosmobench {__version__}",
        "RESAMPLE": ("harmonic", "nside harmonised by map2alm/alm2map"),
    }
    for k, rec in enumerate(records, start=1):
        header[f"FILE{k:03d}"] = Path(rec["path"]).name
        header[f"SHA{k:03d}"] = rec["sha256"]
    map_path, std_path = out_dir / "cmb_map.fits", out_dir / "cmb_map_std.fits"
    columns = prediction_columns(cmb)
    write_healpix(map_path, cmb, unit="uK_CMB", column_names=columns, extname="CMB-PRED", extra_header=header)
    if std is not None:
        write_healpix(std_path, std, unit="uK_CMB", column_names=columns, extname="CMB-PRED-STD", extra_header=header)
    result = {
        "method": method,
        "map": str(map_path),
        "std_map": str(std_path) if std is not None else None,
        "report": str(_write_report(out_dir, cmb, std is not None, method, beam, records)) if report else None,
        "nside": target,
        "fields": facts["fields"],
        "output_beam_arcmin": beam,
        "output_lmax": facts["output_lmax"],
        "seconds": seconds,
        "inputs": records,
    }
    write_json(out_dir / "apply.json", result)
    return result


def map_spectrum(cmb: np.ndarray, beam_arcmin: float | None) -> tuple[np.ndarray, np.ndarray]:
    """Full-sky D_ell of a map with its Gaussian beam deconvolved (no mask, no pixel window).

    Parameters
    ----------
    cmb : ndarray, shape (npix,), uK_CMB, RING
    beam_arcmin : float or None
        FWHM of the map's beam, arcmin (None or 0: unbeamed).

    Returns
    -------
    ell : ndarray, shape (lmax+1,), with lmax = 3 nside - 1
    dl : ndarray, shape (lmax+1,), uK^2: ell (ell + 1) C_ell / 2 pi
    """
    lmax = sht.default_lmax(sht.nside_of(cmb))
    ell = np.arange(lmax + 1)
    cl = sht.alm2cl(sht.map2alm(cmb, lmax, _SHT_ITER)) / sht.gauss_beam(beam_arcmin or 0.0, lmax) ** 2
    return ell, ell * (ell + 1) * cl / (2 * np.pi)


def _write_report(
    out_dir: Path, maps: np.ndarray, has_std: bool, method: str, beam: float | None, records: list[dict]
) -> Path:
    """``report.md`` with the temperature map and its full-sky power spectrum (beam deconvolved)."""
    from ..plots import colour_limit, mollweide, save, subplots

    cmb = np.atleast_2d(maps)[0]
    nside = sht.nside_of(cmb)
    lim = colour_limit([cmb])
    fig, ax = subplots(figsize=(8, 4.5))
    mollweide(ax, cmb, vmin=-lim, vmax=lim, title=f"CMB ({method})", unit=r"$\mu$K$_{\rm CMB}$", xsize=800)
    save(fig, out_dir / "cmb_map.png")

    ell, dl = map_spectrum(cmb, beam)
    write_npz(out_dir / "cmb_spectrum.npz", ell=ell, dl=dl)
    fig, ax = subplots(figsize=(7, 4))
    ax.plot(ell[2:], dl[2:], "-", lw=1)
    ax.set_xlabel(r"multipole $\ell$")
    ax.set_ylabel(r"$D_\ell = \ell(\ell+1)C_\ell/2\pi$ [$\mu$K$^2$]")
    ax.set_title(f"{method}: full sky, {beam or 0:g}' beam deconvolved")
    save(fig, out_dir / "cmb_spectrum.png")

    lines = [
        f"# CMB from your maps: {method}",
        "",
        f"`cmb_map.fits`: RING, nside {nside}, uK_CMB, Galactic; output beam "
        + (f"{beam:g}' FWHM." if beam else "none (unbeamed).")
        + (" Columns I, Q, U (HEALPix/COSMO convention); the figures show I." if np.ndim(maps) == 2 else "")
        + (" `cmb_map_std.fits`: its 1-sigma error per pixel (same columns)." if has_std else ""),
        "Inputs were converted to uK_CMB; those at another nside were resampled harmonically (band limit "
        "3 min(nside_in, nside) - 1). The FITS header holds their names and SHA-256.",
        "",
        "| file | band | GHz | beam (arcmin) | unit | uK_CMB per unit | column | ordering | nside |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    lines += [
        f"| {Path(r['path']).name} | {r['band']} | {r['center_ghz']:g} | {r['fwhm_arcmin']:g} | {r['unit']} "
        f"| {r['to_uk_cmb']:.6g} | {r['column']} | {r['ordering']} | {r['nside']} |"
        for r in records
    ]
    lines += [
        "",
        "![CMB map](cmb_map.png)",
        "",
        "Colour scale: the 99th percentile of abs(T), rounded up.",
        "",
        "![CMB power spectrum](cmb_spectrum.png)",
        "",
        "Full-sky D_ell of the map with the output beam deconvolved, no mask and no error bars: the Galactic "
        "plane residuals of real skies dominate the low multipoles; mask before interpreting it.",
        "",
    ]
    path = out_dir / "report.md"
    write_text(path, "\n".join(lines))
    return path
