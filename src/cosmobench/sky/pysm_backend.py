"""PySM3 presets (d1, s1, f1, a1, d9, s4, co1, ...) as cosmobench components.

PySM3 reads its templates from ``$PYSM_LOCAL_DATA`` (a mirror of its data portal), from astropy's download
cache, or downloads them. :func:`check_pysm_templates` finds the files a set of presets needs before any
map is read, and raises :class:`PySMTemplatesMissing` at once when one is missing and cannot be downloaded
(PySM itself would wait up to 90 s per file for the network). Download is attempted only when astropy allows
internet access and PySM's data portal answers.
"""

from __future__ import annotations

import contextlib
import os
import socket
import warnings
from collections.abc import Sequence
from urllib.error import URLError
from urllib.parse import urlparse

import numpy as np

from . import sht, units
from .components import Component

__all__ = ["PySMComponent", "PySMTemplatesMissing", "check_pysm_templates", "pysm_template_files"]

_FILE_SUFFIXES = (".fits", ".fits.gz", ".txt", ".dat", ".h5", ".hdf5", ".npy", ".npz")


class PySMTemplatesMissing(FileNotFoundError):
    """PySM3 template files are not available locally and cannot be downloaded."""


def _presets() -> dict:
    from pysm3.sky import PRESET_MODELS

    return PRESET_MODELS


# PySM3 classes whose inputs are all named in presets.cfg (plus COLines, whose fixed file names are known here);
# other classes (WebSky, interpolating components, ...) may read further files that cannot be listed in advance.
_LISTED_CLASSES = {
    "ModifiedBlackBody",
    "DecorrelatedModifiedBlackBody",
    "ModifiedBlackBodyLayers",
    "PowerLaw",
    "CurvedPowerLaw",
    "SpDust",
    "SpDustPol",
    "COLines",
    "CMBDipole",
}


def _files_of(config: dict, nside: int) -> tuple[list[str], bool]:
    """Template paths named in one preset's configuration, and whether that list is complete."""
    if "class" not in config:  # a preset made of several models
        parts = [_files_of(part, nside) for part in config.values() if isinstance(part, dict)]
        return [f for files, _ in parts for f in files], all(done for _, done in parts)
    available = config.get("available_nside")
    templates_nside = min(available, key=lambda n: abs(n - nside)) if available else nside
    files = []
    for value in config.values():
        if isinstance(value, str) and value.endswith(_FILE_SUFFIXES):
            value = value.replace("{nside}", str(templates_nside))
            if "{layer}" in value:
                files += [value.replace("{layer}", str(k + 1)) for k in range(int(config.get("num_layers", 1)))]
            else:
                files.append(value)
    if config["class"] == "COLines":  # read by the class itself, not named in presets.cfg
        co_nside = 512 if nside <= 512 else 2048
        files.append(f"co/HFI_CompMap_CO-Type1_{co_nside}_R2.00_ring.fits")
        if config.get("has_polarization", True):
            files += [f"co/psimap_dust90_{co_nside}.fits", f"co/gmap_dust90_{co_nside}.fits"]
        if config.get("include_high_galactic_latitude_clouds", False):
            files.append(f"co/mcmoleCO_HGL_{co_nside}.fits")
    complete = config["class"] in _LISTED_CLASSES and not any("{" in f for f in files)
    return files, complete


def _inventory(presets: Sequence[str], nside: int) -> tuple[list[str], bool]:
    known = _presets()
    presets = [str(p) for p in presets]
    unknown = [p for p in presets if p not in known]
    if unknown:
        raise ValueError(f"unknown PySM3 preset(s) {unknown}; PySM {_pysm_version()} has {sorted(known)}")
    parts = [_files_of(known[p], sht.check_nside(nside)) for p in presets]
    files = list(dict.fromkeys(f for part, _ in parts for f in part))
    return files, all(done for _, done in parts)


def pysm_template_files(presets: Sequence[str], nside: int) -> list[str]:
    """Relative paths of the template files PySM3 reads for ``presets`` at ``nside`` (as named in its data portal).

    For models that read further files themselves (WebSky CMB, CIB and radio sources, interpolating
    components) the list is incomplete; :class:`PySMComponent` still fails fast if one of those is missing.

    Raises
    ------
    ValueError
        For an unknown preset, listing the valid ones.
    """
    return _inventory(presets, nside)[0]


def _pysm_version() -> str:
    import pysm3

    return getattr(pysm3, "__version__", "?")


def _locate(filename: str) -> str | None:
    """Where PySM would find ``filename`` without downloading: a path, a data folder, or astropy's cache."""
    from astropy.utils.data import CacheMissingWarning, is_url_in_cache
    from pysm3.utils.data import DATAURL, RemoteData

    if os.path.exists(filename):
        return filename
    for folder in RemoteData().data_folders:
        path = os.path.join(folder, filename)
        if os.path.exists(path):
            return path
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", CacheMissingWarning)  # no cache folder yet: simply not cached
        return DATAURL + filename if is_url_in_cache(DATAURL + filename) else None


def _can_download(timeout: float = 3.0) -> bool:
    """True when astropy allows internet access and PySM's data portal accepts a connection."""
    from astropy.utils.data import conf
    from pysm3.utils.data import DATAURL

    if not conf.allow_internet:
        return False
    host = urlparse(DATAURL).hostname
    try:
        with socket.create_connection((host, 443), timeout=timeout):
            return True
    except OSError:
        return False


def _missing_message(presets: Sequence[str], missing: Sequence[str]) -> str:
    from pysm3.utils.data import DATAURL

    folder = os.environ.get("PYSM_LOCAL_DATA")
    where = f"PYSM_LOCAL_DATA={folder!r} does not hold them" if folder else "PYSM_LOCAL_DATA is not set"
    return (
        f"PySM3 templates for presets {list(presets)} are not available and cannot be downloaded here "
        f"(no internet access to {DATAURL}); {where}. Missing: {', '.join(missing)}. " + _how_to(missing[0])
    )


def _how_to(example: str) -> str:
    from pysm3.utils.data import DATAURL

    return (
        f"Either set PYSM_LOCAL_DATA=<folder> to a folder holding the files under the same relative paths "
        f"(e.g. <folder>/{example}), copied from {DATAURL}, or run once where PySM can download them "
        f"(astropy caches them), or use the 'synthetic' foreground backend, which needs no download."
    )


def check_pysm_templates(presets: Sequence[str], nside: int) -> None:
    """Raise :class:`PySMTemplatesMissing` now if a template of ``presets`` is missing and cannot be downloaded.

    Looks where PySM3 looks (absolute path, ``$PYSM_LOCAL_DATA``, PySM's predefined folders, astropy's
    download cache) without reading any map; only when something is missing does it test whether PySM's data
    portal can be reached (at most a few seconds).

    Parameters
    ----------
    presets : sequence of str
        PySM3 preset strings, e.g. ``["d1", "s1"]``.
    nside : int
    """
    missing = [f for f in pysm_template_files(presets, nside) if _locate(f) is None]
    if missing and not _can_download():
        raise PySMTemplatesMissing(_missing_message(presets, missing))


@contextlib.contextmanager
def _internet(allowed: bool):
    """Temporarily allow or forbid astropy downloads (so a missing file fails at once instead of after 90 s)."""
    from astropy.utils.data import conf

    with conf.set_temp("allow_internet", bool(allowed) and conf.allow_internet):
        yield


class PySMComponent(Component):
    """PySM3 preset models, summed, as one component.

    Parameters
    ----------
    presets : sequence of str
        PySM3 preset strings, e.g. ``["d1", "s1", "f1", "a1"]`` or ``["d9", "s4", "co1"]``.
    nside : int
    check : bool
        Check the templates first (:func:`check_pysm_templates`); ``False`` when the caller just did.

    Notes
    -----
    Building reads and regrids the templates (seconds); the first emission of each model class in a process
    compiles PySM's numba kernels (10-20 s).
    """

    def __init__(self, presets: Sequence[str], nside: int, *, check: bool = True):
        import pysm3

        self.presets = [str(p) for p in presets]
        if not self.presets:
            raise ValueError("give at least one PySM3 preset, e.g. ['d1', 's1']")
        self.nside = sht.check_nside(nside)
        if check:
            check_pysm_templates(self.presets, self.nside)
        files, complete = _inventory(self.presets, self.nside)
        # allow downloads only when something may be fetched and can be; otherwise a missing file fails at once
        online = (not complete or any(_locate(f) is None for f in files)) and _can_download()
        try:
            with _internet(online):
                self._sky = pysm3.Sky(nside=self.nside, preset_strings=self.presets)
        except URLError as err:  # a file PySM reads that presets.cfg does not name
            raise PySMTemplatesMissing(
                f"PySM3 could not read a template for presets {self.presets} ({err}). " + _how_to("pysm_2/...")
            ) from err

    def __repr__(self) -> str:
        return f"PySMComponent({self.presets}, nside={self.nside})"

    def emission(self, freq):
        """Stokes I, Q, U at ``freq`` (delta bandpass), shape (3, npix), float64, uK_RJ."""
        import astropy.units as u

        freq = freq if hasattr(freq, "unit") else float(freq) * u.GHz
        maps = self._sky.get_emission(freq.to(u.GHz))
        out = np.zeros((3, sht.npix(self.nside)))
        out[: maps.shape[0]] = maps.to_value(units.uK_RJ)
        return out << units.uK_RJ
