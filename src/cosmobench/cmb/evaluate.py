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
   (``theory_cls.npy``; where absent, CAMB's lensed TT for the cosmology in the simulation's ``params.json``,
   else for the Planck 2018 fiducial cosmology).

Outputs under ``out_dir`` (default ``<root>/results/<split>``; all written atomically): ``summary.json``,
``mask.fits``, ``<method>/<beam>/metrics.csv``, ``<method>/<beam>/spectra.npz``,
``<method>/<beam>/example_maps.npz``.
A method whose predictions, settings and protocol are unchanged since the last run is not scored again.
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
from cosmobench.cmb.spectra import Master, coupling_matrix, linear_bins
from cosmobench.core.executor import map_tasks
from cosmobench.core.io import atomic_path, read_healpix, read_json, write_healpix, write_json
from cosmobench.metrics import pixel_metrics, summarize
from cosmobench.sky import sht

__all__ = ["evaluate", "check_inputs", "beam_tag", "theory_tt", "METRIC_COLUMNS"]

METRIC_COLUMNS = ("mae", "rmse", "nrmse", "psnr", "rmse_ell_lo", "rmse_ell_hi", "rmse_lat", "rmse_fullsky")
_EXAMPLE_NSIDE = 256  # resolution at which one example simulation's maps are kept for the report's figures


def beam_tag(beam: str | float) -> str:
    """Folder/column name of a beam mode: ``"deconvolved"`` or e.g. ``"20.6arcmin"``."""
    fwhm = _beam_fwhm(beam)
    return "deconvolved" if fwhm is None else f"{fwhm:g}arcmin"


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
        and beam the mean, std, standard error and count of each metric.
    """
    from cosmobench.cmb.dataset import CMBDataset, pred_path

    ds = CMBDataset(root)
    out = Path(out_dir) if out_dir is not None else ds.root / "results" / split
    nside = ds.nside
    lmax, fwhms, indices, source_beams = check_inputs(ds, methods, split, beams, lmax, fsky, mask_path)

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
        "sims": indices,
    }
    mask = _analysis_mask(ds, split, indices, out, mask_path, fsky, mask_smooth_deg, settings)
    settings["fsky"] = masks.sky_fraction(mask)
    protocol = {k: v for k, v in settings.items() if k != "methods"}
    prints = {
        m: _fingerprint(protocol, m, source_beams[m], [pred_path(ds.root, m, split, i) for i in indices])
        for m in methods
    }
    todo = [m for m in methods if not _is_done(out, m, fwhms, prints[m])]
    if todo:
        task = functools.partial(
            _score_sim,
            root=str(ds.root),
            split=split,
            methods={m: source_beams[m] for m in todo},
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
        summary["methods"][m] = {"output_beam_arcmin": source_beams[m], "beams": {}}
        for tag in fwhms:
            rows = _read_csv(out / m / tag / "metrics.csv")
            summary["methods"][m]["beams"][tag] = {k: summarize([r[k] for r in rows]) for k in METRIC_COLUMNS}
    summary = _finite(summary)
    write_json(out / "summary.json", summary)
    return summary


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
    source_beams : dict
        Method -> the FWHM of its output beam (None = unbeamed).

    Raises
    ------
    ValueError, FileNotFoundError
        Naming the setting or file and the fix.
    """
    from cosmobench.cmb.dataset import method_info_path, pred_path

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
    source_beams = {}
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
        source_beams[m] = read_json(info_file).get("output_beam_arcmin")
        for i in indices:
            _check_prediction(pred_path(ds.root, m, split, i), m, split, nside)
    return lmax, fwhms, indices, source_beams


def _check_prediction(path: Path, method: str, split: str, nside: int) -> None:
    """Refuse a prediction with NaN/inf pixels or another pixel count, naming the file and the fix."""
    pred = read_healpix(path, field=0, dtype=np.float64)
    bad = int(np.count_nonzero(~np.isfinite(pred)))
    problem = f"has {bad} NaN or infinite pixel value(s)" if bad else None
    if pred.size != sht.npix(nside):
        problem = f"has {pred.size} pixels, the dataset {sht.npix(nside)} (nside {nside})"
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
        mean = sum(_mask_intensity(ds, split, i, settings["mask_source"]) for i in indices) / len(indices)
        mask = masks.threshold_mask(mean, fsky, smooth_deg=smooth_deg)
    write_healpix(cache, mask, unit="", column_names=["MASK"])
    write_json(meta, key)
    return mask


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


def theory_tt(ds: Any, split: str, i: int, lmax: int) -> np.ndarray:
    """Theory TT C_ell (uK^2, ell = 0..lmax at least) of simulation ``i``.

    ``theory_cls.npy`` when the simulation has one; else CAMB's lensed TT
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
        return ds.theory_cls(split, i)[0]
    cosmology = ds.load_params(split, i)["cosmology"] if source.endswith("params.json") else {}
    return _camb_tt(tuple(sorted(cosmology.items())), lmax)


@functools.lru_cache(maxsize=8)
def _camb_tt(cosmology: tuple, lmax: int) -> np.ndarray:
    from cosmobench.sky.cosmology import Cosmology, camb_spectra

    return camb_spectra(Cosmology(**dict(cosmology)), lmax)[0]


def _fingerprint(settings: dict, method: str, source_beam: float | None, preds: list[Path]) -> str:
    """Hash of the protocol settings, the method's output beam and its prediction files (size, mtime)."""
    h = hashlib.sha256(json.dumps([settings, method, source_beam], sort_keys=True, default=str).encode())
    for p in preds:
        st = p.stat()
        h.update(f"{p.name}:{st.st_size}:{st.st_mtime_ns};".encode())
    return h.hexdigest()


def _is_done(out: Path, method: str, fwhms: dict, fingerprint: str) -> bool:
    fp = out / method / "fingerprint.json"
    files = [out / method / t / f for t in fwhms for f in ("metrics.csv", "spectra.npz")]
    return fp.is_file() and read_json(fp).get("fingerprint") == fingerprint and all(f.is_file() for f in files)


@functools.lru_cache(maxsize=2)
def _estimators(mask_file: str, lmax: int, nbins: int, apod_deg: float, fwhms: tuple) -> tuple:
    """Binary mask, apodised weight and one MASTER estimator per beam (cached per worker process)."""
    mask = read_healpix(mask_file, field=0, dtype=np.float64)
    weight = masks.apodize(mask, apod_deg)
    coupling = coupling_matrix(weight, lmax)
    edges = linear_bins(2, lmax, nbins)
    est = {tag: Master(weight, lmax, edges, beam=sht.gauss_beam(f or 0.0, lmax), coupling=coupling) for tag, f in fwhms}
    return mask, est


def _transfer(source_fwhm: float | None, target_fwhm: float | None, lmax: int) -> np.ndarray:
    """b_target / b_source up to lmax; raises if the source beam is too small to deconvolve."""
    b_src = sht.gauss_beam(source_fwhm or 0.0, lmax)
    if b_src.min() < 1e-6:
        raise ValueError(
            f"deconvolving a {source_fwhm} arcmin beam to lmax={lmax} divides by {b_src.min():.1e}; lower lmax"
        )
    return sht.gauss_beam(target_fwhm or 0.0, lmax) / b_src


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
    """Metrics and spectra of one simulation for every method and beam: {(method, tag): {...}}."""
    from cosmobench.cmb.dataset import CMBDataset, pred_path

    ds = CMBDataset(root)
    mask, est = _estimators(mask_file, lmax, nbins, apod_deg, tuple(fwhms.items()))
    nside = sht.nside_of(mask)
    lat = masks.latitude_mask(nside, lat_cut_deg)
    low = (np.arange(lmax + 1) < ell_split).astype(float)
    theory = theory_tt(ds, split, i, lmax)
    if theory.shape[-1] <= lmax:
        raise ValueError(f"theory spectrum of {split} sim{i:04d} stops at ell={theory.shape[-1] - 1} < lmax={lmax}")
    t_alm = sht.map2alm(ds.load_target(split, i)[0], lmax, 3)
    truth = {}
    for tag, f in fwhms.items():
        t_band = sht.almxfl(t_alm, _transfer(None, f, lmax))
        t_raw = sht.alm2map(t_band, nside, lmax)
        t_map = masks.remove_monopole_dipole(t_raw, mask)
        truth[tag] = (t_band, t_raw, t_map, est[tag].pseudo_alm(t_map))
    out = {}
    for m, src in methods.items():
        p_alm = sht.map2alm(read_healpix(pred_path(root, m, split, i), field=0, dtype=np.float64), lmax, 3)
        for tag, f in fwhms.items():
            t_band, t_raw, t_map, t_pseudo = truth[tag]
            p_band = sht.almxfl(p_alm, _transfer(src, f, lmax))
            p_raw = sht.alm2map(p_band, nside, lmax)
            p_map = masks.remove_monopole_dipole(p_raw, mask)
            row = pixel_metrics(t_map, p_map, mask)
            resid = p_map - t_map
            # high-ell part from the alm (exact); the fitted monopole/dipole belong to the low-ell part
            r_high = sht.alm2map(sht.almxfl(p_band - t_band, 1.0 - low), nside, lmax)
            row["rmse_ell_lo"] = _rms(resid - r_high, mask)
            row["rmse_ell_hi"] = _rms(r_high, mask)
            row["rmse_lat"] = _rms(masks.remove_monopole_dipole(p_raw - t_raw, lat), lat)
            row["rmse_fullsky"] = _rms(masks.remove_monopole_dipole(p_raw - t_raw, np.ones(nside**2 * 12)), None)
            p_pseudo = est[tag].pseudo_alm(p_map)
            spectra = {
                "truth": est[tag].decouple(sht.alm2cl(t_pseudo)),
                "pred": est[tag].decouple(sht.alm2cl(p_pseudo)),
                "resid": est[tag].decouple(sht.alm2cl(p_pseudo - t_pseudo)),
                "cross": est[tag].decouple(sht.alm2cl(p_pseudo, t_pseudo)),
                "theory": est[tag].expected(theory),
            }
            entry = {"row": row, "spectra": spectra}
            if i == example:
                entry["maps"] = _example_maps(t_map, p_map, mask)
            out[m, tag] = entry
    return out


def _rms(m: np.ndarray, mask: np.ndarray | None) -> float:
    sel = m if mask is None else m[mask > 0]
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
        with atomic_path(folder / "metrics.csv") as tmp, open(tmp, "w", newline="") as fh:
            writer = csv.DictWriter(fh, fieldnames=["sim", *METRIC_COLUMNS])
            writer.writeheader()
            writer.writerows(rows)
        spectra = {
            k: np.stack([res[method, tag]["spectra"][k] for res in results])
            for k in ("truth", "pred", "resid", "cross", "theory")
        }
        with atomic_path(folder / "spectra.npz") as tmp, open(tmp, "wb") as fh:
            np.savez(fh, sims=np.asarray(indices), edges=edges, ell_eff=0.5 * (edges[:-1] + edges[1:] - 1), **spectra)
        maps = next(res[method, tag]["maps"] for res in results if "maps" in res[method, tag])
        with atomic_path(folder / "example_maps.npz") as tmp, open(tmp, "wb") as fh:
            np.savez(fh, sim=indices[0], **maps)
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
