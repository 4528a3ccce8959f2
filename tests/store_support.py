"""Helpers of the store tests: a store with its writer running, and damage done to its files."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import trio

from loomk.state import Store


@asynccontextmanager
async def running(path: Path, *, sync: bool = False) -> AsyncIterator[Store]:
    """An open store with its writer running; closed (flushed) on exit."""
    store = Store.open(path, sync=sync)
    async with trio.open_nursery() as nursery:
        await nursery.start(store.run)
        try:
            yield store
        finally:
            with trio.CancelScope(shield=True):
                await store.aclose()


def the_log(path: Path) -> Path:
    """The database's write-ahead log file."""
    (log,) = path.glob("*.log")
    return log


def flip_bytes(file: Path, at: int, count: int = 16) -> None:
    """Invert ``count`` bytes of ``file`` from offset ``at``."""
    with file.open("r+b") as handle:
        handle.seek(at)
        data = handle.read(count)
        handle.seek(at)
        handle.write(bytes(byte ^ 0xFF for byte in data))
