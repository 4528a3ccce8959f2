"""``loomk --help`` and every command's help read cleanly; every bench option is checked
before a run, and ``--quick`` keeps the sizes given. Run in subprocesses, as a user would."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.e2e

OPTIONS = {
    "bus": ["--deliveries", "--repeats", "--rate", "--latency-seconds"],
    "agents": ["--spawn", "--deliveries", "--repeats"],
    "state": ["--agents", "--events", "--keys", "--fsync-writes"],
    "collab": ["--round-trips", "--invocations", "--repeats"],
    "batch": ["--deliveries", "--agents", "--events", "--keys", "--repeats"],
    "bridge": ["--events", "--calls", "--repeats"],
    "cluster": ["--events", "--js-events", "--rate", "--latency-seconds", "--repeats"],
}
"""Every size option of every bench scenario (besides ``--json`` and ``--quick``)."""

SWITCHES = {"bus": ["--dashboard"]}
"""The on/off options of the scenarios that have some (listed after the sizes)."""

MARKUP = re.compile(r"``|:(class|meth|func|mod|data|attr):`")


def loomk(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LOOMK_")}
    return subprocess.run(
        [sys.executable, "-m", "loomk.cli", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def _listed(help_text: str) -> list[str]:
    """The subcommands a help page lists (argparse indents them by 4 under the metavar)."""
    return re.findall(r"^    (\S+)\s{2,}\S", help_text, flags=re.MULTILINE)


def _description(help_text: str) -> str:
    """The paragraph between a help page's usage and its first section."""
    body = help_text.split("\n\n", 1)[1]
    return "" if body.startswith(("options:", "positional arguments:")) else body


def test_every_help_page_reads_cleanly() -> None:
    """Walks ``loomk --help`` down every command it lists: each page is plain text (no
    reST markup) with a description, and each bench option says its default."""
    pages: dict[tuple[str, ...], str] = {}
    todo: list[tuple[str, ...]] = [()]
    while todo:
        command = todo.pop()
        result = loomk(*command, "--help")
        assert (result.returncode, result.stderr) == (0, ""), command
        pages[command] = result.stdout
        todo.extend((*command, sub) for sub in _listed(result.stdout))
    assert {("bench", s) for s in OPTIONS} | {(), ("bench",), ("config",), ("version",)} <= set(
        pages
    )
    for command, text in pages.items():
        assert MARKUP.search(text) is None, (command, text)
        assert _description(text).strip(), (command, text)
    assert "microkernel for event-driven AI agents" in " ".join(pages[()].split())
    for scenario, flags in OPTIONS.items():
        text = pages[("bench", scenario)]
        offered = re.findall(r"^  (?:-\w, )?(--[a-z-]+)", text, flags=re.MULTILINE)
        assert offered == ["--help", "--json", "--quick", *flags, *SWITCHES.get(scenario, [])]
        for flag in flags:
            said = text.split(f"  {flag} ", 1)[1].split("\n  --", 1)[0]
            assert re.search(r"\(default: .+; --quick: .+\)", " ".join(said.split())), flag
        for flag in SWITCHES.get(scenario, []):
            said = text.split(f"  {flag} ", 1)[1].split("\n  --", 1)[0]
            assert " ".join(said.split()).endswith("(off by default)"), flag


def _refused(runs: list[list[str]]) -> list[tuple[list[str], int, str, str]]:
    """Run ``loomk bench`` with each argument list, all at once (each is refused before
    any work, so they are quick): (args, exit code, stdout, stderr) per run."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("LOOMK_")}
    started = [
        (
            args,
            subprocess.Popen(
                [sys.executable, "-m", "loomk.cli", "bench", *args],
                cwd=ROOT,
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            ),
        )
        for args in runs
    ]
    finished = []
    for args, process in started:
        out, err = process.communicate(timeout=120)
        finished.append((args, process.returncode, out, err))
    return finished


def test_every_size_option_refuses_0_even_with_quick() -> None:
    runs = [[s, "--quick", flag, "0"] for s, flags in OPTIONS.items() for flag in flags]
    for args, code, out, err in _refused(runs):
        scenario, flag = args[0], args[2]
        assert code == 2, (args, err)
        assert f"loomk bench {scenario}: error: argument {flag}: must be " in err, err
        assert "got 0" in err or "got '0'" in err, err
        assert "Traceback" not in err
        assert out == ""


def test_the_issue_s_examples_and_other_bad_values_are_usage_errors(tmp_path: Path) -> None:
    cases = [
        (["bus", "--repeats", "0"], "argument --repeats: must be at least 1, got 0"),
        (["collab", "--round-trips", "0"], "argument --round-trips: must be at least 1, got 0"),
        (["bus", "--rate", "-5"], "argument --rate: must be at least 1, got -5"),
        (["bus", "--latency-seconds", "nan"], "must be a finite number above 0, got 'nan'"),
        (["bus", "--latency-seconds", "inf"], "must be a finite number above 0, got 'inf'"),
        (["bus", "--latency-seconds", "0"], "must be a finite number above 0, got '0'"),
        (["agents", "--spawn", "10", "0"], "argument --spawn: must be at least 1, got 0"),
        (["state", "--keys", "2.5"], "argument --keys: expected a whole number, got '2.5'"),
        (["collab", "--invocations", "lots"], "expected a whole number, got 'lots'"),
        (["bus", "--latency-seconds", "soon"], "expected a number of seconds, got 'soon'"),
        (["bus", "--json", str(tmp_path)], f"argument --json: '{tmp_path}' is a directory"),
        (
            ["bus", "--rate", "1", "--latency-seconds", "0.5"],
            "--rate 1 x --latency-seconds 0.5 gives no latency sample",
        ),
        (
            ["bus", "--rate", "100000000", "--latency-seconds", "100"],
            "is more than 4_294_967_296 latency samples",
        ),
    ]
    said = {tuple(args): text for args, text in cases}
    for args, code, out, err in _refused([args for args, _ in cases]):
        assert code == 2, (args, err)
        assert said[tuple(args)] in err, (args, err)
        assert "Traceback" not in err
        assert "... " not in err  # refused before the run started
        assert out == ""


def test_quick_keeps_the_sizes_given_bus_and_state(tmp_path: Path) -> None:
    bus = loomk(
        "bench", "bus", "--quick", "--deliveries", "300", "--repeats", "2", "--rate", "50",
        "--latency-seconds", "0.1", "--json", str(tmp_path / "bus.json"),
    )  # fmt: skip
    assert bus.returncode == 0, bus.stderr
    assert "best of 2" in bus.stderr
    figures = json.loads((tmp_path / "bus.json").read_text())
    assert [row["deliveries"] for row in figures["throughput"]] == [300, 300, 300]
    assert {(row["rate_per_s"], row["samples"]) for row in figures["latency"]} == {(50, 5)}

    state = loomk(
        "bench", "state", "--quick", "--agents", "2", "--events", "3", "--keys", "1",
        "--fsync-writes", "4", "--json", str(tmp_path / "state.json"),
    )  # fmt: skip
    assert state.returncode == 0, state.stderr
    assert "4 fsync'd puts" in state.stderr
    figures = json.loads((tmp_path / "state.json").read_text())
    assert [row["writes"] for row in figures["results"]] == [6, 6]


def test_quick_keeps_the_sizes_given_agents_and_collab(tmp_path: Path) -> None:
    agents = loomk(
        "bench", "agents", "--quick", "--spawn", "3", "--deliveries", "100", "--repeats", "2",
        "--json", str(tmp_path / "agents.json"),
    )  # fmt: skip
    assert agents.returncode == 0, agents.stderr
    assert "best of 2" in agents.stderr
    figures = json.loads((tmp_path / "agents.json").read_text())
    assert [row["agents"] for row in figures["spawn"]] == [3]
    assert [row["deliveries"] for row in figures["delivery"]] == [100, 100, 100]

    collab = loomk(
        "bench", "collab", "--quick", "--round-trips", "7", "--invocations", "9",
        "--repeats", "2", "--json", str(tmp_path / "collab.json"),
    )  # fmt: skip
    assert collab.returncode == 0, collab.stderr
    assert "run 2/2" in collab.stderr
    figures = json.loads((tmp_path / "collab.json").read_text())
    assert (figures["round_trips"]["count"], figures["invocations"]["count"]) == (7, 9)


def test_quick_alone_still_takes_the_smoke_sizes(tmp_path: Path) -> None:
    result = loomk("bench", "collab", "--quick", "--json", str(tmp_path / "collab.json"))
    assert result.returncode == 0, result.stderr
    figures = json.loads((tmp_path / "collab.json").read_text())
    assert (figures["round_trips"]["count"], figures["invocations"]["count"]) == (500, 1_000)
    assert "run 1/1" in result.stderr
