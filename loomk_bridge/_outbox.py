"""Frames from the kernel's trio side to a stream's asyncio writer, a list per crossing.

A crossing between trio and asyncio costs ~100 µs, so frames are never handed over one by
one through ``aio_as_trio``: the trio side puts a whole list with ``asyncio.Queue.put_nowait``
(about a microsecond, no crossing) and only crosses to wait when ``capacity`` lists are
queued, which is also how a slow client pushes back on the bus.

``close(final)`` ends the stream after what is queued, then ``final`` (the ``err`` frame
saying why): the queue itself is unbounded and the capacity is counted here, so the last
frames always fit and nothing queued is ever dropped to make room; a put still waiting is
released at once (and puts nothing).
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
        self._queue: asyncio.Queue[Sequence[Any]] = asyncio.Queue()
        self._capacity = capacity
        self._room: asyncio.Event | None = None  # set when the reader takes a list
        self._closed = False

    async def put(self, frames: Sequence[Any]) -> bool:
        """Queue ``frames`` (trio side), waiting while ``capacity`` lists are queued;
        whether they were queued (not once closed)."""
        while not self._closed and self._queue.qsize() >= self._capacity:
            if self._room is None:
                self._room = asyncio.Event()
            await trio_asyncio.aio_as_trio(self._room.wait)()
        return self.put_nowait(frames)

    def put_nowait(self, frames: Sequence[Any]) -> bool:
        """Queue ``frames`` at once, whatever is queued (small control frames: a ping, a
        call's result, which must not wait behind a full queue); False once closed."""
        if self._closed:
            return False
        self._queue.put_nowait(frames)
        return True

    def unsent(self) -> list[Sequence[Any]]:
        """Take the frame lists the reader never took (once the stream is over), oldest
        first, so that what they carry can be sent again elsewhere."""
        left = []
        while not self._queue.empty():
            frames = self._queue.get_nowait()
            if frames is not _END:
                left.append(frames)
        return left

    def close(self, final: Sequence[Any] = ()) -> None:
        """End the stream after what is queued and then ``final`` (idempotent, never waits)."""
        if self._closed:
            return
        self._closed = True
        if final:
            self._queue.put_nowait(final)
        self._queue.put_nowait(_END)
        self._wake()

    def _wake(self) -> None:
        if self._room is not None:
            self._room.set()
            self._room = None

    async def frames(self) -> AsyncIterator[Sequence[Any]]:
        """The queued frame lists, until closed (asyncio side)."""
        while True:
            frames = await self._queue.get()
            self._wake()
            if frames is _END:
                return
            yield frames
