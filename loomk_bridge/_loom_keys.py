"""Envelope metadata as Loom's Python SDK writes it, and as the kernel does.

Loom's kernel and loomk keep the envelope in the metadata keys ``thread_id``,
``correlation_id``, ``sender`` and ``reply_to``; Loom's Python SDK (``loom-py``) writes and
reads ``loom.thread_id``, ``loom.correlation_id``, ``loom.sender`` and ``loom.reply_to``
instead, and its ``request`` writes only ``loom.sender``: the replier answers on
``agent.{sender}.replies`` with the request's id as correlation. Left as they are, a
loom-py agent and a kernel agent could not answer each other.

So the bridge translates, for clients that are not loomk links: what such a client
publishes gains the kernel's keys (a request without a reply topic gets the SDK's implied
one: ``agent.{sender}.replies``, correlated by the event's id), and what it is sent gains
the SDK's. Keys already present are never overwritten, and a key's own value is kept.
"""

from __future__ import annotations

from typing import Any

from loomk import agent_reply_topic

__all__ = ["SDK_SENDER", "SENDER", "from_loom_sdk", "to_loom_sdk"]

# The kernel's envelope keys (loomk keeps them private: spelled here as Loom's wire has them)
SENDER = "sender"  # an agent id with "agent."
_CORRELATION_ID = "correlation_id"
_REPLY_TO = "reply_to"

SDK_SENDER = "loom.sender"
"""loom-py's sender key: an agent id without "agent."."""
_SDK_CORRELATION_ID = "loom.correlation_id"

_SDK_KEYS = (
    ("loom.thread_id", "thread_id"),
    (_SDK_CORRELATION_ID, _CORRELATION_ID),
    ("loom.reply_to", _REPLY_TO),
)
_AGENT = "agent."


def from_loom_sdk(message: Any) -> None:
    """Give an event a loom-py client published (a ``loom.v1.Event``, changed in place) the
    kernel's envelope keys."""
    metadata = message.metadata
    sender = metadata.get(SDK_SENDER)
    if sender is None and _SDK_CORRELATION_ID not in metadata:
        return  # not written by the SDK: nothing to translate
    for sdk_key, key in _SDK_KEYS:
        value = metadata.get(sdk_key)
        if value and key not in metadata:
            metadata[key] = value
    if sender:
        if SENDER not in metadata:
            metadata[SENDER] = sender if sender.startswith(_AGENT) else _AGENT + sender
        if _REPLY_TO not in metadata:  # the SDK's implied answer: to the sender, by id
            metadata[_REPLY_TO] = agent_reply_topic(sender.removeprefix(_AGENT))
            if _CORRELATION_ID not in metadata and message.id:
                metadata[_CORRELATION_ID] = message.id


def to_loom_sdk(message: Any) -> None:
    """Give an event sent to a loom-py client (a ``loom.v1.Event``, changed in place) the
    SDK's envelope keys."""
    metadata = message.metadata
    for sdk_key, key in _SDK_KEYS:
        value = metadata.get(key)
        if value and sdk_key not in metadata:
            metadata[sdk_key] = value
    sender = metadata.get(SENDER)
    if sender and SDK_SENDER not in metadata:
        metadata[SDK_SENDER] = sender.removeprefix(_AGENT)
