"""What the console shows when an agent keeps failing: one line per failure, the traceback
only with the agent's first one (the rest at debug). Run in a fresh process, as logging is
configured once per process."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

SCRIPT = textwrap.dedent(
    """
    import trio
    import loomk
    from loomk import Event
    from loomk.testing import ScriptedAgent

    async def fail(ctx, event):
        raise ValueError("bad reading " + event.payload.decode())

    async def main(kernel):
        await kernel.spawn(
            ScriptedAgent("flaky", {"reading": fail}), max_restarts=5, backoff_s=0, jitter=0
        )
        for i in range(3):
            await kernel.bus.publish("in.flaky", Event("reading", str(i).encode()))
            await trio.testing.wait_all_tasks_blocked()

    loomk.run(main, log_level="{level}", state_temporary=True, handle_signals=False)
    """
)


@pytest.mark.parametrize(("level", "tracebacks"), [("warning", 1), ("debug", 3)])
def test_a_failing_agent_logs_one_line_per_failure_and_its_traceback_once(
    level: str, tracebacks: int
) -> None:
    script = SCRIPT.replace("{level}", level)
    result = subprocess.run(
        [sys.executable, "-c", "import trio.testing\n" + script],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    lines = result.stderr.splitlines()
    failures = [line for line in lines if "agent failed" in line and "[error" in line]
    assert len(failures) == 3
    assert all("flaky" in line for line in failures)
    assert ["bad reading 0" in failures[0], "bad reading 2" in failures[2]] == [True, True]
    assert result.stderr.count("Traceback (most recent call last)") == tracebacks
