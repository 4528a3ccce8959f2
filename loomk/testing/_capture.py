"""Recording the events published on a pattern, to assert on them and to wait for them."""

from __future__ import annotations

from collections.abc import Collection
from types import TracebackType

import trio

from loomk.bus.bus import EventBus
from loomk.events import Event

__all__ = ["EventCapture", "capture_events"]


def capture_events(
    bus: EventBus, pattern: str, *, event_types: Collection[str] | None = None
) -> EventCapture:
    """Start recording every ``(topic, event)`` published on ``pattern`` (and, if given, of
    one of ``event_types``); leaving ``with`` or :meth:`EventCapture.detach` stops it.

    The capture is an event handler on the bus (``bus.attach_handler``): it records each
    event inside ``publish``, so nothing queues, nothing can be dropped, and the events are
    in publish order. Like any subscriber it claims what it records: ``publish`` counts it
    among its deliveries. Use it on ``kernel.bus`` or on any :class:`~loomk.EventBus`::

        with capture_events(kernel.bus, "chat.out") as replies:
            await kernel.bus.publish("chat.in", Event("text", b"hi"))
            [reply] = await replies.wait_for(1)
        assert reply.payload == b"hi"
    """
    return EventCapture(bus, pattern, event_types=event_types)


class EventCapture:
    """The events published on one pattern since the capture began, in publish order.

    Made by :func:`capture_events`, which documents how it records.
    """

    def __init__(
        self, bus: EventBus, pattern: str, *, event_types: Collection[str] | None = None
    ) -> None:
        self.pattern = pattern
        self._bus = bus
        self._items: list[tuple[str, Event]] = []
        self._waiters: list[tuple[int, trio.Event]] = []
        self._binding = bus.attach_handler(
            pattern, self._record, event_types=event_types, on_detach=self._stopped
        )

    def _record(self, topic: str, event: Event) -> bool:
        self._items.append((topic, event))
        if self._waiters:
            arrived = len(self._items)
            for count, woken in self._waiters:
                if count <= arrived:
                    woken.set()
            self._waiters = [(count, woken) for count, woken in self._waiters if count > arrived]
        return True  # claimed: counted as delivered in the bus statistics

    @property
    def items(self) -> list[tuple[str, Event]]:
        """Every ``(topic, event)`` recorded so far (a copy)."""
        return list(self._items)

    @property
    def events(self) -> list[Event]:
        """Every event recorded so far."""
        return [event for _, event in self._items]

    @property
    def topics(self) -> list[str]:
        """The topic of every event recorded so far."""
        return [topic for topic, _ in self._items]

    def of_type(self, event_type: str) -> list[Event]:
        """The recorded events whose type is ``event_type``."""
        return [event for _, event in self._items if event.type == event_type]

    def __len__(self) -> int:
        return len(self._items)

    @property
    def recording(self) -> bool:
        """Whether events are still being recorded (False after :meth:`detach` or once
        the bus has closed)."""
        return self._binding.attached

    async def wait_for(self, count: int) -> list[Event]:
        """Wait until ``count`` events have been recorded in all; returns the first ``count``.

        Returns at once if they already have. Raises ``RuntimeError`` if the capture has
        stopped recording short of ``count``, where waiting could only hang.
        """
        if count < 0:
            raise ValueError(f"count must be >= 0, got {count}")
        if len(self._items) < count:
            if not self.recording:
                raise RuntimeError(
                    f"the capture of {self.pattern!r} stopped recording with "
                    f"{len(self._items)} of {count} events"
                )
            woken = trio.Event()
            self._waiters.append((count, woken))
            await woken.wait()
            if len(self._items) < count:  # woken because recording stopped
                raise RuntimeError(
                    f"the capture of {self.pattern!r} stopped recording (detached, or the "
                    f"bus closed) with {len(self._items)} of {count} events"
                )
        return [event for _, event in self._items[:count]]

    def detach(self) -> None:
        """Stop recording (idempotent); what was recorded stays. A pending
        :meth:`wait_for` raises ``RuntimeError``, as no more events will come."""
        self._bus.detach(self._binding)

    def _stopped(self) -> None:
        """Recording ended (detached, or the bus closed): wake the waits that cannot end."""
        waiters, self._waiters = self._waiters, []
        for _, woken in waiters:
            woken.set()

    def __enter__(self) -> EventCapture:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.detach()

    def __repr__(self) -> str:
        return f"<EventCapture {self.pattern!r}: {len(self._items)} events>"
