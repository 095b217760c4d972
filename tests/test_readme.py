"""The README's Python example runs as written and separates the CMB (STYLE.md G4)."""

import re
from pathlib import Path

import numpy as np

README = Path(__file__).parents[1] / "README.md"


def test_readme_python_example_recovers_the_cmb():
    block = re.search(r"```python\n(.*?)```", README.read_text(), re.S).group(1)
    scope: dict = {}
    exec(compile(block, "README.md", "exec"), scope)
    from cosmobench.sky import sht

    sim, cmb = scope["sim"], scope["cmb"]
    truth = sht.smooth(sim.cmb[0], 20.6)  # NILC's output beam
    resid = cmb - truth
    assert cmb.shape == truth.shape and np.all(np.isfinite(cmb))
    # the foregrounds in the input channels are orders of magnitude above this residual
    assert np.std(resid) < 0.2 * np.std(truth)
