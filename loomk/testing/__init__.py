"""Helpers for testing programs built on loomk, as ``trio.testing`` is for trio programs.

Import it explicitly (``import loomk.testing`` or ``from loomk.testing import ...``):
``import loomk`` does not load it.

- :func:`open_test_kernel` / :func:`run_test_kernel`: a kernel that ignores the machine's
  ``LOOMK_*`` variables and ``loomk.toml``, with temporary state and quiet logs;
- :func:`capture_events`: record what is published on a pattern, and wait for it;
- :class:`ScriptedAgent`: an agent whose behaviour is given as steps per event type;
- :class:`RecordingProvider`: a capability provider that records its calls;
- :func:`assert_conserved`: check that the bus accounted for every event it was given.

A test with pytest-trio (``trio_mode = true``)::

    from loomk import Context, Event
    from loomk.testing import ScriptedAgent, capture_events, open_test_kernel

    async def test_the_echo_agent_answers() -> None:
        async def echo(ctx: Context, event: Event) -> None:
            await ctx.emit("chat.out", Event("echo", event.payload))

        async with open_test_kernel() as kernel:
            with capture_events(kernel.bus, "chat.out") as out:
                await kernel.spawn(ScriptedAgent("echo", {"text": echo}))
                await kernel.bus.publish("in.echo", Event("text", b"hi"))
                [answer] = await out.wait_for(1)
        assert answer.payload == b"hi"

See docs/testing.md for more.
"""

from loomk.testing._agents import EventStep, LifecycleStep, ScriptedAgent
from loomk.testing._capture import EventCapture, capture_events
from loomk.testing._conservation import assert_conserved
from loomk.testing._kernel import open_test_kernel, run_test_kernel
from loomk.testing._providers import ProviderBehaviour, RecordingProvider

__all__ = [
    "EventCapture",
    "EventStep",
    "LifecycleStep",
    "ProviderBehaviour",
    "RecordingProvider",
    "ScriptedAgent",
    "assert_conserved",
    "capture_events",
    "open_test_kernel",
    "run_test_kernel",
]
