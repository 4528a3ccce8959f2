"""What crosses NATS: loomk events, capability calls and node announcements as bytes.

An event is one NATS message on ``{prefix}.{topic}`` (topics and subjects share a grammar):
``MAGIC``, a 4-byte big-endian length, a JSON envelope (id, type, source, timestamp,
metadata, tags, priority, confidence, and the node it comes from), then the payload
unchanged. Anything else on a shared subject is not a loomk event (:class:`NotAnEvent`):
counted and skipped by the link, never published. The node id rides in the envelope, not in
NATS headers, so a core message needs no header parsing on receipt (nats-py's header parser
costs more than the whole event).
"""

from __future__ import annotations

import json
import re
import struct
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from loomk._metakeys import ORIGIN, without_origin
from loomk.actions import ActionCall, ActionError, ActionResult, ActionStatus
from loomk.actions.types import CapabilityDescriptor, ProviderKind
from loomk.agents import AgentInfo
from loomk.bus import validate_pattern
from loomk.errors import EventError
from loomk.events import Event, QoS

__all__ = [
    "MAGIC",
    "Announcement",
    "NotAnEvent",
    "decode_announcement",
    "decode_call",
    "decode_event",
    "decode_result",
    "descriptor_from_json",
    "descriptor_to_json",
    "encode_announcement",
    "encode_call",
    "encode_event",
    "encode_goodbye",
    "encode_result",
]

MAGIC = b"\x00LK1"
_LENGTH = struct.Struct(">I")
_HEAD = len(MAGIC) + _LENGTH.size
_dumps = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False).encode
_loads = json.loads


class NotAnEvent(ValueError):
    """A message on a shared subject that is not a loomk event; the text says why."""


def encode_event(event: Event, node: str) -> bytes:
    """``event`` as the body of a NATS message, sent by ``node`` (the link's own origin
    stamp is left out: it is local to each kernel)."""
    metadata = event.metadata
    if ORIGIN in metadata:
        metadata = without_origin(metadata)
    envelope: dict[str, Any] = {
        "n": node,
        "i": event.id,
        "t": event.type,
        "ts": event.timestamp_ms,
    }
    if event.source:
        envelope["s"] = event.source
    if metadata:
        envelope["m"] = dict(metadata)
    if event.tags:
        envelope["g"] = list(event.tags)
    if event.priority != 50:
        envelope["p"] = event.priority
    if event.confidence != 1.0:
        envelope["c"] = event.confidence
    head = _dumps(envelope).encode()
    return b"".join((MAGIC, _LENGTH.pack(len(head)), head, event.payload))


def decode_event(data: bytes, stamp: Mapping[str, str] | None = None) -> tuple[str, Event]:
    """The sending node and the event a message body holds, its metadata with ``stamp``
    added (the receiving link's origin: one event made, not a copy); :class:`NotAnEvent`
    if it holds none (wrong magic, broken envelope, or fields an event cannot have)."""
    if data[:4] != MAGIC:
        raise NotAnEvent("not a loomk event (no loomk envelope)")
    try:
        (size,) = _LENGTH.unpack_from(data, 4)
        end = _HEAD + size
        if end > len(data):
            raise NotAnEvent("truncated loomk envelope")
        envelope = _loads(data[_HEAD:end].decode())  # str: json skips guessing the encoding
        metadata = envelope.get("m")
        if stamp:
            metadata = {**metadata, **stamp} if metadata else stamp
        event = Event(
            envelope["t"],
            data[end:],
            source=envelope.get("s", ""),
            metadata=metadata,
            tags=envelope.get("g", ()),
            priority=envelope.get("p", 50),
            confidence=float(envelope.get("c", 1.0)),
            id=envelope["i"],
            timestamp_ms=envelope["ts"],
        )
        node = envelope["n"]
    except NotAnEvent:
        raise
    except (ValueError, KeyError, TypeError, AttributeError, EventError, struct.error) as error:
        raise NotAnEvent(f"broken loomk envelope: {error}") from None
    if node.__class__ is not str:
        raise NotAnEvent("broken loomk envelope: the node is not a string")
    return node, event


def encode_call(call: ActionCall) -> bytes:
    """A capability call as the body of a NATS request."""
    return _dumps(
        {
            "id": call.id,
            "capability": call.capability,
            "version": call.version,
            "payload": call.payload.decode("latin-1"),
            "headers": call.headers,
            "timeout_ms": call.timeout_ms,
            "correlation_id": call.correlation_id,
            "qos": int(call.qos),
        }
    ).encode()


def decode_call(data: bytes) -> ActionCall:
    """The call a request holds; ``ValueError`` saying why if it holds none."""
    try:
        fields = _loads(data)
        return ActionCall(
            id=fields["id"],
            capability=fields["capability"],
            payload=fields["payload"].encode("latin-1"),
            version=fields.get("version", ""),
            headers=dict(fields.get("headers", {})),
            timeout_ms=int(fields.get("timeout_ms", 0)),
            correlation_id=fields.get("correlation_id", ""),
            qos=QoS(fields.get("qos", int(QoS.BATCHED))),
        )
    except (KeyError, TypeError, AttributeError, UnicodeError, ValueError) as error:
        raise ValueError(f"not a capability call: {error}") from None


def encode_result(result: ActionResult) -> bytes:
    """A call's result as the body of a NATS reply."""
    error = result.error
    return _dumps(
        {
            "id": result.id,
            "status": int(result.status),
            "output": result.output.decode("latin-1"),
            "error": None
            if error is None
            else {"code": error.code, "message": error.message, "details": error.details},
        }
    ).encode()


def decode_result(data: bytes) -> ActionResult:
    """The result a reply holds; ``ValueError`` saying why if it holds none."""
    try:
        fields = _loads(data)
        error = fields.get("error")
        return ActionResult(
            id=fields["id"],
            status=ActionStatus(fields["status"]),
            output=fields["output"].encode("latin-1"),
            error=None
            if error is None
            else ActionError(
                error["code"], error.get("message", ""), dict(error.get("details", {}))
            ),
        )
    except (KeyError, TypeError, AttributeError, UnicodeError, ValueError) as error:
        raise ValueError(f"not a capability result: {error}") from None


def descriptor_to_json(descriptor: CapabilityDescriptor) -> dict[str, Any]:
    """A capability descriptor as JSON for an announcement."""
    return {
        "name": descriptor.name,
        "version": descriptor.version,
        "provider": int(descriptor.provider),
        "metadata": dict(descriptor.metadata),
    }


def descriptor_from_json(fields: Mapping[str, Any]) -> CapabilityDescriptor:
    """The descriptor an announcement lists; ``ValueError`` if it is not one."""
    try:
        return CapabilityDescriptor(
            name=fields["name"],
            version=fields.get("version", "0.1.0"),
            provider=ProviderKind(fields.get("provider", 0)),
            metadata={str(k): str(v) for k, v in dict(fields.get("metadata", {})).items()},
        )
    except (KeyError, TypeError, AttributeError, ValueError) as error:
        raise ValueError(f"not a capability descriptor: {error}") from None


_NODE = re.compile(r"[A-Za-z0-9_-]{1,64}")


@dataclass(frozen=True, slots=True)
class Announcement:
    """A kernel saying what it runs (or, with ``bye``, that it leaves)."""

    node: str
    instance: str  # tells one run of the node from the next
    every_s: float | None = None  # how often it announces (None: it did not say)
    agents: tuple[AgentInfo, ...] = ()
    capabilities: tuple[CapabilityDescriptor, ...] = ()
    bye: bool = False


def encode_announcement(
    node: str,
    instance: str,
    every_s: float,
    agents: Sequence[AgentInfo],
    capabilities: Sequence[CapabilityDescriptor],
) -> str:
    """An announcement's body (JSON, keys sorted: equal content, equal text)."""
    return json.dumps(
        {
            "node": node,
            "instance": instance,
            "every_s": every_s,
            "agents": [
                {"id": a.agent_id, "topics": list(a.topics), "capabilities": list(a.capabilities)}
                for a in agents
            ],
            "capabilities": [descriptor_to_json(d) for d in capabilities],
        },
        separators=(",", ":"),
        sort_keys=True,
    )


def encode_goodbye(node: str, instance: str) -> bytes:
    """The body a leaving kernel announces."""
    return json.dumps({"node": node, "instance": instance, "bye": True}).encode()


def decode_announcement(data: bytes) -> Announcement:
    """The announcement a body holds; ``ValueError`` saying why if it holds none."""
    try:
        fields = _loads(data)
        node = fields["node"]
        if not isinstance(node, str) or not _NODE.fullmatch(node):
            raise ValueError(f"bad node name {node!r}")
        instance = str(fields.get("instance", ""))
        if fields.get("bye"):
            return Announcement(node, instance, bye=True)
        every_s = fields.get("every_s")
        if not isinstance(every_s, int | float) or not 0 < every_s < 3600:
            every_s = None
        agents = tuple(
            AgentInfo(
                str(a["id"]),
                tuple(validate_pattern(str(t)) for t in a.get("topics", ())),
                tuple(str(c) for c in a.get("capabilities", ())),
            )
            for a in fields.get("agents", ())
        )
        capabilities = tuple(descriptor_from_json(d) for d in fields.get("capabilities", ()))
    except ValueError:
        raise
    except Exception as error:  # KeyError, TypeError, a topic that is no pattern...
        raise ValueError(f"{type(error).__name__}: {error}") from None
    return Announcement(node, instance, every_s, agents, capabilities)
