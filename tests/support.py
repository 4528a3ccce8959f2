"""Helpers shared by the bus tests: numbered events, draining and conservation checks."""

from __future__ import annotations

import trio

from loomk import Event
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


def assert_conserved(sub: Subscription, matched: int) -> None:
    """Once drained, every matching event is delivered, dropped or filtered."""
    stats = sub.stats()
    assert stats.depth == 0, "drain first"
    assert matched == stats.delivered + stats.dropped_total + stats.filtered, stats
