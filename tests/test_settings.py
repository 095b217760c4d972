"""Each setting is written once: YAML keys, settings dataclasses, CLI defaults and library defaults agree."""

from __future__ import annotations

import dataclasses
import importlib
import inspect
from importlib.resources import files

import pytest
import yaml

from cosmobench.cli import TASKS, load_config
from cosmobench.core.settings import defaults
from cosmobench.core.stage import RUNTIME_KEYS

# library functions (or dataclasses) that take a stage's settings as keyword arguments: their defaults must be
# the settings' defaults, so a notebook call and the command line compute the same thing
LIBRARY = {
    ("bmodes", "train"): ["cosmobench.bmodes.train:train_score_model"],
    ("bmodes", "sample"): ["cosmobench.bmodes.conditional:denoise_spectra"],
    ("bmodes", "simulate"): ["cosmobench.bmodes.dataset:BModeSimulator"],
    ("bmodes", "infer"): ["cosmobench.bmodes.infer:diffusion_estimates"],
}


def _tasks_with_settings() -> list[str]:
    out = []
    for task in TASKS:
        try:
            importlib.import_module(f"cosmobench.{task}.settings")
        except ModuleNotFoundError:
            continue
        out.append(task)
    return out


def _defaults_of(target: str) -> dict:
    module, name = target.split(":")
    obj = getattr(importlib.import_module(module), name)
    if dataclasses.is_dataclass(obj):
        return {
            f.name: f.default if f.default is not dataclasses.MISSING else f.default_factory()
            for f in dataclasses.fields(obj)
            if f.default is not dataclasses.MISSING or f.default_factory is not dataclasses.MISSING
        }
    return {k: p.default for k, p in inspect.signature(obj).parameters.items() if p.default is not p.empty}


def _plain(value):
    """Tuples compare as lists; a library's None for an optional mapping stands for the settings' empty one."""
    return list(value) if isinstance(value, tuple) else value


def _same(library_value, setting) -> bool:
    return _plain(library_value) == setting or (library_value is None and setting == {})


@pytest.mark.parametrize("task", _tasks_with_settings())
def test_yaml_keys_fields_and_cli_defaults_agree(task):
    sections = importlib.import_module(f"cosmobench.{task}.settings").SECTIONS
    raw = yaml.safe_load((files("cosmobench.conf") / f"{task}.yaml").read_text())
    cfg = load_config(task)
    for name, cls in sections.items():
        fields = {f.name for f in dataclasses.fields(cls)}
        unknown = set(raw.get(name) or {}) - fields
        assert not unknown, f"conf/{task}.yaml section {name!r} has keys that are not settings: {unknown}"
        expected = defaults(cls)
        for key, value in (raw.get(name) or {}).items():  # None = "filled from another key": the YAML wires it
            if expected.get(key) is None and isinstance(value, str) and value.startswith("${"):
                expected[key] = cfg[name][key]
        assert cfg[name] == expected, f"{task} {name}: the CLI default differs from the settings' default"
        assert set(cfg) >= set(sections)


@pytest.mark.parametrize("key", sorted(LIBRARY), ids=lambda k: "-".join(k))
def test_library_defaults_equal_the_settings(key):
    task, stage = key
    settings = defaults(importlib.import_module(f"cosmobench.{task}.settings").SECTIONS[stage])
    for target in LIBRARY[key]:
        lib = _defaults_of(target)
        shared = sorted((set(lib) & set(settings)) - RUNTIME_KEYS)
        assert shared, f"{target} shares no setting with {task}.{stage}"
        differ = {k: (_plain(lib[k]), settings[k]) for k in shared if not _same(lib[k], settings[k])}
        assert not differ, f"{target} defaults differ from the {task} {stage} settings: {differ}"


@pytest.mark.parametrize("task", list(TASKS))
def test_every_task_has_presets_tiny_and_default(task):
    from cosmobench.cli import _presets

    assert {"tiny", "default"} <= set(_presets(task))
    assert load_config(task, ["preset=tiny"])


def test_dict_override_replaces_instead_of_merging():
    cfg = load_config("bmodes", ["train.sde={name: vp}"])
    assert cfg["train"]["sde"] == {"name": "vp"}
