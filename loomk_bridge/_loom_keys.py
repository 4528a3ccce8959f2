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

__all__ = ["from_loom_sdk", "to_loom_sdk"]

_SDK_KEYS = (
    ("loom.thread_id", "thread_id"),
    ("loom.correlation_id", "correlation_id"),
    ("loom.reply_to", "reply_to"),
)
_AGENT = "agent."


def from_loom_sdk(message: Any) -> None:
    """Give an event a loom-py client published (a ``loom.v1.Event``, changed in place) the
    kernel's envelope keys."""
    metadata = message.metadata
    sender = metadata.get("loom.sender")
    if sender is None and "loom.correlation_id" not in metadata:
        return  # not written by the SDK: nothing to translate
    for sdk_key, key in _SDK_KEYS:
        value = metadata.get(sdk_key)
        if value and key not in metadata:
            metadata[key] = value
    if sender:
        if "sender" not in metadata:
            metadata["sender"] = sender if sender.startswith(_AGENT) else _AGENT + sender
        if "reply_to" not in metadata:  # the SDK's implied answer: to the sender, by id
            metadata["reply_to"] = f"agent.{sender.removeprefix(_AGENT)}.replies"
            if "correlation_id" not in metadata and message.id:
                metadata["correlation_id"] = message.id


def to_loom_sdk(message: Any) -> None:
    """Give an event sent to a loom-py client (a ``loom.v1.Event``, changed in place) the
    SDK's envelope keys."""
    metadata = message.metadata
    for sdk_key, key in _SDK_KEYS:
        value = metadata.get(key)
        if value and sdk_key not in metadata:
            metadata[sdk_key] = value
    sender = metadata.get("sender")
    if sender and "loom.sender" not in metadata:
        metadata["loom.sender"] = sender.removeprefix(_AGENT)
