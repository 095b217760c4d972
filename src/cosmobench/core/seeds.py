"""Random streams derived from one dataset seed with :class:`numpy.random.SeedSequence`.

Every random draw in cosmobench comes from a generator made here. A stream is named by the dataset seed
and a key of integers and strings, e.g. ``(seed, "Train", 12, "noise", "100")``. Strings are mapped to
integers with CRC-32 of their UTF-8 bytes, a stable and documented hash, so the stream of simulation
``i`` of a split does not depend on the worker count, the order of execution or the Python version.
"""

from __future__ import annotations

import zlib

import numpy as np

__all__ = ["key_to_ints", "seed_sequence", "rng", "torch_seed"]


def key_to_ints(key: tuple[int | str, ...]) -> tuple[int, ...]:
    """Turn a stream key into non-negative integers (strings through CRC-32).

    Parameters
    ----------
    key : tuple of int or str
        Names of the stream, from the most general to the most specific.

    Returns
    -------
    tuple of int
    """
    out = []
    for part in key:
        if isinstance(part, (bool, np.bool_)):
            raise TypeError("a seed key part must be an int or a str, not a bool")
        if isinstance(part, (int, np.integer)):
            if part < 0:
                raise ValueError(f"seed key parts must be non-negative, got {part}")
            out.append(int(part))
        elif isinstance(part, str):
            out.append(zlib.crc32(part.encode("utf-8")))
        else:
            raise TypeError(f"a seed key part must be an int or a str, not {type(part).__name__}")
    return tuple(out)


def seed_sequence(seed: int, *key: int | str) -> np.random.SeedSequence:
    """The :class:`~numpy.random.SeedSequence` of stream ``key`` under dataset seed ``seed``."""
    if int(seed) < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed}")
    return np.random.SeedSequence(int(seed), spawn_key=key_to_ints(key))


def rng(seed: int, *key: int | str) -> np.random.Generator:
    """A fresh :class:`~numpy.random.Generator` (PCG64) for stream ``key``.

    Examples
    --------
    >>> a = rng(1, "Train", 3, "cmb").standard_normal(2)
    >>> b = rng(1, "Train", 3, "cmb").standard_normal(2)
    >>> bool((a == b).all())
    True
    """
    return np.random.Generator(np.random.PCG64(seed_sequence(seed, *key)))


def torch_seed(seed: int, *key: int | str) -> int:
    """A 63-bit integer seed for ``torch.Generator.manual_seed`` from stream ``key``."""
    hi, lo = (int(v) for v in seed_sequence(seed, *key).generate_state(2, dtype=np.uint32))
    return ((hi & 0x7FFFFFFF) << 32) | lo
