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
from pathlib import Path

__all__ = ["main", "TASKS", "register_task", "load_config"]

# task -> stage -> "module:function"; ``config`` (print the resolved config) exists for every task.
TASKS: dict[str, dict[str, str]] = {
    "cmb": {
        "simulate": "cosmobench.cmb.stages:simulate",
        "train": "cosmobench.cmb.stages:train",
        "separate": "cosmobench.cmb.stages:separate",
        "evaluate": "cosmobench.cmb.stages:evaluate",
        "compare": "cosmobench.cmb.stages:compare",
        "apply": "cosmobench.cmb.stages:apply",
        "run": "cosmobench.cmb.stages:run",
    },
    "bmodes": {
        "simulate": "cosmobench.bmodes.stages:simulate",
        "train": "cosmobench.bmodes.stages:train",
        "sample": "cosmobench.bmodes.stages:sample",
        "infer": "cosmobench.bmodes.stages:infer",
        "check": "cosmobench.bmodes.stages:check",
        "compare": "cosmobench.bmodes.stages:compare",
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

# task -> module holding its settings dataclasses (``SECTIONS``); default ``cosmobench.<task>.settings``
SETTINGS: dict[str, str] = {}


def register_task(name: str, stages: dict[str, str], description: str, settings: str | None = None) -> None:
    """Add a task to the command line: ``cosmobench <name> <stage> key=value ...``.

    Parameters
    ----------
    name : str
        Task name.
    stages : dict of str to str
        Stage name -> ``"module:function"``; each function takes its section's settings as keywords.
    description : str
        One line for ``cosmobench --help``.
    settings : str, optional
        Module with the settings dataclasses (``SECTIONS``); default ``cosmobench.<name>.settings``. Their
        defaults are the task's configuration; ``conf/<name>.yaml`` (wiring shared keys, presets) is optional.
    """
    TASKS[name] = dict(stages)
    DESCRIPTIONS[name] = description
    if settings is not None:
        SETTINGS[name] = settings


USAGE = """usage: cosmobench <task> <stage> [key=value ...]
       cosmobench <task> --help
       cosmobench <task> config [key=value ...]     print the resolved configuration

Overrides are Hydra-style: `nside=64`, `simulate.splits.Train=100`, `preset=bench128`.
Set COSMOBENCH_DEBUG=1 to see full tracebacks.
"""


_USER_ERRORS = (ValueError, TypeError, FileNotFoundError, PermissionError, RuntimeError, OSError)


class ConfigError(ValueError):
    """A configuration problem the user can fix (unknown key, bad override, unknown preset)."""


def _preset_group(task: str) -> str:
    return f"{task}_preset"


def _register_defaults(task: str) -> None:
    """Make the settings dataclasses' defaults (``cosmobench.<task>.settings.SECTIONS``) the config
    ``<task>_defaults`` that ``conf/<task>.yaml`` lists first, so every default is written once, in Python.
    A settings module may add other nodes through a function ``default_nodes()`` (e.g. cmb's ``methods``)."""
    from importlib.resources import files

    from hydra.core.config_store import ConfigStore

    from .core.settings import defaults

    try:
        module = importlib.import_module(SETTINGS.get(task, f"cosmobench.{task}.settings"))
    except ModuleNotFoundError:
        return
    node = {k: defaults(cls) for k, cls in module.SECTIONS.items()}
    if hasattr(module, "default_nodes"):
        node.update(module.default_nodes())
    ConfigStore.instance().store(name=f"{task}_defaults", node=node)
    if not (files("cosmobench.conf") / f"{task}.yaml").is_file():  # a task with no YAML: its defaults alone
        ConfigStore.instance().store(name=task, node=node)


def _split_overrides(task: str, overrides: Sequence[str]) -> tuple[list[str], list[tuple[str, object]]]:
    """Hydra overrides, and the ``key={...}`` ones that must replace a dict (Hydra would merge them)."""
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import HydraException

    hydra, replace = [], []
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override {item!r} is not of the form key=value (e.g. seed=1, simulate.n_train=100)")
        key, value = item.split("=", 1)
        if key == "preset":
            hydra.append(f"{_preset_group(task)}={value}")
        elif value.lstrip().startswith("{"):
            try:
                replace.append((key.lstrip("+"), OverridesParser.create().parse_overrides([item])[0].value()))
            except HydraException as err:
                raise ConfigError(f"bad override {item!r}: {str(err).splitlines()[0]}") from None
        else:
            hydra.append(item)
    return hydra, replace


def load_config(task: str, overrides: Sequence[str] = ()) -> dict:
    """Compose the configuration of ``task`` with ``overrides`` and return it as a plain, resolved dict.

    Defaults come from the task's settings dataclasses, then ``conf/<task>.yaml``, then the preset
    (``preset=NAME`` selects ``conf/<task>_preset/NAME.yaml``), then the overrides. A dict-valued override
    (``simulate.splits={Test: 10}``) replaces the dict. Unknown keys raise :class:`ConfigError`. Presets are
    searched in the package and in the folder named by ``$COSMOBENCH_CONF`` (``<task>_preset/NAME.yaml``).
    """
    from hydra import compose, initialize_config_module
    from hydra.errors import HydraException
    from omegaconf import OmegaConf, open_dict
    from omegaconf.errors import OmegaConfBaseException

    if task not in TASKS:
        raise ConfigError(f"unknown task {task!r}; expected one of {sorted(TASKS)}")
    hydra, replace = _split_overrides(task, overrides)
    user_conf = os.environ.get("COSMOBENCH_CONF")
    if user_conf:  # a folder of the user's own presets, <task>_preset/NAME.yaml, searched after the package's
        if not Path(user_conf).is_dir():
            raise ConfigError(f"COSMOBENCH_CONF={user_conf} is not a folder; point it at your presets' folder")
        hydra.insert(0, f"hydra.searchpath=[file://{Path(user_conf).resolve()}]")
    _register_defaults(task)
    try:
        with initialize_config_module(config_module="cosmobench.conf", version_base=None):
            cfg = compose(config_name=task, overrides=hydra)
        for key, value in replace:
            if OmegaConf.select(cfg, key, default="<absent>") == "<absent>":
                raise ConfigError(_explain(task, f"Could not override '{key}'"))
            with open_dict(cfg):
                OmegaConf.update(cfg, key, value, merge=False)
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

    folders = [files("cosmobench.conf") / _preset_group(task)]
    if os.environ.get("COSMOBENCH_CONF"):
        folders.append(Path(os.environ["COSMOBENCH_CONF"]) / _preset_group(task))
    return sorted({p.name[:-5] for f in folders if f.is_dir() for p in f.iterdir() if p.name.endswith(".yaml")})


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
    """Compose the config and call one stage; returns what the stage function returns.

    An override of another stage's section that leaves this stage's settings as they are is named on stderr
    (:func:`_ignored_overrides`), and the stage runs."""
    if stage not in TASKS[task]:
        raise ConfigError(
            f"unknown stage {stage!r} for task {task!r}; expected one of {sorted([*TASKS[task], 'config'])}"
        )
    cfg = load_config(task, overrides)
    if stage != "run" and stage not in cfg:
        raise ConfigError(f"conf/{task}.yaml has no section {stage!r}")
    for item, other in _ignored_overrides(task, stage, overrides, cfg.get(stage)):
        print(
            f"note: {item} sets the `{other}` stage and does not change `{task} {stage}` (its settings: "
            f"`cosmobench {task} config`, section {stage}); it is ignored here",
            file=sys.stderr,
        )
    fn = _stage_function(task, stage)
    return fn(config=cfg) if stage == "run" else fn(**cfg[stage])


def _ignored_overrides(task: str, stage: str, overrides: Sequence[str], section: object) -> list[tuple[str, str]]:
    """The overrides of another stage's section (``<other stage>.key=value``) that leave ``stage``'s settings as
    they are, each with that stage's name: a key meant for ``cosmobench <task> <other stage>`` given to this one
    (``cmb evaluate separate.split=TestOOD`` evaluates Test). ``section`` is ``stage``'s settings composed with
    all of ``overrides``; each candidate is checked by composing the configuration without it (no composition
    when no override names another stage). ``run`` reads every section: nothing is ignored there."""
    if stage == "run":
        return []
    ignored = []
    for i, item in enumerate(overrides):
        other = item.split("=", 1)[0].lstrip("+~").split(".")[0]
        if other == stage or other not in TASKS[task]:
            continue
        if load_config(task, [*overrides[:i], *overrides[i + 1 :]]).get(stage) == section:
            ignored.append((item, other))
    return ignored


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
    except Exception as err:  # every other failure: one line, the traceback behind COSMOBENCH_DEBUG=1
        if os.environ.get("COSMOBENCH_DEBUG"):
            raise
        kind = "" if isinstance(err, _USER_ERRORS) else f"{type(err).__name__}: "
        print(f"error: {kind}{err}", file=sys.stderr)
        if kind:
            print("(unexpected; rerun with COSMOBENCH_DEBUG=1 for the traceback and report it)", file=sys.stderr)
        return 1
    if result is not None:
        print(summary_text(result))
    return 0


def summary_text(result: object, depth: int = 3, items: int = 8) -> str:
    """A short, readable form of a stage's result for the terminal (the full results are in its files).

    Nested mappings deeper than ``depth`` and lists longer than ``items`` are elided; Markdown tables (string
    values starting with ``|``) are printed as they are, after the rest.
    """
    tables: list[str] = []

    def brief(value, level):
        if isinstance(value, str) and value.lstrip().startswith("|"):
            tables.append(value.strip())
            return "(table below)"
        if isinstance(value, dict):
            if level >= depth:
                return f"{{{len(value)} entries}}"
            return {k: brief(v, level + 1) for k, v in value.items()}
        if isinstance(value, (list, tuple)) and len(value) > items:
            return f"[{len(value)} items]"
        return value

    text = json.dumps(brief(result, 0), indent=2, default=str)
    return "\n\n".join([text, *tables])


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
