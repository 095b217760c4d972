"""The temperature guard's decision on one map and the FITS cards that record it in the predicted map's header.

``nilc_regress`` with ``guard_drop`` (:mod:`~cosmobench.cmb.methods.regress`) decides per map whether to correct
NILC's temperature; ``cmb separate`` and ``cmb apply`` write the decision into both headers of the prediction
(:meth:`GuardDecision.cards`) and ``cmb evaluate`` counts the corrected maps of a split from them
(:meth:`GuardDecision.from_header`). Kept apart from the regression so that reading it needs no network code.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

__all__ = ["GuardDecision"]


@dataclasses.dataclass(frozen=True)
class GuardDecision:
    """The guard's decision on one map (``nilc_regress`` with ``guard_drop``).

    Attributes
    ----------
    null : float
        Its statistic on the map's correction region (:func:`~cosmobench.cmb.methods.regress.null_rms`), uK_CMB.
    threshold : float
        The fitted threshold, uK_CMB.
    corrected : bool
        Whether the temperature was corrected (``null <= threshold``); False: it is NILC's.
    """

    null: float
    threshold: float
    corrected: bool

    def cards(self) -> dict[str, tuple]:
        """FITS cards recording the decision in the predicted map's header."""
        return {
            "GNULL": (self.null, "guard null rms, correction region [uK_CMB]"),
            "GTHRESH": (self.threshold, "guard threshold [uK_CMB]"),
            "TCORR": (self.corrected, "T corrected (F: NILC's T kept by the guard)"),
        }

    @classmethod
    def from_header(cls, header: Mapping[str, Any]) -> GuardDecision | None:
        """The decision :meth:`cards` wrote in a predicted map's header; None for a map without one."""
        if "TCORR" not in header:
            return None
        return cls(float(header["GNULL"]), float(header["GTHRESH"]), bool(header["TCORR"]))
