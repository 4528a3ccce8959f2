"""An agent whose behaviour a test writes as steps, one per event type."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence

from loomk.agents.agent import Agent, Topic
from loomk.agents.context import Context
from loomk.events import Event

__all__ = ["EventStep", "LifecycleStep", "ScriptedAgent"]

EventStep = Callable[[Context, Event], Awaitable[None]]
"""What a :class:`ScriptedAgent` does with one event: ``async def step(ctx, event)``."""

LifecycleStep = Callable[[Context], Awaitable[None]]
"""What a :class:`ScriptedAgent` does when it starts or stops: ``async def step(ctx)``."""


class ScriptedAgent(Agent):
    """An agent that runs, for each event, the step registered under the event's type.

    A test states what the agent does where it uses it, instead of writing an agent class
    per test. ``on_start``/``on_stop`` run when an instance starts and stops. ``topics``
    defaults to the agent's own inbox, ``in.{agent_id}``; ``metadata`` is published in the
    agent directory. An event whose type has no step fails the handler with ``LookupError``.

    Everything is a constructor argument, so an instance the supervisor makes on restart
    behaves like the first one, and shares its ``steps`` mapping: a step the test adds to
    that mapping after the spawn applies to every later instance too::

        async def ping(ctx: Context, event: Event) -> None:
            ctx.state["pings"] = ctx.state.get("pings", 0) + 1
            await ctx.emit("out.pong", Event("pong", event.payload))

        await kernel.spawn(ScriptedAgent("pinger", {"ping": ping}), restart="permanent")
        await kernel.bus.publish("in.pinger", Event("ping", b"1"))
    """

    def __init__(
        self,
        agent_id: str,
        steps: Mapping[str, EventStep] | None = None,
        *,
        on_start: LifecycleStep | None = None,
        on_stop: LifecycleStep | None = None,
        topics: Sequence[str | Topic] | None = None,
        metadata: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(agent_id)
        self.topics = (f"in.{agent_id}",) if topics is None else tuple(topics)  # type: ignore[misc]
        self.metadata = dict(metadata or {})  # type: ignore[misc]  # per-instance metadata
        self.steps: Mapping[str, EventStep] = {} if steps is None else steps
        self.start_step = on_start
        self.stop_step = on_stop

    async def on_start(self, ctx: Context) -> None:
        if self.start_step is not None:
            await self.start_step(ctx)

    async def on_event(self, ctx: Context, event: Event) -> None:
        step = self.steps.get(event.type)
        if step is None:
            raise LookupError(
                f"ScriptedAgent {self.agent_id!r} has no step for event type {event.type!r} "
                f"(steps: {sorted(self.steps)})"
            )
        await step(ctx, event)

    async def on_stop(self, ctx: Context) -> None:
        if self.stop_step is not None:
            await self.stop_step(ctx)
