import os
import signal
import subprocess
import sys

import numpy as np
import pytest

from cosmobench.core.executor import map_tasks
from cosmobench.core.seeds import rng


def _draw(i: int) -> float:
    return float(rng(11, "task", i).standard_normal())


def _pid(_: int) -> int:
    return os.getpid()


@pytest.mark.parametrize("executor,workers", [("serial", 1), ("processes", 2)])
def test_results_in_item_order_and_independent_of_workers(executor, workers):
    expected = [_draw(i) for i in range(7)]
    assert map_tasks(_draw, range(7), executor=executor, workers=workers, progress=False) == expected


def test_processes_really_fan_out():
    assert os.getpid() not in map_tasks(_pid, range(4), executor="processes", workers=2, progress=False)


def test_bad_arguments():
    with pytest.raises(ValueError, match="unknown executor"):
        map_tasks(_draw, [1], executor="threads")
    with pytest.raises(ValueError, match="workers"):
        map_tasks(_draw, [1], executor="processes", workers=0)


@pytest.mark.slow
def test_dask_local_cluster_matches_serial():
    out = map_tasks(_draw, range(5), executor="dask", workers=2, progress=False)
    np.testing.assert_array_equal(out, [_draw(i) for i in range(5)])


def test_processes_after_threaded_transforms_do_not_hang():
    """Regression: forking after ducc0's thread pool ran deadlocked the workers; the pool now spawns."""
    from cosmobench.sky import sht

    sht.alm2map(np.zeros(sht.alm_size(47), complex), 16)  # starts ducc0's threads in this process
    assert map_tasks(_draw, range(4), executor="processes", workers=2, progress=False) == [_draw(i) for i in range(4)]


def _die_on_two(i: int) -> int:
    if i == 2:
        os.kill(os.getpid(), signal.SIGKILL)  # what the out-of-memory killer does
    return i


@pytest.mark.timeout(120)
def test_a_worker_killed_mid_task_stops_the_map_with_an_error():
    """Regression: the pool replaced the dead worker and waited for its item for ever."""
    with pytest.raises(ChildProcessError, match=r"signal 9, Killed\) while running _die_on_two"):
        map_tasks(_die_on_two, range(4), executor="processes", workers=2, progress=False)


_LOCKING_SCRIPT = """
import tqdm

from cosmobench.core.executor import map_tasks


def locked(i):
    tqdm.tqdm.get_lock()  # a multiprocessing lock in the worker, as a progress bar there makes
    return i


if __name__ == "__main__":
    for _ in range(30):  # the old code leaked in about one pool of three
        assert map_tasks(locked, range(4), executor="processes", workers=2, progress=False) == [0, 1, 2, 3]
"""


@pytest.mark.timeout(120)
def test_finished_workers_exit_without_leaking_semaphores(tmp_path):
    """Regression: the pool terminated its workers once every item was done, so a worker's semaphores (tqdm's lock)
    were never released and the resource tracker warned of leaked semaphores at exit (9-12 of 30 pools, every run
    of five)."""
    script = tmp_path / "locking.py"
    script.write_text(_LOCKING_SCRIPT)
    run = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=100)
    assert run.returncode == 0, run.stderr
    assert "leaked semaphore" not in run.stderr
