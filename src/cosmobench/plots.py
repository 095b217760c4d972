"""Figure helpers shared by every task's report (matplotlib is imported lazily, never at package import).

Figures are :class:`matplotlib.figure.Figure` objects drawn without pyplot: no global backend is switched (a
notebook keeps its inline figures after a cosmobench stage ran), nothing has to be closed, and drawing is safe in
worker threads. HEALPix maps are drawn in Mollweide projection through healpy's projector onto ordinary axes.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .core.io import atomic_path

__all__ = ["subplots", "save", "mollweide", "colour_limit"]


def subplots(*args, figsize: tuple[float, float] | None = None, **kwargs):
    """``(figure, axes)`` like :func:`matplotlib.pyplot.subplots`, on a pyplot-free Figure."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=figsize)
    return fig, fig.subplots(*args, **kwargs)


def save(fig, path: Path | str, dpi: int = 110) -> Path:
    """Write ``fig`` to ``path`` atomically (format from the suffix, PNG by default), tight around its labels."""
    path = Path(path)
    with atomic_path(path) as tmp, open(tmp, "wb") as fh:
        fig.savefig(fh, format=path.suffix.lstrip(".") or "png", dpi=dpi, bbox_inches="tight")
    return path


def colour_limit(maps, percentile: float = 99.0) -> float:
    """A round, symmetric colour-bar limit: the ``percentile`` of abs(value) over all ``maps``, rounded up to
    1, 2 or 5 times a power of ten, so that maps drawn with it share one scale and the bar's labels are round."""
    value = float(np.percentile(np.abs(np.concatenate([np.ravel(m) for m in maps])), percentile))
    if not np.isfinite(value) or value <= 0:
        return 1.0
    power = 10.0 ** np.floor(np.log10(value))
    return float(next(step * power for step in (1, 2, 5, 10) if step * power >= value * (1 - 1e-9)))


def mollweide(
    ax,
    m: np.ndarray,
    *,
    vmin: float,
    vmax: float,
    cmap: str = "RdBu_r",
    title: str = "",
    unit: str | None = None,
    xsize: int = 600,
):
    """Draw a RING-ordered HEALPix map (``hp.UNSEEN`` or NaN pixels grey) in Mollweide projection on ``ax``.

    Parameters
    ----------
    ax : matplotlib Axes
    m : ndarray, shape (npix,)
    vmin, vmax : float
        Colour range.
    cmap : str
    title : str
    unit : str, optional
        Colour-bar label; None draws no colour bar.
    xsize : int
        Width of the projected image, pixels.
    """
    import healpy as hp
    import matplotlib

    m = np.asarray(m, dtype=float)
    nside = hp.npix2nside(m.size)
    proj = hp.projector.MollweideProj(xsize=xsize)
    image = proj.projmap(m, lambda x, y, z: hp.vec2pix(nside, x, y, z))
    outside = np.isneginf(image)  # the projector marks points outside the ellipse with -inf
    unseen = ~outside & ((image == hp.UNSEEN) | ~np.isfinite(image))
    transparent = (0.0, 0.0, 0.0, 0.0)
    grey = matplotlib.colors.ListedColormap(["0.75"]).with_extremes(bad=transparent)
    extent = proj.get_extent()
    ax.imshow(np.ma.masked_where(~unseen, np.zeros_like(image)), origin="lower", cmap=grey, extent=extent)
    colours = matplotlib.colormaps[cmap].with_extremes(bad=transparent)  # outside the ellipse, masked: transparent
    data = np.ma.masked_where(outside | unseen, image)
    im = ax.imshow(data, origin="lower", cmap=colours, vmin=vmin, vmax=vmax, extent=extent)
    ax.set_axis_off()
    ax.set_title(title, fontsize=9)
    if unit is not None:
        ax.figure.colorbar(im, ax=ax, orientation="horizontal", fraction=0.05, pad=0.02, label=unit, format="%g")
    return im
