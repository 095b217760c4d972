"""What the fitted linear correctors of NILC (``nilc_wiener``, ``nilc_regress``) share.

Both are "trained" like learned methods, but what they fit is a few float64 arrays: ``model.pt`` holds them as
tensors beside the run's config (``torch.save`` of tensors and plain values, read with ``weights_only``), and
both apply the NILC of the channels they were fitted on, which :func:`check_nilc_channels` enforces. Their common
settings (:class:`NILCCorrectorSettings`) and interface (:class:`NILCCorrector`: the NILC they correct, its output
beam and band limit, :meth:`~NILCCorrector.load`) are written here once.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ...core.executor import map_tasks
from ...core.io import check_writable
from ...core.settings import plain
from ...sky import sht
from ..learned import check_beams
from ..settings import EvaluateSettings
from .nilc import NILC
from .nilc_unet import NILC_METHOD, NILCResidualData, cache_nilc

__all__ = [
    "MODEL_FILE",
    "NILCCorrector",
    "NILCCorrectorSettings",
    "save_fitted",
    "load_fitted",
    "check_nilc_channels",
    "residual_rms",
]

MODEL_FILE = "model.pt"  # the file the train stage records (written last)
_FIELDS = ("IQU", "I")


@dataclasses.dataclass(frozen=True, kw_only=True)
class NILCCorrectorSettings:
    """Settings every fitted NILC corrector has (keyword-only; an unknown key raises ``TypeError``).

    Parameters
    ----------
    nilc : mapping
        Keyword settings of the :class:`~cosmobench.cmb.methods.nilc.NILC` whose output is corrected (the ``nilc``
        method's section of the configuration, as for ``nilc_unet``).
    fields : {"IQU", "I"}
        Correct and predict I, Q, U, or the temperature only.
    fsky : float
        Sky fraction of the fit's faint-foreground region (the evaluation's default, 0.8); 1 = the full sky.
    mask_smooth_deg : float
        FWHM (degrees) of the smoothing of the intensity before thresholding (the evaluation's).
    workers : int
        Processes for the NILC predictions of the training and validation splits and for the fit.
    progress : bool
        Progress bars.
    """

    nilc: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    fields: str = "IQU"
    fsky: float = EvaluateSettings.fsky
    mask_smooth_deg: float = EvaluateSettings.mask_smooth_deg
    workers: int = 1
    progress: bool = True

    def __post_init__(self):
        if not isinstance(self.nilc, Mapping):
            raise TypeError(f"nilc must be a mapping of NILC settings, got {type(self.nilc).__name__}")
        object.__setattr__(self, "nilc", plain(self.nilc))
        if self.fields not in _FIELDS:
            raise ValueError(f"fields must be one of {list(_FIELDS)}, got {self.fields!r}")
        if self.fields == "IQU" and self.nilc.get("fields", "IQU") != "IQU":
            raise ValueError(
                "fields=IQU corrects NILC's I, Q and U, but the nilc settings say "
                f"fields={self.nilc['fields']}; set methods.nilc.fields=IQU (or this method's fields=I)"
            )
        if not 0 < float(self.fsky) <= 1:
            raise ValueError(f"fsky must be in (0, 1], got {self.fsky}")
        if float(self.mask_smooth_deg) < 0:
            raise ValueError(f"mask_smooth_deg must be >= 0 degrees, got {self.mask_smooth_deg}")
        if int(self.workers) < 1:
            raise ValueError(f"workers must be >= 1, got {self.workers}")

    def as_dict(self) -> dict[str, Any]:
        """Plain-type dict (lists, not tuples), as stored in ``model.pt``."""
        return plain(dataclasses.asdict(self))


class NILCCorrector:
    """Base of the fitted NILC correctors: ``Method(**settings)``, the NILC they correct, :meth:`load`.

    Subclasses set ``name`` and ``Settings`` (a :class:`NILCCorrectorSettings`), implement ``fit`` and
    ``predict``, and restore what they fitted in :meth:`_restore`.
    """

    name: str
    Settings: type[NILCCorrectorSettings] = NILCCorrectorSettings
    uncertainty = False  # no predict_with_std
    corrects = NILC_METHOD  # the method whose cached maps of the training splits it reads (``cmb train`` makes them)

    def __init__(self, **settings: Any) -> None:
        self.settings = self.Settings(**settings)
        # the NILC of the corrected fields (its temperature is the same whatever its fields)
        self.nilc = NILC(**{**self.settings.nilc, "fields": self.settings.fields})
        self.output_beam_arcmin = self.nilc.output_beam_arcmin
        self.config: dict[str, Any] | None = None

    @property
    def fields(self) -> str:
        """Predicted fields, ``"I"`` or ``"IQU"``."""
        return self.settings.fields

    def output_lmax_for(self, nside: int) -> int:
        """Band limit of the output at ``nside``: NILC's."""
        return self.nilc.output_lmax_for(nside)

    def _restore(self, arrays: dict[str, np.ndarray], config: dict) -> None:
        """Set what :func:`load_fitted` read back (the fitted arrays and the run's config)."""
        raise NotImplementedError

    # the steps of ``fit`` both correctors take
    def _start_fit(
        self, dataset: Any, out_dir: Path, train_split: str, val_split: str | None
    ) -> tuple[list[int], list[int], NILCResidualData]:
        """Check the run folder and the splits, cache NILC of both; return their indices and the NILC view."""
        check_writable(out_dir)
        train_idx = dataset.sim_indices(train_split)
        if not train_idx:
            raise ValueError(f"split {train_split!r} of {dataset.root} holds no simulations to fit {self.name} on")
        val_idx = dataset.sim_indices(val_split) if val_split is not None else []
        s = self.settings
        cache_nilc(dataset, s.nilc, [train_split, val_split], workers=int(s.workers), progress=s.progress)
        return train_idx, val_idx, NILCResidualData(dataset, self.nilc)

    def _map(self, fn: Callable[[int], Any], indices: Sequence[int], what: str) -> list:
        """``fn`` of every simulation index, in order, over ``workers`` processes (a progress bar ``what``)."""
        s = self.settings
        executor = "processes" if s.workers > 1 else "serial"
        return map_tasks(
            fn,
            indices,
            executor=executor,
            workers=int(s.workers),
            desc=f"{what} {self.name}",
            unit="map",
            progress=s.progress,
        )

    def _validate(self, fn: Callable[[int], dict], val_idx: Sequence[int], keys: Sequence[str]) -> dict:
        """Mean over the validation maps of ``fn(i)[key]`` (lists of residual RMS: I, or I, Q, U, E, B), per key,
        as ``{key: {"I": ..., ...}}``; ``{key: None}`` without validation maps."""
        return self._mean_rms(self._map(fn, val_idx, "validate") if val_idx else [], keys)

    def _mean_rms(self, rows: Sequence[dict], keys: Sequence[str]) -> dict:
        """:meth:`_validate`'s means of already computed validation ``rows``; ``{key: None}`` without rows."""
        if not rows:
            return dict.fromkeys(keys)
        labels = ["I", "Q", "U", "E", "B"] if self.fields == "IQU" else ["I"]
        return {k: dict(zip(labels, np.mean([r[k] for r in rows], axis=0).tolist())) for k in keys}

    def _config(self, dataset: Any, train_split: str, val_split: str | None, n_train: int, n_val: int) -> dict:
        """The config entries both correctors record: method, settings, nside, NILC's channels and beams, splits."""
        channels = {c.band: c for c in dataset.channels}
        used = self.nilc.bands or [b for b in dataset.bands if b not in self.nilc.exclude_bands]
        return {
            "method": self.name,
            "settings": self.settings.as_dict(),
            "nside": int(dataset.nside),
            "nilc_fwhm_arcmin": {b: channels[b].fwhm_arcmin for b in used if b in channels},
            "train_split": train_split,
            "val_split": val_split if n_val else None,
            "dataset": str(Path(getattr(dataset, "root", "."))),
            "n_train_maps": n_train,
        }

    @classmethod
    def load(cls, out_dir: Path | str, *, device: str = "auto") -> NILCCorrector:
        """The fitted method from ``out_dir/model.pt`` (``device`` is accepted and unused: numpy on the CPU)."""
        arrays, config = load_fitted(out_dir, cls.name)
        method = cls(**config["settings"])
        method._restore(arrays, config)
        return method


def save_fitted(path: Path, arrays: Mapping[str, np.ndarray], config: dict) -> None:
    """Write ``model.pt``: each array as a float64 tensor under its name, and ``config``, atomically.

    Parameters
    ----------
    path : path
        The model file.
    arrays : mapping of str to ndarray
        What was fitted (e.g. ``{"filter": W_ell}``).
    config : dict
        The run's config (plain values); must hold ``method``.
    """
    import torch

    from ...core.train import save_state

    tensors = {k: torch.from_numpy(np.ascontiguousarray(a, dtype=np.float64)) for k, a in arrays.items()}
    save_state(path, {**tensors, "config": config})


def load_fitted(out_dir: Path | str, method: str) -> tuple[dict[str, np.ndarray], dict]:
    """Read ``out_dir/model.pt`` written by :func:`save_fitted` for ``method``.

    Returns
    -------
    arrays : dict of str to ndarray (float64)
    config : dict

    Raises
    ------
    FileNotFoundError
        No model file (fit first).
    ValueError
        The file holds another method's model.
    """
    from ...core.train import load_checkpoint

    path = Path(out_dir) / MODEL_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist; fit first with `cosmobench cmb train method={method}`")
    state = load_checkpoint(path)
    config = state.pop("config")
    if config.get("method") != method:
        raise ValueError(f"{path} holds a {config.get('method')!r} model, not {method!r}")
    return {k: v.double().numpy() for k, v in state.items()}, config


def check_nilc_channels(nilc: NILC, channels: Sequence[Any], config: Mapping[str, Any], what: str) -> None:
    """Refuse channels whose NILC differs from the one fitted on: other bands, or other beams.

    Parameters
    ----------
    nilc : NILC
        The NILC that is applied.
    channels : sequence of Channel
        The channels given.
    config : mapping
        The fit's config; ``nilc_fwhm_arcmin`` maps each band NILC combined in the fit to its beam (arcmin).
    what : str
        Subject of the error messages, e.g. ``"the filter was fitted"``.

    Raises
    ------
    ValueError
        Naming the bands or the beam that differ.
    """
    trained = config.get("nilc_fwhm_arcmin", {})
    given = nilc.bands or [str(c.band) for c in channels if str(c.band) not in nilc.exclude_bands]
    if trained and set(given) != set(trained):
        raise ValueError(
            f"{what} on the NILC of bands {sorted(trained)}, these maps give NILC the bands {sorted(given)}; give "
            "the same channels (or fit again on a dataset with these)"
        )
    check_beams(channels, trained, what)


def residual_rms(resid: np.ndarray, mask: np.ndarray, lmax: int, iter: int) -> list[float]:
    """RMS over ``mask > 0`` of I, or of I, Q, U, the E part and the B part (Q, U pooled) of a residual map.

    Parameters
    ----------
    resid : ndarray, shape (1, npix) or (3, npix), uK_CMB
        A residual map, band-limited at ``lmax``.
    mask : ndarray, shape (npix,)
        Pixels scored (> 0).
    lmax, iter : int
        Band limit and Jacobi iterations of the E/B analysis.

    Returns
    -------
    list of float, uK_CMB: ``[I]`` or ``[I, Q, U, E, B]``.
    """
    keep = mask > 0
    out = [float(np.sqrt(np.mean(resid[0, keep] ** 2)))]
    if len(resid) == 3:
        out += [float(np.sqrt(np.mean(resid[k, keep] ** 2))) for k in (1, 2)]
        alm = sht.map2alm(resid, lmax, iter)
        zero = np.zeros_like(alm[0])
        nside = sht.nside_of(resid)
        for comp in (1, 2):
            part = sht.alm2map(np.stack([zero, *(alm[c] if c == comp else zero for c in (1, 2))]), nside, lmax)[1:]
            out.append(float(np.sqrt(np.mean(part[:, keep] ** 2))))
    return out
