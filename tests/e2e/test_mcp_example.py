"""examples/mcp_tools.py and the README's MCP program run as a user would run them: offline,
against the real ``mcp-server-time`` started over stdio."""

from __future__ import annotations

from pathlib import Path

import pytest
from support import run_python

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.e2e


def test_the_mcp_example_calls_the_time_server_from_an_agent(tmp_path: Path) -> None:
    result = run_python(str(ROOT / "examples/mcp_tools.py"), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [
        "MCP tools: time:convert_time, time:get_current_time",
        "12:00 in UTC is 21:00 in Asia/Tokyo",
    ]
    assert "Traceback" not in result.stderr


def _code_block(document: str, heading: str) -> str:
    text = (ROOT / document).read_text()
    start = text.index("```python\n", text.index(heading)) + len("```python\n")
    return text[start : text.index("```", start)]


def test_the_readme_mcp_program_runs_as_documented(tmp_path: Path) -> None:
    script = tmp_path / "mcp_program.py"
    script.write_text(_code_block("README.md", "## MCP"))
    result = run_python(str(script), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == "True"
    assert lines[1] == "21:00"
    assert "Traceback" not in result.stderr
