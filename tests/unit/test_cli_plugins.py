"""`llmserve` subcommands from other packages (entry-point group `llmserve.commands`, serve_app/cli.py).

The shared test environment may hold an install made before pyproject.toml declared a command, so
these tests pass the entry points themselves, read from pyproject.toml (`declared_commands`).
"""
from __future__ import annotations

import argparse
import tomllib
from importlib.metadata import EntryPoint
from pathlib import Path

import pytest

from serve_app.cli import COMMANDS_GROUP, build_parser, main

PYPROJECT = Path(__file__).resolve().parents[2] / "pyproject.toml"


def declared_commands() -> list[EntryPoint]:
    """The `llmserve.commands` entry points pyproject.toml declares, as an install would list them."""
    declared = tomllib.loads(PYPROJECT.read_text())["project"]["entry-points"][COMMANDS_GROUP]
    return [EntryPoint(name=name, value=value, group=COMMANDS_GROUP) for name, value in declared.items()]


def _register_hello(subcommands: argparse._SubParsersAction) -> None:
    parser = subcommands.add_parser("hello", help="a plugin command for the tests")
    parser.add_argument("--times", type=int, default=1)
    parser.set_defaults(func=lambda args: 40 + args.times)


def _register_broken(subcommands: argparse._SubParsersAction) -> None:
    raise RuntimeError("plugin bug")


def _plugin(name: str, target: str) -> EntryPoint:
    return EntryPoint(name=name, value=f"{__name__}:{target}", group=COMMANDS_GROUP)


def test_pyproject_declares_autoscale_and_its_register_adds_a_parser():
    commands = {entry.name: entry for entry in declared_commands()}
    assert commands["autoscale"].value == "autoscaling.autoscale_command:register"
    parser = argparse.ArgumentParser()
    commands["autoscale"].load()(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["autoscale", "--sweep", "s.json", "--peak-rps", "10"])
    assert callable(args.func) and args.peak_rps == 10


def test_a_plugin_command_is_discovered_and_runs():
    assert main(["hello", "--times", "2"], plugins=[_plugin("hello", "_register_hello")]) == 42


def test_a_broken_plugin_is_named_in_one_warning_and_the_other_commands_still_work(capsys):
    plugins = [_plugin("broken", "_register_broken"), _plugin("missing", "no_such_register"),
               _plugin("hello", "_register_hello")]
    assert main(["hello"], plugins=plugins) == 41
    warnings = capsys.readouterr().err.strip().splitlines()
    assert len(warnings) == 2
    assert "'broken'" in warnings[0] and "RuntimeError: plugin bug" in warnings[0]
    assert "'missing'" in warnings[1] and "AttributeError" in warnings[1]


def test_without_plugins_only_the_built_in_commands_exist(capsys):
    parser = build_parser(plugins=[])
    with pytest.raises(SystemExit):
        parser.parse_args(["autoscale"])
    assert "invalid choice: 'autoscale'" in capsys.readouterr().err
