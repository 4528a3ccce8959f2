"""Reserved metadata keys of the envelope, shared by events and envelope without a cycle."""

from __future__ import annotations

from collections.abc import Mapping

THREAD_ID = "thread_id"
CORRELATION_ID = "correlation_id"
SENDER = "sender"
REPLY_TO = "reply_to"
TTL = "ttl"
HOP = "hop"
TS = "ts"

RESERVED_KEYS: tuple[str, ...] = (THREAD_ID, CORRELATION_ID, SENDER, REPLY_TO, TTL, HOP, TS)
"""Loom's envelope keys."""

DEADLINE_MS = "deadline_ms"
"""loomk's own reserved key (Loom peers ignore it): the wall-clock time, in epoch
milliseconds, by which the request an event carries must be answered."""

ORIGIN = "loomk.origin"
"""loomk's own key, stamped by a bus link (:mod:`loomk.links`) on every event it publishes
here: the link the event came in through, so that link never sends it back out. It belongs
to the delivery, not to the event's content: an agent that emits an event passes it on as
its own, and :meth:`loomk.Context.emit` and the collaborator drop the key
(:func:`without_origin`; else the link would take the relay for an echo and never send it
on)."""


def without_origin(metadata: Mapping[str, str]) -> dict[str, str]:
    """A copy of ``metadata`` for a new event made from a received one (an emit, a
    request or an award built from it): the link stamp stays with the delivery it marks."""
    return {key: value for key, value in metadata.items() if key != ORIGIN}
