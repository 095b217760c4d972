"""docs/adding.md is true: a new task and a new preset go in through the registries and work end to end."""

from __future__ import annotations

import sys
import textwrap

import pytest

TOY = textwrap.dedent(
    """
    import dataclasses
    from pathlib import Path

    from cosmobench.core.io import write_json
    from cosmobench.core.settings import StageSettings, as_dict, build
    from cosmobench.core.stage import Stage


    @dataclasses.dataclass(frozen=True, kw_only=True)
    class CountSettings(StageSettings):
        out_dir: str = "toy_out"
        n: int = 3


    SECTIONS = {"count": CountSettings}


    def count(**settings):
        s = build(CountSettings, settings)
        folder = Path(s.out_dir) / "count"
        stage = Stage(folder, "toy.count", as_dict(s))
        if (done := stage.start(overwrite=s.overwrite)) is not None:
            return done
        write_json(folder / "numbers.json", list(range(s.n)))
        return stage.finish({"n": s.n}, outputs=[folder / "numbers.json"])
    """
)


@pytest.fixture
def toy_task(tmp_path, monkeypatch):
    from cosmobench import cli

    (tmp_path / "toy_task_module.py").write_text(TOY)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(cli, "TASKS", dict(cli.TASKS))
    monkeypatch.setattr(cli, "DESCRIPTIONS", dict(cli.DESCRIPTIONS))
    monkeypatch.setattr(cli, "SETTINGS", dict(cli.SETTINGS))
    cli.register_task("toy", {"count": "toy_task_module:count"}, "a toy task", settings="toy_task_module")
    yield tmp_path
    sys.modules.pop("toy_task_module", None)


def test_a_new_task_through_the_registry(toy_task, cli):
    from cosmobench.cli import load_config

    out = toy_task / "out"
    assert load_config("toy")["count"]["n"] == 3  # defaults from the settings dataclass, no YAML needed
    assert cli("toy", "count", f"count.out_dir={out}", "count.n=4")[0] == 0
    assert (out / "count" / "numbers.json").read_text().split() == ["[", "0,", "1,", "2,", "3", "]"]
    rc, err = cli("toy", "count", f"count.out_dir={out}", "count.n=5")
    assert rc == 1 and "n: 4 -> 5" in err and "overwrite=true" in err
    rc, err = cli("toy", "count", f"count.out_dir={out}", "count.m=5")
    assert rc == 2 and "unknown configuration key 'count.m'" in err


def test_a_new_task_is_listed_in_help(toy_task, capsys):
    from cosmobench.cli import main

    assert main(["--help"]) == 0
    assert "a toy task" in capsys.readouterr().out


@pytest.mark.parametrize("task", ["bmodes", "multifield", "cmb"])
def test_a_new_preset_is_one_yaml_file(task, tmp_path, monkeypatch):
    """A preset is one YAML file, in conf/<task>_preset/ of the package or of the folder $COSMOBENCH_CONF."""
    from cosmobench.cli import _presets, load_config

    (tmp_path / f"{task}_preset").mkdir()
    (tmp_path / f"{task}_preset" / "mine.yaml").write_text("# @package _global_\nseed: 41\n")
    monkeypatch.setenv("COSMOBENCH_CONF", str(tmp_path))
    assert "mine" in _presets(task) and "tiny" in _presets(task)
    assert load_config(task, ["preset=mine"])["seed"] == 41
    assert load_config(task, ["preset=tiny"])["seed"] == 0
