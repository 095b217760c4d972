"""The tutorials of docs/tutorials/ run from top to bottom, and are committed without outputs.

Each notebook is executed with nbclient on a kernel of the running Python (the interpreter and environment of
this test session), with its working folder and temporary files in pytest's temporary directory; a cell that
raises fails the test with the cell's traceback; a notebook that draws no figure fails too (matplotlib's inline
backend lost). Notebooks that take more than a minute on 2 cores belong in the ``slow`` tier (none today).
``python docs/tutorials/strip_outputs.py`` removes outputs before a commit.
"""

from __future__ import annotations

import importlib.util
import json
import sys
import time
from pathlib import Path

import pytest

TUTORIALS = Path(__file__).resolve().parents[1] / "docs" / "tutorials"
# notebook -> pytest marks: one that takes over a minute on 2 cores goes to the slow tier (pytest.mark.slow), which
# CI does not run. Measured on 2 busy shared cores, one at a time: bmodes 30-46 s, apply 11-14 s, cmb 43-58 s
# (two thirds of it CAMB: preset=tiny calls it once per simulation), multifield 17-30 s.
NOTEBOOKS = {
    "bmodes.ipynb": [],
    "apply.ipynb": [],
    "cmb.ipynb": [],
    "multifield.ipynb": [],
}
TIMEOUT_S = 600  # per cell; the whole notebook is bounded by pytest-timeout where it is installed
KERNEL = "cosmobench-tutorial-test"


def test_every_tutorial_is_listed():
    assert sorted(p.name for p in TUTORIALS.glob("*.ipynb")) == sorted(NOTEBOOKS)


def _stripper():
    """docs/tutorials/strip_outputs.py as a module (it is a script, not part of the package)."""
    spec = importlib.util.spec_from_file_location("strip_outputs", TUTORIALS / "strip_outputs.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("name", sorted(NOTEBOOKS))
def test_committed_notebooks_have_no_outputs(name):
    strip_outputs = _stripper()
    text = (TUTORIALS / name).read_text(encoding="utf-8")
    nb = json.loads(text)
    dirty = [
        i
        for i, cell in enumerate(nb["cells"])
        if cell["cell_type"] == "code" and (cell.get("outputs") or cell.get("execution_count") is not None)
    ]
    assert not dirty, f"{name}: cells {dirty} hold outputs; run `python docs/tutorials/strip_outputs.py`"
    assert strip_outputs.dump(strip_outputs.strip(nb)) == text, (
        f"{name} holds run metadata or is not in Jupyter's layout; run `python docs/tutorials/strip_outputs.py`"
    )


@pytest.fixture
def kernel(tmp_path, monkeypatch):
    """A kernelspec that starts ipykernel with this interpreter, found first on JUPYTER_PATH."""
    pytest.importorskip("nbclient")
    pytest.importorskip("ipykernel")
    spec = tmp_path / "jupyter" / "kernels" / KERNEL
    spec.mkdir(parents=True)
    argv = [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"]
    (spec / "kernel.json").write_text(
        json.dumps({"argv": argv, "display_name": "cosmobench tests", "language": "python"})
    )
    monkeypatch.setenv("JUPYTER_PATH", str(tmp_path / "jupyter"))
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.setenv("TMPDIR", str(work))  # the notebooks' tempfile.mkdtemp() folders land here
    monkeypatch.setenv("MPLBACKEND", "module://matplotlib_inline.backend_inline")
    # one compute thread per notebook, like the tests' torch (conftest.py): tests run two at a time on 2 cores
    monkeypatch.setenv("COSMOBENCH_THREADS", "1")
    return work


def _execute(path: Path, work: Path):
    import nbformat
    from nbclient import NotebookClient

    nb = nbformat.read(str(path), as_version=4)
    client = NotebookClient(
        nb,
        kernel_name=KERNEL,
        timeout=TIMEOUT_S,
        allow_errors=False,
        resources={"metadata": {"path": str(work)}},
    )
    client.execute()
    return nb


@pytest.mark.parametrize(
    "name", [pytest.param(name, marks=marks, id=name.removesuffix(".ipynb")) for name, marks in NOTEBOOKS.items()]
)
def test_tutorial_runs(name, kernel):
    from nbclient.exceptions import CellExecutionError

    t0 = time.perf_counter()
    try:
        nb = _execute(TUTORIALS / name, kernel)
    except CellExecutionError as err:
        pytest.fail(f"{name}: a cell failed\n{err}", pytrace=False)
    seconds = time.perf_counter() - t0
    print(f"{name}: {seconds:.0f} s")
    errors = [
        out
        for cell in nb.cells
        if cell.cell_type == "code"
        for out in cell.get("outputs", [])
        if out.get("output_type") == "error"
    ]
    assert not errors
    # every cell that shows a figure has one: cosmobench's report code must not take the inline backend away
    blank = [
        i
        for i, cell in enumerate(nb.cells)
        if cell.cell_type == "code"
        and "plt.show()" in cell.source
        and not any("image/png" in out.get("data", {}) for out in cell.get("outputs", []))
    ]
    assert not blank, f"{name}: cells {blank} call plt.show() but display no figure"
