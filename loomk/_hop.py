"""One hop of the envelope over plain metadata: shared by events and the envelope module.

Kept apart so that :mod:`loomk.events` (which writes a delivered event's envelope lazily)
and :mod:`loomk.envelope` can both use it without importing each other.
"""

from __future__ import annotations

import re
import time
from collections.abc import Mapping

from loomk._metakeys import CORRELATION_ID, HOP, REPLY_TO, SENDER, THREAD_ID, TS, TTL

DEFAULT_TTL = 16
_HOP_MAX = 2**32 - 1  # Loom stores hop as u32 and saturates
_TTL_MIN, _TTL_MAX = -(2**31), 2**31 - 1  # Loom stores ttl as i32
_INTEGER = re.compile(r"[+-]?[0-9]+")
_SMALL = [str(number) for number in range(256)]  # str() of the usual ttl and hop values


def _parse_int(raw: str | None, default: int | None, low: int | None, high: int | None) -> int:
    """Parse a metadata integer as Rust's ``str::parse`` does (ASCII digits, optional sign,
    nothing else); absent, unparsable or out of range gives the default, as in Loom."""
    if raw is not None and (
        (raw.isdigit() and raw.isascii()) or _INTEGER.fullmatch(raw) is not None
    ):
        value = int(raw)
        if (low is None or value >= low) and (high is None or value <= high):
            return value
    return time.time_ns() // 1_000_000 if default is None else default


def conversation_ids(metadata: Mapping[str, str], fallback_id: str) -> tuple[str, str, str]:
    """``(thread_id, correlation_id, reply_to)`` with Loom's defaults: the thread falls back
    to ``fallback_id`` (the event or call id), the correlation to the thread, the reply
    topic to ``thread.{thread}.reply``."""
    thread_id = metadata.get(THREAD_ID) or fallback_id
    return (
        thread_id,
        metadata.get(CORRELATION_ID) or thread_id,
        metadata.get(REPLY_TO) or f"thread.{thread_id}.reply",
    )


def hop_metadata(
    metadata: Mapping[str, str], fallback_id: str, sender: str
) -> dict[str, str] | None:
    """The metadata an event carries after one more hop, or None when its TTL has run out.

    Exactly ``Envelope.from_metadata`` + fill an empty sender + ``next_hop`` +
    ``apply_to_metadata``, written out flat because the agent runtime runs it per delivery.
    """
    ttl = _parse_int(metadata.get(TTL), DEFAULT_TTL, _TTL_MIN, _TTL_MAX)
    if ttl <= 1:
        return None  # next_hop() would leave ttl at 0 or below
    hop = _parse_int(metadata.get(HOP), 0, 0, _HOP_MAX)
    hopped = dict(metadata)
    hopped[THREAD_ID], hopped[CORRELATION_ID], hopped[REPLY_TO] = conversation_ids(
        metadata, fallback_id
    )
    hopped[SENDER] = metadata.get(SENDER) or sender
    ttl -= 1
    hop = hop + 1 if hop < _HOP_MAX else hop
    hopped[TTL] = _SMALL[ttl] if ttl < 256 else str(ttl)
    hopped[HOP] = _SMALL[hop] if hop < 256 else str(hop)
    hopped[TS] = str(_parse_int(metadata.get(TS), None, None, None))
    return hopped
