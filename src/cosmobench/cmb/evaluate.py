"""``cosmobench cmb evaluate``: score every method's predictions with one fixed protocol.

Protocol (docs/cmb_evaluation.md), the same for the truth and every prediction:

1. **Mask**: a user FITS mask (binarised at 0.9 after resolution change), or the fraction ``fsky`` of the sky
   with the faintest foregrounds, from the mean foreground intensity of the split's simulations
   (``foreground_I_map.fits``) or, where the dataset has none (CMB-ML's release), from the mean absolute
   observed map of its highest-frequency channel (dust-dominated).
2. **Common beam**: each map goes to alm up to ``lmax`` (default 2 nside, like CMB-ML), is multiplied by
   b_target / b_source (b_source = the method's output beam from ``method.json``, none for the truth) and goes
   back to a map: all scored maps are band-limited to ``lmax``. Modes: ``"deconvolved"`` (b_target = 1),
   or a Gaussian FWHM in arcmin (20.6, 60).
3. **Monopole and dipole** fitted on the unmasked pixels and removed (truth and prediction separately).
4. **Pixel metrics** on unmasked pixels: MAE, RMSE, NRMSE, PSNR (truth-only range); also the residual RMS
   split at ``ell_split`` (below / from), at Galactic abs(b) > ``lat_cut_deg`` (no other mask) and full sky.
5. **Spectra**: binned MASTER D_b of truth, prediction, residual and truth x prediction with one apodised mask,
   the common beam deconvolved, and the MASTER expectation of each simulation's theory spectrum
   (``theory_cls.npy``; where absent, CAMB's lensed spectra for the cosmology in the simulation's ``params.json``,
   else for the Planck 2018 fiducial cosmology).
6. **Polarisation** (a method predicting I, Q, U, ``fields = "IQU"`` in its ``method.json``, on a polarised
   dataset): Q and U go through steps 2 and 5 with the T map (spin-2 transforms, no monopole/dipole removal):
   RMSE of Q, U and of the residual's E-part and B-part maps, the E -> B leakage ``eb_leak`` and spin-2 MASTER
   EE and BB spectra (:class:`~cosmobench.cmb.spectra.MasterPol`).
7. **Coverage** (a method with a per-pixel error, ``uncertainty`` true, ``cmb_pred_std.fits``): the fraction of
   pixels with abs(prediction - truth) <= k std at the method's own output beam and ``output_lmax`` (the frame
   its std refers to), for k in :data:`COVERAGE_LEVELS`, on the analysis mask and on the full sky.
8. **Filter-equalised RMSE** per field (T, E, B; :mod:`cosmobench.cmb.filtered`): from the split's spectra of
   step 5, the RMSE each prediction would have after the best isotropic linear filter per multipole bin, so that
   shrinking a noisy map towards zero (a Wiener filter) earns nothing; one value per split.

Outputs under ``out_dir`` (default ``<root>/results/<split>``; all written atomically): ``summary.json``,
``mask.fits``, ``<method>/<beam>/metrics.csv``, ``<method>/<beam>/spectra.npz``,
``<method>/<beam>/example_maps.npz``, ``<method>/coverage.csv`` (methods with a std).
A method whose predictions, std maps, ``method.json``, settings and protocol are unchanged since the last run is
not scored again. docs/cmb_evaluation.md defines every column.
"""

from __future__ import annotations

import csv
import functools
import hashlib
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from cosmobench.cmb import masks
from cosmobench.cmb.filtered import filtered_scores
from cosmobench.cmb.spectra import ESTIMATOR, Master, MasterPol, linear_bins
from cosmobench.core.executor import map_tasks
from cosmobench.core.io import atomic_path, read_healpix, read_json, write_csv, write_healpix, write_json
from cosmobench.metrics import pixel_metrics, summarize
from cosmobench.sky import sht

__all__ = [
    "evaluate",
    "check_inputs",
    "beam_tag",
    "theory_spectra",
    "theory_tt",
    "coverage_column",
    "guard_counts",
    "METRIC_COLUMNS",
    "POL_COLUMNS",
    "COVERAGE_COLUMNS",
    "COVERAGE_LEVELS",
    "COLUMNS",
    "split_threshold_mask",
]

#: temperature columns of ``metrics.csv`` (uK_CMB; ``nrmse`` none, ``psnr`` dB, ``resid_power_t`` uK^2,
#: ``transfer_t`` none)
METRIC_COLUMNS = (
    "mae",
    "rmse",
    "nrmse",
    "psnr",
    "rmse_ell_lo",
    "rmse_ell_hi",
    "rmse_lat",
    "rmse_fullsky",
    "resid_power_t",
    "transfer_t",
)
#: polarisation columns (uK_CMB; ``resid_power_*`` uK^2; ``transfer_*``, ``eb_leak`` none); NaN for a
#: temperature-only method
POL_COLUMNS = (
    "rmse_q",
    "rmse_u",
    "rmse_e",
    "rmse_b",
    "resid_power_e",
    "resid_power_b",
    "transfer_e",
    "transfer_b",
    "eb_leak",
)
#: error-bar multiples k at which the coverage is measured (``coverage.csv``)
COVERAGE_LEVELS = (0.5, 1.0, 1.5, 2.0, 2.5, 3.0)
#: coverage at 1 and 2 sigma on the analysis mask, T and Q/U pooled (fractions); NaN for a method without a std
COVERAGE_COLUMNS = ("cover1_t", "cover2_t", "cover1_p", "cover2_p")
COLUMNS = METRIC_COLUMNS + POL_COLUMNS + COVERAGE_COLUMNS
_EXAMPLE_NSIDE = 256  # resolution at which one example simulation's maps are kept for the report's figures


def beam_tag(beam: str | float) -> str:
    """Folder/column name of a beam mode: ``"deconvolved"`` or e.g. ``"20.6arcmin"``."""
    fwhm = _beam_fwhm(beam)
    return "deconvolved" if fwhm is None else f"{fwhm:g}arcmin"


def coverage_column(k: float, field: str, region: str = "mask") -> str:
    """Name of a coverage column: ``cover<k>_<field>`` (``"t"`` or ``"p"``), ``_fullsky`` on the full sky.

    ``coverage_column(1, "t")`` is ``"cover1_t"``; ``coverage_column(0.5, "p", "fullsky")`` is
    ``"cover0.5_p_fullsky"``.
    """
    return f"cover{k:g}_{field}" + ("" if region == "mask" else f"_{region}")


def _coverage_names() -> list[str]:
    return [coverage_column(k, f, r) for r in ("mask", "fullsky") for f in ("t", "p") for k in COVERAGE_LEVELS]


def _beam_fwhm(beam: str | float) -> float | None:
    if isinstance(beam, str) and beam.strip().lower() in ("deconvolved", "none", "0"):
        return None
    try:
        fwhm = float(beam)
    except (TypeError, ValueError):
        raise ValueError(f"beam {beam!r} must be 'deconvolved' or a Gaussian FWHM in arcmin (e.g. 20.6)") from None
    if fwhm < 0:
        raise ValueError(f"beam FWHM must be >= 0 arcmin, got {fwhm}")
    return fwhm or None


def evaluate(
    root: str | Path,
    *,
    methods: Sequence[str],
    split: str = "Test",
    beams: Sequence[str | float] = ("deconvolved", 20.6, 60.0),
    fsky: float = 0.8,
    mask_path: str | Path | None = None,
    mask_smooth_deg: float = 2.0,
    lmax: int | None = None,
    nbins: int = 25,
    apod_deg: float = 2.0,
    ell_split: int = 30,
    lat_cut_deg: float = 20.0,
    out_dir: str | Path | None = None,
    executor: str = "serial",
    workers: int = 1,
    progress: bool = True,
) -> dict:
    """Score the predictions of ``methods`` on ``split`` at every common beam in ``beams``.

    Parameters
    ----------
    root : path
        Dataset root (with ``<method>/<split>/simNNNN/cmb_pred.fits`` and ``<method>/method.json``).
    methods : sequence of str
        Method folders to score.
    split : str
        Split to score (CMB-ML: Test).
    beams : sequence of {"deconvolved", float}
        Common-beam modes: "deconvolved" or a Gaussian FWHM in arcmin.
    fsky : float
        Sky fraction kept by the foreground-threshold mask (ignored with ``mask_path``).
    mask_path : path, optional
        User mask (HEALPix FITS, 1 = keep), used instead of the threshold mask.
    mask_smooth_deg : float
        FWHM (degrees) of the smoothing of the foreground intensity before thresholding.
    lmax : int, optional
        Band limit of the beam transfer, the metrics and the spectra; 2 nside by default (CMB-ML's choice).
    nbins : int
        Number of linear multipole bins of the spectra, from ell = 2 to ``lmax``.
    apod_deg : float
        C1 apodisation scale of the mask for spectra, degrees.
    ell_split : int
        The residual RMS is also reported for ell < ell_split and ell >= ell_split.
    lat_cut_deg : float
        The residual RMS is also reported at abs(b) > lat_cut_deg (monopole and dipole removed there).
    out_dir : path, optional
        Results folder; ``<root>/results/<split>`` by default (one folder per split, which
        :func:`~cosmobench.cmb.compare.compare` finds).
    executor, workers
        See :func:`cosmobench.core.executor.map_tasks` (one task per simulation).
    progress : bool
        Show a progress bar.

    Returns
    -------
    dict
        The content of ``summary.json``: settings (including the split's ``foreground_model``), and per method
        its ``method.json`` facts (``output_beam_arcmin``, ``fields``, ``output_lmax``, ``uncertainty``), per beam
        the mean, std, standard error and count of each column of :data:`COLUMNS` (null where not applicable)
        and the filter-equalised RMSE of each field (:func:`~cosmobench.cmb.filtered.filtered_scores`: one value
        per split, jackknife ``se``), ``coverage``: the same for every column of ``coverage.csv`` (null for
        a method without a std), and ``guard``: :func:`guard_counts` (null for a method without a guard).
    """
    from cosmobench.cmb.dataset import CMBDataset, method_info_path

    ds = CMBDataset(root)
    out = Path(out_dir) if out_dir is not None else ds.root / "results" / split
    nside = ds.nside
    lmax, fwhms, indices, infos = check_inputs(ds, methods, split, beams, lmax, fsky, mask_path)

    settings = {
        "root": str(ds.root),
        "mask_source": _mask_source(ds, split, indices, mask_path),
        "theory": sorted({_theory_source(ds, split, i) for i in indices}),
        "split": split,
        "foreground_model": ds.foreground_model(split),
        "methods": list(methods),
        "nside": nside,
        "lmax": lmax,
        "beams": list(fwhms),
        "fsky_requested": None if mask_path else float(fsky),
        "mask_path": None if mask_path is None else str(mask_path),
        "mask_smooth_deg": float(mask_smooth_deg),
        "nbins": int(nbins),
        "apod_deg": float(apod_deg),
        "ell_split": int(ell_split),
        "lat_cut_deg": float(lat_cut_deg),
        "coverage_levels": list(COVERAGE_LEVELS),
        "sims": indices,
    }
    mask = _analysis_mask(ds, split, indices, out, mask_path, fsky, mask_smooth_deg, settings)
    settings["fsky"] = masks.sky_fraction(mask)
    protocol = {k: v for k, v in settings.items() if k != "methods"}
    prints = {
        m: _fingerprint(protocol, m, infos[m], _input_files(ds.root, m, split, indices, infos[m])) for m in methods
    }
    todo = [m for m in methods if not _is_done(out, m, fwhms, prints[m], infos[m]["uncertainty"])]
    if todo:
        task = functools.partial(
            _score_sim,
            root=str(ds.root),
            split=split,
            methods={m: infos[m] for m in todo},
            fwhms=fwhms,
            mask_file=str(out / "mask.fits"),
            lmax=lmax,
            nbins=int(nbins),
            apod_deg=float(apod_deg),
            ell_split=int(ell_split),
            lat_cut_deg=float(lat_cut_deg),
            example=indices[0],
        )
        results = map_tasks(
            task, indices, executor=executor, workers=workers, desc="evaluate", unit="sim", progress=progress
        )
        for m in todo:
            _write_method(out, m, fwhms, indices, results, prints[m], linear_bins(2, lmax, int(nbins)))
    summary = {"settings": settings, "methods": {}}
    for m in methods:
        trained = read_json(method_info_path(ds.root, m, split)).get("train_foregrounds")  # not in the fingerprint
        entry = summary["methods"][m] = {**infos[m], "train_foregrounds": trained, "beams": {}, "coverage": None}
        for tag in fwhms:
            rows = _read_csv(out / m / tag / "metrics.csv")
            entry["beams"][tag] = {k: summarize([r[k] for r in rows]) for k in COLUMNS}
            with np.load(out / m / tag / "spectra.npz") as spectra:
                entry["beams"][tag].update(filtered_scores(dict(spectra), fwhms[tag]))
        if infos[m]["uncertainty"]:
            rows = _read_csv(out / m / "coverage.csv")
            entry["coverage"] = {k: summarize([r[k] for r in rows]) for k in _coverage_names()}
        entry["guard"] = guard_counts(ds.root, m, split, indices)
    summary = _finite(summary)
    write_json(out / "summary.json", summary)
    return summary


def guard_counts(root: str | Path, method: str, split: str, indices: Sequence[int]) -> dict | None:
    """How many of a split's predictions had their temperature corrected by the method's guard, from the decision
    each prediction's header records (:class:`~cosmobench.cmb.methods.guard.GuardDecision`).

    Returns
    -------
    dict or None
        ``maps`` (predictions with a recorded decision), ``corrected`` (how many of them were corrected) and
        ``kept_base`` (the indices of the others, whose temperature is the base method's, e.g. NILC's); None when
        no prediction records a decision (a method without a guard).
    """
    from astropy.io import fits

    from cosmobench.cmb.dataset import pred_path
    from cosmobench.cmb.methods.guard import GuardDecision

    decisions = {i: GuardDecision.from_header(fits.getheader(pred_path(root, method, split, i), 1)) for i in indices}
    decided = {i: d for i, d in decisions.items() if d is not None}
    if not decided:
        return None
    kept = [int(i) for i, d in decided.items() if not d.corrected]
    return {"maps": len(decided), "corrected": len(decided) - len(kept), "kept_base": kept}


def check_inputs(
    ds: Any,
    methods: Sequence[str],
    split: str,
    beams: Sequence[str | float],
    lmax: int | None,
    fsky: float,
    mask_path: str | Path | None,
) -> tuple[int, dict, list[int], dict]:
    """Check the protocol settings and every prediction (present, finite, right size) before any work.

    Returns
    -------
    lmax : int
    fwhms : dict
        Beam tag -> target FWHM in arcmin (None = deconvolved).
    indices : list of int
        The simulations scored.
    infos : dict
        Method -> its ``method.json`` facts: ``output_beam_arcmin`` (FWHM of its output beam, arcmin; None =
        unbeamed), ``fields`` ("I" or "IQU"; "I" when not recorded), ``output_lmax`` (int or None) and
        ``uncertainty`` (bool; False when not recorded).

    Raises
    ------
    ValueError, FileNotFoundError
        Naming the setting or file and the fix.
    """
    from cosmobench.cmb.dataset import method_info_path, pred_path, pred_std_path

    nside = ds.nside
    lmax = 2 * nside if lmax is None else int(lmax)
    if not 2 <= lmax <= 3 * nside - 1:
        raise ValueError(f"lmax={lmax} must be between 2 and 3*nside-1 = {3 * nside - 1}")
    if not methods:
        raise ValueError("no method to evaluate: give methods=[...], e.g. [hilc, nilc]")
    if mask_path is None and not 0 < fsky <= 1:
        raise ValueError(f"fsky must be in (0, 1], got {fsky}")
    if mask_path is not None and not Path(mask_path).is_file():
        raise FileNotFoundError(f"mask_path {mask_path} does not exist; give a HEALPix FITS mask or mask_path=null")
    fwhms = {beam_tag(b): _beam_fwhm(b) for b in beams}
    if not fwhms:
        raise ValueError("beams is empty: give at least one of 'deconvolved', 20.6, 60.0")
    indices = ds.sim_indices(split)
    if not indices:
        raise ValueError(f"split {split!r} of {ds.root} has no finished simulation to score")
    infos = {}
    for m in methods:
        info_file = method_info_path(ds.root, m, split)
        if not info_file.is_file():
            raise FileNotFoundError(
                f"{info_file} is missing; run `cosmobench cmb separate method={m} separate.split={split}` first"
            )
        missing = [i for i in indices if not pred_path(ds.root, m, split, i).is_file()]
        if missing:
            raise FileNotFoundError(
                f"method {m!r} has no prediction for {len(missing)} of {len(indices)} {split} simulations "
                f"(first: sim{missing[0]:04d}); run `cosmobench cmb separate method={m} separate.split={split}`"
            )
        infos[m] = _method_info(info_file)
        stds = [pred_std_path(ds.root, m, split, i) for i in indices] if infos[m]["uncertainty"] else []
        absent = [f for f in stds if not f.is_file()]
        if absent:
            raise FileNotFoundError(
                f"{info_file} says method {m!r} estimates its error, but {len(absent)} of its {len(stds)} error "
                f"maps are missing (first: {absent[0]}); run "
                f"`cosmobench cmb separate method={m} separate.split={split} overwrite=true`"
            )
        for i in indices:
            _check_prediction(pred_path(ds.root, m, split, i), m, split, nside, infos[m]["fields"])
        for path in stds:
            _check_prediction(path, m, split, nside, infos[m]["fields"], std=True)
    return lmax, fwhms, indices, infos


def _method_info(path: Path) -> dict:
    """The facts of ``method.json`` the evaluation uses (with the defaults of files written before they existed)."""
    info = read_json(path)
    fields = info.get("fields", "I")
    if fields not in ("I", "IQU"):
        raise ValueError(f"{path}: fields must be 'I' or 'IQU', got {fields!r}")
    lmax = info.get("output_lmax")
    return {
        "output_beam_arcmin": info.get("output_beam_arcmin"),
        "fields": fields,
        "output_lmax": None if lmax is None else int(lmax),
        "uncertainty": bool(info.get("uncertainty", False)),
    }


def _input_files(root: Path, method: str, split: str, indices: list[int], info: dict) -> list[Path]:
    """A method's prediction files, then its error maps (``cmb_pred_std.fits``) when it has them."""
    from cosmobench.cmb.dataset import pred_path, pred_std_path

    files = [pred_path(root, method, split, i) for i in indices]
    return files + ([pred_std_path(root, method, split, i) for i in indices] if info["uncertainty"] else [])


def _check_prediction(path: Path, method: str, split: str, nside: int, fields: str, std: bool = False) -> None:
    """Refuse a prediction (or, ``std``, its error map) with NaN/inf pixels, another pixel count, another number
    of maps than ``fields`` (I or IQU), or a negative error, naming the file and the fix."""
    maps = np.atleast_2d(read_healpix(path, dtype=np.float64))
    bad = int(np.count_nonzero(~np.isfinite(maps)))
    problem = f"has {bad} NaN or infinite pixel value(s)" if bad else None
    if std and np.any(maps < 0):
        problem = f"has {int(np.count_nonzero(maps < 0))} negative standard deviation(s)"
    if maps.shape[0] != len(fields):
        problem = f"has {maps.shape[0]} map(s), but its method.json says the method predicts {fields}"
    if maps.shape[-1] != sht.npix(nside):
        problem = f"has {maps.shape[-1]} pixels, the dataset {sht.npix(nside)} (nside {nside})"
    if problem:
        raise ValueError(
            f"the prediction {path} {problem}; it cannot be scored. Predict again with "
            f"`cosmobench cmb separate method={method} separate.split={split} overwrite=true`"
        )


def _analysis_mask(
    ds: Any, split: str, indices: list[int], out: Path, mask_path: Any, fsky: float, smooth_deg: float, settings: dict
) -> np.ndarray:
    """The binary analysis mask, cached as ``out/mask.fits`` with the settings that made it."""
    key = {
        k: settings[k]
        for k in ("split", "nside", "fsky_requested", "mask_path", "mask_source", "mask_smooth_deg", "sims")
    }
    cache, meta = out / "mask.fits", out / "mask.json"
    if cache.is_file() and meta.is_file() and read_json(meta) == key:
        return read_healpix(cache, field=0, dtype=np.float64)
    if mask_path is not None:
        mask = masks.read_mask(mask_path, ds.nside)
    else:
        mask = split_threshold_mask(ds, split, indices, fsky=fsky, smooth_deg=smooth_deg)
    write_healpix(cache, mask, unit="", column_names=["MASK"])
    write_json(meta, key)
    return mask


def split_threshold_mask(ds: Any, split: str, indices: list[int], *, fsky: float, smooth_deg: float) -> np.ndarray:
    """The evaluation's threshold mask of a split: the faintest ``fsky`` of its mean foreground intensity.

    Parameters
    ----------
    ds : CMBDataset
    split : str
    indices : list of int
        Simulations averaged (their ``foreground_I_map.fits`` when all have one, else the highest-frequency
        observed map, as ``settings["mask_source"]`` records).
    fsky : float
        Sky fraction kept.
    smooth_deg : float
        FWHM of the smoothing of the mean intensity before thresholding, degrees.

    Returns
    -------
    ndarray, shape (npix,), 0/1 (:func:`cosmobench.cmb.masks.threshold_mask`).
    """
    source = _mask_source(ds, split, indices, None)
    mean = sum(_mask_intensity(ds, split, i, source) for i in indices) / len(indices)
    return masks.threshold_mask(mean, fsky, smooth_deg=smooth_deg)


_FOREGROUND_SOURCE = "foreground_I_map.fits"


def _highest_band(ds: Any) -> str:
    return max(ds.bands, key=lambda b: ds.channel(b).center_ghz)


def _mask_intensity(ds: Any, split: str, i: int, source: str) -> np.ndarray:
    """Absolute maps the threshold mask is made from: foreground intensity at two bands, or the highest channel."""
    if source == _FOREGROUND_SOURCE:
        return np.abs(np.atleast_2d(ds.load_foreground(split, i)))[:2]
    band = _highest_band(ds)
    return np.abs(ds.load_obs(split, i, [band])[band][:1])


def _mask_source(ds: Any, split: str, indices: list[int], mask_path: Any) -> str:
    """What the analysis mask is made from: the user's file, the foreground maps, or the highest-frequency map."""
    from cosmobench.cmb.dataset import foreground_path

    if mask_path is not None:
        return "mask_path"
    if all(foreground_path(ds.root, split, i).is_file() for i in indices):
        return _FOREGROUND_SOURCE
    return f"observed {_highest_band(ds)} GHz map"


def _theory_source(ds: Any, split: str, i: int) -> str:
    """Where the theory spectrum of simulation ``i`` comes from (see :func:`theory_tt`)."""
    from cosmobench.cmb.dataset import params_path, theory_path

    if theory_path(ds.root, split, i).is_file():
        return "theory_cls.npy"
    if params_path(ds.root, split, i).is_file() and "cosmology" in ds.load_params(split, i):
        return "CAMB, cosmology of params.json"
    return "CAMB, Planck 2018 fiducial cosmology"


def theory_spectra(ds: Any, split: str, i: int, lmax: int) -> np.ndarray:
    """Theory C_ell TT, EE, BB, TE (uK^2, ell = 0..lmax at least) of simulation ``i``, shape (4, >= lmax+1).

    ``theory_cls.npy`` when the simulation has one; else CAMB's lensed spectra
    (:func:`~cosmobench.sky.cosmology.camb_spectra`, computed once per cosmology and process) for the
    ``cosmology`` of its ``params.json``, or, with no such file (CMB-ML's release), for the Planck 2018 fiducial
    cosmology (:class:`~cosmobench.sky.cosmology.Cosmology` defaults).

    Parameters
    ----------
    ds : CMBDataset
    split : str
    i : int
        Simulation index.
    lmax : int
        Highest multipole needed.
    """
    source = _theory_source(ds, split, i)
    if source == "theory_cls.npy":
        return np.atleast_2d(ds.theory_cls(split, i))
    cosmology = ds.load_params(split, i)["cosmology"] if source.endswith("params.json") else {}
    return _camb_cls(tuple(sorted(cosmology.items())), lmax)


def theory_tt(ds: Any, split: str, i: int, lmax: int) -> np.ndarray:
    """Theory TT C_ell (uK^2, ell = 0..lmax at least) of simulation ``i``: row 0 of :func:`theory_spectra`."""
    return theory_spectra(ds, split, i, lmax)[0]


@functools.lru_cache(maxsize=8)
def _camb_cls(cosmology: tuple, lmax: int) -> np.ndarray:
    from cosmobench.sky.cosmology import Cosmology, camb_spectra

    return camb_spectra(Cosmology(**dict(cosmology)), lmax)


def _fingerprint(settings: dict, method: str, info: dict, files: list[Path]) -> str:
    """Hash of the protocol settings, the method's ``method.json`` facts, the scored columns and the spectrum
    estimator (results of a version that scored other columns, or with another estimator, are scored again) and
    its input files (size, mtime)."""
    protocol = [settings, method, info, COLUMNS, ESTIMATOR]
    h = hashlib.sha256(json.dumps(protocol, sort_keys=True, default=str).encode())
    for p in files:
        st = p.stat()
        h.update(f"{p.parent.name}/{p.name}:{st.st_size}:{st.st_mtime_ns};".encode())
    return h.hexdigest()


def _is_done(out: Path, method: str, fwhms: dict, fingerprint: str, coverage: bool) -> bool:
    fp = out / method / "fingerprint.json"
    files = [out / method / t / f for t in fwhms for f in ("metrics.csv", "spectra.npz")]
    files += [out / method / "coverage.csv"] if coverage else []
    return fp.is_file() and read_json(fp).get("fingerprint") == fingerprint and all(f.is_file() for f in files)


@functools.lru_cache(maxsize=2)
def _estimators(mask_file: str, lmax: int, nbins: int, apod_deg: float, fwhms: tuple, pol: bool) -> tuple:
    """Binary mask, apodised weight and one MASTER estimator per beam, temperature and (``pol``) polarisation
    (None otherwise); cached per worker process."""
    mask = read_healpix(mask_file, field=0, dtype=np.float64)
    weight = masks.apodize(mask, apod_deg)
    edges = linear_bins(2, lmax, nbins)
    beams = {tag: sht.gauss_beam(f or 0.0, lmax) for tag, f in fwhms}
    master = Master(weight, lmax, edges)  # the coupling inverted once, shared by the beams
    est = {tag: master.with_beam(b) for tag, b in beams.items()}
    est_pol = None
    if pol:
        master_pol = MasterPol(weight, lmax, edges)
        est_pol = {tag: master_pol.with_beam(b) for tag, b in beams.items()}
    return mask, est, est_pol


def _transfer(source_fwhm: float | None, target_fwhm: float | None, lmax: int) -> np.ndarray:
    """b_target / b_source up to lmax; raises if the source beam is too small to deconvolve."""
    b_src = sht.gauss_beam(source_fwhm or 0.0, lmax)
    if b_src.min() < 1e-6:
        raise ValueError(
            f"deconvolving a {source_fwhm} arcmin beam to lmax={lmax} divides by {b_src.min():.1e}; lower lmax"
        )
    return sht.beam_ratio(source_fwhm or 0.0, target_fwhm or 0.0, lmax)


def _score_sim(
    i: int,
    *,
    root: str,
    split: str,
    methods: dict,
    fwhms: dict,
    mask_file: str,
    lmax: int,
    nbins: int,
    apod_deg: float,
    ell_split: int,
    lat_cut_deg: float,
    example: int,
) -> dict:
    """Metrics and spectra of one simulation for every method and beam, ``{(method, tag): {...}}``, and the
    coverage of every method with an error map, ``{(method, "coverage"): {column: fraction}}``.

    ``methods`` maps each method to its ``method.json`` facts (:func:`check_inputs`). Maps are kept as
    (ncomp, ...) arrays: ncomp 1 (I) or, when the dataset and some method are polarised, 3 (I, Q, U).
    """
    from cosmobench.cmb.dataset import CMBDataset, pred_path, pred_std_path

    ds = CMBDataset(root)
    target = np.atleast_2d(ds.load_target(split, i))
    pol = target.shape[0] == 3 and any(info["fields"] == "IQU" for info in methods.values())
    mask, est, est_pol = _estimators(mask_file, lmax, nbins, apod_deg, tuple(fwhms.items()), pol)
    nside = sht.nside_of(mask)
    lat = masks.latitude_mask(nside, lat_cut_deg)
    low = (np.arange(lmax + 1) < ell_split).astype(float)
    theory = theory_spectra(ds, split, i, lmax)
    if theory.shape[-1] <= lmax:
        raise ValueError(f"theory spectrum of {split} sim{i:04d} stops at ell={theory.shape[-1] - 1} < lmax={lmax}")
    t_alm = sht.map2alm(target[: 3 if pol else 1], lmax, 3)
    truth = {}
    for tag, f in fwhms.items():
        t_band = sht.almxfl(t_alm, _transfer(None, f, lmax))
        t_raw = sht.alm2map(t_band, nside, lmax)
        t_map = masks.remove_monopole_dipole(t_raw[0], mask)
        truth[tag] = (t_band, t_raw, t_map, _pseudo_alm(est[tag], t_map, t_raw))
    out = {}
    natives: dict[tuple, np.ndarray] = {}
    for m, info in methods.items():
        pred = np.atleast_2d(read_healpix(pred_path(root, m, split, i), dtype=np.float64))
        ncomp = 3 if pol and info["fields"] == "IQU" else 1
        p_alm = sht.map2alm(pred[:ncomp], lmax, 3)
        cover = dict.fromkeys(COVERAGE_COLUMNS, np.nan)
        if info["uncertainty"]:
            std = np.atleast_2d(read_healpix(pred_std_path(root, m, split, i), dtype=np.float64))
            nf = min(pred.shape[0], target.shape[0])
            frame = (info["output_beam_arcmin"], info["output_lmax"], nf)
            if frame not in natives:
                natives[frame] = _native_truth(target[:nf], *frame[:2])
            out[m, "coverage"] = _coverage(pred[:nf] - natives[frame], std[:nf], mask)
            cover = {k: out[m, "coverage"][k] for k in COVERAGE_COLUMNS}
        for tag, f in fwhms.items():
            t_band, t_raw, t_map, t_pseudo = truth[tag]
            p_band = sht.almxfl(p_alm, _transfer(info["output_beam_arcmin"], f, lmax))
            p_raw = sht.alm2map(p_band, nside, lmax)
            p_map = masks.remove_monopole_dipole(p_raw[0], mask)
            p_pseudo = _pseudo_alm(est[tag], p_map, p_raw)
            row = pixel_metrics(t_map, p_map, mask)
            resid = p_map - t_map
            # high-ell part from the alm (exact); the fitted monopole/dipole belong to the low-ell part
            r_high = sht.alm2map(sht.almxfl(p_band[0] - t_band[0], 1.0 - low), nside, lmax)
            row["rmse_ell_lo"] = _rms(resid - r_high, mask)
            row["rmse_ell_hi"] = _rms(r_high, mask)
            row["rmse_lat"] = _rms(masks.remove_monopole_dipole(p_raw[0] - t_raw[0], lat), lat)
            row["rmse_fullsky"] = _rms(masks.remove_monopole_dipole(p_raw[0] - t_raw[0], np.ones(mask.size)), None)
            spectra = {
                "truth": est[tag].decouple(sht.alm2cl(t_pseudo[0])),
                "pred": est[tag].decouple(sht.alm2cl(p_pseudo[0])),
                "resid": est[tag].decouple(sht.alm2cl(p_pseudo[0] - t_pseudo[0])),
                "cross": est[tag].decouple(sht.alm2cl(p_pseudo[0], t_pseudo[0])),
                "theory": est[tag].expected(theory[0]),
            }
            row["resid_power_t"] = float(np.mean(spectra["resid"]))
            row["transfer_t"] = _transfer_ratio(spectra["cross"], spectra["truth"])
            if ncomp == 3:
                pol_row, pol_spectra = _pol_scores(
                    (t_band[1:], t_raw[1:], t_pseudo[1:]),
                    (p_band[1:], p_raw[1:], p_pseudo[1:]),
                    est_pol[tag],
                    theory,
                    mask,
                )
                row.update(pol_row)
                spectra.update(pol_spectra)
            else:
                row.update(dict.fromkeys(POL_COLUMNS, np.nan))
            row.update(cover)
            entry = {"row": row, "spectra": spectra}
            if i == example:
                entry["maps"] = _example_maps(t_map, p_map, mask)
            out[m, tag] = entry
    return out


def _pseudo_alm(est: Master, t_map: np.ndarray, raw: np.ndarray) -> np.ndarray:
    """Pseudo alm (ncomp, nalm) of the scored maps: T (monopole and dipole removed) and, with 3 rows, Q, U."""
    return np.atleast_2d(est.pseudo_alm(np.vstack([t_map, raw[1:]]) if raw.shape[0] == 3 else t_map))


def _pol_scores(truth: tuple, pred: tuple, est: MasterPol, theory: np.ndarray, mask: np.ndarray) -> tuple[dict, dict]:
    """Polarisation columns and EE/BB spectra of one prediction at one common beam.

    Parameters
    ----------
    truth, pred : tuple
        (E, B alm (2, nalm) at the common beam, Q, U maps (2, npix) synthesised from them, pseudo E, B alm of the
        masked Q, U maps (2, nalm)).
    est : MasterPol
        Spin-2 estimator of the common beam.
    theory : ndarray, shape (4, >= lmax+1)
        Theory C_ell TT, EE, BB, TE.
    mask : ndarray, shape (npix,)
        Analysis mask (1 = scored).

    Returns
    -------
    row : dict
        ``rmse_q``, ``rmse_u``, ``rmse_e``, ``rmse_b`` (uK_CMB), ``resid_power_e``, ``resid_power_b`` (uK^2),
        ``transfer_e``, ``transfer_b`` and ``eb_leak`` (docs/cmb_evaluation.md).
    spectra : dict
        Binned D_b (nbins,) in uK^2: ``{truth,pred,resid,cross,theory}_{ee,bb}`` and ``cross_eb`` (true E x
        predicted B).
    """
    (t_band, t_qu, t_pseudo), (p_band, p_qu, p_pseudo) = truth, pred
    d_qu = p_qu - t_qu
    d_e = p_band[0] - t_band[0]
    zero = np.zeros_like(d_e)
    e_part = sht.alm2map(np.stack([zero, d_e, zero]), sht.nside_of(d_qu), est.lmax)[1:]
    pairs = [(t_pseudo, None), (p_pseudo, None), (p_pseudo - t_pseudo, None), (t_pseudo, p_pseudo)]
    d_truth, d_pred, d_resid, d_cross = est.decouple(np.stack([est.pseudo_cl(a1, a2) for a1, a2 in pairs]))
    flat = np.zeros_like(theory[1])
    d_theory = est.expected(np.stack([theory[1], flat, flat, theory[2]]))
    row = {
        "rmse_q": _rms(d_qu[0], mask),
        "rmse_u": _rms(d_qu[1], mask),
        "rmse_e": _rms(e_part, mask),
        "rmse_b": _rms(d_qu - e_part, mask),
        "resid_power_e": float(np.mean(d_resid[0])),
        "resid_power_b": float(np.mean(d_resid[3])),
        "transfer_e": _transfer_ratio(d_cross[0], d_truth[0]),
        "transfer_b": _transfer_ratio(d_cross[3], d_truth[3]),
        "eb_leak": float(np.sum(d_cross[1]) / np.sum(d_truth[0])),
    }
    named = {"truth": d_truth, "pred": d_pred, "resid": d_resid, "cross": d_cross, "theory": d_theory}
    spectra = {f"{k}_{s}": v[j] for k, v in named.items() for s, j in (("ee", 0), ("bb", 3))}
    spectra["cross_eb"] = d_cross[1]
    return row, spectra


def _transfer_ratio(cross: np.ndarray, truth: np.ndarray) -> float:
    """Sum over bins of D_b(prediction x truth) / sum of D_b(truth x truth): the fraction of the true CMB's
    amplitude the prediction keeps (1 = unbiased; below 1 = a map shrunk towards zero, as a Wiener filter)."""
    return float(np.sum(cross) / np.sum(truth))


def _native_truth(target: np.ndarray, fwhm: float | None, lmax: int | None) -> np.ndarray:
    """The truth (nf, npix) in a method's output frame: smoothed by its output beam (FWHM arcmin) and band-limited
    at its ``output_lmax`` (at most 3 nside - 1); the unchanged truth for an unbeamed, unlimited output."""
    if fwhm is None and lmax is None:
        return target
    nside = sht.nside_of(target)
    lmax = sht.default_lmax(nside) if lmax is None else min(lmax, sht.default_lmax(nside))
    alm = sht.almxfl(sht.map2alm(target, lmax, 3), sht.gauss_beam(fwhm or 0.0, lmax))
    return sht.alm2map(alm, nside, lmax)


def _coverage(resid: np.ndarray, std: np.ndarray, mask: np.ndarray) -> dict:
    """Fraction of pixels with abs(resid) <= k std for every k of :data:`COVERAGE_LEVELS`.

    Parameters
    ----------
    resid, std : ndarray, shape (nf, npix)
        Prediction minus truth in the method's output frame and the method's 1-sigma error, uK_CMB; nf 1 (T) or
        3 (T, Q, U: Q and U pooled into one "p" fraction).
    mask : ndarray, shape (npix,)
        Analysis mask (1 = scored).

    Returns
    -------
    dict
        :func:`coverage_column` -> fraction (NaN for "p" when nf is 1), on the mask and on the full sky.
    """
    within = np.abs(resid)[None] <= np.asarray(COVERAGE_LEVELS)[:, None, None] * std[None]
    out = {}
    for region, keep in (("mask", mask > 0), ("fullsky", np.ones(mask.size, dtype=bool))):
        for field, rows in (("t", within[:, :1]), ("p", within[:, 1:3])):
            frac = rows[..., keep].mean(axis=(1, 2)) if rows.shape[1] else np.full(len(COVERAGE_LEVELS), np.nan)
            out.update({coverage_column(k, field, region): float(v) for k, v in zip(COVERAGE_LEVELS, frac)})
    return out


def _rms(m: np.ndarray, mask: np.ndarray | None) -> float:
    """RMS over the pixels of ``mask`` (all if None), pooled over the leading axes of ``m`` (..., npix)."""
    sel = m if mask is None else m[..., mask > 0]
    return float(np.sqrt(np.mean(sel**2)))


def _example_maps(truth: np.ndarray, pred: np.ndarray, mask: np.ndarray) -> dict:
    import healpy as hp

    nside = sht.nside_of(truth)
    lo = min(nside, _EXAMPLE_NSIDE)
    maps = {"truth": truth, "pred": pred, "mask": mask}
    return {k: (hp.ud_grade(v, lo) if lo != nside else v).astype(np.float32) for k, v in maps.items()}


def _write_method(
    out: Path, method: str, fwhms: dict, indices: list[int], results: list[dict], fp: str, edges: np.ndarray
) -> None:
    for tag in fwhms:
        folder = out / method / tag
        rows = [{"sim": i, **res[method, tag]["row"]} for i, res in zip(indices, results)]
        write_csv(folder / "metrics.csv", rows, ["sim", *COLUMNS])
        keys = results[0][method, tag]["spectra"]
        spectra = {k: np.stack([res[method, tag]["spectra"][k] for res in results]) for k in keys}
        with atomic_path(folder / "spectra.npz") as tmp, open(tmp, "wb") as fh:
            np.savez(fh, sims=np.asarray(indices), edges=edges, ell_eff=0.5 * (edges[:-1] + edges[1:] - 1), **spectra)
        maps = next(res[method, tag]["maps"] for res in results if "maps" in res[method, tag])
        with atomic_path(folder / "example_maps.npz") as tmp, open(tmp, "wb") as fh:
            np.savez(fh, sim=indices[0], **maps)
    if (method, "coverage") in results[0]:
        rows = [{"sim": i, **res[method, "coverage"]} for i, res in zip(indices, results)]
        write_csv(out / method / "coverage.csv", rows, ["sim", *_coverage_names()])
    write_json(out / method / "fingerprint.json", {"fingerprint": fp})


def _read_csv(path: Path) -> list[dict]:
    with open(path, newline="") as fh:
        return [{k: float(v) for k, v in row.items()} for row in csv.DictReader(fh)]


def _finite(obj: Any) -> Any:
    """Replace non-finite floats (e.g. PSNR of a perfect map) by None so the JSON stays standard."""
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_finite(v) for v in obj]
    if isinstance(obj, float) and not np.isfinite(obj):
        return None
    return obj
