"""What the bench scenarios share: the workload's topic and payload, a counting handler, the
bus-side consumer loop, and best-of-N timing."""

from __future__ import annotations

import gc
from collections.abc import Awaitable, Callable

import trio

from loomk.bus import Subscription
from loomk.events import Event

__all__ = ["PAYLOAD", "TOPIC", "Counter", "Handler", "best_of", "drain_subscription"]

TOPIC = "bench.sensor.reading"
PAYLOAD = b"x" * 64

Handler = Callable[[str, Event], Awaitable[None]]


class Counter:
    """A handler that counts what it is handed."""

    __slots__ = ("count",)

    def __init__(self) -> None:
        self.count = 0

    async def handle(self, topic: str, event: Event) -> None:
        """Count one delivery."""
        self.count += 1


async def drain_subscription(sub: Subscription, handle: Handler) -> None:
    """Call ``handle`` for every delivery: ``receive_nowait`` until empty, then park."""
    receive_nowait = sub.receive_nowait
    while True:
        try:
            topic, event = receive_nowait()
        except trio.WouldBlock:
            try:
                topic, event = await sub.receive()
            except trio.EndOfChannel:
                return
        except trio.EndOfChannel:
            return
        await handle(topic, event)


def best_of(repeats: int, fn: Callable[[], float]) -> float:
    """The highest of ``repeats`` runs of ``fn`` (a rate), each after a full collection."""
    best = 0.0
    for _ in range(repeats):
        gc.collect()
        best = max(best, fn())
    return best
