"""A process's own kernel linked to a bridge server: ``loomk_bridge.connect``.

Inside ``async with connect(kernel, "host:50051") as link`` the agents of ``kernel`` take
part in the server's bus as if they ran there, and stay ordinary ``loomk.Agent`` s with the
same ``Context``, their state in this process's own data directory:

- the link registers on the server as one remote agent (named ``name``, by default
  ``link-<host>-<pid>``) subscribed to every pattern local subscribers want, and offering
  every capability of the local broker; it registers again when either changes;
- events published here go to the server, and events the server has on those patterns come
  here, both in batch frames (the loomk extension of ``loom.v1``), each stamped with the
  link's origin so it never comes back (see :mod:`loomk.links`);
- calls the server routes to a capability of this kernel arrive on the stream and run
  through the local broker; calls made here for a capability no local provider has go to
  the server (``ForwardAction``), so ``ctx.invoke`` reaches the server's capabilities and
  those of every other linked process;
- the link pings every ``heartbeat_s``; when the connection breaks, or the server stops
  answering, it reconnects with exponential backoff and jitter and registers again (which
  resubscribes). Meanwhile local events are kept, up to ``buffer``, and sent on
  reconnection; beyond that the oldest go, counted (``link.stats().dropped``). Calls meanwhile
  fail fast with ``PROVIDER_UNAVAILABLE``.

A subscription made here reaches the server one registration round trip later: events the
server publishes on it before then are not seen here. Answers to requests and barrier
check-ins are always subscribed, so ``ctx.request`` and ``ctx.fanout`` across the link are
never early.
"""

from __future__ import annotations

import asyncio
import os
import random
import re
import socket
import ssl
import uuid
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from contextlib import asynccontextmanager, contextmanager
from typing import Any

import trio
import trio_asyncio
from grpclib.client import Channel
from grpclib.const import Status
from grpclib.exceptions import GRPCError, ProtocolError, StreamTerminatedError

from loomk import (
    ActionCall,
    ActionCallError,
    ActionResult,
    ErrorCode,
    EventError,
    Kernel,
    LinkError,
)
from loomk.agents import validate_agent_id
from loomk.events import Event, now_ms
from loomk.links import ORIGIN_KEY, BusLink, LinkStats
from loomk.telemetry.logging import get_logger
from loomk_bridge._core import BATCH_KEY, INSTANCE_KEY, LINK_KEY
from loomk_bridge._frames import LimitedProtoCodec
from loomk_bridge._linked import AGENTS_KEY, encode_agents
from loomk_bridge._outbox import Outbox
from loomk_bridge._proto import bridge_pb2
from loomk_bridge._proto.bridge_grpc import BridgeStub
from loomk_bridge.codec import (
    call_from_proto,
    call_to_proto,
    descriptor_to_proto,
    event_from_proto,
    event_to_proto,
    result_from_proto,
    result_to_proto,
)
from loomk_bridge.errors import BridgeError
from loomk_bridge.metrics import link_families
from loomk_bridge.server import parse_address

__all__ = ["BridgeLink", "connect"]

_log = get_logger("loomk.bridge.link")

_FRAMES_QUEUED = 64  # frame lists waiting for the stream writer
_FRAMES_IN = 32  # server frames waiting for the trio side
_REGISTER_TIMEOUT_S = 10.0
_CALLS_AT_ONCE = 64  # calls from the server run at once; more wait
_FRAME_OVERHEAD = 64  # bytes of a frame besides its publishes
_ITEM_OVERHEAD = 8  # bytes of one publish's tag and length in a frame
CLOSE_GRACE_S = 2.0
"""How long a closing link waits for the server to take its last frames and its goodbye."""
_TRANSPORT_ERRORS = (GRPCError, OSError, StreamTerminatedError, ProtocolError, asyncio.TimeoutError)


class _Disconnected(Exception):
    """The connection ended; the message says why."""


class BridgeLink:
    """This kernel's link to a bridge server (made by :func:`connect`; see the module)."""

    def __init__(
        self,
        kernel: Kernel,
        address: str,
        *,
        name: str,
        token: str,
        tls: ssl.SSLContext | None,
        export: Sequence[str],
        buffer: int,
        heartbeat_s: float,
        backoff_s: float,
        max_backoff_s: float,
        max_message_bytes: int,
    ) -> None:
        self.kernel = kernel
        self.address = address
        """``host:port`` of the server."""
        self.name = name
        """The link's agent id on the server (also its origin)."""
        self.last_error = ""
        """Why the last connection attempt failed or ended ("" while none has)."""
        self._host, self._port = _host_port(address)
        self._metadata = {"authorization": f"Bearer {token}"} if token else {}
        self._tls = tls
        self._heartbeat_s = heartbeat_s
        self._backoff_s = backoff_s
        self._max_backoff_s = max_backoff_s
        self._max_message_bytes = max_message_bytes
        self._link = BusLink(kernel.bus, kernel.broker, name, export=export, buffer=buffer)
        self._stub: BridgeStub | None = None
        self._changes = trio.Event()
        self._last_frame = 0.0
        self._outbox: Outbox | None = None  # the open stream's
        self._closing = False
        self._pumping = False
        self._stopped = trio.Event()
        self._instance = uuid.uuid4().hex  # tells this link from another of the same name
        self._registered: Any = None  # the last registration the server took
        self._in_frames: dict[int, list[tuple[str, Event]]] = {}  # frame -> its events
        self._calls = trio.Semaphore(_CALLS_AT_ONCE)

    # ---- what users see -----------------------------------------------------------------

    @property
    def connected(self) -> bool:
        """Whether the link is connected and registered now."""
        return self._stub is not None

    async def wait_connected(self) -> None:
        """Wait until the link is connected and registered (at once if it is)."""
        await trio.lowlevel.checkpoint()
        while not self.connected:
            await self.wait_changed()

    async def wait_changed(self) -> None:
        """Wait until the link connects, disconnects or fails to connect, or a registration
        is refused (``last_error`` says why)."""
        await self._changes.wait()

    def _changed(self) -> None:
        self._changes.set()
        self._changes = trio.Event()

    def stats(self) -> LinkStats:
        """The link's counters (events sent, received, buffered, dropped; connections)."""
        return self._link.stats()

    # ---- calls made here for capabilities elsewhere (the broker's upstream) --------------

    async def invoke(self, call: ActionCall) -> ActionResult:
        """Run ``call`` on the server (``ForwardAction``); the broker's timeout bounds it."""
        stub = self._stub
        if stub is None:
            return ActionResult.failure(
                call.id,
                ErrorCode.PROVIDER_UNAVAILABLE,
                f"no local provider for {call.capability}, and the bridge link to "
                f"{self.address} is not connected ({self.last_error or 'connecting'})",
            )
        message = call_to_proto(call)
        message.headers["x-agent-id"] = self.name  # the caller, as the server's ACL sees it
        try:
            reply = await trio_asyncio.aio_as_trio(stub.ForwardAction)(
                message, metadata=self._metadata
            )
        except _TRANSPORT_ERRORS as error:
            return ActionResult.failure(
                call.id,
                ErrorCode.PROVIDER_UNAVAILABLE,
                f"{call.capability}: the bridge at {self.address} failed: {_describe(error)}",
            )
        return result_from_proto(reply)

    # ---- the connection loop ------------------------------------------------------------

    @asynccontextmanager
    async def running(self) -> AsyncIterator[None]:
        """Run the link while the block lasts (inside a trio-asyncio loop)."""
        broker = self.kernel.broker
        self._link.open()
        broker.set_upstream(self)
        unwatch = self.kernel.directory.watch(self._link.notify)  # agents listed there
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self.run)
                try:
                    yield
                finally:
                    with trio.CancelScope(shield=True) as closing:
                        closing.deadline = trio.current_time() + CLOSE_GRACE_S
                        await self._close()
                    nursery.cancel_scope.cancel()
        finally:
            unwatch()
            if broker.upstream is self:
                broker.set_upstream(None)
            self._link.close()

    async def _close(self) -> None:
        """End the stream the way a client that leaves does: what is pending goes out (the
        pump closes the stream once it has sent everything), then the end of the stream,
        which tells the server this link is gone (not just lost). Bounded by the caller."""
        self._closing = True
        outbox = self._outbox
        if outbox is not None:
            if not self._pumping or not self._link.pending():
                outbox.close()
            await self._stopped.wait()

    async def run(self) -> None:
        """Connect, serve, and reconnect with backoff until cancelled or closed."""
        try:
            await self._run()
        finally:
            self._stopped.set()

    async def _run(self) -> None:
        delay = self._backoff_s
        async with trio.open_nursery() as nursery:
            holding, held = self._start_holding(nursery)
            while True:
                started = trio.current_time()
                reason, refused = "", False
                try:
                    await self._session(holding, held)
                except (_Disconnected, LinkError, *_TRANSPORT_ERRORS) as error:
                    reason = _describe(error)
                    refused = _is_refusal(error)
                finally:
                    self._disconnected()
                if self._closing:
                    nursery.cancel_scope.cancel()
                    return
                if holding.cancel_called:  # it was up: keep what is published from now on
                    holding, held = self._start_holding(nursery)
                self.last_error = reason
                self._changed()
                if trio.current_time() - started > self._max_backoff_s:
                    delay = self._backoff_s  # it was up for a while: start over quickly
                log = _log.error if refused else _log.warning
                log("bridge link down", link=self.name, address=self.address, reason=reason)
                await trio.sleep(delay * random.uniform(0.5, 1.0))
                delay = min(delay * 2, self._max_backoff_s)

    def _start_holding(self, nursery: trio.Nursery) -> tuple[trio.CancelScope, trio.Event]:
        """Keep what is published in the backlog until :meth:`_session` cancels it."""
        holding, held = trio.CancelScope(), trio.Event()
        nursery.start_soon(self._hold, holding, held)
        return holding, held

    async def _hold(self, scope: trio.CancelScope, held: trio.Event) -> None:
        try:
            with scope:
                await self._link.hold()
        finally:
            held.set()

    async def _session(self, holding: trio.CancelScope, held: trio.Event) -> None:
        channel = await trio_asyncio.aio_as_trio(self._open_channel)()
        try:
            stub = BridgeStub(channel)
            await self._register(stub, self._registration())
            outbox = Outbox(_FRAMES_QUEUED)
            holding.cancel()
            await held.wait()  # the backlog is complete: it goes out first, in order
            self._last_frame = trio.current_time()
            try:
                with _first_transport_error():
                    await self._serve(stub, outbox)
            finally:  # frames the writer never took go first next time, oldest first
                self._requeue_unsent(outbox)
        finally:
            channel.close()

    def _requeue_unsent(self, outbox: Outbox) -> None:
        unsent = [
            event
            for frames in outbox.unsent()
            for frame in frames
            for event in self._in_frames.pop(id(frame), ())
        ]
        self._in_frames.clear()  # what is left was taken by the writer: in flight, gone
        if unsent:
            self._link.requeue(unsent)

    async def _serve(self, stub: BridgeStub, outbox: Outbox) -> None:
        self._outbox = outbox
        send, receive = trio.open_memory_channel[Any](_FRAMES_IN)
        drained = trio.Event()
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._pump_in, receive, outbox, nursery, stub, drained)
            nursery.start_soon(self._keep_alive, outbox)
            nursery.start_soon(self._follow, stub)
            try:
                ended = await trio_asyncio.aio_as_trio(_stream_io)(
                    stub, self._metadata, self.name, outbox, send, self._saw_frame
                )
            finally:
                outbox.close()
                self._outbox = None
            with trio.move_on_after(CLOSE_GRACE_S):  # what arrived is published here first
                await drained.wait()
            raise _Disconnected(ended)

    def _saw_frame(self) -> None:
        """A frame arrived (asyncio side, as it arrives: a busy kernel is no silent server)."""
        self._last_frame = trio.current_time()

    async def _open_channel(self) -> Channel:
        return Channel(
            self._host,
            self._port,
            ssl=self._tls,
            codec=LimitedProtoCodec(self._max_message_bytes),
        )

    def _registration(self) -> Any:
        return bridge_pb2.AgentRegisterRequest(
            agent_id=self.name,
            subscribed_topics=self._link.interest(),
            capabilities=[descriptor_to_proto(d) for d in self._link.capabilities()],
            metadata={
                BATCH_KEY: "1",
                ORIGIN_KEY: self.name,
                LINK_KEY: "bridge",
                INSTANCE_KEY: self._instance,
                AGENTS_KEY: encode_agents(self.kernel.directory.all()),
            },
        )

    async def _register(self, stub: BridgeStub, request: Any) -> None:
        reply = await trio_asyncio.aio_as_trio(stub.RegisterAgent)(
            request, timeout=_REGISTER_TIMEOUT_S, metadata=self._metadata
        )
        if not reply.success:
            raise LinkError(
                f"the bridge at {self.address} refused link {self.name!r}: {reply.error_message}"
            )
        self._registered = request

    def _connected_to(self, stub: BridgeStub) -> None:
        self._stub = stub
        self._link.up()
        self.last_error = ""
        self._changed()
        _log.info("bridge link up", link=self.name, address=self.address)

    def _disconnected(self) -> None:
        if self._stub is not None:
            self._stub = None
            self._link.down()
            self._changed()

    # ---- while connected ----------------------------------------------------------------

    async def _pump_out(self, outbox: Outbox) -> None:
        """Local events out in ``publish_batch`` frames, each under the frame limit; when
        closing, the stream ends once everything pending is sent."""
        link = self._link
        self._pumping = True
        try:
            while True:
                if self._closing and not link.pending():
                    outbox.close()
                    return
                batch = await link.outgoing()
                frames = self._frames_of(batch)
                try:
                    queued = await outbox.put(frames) if frames else True
                except BaseException:
                    self._forget_frames(frames)
                    link.requeue(batch)
                    raise
                if not queued:  # the stream closed under it: these go first next time
                    self._forget_frames(frames)
                    link.requeue(batch)
                    return
        finally:
            self._pumping = False

    def _frames_of(self, batch: list[tuple[str, Event]]) -> list[Any]:
        """``batch`` as frames of at most the frame limit (an event that cannot fit in one
        is refused, counted); each frame remembers its events, to send them again."""
        origin, limit = self.name, self._max_message_bytes - _FRAME_OVERHEAD
        frames: list[Any] = []
        publishes: list[Any] = []
        events: list[tuple[str, Event]] = []
        size = 0
        for topic, event in batch:
            message = event_to_proto(event)
            message.metadata[ORIGIN_KEY] = origin
            publish = bridge_pb2.Publish(topic=topic, event=message)
            item = publish.ByteSize() + _ITEM_OVERHEAD
            if item > limit:
                self._link.refuse(topic, f"{item} bytes: over the bridge's frame limit")
                continue
            if size + item > limit:
                frames.append(self._frame(publishes, events))
                publishes, events, size = [], [], 0
            publishes.append(publish)
            events.append((topic, event))
            size += item
        if publishes:
            frames.append(self._frame(publishes, events))
        return frames

    def _frame(self, publishes: list[Any], events: list[tuple[str, Event]]) -> Any:
        frame = bridge_pb2.ClientEvent(publish_batch=bridge_pb2.PublishBatch(publishes=publishes))
        self._in_frames[id(frame)] = events
        return frame

    def _forget_frames(self, frames: list[Any]) -> None:
        for frame in frames:
            self._in_frames.pop(id(frame), None)

    async def _pump_in(
        self,
        receive: trio.MemoryReceiveChannel[Any],
        outbox: Outbox,
        nursery: trio.Nursery,
        stub: BridgeStub,
        drained: trio.Event,
    ) -> None:
        """Server frames in, until the stream ends; then ``drained`` is set."""
        link = self._link
        try:
            async for frame in receive:
                kind = frame.WhichOneof("msg")
                if kind == "delivery_batch":
                    await link.incoming(self._decoded(frame.delivery_batch.deliveries))
                elif kind == "delivery":
                    await link.incoming(self._decoded([frame.delivery]))
                elif kind == "pong":
                    if not self.connected:  # the first: the server has opened the stream
                        self._connected_to(stub)
                        nursery.start_soon(self._pump_out, outbox)
                elif kind == "action_call":
                    await self._calls.acquire()  # bounded: a flood of calls waits its turn
                    nursery.start_soon(self._serve_call, frame.action_call, outbox)
                elif kind == "err":
                    _log.warning(
                        "bridge server refused a frame",
                        link=self.name,
                        code=frame.err.code,
                        reason=frame.err.message,
                    )
        finally:
            drained.set()

    def _decoded(self, deliveries: Any) -> list[tuple[str, Event]]:
        events = []
        for delivery in deliveries:
            try:
                events.append((delivery.topic, event_from_proto(delivery.event)))
            except EventError as error:
                self._link.refuse(delivery.topic, str(error))
        return events

    async def _serve_call(self, message: Any, outbox: Outbox) -> None:
        try:
            result = await self._run_call(message)
        finally:
            self._calls.release()
        frame = bridge_pb2.ClientEvent(action_result=result_to_proto(result))
        outbox.put_nowait([frame])

    async def _run_call(self, message: Any) -> ActionResult:
        try:
            call = call_from_proto(message)
        except ActionCallError as error:
            return ActionResult.failure(message.id, ErrorCode.INVALID_PARAMS, str(error))
        broker = self.kernel.broker
        if broker.resolve(call.capability, call.version) is None:
            # gone since the last registration; the upstream would send it back: refuse
            return ActionResult.failure(
                call.id,
                ErrorCode.PROVIDER_UNAVAILABLE,
                f"{call.capability} is no longer offered by link {self.name!r}",
            )
        return await broker.invoke(call)

    async def _keep_alive(self, outbox: Outbox) -> None:
        """Ping every ``heartbeat_s``; a server silent for two periods is gone."""
        while True:
            await trio.sleep(self._heartbeat_s)
            silent = trio.current_time() - self._last_frame
            if silent > 2 * self._heartbeat_s:
                raise _Disconnected(f"the server answered nothing for {silent:.1f} s")
            ping = bridge_pb2.HeartbeatRequest(timestamp_ms=now_ms())
            outbox.put_nowait([bridge_pb2.ClientEvent(ping=ping)])  # never behind the events

    async def _follow(self, stub: BridgeStub) -> None:
        """Register again when local subscriptions or capabilities change."""
        while True:
            await self._link.wait_changed()
            request = self._registration()
            if request == self._registered:
                continue
            try:
                await self._register(stub, request)
            except (LinkError, GRPCError) as error:  # keep the last registration it took
                if not _is_refusal(error):
                    raise
                self.last_error = _describe(error)
                self._changed()
                _log.error(
                    "bridge link registration refused", link=self.name, reason=self.last_error
                )


async def _stream_io(
    stub: BridgeStub,
    metadata: dict[str, str],
    name: str,
    outbox: Outbox,
    send: trio.MemorySendChannel[Any],
    saw_frame: Callable[[], None],
) -> str:
    """The EventStream on the asyncio side: the Ack, then frames out of ``outbox`` and
    server frames into ``send``, until the server ends it; why it ended."""
    async with stub.EventStream.open(metadata=metadata) as stream:
        await stream.send_message(bridge_pb2.ClientEvent(ack=bridge_pb2.Ack(message_id=name)))
        # its pong says the server has opened the stream: the link is up from then on
        await stream.send_message(bridge_pb2.ClientEvent(ping=bridge_pb2.HeartbeatRequest()))
        ended: list[bool] = []
        writer = asyncio.ensure_future(_write(stream, outbox, ended))
        last_error = ""
        try:
            async for frame in stream:
                saw_frame()
                if frame.WhichOneof("msg") == "err":
                    last_error = f"{frame.err.code}: {frame.err.message}"
                try:
                    send.send_nowait(frame)
                except trio.WouldBlock:
                    await trio_asyncio.trio_as_aio(send.send)(frame)
        finally:
            writer.cancel()
            await asyncio.gather(writer, return_exceptions=True)
            send.close()
        if not ended:
            await stream.end()
    return last_error or "the server ended the stream"


async def _write(stream: Any, outbox: Outbox, ended: list[bool]) -> None:
    """Frames out of ``outbox``; once it is closed, the end of the client's side."""
    async for frames in outbox.frames():
        for frame in frames:
            await stream.send_message(frame)
    ended.append(True)
    await stream.end()


@contextmanager
def _first_transport_error() -> Iterator[None]:
    """The connection's tasks end together: of a group of errors, raise the transport error
    (or disconnection) that ended the connection; anything else is a bug, raised as it is."""
    try:
        yield
    except BaseExceptionGroup as group:
        _, rest = group.split((_Disconnected, LinkError, *_TRANSPORT_ERRORS))
        if rest is not None:
            raise
        first: BaseException = group
        while isinstance(first, BaseExceptionGroup):
            first = first.exceptions[0]
        raise first from None


def _is_refusal(error: BaseException) -> bool:
    """Whether the server refused the link (fix the setup) rather than failed to reach it."""
    if isinstance(error, LinkError):
        return True
    return isinstance(error, GRPCError) and error.status in (
        Status.PERMISSION_DENIED,
        Status.UNAUTHENTICATED,
        Status.INVALID_ARGUMENT,
    )


def _describe(error: BaseException) -> str:
    if isinstance(error, GRPCError):
        return f"{error.status.name}: {error.message}"
    return str(error) or type(error).__name__


def _host_port(address: str) -> tuple[str, int]:
    """``(host, port)`` of the server's ``HOST:PORT`` (:func:`parse_address`), which must
    name a host (an empty one means every interface: somewhere to listen, not to connect)."""
    host, port = parse_address(address)
    if not host:
        raise BridgeError(f"a bridge link needs HOST:PORT of the server, got {address!r}")
    return host, port


def default_name() -> str:
    """``link-<host>-<pid>``, made a valid agent id."""
    host = re.sub(r"[^A-Za-z0-9_-]+", "-", socket.gethostname()).strip("-") or "host"
    return f"link-{host}-{os.getpid()}"


def _tls_context(tls: ssl.SSLContext | bool | str | None) -> ssl.SSLContext | None:
    """The client's TLS context: none, the system's CAs, a CA bundle, or the caller's own
    context (on which HTTP/2's ALPN is set, as gRPC needs)."""
    if tls is None or tls is False or tls == "":
        return None
    if isinstance(tls, ssl.SSLContext):
        context = tls
    else:
        try:
            context = ssl.create_default_context(cafile=None if tls is True else str(tls))
        except (OSError, ssl.SSLError) as error:
            raise LinkError(f"bridge link tls: cannot use CA bundle {tls!r}: {error}") from error
    context.set_alpn_protocols(["h2"])
    return context


@asynccontextmanager
async def connect(
    kernel: Kernel,
    address: str,
    *,
    name: str | None = None,
    token: str | None = None,
    tls: ssl.SSLContext | bool | str | None = None,
    export: Sequence[str] = (">",),
    buffer: int = 10_000,
    heartbeat_s: float = 15.0,
    backoff_s: float = 0.1,
    max_backoff_s: float = 10.0,
    max_message_bytes: int | None = None,
) -> AsyncIterator[BridgeLink]:
    """Link ``kernel`` to the bridge server at ``address`` while the block lasts (see the
    module). It does not wait for the first connection: ``await link.wait_connected()``.

    ``token`` is the server's bearer token (none by default: this kernel's own
    ``bridge_token`` guards its own server and is not sent elsewhere);
    ``tls`` is ``True`` (system CAs), a CA bundle path, or an ``ssl.SSLContext`` (with a
    client certificate for mutual TLS); ``export`` are the local topics sent to the server;
    ``buffer`` bounds what is kept while disconnected. Raises :class:`BridgeError` or
    :class:`~loomk.LinkError` at once for a bad address or setting.
    """
    name = default_name() if name is None else name
    validate_agent_id(name)
    for setting, value in (("heartbeat_s", heartbeat_s), ("backoff_s", backoff_s)):
        if not isinstance(value, int | float) or not value > 0:
            raise LinkError(f"{setting} must be a number > 0, got {value!r}")
    if not isinstance(max_backoff_s, int | float) or max_backoff_s < backoff_s:
        raise LinkError(f"max_backoff_s must be >= backoff_s, got {max_backoff_s!r}")
    config = kernel.config
    link = BridgeLink(
        kernel,
        address,
        name=name,
        token=token or "",
        tls=_tls_context(tls),
        export=export,
        buffer=buffer,
        heartbeat_s=heartbeat_s,
        backoff_s=backoff_s,
        max_backoff_s=max_backoff_s,
        max_message_bytes=(
            config.bridge_max_message_bytes if max_message_bytes is None else max_message_bytes
        ),
    )
    async with trio_asyncio.open_loop(), link.running():
        remove = kernel.metrics.register(
            f"bridge_link:{name}", lambda: link_families(link.stats(), name)
        )
        try:
            yield link
        finally:
            remove()
