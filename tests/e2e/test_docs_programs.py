"""The complete programs of the docs run as documented, as a user would run them: copied
into a file of their own and started with Python, their output compared with the docs'."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.e2e


def _blocks_after(document: str, heading: str) -> tuple[str, str]:
    """The first ``python`` block after ``heading`` and the ``text`` block that follows it."""
    text = (ROOT / document).read_text()
    start = text.index("```python\n", text.index(heading)) + len("```python\n")
    program = text[start : text.index("```", start)]
    printed = text.index("```text\n", start) + len("```text\n")
    return program, text[printed : text.index("```", printed)]


def test_the_contract_net_bidder_of_the_collaboration_guide_runs_as_documented(
    tmp_path: Path,
) -> None:
    program, printed = _blocks_after("docs/collab.md", "### A bidder")
    assert "ctx.propose(" in program
    assert "ctx.report(" in program
    script = tmp_path / "bidder.py"
    script.write_text(program)
    env = {k: v for k, v in os.environ.items() if not k.startswith("LOOMK_")}
    result = subprocess.run(
        [sys.executable, str(script)],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout == printed
    assert "Traceback" not in result.stderr
