"""examples/planner_researcher_writer.py run as a user would: one process, then three
processes linked through the bridge (real processes, real gRPC on loopback)."""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "planner_researcher_writer.py"
DRAFT = (
    "Draft based on Loom is an event-driven runtime for always-on AI agents: events in, "
    "actions out, state in the middle"
)
pytestmark = pytest.mark.e2e


def _run(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("LOOMK_", "LOOM_"))}
    return subprocess.run(
        [sys.executable, str(EXAMPLE), *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


@pytest.mark.parametrize("processes", ["1", "3"])
def test_the_writer_prints_the_draft_and_summary(processes: str, tmp_path: Path) -> None:
    result = _run("--processes", processes, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [DRAFT, "SUMMARY: OK"]
    assert "Traceback" not in result.stderr


def test_a_role_without_a_server_to_link_to_is_a_usage_error(tmp_path: Path) -> None:
    result = _run("--role", "writer", cwd=tmp_path)
    assert result.returncode == 2
    assert "--connect" in result.stderr


def test_the_readme_commands_of_the_example_run_as_written() -> None:
    readme = (ROOT / "README.md").read_text()
    commands = [
        line
        for line in readme.splitlines()
        if line.startswith("python examples/planner_researcher_writer.py")
    ]
    assert len(commands) == 2
    for command in commands:
        args = shlex.split(command)
        assert args[0] == "python"
        env = {k: v for k, v in os.environ.items() if not k.startswith(("LOOMK_", "LOOM_"))}
        result = subprocess.run(
            [sys.executable, *args[1:]],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert result.returncode == 0, result.stderr
        assert result.stdout.splitlines() == [DRAFT, "SUMMARY: OK"]
