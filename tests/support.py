"""Helpers shared by the bus tests: numbered events, draining, a publisher parked on a full lane.

The general ones (scripted agents, recording providers, conservation checks) are in
:mod:`loomk.testing`.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import trio
import trio.testing

from loomk import Event, EventBus
from loomk.bus import Subscription


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
