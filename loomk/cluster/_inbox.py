"""Messages from NATS, handed from nats-py's callbacks (asyncio) to the kernel (trio) in
batches: one crossing per batch, not per message (a crossing costs ~100 µs).

nats-py calls a subscription's callback once per message in the asyncio loop; the callback
appends here (a list append). The trio side takes everything queued at once and sorts it
(the link bounds what waits on its side).
"""

from __future__ import annotations

import asyncio
from typing import Any

__all__ = ["ANNOUNCE", "CALL", "CORE", "DURABLE", "Inbox"]

CORE, DURABLE, CALL, ANNOUNCE = 0, 1, 2, 3
"""What a queued message is: a core event, a JetStream event, a capability call, an
announcement of another kernel."""


class Inbox:
    """A batch queue from asyncio callbacks to one trio task (see the module)."""

    def __init__(self) -> None:
        self._queued: list[tuple[int, Any]] = []
        self._ready: asyncio.Event | None = None  # made in the asyncio loop, on first use

    def _event(self) -> asyncio.Event:
        if self._ready is None:
            self._ready = asyncio.Event()
        return self._ready

    def callback(self, kind: int) -> Any:
        """An asyncio callback for a nats-py subscription that queues its messages as
        ``kind``."""
        queued, ready = self._queued, self._event()

        async def queue(msg: Any) -> None:
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
