"""The sky as a sum of components, each with one evaluation method (PySM's design).

A :class:`Component` returns its Stokes I, Q, U emission at one frequency as an astropy Quantity in uK_RJ,
shape (3, npix), RING ordering. :class:`Sky` is a component that sums its members. Components that are
band-limited by construction (the CMB) override :meth:`Component.emission_alm` to return exact harmonic
coefficients instead of analysing a map.
"""

from __future__ import annotations

from collections.abc import Iterable

import astropy.units as u
import numpy as np

from . import sht, units

__all__ = ["Component", "Sky"]


class Component:
    """One physical emission component on a HEALPix grid of ``nside``."""

    nside: int

    def emission(self, freq: u.Quantity) -> u.Quantity:
        """Stokes I, Q, U at ``freq``, shape (3, npix), uK_RJ."""
        raise NotImplementedError

    def emission_alm(self, freq: u.Quantity, lmax: int, iter: int = 1) -> u.Quantity:
        """Harmonic coefficients of :meth:`emission` (T, E, B), shape (3, nalm), uK_RJ.

        The default analyses the emission map with ``iter`` Jacobi refinements; band-limited components
        override it with their exact alm.
        """
        return sht.map2alm(self.emission(freq).to_value(units.uK_RJ), lmax=lmax, iter=iter) * units.uK_RJ


class Sky(Component):
    """A sum of components on one grid.

    Parameters
    ----------
    components : iterable of Component
        All on the same ``nside``.
    """

    def __init__(self, components: Iterable[Component]):
        self.components = list(components)
        if not self.components:
            raise ValueError("a Sky needs at least one component")
        nsides = {c.nside for c in self.components}
        if len(nsides) != 1:
            raise ValueError(f"all components must share one nside, got {sorted(nsides)}")
        self.nside = nsides.pop()

    def emission(self, freq: u.Quantity) -> u.Quantity:
        """Summed Stokes I, Q, U at ``freq``, shape (3, npix), uK_RJ."""
        total = np.zeros((3, sht.npix(self.nside)))
        for c in self.components:
            total += c.emission(freq).to_value(units.uK_RJ)
        return total * units.uK_RJ

    def emission_alm(self, freq: u.Quantity, lmax: int, iter: int = 1) -> u.Quantity:
        """Summed alm (T, E, B), shape (3, nalm), uK_RJ; each member uses its own (exact where it can) path."""
        return sum(c.emission_alm(freq, lmax, iter).to_value(units.uK_RJ) for c in self.components) * units.uK_RJ
