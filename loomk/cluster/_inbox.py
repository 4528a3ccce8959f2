"""Messages from NATS, handed from nats-py's callbacks (asyncio) to the kernel (trio) in
batches: one crossing per batch, not per message (a crossing costs ~100 µs).

nats-py calls a subscription's callback once per message in the asyncio loop; the callback
appends here (a list append). The trio side takes everything queued at once. Core messages
beyond ``limit`` waiting are dropped and counted (at most once, by definition, and a slow
kernel must not grow without bound); JetStream messages are never dropped here (the
consumer's ``max_ack_pending`` bounds them).
"""

from __future__ import annotations

import asyncio
from typing import Any

__all__ = ["Inbox"]

CORE, DURABLE, CALL, ANNOUNCE = 0, 1, 2, 3
"""What a queued message is: a core event, a JetStream event, a capability call, an
announcement of another kernel."""


class Inbox:
    """A batch queue from asyncio callbacks to one trio task (see the module)."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.dropped = 0  # core messages dropped while the kernel lagged
        self._queued: list[tuple[int, Any]] = []
        self._ready: asyncio.Event | None = None  # made in the asyncio loop, on first use

    def _event(self) -> asyncio.Event:
        if self._ready is None:
            self._ready = asyncio.Event()
        return self._ready

    def callback(self, kind: int) -> Any:
        """An asyncio callback for a nats-py subscription that queues its messages as
        ``kind``."""
        queued, limit = self._queued, self.limit
        ready = self._event()

        async def queue(msg: Any) -> None:
            if kind == CORE and len(queued) >= limit:
                self.dropped += 1
                return
            queued.append((kind, msg))
            ready.set()

        return queue

    async def take(self) -> list[tuple[int, Any]]:
        """(asyncio) Everything queued, waiting for at least one message."""
        ready = self._event()
        while not self._queued:
            ready.clear()
            await ready.wait()
        batch = self._queued[:]
        self._queued.clear()
        return batch
