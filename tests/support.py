"""Helpers shared by the bus tests: numbered events, draining and conservation checks."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

import trio
import trio.testing

from loomk import ActionCall, ActionResult, Agent, CapabilityDescriptor, Context, Event, EventBus
from loomk.bus import Subscription

Step = Callable[[Context], Awaitable[None]]


def ev(i: int, etype: str = "msg", **metadata: str) -> Event:
    """An event whose payload is the decimal index ``i``."""
    return Event(etype, str(i).encode(), metadata=metadata)


def drain(sub: Subscription) -> list[tuple[str, Event]]:
    """Everything a subscription holds right now, without waiting."""
    items: list[tuple[str, Event]] = []
    while True:
        try:
            items.append(sub.receive_nowait())
        except (trio.WouldBlock, trio.EndOfChannel):
            return items


def indices(items: list[tuple[str, Event]]) -> list[int]:
    """The indices of events made by :func:`ev`."""
    return [int(event.payload) for _, event in items]


def payloads(items: list[tuple[str, Event]]) -> list[bytes]:
    """The payloads of received items."""
    return [event.payload for _, event in items]


def assert_conserved(sub: Subscription, matched: int) -> None:
    """Once drained, every matching event is delivered, dropped or filtered."""
    stats = sub.stats()
    assert stats.depth == 0, "drain first"
    assert matched == stats.delivered + stats.dropped_total + stats.filtered, stats


class Scripted(Agent):
    """Runs, for each event on ``in.{id}``, the step registered under the event's type;
    ``on_start``/``on_stop`` run the ``"start"``/``"stop"`` steps when there are some.

    ``steps`` is a constructor argument, so a restarted instance shares it with the old one,
    and a test may add steps after the spawn.
    """

    metadata = {"role": "scripted", "team": "tests"}  # noqa: RUF012

    def __init__(self, agent_id: str, steps: dict[str, Step]) -> None:
        super().__init__(agent_id)
        self.topics = (f"in.{agent_id}",)  # type: ignore[misc]  # per-instance topics
        self.steps = steps

    async def on_start(self, ctx: Context) -> None:
        step = self.steps.get("start")
        if step is not None:
            await step(ctx)

    async def on_event(self, ctx: Context, event: Event) -> None:
        await self.steps[event.type](ctx)

    async def on_stop(self, ctx: Context) -> None:
        step = self.steps.get("stop")
        if step is not None:
            await step(ctx)


@asynccontextmanager
async def parked_publish(bus: EventBus, topic: str, event: Event) -> AsyncIterator[list[int]]:
    """Publish ``event`` in a task that must park on a full ``block`` lane.

    The body runs while the publisher waits; after the block, the list holds what
    ``publish`` returned.
    """
    results: list[int] = []

    async def publisher() -> None:
        results.append(await bus.publish(topic, event))

    async with trio.open_nursery() as nursery:
        nursery.start_soon(publisher)
        await trio.testing.wait_all_tasks_blocked()
        assert results == [], "the publisher was expected to park"
        yield results


class RecordingProvider:
    """A capability provider (the protocol, not ``@capability``) that records every call it
    receives and answers with what ``behaviour(call)`` returns, as is, or without a
    behaviour with an OK result whose output names its version."""

    def __init__(
        self,
        name: str = "test.cap",
        version: str = "1.0.0",
        behaviour: Callable[[ActionCall], Awaitable[Any]] | None = None,
        **metadata: str,
    ) -> None:
        self._descriptor = CapabilityDescriptor(name, version, metadata=metadata)
        self.behaviour = behaviour
        self.calls: list[ActionCall] = []

    @property
    def descriptor(self) -> CapabilityDescriptor:
        return self._descriptor

    async def invoke(self, call: ActionCall) -> ActionResult:
        self.calls.append(call)
        if self.behaviour is None:
            return ActionResult.success(call.id, {"version": self._descriptor.version})
        return await self.behaviour(call)  # type: ignore[no-any-return]

    @property
    def count(self) -> int:
        return len(self.calls)
