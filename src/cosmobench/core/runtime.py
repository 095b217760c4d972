"""One thread policy and one device policy for every task.

``threads``: ``"auto"`` (the default everywhere) means the cores this process may use (its CPU affinity, capped
by a cgroup CPU quota when one is set), so a run never starts more compute threads than it has cores; an integer
fixes it. :func:`apply_threads` applies it to torch, the BLAS/OpenMP pools (threadpoolctl) and ducc0 (through
``COSMOBENCH_THREADS``, which worker processes set to 1). ``device``: ``"auto"`` means CUDA when available, else
the CPU; anything else is a :class:`torch.device` string. :func:`compute_context` names what a float32 training's
exact numbers depend on beyond its settings (the device, torch's thread count, the CPU's vector instructions).
"""

from __future__ import annotations

import ctypes
import math
import os
import re
from pathlib import Path

__all__ = [
    "usable_cores",
    "resolve_threads",
    "apply_threads",
    "resolve_device",
    "compute_context",
    "retain_freed_memory",
]

M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3  # glibc's <malloc.h>
RETAINED_BLOCK_BYTES = 2**30  # blocks up to this size come from (and go back to) the process's heap
_USER_ALLOCATOR_SETTINGS = re.compile(r"glibc\.malloc\.(mmap|trim)_threshold")


def usable_cores() -> int:
    """Cores this process may run on: its CPU affinity, capped by a cgroup-v2 CPU quota if one is set."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    try:
        quota, period = Path("/sys/fs/cgroup/cpu.max").read_text().split()[:2]
        if quota != "max":
            cores = min(cores, max(1, math.floor(int(quota) / int(period))))
    except (OSError, ValueError):
        pass
    return max(1, cores)


def resolve_threads(threads: int | str | None = "auto") -> int:
    """The number of compute threads for ``threads`` (``"auto"``/None: :func:`usable_cores`, or
    ``$COSMOBENCH_THREADS`` when a parent process set it for its workers)."""
    if threads in (None, "auto"):
        env = os.environ.get("COSMOBENCH_THREADS")
        return int(env) if env else usable_cores()
    try:
        n = int(threads)
    except (TypeError, ValueError):
        raise ValueError(f"threads must be 'auto' or a positive integer, got {threads!r}") from None
    if n < 1:
        raise ValueError(f"threads must be 'auto' or a positive integer, got {threads!r}")
    return n


def apply_threads(threads: int | str | None = "auto") -> int:
    """Cap torch, BLAS/OpenMP and ducc0 at :func:`resolve_threads` threads for this process; return the cap."""
    n = resolve_threads(threads)
    os.environ["COSMOBENCH_THREADS"] = str(n)
    from threadpoolctl import threadpool_limits

    threadpool_limits(limits=n)
    import torch

    torch.set_num_threads(n)
    return n


def resolve_device(device: str | None = "auto"):
    """``"auto"``/None → CUDA when available, else CPU; otherwise ``torch.device(device)`` (checked).

    Raises
    ------
    ValueError
        An unknown device string, or CUDA asked for on a machine without it.
    """
    import torch

    if device in (None, "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(str(device))
    except RuntimeError:
        raise ValueError(f"unknown device {device!r}; use auto, cpu, cuda or cuda:N") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device={device!r} but CUDA is not available here; use device=auto or device=cpu")
    return dev


def compute_context(device) -> dict[str, str | int]:
    """What a training's float32 results depend on besides its settings and seed, for its record.

    Reductions in torch's CPU kernels are split across its threads and vectorised with the CPU's widest
    instructions, so the same training on another thread count or CPU family gives other bits (and, through
    the training's chaos, other scores); on one machine, at one thread count, it repeats bit for bit.

    Parameters
    ----------
    device : torch.device or str
        The training's device.

    Returns
    -------
    dict with ``device`` (str), ``threads`` (torch's intra-op threads, int), ``cpu_capability`` (the vector
    instructions torch's CPU kernels use, e.g. ``"AVX2"``, ``"AVX512"``) and ``torch`` (its version).
    """
    import torch

    return {
        "device": str(device),
        "threads": torch.get_num_threads(),
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "torch": torch.__version__,
    }


_retained: bool | None = None  # retain_freed_memory's outcome in this process


def retain_freed_memory() -> bool:
    """Keep freed memory blocks of up to 1 GiB in the process instead of returning them to the kernel (glibc).

    glibc serves each request above its largest ``mmap`` threshold (32 MB) with fresh pages from the kernel and
    hands them back when freed, so a training step whose activations are larger (the graph UNet's at nside
    128: 50-150 MB each) pays a page fault and a zeroing for every page of every activation, at every step.
    This raises the threshold to :data:`RETAINED_BLOCK_BYTES` and stops trimming the heap: freed activations
    are reused by the next step. The arithmetic is unchanged (bit for bit); the peak resident memory grows by
    what the heap cannot reuse (``benchmarks/bench_allocator.py``; docs/execution.md). Called on the CPU by
    :func:`cosmobench.core.train.fit` and by ``LearnedMethod.load`` (:mod:`cosmobench.cmb.learned`). Once applied
    it stays for the life of the process.

    Returns
    -------
    bool
        Whether the thresholds are (now) raised: False off glibc, and when the user set them
        (``MALLOC_MMAP_THRESHOLD_``, ``MALLOC_TRIM_THRESHOLD_`` or their ``GLIBC_TUNABLES``), which are left as
        they are; so ``MALLOC_MMAP_THRESHOLD_=33554432`` keeps glibc's behaviour.
    """
    global _retained
    if _retained is None:
        _retained = _raise_thresholds()
    return _retained


def _raise_thresholds() -> bool:
    if any(f"MALLOC_{name}_THRESHOLD_" in os.environ for name in ("MMAP", "TRIM")):
        return False
    if _USER_ALLOCATOR_SETTINGS.search(os.environ.get("GLIBC_TUNABLES", "")):
        return False
    try:
        libc = ctypes.CDLL(None)
    except OSError:
        return False
    if not hasattr(libc, "gnu_get_libc_version"):  # not glibc (musl's mallopt ignores these)
        return False
    return bool(libc.mallopt(M_MMAP_THRESHOLD, RETAINED_BLOCK_BYTES) and libc.mallopt(M_TRIM_THRESHOLD, 2**31 - 1))
