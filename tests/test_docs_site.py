"""The documentation site (mkdocs.yml) builds offline with --strict, and its API pages come from the docstrings."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def test_docs_site_builds_strict(tmp_path):
    pytest.importorskip("mkdocs")
    pytest.importorskip("mkdocstrings_handlers.python")
    pytest.importorskip("material")
    pytest.importorskip("mkdocs_jupyter")
    run = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "-f", str(ROOT / "mkdocs.yml"), "-d", str(tmp_path)],
        capture_output=True,
        text=True,
        env={**os.environ, "NO_MKDOCS_2_WARNING": "1"},
    )
    assert run.returncode == 0, run.stderr[-4000:]
    api = (tmp_path / "api" / "cmb" / "index.html").read_text()
    assert 'id="cosmobench.cmb.apply.apply_method"' in api
    assert 'id="cosmobench.core.io.write_healpix"' in (tmp_path / "api" / "core" / "index.html").read_text()
    guides = [p.stem for p in (ROOT / "docs").glob("*.md") if p.stem != "index"]
    assert all((tmp_path / name / "index.html").is_file() for name in guides)  # every guide is in the nav
