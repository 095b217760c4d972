"""Shared fixtures: every test starts from seeded torch and single-threaded ducc0 where it matters."""

from __future__ import annotations

import os

import pytest

os.environ.setdefault("COSMOBENCH_THREADS", "2")


@pytest.fixture(autouse=True)
def _seed_torch():
    """Seed torch for every test so stochastic layers are reproducible (numpy draws use explicit generators)."""
    try:
        import torch
    except ImportError:  # pragma: no cover
        yield
        return
    torch.manual_seed(0)
    yield


def pytest_collection_modifyitems(config, items):
    """Skip ``gpu`` tests when CUDA is absent, even if selected with ``-m gpu``."""
    try:
        import torch

        has_cuda = torch.cuda.is_available()
    except ImportError:  # pragma: no cover
        has_cuda = False
    if not has_cuda:
        skip = pytest.mark.skip(reason="needs CUDA")
        for item in items:
            if "gpu" in item.keywords:
                item.add_marker(skip)
