"""A tap: the newest published events, seen without subscribing (for observers).

An observer such as the dashboard wants to *watch* the bus: it must not be a subscriber
(it would change the counts it shows, and a slow observer could make publishers wait), and
it must cost publishers next to nothing. A tap is a ring of the newest ``capacity``
publishes that ``publish`` appends to (one C-level ``deque.append``); the observer takes what
is there when it likes, and learns how many publishes the ring overwrote meanwhile.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from types import TracebackType

from loomk.bus._lanes import Item
from loomk.events import Event

__all__ = ["BusTap", "TapBatch"]


@dataclass(frozen=True, slots=True)
class TapBatch:
    """What a :meth:`BusTap.take` found: ``(topic, event)`` in publish order, and how many
    publishes since the previous take are not in it (the ring overwrote them)."""

    events: list[tuple[str, Event]]
    missed: int


class BusTap:
    """The newest publishes of a bus, taken in batches (made by ``EventBus.tap``).

    ``close()`` (or leaving its ``with`` block) removes it from the bus.
    """

    __slots__ = ("_count", "_detach", "_ring", "_seen", "capacity")

    def __init__(
        self,
        capacity: int,
        count: Callable[[], int],
        detach: Callable[[BusTap], None],
    ) -> None:
        self.capacity = capacity
        self._ring: deque[Item] = deque(maxlen=capacity)
        self._count = count  # publishes so far on the bus
        self._seen = count()
        self._detach: Callable[[BusTap], None] | None = detach

    @property
    def append(self) -> Callable[[Item], None]:
        """What ``publish`` calls with each item (the ring's own ``append``)."""
        return self._ring.append

    @property
    def closed(self) -> bool:
        """Whether the tap was removed from its bus."""
        return self._detach is None

    def take(self) -> TapBatch:
        """The publishes since the previous take (at most ``capacity``, the newest), and
        how many more there were."""
        ring = self._ring
        items = list(ring)
        ring.clear()
        if self._detach is None:  # closed: nothing more was seen, so nothing was missed
            return TapBatch([(route.topic, event) for route, event in items], 0)
        published = self._count()
        missed = max(0, published - self._seen - len(items))
        self._seen = published
        return TapBatch([(route.topic, event) for route, event in items], missed)

    def close(self) -> None:
        """Stop seeing publishes (idempotent); what the ring holds can still be taken."""
        detach, self._detach = self._detach, None
        if detach is not None:
            detach(self)

    def __enter__(self) -> BusTap:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
