"""The dihedral group D4 of the square (order 8): the label-preserving symmetries of periodic square maps.

Element ``(k, flip)`` maps an image x to ``rot90(fliplr(x) if flip else x, k)`` on its last two axes. The CMD
reference draws ``flip`` with ``randint(0, 1)``, which is always 0, so it only ever rotates; here every element
is drawn with probability 1/8 and the group law is tested.
"""

from __future__ import annotations

import torch

__all__ = ["DIHEDRAL", "apply", "compose", "inverse", "all_transforms", "random_transform"]

#: The 8 elements (k, flip): rotations by k * 90 degrees, after a left-right flip when ``flip``.
DIHEDRAL: tuple[tuple[int, bool], ...] = tuple((k, flip) for flip in (False, True) for k in range(4))


def apply(x: torch.Tensor, element: tuple[int, bool]) -> torch.Tensor:
    """Apply one element to the last two axes of ``x`` (any leading shape)."""
    k, flip = element
    if flip:
        x = torch.flip(x, dims=(-1,))
    return torch.rot90(x, k % 4, dims=(-2, -1))


def compose(a: tuple[int, bool], b: tuple[int, bool]) -> tuple[int, bool]:
    """The element ``a o b`` (apply ``b`` first): rot^ka F^fa rot^kb F^fb = rot^(ka + (-1)^fa kb) F^(fa xor fb)."""
    ka, fa = a
    kb, fb = b
    return ((ka + (-kb if fa else kb)) % 4, bool(fa) ^ bool(fb))


def inverse(a: tuple[int, bool]) -> tuple[int, bool]:
    """The inverse element: rotations invert to the opposite rotation; flips (reflections) are involutions."""
    k, flip = a
    return (k, True) if flip else ((-k) % 4, False)


def all_transforms(x: torch.Tensor) -> torch.Tensor:
    """The 8 transformed copies of ``x``, shape (8, *x.shape), in :data:`DIHEDRAL` order."""
    return torch.stack([apply(x, g) for g in DIHEDRAL])


def random_transform(x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """Apply an independent, uniformly drawn element of D4 to each sample of a batch (B, ..., H, W).

    Draws come from ``generator`` (default: torch's global generator, which :func:`cosmobench.core.train.fit`
    seeds at every epoch). Square maps only.
    """
    if x.shape[-1] != x.shape[-2]:
        raise ValueError(f"dihedral augmentation needs square maps, got {tuple(x.shape[-2:])}")
    draw = torch.randint(0, len(DIHEDRAL), (x.shape[0],), generator=generator, device="cpu").to(x.device)
    out = torch.empty_like(x)
    for i, g in enumerate(DIHEDRAL):
        sel = draw == i
        if bool(sel.any()):
            out[sel] = apply(x[sel], g)
    return out
