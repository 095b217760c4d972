"""Package hygiene: importing cosmobench is cheap and side-effect free."""

import subprocess
import sys


def test_import_loads_neither_hydra_nor_matplotlib_nor_torch():
    code = (
        "import sys, cosmobench, cosmobench.sky.sht, cosmobench.core.io, cosmobench.cmb.dataset;"
        "bad = [m for m in ('hydra', 'omegaconf', 'matplotlib', 'torch') if m in sys.modules];"
        "print(','.join(bad))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == ""


def test_only_cli_imports_hydra():
    from pathlib import Path

    import cosmobench

    root = Path(cosmobench.__file__).parent
    offenders = [
        str(p.relative_to(root))
        for p in root.rglob("*.py")
        if p.name != "cli.py" and ("import hydra" in p.read_text() or "omegaconf" in p.read_text())
    ]
    assert offenders == []
