"""HEALPix maps as images: the 12 base faces tiled into one plane, and nested sub-face patches with halos.

Every layout is a precomputed gather index of RING pixel numbers, so going to images is one fancy-indexing
operation (``maps[..., index]``) and coming back is its inverse permutation; both are exact.

Face coordinates follow HEALPix (healpy's ``pix2xyf``): in base face ``f`` the pixel ``(x, y)`` has ``x`` growing
from the south corner towards the east corner and ``y`` towards the west corner; ``(0, 0)`` is the south corner
and ``(nside-1, nside-1)`` the north corner. Images put ``(x, y)`` at row ``nside-1-y`` and column
``nside-1-x`` of its face block, so the north corner is top-left and the south corner bottom-right.

Full-sky plane (cmbNNCS, CMB-ML)
    The faces are tiled into a ``(4 nside, 3 nside)`` image, face rows top to bottom
    ``[2, 6, 9], [3, 7, 10], [0, 4, 11], [1, 5, 8]``: each row is one continuous strip from a north-polar face
    through an equatorial face to a south-polar face, so image neighbours across a left-right face boundary
    are sphere neighbours; across a row boundary they are not.

Patches (CMB-ML's PatchNN, with an optional halo)
    Each pixel of the coarse grid ``patch_nside`` is a square block of ``(nside / patch_nside)^2`` fine pixels
    (its NEST children). A patch is that block laid out like a face, plus ``margin`` pixels of halo on every
    side taken from the neighbouring faces with HEALPix's exact neighbour rules, so a network sees context
    across patch and face edges. Where only three faces meet (the 8 corners at ``|z| = 2/3``) the missing
    diagonal quadrant of the halo is filled with its mirror image from the side neighbour.
"""

from __future__ import annotations

import functools

import numpy as np

from ..sky.sht import check_nside, nside_of

__all__ = [
    "PLANE_FACES",
    "plane_index",
    "to_plane",
    "from_plane",
    "patch_index",
    "to_patches",
    "from_patches",
    "extended_xyf_to_ring",
    "PlaneLayout",
    "PatchLayout",
]

PLANE_FACES = ((2, 6, 9), (3, 7, 10), (0, 4, 11), (1, 5, 8))
"""Base faces of each row of the full-sky plane (top to bottom, left to right)."""

# HEALPix neighbour rules for face coordinates one face beyond the edge (as in HEALPix C++'s
# ``healpix_base::neighbors``): the neighbour face and the flips/swap that carry (x, y) into it, indexed by
# 4 + dx + 3 dy (dx, dy in -1, 0, 1: which side the coordinate left its face by) and by face (or ring of faces).
_NEIGHBOUR_FACE = np.array(
    [
        [8, 9, 10, 11, -1, -1, -1, -1, 10, 11, 8, 9],
        [5, 6, 7, 4, 8, 9, 10, 11, 9, 10, 11, 8],
        [-1, -1, -1, -1, 5, 6, 7, 4, -1, -1, -1, -1],
        [4, 5, 6, 7, 11, 8, 9, 10, 11, 8, 9, 10],
        [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11],
        [1, 2, 3, 0, 0, 1, 2, 3, 5, 6, 7, 4],
        [-1, -1, -1, -1, 7, 4, 5, 6, -1, -1, -1, -1],
        [3, 0, 1, 2, 3, 0, 1, 2, 4, 5, 6, 7],
        [2, 3, 0, 1, -1, -1, -1, -1, 0, 1, 2, 3],
    ]
)
# bit 1: x -> nside-1-x, bit 2: y -> nside-1-y, bit 4: swap x and y (applied in that order); per face ring.
_NEIGHBOUR_FLIPS = np.array(
    [[0, 0, 3], [0, 0, 6], [0, 0, 0], [0, 0, 5], [0, 0, 0], [5, 0, 0], [0, 0, 0], [6, 0, 0], [3, 0, 0]]
)


def extended_xyf_to_ring(nside: int, x: np.ndarray, y: np.ndarray, face: np.ndarray) -> np.ndarray:
    """RING pixel numbers of face coordinates that may lie up to one face beyond their face's edges.

    Parameters
    ----------
    nside : int
        HEALPix resolution.
    x, y : ndarray of int
        Face coordinates in ``[-nside, 2 nside)``; values outside ``[0, nside)`` continue into the neighbouring
        face across that edge (or corner) as HEALPix's neighbour rules say.
    face : ndarray of int
        Base face (0-11) of each coordinate, broadcast against ``x`` and ``y``.

    Returns
    -------
    ndarray of int64, RING pixel numbers with the broadcast shape. A corner coordinate whose diagonal face does
    not exist (three faces meet there) gets the pixel mirrored into the side neighbour across ``y``.
    """
    import healpy as hp

    nside = check_nside(nside)
    x, y, face = (np.array(a, dtype=np.int64) for a in np.broadcast_arrays(x, y, face))
    if np.any((x < -nside) | (x >= 2 * nside) | (y < -nside) | (y >= 2 * nside)):
        raise ValueError(f"face coordinates must lie within one face of their own (in [-{nside}, {2 * nside}))")
    dx = np.where(x < 0, -1, np.where(x >= nside, 1, 0))
    dy = np.where(y < 0, -1, np.where(y >= nside, 1, 0))
    missing = _NEIGHBOUR_FACE[4 + dx + 3 * dy, face] < 0
    # three faces meet: mirror y back into the face's own row, so the coordinate lands in the side neighbour
    y = np.where(missing & (dy < 0), -1 - y, np.where(missing & (dy > 0), 2 * nside - 1 - y, y))
    side = 4 + dx + 3 * np.where(missing, 0, dy)
    x, y = x % nside, y % nside
    new_face = _NEIGHBOUR_FACE[side, face]
    flips = _NEIGHBOUR_FLIPS[side, face // 4]
    x = np.where(flips & 1, nside - 1 - x, x)
    y = np.where(flips & 2, nside - 1 - y, y)
    x, y = np.where(flips & 4, y, x), np.where(flips & 4, x, y)
    return hp.xyf2pix(nside, x, y, new_face, nest=False).astype(np.int64)


@functools.lru_cache(maxsize=16)
def plane_index(nside: int) -> np.ndarray:
    """RING pixel number at each position of the full-sky plane.

    Parameters
    ----------
    nside : int

    Returns
    -------
    ndarray of int64, shape (4 nside, 3 nside), read-only; a permutation of ``range(12 nside^2)``.
    """
    nside = check_nside(nside)
    rows, cols = np.indices((4 * nside, 3 * nside))
    face = np.asarray(PLANE_FACES)[rows // nside, cols // nside]
    index = extended_xyf_to_ring(nside, nside - 1 - cols % nside, nside - 1 - rows % nside, face)
    index.setflags(write=False)
    return index


@functools.lru_cache(maxsize=16)
def _inverse(kind: str, nside: int, patch_nside: int = 0, margin: int = 0) -> np.ndarray:
    """Position in the flattened image(s) of each RING pixel (the inverse permutation of the layout)."""
    if kind == "plane":
        flat = plane_index(nside).ravel()
    else:
        idx = patch_index(nside, patch_nside, margin)
        size = idx.shape[-1] - 2 * margin
        flat = idx[:, margin : margin + size, margin : margin + size].ravel()
    inverse = np.empty_like(flat)
    inverse[flat] = np.arange(flat.size)
    inverse.setflags(write=False)
    return inverse


def _gather(maps, index: np.ndarray):
    """``maps[..., index]`` for numpy arrays and torch tensors (on their own device)."""
    if isinstance(maps, np.ndarray):
        return maps[..., index]
    import torch

    return maps[..., torch.from_numpy(index.copy()).to(maps.device)]


def to_plane(maps):
    """Tile RING maps into the full-sky plane.

    Parameters
    ----------
    maps : ndarray or torch.Tensor, shape (..., 12 nside^2)
        RING-ordered maps, any unit.

    Returns
    -------
    same type, shape (..., 4 nside, 3 nside)
    """
    return _gather(maps, plane_index(nside_of(np.empty(maps.shape[-1], dtype=np.uint8))))


def from_plane(planes):
    """Inverse of :func:`to_plane`: planes of shape (..., 4 nside, 3 nside) -> RING maps (..., 12 nside^2)."""
    height, width = planes.shape[-2:]
    nside = width // 3
    if height != 4 * nside or width != 3 * nside:
        raise ValueError(f"a full-sky plane has shape (4 nside, 3 nside); got {(height, width)}")
    flat = planes.reshape(*planes.shape[:-2], height * width)
    return _gather(flat, _inverse("plane", check_nside(nside)))


@functools.lru_cache(maxsize=16)
def patch_index(nside: int, patch_nside: int, margin: int = 0) -> np.ndarray:
    """RING pixel numbers of every nested sub-face patch, with a halo of ``margin`` pixels.

    Parameters
    ----------
    nside : int
        Resolution of the maps.
    patch_nside : int
        Resolution of the coarse grid whose pixels are the patches (1: the 12 base faces).
    margin : int
        Halo width in pixels, at most ``nside``.

    Returns
    -------
    ndarray of int64, shape (12 patch_nside^2, P + 2 margin, P + 2 margin) with ``P = nside / patch_nside``,
    read-only. Patch ``k`` is coarse NEST pixel ``k``; the centre ``P x P`` block of all patches together is a
    permutation of ``range(12 nside^2)``.
    """
    import healpy as hp

    nside, patch_nside = check_nside(nside), check_nside(patch_nside)
    if patch_nside > nside:
        raise ValueError(f"patch_nside ({patch_nside}) must not exceed nside ({nside})")
    if not 0 <= margin <= nside:
        raise ValueError(f"margin must be between 0 and nside ({nside}), got {margin}")
    size = nside // patch_nside
    coarse_x, coarse_y, face = hp.pix2xyf(patch_nside, np.arange(12 * patch_nside**2), nest=True)
    rows, cols = np.indices((size + 2 * margin, size + 2 * margin)) - margin
    x = coarse_x[:, None, None] * size + (size - 1 - cols)
    y = coarse_y[:, None, None] * size + (size - 1 - rows)
    index = extended_xyf_to_ring(nside, x, y, face[:, None, None])
    index.setflags(write=False)
    return index


def to_patches(maps, patch_nside: int, margin: int = 0):
    """Cut RING maps (..., 12 nside^2) into patches (..., 12 patch_nside^2, P + 2 margin, P + 2 margin)."""
    nside = nside_of(np.empty(maps.shape[-1], dtype=np.uint8))
    return _gather(maps, patch_index(nside, patch_nside, margin))


def from_patches(patches, margin: int = 0):
    """Stitch patches (..., 12 patch_nside^2, S, S) back into RING maps, dropping the ``margin`` halo.

    Parameters
    ----------
    patches : ndarray or torch.Tensor, shape (..., npatch, S, S)
        ``S = nside / patch_nside + 2 margin``.
    margin : int
        Halo width to crop.

    Returns
    -------
    same type, shape (..., 12 nside^2), RING.
    """
    npatch, size = patches.shape[-3], patches.shape[-1] - 2 * margin
    patch_nside = int(round(np.sqrt(npatch / 12)))
    if 12 * patch_nside**2 != npatch or patches.shape[-2] != patches.shape[-1] or size < 1:
        raise ValueError(f"expected (..., 12 patch_nside^2, S, S) patches, got shape {tuple(patches.shape)}")
    nside = check_nside(size * patch_nside)
    centre = patches[..., margin : margin + size, margin : margin + size]
    flat = centre.reshape(*patches.shape[:-3], npatch * size * size)
    return _gather(flat, _inverse("patch", nside, patch_nside, margin))


class PlaneLayout:
    """Maps <-> one full-sky plane per map: images (1, C, 4 nside, 3 nside).

    Parameters
    ----------
    nside : int
    """

    def __init__(self, nside: int):
        self.nside = check_nside(nside)
        self.images_per_map = 1
        self.image_shape = self.target_shape = (4 * self.nside, 3 * self.nside)

    def describe(self) -> dict:
        """Plain-dict description (for manifests)."""
        return {"kind": "plane", "nside": self.nside}

    def images(self, maps):
        """(C, npix) RING -> (1, C, 4 nside, 3 nside)."""
        return to_plane(maps)[None]

    def target_images(self, maps):
        """Same as :meth:`images`."""
        return self.images(maps)

    def to_map(self, images):
        """(1, C, 4 nside, 3 nside) -> (C, npix) RING."""
        return from_plane(images[0])


class PatchLayout:
    """Maps <-> nested sub-face patches with a halo: images (12 patch_nside^2, C, S, S).

    Parameters
    ----------
    nside, patch_nside, margin : int
        See :func:`patch_index`. Targets and predictions are the patch centres (``margin`` cropped).
    """

    def __init__(self, nside: int, patch_nside: int, margin: int = 0):
        self.nside = check_nside(nside)
        self.patch_nside = check_nside(patch_nside)
        self.margin = int(margin)
        patch_index(self.nside, self.patch_nside, self.margin)  # validates the combination
        self.images_per_map = 12 * self.patch_nside**2
        size = self.nside // self.patch_nside
        self.image_shape = (size + 2 * self.margin, size + 2 * self.margin)
        self.target_shape = (size, size)

    def describe(self) -> dict:
        """Plain-dict description (for manifests)."""
        return {"kind": "patch", "nside": self.nside, "patch_nside": self.patch_nside, "margin": self.margin}

    def images(self, maps):
        """(C, npix) RING -> (npatch, C, S, S) with the halo."""
        patches = to_patches(maps, self.patch_nside, self.margin)
        return patches.swapaxes(0, 1) if isinstance(patches, np.ndarray) else patches.transpose(0, 1)

    def target_images(self, maps):
        """(C, npix) RING -> (npatch, C, P, P), the patch centres (no halo)."""
        patches = to_patches(maps, self.patch_nside, 0)
        return patches.swapaxes(0, 1) if isinstance(patches, np.ndarray) else patches.transpose(0, 1)

    def to_map(self, images):
        """(npatch, C, S, S) (halo included) or (npatch, C, P, P) (centres only) -> (C, npix) RING."""
        margin = 0 if images.shape[-1] == self.target_shape[-1] else self.margin
        swapped = images.swapaxes(0, 1) if isinstance(images, np.ndarray) else images.transpose(0, 1)
        return from_patches(swapped, margin)
