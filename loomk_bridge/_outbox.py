"""Frames from the kernel's trio side to a stream's asyncio writer, a list per crossing.

A crossing between trio and asyncio costs ~100 µs, so frames are never handed over one by
one through ``aio_as_trio``: the trio side puts a whole list with ``asyncio.Queue.put_nowait``
(about a microsecond, no crossing) and only crosses when the queue is full, which is also
how a slow client pushes back on the bus. ``close`` ends the stream after what is queued.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from typing import Any

import trio_asyncio

__all__ = ["Outbox"]

_END: Any = object()


class Outbox:
    """Bounded queue of frame lists; put from trio, read from asyncio (one reader)."""

    def __init__(self, capacity: int) -> None:
        self._queue: asyncio.Queue[Sequence[Any]] = asyncio.Queue(capacity)
        self._closed = False

    @property
    def closed(self) -> bool:
        return self._closed

    async def put(self, frames: Sequence[Any]) -> None:
        """Queue ``frames`` (trio side); waits while the queue is full. Ignored once closed."""
        if self._closed:
            return
        try:
            self._queue.put_nowait(frames)
        except asyncio.QueueFull:
            await trio_asyncio.aio_as_trio(self._queue.put)(frames)

    def put_nowait(self, frames: Sequence[Any]) -> bool:
        """Queue ``frames`` if there is room; whether they were queued."""
        if self._closed:
            return False
        try:
            self._queue.put_nowait(frames)
        except asyncio.QueueFull:
            return False
        return True

    def close(self) -> None:
        """End the stream once what is queued has been sent (idempotent, never waits)."""
        if self._closed:
            return
        self._closed = True
        try:
            self._queue.put_nowait(_END)
        except asyncio.QueueFull:  # the writer is behind: make room for the end
            self._queue.get_nowait()
            self._queue.put_nowait(_END)

    async def frames(self) -> AsyncIterator[Sequence[Any]]:
        """The queued frame lists, until closed (asyncio side)."""
        while True:
            frames = await self._queue.get()
            if frames is _END:
                return
            yield frames
