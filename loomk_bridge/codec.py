"""loomk values <-> ``loom.v1`` protobuf messages: events, calls, results, descriptors.

Value conversion only: the bridge decides what a conversion failure means on its stream
(an ``err`` frame for the one message, say). Each ``*_from_proto`` runs loomk's own checks,
so whatever a remote peer sends passes the same rules as a value made in the process, and
what they refuse is raised as loomk's typed error with the message naming the wire message
and its bad field:

- ``loom.v1.Event``: :class:`~loomk.EventError`;
- ``loom.v1.ActionCall``: :class:`~loomk.ActionCallError` (an unknown qos number too);
- ``loom.v1.CapabilityDescriptor``: :class:`~loomk.CapabilityError`;
- ``loom.v1.ActionResult``: nothing is raised; an unknown status becomes a failed result.

What the protobuf layer itself refuses never reaches this module: upb refuses a string
field that is not valid UTF-8 when parsing (``google.protobuf.message.DecodeError`` from
``FromString``/``ParseFromString``), so a lone surrogate cannot arrive in a message; and a
message cannot be built from a ``str`` holding one (``UnicodeEncodeError``).

Proto3 cannot tell a field left unset from one set to its zero value. Where the zero is
not a value loomk has, it reads as loomk's default; where it is one, it is kept:

- ``Event.id`` "": the event gets a fresh id, made as loomk makes every event id
  (:func:`loomk.events.new_event_id`, lazily on first read). Loom's SDK always sets one;
  a raw client may not, and an id is not worth refusing the event over.
- ``Event.timestamp_ms`` 0: now. (So a loomk event stamped exactly 0, the epoch, comes
  back stamped now: the one value of the field that does not round-trip.)
- ``Event.priority`` 0 and ``Event.confidence`` 0.0 stay 0: both are valid (low
  priority, no confidence), unlike loomk's defaults of 50 and 1.0, which the wire cannot
  imply.
- ``Event.type`` "" is refused (loomk events must have a type).
- ``CapabilityDescriptor.version`` "": :class:`~loomk.CapabilityDescriptor`'s default
  (no version string is a semantic version, so "" cannot mean one).
- A short version, ``"1"`` or ``"1.0"`` (Loom's Python SDK gives every capability and tool
  call ``"1.0"``), reads as ``"1.0.0"``, in descriptors and calls alike, so an SDK agent's
  ``ctx.tool("x", version="1.0")`` finds the ``x`` another SDK agent registered.
- ``ActionCall`` zeros are loomk's own meanings already (version "" any, timeout 0 the
  broker's default, qos 0 REALTIME).

Confidence is a 32-bit ``float`` on the wire: it is rounded to the nearest float32 on the
way out, and read back as that float32's exact value. So an event whose confidence is
float32-representable (1.0, 0.5, 0.25, ...) round-trips exactly; any other is rounded
(0.3 comes back as 0.30000001192092896). The rounding is done once, by the message: a
value read from the wire goes back out as the same 32 bits, so events forwarded through
the kernel keep their bytes (no decimal rounding that could move a float32).

The event conversions run for every event through the bridge (up to ~200k/s), so they
build each value in one constructor call (the message's maps and lists filled in bulk, and
only when non-empty) and do no work beyond loomk's checks.
"""

from __future__ import annotations

from loomk import (
    ActionCall,
    ActionCallError,
    ActionError,
    ActionResult,
    ActionStatus,
    CapabilityDescriptor,
    CapabilityError,
    Event,
    EventError,
    ProviderKind,
    QoS,
    QoSError,
)
from loomk_bridge._proto import action_pb2, event_pb2

__all__ = [
    "BAD_STATUS",
    "call_from_proto",
    "call_to_proto",
    "descriptor_from_proto",
    "descriptor_to_proto",
    "event_from_proto",
    "event_to_proto",
    "result_from_proto",
    "result_to_proto",
]

BAD_STATUS = "BAD_STATUS"
"""``ActionError.code`` of a result read with a status loomk does not know (see
:func:`result_from_proto`)."""

# loomk enum value -> protobuf enum value, indexed by the loomk value (the two enums agree
# by name and number: tests/unit/test_bridge_codec.py holds them to it).
_QOS_LEVELS: tuple[event_pb2.QoSLevel, ...] = (
    event_pb2.QOS_REALTIME,
    event_pb2.QOS_BATCHED,
    event_pb2.QOS_BACKGROUND,
)
_STATUSES: tuple[action_pb2.ActionStatus, ...] = (
    action_pb2.ACTION_OK,
    action_pb2.ACTION_ERROR,
    action_pb2.ACTION_TIMEOUT,
    action_pb2.ACTION_RETRYABLE,
)
_PROVIDERS: tuple[action_pb2.ProviderKind, ...] = (
    action_pb2.PROVIDER_NATIVE,
    action_pb2.PROVIDER_WASM,
    action_pb2.PROVIDER_GRPC,
    action_pb2.PROVIDER_MCP,
)
_KNOWN_STATUSES = {status.value: status for status in ActionStatus}

_LABEL_LENGTH = 64


def _label(ident: str) -> str:
    """``ident`` quoted and cut short, to say which message an error is about."""
    if len(ident) > _LABEL_LENGTH:
        return repr(ident[:_LABEL_LENGTH]) + "..."
    return repr(ident)


# ---- events ---------------------------------------------------------------------------


def event_to_proto(event: Event) -> event_pb2.Event:
    """``event`` as a ``loom.v1.Event`` message (confidence rounded to float32).

    The event's fields were checked when it was made, so nothing is checked again (a field
    changed afterwards to what the wire cannot hold fails in the message: ``ValueError``
    out of range, ``UnicodeEncodeError`` for a lone surrogate); reading ``event.id`` makes
    the id of an event created without one.
    """
    message = event_pb2.Event(
        id=event.id,
        type=event.type,
        timestamp_ms=event.timestamp_ms,
        source=event.source,
        payload=event.payload,
        confidence=event.confidence,
        priority=event.priority,
    )
    # The containers are filled only when non-empty: passing an empty dict or tuple to the
    # upb constructor costs more than the seven scalars together, and a map fills faster
    # by update() than by keyword (measured, protobuf 7.36 upb).
    metadata = event.metadata
    if metadata:
        message.metadata.update(metadata)
    tags = event.tags
    if tags:
        message.tags.extend(tags)
    return message


def event_from_proto(message: event_pb2.Event) -> Event:
    """The loomk :class:`~loomk.Event` of a ``loom.v1.Event`` message from a peer.

    An empty ``id`` gets a fresh loomk id and ``timestamp_ms`` 0 becomes now (proto3
    defaults; see the module docstring). Raises :class:`~loomk.EventError`, naming the
    message's id and the bad field, for anything :class:`~loomk.Event` refuses: an empty
    ``type``, NUL in any text (type, source, id, tags, metadata keys and values), a
    priority outside 0..100, a confidence outside 0.0..1.0 or NaN.
    """
    ident = message.id
    metadata = message.metadata
    tags = message.tags
    try:
        return Event(
            message.type,
            message.payload,
            source=message.source,
            # {k: m[k]} copies a upb map faster than dict(m) does; Event copies it again,
            # but a dict's copy is cheap. tags[:] is a list, made faster than tuple(tags).
            metadata={key: metadata[key] for key in metadata} if metadata else None,
            tags=tags[:] if tags else (),
            priority=message.priority,
            confidence=message.confidence,
            id=ident if ident else None,
            timestamp_ms=message.timestamp_ms or None,
        )
    except EventError as error:
        raise EventError(f"loom.v1.Event {_label(ident)} from the wire: {error}") from error


# ---- capability calls -----------------------------------------------------------------


def call_to_proto(call: ActionCall) -> action_pb2.ActionCall:
    """``call`` as a ``loom.v1.ActionCall`` message (``qos`` as the same-numbered
    ``QoSLevel``)."""
    return action_pb2.ActionCall(
        id=call.id,
        capability=call.capability,
        version=call.version,
        payload=call.payload,
        headers=call.headers,
        timeout_ms=call.timeout_ms,
        correlation_id=call.correlation_id,
        qos=_QOS_LEVELS[call.qos],
    )


def call_from_proto(message: action_pb2.ActionCall) -> ActionCall:
    """The loomk :class:`~loomk.ActionCall` of a ``loom.v1.ActionCall`` message from a peer.

    Raises :class:`~loomk.ActionCallError`, naming the call's id and the bad field, for what
    :class:`~loomk.ActionCall` refuses (no capability, NUL in a text field or header, a
    negative ``timeout_ms``) and for a ``qos`` number that is no ``QoSLevel`` (proto3 enums
    are open: a peer can send any int32).
    """
    ident = message.id
    try:
        qos = QoS(message.qos)
    except QoSError as error:
        raise ActionCallError(
            f"loom.v1.ActionCall {_label(ident)} from the wire: field qos: {error}"
        ) from error
    try:
        return ActionCall(
            id=ident,
            capability=message.capability,
            payload=message.payload,
            version=_full_version(message.version),
            headers=dict(message.headers),
            timeout_ms=message.timeout_ms,
            correlation_id=message.correlation_id,
            qos=qos,
        )
    except ActionCallError as error:
        raise ActionCallError(
            f"loom.v1.ActionCall {_label(ident)} from the wire: {error}"
        ) from error


# ---- results --------------------------------------------------------------------------


def result_to_proto(result: ActionResult) -> action_pb2.ActionResult:
    """``result`` as a ``loom.v1.ActionResult`` message; ``error`` is set only when the
    result has one (so None and an empty :class:`~loomk.ActionError` stay apart)."""
    error = result.error
    if error is None:
        return action_pb2.ActionResult(
            id=result.id, status=_STATUSES[result.status], output=result.output
        )
    return action_pb2.ActionResult(
        id=result.id,
        status=_STATUSES[result.status],
        output=result.output,
        error=action_pb2.ActionError(code=error.code, message=error.message, details=error.details),
    )


def result_from_proto(message: action_pb2.ActionResult) -> ActionResult:
    """The loomk :class:`~loomk.ActionResult` of a ``loom.v1.ActionResult`` from a peer.

    Never raises for a parsed message: a result answers a call someone is waiting on, and
    a failed result tells them more than a dropped one. A status loomk does not know (a
    newer peer's, or junk: proto3 enums are open) becomes ``ACTION_ERROR`` with code
    :data:`BAD_STATUS`, a message saying which number came and what error (if any) came
    with it, and the details kept with ``wire_status`` (the number) added; the output is
    dropped, as it is from any failure loomk makes. ``error`` is None when the message has
    none.
    """
    number = message.status
    status = _KNOWN_STATUSES.get(number)
    has_error = message.HasField("error")
    if status is None:
        said = ""
        details: dict[str, str] = {}
        if has_error:
            wire_error = message.error
            said = f" (its error: {wire_error.code!r}: {wire_error.message!r})"
            details = dict(wire_error.details)
        details["wire_status"] = str(number)
        return ActionResult(
            message.id,
            ActionStatus.ACTION_ERROR,
            b"",
            ActionError(
                BAD_STATUS,
                f"the peer answered with ActionStatus {number}, which loomk does not know "
                f"(ACTION_OK 0, ACTION_ERROR 1, ACTION_TIMEOUT 2, ACTION_RETRYABLE 3){said}",
                details,
            ),
        )
    error = None
    if has_error:
        wire_error = message.error
        error = ActionError(wire_error.code, wire_error.message, dict(wire_error.details))
    return ActionResult(message.id, status, message.output, error)


# ---- capability descriptors -----------------------------------------------------------


def descriptor_to_proto(descriptor: CapabilityDescriptor) -> action_pb2.CapabilityDescriptor:
    """``descriptor`` as a ``loom.v1.CapabilityDescriptor`` message."""
    return action_pb2.CapabilityDescriptor(
        name=descriptor.name,
        version=descriptor.version,
        provider=_PROVIDERS[descriptor.provider],
        metadata=descriptor.metadata,
    )


def descriptor_from_proto(message: action_pb2.CapabilityDescriptor) -> CapabilityDescriptor:
    """The loomk :class:`~loomk.CapabilityDescriptor` of a ``loom.v1.CapabilityDescriptor``.

    An empty ``version`` is the descriptor's default. Raises
    :class:`~loomk.CapabilityError`, naming the capability, for what the descriptor refuses:
    a name that is not dot-separated words, a version that is not semantic, a provider
    number that is no ``ProviderKind``.
    """
    name = message.name
    prefix = f"loom.v1.CapabilityDescriptor {_label(name)} from the wire"
    number = message.provider
    try:
        provider = ProviderKind(number)
    except ValueError as error:
        raise CapabilityError(
            f"{prefix}: field provider: unknown ProviderKind {number} (PROVIDER_NATIVE 0, "
            "PROVIDER_WASM 1, PROVIDER_GRPC 2, PROVIDER_MCP 3)"
        ) from error
    try:
        if message.version:
            version = _full_version(message.version)
            return CapabilityDescriptor(name, version, provider, dict(message.metadata))
        return CapabilityDescriptor(name, provider=provider, metadata=dict(message.metadata))
    except CapabilityError as error:
        raise CapabilityError(f"{prefix}: {error}") from error


def _full_version(version: str) -> str:
    """``MAJOR`` or ``MAJOR.MINOR`` padded to ``MAJOR.MINOR.PATCH``; others as they are."""
    if version.count(".") < 2 and version.replace(".", "").isdigit() and ".." not in version:
        parts = version.split(".")
        if all(parts):
            return ".".join([*parts, "0", "0"][:3])
    return version
