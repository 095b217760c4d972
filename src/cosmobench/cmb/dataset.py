"""The on-disk layout of a CMB separation dataset, and its reader.

Layout (compatible with CMB-ML's; the reader also accepts CMB-ML's official ``Simulation/`` folder)::

    <root>/manifest.json                                  settings, channels, splits, versions, checksums
    <root>/Simulations/<Split>/simNNNN/obs_<band>_map.fits   observed channel, I or I,Q,U, uK_CMB, RING
    <root>/Simulations/<Split>/simNNNN/cmb_map_fid.fits      target: CMB with no beam, I,Q,U, uK_CMB
    <root>/Simulations/<Split>/simNNNN/foreground_I_map.fits  foreground intensity, no beam/noise, 2 bands
    <root>/Simulations/<Split>/simNNNN/theory_cls.npy        (4, lmax+1) C_ell TT,EE,BB,TE used, uK^2
    <root>/Simulations/<Split>/simNNNN/params.json           cosmology, seeds, file checksums (written last)
    <root>/<method>/<Split>/simNNNN/cmb_pred.fits            a method's prediction, I, uK_CMB
    <root>/<method>/<Split>/method.json                       the method's settings and output beam
    <root>/<method>/<Split>/stage.json                        the separate stage's record
    <root>/<method>/model/model.pt                            a learned method's trained model (+ stage.json)
    <root>/stage.json                                         the simulate stage's record

Every path is a pure function of its arguments. ``params.json`` is written after all other files of a
simulation, so its presence marks the simulation as complete.
"""

from __future__ import annotations

import re
from dataclasses import asdict
from pathlib import Path

import numpy as np

from ..core.io import CorruptFileError, read_healpix, read_json
from ..sky.sht import nside_of

__all__ = [
    "SPLITS",
    "CMBDataset",
    "sims_root",
    "sim_dir",
    "obs_path",
    "target_path",
    "foreground_path",
    "theory_path",
    "params_path",
    "pred_path",
    "pred_std_path",
    "method_info_path",
    "manifest_path",
    "pysm_label",
    "is_fixed_sky",
]

SPLITS = ("Train", "Valid", "Test")
_SIM_RE = re.compile(r"^sim(\d{4,})$")
_OBS_RE = re.compile(r"^obs_(\w+?)(?:GHz)?_map\.fits$")


PYSM_PREFIX = "pysm3:"


def pysm_label(presets) -> str:
    """The recorded foreground model of a PySM sky: ``pysm3:`` and its presets, e.g. ``pysm3:d1,s1,f1,a1``."""
    return PYSM_PREFIX + ",".join(str(p) for p in presets)


def is_fixed_sky(model: str | None) -> bool:
    """True for a foreground model that gives one fixed sky, the same in every simulation (PySM's presets)."""
    return bool(model) and model.startswith(PYSM_PREFIX)


def manifest_path(root: Path | str) -> Path:
    """``<root>/manifest.json``."""
    return Path(root) / "manifest.json"


def sims_root(root: Path | str) -> Path:
    """``<root>/Simulations``, or CMB-ML's ``<root>/Simulation`` when only that exists."""
    root = Path(root)
    plural, singular = root / "Simulations", root / "Simulation"
    return singular if singular.is_dir() and not plural.is_dir() else plural


def sim_dir(root: Path | str, split: str, i: int) -> Path:
    """Folder of simulation ``i`` of ``split``."""
    return sims_root(root) / split / f"sim{int(i):04d}"


def obs_path(root: Path | str, split: str, i: int, band: str) -> Path:
    """Observed map of one band: ``obs_<band>_map.fits``, or CMB-ML's ``obs_<band>GHz_map.fits`` where only that
    exists."""
    folder = sim_dir(root, split, i)
    plain, cmbml = folder / f"obs_{band}_map.fits", folder / f"obs_{band}GHz_map.fits"
    return cmbml if cmbml.is_file() and not plain.is_file() else plain


def target_path(root: Path | str, split: str, i: int) -> Path:
    """Target CMB map (no beam)."""
    return sim_dir(root, split, i) / "cmb_map_fid.fits"


def foreground_path(root: Path | str, split: str, i: int) -> Path:
    """Foreground intensity at the lowest and highest polarised band (for masks)."""
    return sim_dir(root, split, i) / "foreground_I_map.fits"


def theory_path(root: Path | str, split: str, i: int) -> Path:
    """Theory C_ell used for the simulation."""
    return sim_dir(root, split, i) / "theory_cls.npy"


def params_path(root: Path | str, split: str, i: int) -> Path:
    """Per-simulation parameters; its presence marks the simulation as complete."""
    return sim_dir(root, split, i) / "params.json"


def pred_path(root: Path | str, method: str, split: str, i: int) -> Path:
    """A method's predicted CMB map for one simulation."""
    return Path(root) / method / split / f"sim{int(i):04d}" / "cmb_pred.fits"


def pred_std_path(root: Path | str, method: str, split: str, i: int) -> Path:
    """The 1-sigma error map of a method's prediction for one simulation (methods that estimate it)."""
    return pred_path(root, method, split, i).with_name("cmb_pred_std.fits")


def method_info_path(root: Path | str, method: str, split: str) -> Path:
    """A method's settings and output beam, beside its predictions of ``split``."""
    return Path(root) / method / split / "method.json"


class CMBDataset:
    """Read access to a dataset written by :func:`cosmobench.cmb.simulate.simulate_dataset` or by CMB-ML.

    Parameters
    ----------
    root : path
        Dataset folder (holding ``manifest.json``, or CMB-ML's ``Simulation(s)/`` folder).

    Attributes
    ----------
    nside : int
    bands : list of str
        Band names, e.g. ``["30", "44", ..., "857"]``.
    channels : list of Channel
        Instrument channels of those bands.
    splits : dict of str to int
        Number of complete simulations per split.
    manifest : dict
        The manifest (empty for a CMB-ML dataset).
    """

    def __init__(self, root: Path | str):
        from ..sky.instrument import Channel, load_channels

        self.root = Path(root)
        if not self.root.is_dir():
            raise FileNotFoundError(f"dataset folder {self.root} does not exist; run `cosmobench cmb simulate` first")
        mpath = manifest_path(self.root)
        if mpath.is_file():
            self.manifest = read_json(mpath)
            self.nside = int(self.manifest["nside"])
            self.channels = [Channel(**c) for c in self.manifest["channels"]]
            self.bands = [c.band for c in self.channels]
            self._splits = list(self.manifest["splits"])
        else:
            self.manifest = {}
            self._splits = [s.name for s in sorted(sims_root(self.root).glob("*")) if s.is_dir()]
            if not self._splits:
                raise FileNotFoundError(
                    f"{self.root} holds neither manifest.json nor Simulation(s)/<split>/ folders; "
                    "point root= at a folder made by `cosmobench cmb simulate` or at CMB-ML's dataset"
                )
            sims = sorted(p for p in sims_root(self.root).glob("*/sim*/") if _SIM_RE.match(p.name))
            if not sims:
                raise FileNotFoundError(f"no simNNNN folders under {sims_root(self.root)}")
            empty = [p for p in sims if not any(p.glob("obs_*_map.fits"))]
            if empty:
                raise FileNotFoundError(
                    f"{empty[0]} holds no obs_<band>_map.fits ({len(empty)} such simulation folder(s) in "
                    f"{sims_root(self.root)}): an incomplete copy? Copy those folders again, or delete them"
                )
            first = sims[0]
            found = sorted(
                (m.group(1) for p in first.glob("obs_*_map.fits") if (m := _OBS_RE.match(p.name))), key=float
            )
            self.channels = load_channels(bands=found)
            self.bands = [c.band for c in self.channels]
            self.nside = nside_of(np.empty(_fits_npix(next(first.glob("obs_*_map.fits")))))

    def foreground_model(self, split: str) -> str | None:
        """Foreground model ``split`` was simulated with ("default", "alt", "filament", "custom", or
        ``pysm3:<presets>`` for PySM's fixed sky, :func:`pysm_label`); None if not recorded (CMB-ML's release).

        Manifests written before per-split models existed count as "default" with the synthetic backend; in
        those written before PySM skies were labelled, a PySM split gives ``pysm3:`` and the manifest's presets.
        """
        settings = self.manifest.get("settings", {})
        record = self.manifest.get("split_foregrounds", {}).get(split)
        if record is not None and record.get("model") is not None:
            return record["model"]
        backend = settings.get("foreground_backend")
        return {"synthetic": "default", "pysm3": pysm_label(settings.get("pysm_presets", []))}.get(backend)

    @property
    def splits(self) -> dict[str, int]:
        """Number of complete simulations per split."""
        return {s: len(self.sim_indices(s)) for s in self._splits}

    def sim_indices(self, split: str) -> list[int]:
        """Indices of the complete simulations of ``split``, sorted."""
        if split not in self._splits:
            raise ValueError(f"unknown split {split!r}; this dataset has {self._splits}")
        folder = sims_root(self.root) / split
        out = []
        for p in folder.glob("sim*"):
            m = _SIM_RE.match(p.name)
            if m and (not self.manifest or (p / "params.json").is_file()):
                out.append(int(m.group(1)))
        return sorted(out)

    def sim_dir(self, split: str, i: int) -> Path:
        """Folder of simulation ``i``."""
        return sim_dir(self.root, split, i)

    def load_obs(self, split: str, i: int, bands: list[str] | None = None) -> dict[str, np.ndarray]:
        """Observed maps, band -> ndarray (nfield, npix) float64 uK_CMB (CMB-ML's K_CMB files are rescaled)."""
        bands = self.bands if bands is None else list(bands)
        unknown = sorted(set(bands) - set(self.bands))
        if unknown:
            raise ValueError(f"bands {unknown} are not in this dataset; it has {self.bands}")
        return {b: _read_uk(obs_path(self.root, split, i, b)) for b in bands}

    def load_target(self, split: str, i: int) -> np.ndarray:
        """Target CMB with no beam, ndarray (nfield, npix) float64 uK_CMB (row 0 is I)."""
        return _read_uk(target_path(self.root, split, i))

    def load_foreground(self, split: str, i: int) -> np.ndarray:
        """Foreground intensity (no beam, no noise), ndarray (2, npix) uK_CMB at the bands in the manifest."""
        return _read_uk(foreground_path(self.root, split, i))

    def load_params(self, split: str, i: int) -> dict:
        """Per-simulation parameters (cosmology, seeds, foreground settings, checksums)."""
        return read_json(params_path(self.root, split, i))

    def theory_cls(self, split: str, i: int) -> np.ndarray:
        """Theory C_ell used for this simulation, ndarray (4, lmax+1) uK^2: TT, EE, BB, TE."""
        path = theory_path(self.root, split, i)
        try:
            return np.load(path)
        except ValueError as err:
            raise CorruptFileError(f"{path} is not a readable .npy file; delete the simulation and rerun") from err

    def channel(self, band: str) -> object:
        """The Channel of ``band``."""
        return self.channels[self.bands.index(band)]

    def describe(self) -> dict:
        """A short summary: nside, bands, splits."""
        return {
            "root": str(self.root),
            "nside": self.nside,
            "bands": self.bands,
            "splits": self.splits,
            "channels": [asdict(c) for c in self.channels],
        }


def _fits_npix(path: Path) -> int:
    from astropy.io import fits

    with fits.open(path) as hdul:
        hdr = hdul[1].header
        return int(hdr.get("NAXIS2", 0)) * int(hdr.get("TFORM1", "1E").rstrip("DEJK") or 1)


def _read_uk(path: Path) -> np.ndarray:
    """Read a map and return it in uK_CMB.

    CMB-ML's files are in K_CMB; a file in a brightness unit (``MJy/sr``, as Planck's 545 and 857 GHz maps,
    ``K_RJ``, ...) is converted at the frequency of its ``FREQ`` card (GHz) with
    :func:`cosmobench.sky.units.unit_factor`.
    """
    from astropy.io import fits

    from ..sky.units import unit_factor

    maps = np.atleast_2d(read_healpix(path, dtype=np.float64))
    try:
        with fits.open(path) as hdul:
            unit = str(hdul[1].header.get("TUNIT1", "uK_CMB")).strip()
            freq = hdul[1].header.get("FREQ")
    except OSError as err:
        raise CorruptFileError(f"{path} is not a readable FITS file ({err}); delete it and rerun") from err
    if unit in ("K_CMB", "K"):
        return maps * 1e6
    if unit in ("uK_CMB", "uK", ""):
        return maps
    try:
        return maps * unit_factor(float(freq), unit, "uK_CMB")
    except (TypeError, ValueError):
        raise CorruptFileError(
            f"{path} has unit {unit!r} and FREQ card {freq!r}: expected uK_CMB or K_CMB, or a unit such as MJy/sr "
            "or K_RJ with the map's frequency in GHz in a FREQ card"
        ) from None
