"""The local half of a bus link: what leaves this kernel's bus, and what enters it.

A link mirrors chosen topics between the local bus and a transport (a bridge stream, NATS).
The transport moves batches; this half decides what goes out and how what comes in is
published, the same way for every transport:

- **Out**: events published locally on the ``export`` patterns (every topic by default),
  in batches. While the transport is connected the link is a lossless subscriber (local
  publishers wait when it falls behind, like any ``block`` subscriber). While it is not,
  :meth:`BusLink.hold` moves what is published into a backlog bounded by ``buffer`` events;
  beyond it the oldest go, and are counted (``dropped``). The backlog goes first on
  reconnection.
- **In**: events from the transport are published locally stamped with this link's origin
  (metadata ``loomk.origin``), so they are never sent back out through it (loop
  prevention); the transport stamps what it sends the same way, so the other side does not
  echo it either. An event that cannot be published here (a bad topic) is counted
  (``rejected``), logged, and the rest of its batch goes on.
- **Interest**: the patterns local subscribers want (:meth:`BusLink.interest`) and the
  capabilities local providers offer (:meth:`BusLink.capabilities`), for the transport to
  announce on the other side; :meth:`BusLink.wait_changed` wakes it when either changes.

Links form a tree (a client links to one server, which may link further up): an event
crosses each link once per direction. A cycle of links would pass events round until their
hop limit.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

import trio

from loomk._metakeys import ORIGIN
from loomk.actions import ActionBroker, CapabilityDescriptor
from loomk.bus import EMPTY, Binding, EventBus, Mailbox, validate_pattern
from loomk.bus.receipts import Receipt
from loomk.collab import BARRIER_PATTERN, REPLY_PATTERN
from loomk.config import covering_patterns
from loomk.errors import EventError, LinkError, TopicError
from loomk.events import Event, QoS
from loomk.telemetry.logging import get_logger

__all__ = ["ORIGIN_KEY", "BusLink", "LinkStats"]

_log = get_logger("loomk.links")

ORIGIN_KEY = ORIGIN
"""Event metadata naming the link an event came in through; it never goes back out there
(the kernel's own key: ``Context.emit`` drops it from what an agent emits)."""

COLLABORATION_PATTERNS = (REPLY_PATTERN, BARRIER_PATTERN)
"""Always announced: answers to this kernel's requests and barrier check-ins may come from
the other side before the collaboration service has subscribed to them here."""


@dataclass(frozen=True, slots=True)
class LinkStats:
    """A snapshot of a link's counters."""

    connected: bool
    """Whether the transport is connected now."""
    connects: int
    """Connections made (the first one and every reconnection)."""
    sent: int
    """Local events handed to the transport."""
    received: int
    """Events from the transport published locally."""
    dropped: int
    """Local events dropped from a full backlog while disconnected."""
    backlog: int
    """Local events waiting to be sent."""
    rejected: int
    """Events from the transport that could not be published locally."""


class BusLink:
    """The local half of a link between this kernel's bus and a transport (see the module).

    ``origin`` names the link on both sides (unique among the links of the bus it joins).
    :meth:`open` starts it; :meth:`close` ends it. The transport calls the rest, and
    :meth:`up`/:meth:`down` as its connection comes and goes (for :meth:`stats`).
    """

    def __init__(
        self,
        bus: EventBus,
        broker: ActionBroker,
        origin: str,
        *,
        export: Sequence[str] = (">",),
        buffer: int = 10_000,
        batch_max: int = 256,
    ) -> None:
        if not origin or origin.__class__ is not str:
            raise LinkError(f"a link needs a non-empty origin name, got {origin!r}")
        if isinstance(export, str):
            export = (export,)
        for pattern in export:
            validate_pattern(pattern)
        for name, value in (("buffer", buffer), ("batch_max", batch_max)):
            if value.__class__ is not int or value < 1:
                raise LinkError(f"{name} must be an int >= 1, got {value!r}")
        self.origin = origin
        # a pattern another one covers would bind a second lane: the event twice
        self.export = tuple(covering_patterns(export))
        self.buffer = buffer
        self.batch_max = batch_max
        self._bus = bus
        self._broker = broker
        self._mailbox = Mailbox()
        self._bindings: list[Binding] = []
        self._backlog: deque[tuple[str, Event]] = deque()
        self._changed = trio.Event()
        self._unwatch: list[Callable[[], None]] = []
        self.connected = False
        self.connects = 0
        self.sent = 0
        self.received = 0
        self.dropped = 0
        self.rejected = 0

    # ---- life ---------------------------------------------------------------------------

    def open(self) -> None:
        """Start listening to the export patterns and watching local interest."""
        if self._bindings:
            return
        for pattern in self.export:
            self._bindings.append(
                self._bus.bind(self._mailbox, pattern, qos=QoS.BATCHED, overflow="block")
            )
        self._unwatch = [
            self._bus.watch_interest(self.notify),
            self._broker.watch(self.notify),
        ]

    def close(self) -> None:
        """Stop listening; what was not sent is dropped (counted)."""
        for unwatch in self._unwatch:
            unwatch()
        self._unwatch = []
        for binding in self._bindings:
            self._bus.detach(binding)
        self._bindings = []
        self.dropped += len(self._backlog) + self._mailbox.discard()
        self._backlog.clear()

    def up(self) -> None:
        """The transport connected (counted in ``connects``)."""
        self.connected = True
        self.connects += 1

    def down(self) -> None:
        """The transport's connection ended."""
        self.connected = False

    def stats(self) -> LinkStats:
        """A snapshot of the link's counters."""
        return LinkStats(
            connected=self.connected,
            connects=self.connects,
            sent=self.sent,
            received=self.received,
            dropped=self.dropped,
            backlog=self.pending(),
            rejected=self.rejected,
        )

    # ---- out ----------------------------------------------------------------------------

    async def outgoing(self) -> list[tuple[str, Event]]:
        """The next batch to send (at least one event, at most ``batch_max``): the backlog
        first, then what was published since. Events that came in through this link are
        left out."""
        backlog, limit = self._backlog, self.batch_max
        while True:
            batch = [backlog.popleft() for _ in range(min(len(backlog), limit))]
            self._take(batch, limit)
            if batch:
                self.sent += len(batch)
                return batch
            await self._mailbox_ready()  # woken by a publish, or by requeue()

    def _take(self, batch: list[tuple[str, Event]], limit: int) -> None:
        take, append, origin = self._mailbox.take_nowait, batch.append, self.origin
        room = limit - len(batch)
        while room > 0:
            item = take()
            if item is EMPTY:
                return
            route, event = item  # type: ignore[misc]
            if event.metadata.get(ORIGIN_KEY) != origin:
                append((route.topic, event))
                room -= 1

    async def _mailbox_ready(self) -> None:
        if not len(self._mailbox):
            self._mailbox.prune()
            await self._mailbox.wait()

    def pending(self) -> int:
        """Local events waiting to be sent (some may yet be left out as having come in
        through this link)."""
        return len(self._backlog) + len(self._mailbox)

    def requeue(self, batch: Sequence[tuple[str, Event]]) -> None:
        """Put back a batch the transport could not send: it goes first next time."""
        self.sent -= len(batch)
        self._backlog.extendleft(reversed(batch))
        self._trim()
        self._mailbox.wake()  # outgoing() may be waiting for the next publish

    async def hold(self) -> None:
        """While disconnected: move what is published into the backlog, keeping at most
        ``buffer`` events (the oldest go, counted). Runs until cancelled."""
        while True:
            await self._mailbox_ready()
            batch: list[tuple[str, Event]] = []
            self._take(batch, self.batch_max)
            self._backlog.extend(batch)
            self._trim()
            await trio.lowlevel.checkpoint()

    def _trim(self) -> None:
        backlog = self._backlog
        over = len(backlog) - self.buffer
        if over > 0:
            for _ in range(over):
                backlog.popleft()
            self.dropped += over
            _log.warning(
                "link backlog full: oldest events dropped",
                link=self.origin,
                dropped=over,
                buffer=self.buffer,
            )

    # ---- in -----------------------------------------------------------------------------

    async def incoming(self, batch: Iterable[tuple[str, Event]], *, stamped: bool = False) -> None:
        """Publish events from the transport locally, stamped with this link's origin
        (``stamped``: the transport made them with the stamp already, saving a copy)."""
        publish, origin = self._bus.publish, {ORIGIN_KEY: self.origin}
        for topic, event in batch:
            try:
                await publish(topic, event if stamped else event.with_metadata(**origin))
            except (TopicError, EventError) as error:
                self.refuse(topic, str(error))
                continue
            self.received += 1

    async def incoming_with_receipt(self, topic: str, event: Event) -> Receipt | None:
        """Publish one event from a transport that must know when it is handled here (see
        :mod:`loomk.bus.receipts`), made with this link's origin stamp already; None when
        this bus refuses it (counted and logged, like :meth:`incoming`)."""
        try:
            receipt = await self._bus.publish_with_receipt(topic, event)
        except (TopicError, EventError) as error:
            self.refuse(topic, str(error))
            return None
        self.received += 1
        return receipt

    def refuse(self, topic: str, reason: str) -> None:
        """Count and log an event from the transport that cannot be published here."""
        self.rejected += 1
        _log.warning("event from a link refused", link=self.origin, topic=topic, reason=reason)

    # ---- interest -----------------------------------------------------------------------

    def interest(self) -> list[str]:
        """The patterns local subscribers want (this link's own export bindings aside),
        and the collaboration patterns, sorted."""
        patterns = self._bus.patterns()
        for binding in self._bindings:
            patterns[binding.pattern] = patterns.get(binding.pattern, 0) - 1
        wanted = {pattern for pattern, count in patterns.items() if count > 0}
        wanted.update(COLLABORATION_PATTERNS)
        return sorted(wanted)

    def capabilities(self) -> list[CapabilityDescriptor]:
        """The capabilities local providers offer."""
        return self._broker.list_capabilities()

    async def wait_changed(self) -> None:
        """Wait until local interest or capabilities change (after the last call)."""
        await self._changed.wait()
        self._changed = trio.Event()

    def notify(self) -> None:
        """Wake :meth:`wait_changed`: something else the transport announces changed (the
        bridge link lists the local agents, say)."""
        self._changed.set()
