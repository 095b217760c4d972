"""The dihedral augmentation is the group D4 of order 8, and every element is drawn (reference flaw 1)."""

from __future__ import annotations

import itertools

import numpy as np
import torch

from cosmobench.multifield.augment import DIHEDRAL, all_transforms, apply, compose, inverse, random_transform


def _image():
    return torch.arange(36, dtype=torch.float32).reshape(1, 6, 6) ** 1.5  # no symmetry of its own


def _key(x):
    return tuple(x.flatten().tolist())


def test_eight_distinct_elements_closed_under_composition():
    x = _image()
    images = {g: _key(apply(x, g)) for g in DIHEDRAL}
    assert len(set(images.values())) == 8
    assert images[(0, False)] == _key(x)
    for a, b in itertools.product(DIHEDRAL, DIHEDRAL):
        ab = _key(apply(apply(x, b), a))
        assert ab in images.values()  # closure
        assert ab == images[compose(a, b)]  # the composition law is the real one
    for a in DIHEDRAL:
        assert _key(apply(apply(x, a), inverse(a))) == _key(x)
    r, f = (1, False), (0, True)
    assert compose(r, f) != compose(f, r)  # non-abelian: it is D4, not Z8 or Z2 x Z4


def test_all_transforms_shape():
    x = torch.randn(3, 2, 8, 8)
    out = all_transforms(x)
    assert out.shape == (8, 3, 2, 8, 8)
    torch.testing.assert_close(out[0], x)


def test_flip_is_drawn():
    """Every element, flips included, is drawn with probability 1/8 (chi-square at 5 sigma)."""
    n = 4000
    x = _image().expand(n, 1, 6, 6).clone()
    out = random_transform(x, generator=torch.Generator().manual_seed(0))
    lookup = {_key(apply(_image(), g)): i for i, g in enumerate(DIHEDRAL)}
    counts = np.bincount([lookup[_key(o)] for o in out], minlength=8)  # each output is some element of its input
    chi2 = np.sum((counts - n / 8) ** 2 / (n / 8))
    assert chi2 < 7 + 5 * np.sqrt(14)
    assert counts[4:].sum() > 0.4 * n
