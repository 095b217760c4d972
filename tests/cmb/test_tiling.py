"""HEALPix <-> images: exact round trips, the reference face arrangement, sphere neighbours, patch halos."""

from __future__ import annotations

import healpy as hp
import numpy as np
import pytest
import torch

from cosmobench.cmb.tiling import (
    PLANE_FACES,
    PatchLayout,
    PlaneLayout,
    from_patches,
    from_plane,
    patch_index,
    plane_index,
    to_patches,
    to_plane,
)
from cosmobench.core.seeds import rng


def _are_neighbours(nside, a, b):
    """Elementwise: is RING pixel b one of the 8 (or 7) sphere neighbours of RING pixel a?"""
    return (hp.get_all_neighbours(nside, a) == b[None]).any(axis=0)


@pytest.mark.parametrize("nside", [4, 16, 32])
def test_plane_round_trip_is_exact(nside):
    maps = rng(0, "tiling", nside).standard_normal((3, 12 * nside**2))
    plane = to_plane(maps)
    assert plane.shape == (3, 4 * nside, 3 * nside)
    assert np.array_equal(from_plane(plane), maps)
    assert np.array_equal(np.sort(plane_index(nside).ravel()), np.arange(12 * nside**2))
    tensor = torch.from_numpy(maps)
    assert torch.equal(from_plane(to_plane(tensor)), tensor)


def test_plane_follows_the_reference_arrangement():
    """Face rows [2,6,9],[3,7,10],[0,4,11],[1,5,8]; NEST index 0 of a face bottom-right, nside^2-1 top-left."""
    nside = 8
    nest = hp.ring2nest(nside, plane_index(nside))
    faces = nest // nside**2
    assert np.array_equal(faces[::nside, ::nside], np.array(PLANE_FACES))
    for r, row in enumerate(PLANE_FACES):
        for c, face in enumerate(row):
            block = nest[r * nside : (r + 1) * nside, c * nside : (c + 1) * nside] - face * nside**2
            assert block[-1, -1] == 0 and block[0, 0] == nside**2 - 1
            # Z-order: the bottom-right 2x2 block holds NEST 0..3
            assert sorted(block[-2:, -2:].ravel()) == [0, 1, 2, 3]


def test_plane_neighbours_are_sphere_neighbours():
    """Within each row of faces, horizontally and vertically adjacent pixels are sphere neighbours (also across
    left-right face boundaries); across the row boundaries they never are."""
    nside = 16
    idx = plane_index(nside)
    horizontal = _are_neighbours(nside, idx[:, :-1], idx[:, 1:])
    vertical = _are_neighbours(nside, idx[:-1], idx[1:])
    assert horizontal.all()
    row_boundary = (np.arange(4 * nside - 1) % nside) == nside - 1
    assert vertical[~row_boundary].all()
    assert not vertical[row_boundary].any()


@pytest.mark.parametrize("nside, patch_nside, margin", [(4, 1, 0), (16, 2, 0), (16, 4, 2), (32, 2, 8), (16, 1, 16)])
def test_patch_round_trip_is_exact(nside, patch_nside, margin):
    maps = rng(1, "patch", nside).standard_normal((2, 12 * nside**2))
    patches = to_patches(maps, patch_nside, margin)
    size = nside // patch_nside + 2 * margin
    assert patches.shape == (2, 12 * patch_nside**2, size, size)
    assert np.array_equal(from_patches(patches, margin), maps)
    tensor = torch.from_numpy(maps)
    assert torch.equal(from_patches(to_patches(tensor, patch_nside, margin), margin), tensor)


def test_patches_are_nested_sub_faces():
    """Patch k holds exactly the NEST children of coarse pixel k, laid out like the plane's face blocks."""
    nside, patch_nside = 16, 4
    idx = patch_index(nside, patch_nside)
    children = hp.ring2nest(nside, idx) // (nside // patch_nside) ** 2
    assert np.array_equal(children, np.broadcast_to(np.arange(12 * patch_nside**2)[:, None, None], idx.shape))
    faces = patch_index(nside, 1)
    plane = plane_index(nside)
    for r, row in enumerate(PLANE_FACES):
        for c, face in enumerate(row):
            assert np.array_equal(faces[face], plane[r * nside : (r + 1) * nside, c * nside : (c + 1) * nside])


def test_halo_of_one_pixel_matches_healpix_neighbours():
    """The 1-pixel halo beside each edge pixel is that pixel's HEALPix neighbour in the same direction."""
    nside = 8
    idx = patch_index(nside, 2, margin=1)
    nb = hp.get_all_neighbours(nside, idx[:, 1:-1, 1:-1])  # SW, W, NW, N, NE, E, SE, S
    # image rows run against y (up = +y), columns against x (left = +x): (d_row, d_col) of each direction
    steps = [(0, 1), (-1, 1), (-1, 0), (-1, -1), (0, -1), (1, -1), (1, 0), (1, 1)]
    n = idx.shape[-1] - 2
    for k, (dr, dc) in enumerate(steps):
        shifted = idx[:, 1 + dr : 1 + dr + n, 1 + dc : 1 + dc + n]
        exists = nb[k] >= 0
        assert exists.mean() > 0.95 and np.array_equal(shifted[exists], nb[k][exists]), k


def test_halos_are_continuous_except_at_the_eight_three_face_corners():
    """Adjacent halo pixels are sphere neighbours everywhere except in the 24 patches that touch one of the 8
    points where only three faces meet (the missing diagonal quadrant is mirrored)."""
    nside, patch_nside, margin = 16, 4, 3
    idx = patch_index(nside, patch_nside, margin)
    ok = _are_neighbours(nside, idx[:, :, :-1], idx[:, :, 1:]).all(axis=(1, 2))
    ok &= _are_neighbours(nside, idx[:, :-1], idx[:, 1:]).all(axis=(1, 2))
    assert (~ok).sum() == 24


def test_layouts_round_trip_and_validate():
    nside = 16
    maps = rng(2, "layout").standard_normal((3, 12 * nside**2)).astype(np.float32)
    plane = PlaneLayout(nside)
    assert np.array_equal(plane.to_map(plane.images(maps)), maps)
    patch = PatchLayout(nside, 2, margin=4)
    images = patch.images(maps)
    assert images.shape == (48, 3, 16, 16)
    assert np.array_equal(patch.to_map(images), maps)
    assert np.array_equal(patch.to_map(patch.target_images(maps)), maps)
    with pytest.raises(ValueError, match="margin"):
        patch_index(nside, 2, margin=17)
    with pytest.raises(ValueError, match="4 nside, 3 nside"):
        from_plane(np.zeros((40, 20)))
