"""The ``cosmobench`` command: ``cosmobench <task> <stage> [key=value ...]``.

This is the only module that reads YAML: it composes ``conf/<task>.yaml`` (and a preset from
``conf/<task>_preset/``) with Hydra's compose API, applies the ``key=value`` overrides, and calls the stage
function with the stage's section as plain keyword arguments. Unknown keys are errors that name the key.
"""

from __future__ import annotations

import importlib
import inspect
import json
import os
import re
import sys
from collections.abc import Sequence

__all__ = ["main", "TASKS", "load_config"]

# task -> stage -> "module:function"; ``config`` (print the resolved config) exists for every task.
TASKS: dict[str, dict[str, str]] = {
    "cmb": {
        "simulate": "cosmobench.cmb.simulate:simulate_dataset",
        "train": "cosmobench.cmb.separate:train",
        "separate": "cosmobench.cmb.separate:separate",
        "evaluate": "cosmobench.cmb.evaluate:evaluate",
        "compare": "cosmobench.cmb.compare:compare",
        "run": "cosmobench.cmb.pipeline:run",
    },
    "bmodes": {
        "simulate": "cosmobench.bmodes.stages:simulate",
        "train": "cosmobench.bmodes.stages:train",
        "sample": "cosmobench.bmodes.stages:sample",
        "infer": "cosmobench.bmodes.stages:infer",
        "run": "cosmobench.bmodes.stages:run",
    },
    "multifield": {
        "simulate": "cosmobench.multifield.stages:simulate",
        "train": "cosmobench.multifield.stages:train",
        "search": "cosmobench.multifield.stages:search",
        "test": "cosmobench.multifield.stages:test",
        "robustness": "cosmobench.multifield.stages:robustness",
        "fields": "cosmobench.multifield.stages:fields",
        "calibrate": "cosmobench.multifield.stages:calibrate",
        "run": "cosmobench.multifield.stages:run",
    },
}

DESCRIPTIONS = {
    "cmb": "CMB component separation on multi-frequency HEALPix skies (ILC/NILC, UNets, leaderboard)",
    "bmodes": "B-mode spectrum denoising with score-based diffusion and inference of r",
    "multifield": "cosmological parameters from 2D multifield maps (CMD format, o3_err CNN, optuna)",
}

USAGE = """usage: cosmobench <task> <stage> [key=value ...]
       cosmobench <task> --help
       cosmobench <task> config [key=value ...]     print the resolved configuration

Overrides are Hydra-style: `nside=64`, `simulate.splits.Train=100`, `preset=bench128`.
Set COSMOBENCH_DEBUG=1 to see full tracebacks.
"""


class ConfigError(ValueError):
    """A configuration problem the user can fix (unknown key, bad override, unknown preset)."""


def _preset_group(task: str) -> str:
    return f"{task}_preset"


def load_config(task: str, overrides: Sequence[str] = ()) -> dict:
    """Compose the configuration of ``task`` with ``overrides`` and return it as a plain, resolved dict.

    ``preset=NAME`` selects ``conf/<task>_preset/NAME.yaml``. Unknown keys raise :class:`ConfigError`.
    """
    from hydra import compose, initialize_config_module
    from hydra.errors import HydraException
    from omegaconf import OmegaConf
    from omegaconf.errors import OmegaConfBaseException

    if task not in TASKS:
        raise ConfigError(f"unknown task {task!r}; expected one of {sorted(TASKS)}")
    fixed = []
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override {item!r} is not of the form key=value")
        key, value = item.split("=", 1)
        fixed.append(f"{_preset_group(task)}={value}" if key == "preset" else item)
    try:
        with initialize_config_module(config_module="cosmobench.conf", version_base=None):
            cfg = compose(config_name=task, overrides=fixed)
        return OmegaConf.to_container(cfg, resolve=True)
    except (HydraException, OmegaConfBaseException) as err:
        raise ConfigError(_explain(task, str(err))) from None


def _explain(task: str, message: str) -> str:
    first = message.strip().splitlines()[0]
    unknown = re.search(r"Could not override '([^']+)'", message) or re.search(
        r"Key '([^']+)' is not in struct", message
    )
    if unknown:
        return (
            f"unknown configuration key {unknown.group(1)!r} for task {task!r}. See the valid keys with "
            f"`cosmobench {task} config`."
        )
    if "Could not find" in message and "preset" in message:
        return f"{first}\nUnknown preset; available presets: {', '.join(_presets(task))}"
    return first


def _presets(task: str) -> list[str]:
    from importlib.resources import files

    folder = files("cosmobench.conf") / _preset_group(task)
    return sorted(p.name[:-5] for p in folder.iterdir() if p.name.endswith(".yaml")) if folder.is_dir() else []


def _stage_function(task: str, stage: str):
    module, name = TASKS[task][stage].split(":")
    return getattr(importlib.import_module(module), name)


def _task_help(task: str) -> str:
    lines = [f"usage: cosmobench {task} <stage> [key=value ...]", "", DESCRIPTIONS[task], "", "stages:"]
    for stage, target in TASKS[task].items():
        module, name = target.split(":")
        doc = ""
        try:
            doc = (inspect.getdoc(getattr(importlib.import_module(module), name)) or "").splitlines()[0]
        except (ImportError, AttributeError):
            doc = "(not available in this installation)"
        lines.append(f"  {stage:<11} {doc}")
    lines.append(f"  {'config':<11} Print the resolved configuration (with any overrides).")
    presets = _presets(task)
    if presets:
        lines += ["", f"presets (preset=NAME): {', '.join(presets)}"]
    try:
        cfg = load_config(task)
        main_keys = [k for k, v in cfg.items() if not isinstance(v, dict)]
        lines += ["", "main options: " + ", ".join(f"{k}={cfg[k]}" for k in main_keys)]
    except ConfigError:
        pass
    lines += ["", f"Every stage's options: `cosmobench {task} config`; override with key=value."]
    return "\n".join(lines)


def _main_help() -> str:
    lines = [USAGE, "tasks:"]
    for t in TASKS:
        lines += [f"  {t:<11} {DESCRIPTIONS[t]}", f"  {'':<11} stages: {', '.join([*TASKS[t], 'config'])}"]
    lines += ["", "Start with: cosmobench cmb run"]
    return "\n".join(lines)


def run_stage(task: str, stage: str, overrides: Sequence[str] = ()) -> object:
    """Compose the config and call one stage; returns what the stage function returns."""
    if stage not in TASKS[task]:
        raise ConfigError(
            f"unknown stage {stage!r} for task {task!r}; expected one of {sorted([*TASKS[task], 'config'])}"
        )
    cfg = load_config(task, overrides)
    fn = _stage_function(task, stage)
    if stage == "run":
        return fn(config=cfg)
    if stage not in cfg:
        raise ConfigError(f"conf/{task}.yaml has no section {stage!r}")
    return fn(**cfg[stage])


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``cosmobench`` console script."""
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] in ("-h", "--help", "help"):
        print(_main_help())
        return 0
    if args[0] in ("-V", "--version"):
        from . import __version__

        print(f"cosmobench {__version__}")
        return 0
    task, rest = args[0], args[1:]
    try:
        if task not in TASKS:
            raise ConfigError(f"unknown task {task!r}; expected one of {sorted(TASKS)} (see `cosmobench --help`)")
        if not rest or rest[0] in ("-h", "--help", "help"):
            print(_task_help(task))
            return 0
        stage, overrides = rest[0], rest[1:]
        if any(o in ("-h", "--help") for o in overrides):
            print(_task_help(task))
            return 0
        if stage == "config":
            import yaml

            print(yaml.safe_dump(load_config(task, overrides), sort_keys=False), end="")
            return 0
        result = run_stage(task, stage, overrides)
    except KeyboardInterrupt:
        print("\ninterrupted: finished work is kept; rerun the same command to resume.", file=sys.stderr)
        return 130
    except ConfigError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except (ValueError, TypeError, FileNotFoundError, PermissionError, RuntimeError, OSError) as err:
        if os.environ.get("COSMOBENCH_DEBUG"):
            raise
        print(f"error: {err}", file=sys.stderr)
        return 1
    if result is not None:
        print(json.dumps(result, indent=2, default=str))
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
