"""The feed hub: one task that turns the bus's publishes into every client's frames.

Every ``tick_s`` (100 ms) it takes what the kernel's bus tap saw, and for each filter some
client holds it picks the matching events (sampled evenly down to ``events_per_frame``),
encodes each chosen event once and hands the frame to the clients of that filter. Every
``snapshot_interval_s`` (1 s) it builds the snapshot once and hands the same text to every
client. Handing a frame over is a put into a bounded :class:`~loomk.dashboard._outbox.Outbox`
that never waits, so a slow client costs the hub nothing and a publisher only the tap's
``deque.append``. The hub also closes the clients whose outbox has not moved for
``not_reading_timeout_s``, and keeps the counts behind ``Dashboard.stats()``.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import trio

from loomk.bus import TapBatch, pattern_matches
from loomk.dashboard._client import (
    CLOSE_BAD_MESSAGES,
    ClientLimits,
    FeedClient,
)
from loomk.dashboard._logs import dashboard_log as _log
from loomk.dashboard._outbox import EventsFrame, Outbox, frame_json
from loomk.dashboard._snapshot import SnapshotBuilder

if TYPE_CHECKING:
    from loomk import Event, Kernel

__all__ = ["PROTOCOL", "DashboardLimits", "DashboardStats", "FeedHub"]

PROTOCOL = 1
"""The feed protocol's version, sent in ``hello``."""

PREVIEW_CHARS = 160
_PREVIEW_BYTES = PREVIEW_CHARS * 4  # enough UTF-8 for 160 characters
_ALL = ">"


@dataclass(frozen=True, slots=True)
class DashboardLimits:
    """The dashboard's cadence and limits (docs/dashboard.md); the defaults are the
    contract's, tests shrink the times."""

    max_clients: int | None = None
    """Feed clients at once; None: the kernel's ``dashboard_max_clients``."""
    max_connections: int | None = None
    """HTTP connections served at once (page loads, scrapes, feed clients); one more is
    closed at once. None: four times ``max_clients``."""
    metrics_max_age_s: float = 1.0
    """How long a rendering of ``/metrics`` is served again before a new one (0: never)."""
    tick_s: float = 0.1
    """How often ``events`` frames are built."""
    snapshot_interval_s: float = 1.0
    events_per_frame: int = 200
    not_reading_timeout_s: float = 10.0
    """A client whose frames have not been taken this long is closed (1008)."""
    max_message_bytes: int = 4096
    max_bad_messages: int = 10
    outbox_events_frames: int = 4
    """``events`` frames a client may have waiting; more drop the oldest (counted missed)."""
    tap_capacity: int = 1024
    """Publishes the hub can see per tick; more are counted missed for every client."""
    shutdown_grace_s: float = 1.0
    """At shutdown, how long clients get to receive their close frame."""

    def __post_init__(self) -> None:
        for name in ("tick_s", "snapshot_interval_s", "not_reading_timeout_s"):
            value = getattr(self, name)
            if not (isinstance(value, int | float) and math.isfinite(value) and value > 0):
                raise ValueError(f"DashboardLimits.{name} must be a positive number: {value!r}")
        for name in ("shutdown_grace_s", "metrics_max_age_s"):
            value = getattr(self, name)
            if not (isinstance(value, int | float) and math.isfinite(value) and value >= 0):
                raise ValueError(f"DashboardLimits.{name} must be a number >= 0: {value!r}")
        for name in (
            "events_per_frame",
            "max_message_bytes",
            "max_bad_messages",
            "outbox_events_frames",
            "tap_capacity",
        ):
            value = getattr(self, name)
            if not (isinstance(value, int) and value >= 1):
                raise ValueError(f"DashboardLimits.{name} must be an int >= 1: {value!r}")
        for name in ("max_clients", "max_connections"):
            value = getattr(self, name)
            if value is not None and not (isinstance(value, int) and value >= 1):
                raise ValueError(f"DashboardLimits.{name} must be an int >= 1: {value!r}")


@dataclass(frozen=True, slots=True)
class DashboardStats:
    """The dashboard's counts (``Dashboard.stats()``; also in the snapshot's ``edges``)."""

    clients: int = 0
    """Feed clients connected now."""
    frames_sent: int = 0
    events_sent: int = 0
    events_missed: int = 0
    """Events clients were not sent (sampled out, or dropped from a full outbox)."""
    refused: int = 0
    """Clients turned away for being over ``max_clients`` (1013)."""
    closed: dict[str, int] = field(default_factory=dict)
    """Clients gone, by reason: ``client closed``, ``not reading``, ``bad messages``,
    ``message too big``, ``shutdown``, ``connection failed``."""


class FeedHub:
    """The clients of the feed and the task that feeds them (see the module)."""

    def __init__(self, kernel: Kernel, limits: DashboardLimits) -> None:
        self.kernel = kernel
        self.limits = limits
        self.max_clients = (
            kernel.config.dashboard_max_clients
            if limits.max_clients is None
            else limits.max_clients
        )
        self.client_limits = ClientLimits(limits.max_message_bytes, limits.max_bad_messages)
        self.snapshots = SnapshotBuilder(kernel)
        self.clients: dict[int, FeedClient] = {}
        self.hello = frame_json(
            {
                "type": "hello",
                "protocol": PROTOCOL,
                "kernel": kernel.name,
                "snapshot_interval_ms": round(limits.snapshot_interval_s * 1000),
                "events_per_frame": limits.events_per_frame,
            }
        )
        self.latest_snapshot = frame_json(self.snapshots.build())
        self._snapshot_at = trio.current_time()
        self._next_ident = 0
        self._seq = 0  # publishes the hub has accounted for since it started
        self._changed = trio.Event()
        self._stopping = False
        self.frames_sent = 0
        self.refused = 0
        self.closed: Counter[str] = Counter()
        self._missed_by_departed = 0
        self._events_sent_by_departed = 0

    # ---- clients --------------------------------------------------------------------------

    def admit(self, peer: str, abort_transport: Callable[[], None]) -> FeedClient | None:
        """A new client, greeted (``hello`` and the latest snapshot queued), or None when
        the hub is full (the caller closes it with 1013) or stopping (see :attr:`stopping`:
        closed with 1001, and not counted as refused)."""
        if self._stopping:
            _log().info("dashboard: feed client turned away: shutting down", client=peer)
            return None
        if len(self.clients) >= self.max_clients:
            self.refused += 1
            _log().warning(
                "dashboard: feed client refused: too many clients",
                client=peer,
                clients=len(self.clients),
                max_clients=self.max_clients,
            )
            self._notify()
            return None
        self._next_ident += 1
        outbox = Outbox(max_events_frames=self.limits.outbox_events_frames)
        client = FeedClient(self._next_ident, peer, outbox, self.client_limits, abort_transport)
        outbox.put_control(self.hello)
        outbox.put_snapshot(self.current_snapshot())
        self.clients[client.ident] = client
        _log().info("dashboard: feed client connected", client=peer, clients=len(self.clients))
        self._notify()
        return client

    def leave(self, client: FeedClient) -> None:
        """Forget a client whose connection ended, counting why."""
        if self.clients.pop(client.ident, None) is None:
            return
        reason = client.close_reason or "client closed"
        self.closed[reason] += 1
        self._missed_by_departed += client.outbox.missed
        self._events_sent_by_departed += client.outbox.events_taken
        _log().info(
            "dashboard: feed client gone",
            client=client.peer,
            reason=reason,
            clients=len(self.clients),
        )
        self._notify()

    @property
    def stopping(self) -> bool:
        """Whether :meth:`stop` was called: no client is admitted any more."""
        return self._stopping

    def sent(self, frames: int = 1) -> None:
        """A client's writer sent frames (its progress: counted, and waiters woken)."""
        self.frames_sent += frames
        self._notify()

    def stop(self, code: int, reason: str) -> None:
        """Admit no more clients and ask every client to go (the shutdown's goodbye)."""
        self._stopping = True
        for client in list(self.clients.values()):
            client.close(code, reason)

    def stats(self) -> DashboardStats:
        """The counts now."""
        clients = self.clients.values()
        missed = self._missed_by_departed + sum(c.outbox.missed for c in clients)
        events_sent = self._events_sent_by_departed + sum(c.outbox.events_taken for c in clients)
        return DashboardStats(
            clients=len(self.clients),
            frames_sent=self.frames_sent,
            events_sent=events_sent,
            events_missed=missed,
            refused=self.refused,
            closed=dict(self.closed),
        )

    async def wait_until(self, predicate: Callable[[DashboardStats], bool]) -> DashboardStats:
        """Wait until ``predicate(stats())`` holds (checked at every tick and every client
        change), and return those stats."""
        while True:
            stats = self.stats()
            if predicate(stats):
                return stats
            changed = self._changed
            await changed.wait()

    def _notify(self) -> None:
        self._changed.set()
        self._changed = trio.Event()

    # ---- the task ----------------------------------------------------------------------------

    async def run(self, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Feed the clients until cancelled."""
        limits = self.limits
        with self.kernel.bus.tap(limits.tap_capacity) as tap:
            task_status.started()
            now = trio.current_time()
            next_tick = now + limits.tick_s
            next_snapshot = now + limits.snapshot_interval_s
            while True:
                await trio.sleep_until(min(next_tick, next_snapshot))
                now = trio.current_time()
                # forwarding on every wake, before any snapshot, means a snapshot counting
                # a publish comes after the events frame holding it
                self.forward(tap.take())
                self.close_stalled(now)
                if now >= next_tick:
                    next_tick = max(next_tick + limits.tick_s, now)
                if now >= next_snapshot:
                    self.broadcast_snapshot()
                    next_snapshot = max(next_snapshot + limits.snapshot_interval_s, now)
                self._notify()

    def current_snapshot(self) -> str:
        """The latest snapshot, built anew when older than a tick: a client that just
        connected (or asked ``/api/snapshot``) sees the kernel as it is, not as it was up
        to a second ago (``loomk top --once`` prints it)."""
        now = trio.current_time()
        if now - self._snapshot_at >= self.limits.tick_s:
            self.latest_snapshot = frame_json(self.snapshots.build())
            self._snapshot_at = now
        return self.latest_snapshot

    def broadcast_snapshot(self) -> None:
        """Build the snapshot and queue it for every client (replacing one not yet sent)."""
        self.latest_snapshot = frame_json(self.snapshots.build())
        self._snapshot_at = trio.current_time()
        for client in self.clients.values():
            if client.close_code is None:
                client.outbox.put_snapshot(self.latest_snapshot)

    def forward(self, batch: TapBatch) -> None:
        """Queue ``events`` frames of ``batch`` for every client that wants them."""
        first_seq = self._seq + batch.missed + 1
        self._seq += batch.missed + len(batch.events)
        groups: dict[str, list[FeedClient]] = {}
        for client in self.clients.values():
            if client.wants_events:
                groups.setdefault(client.pattern, []).append(client)
        if not groups or not (batch.events or batch.missed):
            return
        events = batch.events
        encoded: dict[int, str] = {}
        for pattern, members in groups.items():
            if pattern == _ALL:
                matching: Sequence[int] = range(len(events))
            else:
                matching = _matching(pattern, events)
            chosen = _evenly(matching, self.limits.events_per_frame)
            missed = batch.missed + len(matching) - len(chosen)
            if not chosen:
                for client in members:
                    client.outbox.owe_missed(missed)
                continue
            parts = []
            for index in chosen:
                text = encoded.get(index)
                if text is None:
                    topic, event = events[index]
                    text = encoded[index] = frame_json(
                        _event_entry(first_seq + index, topic, event)
                    )
                parts.append(text)
            frame = EventsFrame("[" + ",".join(parts) + "]", len(chosen), missed)
            for client in members:
                client.outbox.put_events(frame)

    def close_stalled(self, now: float) -> None:
        """Close (and cut) the clients whose frames have waited ``not_reading_timeout_s``
        untaken. A client already being closed is left to its close: its handler gives it
        the close grace to take the close frame, then cuts it (cutting it here would cut
        the grace short, and log and abort it again at every tick)."""
        timeout = self.limits.not_reading_timeout_s
        for client in list(self.clients.values()):
            if client.close_code is None and client.outbox.stalled_for(now) >= timeout:
                client.close(CLOSE_BAD_MESSAGES, "not reading", abort=True)


def _matching(pattern: str, events: list[tuple[str, Event]]) -> list[int]:
    """Indices of the events whose topic matches ``pattern`` (each topic tested once)."""
    verdicts: dict[str, bool] = {}
    indices: list[int] = []
    for index, (topic, _) in enumerate(events):
        verdict = verdicts.get(topic)
        if verdict is None:
            verdict = verdicts[topic] = pattern_matches(pattern, topic)
        if verdict:
            indices.append(index)
    return indices


def _evenly(indices: Sequence[int], most: int) -> Sequence[int]:
    """``indices`` if there are at most ``most``, else ``most`` of them evenly spread."""
    count = len(indices)
    if count <= most:
        return indices
    return [indices[(i * count) // most] for i in range(most)]


def _event_entry(seq: int, topic: str, event: Event) -> dict[str, Any]:
    """An event as the feed shows it: its envelope, size, and a preview of its payload."""
    payload = event.payload
    return {
        "seq": seq,
        "topic": topic,
        "id": event.id,
        "type": event.type,
        # an agent's emits carry no source but their sender (agent.<id>): who published it
        "source": event.source or event.sender or "",
        "ts_ms": event.timestamp_ms,
        "thread_id": event.thread_id,
        "correlation_id": event.correlation_id,
        "size": len(payload),
        "preview": payload[:_PREVIEW_BYTES].decode("utf-8", "replace")[:PREVIEW_CHARS],
    }
