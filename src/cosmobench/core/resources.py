"""The size guard of every simulation stage: refuse a job larger than the free disk or the available memory."""

from __future__ import annotations

import shutil
from pathlib import Path

__all__ = ["require_resources", "existing_parent"]


def existing_parent(path: Path | str) -> Path:
    """``path`` itself if it exists, else its nearest existing parent (where its files would land)."""
    path = Path(path).absolute()
    while not path.exists():
        path = path.parent
    return path


def require_resources(folder: Path | str, *, disk: int, memory: int, force: bool, fix: str) -> None:
    """Refuse, before any work, a job whose outputs exceed the free disk at ``folder`` or whose working set exceeds
    the available memory, unless ``force``.

    Parameters
    ----------
    folder : path
        Where the job writes (it may not exist yet).
    disk, memory : int
        Estimated bytes written, and bytes held in memory at once.
    force : bool
        Start anyway.
    fix : str
        How to make the job smaller, quoted in the error (e.g. "lower simulate.n_sims").

    Raises
    ------
    ValueError
        Naming the estimate, what is available, the fix and ``force=true``.
    """
    import psutil

    if force:
        return
    free = shutil.disk_usage(existing_parent(folder)).free
    if disk > free:
        raise ValueError(
            f"this job writes about {disk / 1e9:.2f} GB but {folder} has {free / 1e9:.2f} GB free; {fix}, choose "
            "another output folder, or pass force=true to start anyway"
        )
    available = psutil.virtual_memory().available
    if memory > available:
        raise ValueError(
            f"this job needs about {memory / 1e9:.2f} GB of memory but {available / 1e9:.2f} GB are available; "
            f"{fix}, or pass force=true to start anyway"
        )
