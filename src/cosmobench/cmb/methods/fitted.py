"""Storage and input checks shared by the fitted linear correctors of NILC (``nilc_wiener``, ``nilc_regress``).

Both are "trained" like learned methods, but what they fit is a few float64 arrays: ``model.pt`` holds them as
tensors beside the run's config (``torch.save`` of tensors and plain values, read with ``weights_only``), and
both apply the NILC of the channels they were fitted on, which :func:`check_nilc_channels` enforces.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..learned import check_beams
from .nilc import NILC

__all__ = ["MODEL_FILE", "save_fitted", "load_fitted", "check_nilc_channels"]

MODEL_FILE = "model.pt"  # the file the train stage records (written last)


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
