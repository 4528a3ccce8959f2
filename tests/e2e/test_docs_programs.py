"""The complete programs of the docs run as documented, as a user would run them: copied
into a file of their own and started with Python, their output compared with the docs'."""

from __future__ import annotations

from pathlib import Path

import pytest
import trio
import trio.testing
from support import run_python

import loomk
from loomk.testing import capture_events

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
    result = run_python(str(script), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout == printed
    assert "Traceback" not in result.stderr


def test_the_heartbeat_edge_of_the_edges_guide_runs_with_a_kernel() -> None:
    """The example edge, taken from docs/edges.md as written, started by a kernel given it
    in ``edges=``: its beats reach the bus, ``kernel.edge`` returns what it yielded, and
    the kernel's shutdown stops it."""
    text = (ROOT / "docs/edges.md").read_text()
    start = text.index("```python\n", text.index("## What an edge is")) + len("```python\n")
    namespace: dict[str, object] = {"__name__": "edges_example"}
    exec(text[start : text.index("```", start)], namespace)
    heartbeat = namespace["Heartbeat"]
    assert isinstance(heartbeat, type)

    async def main() -> tuple[int, object]:
        # loomk.testing's kernels take settings only, so the edge goes to open_kernel itself
        async with loomk.open_kernel(
            env={}, state_temporary=True, log_level="critical", edges=[heartbeat()]
        ) as kernel:
            with capture_events(kernel.bus, "kernel.heartbeat") as beats, trio.fail_after(10):
                await beats.wait_for(3)  # virtual seconds: a beat a second, if the edge runs
            return len(beats.of_type("beat")), kernel.edge("heartbeat")

    count, opened = trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))
    assert count >= 3
    assert isinstance(opened, trio.CancelScope)


def test_the_readme_s_dashboard_program_runs_as_written(tmp_path: Path) -> None:
    text = (ROOT / "README.md").read_text()
    start = text.index("```python\n", text.index("## Dashboard and metrics")) + len("```python\n")
    script = tmp_path / "dashboard.py"
    script.write_text(text[start : text.index("```", start)])
    result = run_python(str(script), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    opened, published = result.stdout.splitlines()
    assert opened.startswith("open http://127.0.0.1:")
    assert published == 'published_events_total{topic="sensors.kitchen.temp"} 1'
    assert "Traceback" not in result.stderr
