"""Conversions between K_CMB, K_RJ and MJy/sr at a frequency, through astropy's equivalencies.

Unit names are strings with an optional SI prefix: ``"uK_CMB"``, ``"K_CMB"``, ``"mK_RJ"``, ``"uK_RJ"``,
``"MJy/sr"``, ``"Jy/sr"``. Every conversion goes through specific intensity (Jy/sr) with
``astropy.units.thermodynamic_temperature`` (T_CMB = 2.7255 K) for CMB units and
``astropy.units.brightness_temperature`` for Rayleigh-Jeans units, so round trips are exact to float precision.
"""

from __future__ import annotations

import astropy.units as u
import numpy as np

__all__ = ["T_CMB", "unit_factor", "kcmb_to_krj", "krj_to_kcmb", "mjysr_to_kcmb"]

T_CMB = 2.7255 * u.K
_SKY_UNITS = ("K_RJ", "mK_RJ", "uK_RJ", "K_CMB", "mK_CMB", "uK_CMB")


def __getattr__(name: str) -> u.UnitBase:
    """``units.uK_RJ`` etc.: PySM3's sky temperature units (astropy has none), imported on first use.

    They are PySM's own unit objects so that quantities from cosmobench and from PySM3 components mix; converting
    between RJ and CMB units needs the frequency (:func:`unit_factor`).
    """
    if name in _SKY_UNITS:
        import pysm3.units

        return getattr(pysm3.units, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


_PREFIX = {"": 1.0, "m": 1e-3, "u": 1e-6, "n": 1e-9}


def _to_jysr(unit: str, freq: u.Quantity) -> float:
    """Jy/sr per one ``unit`` at ``freq``."""
    if unit.endswith("_CMB") or unit.endswith("_RJ"):
        temp, kind = unit.split("_")
        prefix = temp[:-1]
        if temp[-1:] != "K" or prefix not in _PREFIX:
            raise ValueError(f"unknown unit {unit!r}; expected e.g. 'uK_CMB', 'K_RJ', 'MJy/sr'")
        equiv = u.thermodynamic_temperature(freq, T_CMB) if kind == "CMB" else u.brightness_temperature(freq)
        return (_PREFIX[prefix] * u.K).to_value(u.Jy / u.sr, equivalencies=equiv)
    try:
        return (1.0 * u.Unit(unit)).to_value(u.Jy / u.sr)
    except (ValueError, u.UnitConversionError):
        raise ValueError(f"unknown unit {unit!r}; expected e.g. 'uK_CMB', 'K_RJ', 'MJy/sr'") from None


def unit_factor(freq_ghz: float | np.ndarray, from_unit: str, to_unit: str) -> float | np.ndarray:
    """Factor that converts values in ``from_unit`` to ``to_unit`` at ``freq_ghz`` (multiply by it).

    Examples
    --------
    >>> round(float(unit_factor(100.0, "K_CMB", "K_RJ")), 4)
    0.7772
    """
    freq = np.asarray(freq_ghz, dtype=float) * u.GHz
    if freq.ndim:
        return np.array([unit_factor(f, from_unit, to_unit) for f in freq.value])
    return _to_jysr(from_unit, freq) / _to_jysr(to_unit, freq)


def kcmb_to_krj(freq_ghz: float) -> float:
    """dT_RJ / dT_CMB at ``freq_ghz``: x^2 e^x / (e^x - 1)^2 with x = h nu / k T_CMB."""
    return unit_factor(freq_ghz, "K_CMB", "K_RJ")


def krj_to_kcmb(freq_ghz: float) -> float:
    """dT_CMB / dT_RJ at ``freq_ghz``."""
    return unit_factor(freq_ghz, "K_RJ", "K_CMB")


def mjysr_to_kcmb(freq_ghz: float) -> float:
    """K_CMB per MJy/sr at ``freq_ghz``."""
    return unit_factor(freq_ghz, "MJy/sr", "K_CMB")
