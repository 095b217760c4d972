"""Map a function over work items: serially, in local processes, or on a Dask cluster.

The function must be idempotent (it skips work whose outputs already exist) and picklable (a module-level
function or a :func:`functools.partial` of one). Results come back in the order of ``items`` whatever the
executor, so nothing downstream depends on the worker count or on which task finished first.
"""

from __future__ import annotations

import multiprocessing
import os
import signal
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from tqdm.auto import tqdm

__all__ = ["EXECUTORS", "map_tasks"]

T = TypeVar("T")
EXECUTORS = ("serial", "processes", "dask")
_EXIT_WAIT_S = 10.0  # how long finished workers get to exit by themselves before the pool terminates them


def map_tasks(
    fn: Callable[[T], Any],
    items: Sequence[T],
    *,
    executor: str = "serial",
    workers: int = 1,
    scheduler_address: str | None = None,
    desc: str = "",
    unit: str = "task",
    progress: bool = True,
) -> list[Any]:
    """Apply ``fn`` to every item and return the results in item order.

    Parameters
    ----------
    fn : callable
        Called once per item; must be picklable for ``processes`` and ``dask``.
    items : sequence
        Work items (small, picklable descriptions of the work, not the data).
    executor : {"serial", "processes", "dask"}
        ``serial`` runs in this process; ``processes`` uses a local process pool of ``workers``;
        ``dask`` uses a Dask ``LocalCluster`` of ``workers`` single-threaded workers, or joins the
        scheduler at ``scheduler_address`` (e.g. ``tcp://10.0.0.1:8786``, or one started by dask-jobqueue).
    workers : int
        Number of parallel workers (ignored by ``serial`` and when joining a scheduler).
    scheduler_address : str, optional
        Address of a running Dask scheduler.
    desc, unit : str
        Progress-bar label and unit; the bar shows items/s and the ETA.
    progress : bool
        Show the progress bar.

    Returns
    -------
    list
        ``[fn(item) for item in items]``.
    """
    if executor not in EXECUTORS:
        raise ValueError(f"unknown executor {executor!r}; expected one of {list(EXECUTORS)}")
    if int(workers) < 1:
        raise ValueError(f"workers must be >= 1, got {workers}")
    items = list(items)
    results: list[Any] = [None] * len(items)
    bar = tqdm(total=len(items), desc=desc, unit=unit, disable=not progress or not items, dynamic_ncols=True)
    with bar:
        if executor == "serial" or (executor == "processes" and workers == 1) or not items:
            for i, item in enumerate(items):
                results[i] = fn(item)
                bar.update()
        elif executor == "processes":
            _map_processes(fn, items, results, bar, workers)
        else:
            _map_dask(fn, items, results, bar, workers, scheduler_address)
    return results


def _single_threaded() -> None:
    """Give each worker process one thread of BLAS/OpenMP/ducc0, so workers do not oversubscribe cores."""
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "COSMOBENCH_THREADS"):
        os.environ[var] = "1"


def _worker_init(parent: int) -> None:
    """Worker set-up: one thread, Ctrl-C left to the parent, and exit as soon as the parent is gone.

    A watchdog thread polls the parent's pid (every 0.2 s), so workers never outlive a parent killed with
    ``kill -9`` and never keep writing into a dataset nobody is running.
    """
    _single_threaded()
    signal.signal(signal.SIGINT, signal.SIG_IGN)

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(0.2)
        os._exit(1)

    threading.Thread(target=watch, daemon=True, name="cosmobench-parent-watchdog").start()


def _map_processes(fn, items, results, bar, workers) -> None:
    """A spawned pool of ``workers`` processes; Ctrl-C, an error or a worker's death terminates the workers at
    once (a pool replaces a dead worker but never runs its item again: waiting would never end)."""
    # spawn, not fork: forking a process whose thread pools (ducc0, OpenMP, torch) have run can deadlock
    context = multiprocessing.get_context("spawn")
    before = set(multiprocessing.active_children())
    pool = context.Pool(processes=workers, initializer=_worker_init, initargs=(os.getpid(),))
    started = [p for p in multiprocessing.active_children() if p not in before]
    try:
        pending = {i: pool.apply_async(fn, (item,)) for i, item in enumerate(items)}
        while pending:
            done = [i for i, res in pending.items() if res.ready()]
            for i in done:
                results[i] = pending.pop(i).get()
                bar.update()
            if not done:
                _check_alive(started, fn)
                time.sleep(0.05)
        pool.close()
        deadline = time.monotonic() + _EXIT_WAIT_S
        for proc in started:  # finished workers exit by themselves: a terminated one leaks its semaphores
            proc.join(max(0.0, deadline - time.monotonic()))
    finally:
        pool.terminate()
        pool.join()


def _check_alive(started: Sequence[multiprocessing.process.BaseProcess], fn: Callable) -> None:
    """Raise ``ChildProcessError`` if a worker of the pool has exited (they only exit when the pool closes)."""
    for proc in started:
        code = proc.exitcode
        if code is not None:
            how = f"exit code {code}" if code >= 0 else f"signal {-code}, {signal.strsignal(-code)}"
            name = getattr(getattr(fn, "func", fn), "__name__", repr(fn))
            raise ChildProcessError(
                f"a worker process died ({how}) while running {name}; its item has no result and the stage "
                "stopped. Signal 9 (Killed) is most often the out-of-memory killer: use fewer workers; a crash in "
                "compiled code (signal 11 or 6) prints its message above: rerun with executor=serial to see it here"
            )


def _map_dask(fn, items, results, bar, workers, scheduler_address) -> None:
    try:
        from distributed import Client, LocalCluster
        from distributed import as_completed as dask_completed
    except ImportError as err:  # pragma: no cover - dask is a dependency
        raise ImportError("executor='dask' needs dask[distributed]: pip install 'dask[distributed]'") from err
    if scheduler_address:
        client, cluster = Client(scheduler_address), None
    else:
        cluster = LocalCluster(n_workers=workers, threads_per_worker=1, processes=True, dashboard_address=None)
        client = Client(cluster)
    try:
        client.run(_single_threaded)
        futures = client.map(fn, items, pure=False)
        index = {fut.key: i for i, fut in enumerate(futures)}
        for fut in dask_completed(futures):
            results[index[fut.key]] = fut.result()
            bar.update()
    finally:
        client.close()
        if cluster is not None:
            cluster.close()
