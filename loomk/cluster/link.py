"""A kernel joined to a NATS cluster: ``loomk.cluster.join``.

Inside ``async with join(kernel, "nats://host:4222") as link`` the kernel shares the topics
of ``share`` with every other kernel joined to the same NATS server (or NATS cluster):

- **Events.** A topic ``t`` is the NATS subject ``{prefix}.t`` (the grammars are the same).
  Local events on a shared pattern go out once, in batches (one trio -> asyncio crossing
  per batch); events from NATS are published locally once, stamped with the link's origin so
  they never go back out (loop prevention, :mod:`loomk.links`). The connection is made with
  ``no_echo`` and every message names the node it comes from, so a kernel never receives its
  own events.
- **QoS.** A ``realtime`` pattern rides core NATS: at most once, like a realtime lane. A
  ``batched`` or ``background`` pattern rides JetStream (:mod:`loomk.cluster._durable`):
  stored, acknowledged only once handled and committed here, sent again after a crash,
  deduplicated by event id.
- **Collaboration.** Replies, barrier check-ins and thread broadcasts (``thread.*.reply``,
  ``thread.*.barrier``, ``thread.*.broadcast``) always ride core NATS, so ``ctx.request``,
  ``ctx.fanout``, barriers and contract-net work between kernels.
- **Directory and capabilities.** Kernels announce their agents and capabilities
  (:mod:`loomk.cluster._peers`): ``kernel.directory`` lists every kernel's agents, and a
  capability of another kernel is invoked there over NATS request/reply.
- **Failures.** A server that is down at start or goes away is retried with backoff and
  jitter (nats-py reconnects and resubscribes); meanwhile local traffic flows, local events
  for the cluster wait in a backlog bounded by ``buffer`` (oldest dropped, counted), and calls
  to other kernels fail fast with ``PROVIDER_UNAVAILABLE``. Messages on shared subjects that
  are not loomk events, and events over the server's payload limit, are counted and logged,
  never published.
"""

from __future__ import annotations

import asyncio
import itertools
import random
import re
import uuid
from collections import deque
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import nats
import nats.errors
import nats.js.errors
import trio
import trio_asyncio
from nats.js.api import (
    AckPolicy,
    ConsumerConfig,
    DeliverPolicy,
    RetentionPolicy,
    StorageType,
    StreamConfig,
)

from loomk.actions import ActionCall, ActionResult, ErrorCode
from loomk.bus import validate_pattern
from loomk.bus.topics import TopicTrie
from loomk.cluster import _inbox
from loomk.cluster._durable import (
    DUPLICATE_WINDOW_S,
    INACTIVE_THRESHOLD_S,
    MAX_ACK_PENDING,
    DurableStream,
    delivery,
    stream_name,
)
from loomk.cluster._peers import EXPIRY_PERIODS, Peers
from loomk.cluster._wire import (
    NotAnEvent,
    decode_announcement,
    decode_call,
    decode_event,
    decode_result,
    encode_announcement,
    encode_call,
    encode_event,
    encode_goodbye,
    encode_result,
)
from loomk.cluster.errors import ClusterError
from loomk.collab import BARRIER_PATTERN, REPLY_PATTERN
from loomk.config import covering_patterns, parse_cluster_share, patterns_overlap
from loomk.events import Event
from loomk.kernel import Kernel
from loomk.links import ORIGIN_KEY, BusLink, LinkStats
from loomk.state.store import Ticket
from loomk.telemetry.logging import get_logger

__all__ = ["ClusterLink", "ClusterStats", "join"]

_log = get_logger("loomk.cluster")

BROADCAST_PATTERN = "thread.*.broadcast"
COLLABORATION = (REPLY_PATTERN, BARRIER_PATTERN, BROADCAST_PATTERN)
"""Always shared over core NATS: what request/reply, fanout, barriers and contract-net
between kernels need."""

_NODE = re.compile(r"[A-Za-z0-9_-]{1,64}")
_NODE_KEY = b"cluster/node"
_INBOX_LIMIT = 65_536  # core messages waiting for the kernel, at most
_SEND_ACK_TIMEOUT_S = 5.0  # a JetStream publish not acknowledged by then is sent again
_FLIGHT_POLL_S = 0.01
_RESEND_PAUSE_S = 0.5
_CALLS_AT_ONCE = 64
_CALLS_QUEUED = 1024  # calls beyond that are refused at once (PROVIDER_UNAVAILABLE)
_ACK_POLL_S = 0.002
_CLOSE_GRACE_S = 2.0
_CORE_BATCH = 256  # core events published per BusLink.incoming call
_COALESCE_S = 0.05  # changes come in bursts (a spawn subscribes, registers...)


@dataclass(frozen=True, slots=True)
class ClusterStats:
    """A cluster link's counters."""

    link: LinkStats
    """Events out and in, the backlog while disconnected, drops, refusals (the bus link's)."""
    node: str
    """This kernel's node name."""
    peers: int
    """Other kernels heard from."""
    not_events: int
    """Messages on shared subjects that were not loomk events (skipped)."""
    oversized: int
    """Local events over the server's payload limit (not sent)."""
    lagged: int
    """Core messages dropped because this kernel fell behind."""
    redelivered: int
    """JetStream messages delivered again (after a crash or a lost acknowledgement)."""
    resent: int
    """Events sent to JetStream again because their acknowledgement did not come."""
    calls_out: int
    """Capability calls sent to other kernels."""
    calls_in: int
    """Capability calls served for other kernels."""


class ClusterLink:
    """This kernel's link to a NATS cluster (made by :func:`join`; see the module)."""

    def __init__(
        self,
        kernel: Kernel,
        servers: Sequence[str],
        *,
        node: str,
        share: Sequence[tuple[str, str]],
        prefix: str,
        ack_wait_s: float,
        announce_s: float,
        buffer: int,
        backoff_s: float,
        max_backoff_s: float,
    ) -> None:
        self.kernel = kernel
        self.servers = list(servers)
        self.node = node
        self.prefix = prefix
        self.last_error = ""
        """Why the last connection attempt failed or the connection went away."""
        self.share = tuple(share)
        self._ack_wait_s = ack_wait_s
        self._announce_s = announce_s
        self._backoff_s = backoff_s
        self._max_backoff_s = max_backoff_s
        self._instance = uuid.uuid4().hex
        realtime = [p for p, qos in share if qos == "realtime"]
        durable = [p for p, qos in share if qos != "realtime"]
        # one subscription per topic where possible: NATS delivers a message once per
        # matching subscription (a JetStream topic a core pattern covers is skipped there)
        self._core_patterns = covering_patterns([*realtime, *COLLABORATION])
        export = covering_patterns([p for p, _ in share] + list(COLLABORATION))
        self._overlapping = _overlap_left(self._core_patterns) or _overlap_left(export)
        self._recent_out = _Recent() if self._overlapping else None
        self._recent_in = _Recent() if self._overlapping else None
        self._durable_trie: TopicTrie[int] = TopicTrie()
        self._streams: list[DurableStream] = []
        for index, pattern in enumerate(durable):
            self._durable_trie.insert(pattern, index, index)
            name = stream_name(prefix, pattern)
            key = f"cluster/{prefix}/{name}/{node}".encode()
            self._streams.append(DurableStream(pattern, self.subject(pattern), name, key))
        self._streams_by_name = {stream.name: stream for stream in self._streams}
        self._is_durable: dict[str, int | None] = {}
        self._link = BusLink(
            kernel.bus,
            kernel.broker,
            f"cluster:{node}",
            export=export,
            buffer=buffer,
            batch_max=1024,
        )
        self._stamp = {ORIGIN_KEY: self._link.origin}  # what every event from NATS carries
        self._peers = Peers(
            node,
            kernel.directory,
            kernel.broker,
            self._call_node,
            EXPIRY_PERIODS * announce_s,
        )
        self._inbox = _inbox.Inbox()
        self.lagged = 0  # core messages dropped while the kernel fell behind
        self._nc: Any = None
        self._js: Any = None
        self._changes = trio.Event()
        self._up = trio.Event()
        self._max_payload = 1 << 20
        self._announced = ""
        self._calls = trio.Semaphore(_CALLS_AT_ONCE)
        self._acks_wanted = trio.Event()
        self._closing = False
        self._left = False  # the link has stopped (what was queued here may still settle)
        self._unwatch_settled: Callable[[], None] = _nothing
        self._twin_logged = False
        self._in_flight: deque[tuple[asyncio.Future[Any], tuple[str, Event], float]] = deque()
        self._flights_wanted = trio.Event()
        self._core_in: deque[Any] = deque()  # core messages from NATS, to publish here
        self._core_ready = trio.Event()
        self._durable_in: deque[tuple[DurableStream, int, Any]] = deque()  # to publish here
        self._durable_ready = trio.Event()
        self._reconnected = trio.Event()
        self._resend_after = 0.0  # publishes JetStream refused wait until then
        self._calls_waiting = 0  # calls from other kernels served or waiting here
        self._pending = 0  # JetStream messages taken in, not yet in an acknowledged run
        self._to_ack: deque[tuple[Ticket | None, list[Any]]] = deque()
        self.not_events = 0
        self.oversized = 0
        self.resent = 0
        self.calls_out = 0
        self.calls_in = 0

    # ---- what users see -----------------------------------------------------------------

    def subject(self, topic: str) -> str:
        """The NATS subject of a topic or pattern."""
        return f"{self.prefix}.{topic}"

    @property
    def connected(self) -> bool:
        """Whether the link is connected to a NATS server now."""
        nc = self._nc
        return nc is not None and nc.is_connected

    async def wait_connected(self) -> None:
        """Wait until the link is connected and set up (at once if it is)."""
        await trio.lowlevel.checkpoint()
        while not self.connected or not self._up.is_set():
            await self.wait_changed()

    async def wait_changed(self) -> None:
        """Wait until the link connects, disconnects, fails to connect, or a peer joins or
        leaves."""
        await self._changes.wait()

    async def wait_peer(self, node: str) -> None:
        """Wait until the kernel named ``node`` has been heard from."""
        while node not in self._peers.peers:
            await self.wait_changed()

    def peers(self) -> dict[str, dict[str, Any]]:
        """The other kernels heard from: node -> agents, capabilities, seconds since heard."""
        return self._peers.describe()

    def stats(self) -> ClusterStats:
        """The link's counters."""
        return ClusterStats(
            link=self._link.stats(),
            node=self.node,
            peers=len(self._peers.peers),
            not_events=self.not_events,
            oversized=self.oversized,
            lagged=self.lagged,
            redelivered=sum(s.redelivered for s in self._streams),
            resent=self.resent,
            calls_out=self.calls_out,
            calls_in=self.calls_in,
        )

    def _changed(self) -> None:
        self._changes.set()
        self._changes = trio.Event()

    # ---- life ---------------------------------------------------------------------------

    @asynccontextmanager
    async def running(self) -> AsyncIterator[None]:
        """Run the link while the block lasts (inside a trio-asyncio loop)."""
        self._link.open()
        unwatch = self.kernel.directory.watch(self._link.notify)
        self._unwatch_settled = self.kernel.bus.watch_settled(self._on_settled)
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._run)
                try:
                    yield
                finally:
                    with trio.CancelScope(shield=True) as closing:
                        closing.deadline = trio.current_time() + _CLOSE_GRACE_S
                        await self._goodbye()
                    nursery.cancel_scope.cancel()
        finally:
            unwatch()
            self._left = True  # events already queued here are still recorded when handled
            if not self._pending:
                self._unwatch_settled()
            self._peers.clear()
            self._link.close()
            self._closing = True
            nc, self._nc = self._nc, None
            if nc is not None:
                with trio.CancelScope(shield=True) as closing:
                    closing.deadline = trio.current_time() + _CLOSE_GRACE_S
                    try:
                        await trio_asyncio.aio_as_trio(nc.close)()
                    except Exception as error:  # closing is best effort
                        _log.debug("cluster close failed", error=repr(error))

    async def _goodbye(self) -> None:
        """Tell the peers this kernel leaves (what nats-py buffered is flushed with it; the
        link's backlog is not sent)."""
        nc = self._nc
        if nc is None or not nc.is_connected:
            return
        try:
            await trio_asyncio.aio_as_trio(self._say_goodbye)(nc)
        except Exception as error:
            _log.debug("cluster goodbye failed", error=repr(error))

    async def _say_goodbye(self, nc: Any) -> None:
        await nc.publish(self._control("announce"), encode_goodbye(self.node, self._instance))
        await nc.flush(timeout=1)

    def _control(self, name: str) -> str:
        return f"_{self.prefix}.{name}"

    async def _run(self) -> None:
        delay = self._backoff_s
        async with trio.open_nursery() as nursery:
            holding = trio.CancelScope()
            nursery.start_soon(self._hold, holding)
            while self._nc is None:
                try:
                    await self._connect()
                except ClusterError:
                    raise
                except Exception as error:  # nats-py raises many kinds; all mean "not now"
                    self.last_error = _describe(error)
                    self._changed()
                    _log.warning(
                        "cannot reach NATS: retrying",
                        node=self.node,
                        servers=self.servers,
                        reason=self.last_error,
                        retry_in_s=round(delay, 2),
                    )
                    await trio.sleep(delay * random.uniform(0.5, 1.0))
                    delay = min(delay * 2, self._max_backoff_s)
            holding.cancel()
            nursery.start_soon(self._receive)
            nursery.start_soon(self._send)
            nursery.start_soon(self._watch_flights)
            nursery.start_soon(self._restore_after_reconnection)
            nursery.start_soon(self._acknowledge)
            nursery.start_soon(self._announce)
            self._up.set()
            self._changed()
            _log.info("cluster joined", node=self.node, servers=self.servers)

    async def _hold(self, scope: trio.CancelScope) -> None:
        with scope:
            await self._link.hold()

    async def _connect(self) -> None:
        nc = await trio_asyncio.aio_as_trio(self._open_connection)()
        try:
            await self._set_up(nc)
        except BaseException:
            self._closing = True  # not a disconnection to report
            with trio.CancelScope(shield=True):
                await trio_asyncio.aio_as_trio(nc.close)()
            self._closing = False
            raise
        self._nc = nc
        self._link.up()

    async def _open_connection(self) -> Any:
        async def on_error(error: Exception) -> None:
            reason = _describe(error)
            if reason != self.last_error:  # once per kind of failure, not per attempt
                _log.warning("NATS connection error", node=self.node, reason=reason)
            self.last_error = reason
            self._changed()

        async def on_disconnected() -> None:
            self._link.down()
            if not self._closing:
                _log.warning("cluster disconnected: reconnecting", node=self.node)
            self._changed()

        async def on_reconnected() -> None:
            self._link.up()
            self._reconnected.set()
            _log.info("cluster reconnected", node=self.node)
            self._changed()

        return await nats.connect(
            self.servers,
            name=f"loomk:{self.node}",
            no_echo=True,
            allow_reconnect=True,
            max_reconnect_attempts=-1,
            reconnect_time_wait=min(self._max_backoff_s, 2.0),
            connect_timeout=2,
            ping_interval=10,  # a server gone silent is noticed within ~30 s
            max_outstanding_pings=2,
            error_cb=on_error,
            disconnected_cb=on_disconnected,
            reconnected_cb=on_reconnected,
        )

    async def _set_up(self, nc: Any) -> None:
        """Subscriptions, streams and consumers (a trio function: one crossing each)."""
        self._max_payload = nc.max_payload
        await trio_asyncio.aio_as_trio(self._subscribe_core)(nc)
        if self._streams:
            js = nc.jetstream()
            self._js = js
            for stream in self._streams:
                created = await trio_asyncio.aio_as_trio(self._ensure_stream)(js, stream)
                stream.load_mark(self.kernel.state.store, created)
            await self._consume_wanted()

    async def _restore_after_reconnection(self) -> None:
        """After a reconnection, make again the streams and consumers the server lost (its
        store was wiped, or it is another server of the cluster without them); a stream
        made again starts its sequences over, and so does what this kernel recorded."""
        while True:
            await self._reconnected.wait()
            self._reconnected = trio.Event()
            js = self._js
            if js is None:
                continue
            try:
                for stream in self._streams:
                    created = await trio_asyncio.aio_as_trio(self._ensure_stream)(js, stream)
                    if created != stream.created:
                        _log.warning("cluster stream made again", stream=stream.name)
                        stream.load_mark(self.kernel.state.store, created)
                    if stream.subscription is not None:
                        await trio_asyncio.aio_as_trio(self._keep_consumer)(js, stream)
                await self._consume_wanted()
            except Exception as error:  # tried again at the next reconnection
                _log.error(
                    "cluster streams not restored after a reconnection",
                    node=self.node,
                    reason=_describe(error),
                )

    async def _keep_consumer(self, js: Any, stream: DurableStream) -> None:
        """(asyncio) Forget ``stream``'s subscription if the server lost its consumer."""
        try:
            await js.consumer_info(stream.name, self.node)
        except nats.js.errors.NotFoundError:
            old, stream.subscription = stream.subscription, None
            try:
                await old.unsubscribe()
            except Exception as error:  # its consumer is gone already
                _log.debug("old subscription not ended", reason=_describe(error))

    async def _consume_wanted(self) -> None:
        """Consume the streams local subscribers want (a kernel that only publishes on a
        batched pattern has no consumer: it would only read its own events back). A
        consumer, once made, stays: it is durable, and holds this kernel's place."""
        wanted = [s for s in self._streams if s.subscription is None]
        if not wanted or self._js is None:
            return
        interest = self._link.interest()
        for stream in wanted:
            if any(patterns_overlap(stream.pattern, pattern) for pattern in interest):
                await trio_asyncio.aio_as_trio(self._consume)(self._js, stream)

    async def _subscribe_core(self, nc: Any) -> None:
        inbox = self._inbox
        for pattern in self._core_patterns:
            await nc.subscribe(self.subject(pattern), cb=inbox.callback(_inbox.CORE))
        await nc.subscribe(self._control("announce"), cb=inbox.callback(_inbox.ANNOUNCE))
        await nc.subscribe(self._control(f"invoke.{self.node}"), cb=inbox.callback(_inbox.CALL))
        await nc.flush(timeout=5)

    async def _ensure_stream(self, js: Any, stream: DurableStream) -> str:
        config = StreamConfig(
            name=stream.name,
            subjects=[stream.subject],
            retention=RetentionPolicy.INTEREST,
            storage=StorageType.FILE,
            duplicate_window=DUPLICATE_WINDOW_S,
        )
        try:
            info = await js.add_stream(config)
        except (nats.js.errors.ServiceUnavailableError, nats.errors.NoRespondersError):
            raise ClusterError(
                f"the NATS server at {', '.join(self.servers)} has no JetStream, which the "
                f"batched pattern {stream.pattern!r} needs: start nats-server with -js "
                "(jetstream {} in its configuration), or share the pattern as realtime"
            ) from None
        except nats.js.errors.BadRequestError as error:
            # made by another kernel meanwhile (two creating it at once are told the
            # subjects overlap), maybe older: ours if it holds our subject, and only it
            try:
                info = await js.stream_info(stream.name)
            except nats.js.errors.NotFoundError:
                raise ClusterError(
                    f"JetStream refused the stream {stream.name} of {stream.pattern!r} "
                    f"({error.description}): another kernel may share an overlapping "
                    "batched pattern, or a stream of something else holds these subjects"
                ) from None
            if list(info.config.subjects or ()) != [stream.subject]:
                raise ClusterError(
                    f"JetStream stream {stream.name} exists with subjects "
                    f"{info.config.subjects}, not [{stream.subject!r}]: delete it "
                    f"(nats stream rm {stream.name}) or share another pattern"
                ) from None
        return str(info.created)

    async def _consume(self, js: Any, stream: DurableStream) -> None:
        stream.subscription = await js.subscribe(
            stream.subject,
            durable=self.node,
            stream=stream.name,
            cb=self._inbox.callback(_inbox.DURABLE),
            manual_ack=True,
            config=ConsumerConfig(
                ack_policy=AckPolicy.EXPLICIT,
                ack_wait=self._ack_wait_s,
                max_ack_pending=MAX_ACK_PENDING,
                deliver_policy=DeliverPolicy.NEW,
                inactive_threshold=INACTIVE_THRESHOLD_S,
            ),
            pending_msgs_limit=4 * MAX_ACK_PENDING,
        )
        info = await stream.subscription.consumer_info()
        if abs(float(info.config.ack_wait or 0) - self._ack_wait_s) > 0.01:
            _log.warning(
                "this kernel's JetStream consumer keeps the acknowledgement wait it was made "
                "with: remove the consumer (nats consumer rm) to change it",
                stream=stream.name,
                consumer=self.node,
                ack_wait_s=info.config.ack_wait,
                cluster_ack_wait_s=self._ack_wait_s,
            )

    # ---- out ----------------------------------------------------------------------------

    def _durable_index(self, topic: str) -> int | None:
        cache = self._is_durable
        index = cache.get(topic, -1)
        if index == -1:
            matches = self._durable_trie.match(topic)
            index = min(value for _, value in matches) if matches else None
            if len(cache) > 65_536:
                cache.clear()
            cache[topic] = index
        return index

    async def _send(self) -> None:
        link, node, limit = self._link, self.node, self._max_payload
        while True:
            if not self.connected:
                with trio.move_on_after(0.1):
                    await link.hold()  # keep what is published, bounded, until it is back
                continue
            if self._resend_after > trio.current_time():
                await trio.sleep_until(self._resend_after)
            batch = await link.outgoing()
            core: list[tuple[str, bytes]] = []
            durable: list[tuple[str, bytes, str]] = []
            kept: list[tuple[str, Event]] = []
            recent = self._recent_out
            for topic, event in batch:
                if recent is not None and recent.repeated(event.id):
                    continue  # matched two overlapping export patterns
                data = encode_event(event, node)
                if len(data) > limit:
                    self.oversized += 1
                    _log.warning(
                        "event too large for NATS: not sent",
                        topic=topic,
                        bytes=len(data),
                        max_payload=limit,
                    )
                    continue
                if self._durable_index(topic) is None:
                    core.append((self.subject(topic), data))
                else:
                    durable.append((self.subject(topic), data, event.id))
                    kept.append((topic, event))
            try:
                futures = await trio_asyncio.aio_as_trio(self._publish)(core, durable)
            except Exception as error:  # the connection broke under the batch
                self.last_error = _describe(error)
                link.requeue(kept)
                continue
            now = trio.current_time()
            self._in_flight.extend(zip(futures, kept, itertools.repeat(now)))
            self._sweep()
            self._flights_wanted.set()

    async def _publish(
        self, core: list[tuple[str, bytes]], durable: list[tuple[str, bytes, str]]
    ) -> list[asyncio.Future[Any]]:
        """(asyncio) Publish a batch; the futures of JetStream's acknowledgements of the
        durable events, in order (:meth:`_sweep` reads them; nats-py bounds how many wait)."""
        nc, js = self._nc, self._js
        publish = nc.publish
        for subject, data in core:
            await publish(subject, data)
        publish_async = js.publish_async
        return [
            await publish_async(subject, data, headers={"Nats-Msg-Id": event_id})
            for subject, data, event_id in durable
        ]

    def _sweep(self) -> None:
        """Settle the JetStream publishes acknowledged or failed so far, in order: a
        failed one, or one unacknowledged after ``_SEND_ACK_TIMEOUT_S``, is sent again (its
        id makes a repeat harmless)."""
        flights, late = self._in_flight, trio.current_time() - _SEND_ACK_TIMEOUT_S
        again: list[tuple[str, Event]] = []
        failed: BaseException | None = None
        while flights:
            future, item, sent_at = flights[0]
            if not future.done():
                if sent_at > late:
                    break
                future.cancel()  # releases nats-py's slot for it
            flights.popleft()
            if future.cancelled():
                again.append(item)
            elif future.exception() is not None:
                again.append(item)
                failed = future.exception()
        if again:
            self.resent += len(again)
            self._link.requeue(again)
            if failed is not None:  # refused at once (no stream?): not again at once
                self.last_error = _describe(failed)
                self._resend_after = trio.current_time() + _RESEND_PAUSE_S

    async def _watch_flights(self) -> None:
        """Sweep while publishes wait for their acknowledgements (the last batch's too)."""
        while True:
            if not self._in_flight:
                await self._flights_wanted.wait()
                self._flights_wanted = trio.Event()
                continue
            await trio.sleep(_FLIGHT_POLL_S)
            self._sweep()

    # ---- in -----------------------------------------------------------------------------

    async def _receive(self) -> None:
        """Take what NATS delivered: announcements and calls at once, core events and
        JetStream events each in order through a task of their own, so that a bus that
        makes the link wait (a full lossless lane of a batched topic) never holds up
        announcements (peers would seem silent), calls, or the replies an agent waits for."""
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._publish_core)
            nursery.start_soon(self._publish_durable)
            take = trio_asyncio.aio_as_trio(self._inbox.take)
            core, durable, limit = self._core_in, self._durable_in, _INBOX_LIMIT
            while True:
                for kind, msg in await take():
                    if kind == _inbox.CORE:
                        if len(core) >= limit:
                            self.lagged += 1  # at most once: the kernel lags
                        else:
                            core.append(msg)
                    elif kind == _inbox.DURABLE:
                        admitted = self._admit(msg)
                        if admitted is not None:
                            durable.append(admitted)
                    elif kind == _inbox.ANNOUNCE:
                        self._heard(msg.data)
                    elif self._calls_waiting < _CALLS_QUEUED:
                        self._calls_waiting += 1
                        nursery.start_soon(self._serve_call, msg)
                    else:
                        nursery.start_soon(self._refuse_call, msg)
                self._core_ready.set()
                self._durable_ready.set()

    def _admit(self, msg: Any) -> tuple[DurableStream, int, Any] | None:
        """Sort a JetStream message as it arrives: a new one is queued to be published
        (and counted as taken at once, so its redeliveries while it waits, or while an
        agent works on it, are dropped here instead of piling up); a redelivery of one
        settled is acknowledged again; None for anything not to publish."""
        try:
            name, sequence, delivered = delivery(msg.reply)
            stream = self._stream_named(name)
        except (ValueError, LookupError) as error:  # not a JetStream delivery of ours
            self.not_events += 1
            _log.warning("unexpected message on a consumer", reason=str(error))
            return None
        verdict = stream.admit(sequence, delivered > 1)
        if verdict == "new":
            return stream, sequence, msg
        if verdict == "again":
            stream.hold(sequence, msg, None)
            self._pending += 1
            self._acks_wanted.set()
        return None

    async def _publish_core(self) -> None:
        events, batch_max = self._core_in, _CORE_BATCH
        while True:
            if not events:
                await self._core_ready.wait()
                self._core_ready = trio.Event()
                continue
            batch: list[tuple[str, Event]] = []
            while events and len(batch) < batch_max:
                event = self._decode_core(events.popleft())
                if event is not None:
                    batch.append(event)
            if batch:
                await self._link.incoming(batch, stamped=True)
            else:
                await trio.lowlevel.checkpoint()

    async def _publish_durable(self) -> None:
        messages = self._durable_in
        while True:
            if not messages:
                await self._durable_ready.wait()
                self._durable_ready = trio.Event()
                continue
            await self._take_durable(*messages.popleft())

    def _decode_core(self, msg: Any) -> tuple[str, Event] | None:
        """A core message's event; None for a JetStream topic (its consumer delivers it)
        and, with overlapping patterns, for a second copy."""
        subject: str = msg.subject
        if self._streams and self._durable_index(subject[len(self.prefix) + 1 :]) is not None:
            return None
        decoded = self._decode(msg)
        recent = self._recent_in
        if decoded is not None and recent is not None and recent.repeated(decoded[1].id):
            return None
        return decoded

    def _decode(self, msg: Any) -> tuple[str, Event] | None:
        subject: str = msg.subject
        topic = subject[len(self.prefix) + 1 :]
        try:
            node, event = decode_event(msg.data, self._stamp)
        except NotAnEvent as error:
            self.not_events += 1
            self._link.refuse(topic, str(error))
            return None
        if node == self.node:
            return None
        return topic, event

    async def _take_durable(self, stream: DurableStream, sequence: int, msg: Any) -> None:
        """Publish a new JetStream message here; it is acknowledged once it settles."""
        decoded = self._decode(msg)
        receipt = None if decoded is None else await self._link.incoming_with_receipt(*decoded)
        stream.hold(sequence, msg, receipt)
        self._pending += 1
        self._acks_wanted.set()

    def _stream_named(self, name: str) -> DurableStream:
        stream = self._streams_by_name.get(name)
        if stream is None:
            raise LookupError(f"no stream {name}")
        return stream

    def _on_settled(self) -> None:
        """A consumer settled (the bus calls this synchronously, as an agent's group commit
        begins): record the marks of every stream's settled run now, so that they are
        written in the same store batch as that commit (see :mod:`loomk.cluster._durable`),
        and hand their messages to :meth:`_acknowledge`."""
        if not self._pending:
            return
        try:
            self._record_settled()
        except Exception as error:  # never into the agent's commit: acknowledged later
            _log.warning("cluster acknowledgements delayed", node=self.node, reason=repr(error))

    def _record_settled(self) -> None:
        marks: dict[bytes, bytes] = {}
        acks: list[Any] = []
        for stream in self._streams:
            run = stream.ready()
            if run:
                self._pending -= len(run)
                marks[stream.mark_key] = stream.mark_value()
                acks.extend(run)
        if not acks:
            return
        ticket = self.kernel.state.store.submit(marks)
        if self._left:  # no connection to acknowledge on: the record makes a redelivery
            if not self._pending:  # "again" when this kernel joins next
                self._unwatch_settled()
            return
        self._to_ack.append((ticket, acks))
        self._acks_wanted.set()

    async def _acknowledge(self) -> None:
        """Acknowledge settled runs once their marks are durable; look for runs settled by
        consumers that do not commit (plain subscriptions) every few milliseconds."""
        store = self.kernel.state.store
        while True:
            if not self._to_ack:
                if not self._pending:
                    await self._acks_wanted.wait()
                    self._acks_wanted = trio.Event()
                else:
                    with trio.move_on_after(_ACK_POLL_S):
                        await self._acks_wanted.wait()
                    self._acks_wanted = trio.Event()
                self._on_settled()
                continue
            ticket, acks = self._to_ack.popleft()
            if ticket is not None:
                await store.acknowledged(ticket)
            if self.connected:
                try:
                    await trio_asyncio.aio_as_trio(_ack_all)(acks)
                except Exception as error:  # lost: JetStream sends them again
                    _log.debug("cluster ack failed", reason=_describe(error))

    # ---- capabilities across kernels ------------------------------------------------------

    async def _call_node(self, node: str, call: ActionCall) -> ActionResult:
        """Run ``call`` on the kernel ``node`` (NATS request/reply)."""
        nc = self._nc
        if nc is None or not nc.is_connected:
            return ActionResult.failure(
                call.id,
                ErrorCode.PROVIDER_UNAVAILABLE,
                f"{call.capability} is on kernel {node}, and the cluster link is not "
                f"connected ({self.last_error or 'connecting'})",
            )
        timeout = call.timeout_ms / 1000 if call.timeout_ms > 0 else 30.0
        self.calls_out += 1
        try:
            reply = await trio_asyncio.aio_as_trio(nc.request)(
                self._control(f"invoke.{node}"), encode_call(call), timeout=timeout + 1.0
            )
            return decode_result(reply.data)
        except nats.errors.NoRespondersError:
            reason = f"kernel {node} does not answer (gone?)"
        except nats.errors.TimeoutError:
            return ActionResult.failure(
                call.id, ErrorCode.ACTION_TIMEOUT, f"{call.capability} on kernel {node} timed out"
            )
        except Exception as error:
            reason = _describe(error)
        return ActionResult.failure(
            call.id, ErrorCode.PROVIDER_UNAVAILABLE, f"{call.capability} on {node}: {reason}"
        )

    async def _refuse_call(self, msg: Any) -> None:
        try:
            call = decode_call(msg.data)
        except ValueError:
            self.not_events += 1
            return
        busy = ActionResult.failure(
            call.id,
            ErrorCode.PROVIDER_UNAVAILABLE,
            f"kernel {self.node} is busy: {_CALLS_QUEUED} calls from other kernels wait",
        )
        await self._reply(msg, busy)

    async def _reply(self, msg: Any, result: ActionResult) -> None:
        if msg.reply and self.connected:
            try:
                await trio_asyncio.aio_as_trio(self._nc.publish)(msg.reply, encode_result(result))
            except Exception as error:
                _log.debug("cluster reply failed", reason=_describe(error))

    async def _serve_call(self, msg: Any) -> None:
        try:
            await self._serve_one_call(msg)
        finally:
            self._calls_waiting -= 1

    async def _serve_one_call(self, msg: Any) -> None:
        async with self._calls:
            try:
                call = decode_call(msg.data)
            except ValueError as error:
                self.not_events += 1
                _log.warning("bad capability call from the cluster", reason=str(error))
                return
            self.calls_in += 1
            provider = self.kernel.broker.resolve(call.capability, call.version)
            if provider is None or self._peers.is_proxy(provider):
                result = ActionResult.failure(
                    call.id,
                    ErrorCode.PROVIDER_UNAVAILABLE,
                    f"kernel {self.node} does not offer {call.capability}",
                )
            else:
                result = await self.kernel.broker.invoke(call)
            await self._reply(msg, result)

    # ---- announcements ------------------------------------------------------------------

    def _announcement(self) -> str:
        return encode_announcement(
            self.node,
            self._instance,
            self._announce_s,
            self._peers.own_agents(),
            self._peers.own_capabilities(),
        )

    async def _announce(self) -> None:
        """Announce at once, when the agents or capabilities change (a burst of changes,
        such as a spawn, makes one announcement), and every ``announce_s`` regardless (the
        peers' expiry); expire silent peers."""
        due = trio.current_time()
        while True:
            if self.connected:  # first: peers that hear of an agent here find its consumer
                try:
                    await self._consume_wanted()
                except Exception as error:  # tried again on the next change or period
                    _log.warning("cluster consumer not made", reason=_describe(error))
            body = self._announcement()
            if body != self._announced or trio.current_time() >= due:
                due = trio.current_time() + self._announce_s
                if self.connected:
                    try:
                        await trio_asyncio.aio_as_trio(self._nc.publish)(
                            self._control("announce"), body.encode()
                        )
                        self._announced = body
                    except Exception as error:  # too large for the server, say
                        _log.warning("cluster announcement not sent", reason=_describe(error))
            self._peers.expire()
            with trio.move_on_at(due):
                await self._link.wait_changed()
                await trio.sleep(_COALESCE_S)

    def _heard(self, data: bytes) -> None:
        try:
            heard = decode_announcement(data)
        except ValueError as error:
            self.not_events += 1
            _log.warning("bad cluster announcement", reason=str(error))
            return
        if heard.node == self.node:
            if heard.instance != self._instance and not self._twin_logged:
                self._twin_logged = True
                _log.error(
                    "another kernel uses this cluster node name: give each its own cluster_node",
                    node=heard.node,
                )
            return
        if heard.bye:
            self._peers.gone(heard.node, "it left", heard.instance)
        elif self._peers.announced(
            heard.node,
            list(heard.agents),
            list(heard.capabilities),
            every_s=heard.every_s,
            instance=heard.instance,
        ):
            self._announced = ""  # a newcomer: announce at once so it learns of this kernel
            self._link.notify()
        self._changed()


class _Recent:
    """The ids of the last events seen (bounded): a second copy of one is dropped."""

    def __init__(self, size: int = 16_384) -> None:
        self._ids: dict[str, None] = {}
        self._size = size

    def repeated(self, event_id: str) -> bool:
        ids = self._ids
        if event_id in ids:
            return True
        ids[event_id] = None
        if len(ids) > self._size:
            del ids[next(iter(ids))]
        return False


def _overlap_left(patterns: list[str]) -> bool:
    """Whether two of ``patterns`` still overlap (neither covering the other)."""
    return any(
        patterns_overlap(first, second)
        for index, first in enumerate(patterns)
        for second in patterns[index + 1 :]
    )


def _nothing() -> None:
    pass


async def _ack_all(msgs: list[Any]) -> None:
    for msg in msgs:
        await msg.ack()


def _describe(error: BaseException) -> str:
    text = str(error) or type(error).__name__
    return f"{type(error).__name__}: {text}" if str(error) else text


async def node_name(kernel: Kernel, node: str | None) -> str:
    """This kernel's node name: ``node``, ``cluster_node``, or one made once and kept in
    the data directory (so a restarted kernel resumes its JetStream consumers; it is
    durable before any consumer is named after it)."""
    name = node or kernel.config.cluster_node
    if not name:
        store = kernel.state.store
        saved = store.get(_NODE_KEY)
        if saved is not None:
            name = saved.decode()
        else:
            name = f"k-{uuid.uuid4().hex[:12]}"
            await store.commit({_NODE_KEY: name.encode()})
    if not _NODE.fullmatch(name):
        raise ClusterError(
            f"cluster node name {name!r}: use letters, digits, '-' and '_' (at most 64)"
        )
    return name


@asynccontextmanager
async def join(
    kernel: Kernel,
    servers: str | Sequence[str],
    *,
    node: str | None = None,
    share: str | Sequence[tuple[str, str]] | None = None,
    prefix: str | None = None,
    ack_wait_s: float | None = None,
    announce_s: float = 2.0,
    buffer: int = 10_000,
    backoff_s: float = 0.1,
    max_backoff_s: float = 10.0,
) -> AsyncIterator[ClusterLink]:
    """Join ``kernel`` to the NATS server(s) ``servers`` while the block lasts.

    ``share`` is ``cluster_share``'s form (``"sensor.>=realtime, order.*=batched"``) or a
    list of ``(pattern, qos)``; the kernel's settings give every argument left out. It does
    not wait for the first connection (``await link.wait_connected()``): a server that is
    down is retried with backoff meanwhile. Raises :class:`ClusterError` for arguments that
    cannot work.
    """
    config = kernel.config
    if isinstance(servers, str):
        servers = [s.strip() for s in servers.split(",") if s.strip()]
    if not servers:
        raise ClusterError("no NATS server given (cluster_nats_url)")
    if share is None:
        share = config.cluster_share
    try:
        shared = parse_cluster_share(share) if isinstance(share, str) else list(share)
        for pattern, qos in shared:
            validate_pattern(pattern)
            if qos not in ("realtime", "batched", "background"):
                raise ValueError(f"{pattern!r}: unknown QoS {qos!r}")
    except Exception as error:
        raise ClusterError(f"cluster share {share!r}: {error}") from error
    prefix = prefix or config.cluster_subject_prefix
    if not _NODE.fullmatch(prefix):
        raise ClusterError(f"subject prefix {prefix!r}: use one token of letters, digits, - _")
    for name, value in (("announce_s", announce_s), ("backoff_s", backoff_s)):
        if not value > 0:
            raise ClusterError(f"{name} must be > 0, got {value!r}")
    link = ClusterLink(
        kernel,
        servers,
        node=await node_name(kernel, node),
        share=shared,
        prefix=prefix,
        ack_wait_s=ack_wait_s or config.cluster_ack_wait_s,
        announce_s=announce_s,
        buffer=buffer,
        backoff_s=backoff_s,
        max_backoff_s=max_backoff_s,
    )
    from loomk.cluster.metrics import cluster_families

    remove = kernel.metrics.register(f"cluster:{link.node}", lambda: cluster_families(link))
    try:
        async with trio_asyncio.open_loop(), link.running():
            yield link
    finally:
        remove()
