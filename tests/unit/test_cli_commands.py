"""``loomk`` subcommands contributed by entry points (group ``loomk.commands``): listed
without being imported, run with their own parser, and a missing one said in one line."""

from __future__ import annotations

import itertools
import sys
from importlib.metadata import EntryPoint
from pathlib import Path

import pytest

from loomk.cli import COMMAND_GROUP, contributed_commands, main

_modules = itertools.count()

GREET = """
import argparse
from loomk.errors import ConfigError

class Greet:
    name = "greet"
    help = "say hello to someone"

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("who")
        parser.add_argument("--times", type=int, default=1)

    def run(self, args: argparse.Namespace) -> int:
        if args.who == "nobody":
            raise ConfigError("who", "nobody to greet")
        print(" ".join(["hello " + args.who] * args.times))
        return 7

COMMAND = Greet()
"""


def command_module(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, source: str) -> str:
    """Write ``source`` as a fresh importable module; its name."""
    name = f"loomk_test_command_{next(_modules)}"
    (tmp_path / f"{name}.py").write_text(source)
    monkeypatch.syspath_prepend(str(tmp_path))
    return name


def point(name: str, value: str) -> EntryPoint:
    return EntryPoint(name=name, value=value, group=COMMAND_GROUP)


def test_a_contributed_command_runs_with_its_own_arguments(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    greet = point("greet", f"{command_module(tmp_path, monkeypatch, GREET)}:COMMAND")
    assert main(["greet", "--times", "2", "world"], entry_points=[greet]) == 7
    assert capsys.readouterr().out == "hello world hello world\n"


def test_a_contributed_command_s_loomk_error_is_exit_2(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    greet = point("greet", f"{command_module(tmp_path, monkeypatch, GREET)}:COMMAND")
    assert main(["greet", "nobody"], entry_points=[greet]) == 2
    assert "loomk: config key 'who': nobody to greet" in capsys.readouterr().err


def test_a_contributed_command_s_help_is_its_own_parser_s(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    greet = point("greet", f"{command_module(tmp_path, monkeypatch, GREET)}:COMMAND")
    with pytest.raises(SystemExit) as exited:
        main(["greet", "--help"], entry_points=[greet])
    assert exited.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith("usage: loomk greet [-h] [--times TIMES] who")
    assert "say hello to someone" in out


def test_loomk_help_lists_contributed_commands_without_importing_them(
    capsys: pytest.CaptureFixture[str],
) -> None:
    missing = point("beam", "no_such_module_xyz.cli:COMMAND")
    with pytest.raises(SystemExit) as exited:
        main(["--help"], entry_points=[missing])
    assert exited.value.code == 0
    out = capsys.readouterr().out
    assert "    beam      from the loomk package; 'loomk beam --help' says more" in out
    assert "no_such_module_xyz" not in sys.modules


def test_a_command_that_cannot_be_imported_says_the_fix_in_one_line_and_exits_2(
    capsys: pytest.CaptureFixture[str],
) -> None:
    missing = point("beam", "no_such_module_xyz.cli:COMMAND")
    assert main(["beam", "serve", "--address", ":1"], entry_points=[missing]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    [line] = captured.err.splitlines()
    assert line.startswith("loomk: the 'beam' command (the loomk package) cannot be loaded")
    assert "No module named 'no_such_module_xyz'" in line
    assert line.endswith("to install it: pip install 'loomk[beam]'")


def test_the_help_of_a_command_that_cannot_be_imported_says_what_is_missing(
    capsys: pytest.CaptureFixture[str],
) -> None:
    missing = point("beam", "no_such_module_xyz.cli:COMMAND")
    assert main(["beam", "--help"], entry_points=[missing]) == 0
    out = capsys.readouterr().out
    assert out.startswith("usage: loomk beam ...\n\n")
    assert "pip install 'loomk[beam]'" in out


def test_an_entry_point_that_is_not_a_command_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    odd = point("odd", f"{command_module(tmp_path, monkeypatch, 'COMMAND = 3')}:COMMAND")
    assert main(["odd"], entry_points=[odd]) == 2
    assert "is not a loomk command" in capsys.readouterr().err


def test_built_in_commands_keep_their_names(capsys: pytest.CaptureFixture[str]) -> None:
    impostor = point("version", "no_such_module_xyz:COMMAND")
    assert "version" not in contributed_commands([impostor])
    assert main(["version"], entry_points=[impostor]) == 0
    assert capsys.readouterr().out.startswith("loomk ")


def test_the_installed_bridge_command_is_listed() -> None:
    assert "bridge" in contributed_commands()


def test_the_config_command_never_shows_the_bridge_token(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("LOOMK_BRIDGE_TOKEN", "tok-do-not-print")
    monkeypatch.setenv("LOOMK_BRIDGE_ADDRESS", "[::1]:50051")
    assert main(["config"], entry_points=[]) == 0
    out = capsys.readouterr().out
    assert "tok-do-not-print" not in out
    assert "bridge_token" in out
    assert "[::1]:50051" in out
    assert "set by: environment variable LOOMK_BRIDGE_ADDRESS" in out
