"""Gaussian CMB realisations (T, Q, U in uK_CMB) from power spectra, and the CMB sky component.

The input spectra are the final, *lensed* sky spectra (e.g. :func:`cosmobench.sky.cosmology.cmb_spectra`):
a realisation is drawn directly from them as a Gaussian field and never lensed again. Maps are band-limited
to ``lmax = 3 nside - 1`` by construction, carry no beam and no pixel window, and their alm are kept so that
instruments can apply beams exactly in harmonic space (:meth:`CMB.emission_alm`).
"""

from __future__ import annotations

import astropy.units as u
import numpy as np

from . import sht, units
from .components import Component
from .units import kcmb_to_krj

__all__ = ["cmb_alm", "cmb_map", "CMB"]


def cmb_alm(cls: np.ndarray, lmax: int, rng: np.random.Generator) -> np.ndarray:
    """Gaussian T, E, B harmonic coefficients with the given spectra.

    Parameters
    ----------
    cls : ndarray, shape (4, lmax_in+1), uK_CMB^2
        C_ell (not D_ell) TT, EE, BB, TE from ell = 0, with lmax_in >= lmax.
    lmax : int
        Band limit of the output.
    rng : numpy.random.Generator
        Source of randomness.

    Returns
    -------
    ndarray, shape (3, nalm), complex128, uK_CMB
        T, E, B in healpy's alm layout (mmax = lmax).
    """
    cls = np.asarray(cls, dtype=np.float64)
    if cls.ndim != 2 or cls.shape[0] != 4:
        raise ValueError(f"cls must have shape (4, lmax+1) for TT, EE, BB, TE; got {cls.shape}")
    return sht.synalm(cls, int(lmax), rng)


def cmb_map(cls: np.ndarray, nside: int, rng: np.random.Generator, lmax: int | None = None) -> np.ndarray:
    """A Gaussian CMB realisation as I, Q, U maps.

    Parameters
    ----------
    cls : ndarray, shape (4, lmax_in+1), uK_CMB^2
        C_ell TT, EE, BB, TE from ell = 0, with lmax_in >= lmax.
    nside : int
        HEALPix resolution (RING ordering).
    rng : numpy.random.Generator
        Source of randomness.
    lmax : int, optional
        Band limit; defaults to 3 nside - 1. No beam and no pixel window are applied.

    Returns
    -------
    ndarray, shape (3, 12 nside^2), float64, uK_CMB
    """
    lmax = sht.default_lmax(nside) if lmax is None else int(lmax)
    return sht.alm2map(cmb_alm(cls, lmax, rng), nside, lmax)


class CMB(Component):
    """The CMB as a sky component: a fixed T, E, B realisation, flat in K_CMB across frequencies.

    Parameters
    ----------
    alm : ndarray, shape (3, nalm), complex, uK_CMB
        T, E, B harmonic coefficients (healpy layout, mmax = lmax).
    nside : int
        Resolution of the emission maps.

    Examples
    --------
    >>> import numpy as np
    >>> from cosmobench.sky.cmb import CMB
    >>> cls = np.zeros((4, 48)); cls[:3, 2:] = 1.0
    >>> cmb = CMB.from_spectra(cls, nside=16, rng=np.random.default_rng(0))
    >>> cmb.map().shape
    (3, 3072)
    """

    def __init__(self, alm: np.ndarray, nside: int):
        alm = np.asarray(alm, dtype=np.complex128)
        if alm.ndim != 2 or alm.shape[0] != 3:
            raise ValueError(f"alm must have shape (3, nalm) for T, E, B; got {alm.shape}")
        self.alm = alm
        self.lmax = sht.alm_lmax(alm.shape[1])
        self.nside = sht.check_nside(nside)
        self._map: np.ndarray | None = None

    @classmethod
    def from_spectra(cls, cls_: np.ndarray, nside: int, rng: np.random.Generator, lmax: int | None = None) -> CMB:
        """Draw a realisation of ``cls_`` (shape (4, lmax_in+1), C_ell in uK_CMB^2) band-limited to ``lmax``
        (default 3 nside - 1)."""
        lmax = sht.default_lmax(nside) if lmax is None else int(lmax)
        return cls(cmb_alm(cls_, lmax, rng), nside)

    def map(self) -> np.ndarray:
        """The unbeamed target map: I, Q, U in uK_CMB, shape (3, npix) (computed once, then cached)."""
        if self._map is None:
            self._map = sht.alm2map(self.alm, self.nside, self.lmax)
        return self._map

    def emission(self, freq: u.Quantity) -> u.Quantity:
        """Stokes I, Q, U at ``freq``, shape (3, npix), uK_RJ."""
        return self.map() * _krj_factor(freq) * units.uK_RJ

    def emission_alm(self, freq: u.Quantity, lmax: int, iter: int = 1) -> u.Quantity:
        """Exact T, E, B alm of :meth:`emission`, shape (3, alm_size(lmax)), uK_RJ.

        ``iter`` is ignored (no map analysis is needed); the alm are truncated or zero-padded to ``lmax``.
        """
        lmax = int(lmax)
        out = np.zeros((3, sht.alm_size(lmax)), dtype=np.complex128)
        common = min(lmax, self.lmax)
        for m in range(common + 1):
            src = _mstart(m, self.lmax)
            dst = _mstart(m, lmax)
            out[:, dst : dst + common - m + 1] = self.alm[:, src : src + common - m + 1]
        return out * _krj_factor(freq) * units.uK_RJ


def _krj_factor(freq: u.Quantity) -> float:
    """uK_RJ per uK_CMB at ``freq`` (a Quantity, or a number in GHz)."""
    return float(kcmb_to_krj(u.Quantity(freq, u.GHz).to_value(u.GHz, equivalencies=u.spectral())))


def _mstart(m: int, lmax: int) -> int:
    """Index of (ell = m, m) in healpy's layout."""
    return m * (2 * lmax + 1 - m) // 2 + m
