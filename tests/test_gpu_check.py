"""benchmarks/gpu_check.sh, the command a session lent a GPU runs once, works before the lease: its dry run on a CPU."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from cosmobench.sky.cosmology import default_cache_dir

SCRIPT = Path(__file__).parents[1] / "benchmarks" / "gpu_check.sh"


@pytest.mark.slow
def test_gpu_check_dry_run_scores_every_phase(tmp_path):
    out = tmp_path / "out"
    env = {
        **os.environ,
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",  # its python3 is this one
        "COSMOBENCH_CACHE": os.environ.get("COSMOBENCH_CACHE", str(default_cache_dir())),
        "OUT": str(out),
        "DEVICE": "cpu",
        "WORKERS": "2",
        "BUDGET_S": "900",
        "B128_ROOT": str(tmp_path / "b128"),
        "B128_OPTS": "preset=default",
        "B128_SPLITS": "{Train: 4, Valid: 2, Test: 2, TestOOD: 2}",
        "B128_EPOCHS": "2",
        "UNET_ARGS": "--nsides 32 --configs tiny",  # the CPU defaults ran past their cap on a loaded machine
        "BMODES_ARGS": "--n-steps 50 --n-spectra 1000 --repeats 1",
        "MULTIFIELD_ARGS": "--simulator-only",
    }
    done = subprocess.run(["bash", str(SCRIPT)], env=env, capture_output=True, text=True, timeout=1200)
    assert done.returncode == 0, done.stdout + (out / "stderr.log").read_text()[-3000:]
    phases = [line for line in done.stdout.splitlines() if ": rc " in line]
    names = ["environment", "tests", "bench_unet", "bench_bmodes", "bench128", "bench_multifield"]
    assert [line.split(":")[0] for line in phases] == names
    assert all(": rc 0," in line for line in phases), done.stdout
    # every file comes back from the device (at most 8), and each benchmark's is one JSON object
    assert len(list(out.iterdir())) <= 8
    for name in ("bench_unet", "bench_bmodes", "bench_multifield"):
        assert isinstance(json.loads((out / f"{name}.json").read_text()), dict)
    results = [line.split()[1:3] for line in done.stdout.splitlines() if line.startswith("RESULT ")]
    assert results == [[s, m] for s in ("Test", "TestOOD") for m in ("nilc", "nilc_unet")]
