"""The Event value type and QoS levels, mirroring ``loom.v1.Event`` and ``loom.v1.QoSLevel``.

An :class:`Event` is created once per occurrence and then shared, unchanged, with every
subscriber, so it is built to be cheap: slotted, validated once, its id made only when first
read. Treat an event as immutable once published; every helper that changes it
(:meth:`Event.replace`, :meth:`Event.with_metadata`, the envelope helpers) returns a copy.
"""

from __future__ import annotations

import enum
import itertools
import os
import time
from collections.abc import Iterable, Mapping
from typing import Any, NoReturn

from loomk._hop import conversation_ids, hop_metadata, parse_deadline, survives_hop
from loomk._metakeys import CORRELATION_ID, DEADLINE_MS, REPLY_TO, SENDER, THREAD_ID
from loomk._wire import INT64_MAX, INT64_MIN, short_repr, text_problem
from loomk.errors import EventError, QoSError

__all__ = ["Event", "QoS", "delivered_event", "new_event_id", "now_ms"]


class QoS(enum.IntEnum):
    """Delivery class of a subscription; values equal ``loom.v1.QoSLevel`` on the wire.

    REALTIME is lossy and latest-first (default overflow ``drop_oldest``); BATCHED and
    BACKGROUND are lossless (default overflow ``block``: the publisher waits).
    """

    REALTIME = 0
    BATCHED = 1
    BACKGROUND = 2

    @classmethod
    def _missing_(cls, value: object) -> QoS:
        """``QoS(value)`` for a value that is no level: a typed error saying which are."""
        raise QoSError(
            f"unknown QoS {short_repr(value)}: use QoS.REALTIME (0), QoS.BATCHED (1) "
            "or QoS.BACKGROUND (2)"
        )


def now_ms() -> int:
    """Wall-clock milliseconds since the Unix epoch (what ``timestamp_ms`` holds)."""
    return time.time_ns() // 1_000_000


_id_prefix = os.urandom(6).hex()
_id_counter = itertools.count(1)


def _reseed_ids() -> None:
    """Give a forked child its own id prefix so ids stay unique across processes."""
    global _id_prefix, _id_counter
    _id_prefix = os.urandom(6).hex()
    _id_counter = itertools.count(1)


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_reseed_ids)


def new_event_id() -> str:
    """A process-unique, cross-process-unique event id: random prefix plus a counter."""
    return f"evt-{_id_prefix}-{next(_id_counter):x}"


_EMPTY_TAGS: tuple[str, ...] = ()
_SENDER_FIELDS = frozenset({"metadata", "source"})
_UNREAD = -1  # an Event's deadline before its metadata was read for it (never a real one)
_UNCHANGED: Any = object()


class Event:
    """One occurrence on the bus: what happened (``type``), its bytes, and metadata.

    ``id`` and ``timestamp_ms`` are filled in when absent (the id lazily, on first read).
    ``payload`` must be bytes-like; ``metadata`` maps ``str`` to ``str`` (it carries the
    envelope); ``priority`` is 0 (low) to 100 (high); ``confidence`` is 0.0 to 1.0;
    ``timestamp_ms`` is an int64. Every string (type, source, id, tags, metadata) must be
    valid UTF-8 without NUL, as the wire needs (see :mod:`loomk._wire`).
    """

    __slots__ = (
        "_deadline",
        "_delivered",
        "_hop_sender",
        "_id",
        "_metadata",
        "_origin",
        "confidence",
        "payload",
        "priority",
        "source",
        "tags",
        "timestamp_ms",
        "type",
    )

    _id: str | None
    _deadline: int | None  # parsed metadata deadline_ms, or _UNREAD until first asked
    _delivered: Event | bool | None  # see delivered_event: a copy, _EXPIRED, or not yet
    _metadata: dict[str, str] | None
    _hop_sender: str
    _origin: Event | None  # for a delivered copy: the event it was made from
    type: str
    timestamp_ms: int
    source: str
    payload: bytes
    confidence: float
    tags: tuple[str, ...]
    priority: int

    def __init__(
        self,
        type: str,  # noqa: A002 - mirrors the wire field name
        payload: bytes = b"",
        *,
        source: str = "",
        metadata: Mapping[str, str] | None = None,
        tags: Iterable[str] = _EMPTY_TAGS,
        priority: int = 50,
        confidence: float = 1.0,
        id: str | None = None,  # noqa: A002 - mirrors the wire field name
        timestamp_ms: int | None = None,
    ) -> None:
        if type.__class__ is not str or type not in _KNOWN_TYPES:
            _check_type(type)
        if payload.__class__ is not bytes:
            payload = _coerce_payload(payload)
        if source.__class__ is not str or source not in _KNOWN_SOURCES:
            _check_source(source)
        self.type = type
        self.payload = payload
        self.source = source
        self._metadata = {} if metadata is None else _checked_metadata(metadata)
        self.tags = tags if tags is _EMPTY_TAGS else _checked_tags(tags)
        if priority.__class__ is not int or not 0 <= priority <= 100:
            raise EventError(f"event priority must be an int from 0 to 100, got {priority!r}")
        self.priority = priority
        if confidence.__class__ is not float or not 0.0 <= confidence <= 1.0:  # NaN too
            confidence = _checked_confidence(confidence)
        self.confidence = confidence
        if id is not None and (
            id.__class__ is not str or not id or not id.isascii() or "\x00" in id
        ):
            _check_id(id)
        self._id = id
        self._delivered = None
        self._deadline = _UNREAD
        self._origin = None
        if timestamp_ms is None:
            timestamp_ms = time.time_ns() // 1_000_000
        elif timestamp_ms.__class__ is not int or not INT64_MIN <= timestamp_ms <= INT64_MAX:
            _check_timestamp(timestamp_ms)
        self.timestamp_ms = timestamp_ms

    @property
    def id(self) -> str:
        """The event id, made on first read when the event was created without one."""
        ident = self._id
        if ident is None:
            origin = self._origin
            ident = self._id = new_event_id() if origin is None else origin.id
        return ident

    # ---- copies --------------------------------------------------------------------------

    @property
    def metadata(self) -> dict[str, str]:
        """String metadata; carries the envelope (thread, correlation, sender, ttl, hop)."""
        metadata = self._metadata
        if metadata is None:  # a delivered copy: its envelope is written on first read
            origin = self._origin
            assert origin is not None
            metadata = hop_metadata(origin.metadata, self.id, self._hop_sender)
            assert metadata is not None, "a delivered copy is made only while its TTL lasts"
            self._metadata = metadata
            self._origin = None  # id and metadata are its own now: let the origin go
        return metadata

    def _hopped(self, sender: str) -> Event:
        """A copy one hop further, for the agent runtime (see :func:`delivered_event`).

        Its metadata (``hop_metadata`` of this event's) is built only if someone reads it:
        most handlers never do, and this runs for every delivery to an agent.
        """
        copy = self._copy(None)
        copy._id = self._id  # when None, both take the origin's id on first read
        copy._origin = self
        copy._hop_sender = sender
        return copy

    def _copy(self, metadata: dict[str, str] | None) -> Event:
        """A field-by-field copy with ``metadata`` (no validation: the fields were checked)."""
        copy = Event.__new__(Event)
        copy.type = self.type
        copy.timestamp_ms = self.timestamp_ms
        copy.source = self.source
        copy._metadata = metadata
        copy._origin = None
        copy.payload = self.payload
        copy.confidence = self.confidence
        copy.tags = self.tags
        copy.priority = self.priority
        copy._delivered = None
        copy._deadline = _UNREAD
        return copy

    def replace(self, **changes: Any) -> Event:
        """A copy with the given fields changed (validated like the constructor)."""
        if changes.keys() <= _SENDER_FIELDS:  # what senders change per message: check only those
            source = changes.get("source", self.source)
            if source.__class__ is not str or source not in _KNOWN_SOURCES:
                _check_source(source)
            metadata = changes.get("metadata", _UNCHANGED)
            if metadata is _UNCHANGED:
                metadata = dict(self.metadata)
            elif metadata is None:  # as the constructor takes it: no metadata
                metadata = {}
            else:
                metadata = _checked_metadata(metadata)
            copy = self._copy(metadata)
            copy._id = self.id
            copy.source = source
            return copy
        fields: dict[str, Any] = {
            "type": self.type,
            "payload": self.payload,
            "source": self.source,
            "metadata": self.metadata,
            "tags": self.tags,
            "priority": self.priority,
            "confidence": self.confidence,
            "id": self.id,
            "timestamp_ms": self.timestamp_ms,
        }
        unknown = changes.keys() - fields.keys()
        if unknown:
            raise EventError(f"Event has no field(s) {sorted(unknown)}")
        fields.update(changes)
        if fields["metadata"] is self.metadata:
            fields["metadata"] = dict(self.metadata)
        return Event(**fields)

    def with_metadata(self, **entries: str) -> Event:
        """A copy whose metadata has these entries added or overwritten."""
        known = _KNOWN_KEYS
        for key, value in entries.items():
            if (
                key not in known
                or value.__class__ is not str
                or not value.isascii()
                or "\x00" in value
            ):
                _check_entry(key, value)
        metadata = dict(self.metadata)
        metadata.update(entries)
        copy = self._copy(metadata)  # the entries were checked above, the rest when made
        copy._id = self.id
        return copy

    @property
    def deadline_ms(self) -> int | None:
        """When the request this event carries must be answered (metadata ``deadline_ms``,
        epoch milliseconds), or None. An agent handling it runs within that deadline."""
        deadline = self._deadline
        if deadline == _UNREAD:
            origin = self._origin
            if self._metadata is None and origin is not None:  # a delivered copy, unread
                deadline = origin.deadline_ms
            else:
                deadline = parse_deadline(self.metadata.get(DEADLINE_MS))
            self._deadline = deadline
        return deadline

    def conversation(self) -> tuple[str, str, str]:
        """``(thread_id, correlation_id, reply_to)`` with Loom's defaults (the thread is the
        event's id when unset, the correlation the thread, the reply topic the thread's):
        what an answer to this event carries and where it goes."""
        metadata = self._metadata
        origin = self._origin
        if metadata is None and origin is not None:  # a delivered copy: the same as its origin
            metadata = origin.metadata
        return conversation_ids(self.metadata if metadata is None else metadata, self.id)

    # ---- envelope helpers (Loom's EventExt) --------------------------------------------

    def with_thread(self, thread_id: str) -> Event:
        """A copy with metadata ``thread_id`` set."""
        return self.with_metadata(**{THREAD_ID: thread_id})

    def with_correlation(self, correlation_id: str) -> Event:
        """A copy with metadata ``correlation_id`` set."""
        return self.with_metadata(**{CORRELATION_ID: correlation_id})

    def with_reply_to(self, reply_to: str) -> Event:
        """A copy with metadata ``reply_to`` set."""
        return self.with_metadata(**{REPLY_TO: reply_to})

    def with_sender(self, sender: str) -> Event:
        """A copy with metadata ``sender`` set."""
        return self.with_metadata(**{SENDER: sender})

    @property
    def thread_id(self) -> str | None:
        """Metadata ``thread_id``, or None when absent."""
        return self.metadata.get(THREAD_ID)

    @property
    def correlation_id(self) -> str | None:
        """Metadata ``correlation_id``, or None when absent."""
        return self.metadata.get(CORRELATION_ID)

    @property
    def reply_to(self) -> str | None:
        """Metadata ``reply_to``, or None when absent."""
        return self.metadata.get(REPLY_TO)

    @property
    def sender(self) -> str | None:
        """Metadata ``sender``, or None when absent."""
        return self.metadata.get(SENDER)

    # ---- value semantics ---------------------------------------------------------------

    def as_dict(self) -> dict[str, Any]:
        """All fields as a plain dict (payload stays bytes)."""
        return {
            "id": self.id,
            "type": self.type,
            "timestamp_ms": self.timestamp_ms,
            "source": self.source,
            "metadata": dict(self.metadata),
            "payload": self.payload,
            "confidence": self.confidence,
            "tags": list(self.tags),
            "priority": self.priority,
        }

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Event):
            return NotImplemented
        return self.as_dict() == other.as_dict()

    __hash__ = None  # type: ignore[assignment]  # metadata is a dict: events are not hashable

    def __repr__(self) -> str:
        payload = self.payload if len(self.payload) <= 32 else self.payload[:32] + b"..."
        return (
            f"Event(type={self.type!r}, id={self.id!r}, source={self.source!r}, "
            f"payload={payload!r}, metadata={self.metadata!r})"
        )


_EXPIRED = False  # cached on an event whose TTL ran out, so every receiver drops it cheaply


def delivered_event(event: Event, receiver_sender: str) -> Event | None:
    """The event as a receiving agent sees it after one hop, or None if it expired.

    This is Loom's agent loop step: read the envelope (the thread defaults to the event id),
    fill an empty sender with the receiver's ``agent.{id}``, take one hop, drop the event when
    its TTL is spent, and write the envelope back. Events are shared between receivers, so
    this returns a copy, whose metadata is written when first read; when the sender is set
    the copy is the same for every receiver and is made once per event.
    """
    cached = event._delivered
    if cached:  # the copy made for an earlier receiver
        return cached  # type: ignore[return-value]
    if cached is _EXPIRED:
        return None
    metadata = event._metadata
    if metadata is None:  # itself a delivered copy, not yet read
        metadata = event.metadata
    result = event._hopped(receiver_sender) if survives_hop(metadata) else None
    if metadata.get(SENDER):
        event._delivered = _EXPIRED if result is None else result
    return result


def _coerce_payload(payload: object) -> bytes:
    if isinstance(payload, bytes | bytearray | memoryview):
        return bytes(payload)
    hint = " (encode text first, e.g. s.encode())" if isinstance(payload, str) else ""
    raise EventError(f"event payload must be bytes, got {type(payload).__name__}{hint}")


def _checked_metadata(metadata: Mapping[str, str]) -> dict[str, str]:
    if metadata.__class__ is not dict and not isinstance(metadata, Mapping):  # ABC checks are slow
        raise EventError(
            f"event metadata must be a mapping of str to str, got {short_repr(metadata)}"
        )
    checked = dict(metadata)
    known = _KNOWN_KEYS
    for key, value in checked.items():
        if (
            key.__class__ is not str
            or key not in known
            or value.__class__ is not str
            or not value.isascii()
            or "\x00" in value
        ):
            _check_entry(key, value)
    return checked


def _checked_tags(tags: Iterable[str]) -> tuple[str, ...]:
    if isinstance(tags, str | bytes):
        raise EventError(f"event tags must be a list of str, got {short_repr(tags)}")
    checked = tuple(tags)
    for tag in checked:
        if tag.__class__ is not str:
            raise EventError(f"event tags must be str, got {short_repr(tag)}")
        if not tag.isascii() or "\x00" in tag:
            _check_text("tag", tag)
    return checked


# Types, sources and metadata keys already checked, so the common case is one set lookup
# (str hashes are cached) rather than a scan: an application uses few of each. Bounded:
# when full it starts again, so a flood of one-off strings costs only their own checks.
# Metadata values (ids, timestamps) are too many to remember: they get the ASCII + NUL test.
_KNOWN_TYPES: set[str] = set()
_KNOWN_SOURCES: set[str] = {""}
_KNOWN_KEYS: set[str] = set()  # metadata keys, likewise (the envelope's seven and a few more)
_KNOWN_MAX = 4096
_KNOWN_LENGTH = 256  # longer strings are checked each time rather than kept


def _remember(known: set[str], text: str) -> None:
    if len(text) <= _KNOWN_LENGTH:
        if len(known) >= _KNOWN_MAX:
            known.clear()
        known.add(text)


def _check_type(event_type: object) -> None:
    """Raise unless ``event_type`` is a non-empty str the wire can carry; remember it."""
    if event_type.__class__ is not str or not event_type:
        raise EventError(f"event type must be a non-empty str, got {short_repr(event_type)}")
    assert isinstance(event_type, str)
    _check_text("type", event_type)
    _remember(_KNOWN_TYPES, event_type)


def _check_source(source: object) -> None:
    """Raise unless ``source`` is a str the wire can carry; remember it."""
    _check_text("source", source)
    assert isinstance(source, str)
    _remember(_KNOWN_SOURCES, source)


def _check_id(ident: object) -> None:
    """Raise unless ``ident`` is a non-empty str the wire can carry."""
    if ident.__class__ is not str or not ident:
        raise EventError(f"event id must be a non-empty str, got {short_repr(ident)}")
    _check_text("id", ident)


def _check_text(field: str, text: object) -> None:
    """Raise unless ``text`` is a str the wire can carry (valid UTF-8, no NUL)."""
    if text.__class__ is not str:
        raise EventError(f"event {field} must be a str, got {short_repr(text)}")
    assert isinstance(text, str)
    problem = text_problem(text)  # "" at once for plain ASCII
    if problem:
        raise EventError(f"event {field} {short_repr(text)} {problem}")


def _check_timestamp(timestamp_ms: object) -> NoReturn:
    """Raise: ``timestamp_ms`` is not an int, or does not fit the wire's int64."""
    if timestamp_ms.__class__ is not int:
        raise EventError(
            f"event timestamp_ms must be an int, got {short_repr(timestamp_ms)} "
            "(milliseconds since the Unix epoch; leave it out for now)"
        )
    raise EventError(
        f"event timestamp_ms must fit in int64 as on the wire, got {short_repr(timestamp_ms)}: "
        "give milliseconds since the Unix epoch"
    )


def _check_entry(key: object, value: object) -> None:
    """Raise unless ``key: value`` is a metadata entry the wire can carry; remember the key."""
    if key.__class__ is not str or value.__class__ is not str:
        raise EventError(
            f"event metadata must map str to str, got {short_repr(key)}: {short_repr(value)} "
            f"({type(key).__name__}: {type(value).__name__})"
        )
    assert isinstance(key, str)
    assert isinstance(value, str)
    problem = text_problem(key)
    if problem:
        raise EventError(f"event metadata key {short_repr(key)} {problem}")
    problem = text_problem(value)
    if problem:
        raise EventError(f"event metadata value of {short_repr(key)} {problem}")
    _remember(_KNOWN_KEYS, key)


def _checked_confidence(confidence: object) -> float:
    if not isinstance(confidence, float | int) or isinstance(confidence, bool):
        raise EventError(f"event confidence must be a number from 0.0 to 1.0, got {confidence!r}")
    if not 0.0 <= confidence <= 1.0:
        raise EventError(f"event confidence must be a number from 0.0 to 1.0, got {confidence!r}")
    return float(confidence)
