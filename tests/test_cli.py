"""The console command: help, config printing, overrides, and errors that name the problem."""

from __future__ import annotations

import subprocess
import sys

import pytest

from cosmobench.cli import ConfigError, load_config, main


def _run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "cosmobench.cli", *args], capture_output=True, text=True)


def test_help_lists_tasks_and_stages(capsys):
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    for word in ("cmb", "bmodes", "multifield", "simulate", "config"):
        assert word in out
    assert main(["cmb", "--help"]) == 0
    out = capsys.readouterr().out
    assert "presets (preset=NAME): bench128, cmbml_512_1450, default, tiny" in out and "evaluate" in out


def test_config_resolves_presets_and_overrides():
    cfg = load_config("cmb", ["preset=bench128", "simulate.splits.Train=5", "seed=9"])
    assert cfg["simulate"]["nside"] == 128 and cfg["simulate"]["splits"]["Train"] == 5
    assert cfg["simulate"]["seed"] == 9 and cfg["separate"]["out_dir"] == cfg["out_dir"]


def test_config_subcommand_prints_yaml():
    res = _run("cmb", "config", "nside=64")
    assert res.returncode == 0 and "nside: 64" in res.stdout


@pytest.mark.parametrize(
    "args,code,match",
    [
        (["cmb", "simulate", "nsidee=3"], 2, "unknown configuration key 'nsidee'"),
        (["cmb", "simulate", "preset=huge"], 2, "available presets: bench128"),
        (["cmb", "simulatee"], 2, "unknown stage 'simulatee'"),
        (["cmbx", "simulate"], 2, "unknown task 'cmbx'"),
        (["cmb", "simulate", "nside"], 2, "key=value"),
        (["cmb", "simulate", "nside=30"], 1, "power of 2"),
    ],
)
def test_errors_name_the_problem(args, code, match, capsys):
    assert main(args) == code
    assert match in capsys.readouterr().err


def test_unknown_key_raises_config_error():
    with pytest.raises(ConfigError, match="simulate.nsid"):
        load_config("cmb", ["simulate.nsid=3"])


def test_another_stages_key_is_named_as_ignored(capsys):
    from cosmobench.cli import _ignored_overrides

    # evaluate reads run.methods (wired into its section), not separate.split; the removal test tells them apart
    given = ["separate.split=TestOOD", "run.methods=[nilc]", "simulate.nside=64", "evaluate.split=Valid"]
    ignored = [("separate.split=TestOOD", "separate"), ("simulate.nside=64", "simulate")]
    assert _ignored_overrides("cmb", "evaluate", given, load_config("cmb", given)["evaluate"]) == ignored
    own = ["separate.split=TestOOD", "seed=3"]
    assert _ignored_overrides("cmb", "separate", own, load_config("cmb", own)["separate"]) == []
    other = ["separate.split=TestOOD"]
    assert _ignored_overrides("cmb", "run", other, load_config("cmb", other)["run"]) == []  # run reads every section
    assert main(["cmb", "evaluate", "separate.split=TestOOD", "out_dir=/nonexistent/cb"]) == 1
    assert "note: separate.split=TestOOD sets the `separate` stage and does not change `cmb evaluate`" in (
        capsys.readouterr().err
    )
