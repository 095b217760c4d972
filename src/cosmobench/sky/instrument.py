"""An instrument: frequency channels with bandpasses, Gaussian beams and noise, and how it observes a sky.

A :class:`Channel` holds everything one frequency map needs. :func:`load_channels` reads them from a small
whitespace table (the packaged default is CMB-ML's 9 channels with Planck 2018 depths, see
``cosmobench/data/README.md``). :meth:`Instrument.observe` turns a sky (any
:class:`~cosmobench.sky.components.Component`) into maps in uK_CMB, one per channel::

    inst = planck_like(bands=["70", "100", "143"])
    maps = inst.observe(Sky([cmb, *foregrounds]), seed=1, key=("Train", 0))   # band -> (3, npix) uK_CMB

Per channel the sky is integrated over the bandpass in harmonic space (exact alm for band-limited
components such as the CMB, one analysis of the summed map for all others), multiplied by the beam, and
synthesised once; noise from :func:`cosmobench.sky.noise.noise_maps` is added in pixels. Components given as
pixel maps (the foregrounds) first pass a Gaussian sky window (:meth:`Instrument.sky_window_fwhm`) wherever
the narrowest beam does not vanish by the band limit: their structure down to the pixel scale would otherwise
ring (Gibbs) around the bright Galactic plane, to -10^7 uK_CMB at 857 GHz at nside 64.
"""

from __future__ import annotations

import functools
import importlib.resources
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, fields
from pathlib import Path

import numpy as np

from ..core.seeds import rng as stream
from . import sht, units
from .components import Component, Sky
from .noise import hit_map, noise_maps
from .units import unit_factor

__all__ = ["Channel", "load_channels", "bandpass_weights", "beam_lmax", "Instrument", "planck_like", "DEFAULT_TABLE"]

DEFAULT_TABLE = "cmbml_channels.tbl"
_FIELDS = ("IQU", "I")
_BANDPASSES = ("delta", "tophat")


@dataclass(frozen=True, kw_only=True)
class Channel:
    """One frequency channel.

    Attributes
    ----------
    band : str
        Name used in file names, the bare integer for the CMB-ML channels ("30", ..., "857").
    center_ghz : float
        Centre frequency, GHz.
    fwhm_arcmin : float
        Gaussian beam FWHM, arcmin (0 = no beam).
    fields : {"IQU", "I"}
        Stokes parameters observed.
    bandpass : {"delta", "tophat"}
        Delta function at ``center_ghz``, or flat response to specific intensity over
        ``center_ghz * (1 +- bandwidth / 2)``.
    bandwidth : float
        Fractional width of the top-hat (e.g. 0.2); ignored for "delta".
    depth_i, depth_p : float
        White-noise depth at the mean hit count, uK_CMB arcmin, in temperature and in Q and U
        (``depth_p`` is ignored when ``fields == "I"``).
    ell_knee : float
        Knee multipole of the correlated noise component (0 = none).
    alpha_knee : float
        Slope of the correlated component, N_ell = depth^2 (ell / ell_knee)^alpha_knee.
    """

    band: str
    center_ghz: float
    fwhm_arcmin: float
    fields: str = "IQU"
    bandpass: str = "delta"
    bandwidth: float = 0.0
    depth_i: float
    depth_p: float
    ell_knee: float = 0.0
    alpha_knee: float = -2.0

    def __post_init__(self):
        object.__setattr__(self, "band", str(self.band))
        for name in ("center_ghz", "fwhm_arcmin", "bandwidth", "depth_i", "depth_p", "ell_knee", "alpha_knee"):
            object.__setattr__(self, name, float(getattr(self, name)))
        where = f"channel {self.band!r}"
        if self.fields not in _FIELDS:
            raise ValueError(f"{where}: fields must be one of {_FIELDS}, got {self.fields!r}")
        if self.bandpass not in _BANDPASSES:
            raise ValueError(f"{where}: bandpass must be one of {_BANDPASSES}, got {self.bandpass!r}")
        if not self.center_ghz > 0:
            raise ValueError(f"{where}: center_ghz must be positive, got {self.center_ghz}")
        if self.bandpass == "tophat" and not 0 < self.bandwidth < 2:
            raise ValueError(f"{where}: a top-hat needs 0 < bandwidth < 2 (fractional width), got {self.bandwidth}")
        for name in ("fwhm_arcmin", "depth_i", "depth_p", "ell_knee"):
            if getattr(self, name) < 0:
                raise ValueError(f"{where}: {name} must be >= 0, got {getattr(self, name)}")

    @property
    def nfield(self) -> int:
        """Number of Stokes maps: 3 for IQU, 1 for I."""
        return len(self.fields)


def _read_table(text: str, source: str) -> list[dict]:
    lines = [ln.split() for ln in text.splitlines() if ln.strip() and not ln.lstrip().startswith("#")]
    if not lines:
        raise ValueError(f"{source}: no header line")
    header, rows = lines[0], lines[1:]
    known = {f.name for f in fields(Channel)}
    unknown = [c for c in header if c not in known]
    if unknown:
        raise ValueError(f"{source}: unknown column(s) {unknown}; columns are the Channel fields {sorted(known)}")
    out = []
    for n, row in enumerate(rows, start=2):
        if len(row) != len(header):
            raise ValueError(f"{source}: data line {n} has {len(row)} values for {len(header)} columns")
        out.append(dict(zip(header, row)))
    return out


def load_channels(
    path: str | Path | None = None, *, bands: Sequence[str] | None = None, fields: str | None = None
) -> list[Channel]:
    """Read channels from a table file.

    Parameters
    ----------
    path : str or Path, optional
        A whitespace table: ``#`` comment lines, one header line naming :class:`Channel` fields, one line per
        channel (missing optional columns take the defaults). Default: the packaged ``cmbml_channels.tbl``.
    bands : sequence of str, optional
        Keep these bands, in this order (default: all, in file order).
    fields : {"IQU", "I"}, optional
        Override the Stokes parameters of every channel.

    Returns
    -------
    list of Channel

    Examples
    --------
    >>> [c.band for c in load_channels(bands=["100", "857"])]
    ['100', '857']
    """
    if path is None:
        source = f"cosmobench/data/{DEFAULT_TABLE}"
        text = importlib.resources.files("cosmobench").joinpath("data", DEFAULT_TABLE).read_text()
    else:
        source = str(path)
        text = Path(path).read_text()
    channels = [Channel(**row) for row in _read_table(text, source)]
    by_band = {c.band: c for c in channels}
    if len(by_band) != len(channels):
        raise ValueError(f"{source}: duplicate band names")
    if bands is not None:
        missing = [str(b) for b in bands if str(b) not in by_band]
        if missing:
            raise ValueError(f"unknown band(s) {missing}; {source} has {list(by_band)}")
        channels = [by_band[str(b)] for b in bands]
    if fields is not None:
        if fields not in _FIELDS:
            raise ValueError(f"fields must be one of {_FIELDS}, got {fields!r}")
        channels = [Channel(**{**_as_dict(c), "fields": fields}) for c in channels]
    return channels


def _as_dict(channel: Channel) -> dict:
    return {f.name: getattr(channel, f.name) for f in fields(Channel)}


@functools.lru_cache(maxsize=64)
def bandpass_weights(channel: Channel, npoints: int = 11) -> tuple[np.ndarray, np.ndarray]:
    """Frequencies and weights that turn Rayleigh-Jeans maps into the channel's band-averaged uK_CMB map.

    The channel's map is ``sum_k weights[k] * T_RJ(freqs[k])`` with ``T_RJ`` in uK_RJ. For a top-hat this is
    the trapezoid rule for ``int I_nu dnu / int dB_nu/dT_CMB dnu`` (flat response to specific intensity,
    PySM's convention), so a CMB map comes out unchanged in uK_CMB.

    Returns
    -------
    freqs : ndarray, shape (n,), GHz
    weights : ndarray, shape (n,), uK_CMB per uK_RJ
    """
    nu0 = channel.center_ghz
    if channel.bandpass == "delta":
        freqs, weights = np.array([nu0]), np.array([float(unit_factor(nu0, "uK_RJ", "uK_CMB"))])
    else:
        half = 0.5 * channel.bandwidth * nu0
        freqs = np.linspace(nu0 - half, nu0 + half, npoints)
        trap = np.full(npoints, freqs[1] - freqs[0])
        trap[[0, -1]] *= 0.5
        jy_per_rj = unit_factor(freqs, "uK_RJ", "Jy/sr")
        jy_per_cmb = unit_factor(freqs, "uK_CMB", "Jy/sr")
        weights = trap * jy_per_rj / np.sum(trap * jy_per_cmb)
    for a in (freqs, weights):
        a.setflags(write=False)  # cached: shared by every caller
    return freqs, weights


def _flatten(sky: Component) -> list[Component]:
    if isinstance(sky, Sky):
        return [c for member in sky.components for c in _flatten(member)]
    return [sky]


def _has_exact_alm(component: Component) -> bool:
    return type(component).emission_alm is not Component.emission_alm


def _rj_values(q) -> np.ndarray:
    """A Quantity in K_RJ units (or a bare array in uK_RJ) as an array in uK_RJ (real maps or complex alm)."""
    return q.to_value(units.uK_RJ) if hasattr(q, "unit") else np.asarray(q)


def _band_map(components: list[Component], freqs: np.ndarray, weights: np.ndarray, nfield: int) -> np.ndarray:
    """sum_k weights[k] sum_c emission_c(freqs[k]): the band-averaged map of ``components``, (nfield, npix), uK_CMB."""
    out = np.zeros((nfield, sht.npix(components[0].nside)))
    for nu, w in zip(freqs, weights):
        point = out if len(freqs) == 1 else np.zeros_like(out)
        for comp in components:
            point += _rj_values(comp.emission(_ghz(nu)))[:nfield]
        if point is not out:
            out += w * point
    if len(freqs) == 1:
        out *= weights[0]
    return out


def _fit_lmax(alm: np.ndarray, lmax: int) -> np.ndarray:
    """Truncate (n, nalm) alm in healpy layout to ``lmax``; raise if they stop below it."""
    have = sht.alm_lmax(alm.shape[-1])
    if have == lmax:
        return alm
    if have < lmax:
        raise ValueError(f"a component returned alm to lmax {have}, the instrument needs {lmax}")
    keep = np.concatenate([m * (2 * have + 3 - m) // 2 + np.arange(lmax + 1 - m) for m in range(lmax + 1)])
    return alm[..., keep]


def beam_lmax(fwhm_arcmin: float, lmax: int, tol: float = 1e-7) -> int:
    """Largest multipole worth computing under a Gaussian beam: min(lmax, ell where b_ell falls below tol)."""
    sigma = math.radians(fwhm_arcmin / 60.0) / math.sqrt(8.0 * math.log(2.0))
    if sigma == 0 or tol <= 0:
        return lmax
    return int(min(lmax, max(2, math.ceil(math.sqrt(2.0 * math.log(1.0 / tol)) / sigma))))


class Instrument:
    """A set of channels that observes a sky.

    Parameters
    ----------
    channels : sequence of Channel
        Distinct band names.
    tophat_points : int
        Frequencies sampled across a top-hat bandpass.
    beam_tol : float
        Multipoles where the beam transfer function b_ell is below ``beam_tol`` are not computed
        (they would contribute less than ``beam_tol`` of their signal); 0 computes all.
    sky_window_tol : float
        Components given as maps are smoothed by a Gaussian sky window, the same in every channel, so that the
        window times the narrowest beam is at most ``sky_window_tol`` at the band limit (no ringing around
        the Galactic plane, see :meth:`sky_window_fwhm`); 0 turns the window off.
    """

    def __init__(
        self,
        channels: Sequence[Channel],
        *,
        tophat_points: int = 11,
        beam_tol: float = 1e-7,
        sky_window_tol: float = 0.01,
    ):
        self.channels = list(channels)
        if not self.channels:
            raise ValueError("an Instrument needs at least one channel")
        for c in self.channels:
            if not isinstance(c, Channel):
                raise TypeError(f"channels must be Channel objects, got {type(c).__name__}")
        self.bands = [c.band for c in self.channels]
        if len(set(self.bands)) != len(self.bands):
            raise ValueError(f"duplicate band names in {self.bands}")
        if tophat_points < 2:
            raise ValueError(f"tophat_points must be >= 2, got {tophat_points}")
        self.tophat_points = int(tophat_points)
        self.beam_tol = float(beam_tol)
        if not 0 <= sky_window_tol < 1:
            raise ValueError(f"sky_window_tol must be in [0, 1), got {sky_window_tol}")
        self.sky_window_tol = float(sky_window_tol)

    def __repr__(self) -> str:
        return f"Instrument(bands={self.bands})"

    def sky_window_fwhm(self, lmax: int) -> float:
        """FWHM (arcmin) of the Gaussian window applied to map-defined components at band limit ``lmax``.

        A sky map holds structure down to its pixels; cut at ``lmax`` under a beam that does not vanish there,
        it rings, and around the Galactic plane at 857 GHz (10^9 uK_CMB) the negative side lobes reach -10^7
        uK_CMB at nside 64, far below the noise. The window makes the transfer function of these components,
        window x narrowest beam b_ell, a Gaussian worth at most ``sky_window_tol`` at ``lmax``:
        FWHM_total^2 = 8 ln 2 * 2 ln(1 / tol) / lmax^2, window FWHM^2 = FWHM_total^2 - FWHM_beam^2 (0 when the
        beam alone is narrow enough in ell: nside >= 256 for the default channels). The window is common to all
        channels, so the foreground sky stays one sky, seen through each channel's beam.

        Returns
        -------
        float
            0.0 for no window.
        """
        if self.sky_window_tol == 0:
            return 0.0
        sigma_total = math.sqrt(2.0 * math.log(1.0 / self.sky_window_tol)) / lmax  # rad
        fwhm_total = math.degrees(sigma_total * math.sqrt(8.0 * math.log(2.0))) * 60.0
        fwhm_beam = min(c.fwhm_arcmin for c in self.channels)
        return math.sqrt(max(0.0, fwhm_total**2 - fwhm_beam**2))

    def observe(
        self,
        sky: Component,
        *,
        seed: int,
        key: tuple = (),
        noise: bool = True,
        lmax: int | None = None,
        fg_iter: int = 0,
        timings: dict | None = None,
    ) -> dict[str, np.ndarray]:
        """Observe ``sky`` in every channel.

        Parameters
        ----------
        sky : Component
            A component or a :class:`~cosmobench.sky.components.Sky`, on the output ``nside``.
        seed : int
            Dataset seed; channel ``band`` draws its noise from ``rng(seed, *key, "noise", band)``.
        key : tuple
            Stream key of this simulation, e.g. ``("Train", 12)``.
        noise : bool
            Add noise (:func:`cosmobench.sky.noise.noise_maps`).
        lmax : int, optional
            Band limit of the beam-smoothed sky (default 3 nside - 1).
        fg_iter : int
            Jacobi iterations when analysing emission maps (components without exact alm); these maps are
            smoothed by the sky window of :meth:`sky_window_fwhm` before the beam.
        timings : dict, optional
            Accumulates seconds under "foregrounds" (emission and analysis), "beams" (beam and synthesis)
            and "noise".

        Returns
        -------
        dict
            band -> float64 array, shape (nfield, npix), uK_CMB, with nfield 3 (I, Q, U) or 1 (I).
        """
        nside = sht.check_nside(sky.nside)
        lmax = sht.default_lmax(nside) if lmax is None else int(lmax)
        members = _flatten(sky)
        exact = [c for c in members if _has_exact_alm(c)]
        mapped = [c for c in members if not _has_exact_alm(c)]
        hits = hit_map(nside) if noise else None
        window_fwhm = self.sky_window_fwhm(lmax)
        clock = timings if timings is not None else {}
        out = {}
        for ch in self.channels:
            t0 = time.perf_counter()
            nf = ch.nfield
            lmax_ch = beam_lmax(ch.fwhm_arcmin, lmax, self.beam_tol)
            freqs, weights = bandpass_weights(ch, self.tophat_points)
            alm = np.zeros((nf, sht.alm_size(lmax_ch)), dtype=np.complex128)
            if mapped:
                alm += sht.map2alm(_band_map(mapped, freqs, weights, nf), lmax=lmax_ch, iter=fg_iter)
                if window_fwhm:
                    alm = sht.almxfl(alm, sht.gauss_beam(window_fwhm, lmax_ch))
            for comp in exact:
                for nu, w in zip(freqs, weights):
                    alm += w * _fit_lmax(_rj_values(comp.emission_alm(_ghz(nu), lmax_ch, fg_iter))[:nf], lmax_ch)
            t1 = time.perf_counter()
            alm = sht.almxfl(alm, sht.gauss_beam(ch.fwhm_arcmin, lmax_ch, pol=True)[:nf])
            maps = sht.alm2map(alm, nside, lmax_ch)
            t2 = time.perf_counter()
            if noise:
                maps += noise_maps(ch, nside, stream(seed, *key, "noise", ch.band), hits)
            t3 = time.perf_counter()
            for name, dt in (("foregrounds", t1 - t0), ("beams", t2 - t1), ("noise", t3 - t2)):
                clock[name] = clock.get(name, 0.0) + dt
            out[ch.band] = maps
        return out


def _ghz(nu: float):
    import astropy.units as u

    return float(nu) * u.GHz


def planck_like(bands: Sequence[str] | None = None) -> Instrument:
    """The default 9-channel instrument (CMB-ML channels and beams, Planck 2018 depths), or a subset of it."""
    return Instrument(load_channels(bands=bands))
