"""The envelope: thread and correlation metadata carried in every event's metadata.

Wire-compatible with Loom's core envelope (un-prefixed keys ``thread_id, correlation_id,
sender, reply_to, ttl, hop, ts``) and with its defaults: ttl 16, hop 0, reply topic
``thread.{id}.reply``. The agent runtime calls :meth:`Envelope.next_hop` on every delivery
and drops the event when it returns False, so a message can never circle forever.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping, MutableMapping
from dataclasses import dataclass, field

from loomk._hop import DEFAULT_TTL, conversation_ids, next_hop, parse_hop, parse_ts, parse_ttl
from loomk._metakeys import CORRELATION_ID, HOP, REPLY_TO, RESERVED_KEYS, SENDER, THREAD_ID, TS, TTL
from loomk.events import Event, now_ms

__all__ = [
    "DEFAULT_TTL",
    "RESERVED_KEYS",
    "Envelope",
    "ThreadTopicKind",
    "agent_reply_topic",
    "thread_broadcast_topic",
    "thread_reply_topic",
]


def agent_reply_topic(agent_id: str) -> str:
    """The private mailbox topic of an agent: ``agent.{id}.replies``."""
    return f"agent.{agent_id}.replies"


def thread_broadcast_topic(thread_id: str) -> str:
    """``thread.{id}.broadcast``: where a thread's participants hear each other."""
    return f"thread.{thread_id}.broadcast"


def thread_reply_topic(thread_id: str) -> str:
    """``thread.{id}.reply``: where replies within a thread are sent by default."""
    return f"thread.{thread_id}.reply"


class ThreadTopicKind(enum.Enum):
    """The two per-thread topics Loom defines."""

    BROADCAST = "broadcast"
    REPLY = "reply"

    def topic(self, thread_id: str) -> str:
        """The topic of this kind for ``thread_id``."""
        return f"thread.{thread_id}.{self.value}"


@dataclass(slots=True)
class Envelope:
    """Thread, correlation, routing and lifetime of one message.

    ``ttl`` counts remaining hops (a message is dropped when it reaches 0 on delivery);
    ``hop`` counts hops taken. ``timestamp_ms`` is when the envelope was made.
    """

    thread_id: str
    correlation_id: str = ""
    sender: str = ""
    reply_to: str = ""
    ttl: int = DEFAULT_TTL
    hop: int = 0
    timestamp_ms: int = field(default_factory=now_ms)

    def __post_init__(self) -> None:
        if not self.correlation_id:
            self.correlation_id = self.thread_id
        if not self.reply_to:
            self.reply_to = thread_reply_topic(self.thread_id)

    # ---- constructors ---------------------------------------------------------------------

    @classmethod
    def new(cls, thread_id: str, sender: str = "") -> Envelope:
        """A fresh envelope: correlation = thread, replies to ``thread.{id}.reply``."""
        return cls(thread_id=thread_id, sender=sender)

    @classmethod
    def with_agent_reply(cls, thread_id: str, sender: str, reply_agent_id: str) -> Envelope:
        """A fresh envelope whose replies go to ``agent.{reply_agent_id}.replies``."""
        return cls(thread_id=thread_id, sender=sender, reply_to=agent_reply_topic(reply_agent_id))

    @classmethod
    def from_metadata(cls, metadata: Mapping[str, str], fallback_id: str) -> Envelope:
        """Read an envelope from metadata, filling Loom's defaults for absent or bad keys.

        ``fallback_id`` (the event or call id) becomes the thread when none is given.
        """
        thread_id, correlation_id, reply_to = conversation_ids(metadata, fallback_id)
        return cls(
            thread_id=thread_id,
            correlation_id=correlation_id,
            sender=metadata.get(SENDER, ""),
            reply_to=reply_to,
            ttl=parse_ttl(metadata.get(TTL)),
            hop=parse_hop(metadata.get(HOP)),
            timestamp_ms=parse_ts(metadata.get(TS)),
        )

    @classmethod
    def from_event(cls, event: Event) -> Envelope:
        """The envelope of ``event`` (its id is the fallback thread)."""
        return cls.from_metadata(event.metadata, event.id)

    # ---- writing --------------------------------------------------------------------------

    def as_metadata(self) -> dict[str, str]:
        """The seven reserved keys as metadata entries."""
        return {
            THREAD_ID: self.thread_id,
            CORRELATION_ID: self.correlation_id,
            SENDER: self.sender,
            REPLY_TO: self.reply_to,
            TTL: str(self.ttl),
            HOP: str(self.hop),
            TS: str(self.timestamp_ms),
        }

    def apply_to_metadata(self, metadata: MutableMapping[str, str]) -> None:
        """Write all seven reserved keys into ``metadata``, overwriting what is there."""
        metadata.update(self.as_metadata())

    def attach_to_event(self, event: Event) -> Event:
        """A copy of ``event`` carrying this envelope (events are immutable once made)."""
        metadata = dict(event.metadata)
        self.apply_to_metadata(metadata)
        return event.replace(metadata=metadata)

    # ---- routing --------------------------------------------------------------------------

    def next_hop(self) -> bool:
        """Take one hop: ``hop += 1`` (saturating) and ``ttl -= 1`` while positive.

        Returns whether the message is still alive (``ttl > 0``): ttl 3 gives True, True,
        then False, and False from then on.
        """
        self.ttl, self.hop = next_hop(self.ttl, self.hop)
        return self.ttl > 0

    def broadcast_topic(self) -> str:
        """``thread.{thread_id}.broadcast``."""
        return thread_broadcast_topic(self.thread_id)

    def reply_topic(self) -> str:
        """``thread.{thread_id}.reply`` (Loom's rule: independent of ``reply_to``)."""
        return thread_reply_topic(self.thread_id)

    def agent_reply_topic(self) -> str:
        """``agent.{X}.replies`` when the sender is ``agent.X``, else the empty string."""
        if self.sender.startswith("agent.") and len(self.sender) > len("agent."):
            return agent_reply_topic(self.sender[len("agent.") :])
        return ""
