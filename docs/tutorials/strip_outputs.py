"""Remove outputs, execution counts and run metadata from the tutorial notebooks before a commit.

    python docs/tutorials/strip_outputs.py            # strip every notebook of this folder, in place
    python docs/tutorials/strip_outputs.py --check    # list notebooks holding outputs; exit status 1 if any
    python docs/tutorials/strip_outputs.py a.ipynb    # only these files

Only the standard library is used; files are written the way Jupyter writes them (nbformat's JSON layout), so a
stripped notebook saved again by Jupyter without running it gives no diff. ``tests/test_tutorials.py`` fails
when a committed notebook holds outputs.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

# Cell metadata written by Jupyter front ends while running or viewing a notebook, not by its authors.
RUN_METADATA = ("execution", "collapsed", "scrolled", "ExecuteTime")
NOTEBOOK_RUN_METADATA = ("widgets",)


def strip(nb: dict) -> dict:
    """``nb`` without outputs, execution counts and run metadata (modified in place and returned)."""
    for cell in nb.get("cells", []):
        if cell.get("cell_type") == "code":
            cell["outputs"] = []
            cell["execution_count"] = None
        for key in RUN_METADATA:
            cell.get("metadata", {}).pop(key, None)
    meta = nb.get("metadata", {})
    for key in NOTEBOOK_RUN_METADATA:
        meta.pop(key, None)
    if "language_info" in meta:  # the kernel fills in its exact version: keep only the language
        meta["language_info"] = {"name": meta["language_info"].get("name", "python")}
    return nb


def dump(nb: dict) -> str:
    """The notebook as Jupyter writes it: one-space indent, sorted keys, UTF-8, final newline."""
    return json.dumps(nb, indent=1, sort_keys=True, ensure_ascii=False) + "\n"


def main(argv: list[str]) -> int:
    check = "--check" in argv
    paths = [Path(a) for a in argv if a != "--check"] or sorted(Path(__file__).parent.glob("*.ipynb"))
    dirty = []
    for path in paths:
        text = path.read_text(encoding="utf-8")
        clean = dump(strip(json.loads(text)))
        if clean != text:
            dirty.append(path)
            if not check:
                path.write_text(clean, encoding="utf-8")
    verb = "hold outputs or run metadata" if check else "stripped"
    for path in dirty:
        print(f"{path}: {verb}")
    return 1 if check and dirty else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
