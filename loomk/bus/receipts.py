"""Receipts: when every lossless subscriber has handled a published event.

A transport that must not lose what it hands to the bus (the cluster's JetStream consumer)
acknowledges an event to its source only once the event is safe here. ``publish`` returns
once the event is *queued*; :meth:`EventBus.publish_with_receipt
<loomk.bus.EventBus.publish_with_receipt>` also returns a :class:`Receipt` that becomes
:attr:`~Receipt.settled` once every lossless (``block``) lane it was queued in is past it:
taken, for a plain subscriber; taken *and committed*, for an agent (whose runtime calls
``Mailbox.settle`` after each commit). A lane that closes (its subscriber left) no longer
holds a receipt. Lossy lanes (``drop_*``, ``sample``, ``latest``, ``aggregate``) never
hold one: they promise no delivery to begin with.

A receipt is read by polling :attr:`~Receipt.settled` (a few comparisons): nothing is added
to the hot path of ``publish`` or of the consumers.
"""

from __future__ import annotations

from loomk.bus._lanes import Lane

__all__ = ["Receipt"]


class Receipt:
    """Where one published event stands in the lossless lanes that queued it."""

    __slots__ = ("_places",)

    def __init__(self, places: list[tuple[Lane, int]]) -> None:
        self._places = places  # (lane, how many events it must have passed)

    @property
    def lanes(self) -> int:
        """How many lossless lanes hold this receipt (0: settled at once)."""
        return len(self._places)

    @property
    def settled(self) -> bool:
        """Whether every lane that queued the event has handled it (see the module)."""
        places = self._places
        while places:
            lane, position = places[-1]
            done = lane.settled if lane.mailbox.commits else lane.delivered
            if done < position and not lane.closed:
                return False
            places.pop()
        return True
