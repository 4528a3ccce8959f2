"""One hop of the envelope: the rule, written once, and its form over plain metadata.

:func:`next_hop` is the whole rule (``hop`` up by one, saturating; ``ttl`` down by one while
positive; the message lives on while ``ttl > 0``). :class:`loomk.envelope.Envelope` applies
it to its fields, :func:`hop_metadata` to an event's metadata (which is what the agent
runtime does per delivery, lazily, see :mod:`loomk.events`). Kept apart so that events and
the envelope module can both use it without importing each other.
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


def next_hop(ttl: int, hop: int) -> tuple[int, int]:
    """``(ttl, hop)`` after one hop: ``hop + 1`` (saturating, as Loom's u32) and ``ttl - 1``
    while positive. The message is still alive when the new ``ttl`` is above 0."""
    return (ttl - 1 if ttl > 0 else ttl), (hop + 1 if hop < _HOP_MAX else hop)


def parse_ttl(raw: str | None) -> int:
    """A metadata ``ttl`` as Loom reads it (absent or unparsable: the default, 16)."""
    return _parse_int(raw, DEFAULT_TTL, _TTL_MIN, _TTL_MAX)


def parse_hop(raw: str | None) -> int:
    """A metadata ``hop`` as Loom reads it (absent, unparsable or out of range: 0)."""
    return _parse_int(raw, 0, 0, _HOP_MAX)


def parse_ts(raw: str | None) -> int:
    """A metadata ``ts`` (absent or unparsable: now, in epoch milliseconds)."""
    return _parse_int(raw, None, None, None)


def parse_deadline(raw: str | None) -> int | None:
    """A metadata ``deadline_ms`` (epoch milliseconds), or None when absent or not a
    non-negative integer (a malformed deadline binds nothing, as Loom ignores the key)."""
    if raw is None:
        return None
    value = _parse_int(raw, -1, 0, 2**63 - 1)
    return value if value >= 0 else None


def survives_hop(metadata: Mapping[str, str]) -> bool:
    """Whether a message with this metadata is still alive after one more hop."""
    raw = metadata.get(TTL)
    return raw is None or next_hop(parse_ttl(raw), 0)[0] > 0


def hop_metadata(
    metadata: Mapping[str, str], fallback_id: str, sender: str
) -> dict[str, str] | None:
    """The metadata an event carries after one more hop, or None when its TTL has run out.

    The same as ``Envelope.from_metadata`` + fill an empty sender + ``next_hop`` +
    ``apply_to_metadata``, on the metadata directly: the agent runtime does this per
    delivery, where building an ``Envelope`` would cost more than the hop itself.
    """
    ttl, hop = next_hop(parse_ttl(metadata.get(TTL)), parse_hop(metadata.get(HOP)))
    if ttl <= 0:
        return None
    hopped = dict(metadata)
    hopped[THREAD_ID], hopped[CORRELATION_ID], hopped[REPLY_TO] = conversation_ids(
        metadata, fallback_id
    )
    hopped[SENDER] = metadata.get(SENDER) or sender
    hopped[TTL] = _SMALL[ttl] if ttl < 256 else str(ttl)
    hopped[HOP] = _SMALL[hop] if hop < 256 else str(hop)
    hopped[TS] = str(parse_ts(metadata.get(TS)))
    return hopped
