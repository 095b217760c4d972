"""Packaging: ``python -m cosmobench``, one version, ``py.typed`` shipped, the extras."""

import subprocess
import sys
from pathlib import Path

import cosmobench

ROOT = Path(__file__).resolve().parents[1]


def test_python_m_cosmobench_prints_the_package_version():
    out = subprocess.run(
        [sys.executable, "-m", "cosmobench", "--version"], capture_output=True, text=True, check=True
    ).stdout
    assert out.strip() == f"cosmobench {cosmobench.__version__}"


def test_version_has_one_source():
    from importlib.metadata import version

    from setuptools.config.pyprojecttoml import read_configuration

    config = read_configuration(ROOT / "pyproject.toml", expand=True)
    assert "version" in config["project"]["dynamic"]
    assert config["project"]["version"] == cosmobench.__version__
    assert version("cosmobench") == cosmobench.__version__
    assert f"## [{cosmobench.__version__}]" in (ROOT / "CHANGELOG.md").read_text()


def test_py_typed_and_extras_are_declared():
    from setuptools.config.pyprojecttoml import read_configuration

    config = read_configuration(ROOT / "pyproject.toml", expand=True)
    assert (Path(cosmobench.__file__).parent / "py.typed").is_file()
    assert "py.typed" in config["tool"]["setuptools"]["package-data"]["cosmobench"]
    extras = config["project"]["optional-dependencies"]
    assert {"test", "docs"} <= set(extras)
    assert any(req.startswith("mkdocstrings[python]") for req in extras["docs"])
