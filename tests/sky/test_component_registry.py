"""docs/adding.md is true for a new sky component: one class, one registry entry, selectable by name."""

from __future__ import annotations

import astropy.units as u
import numpy as np
import pytest

from cosmobench.core.seeds import rng
from cosmobench.sky import sht, units
from cosmobench.sky.components import Component
from cosmobench.sky.foregrounds import COMPONENTS, register_component, synthetic_foregrounds


class Monopole(Component):
    """A toy component: a uniform, unpolarised brightness with a power-law SED (uK_RJ)."""

    def __init__(self, nside: int, amplitude: float, beta: float = -2.0):
        self.nside, self.amplitude, self.beta = nside, amplitude, beta

    @classmethod
    def random(cls, nside: int, generator: np.random.Generator, *, mean: float = 10.0, beta: float = -2.0):
        return cls(nside, mean * (1 + 0.1 * generator.standard_normal()), beta)

    def emission(self, freq: u.Quantity) -> u.Quantity:
        maps = np.zeros((3, sht.npix(self.nside)))
        maps[0] = self.amplitude * (freq.to_value(u.GHz) / 30.0) ** self.beta
        return maps * units.uK_RJ


@pytest.fixture
def monopole(monkeypatch):
    monkeypatch.setitem(COMPONENTS, "monopole", COMPONENTS.get("monopole", Monopole))
    register_component("monopole", Monopole)
    yield Monopole


def test_a_registered_component_is_drawn_by_name(monopole):
    sky = synthetic_foregrounds(
        16, rng(0, "Train", 1, "foregrounds"), components=["dust", "monopole"], monopole={"mean": 100.0}
    )
    assert isinstance(sky[1], Monopole) and 80 < sky[1].amplitude < 120
    at_30 = sky[1].emission(30 * u.GHz).to_value(units.uK_RJ)
    np.testing.assert_allclose(at_30[0], sky[1].amplitude) and np.testing.assert_array_equal(at_30[1:], 0)
    # adding a component changes no other component's realisation (it draws from its own named stream)
    alone = synthetic_foregrounds(16, rng(0, "Train", 1, "foregrounds"), components=["dust"])
    np.testing.assert_array_equal(alone[0].emission(353 * u.GHz), sky[0].emission(353 * u.GHz))
    again = synthetic_foregrounds(16, rng(0, "Train", 1, "foregrounds"), components=["monopole"])
    assert again[0].amplitude == pytest.approx(sky[1].amplitude / 10)  # same stream, default mean 10


def test_a_registered_component_reaches_the_observed_maps(monopole):
    from cosmobench.cmb.simulate import simulate_observation
    from cosmobench.sky.instrument import load_channels

    channels = load_channels(bands=["30", "100"])
    kw = {"seed": 3, "key": ("Test", 0), "noise": False, "foreground_backend": "synthetic"}
    base = simulate_observation(16, channels, foreground_components=["synchrotron"], **kw)
    with_mono = simulate_observation(16, channels, foreground_components=["synchrotron", "monopole"], **kw)
    diff = with_mono.obs["30"][0] - base.obs["30"][0]
    from cosmobench.sky.foregrounds import foreground_rng
    from cosmobench.sky.units import unit_factor

    drawn = synthetic_foregrounds(16, foreground_rng(3, "Test", 0), components=["synchrotron", "monopole"])[1]
    nu = channels[0].center_ghz
    expected = drawn.amplitude * (nu / 30.0) ** drawn.beta * unit_factor(nu, "uK_RJ", "uK_CMB")
    assert np.median(diff) == pytest.approx(expected, rel=0.03)  # the band-averaged SED, to a few %
    assert np.std(diff) < 0.05 * expected  # uniform up to the HEALPix quadrature of the analysis (fg_iter = 0)


def test_bad_registrations_and_names_are_refused():
    with pytest.raises(TypeError, match="Component subclass"):
        register_component("bad", dict)
    with pytest.raises(ValueError, match="unknown foreground components"):
        synthetic_foregrounds(8, rng(0, "x"), components=["dust"], nosuch={"a": 1})
