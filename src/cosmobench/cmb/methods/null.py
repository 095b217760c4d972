"""``zero``: the null separator, which predicts a map of zeros.

Its RMSE is the rms of the true CMB on the analysis mask at each common beam, its transfer 0: the score of a
method that predicts nothing. It is the floor a learned conditional mean approaches on a noise-dominated field:
where the data say little about the CMB (E and B at Planck-like depths, or any field on scales the noise
dominates) the mean squared error is lowest for a map shrunk towards zero, so a learned RMSE near this row's is
no separation, whatever its distance below NILC's (docs/cmb_methods.md, "What the mean means").
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .ilc import FIELDS

__all__ = ["ZeroMap"]


class ZeroMap:
    """The null separator (registry name ``zero``): zeros in uK_CMB, unbeamed, not band-limited.

    Parameters
    ----------
    fields : {"IQU", "I"}
        What :meth:`predict` returns: zeros for I, Q and U, or for the temperature only.
    """

    name = "zero"
    output_beam_arcmin = None

    def __init__(self, *, fields: str = "IQU") -> None:
        if fields not in FIELDS:
            raise ValueError(f"fields must be one of {list(FIELDS)}, got {fields!r}")
        self.fields = fields

    def fit(self, dataset: Any, out_dir: Path, *, train_split: str = "Train", val_split: str = "Valid") -> dict:
        """Nothing to learn; returns ``{}``."""
        return {}

    def output_lmax_for(self, nside: int) -> None:
        """None: a map of zeros has no band limit."""
        return None

    def predict(self, obs: dict[str, np.ndarray], channels: Sequence[Any]) -> np.ndarray:
        """Zeros shaped like the CMB map of the observed channels' grid.

        Parameters
        ----------
        obs : dict of str -> ndarray, shape (nfield, npix) or (npix,), uK_CMB
            Observed channels (only their number of pixels is read).
        channels : sequence of Channel
            Unused.

        Returns
        -------
        ndarray, float64, uK_CMB: shape (npix,) with ``fields="I"``, (3, npix) with ``fields="IQU"``.
        """
        if not obs:
            raise ValueError("no observed channels given: the null map takes its grid from them")
        npix = np.shape(next(iter(obs.values())))[-1]
        return np.zeros(npix) if self.fields == "I" else np.zeros((3, npix))
