"""Shared fixtures of the B-mode tests."""

from __future__ import annotations

import numpy as np
import pytest


def _fake_templates(lmax, cosmology=None, cache=None):
    """Power-law stand-ins for CAMB's tensor (r = 1) and lensing BB templates, uK^2 (no CAMB in the fast tier)."""
    ell = np.arange(lmax + 1, dtype=float)
    tensor, lens = np.zeros(lmax + 1), np.zeros(lmax + 1)
    tensor[2:] = 0.1 / (ell[2:] * (ell[2:] + 1))
    lens[2:] = 2e-6 * 2 * np.pi / ell[2:] ** 0.5 / (ell[2:] + 1)
    return {"cl_tensor": tensor, "cl_lens": lens, "cosmology": {"fake": 1.0}}


@pytest.fixture(scope="module")
def no_camb():
    """Replace CAMB's BB templates by :func:`_fake_templates` for a whole test module."""
    mp = pytest.MonkeyPatch()
    mp.setattr("cosmobench.bmodes.dataset.bb_templates", _fake_templates)
    yield
    mp.undo()
