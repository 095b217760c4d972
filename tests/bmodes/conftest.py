"""B-mode tests run torch on one thread: their tensors are small, and OpenMP threads that spin on a busy shared
machine make them many times slower (measured: 1.4 s vs 17 s for one sampler run)."""

from __future__ import annotations

import pytest
import torch


@pytest.fixture(autouse=True)
def _one_torch_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
