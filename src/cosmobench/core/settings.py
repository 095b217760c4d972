"""Settings dataclasses: each stage's settings are written once, as the fields of one frozen dataclass.

The fields of a stage's dataclass are the keys of its section in ``conf/<task>.yaml``; the YAML only wires
shared top-level keys into them (``seed: ${seed}``) and presets override them. The command line builds its
defaults from these classes, the stage functions take the same keywords, and a test checks that the YAML keys,
the fields and the defaults of every library function agree, so a default cannot drift between the CLI, the
Python API and the docs.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any, TypeVar

__all__ = ["StageSettings", "build", "defaults", "as_dict", "plain"]

S = TypeVar("S", bound="StageSettings")


@dataclasses.dataclass(frozen=True, kw_only=True)
class StageSettings:
    """Settings every stage has.

    Attributes
    ----------
    overwrite : bool
        Delete this stage's earlier outputs and run again when they were made with other settings or inputs
        (without it such a rerun is refused, naming what differs).
    progress : bool
        Progress bars on standard error.
    threads : int or "auto"
        Compute threads of this process; "auto" = the cores it may use (:mod:`cosmobench.core.runtime`).
    """

    overwrite: bool = False
    progress: bool = True
    threads: int | str = "auto"

    def __post_init__(self) -> None:
        from .runtime import resolve_threads

        resolve_threads(self.threads)  # a bad value fails when the settings are built, before any work


def build(cls: type[S], settings: Mapping[str, Any] | S | None = None, **overrides: Any) -> S:
    """An instance of the settings class ``cls`` from a mapping and keyword overrides.

    Raises
    ------
    TypeError
        Unknown keys, naming them and listing the valid ones.
    """
    if isinstance(settings, cls):
        return dataclasses.replace(settings, **overrides) if overrides else settings
    values = {**dict(settings or {}), **overrides}
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - names)
    if unknown:
        raise TypeError(f"unknown setting(s) {unknown} for {cls.__name__}; valid settings: {sorted(names)}")
    return cls(**values)


def defaults(cls: type[StageSettings]) -> dict[str, Any]:
    """The default settings of ``cls`` as a plain dict (tuples become lists)."""
    return as_dict(cls())


def as_dict(settings: StageSettings) -> dict[str, Any]:
    """``settings`` as a plain, JSON-able dict (tuples become lists)."""
    return plain(dataclasses.asdict(settings))


def plain(value: Any) -> Any:
    """``value`` with mappings turned into dicts with string keys and tuples into lists, recursively (what the YAML
    and JSON records hold)."""
    if isinstance(value, Mapping):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    return value
