"""docs/adding.md, CMB sections: a method registered at run time gets its settings section from its own defaults
and runs through `cmb separate` and `cmb evaluate`; every preset resolves to valid settings."""

from __future__ import annotations

import numpy as np
import pytest

from cosmobench.cli import _presets, load_config
from cosmobench.cmb.methods import METHODS, get_method, register
from cosmobench.cmb.settings import SECTIONS
from cosmobench.core.io import read_healpix, read_json
from cosmobench.core.settings import build

from .conftest import TINY


class MeanOfChannels:
    """A toy separation method: ``scale`` times the mean of the observed intensities (uK_CMB)."""

    output_beam_arcmin = None

    def __init__(self, *, scale: float = 1.0):
        if not scale > 0:
            raise ValueError(f"scale must be > 0, got {scale}")
        self.scale = scale

    def fit(self, dataset, out_dir, *, train_split="Train", val_split="Valid") -> dict:
        return {}

    def predict(self, obs: dict, channels: list) -> np.ndarray:
        return self.scale * np.mean([np.atleast_2d(m)[0] for m in obs.values()], axis=0)


@pytest.fixture
def toy():
    register("toy", MeanOfChannels)
    yield "toy"
    METHODS.pop("toy")


def test_a_registered_method_gets_its_section_and_runs(toy, tiny_copy, cli):
    cfg = load_config("cmb", ["method=toy"])
    assert cfg["methods"]["toy"] == {"scale": 1.0} == cfg["separate"]["settings"]
    rc, err = cli("cmb", "separate", *TINY, "method=toy", "methods.toy.scale=0.5", f"out_dir={tiny_copy}")
    assert rc == 0, err
    pred = read_healpix(tiny_copy / "toy" / "Test" / "sim0000" / "cmb_pred.fits", dtype=np.float64)
    obs = [
        read_healpix(p, field=0, dtype=np.float64)
        for p in sorted((tiny_copy / "Simulations" / "Test" / "sim0000").glob("obs_*_map.fits"))
    ]
    np.testing.assert_allclose(np.ravel(pred), 0.5 * np.mean(obs, axis=0), rtol=1e-6)
    assert read_json(tiny_copy / "toy" / "Test" / "stage.json")["settings"]["settings"] == {"scale": 0.5}
    rc, err = cli("cmb", "evaluate", *TINY, "run.methods=[hilc,toy]", "overwrite=true", f"out_dir={tiny_copy}")
    assert rc == 0, err
    assert set(read_json(tiny_copy / "results" / "Test" / "summary.json")["methods"]) == {"hilc", "toy"}
    rc, err = cli("cmb", "separate", *TINY, "method=toy", "methods.toy.scale=-1", f"out_dir={tiny_copy}")
    assert rc == 1 and "scale must be > 0" in err


def test_registered_names_must_be_identifiers():
    with pytest.raises(ValueError, match="identifier"):
        register("my-method", MeanOfChannels)


@pytest.mark.parametrize("preset", _presets("cmb"))
def test_every_preset_resolves_to_valid_settings(preset):
    cfg = load_config("cmb", [f"preset={preset}"])
    for name, cls in SECTIONS.items():
        build(cls, cfg[name])
    for name in cfg["run"]["methods"]:
        get_method(name)(**cfg["methods"][name])
