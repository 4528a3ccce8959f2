"""Reserved metadata keys of the envelope, shared by events and envelope without a cycle."""

from __future__ import annotations

THREAD_ID = "thread_id"
CORRELATION_ID = "correlation_id"
SENDER = "sender"
REPLY_TO = "reply_to"
TTL = "ttl"
HOP = "hop"
TS = "ts"

RESERVED_KEYS: tuple[str, ...] = (THREAD_ID, CORRELATION_ID, SENDER, REPLY_TO, TTL, HOP, TS)
