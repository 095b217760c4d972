"""Real-sky statistics of a foreground sky: the numbers that compare a synthetic model with PySM's d1/s1/f1/a1.

One function per statistic, on plain arrays (Galactic coordinates, RING ordering), and :func:`realism_table`
that measures all of them on a list of synthetic components. ``docs/foregrounds.md`` reports the table and
``tests/sky/test_realism.py`` checks it against :data:`REAL_SKY` and :data:`BANDS`.

Conventions (those of issue 12, "Foregrounds v2"):

- "high latitude" spectra use :func:`high_latitude_weight`: 0 below abs(b) = 30 deg, 1 above 40 deg, sin^2 in
  between; pseudo-C_ell of the weighted maps (``healpy.anafast``) divided by the mean squared weight.
- medians "at abs(b) > 30 deg" are over the pixels with abs(b) > 30 deg (no taper).
- slopes are least-squares fits of ln C_ell against ln ell over ell 20-100 (clipped to 3 nside - 1).
- EE/BB is the ratio of the sums of ell (ell + 1) C_ell over ell 20-100.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

import numpy as np

from . import sht
from .units import unit_factor

__all__ = [
    "REAL_SKY",
    "BANDS",
    "galactic_latitude",
    "high_latitude_weight",
    "masked_spectra",
    "spectral_slope",
    "ee_bb_ratio",
    "low_ell_share",
    "effective_index",
    "realism_table",
]

ELL_RANGE = (20, 100)
LOW_ELL = 30

# PySM d1/s1/f1/a1 at nside 64, as measured for issue 12 (abs(b) > 30 deg with the sin^2 taper 30 -> 40 deg).
# Levels in uK_CMB: dust at 353 GHz, synchrotron, free-free and AME at 30 GHz.
REAL_SKY: dict[str, float] = {
    "dust_high": 286.0,
    "sync_high": 31.2,
    "ff_high": 4.1,
    "ame_high": 14.4,
    "dust_index_std": 0.044,
    "dust_temp_std": 2.15,
    "dust_temp_vs_lnI": -0.74,
    "dust_index_vs_lnI": -0.31,
    "dust_p353_high": 24.4,
    "dust_pol_frac_high": 0.092,
    "dust_ee_bb": 1.77,
    "sync_ee_bb": 2.53,
    "dust_bb_slope": -2.85,
    "dust_tt_slope": -2.28,
    "sync_tt_slope": -3.14,
    "ff_tt_slope_high": -0.97,
    "ame_tt_slope_high": -1.34,
    "ame_100_high": 0.0070,
}

# Bands a realistic model must fall in (issue 12). Levels: within 10 % of the real sky.
BANDS: dict[str, tuple[float, float]] = {
    "dust_index_std": (0.025, 0.07),
    "dust_temp_vs_lnI": (-1.0, -0.3),
    "dust_index_vs_lnI": (-1.0, -0.05),
    "dust_ee_bb": (1.6, 2.2),
    "sync_ee_bb": (1.8, 3.3),
    "dust_bb_slope": (-2.95, -2.2),
    "dust_pol_frac_high": (0.07, 0.11),
    "dust_p353_high": (20.0, 29.0),
    "ame_100_high": (0.0, 0.02),
    **{k: (0.9 * REAL_SKY[k], 1.1 * REAL_SKY[k]) for k in ("dust_high", "sync_high", "ff_high", "ame_high")},
}


@functools.lru_cache(maxsize=4)
def galactic_latitude(nside: int) -> np.ndarray:
    """Galactic latitude b of every pixel (RING), degrees, shape (npix,), read-only."""
    import healpy as hp

    theta, _ = hp.pix2ang(nside, np.arange(sht.npix(nside)))
    b = 90.0 - np.degrees(theta)
    b.setflags(write=False)
    return b


def high_latitude_weight(nside: int, b_cut: float = 30.0, taper: float = 10.0) -> np.ndarray:
    """0 for abs(b) < ``b_cut``, 1 above ``b_cut + taper``, sin^2 in between; shape (npix,)."""
    x = np.clip((np.abs(galactic_latitude(nside)) - b_cut) / taper, 0.0, 1.0)
    return np.sin(0.5 * np.pi * x) ** 2


def masked_spectra(maps: np.ndarray, weight: np.ndarray | None = None) -> np.ndarray:
    """Pseudo-C_ell of weighted maps divided by the mean squared weight (full sky without a weight).

    Parameters
    ----------
    maps : ndarray, shape (npix,) or (3, npix)
        Intensity, or I, Q, U (any unit).
    weight : ndarray, shape (npix,), optional

    Returns
    -------
    ndarray, shape (lmax + 1,) for one map, (3, lmax + 1) TT, EE, BB for I, Q, U; lmax = 3 nside - 1
    """
    import healpy as hp

    maps = np.asarray(maps, dtype=np.float64)
    w = np.ones(maps.shape[-1]) if weight is None else np.asarray(weight, dtype=np.float64)
    cl = hp.anafast(maps * w, iter=3)
    return (cl if maps.ndim == 1 else cl[:3]) / np.mean(w**2)


def _ell_window(cl: np.ndarray, ell_range: tuple[int, int]) -> np.ndarray:
    ell = np.arange(cl.shape[-1])
    return (ell >= ell_range[0]) & (ell <= min(ell_range[1], cl.shape[-1] - 1))


def spectral_slope(cl: np.ndarray, ell_range: tuple[int, int] = ELL_RANGE) -> float:
    """Slope of ln C_ell against ln ell over ``ell_range`` (inclusive, clipped to the spectrum's lmax)."""
    sel = _ell_window(cl, ell_range)
    ell = np.arange(cl.shape[-1])[sel]
    return float(np.polyfit(np.log(ell), np.log(cl[sel]), 1)[0])


def ee_bb_ratio(cls: np.ndarray, ell_range: tuple[int, int] = ELL_RANGE) -> float:
    """sum ell (ell + 1) C_ell^EE / sum ell (ell + 1) C_ell^BB over ``ell_range``; ``cls`` is (3, lmax + 1)."""
    sel = _ell_window(cls[1], ell_range)
    ell = np.arange(cls.shape[-1])[sel]
    return float(np.sum(ell * (ell + 1) * cls[1, sel]) / np.sum(ell * (ell + 1) * cls[2, sel]))


def low_ell_share(cl: np.ndarray, ell_split: int = LOW_ELL, ell_max: int = ELL_RANGE[1]) -> float:
    """Share of the variance sum (2 ell + 1) C_ell over 2 <= ell <= ``ell_max`` that sits at ell < ``ell_split``."""
    ell = np.arange(cl.shape[-1])
    var = (2 * ell + 1) * cl
    total = var[2 : min(ell_max, cl.shape[-1] - 1) + 1].sum()
    return float(var[2:ell_split].sum() / total)


def effective_index(t1: np.ndarray, t2: np.ndarray, nu1: float, nu2: float) -> np.ndarray:
    """Effective RJ spectral index ln(T2 / T1) / ln(nu2 / nu1) per pixel (maps in RJ temperature, GHz)."""
    return np.log(t2 / t1) / np.log(nu2 / nu1)


def _cmb(component, nu: float) -> np.ndarray:
    """Stokes maps of ``component`` at ``nu`` GHz in uK_CMB, shape (3, npix)."""
    return np.asarray(component.emission(nu).value) * unit_factor(nu, "uK_RJ", "uK_CMB")


def realism_table(components: Sequence) -> dict[str, float]:
    """Every statistic of :data:`REAL_SKY` (plus ``low_ell_share_100``) for one synthetic sky.

    Parameters
    ----------
    components : sequence of Component
        Dust, synchrotron, free-free and AME in this order (as :func:`synthetic_foregrounds` returns them).
        The dust temperature statistics use the ``temp`` map of a one-MBB dust (or ``temp_hot`` of
        :class:`~cosmobench.sky.foregrounds.TwoComponentDust`).

    Returns
    -------
    dict
        Keys of :data:`REAL_SKY` and ``low_ell_share_100``: the ell < 30 share of the high-latitude C_ell^TT
        (ell 2-100) of the summed foregrounds at 100 GHz.
    """
    dust, sync, ff, ame = components
    nside = dust.nside
    high = np.abs(galactic_latitude(nside)) > 30.0
    weight = high_latitude_weight(nside)
    d353 = _cmb(dust, 353.0)
    ln_i = np.log(d353[0])
    rj100, rj353 = dust.emission(100.0).value[0], dust.emission(353.0).value[0]
    index = effective_index(rj100, rj353, 100.0, 353.0)
    temp = np.broadcast_to(getattr(dust, "temp", getattr(dust, "temp_hot", np.nan)), ln_i.shape)
    p353 = np.hypot(d353[1], d353[2])
    d_cls = masked_spectra(d353, weight)
    s30 = _cmb(sync, 30.0)
    ff30, ame30 = _cmb(ff, 30.0)[0], _cmb(ame, 30.0)[0]
    total100 = sum(_cmb(c, 100.0)[0] for c in components)
    return {
        "dust_high": float(np.median(d353[0, high])),
        "sync_high": float(np.median(s30[0, high])),
        "ff_high": float(np.median(ff30[high])),
        "ame_high": float(np.median(ame30[high])),
        "dust_index_std": float(np.std(index)),
        "dust_temp_std": float(np.std(temp)),
        "dust_temp_vs_lnI": float(np.corrcoef(temp, ln_i)[0, 1]) if np.std(temp) > 0 else 0.0,
        "dust_index_vs_lnI": float(np.corrcoef(index, ln_i)[0, 1]),
        "dust_p353_high": float(np.median(p353[high])),
        "dust_pol_frac_high": float(np.median(p353[high] / d353[0, high])),
        "dust_ee_bb": ee_bb_ratio(d_cls),
        "sync_ee_bb": ee_bb_ratio(masked_spectra(s30, weight)),
        "dust_bb_slope": spectral_slope(d_cls[2]),
        "dust_tt_slope": spectral_slope(masked_spectra(d353[0])),
        "sync_tt_slope": spectral_slope(masked_spectra(s30[0])),
        "ff_tt_slope_high": spectral_slope(masked_spectra(ff30, weight)),
        "ame_tt_slope_high": spectral_slope(masked_spectra(ame30, weight)),
        "ame_100_high": float(np.median(_cmb(ame, 100.0)[0, high])),
        "low_ell_share_100": low_ell_share(masked_spectra(total100, weight)),
    }


def realism_summary(model: str, nside: int, seeds: Sequence[int]) -> dict[str, tuple[float, float, float]]:
    """Mean, min and max over realisations of :func:`realism_table` for a named synthetic model.

    Realisation ``s`` is ``make_foregrounds("synthetic", nside, numpy.random.default_rng(s), model=model)``.

    Returns
    -------
    dict
        statistic -> (mean, min, max).
    """
    from .foregrounds import make_foregrounds

    tables = [realism_table(make_foregrounds("synthetic", nside, np.random.default_rng(s), model=model)) for s in seeds]
    values = {k: np.array([t[k] for t in tables]) for k in tables[0]}
    return {k: (float(v.mean()), float(v.min()), float(v.max())) for k, v in values.items()}


def main(argv: Sequence[str] | None = None) -> None:
    """Print the realism table (Markdown) of synthetic models beside the real sky:
    ``python -m cosmobench.sky.realism [--nside 64] [--seeds 5] [--models default alt filament]``."""
    import argparse

    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("--nside", type=int, default=64)
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--models", nargs="+", default=["default", "alt", "filament"])
    args = parser.parse_args(argv)
    rows = {m: realism_summary(m, args.nside, range(args.seeds)) for m in args.models}
    print("| statistic | real sky (PySM) | band | " + " | ".join(f"`{m}`" for m in args.models) + " |")
    print("|---|---|---|" + "---|" * len(args.models))
    for key in rows[args.models[0]]:
        real = f"{REAL_SKY[key]:.3g}" if key in REAL_SKY else "—"
        band = "{:.3g} … {:.3g}".format(*BANDS[key]) if key in BANDS else "—"
        cells = ["{:.3g} ({:.3g} … {:.3g})".format(*rows[m][key]) for m in args.models]
        print(f"| {key} | {real} | {band} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
