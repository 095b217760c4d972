"""Each multifield setting is written once: YAML sections = dataclass fields, the default configuration = the
dataclasses' defaults, and the library functions' defaults = the settings' (issue 9, finding 9: ``n_sims`` was
1000 in one place and 250 in another)."""

from __future__ import annotations

import inspect

import pytest

from cosmobench.cli import _presets, load_config
from cosmobench.core.settings import build, defaults
from cosmobench.multifield import calibration, cmd, evaluate, fields, robustness, search, train
from cosmobench.multifield.settings import (
    SECTIONS,
    CalibrateSettings,
    FieldsSettings,
    RobustnessSettings,
    SearchSettings,
    TestSettings,
    TrainingSettings,
    TrainSettings,
)


def _plain(value):
    return [_plain(v) for v in value] if isinstance(value, (list, tuple)) else value


def test_presets_include_default_and_tiny():
    assert {"default", "tiny"} <= set(_presets("multifield"))


def test_default_configuration_is_the_dataclasses_defaults():
    cfg = load_config("multifield")
    for section, cls in SECTIONS.items():
        assert cfg[section] == defaults(cls), section


@pytest.mark.parametrize("preset", _presets("multifield"))
def test_every_preset_resolves_to_valid_settings(preset):
    """Every file of conf/multifield_preset (docs/adding.md: a new preset is one file there)."""
    cfg = load_config("multifield", [f"preset={preset}"])
    for section, cls in SECTIONS.items():
        build(cls, cfg[section])
    build(TrainingSettings, cfg["training"])


LIBRARY = [
    (search.run_search, SearchSettings),
    (robustness.cross_suite, RobustnessSettings),
    (fields.field_importance, FieldsSettings),
    (evaluate.evaluate_split, TestSettings),
    (evaluate.predict, TestSettings),
    (evaluate.predict_split, TestSettings),
    (evaluate.recalibrate_on_valid, TestSettings),
    (calibration.calibrate_model, CalibrateSettings),
    (train.train_model, TrainSettings),
    (train.prepare_data, TrainSettings),
    (cmd.load_params, TrainingSettings),
    (cmd.field_stats, TrainingSettings),
]


@pytest.mark.parametrize("fn, cls", LIBRARY, ids=[f.__name__ for f, _ in LIBRARY])
def test_library_defaults_equal_the_settings(fn, cls):
    fields_ = defaults(cls)
    shared = [p for p in inspect.signature(fn).parameters.values() if p.name in fields_ and p.default is not p.empty]
    for p in shared:
        assert _plain(p.default) == fields_[p.name], f"{fn.__name__}({p.name}=...)"
    split = inspect.signature(cmd.split_sims).parameters
    assert _plain(split["fractions"].default) == defaults(TrainingSettings)["split"]
    assert split["seed"].default == TrainingSettings.split_seed
