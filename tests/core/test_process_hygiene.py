"""Process hygiene: workers die with their parent, Ctrl-C ends a pool within 2 s, identical trainings give
byte-identical checkpoints, created files honour the umask, thread and device policies."""

from __future__ import annotations

import os
import platform
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import psutil
import pytest
import torch

# a parent that starts a 2-worker pool of long sleeps, then waits
_POOL = textwrap.dedent(
    """
    import time
    from cosmobench.core.executor import map_tasks
    map_tasks(time.sleep, [60, 60, 60], executor="processes", workers=2, progress=False)
    """
)


def _start_pool() -> tuple[subprocess.Popen, list[psutil.Process]]:
    # a terminal's default SIGINT handling: pytest-xdist workers ignore SIGINT, and children inherit that
    parent = subprocess.Popen(
        [sys.executable, "-c", _POOL],
        stderr=subprocess.PIPE,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    deadline = time.time() + 60
    while time.time() < deadline:  # the pool's two workers (spawn also starts a resource tracker)
        kids = [p for p in psutil.Process(parent.pid).children() if "resource_tracker" not in " ".join(p.cmdline())]
        if len(kids) >= 2:
            time.sleep(1.0)  # let them import and pick up their tasks
            return parent, kids
        time.sleep(0.1)
    parent.kill()
    raise AssertionError("the pool's workers did not start")


def test_workers_die_when_the_parent_is_killed():
    parent, workers = _start_pool()
    parent.kill()  # kill -9: no cleanup code runs in the parent
    parent.wait()
    gone, alive = psutil.wait_procs(workers, timeout=5)
    for p in alive:
        p.kill()
    assert not alive, f"{len(alive)} worker(s) outlived their parent"


def test_ctrl_c_ends_the_pool_within_two_seconds():
    parent, workers = _start_pool()
    t0 = time.perf_counter()
    parent.send_signal(signal.SIGINT)
    parent.wait(timeout=10)
    gone, alive = psutil.wait_procs(workers, timeout=max(0.1, 2.0 - (time.perf_counter() - t0)))
    elapsed = time.perf_counter() - t0
    for p in alive:
        p.kill()
    assert not alive and elapsed < 2.0, f"{len(alive)} workers alive after {elapsed:.1f} s"


def test_identical_trainings_give_byte_identical_checkpoints(tmp_path):
    from cosmobench.core.train import fit

    x = torch.from_numpy(np.random.default_rng(0).standard_normal((64, 3)).astype(np.float32))
    y = x.sum(1, keepdim=True)

    def train(folder):
        torch.manual_seed(0)
        model = torch.nn.Linear(3, 1)
        fit(
            model,
            (x, y),
            (x, y),
            loss_fn=lambda m, b: ((m(b[0]) - b[1]) ** 2).mean(),
            epochs=3,
            ckpt=folder / "last.pt",
            device="cpu",
            progress=False,
        )
        return (folder / "best.pt").read_bytes()

    assert train(tmp_path / "a") == train(tmp_path / "b")


def test_created_files_honour_the_umask(tmp_path):
    from cosmobench.core.io import write_json

    old = os.umask(0o022)
    try:
        write_json(tmp_path / "a.json", {"x": 1})
    finally:
        os.umask(old)
    assert (tmp_path / "a.json").stat().st_mode & 0o777 == 0o644


def test_thread_and_device_policies(monkeypatch):
    from cosmobench.core.runtime import resolve_device, resolve_threads, usable_cores

    monkeypatch.delenv("COSMOBENCH_THREADS", raising=False)
    assert resolve_threads("auto") == usable_cores() <= len(os.sched_getaffinity(0))
    assert resolve_threads(3) == 3
    for bad in (0, "many", -1):
        with pytest.raises(ValueError, match="threads must be"):
            resolve_threads(bad)
    assert resolve_device("cpu").type == "cpu"
    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    with pytest.raises(ValueError, match="unknown device"):
        resolve_device("gpu0")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="CUDA is not available"):
            resolve_device("cuda")


# page faults of touching a 128 MB block again after freeing it, after a CPU training (or without its allocator switch)
_REFAULTS = textwrap.dedent(
    """
    import resource
    import numpy as np
    import torch
    from cosmobench.core import runtime
    from cosmobench.core.train import fit
    assert runtime._retained is None
    x = torch.ones(8, 2)
    loss = lambda m, b: m(b[0]).sum()
    fit(torch.nn.Linear(2, 1), (x, x[:, :1]), loss_fn=loss, epochs=1, device="cpu", progress=False)
    block = np.ones(2**24)
    del block
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    block = np.ones(2**24)
    print(runtime._retained, resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
    """
)


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="glibc's allocator")
def test_training_keeps_freed_memory_for_reuse():
    """A CPU training (fit) applies retain_freed_memory: a freed 128 MB block then comes back without faulting its
    pages in from the kernel again; a user's own glibc threshold setting is left alone (and keeps the faults)."""

    def run(env: dict) -> tuple[str, int]:
        out = subprocess.run([sys.executable, "-c", _REFAULTS], capture_output=True, text=True, check=True, env=env)
        applied, faults = out.stdout.split()
        return applied, int(faults)

    env = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_") and k != "GLIBC_TUNABLES"}
    retained = run(env)
    default = run(env | {"MALLOC_MMAP_THRESHOLD_": str(32 * 2**20)})
    assert retained[0] == "True" and default[0] == "False"
    assert default[1] >= 64  # 128 MB in pages of at most 2 MB: fresh pages from the kernel
    assert retained[1] < default[1] / 10
