"""The ``loom.v1.Bridge`` service: grpclib handlers, run on trio-asyncio's asyncio loop.

Each handler stays on the asyncio side and crosses to trio at most once per call (or once
per stream, for the stream's whole life): registrations and heartbeats are synchronous
updates of the bridge's state; ``ForwardAction`` crosses to await the broker; an
``EventStream`` runs its session as one trio task while two asyncio tasks move frames in
(a trio memory channel, ``send_nowait``) and out (an :class:`Outbox`).

Access: a call that cannot claim the agent id it names ends with ``UNAUTHENTICATED``; a
registration asking for topics or capabilities outside the agent's ``bridge_acl`` rules with
``PERMISSION_DENIED`` (a gRPC status: Loom answers a malformed registration with
``success=false``, but a refusal is not a malformed request, and the issue asks for the
status); a forwarded call the rules do not allow gets an ``ActionResult`` with code
``PERMISSION_DENIED`` (what a Loom client reads for any failed call).
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

import trio
import trio_asyncio
from grpclib.const import Status
from grpclib.exceptions import GRPCError

from loomk import InvalidAgentId
from loomk.agents import validate_agent_id
from loomk.telemetry.logging import get_logger
from loomk_bridge._acl import CALLER_HEADER, AccessDenied
from loomk_bridge._core import BridgeCore
from loomk_bridge._outbox import Outbox
from loomk_bridge._proto import bridge_grpc, bridge_pb2
from loomk_bridge._session import StreamSession

__all__ = ["BridgeService", "authorization_of", "peer_of"]

_log = get_logger("loomk.bridge")

INBOUND_CAPACITY = 32
"""Client frames buffered per stream before the reader waits, and HTTP/2 flow control makes
the client wait with it (small: frames may be megabytes each)."""

FLUSH_TIMEOUT_S = 5.0
"""How long a stream the server ended may take to send what is queued to its client."""

_UNAVAILABLE_AFTER = {"HEARTBEAT_TIMEOUT", "SHUTDOWN", "SLOW_CONSUMER"}
"""Ends after which a client should reconnect: the stream ends with ``UNAVAILABLE`` (Loom's
SDK reconnects on an error, and stops on a normal end, which ``REPLACED`` keeps)."""

_METHOD = "/loom.v1.Bridge/"
"""Prefix of the full method names (the audit log's targets, as grpclib names them)."""

_NO_ACK = "first stream message must be Ack carrying agent_id"


def authorization_of(stream: Any) -> str | None:
    """The ``authorization`` metadata of a call, if it has one."""
    metadata = getattr(stream, "metadata", None)
    value = metadata.get("authorization") if metadata is not None else None
    return value if isinstance(value, str) else None


def peer_of(stream: Any) -> str:
    """``host:port`` of the client's connection (one per client channel)."""
    address = stream.peer.addr() if stream.peer is not None else None
    if not address:
        return "unknown"
    host, port = address[0], address[1]
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


class BridgeService(bridge_grpc.BridgeBase):
    """Loom's Bridge RPCs over the kernel (see the module)."""

    def __init__(self, core: BridgeCore, *, stream_queue: int) -> None:
        self._core = core
        self._stream_queue = stream_queue
        self._streams: set[asyncio.Future[Any]] = set()

    async def wait_streams_ended(self, timeout_s: float) -> None:
        """Wait (asyncio side) until every stream's handler has returned, so each sent its
        end to its client before the server closes the connections; at most ``timeout_s``."""
        if self._streams:
            await asyncio.wait(set(self._streams), timeout=timeout_s)

    async def RegisterAgent(self, stream: Any) -> None:
        request = await stream.recv_message()
        if request is None:
            raise GRPCError(Status.INVALID_ARGUMENT, "RegisterAgent needs a request")
        try:
            problem = self._core.register(request, peer_of(stream), authorization_of(stream))
        except AccessDenied as denied:
            raise GRPCError(denied.status, denied.message) from None
        await stream.send_message(
            bridge_pb2.AgentRegisterResponse(success=not problem, error_message=problem)
        )

    async def Heartbeat(self, stream: Any) -> None:
        request = await stream.recv_message()
        if request is None:
            raise GRPCError(Status.INVALID_ARGUMENT, "Heartbeat needs a request")
        self._core.heartbeat(peer_of(stream))
        await stream.send_message(
            bridge_pb2.HeartbeatResponse(timestamp_ms=request.timestamp_ms, status="ok")
        )

    async def ForwardAction(self, stream: Any) -> None:
        call = await stream.recv_message()
        if call is None:
            raise GRPCError(Status.INVALID_ARGUMENT, "ForwardAction needs an ActionCall")
        peer = peer_of(stream)
        claimed = call.headers.get(CALLER_HEADER) or None
        if claimed is not None:
            try:
                validate_agent_id(claimed)
            except InvalidAgentId:
                raise GRPCError(
                    Status.INVALID_ARGUMENT,
                    f"header {CALLER_HEADER} must be an agent id, got {claimed[:80]!r}",
                ) from None
        try:
            caller = self._core.access.identify(
                claimed,
                authorization_of(stream),
                peer=peer,
                method=_METHOD + "ForwardAction",
            )
        except AccessDenied as denied:
            raise GRPCError(denied.status, denied.message) from None
        if caller is not None and claimed is None:  # known by its token: the provider sees it
            call.headers[CALLER_HEADER] = caller
        result = await trio_asyncio.trio_as_aio(self._core.forward)(call, caller, peer)
        await stream.send_message(result)

    async def EventStream(self, stream: Any) -> None:
        handler = asyncio.current_task()
        assert handler is not None
        self._streams.add(handler)
        try:
            await self._event_stream(stream)
        finally:
            self._streams.discard(handler)

    async def _event_stream(self, stream: Any) -> None:
        timeout_s = self._core.heartbeat_timeout_s
        try:
            first = await asyncio.wait_for(stream.recv_message(), timeout_s)
        except TimeoutError:
            raise GRPCError(
                Status.INVALID_ARGUMENT, f"no first message within {timeout_s:g} s: {_NO_ACK}"
            ) from None
        if first is None:
            raise GRPCError(Status.INVALID_ARGUMENT, "no first message")
        if first.WhichOneof("msg") != "ack" or not first.ack.message_id:
            raise GRPCError(Status.INVALID_ARGUMENT, _NO_ACK)
        agent_id = first.ack.message_id
        try:
            validate_agent_id(agent_id)
        except InvalidAgentId as error:
            raise GRPCError(Status.INVALID_ARGUMENT, str(error)) from None
        peer = peer_of(stream)
        try:
            self._core.access.identify(
                agent_id, authorization_of(stream), peer=peer, method=_METHOD + "EventStream"
            )
        except AccessDenied as denied:
            raise GRPCError(denied.status, denied.message) from None
        outbox = Outbox(self._stream_queue)
        session = self._core.open_session(agent_id, outbox, peer)
        send, receive = trio.open_memory_channel[Any](INBOUND_CAPACITY)
        broken: list[GRPCError] = []
        writer = asyncio.ensure_future(_write(stream, outbox))
        reader = asyncio.ensure_future(_read(stream, send, session, broken))
        try:
            await trio_asyncio.trio_as_aio(session.run)(receive)
            self._core.session_ended(session)  # calls to the agent now fail at once
            with contextlib.suppress(Exception):  # what is queued (the err frame too) goes out
                await asyncio.wait_for(writer, FLUSH_TIMEOUT_S)
        finally:
            reader.cancel()
            writer.cancel()
            self._core.session_ended(session)
        if broken:
            raise broken[0]
        if session.end_code in _UNAVAILABLE_AFTER:
            raise GRPCError(Status.UNAVAILABLE, f"{session.end_code}: the server ended the stream")


async def _read(
    stream: Any,
    send: trio.MemorySendChannel[Any],
    session: StreamSession,
    broken: list[GRPCError],
) -> None:
    """Client frames into the session's channel; an undecodable or oversized frame ends the
    stream with its status (grpclib cannot read past it)."""
    try:
        async for frame in stream:
            try:
                send.send_nowait(frame)
            except trio.WouldBlock:
                await trio_asyncio.trio_as_aio(send.send)(frame)
    except GRPCError as error:
        _log.info(
            "bridge stream broken by its client",
            agent=session.agent_id,
            status=error.status.name,
            reason=error.message,
        )
        broken.append(error)
        session.end("INVALID_FRAME", str(error.message))
    except trio.BrokenResourceError:
        pass  # the session ended first
    finally:
        send.close()


async def _write(stream: Any, outbox: Outbox) -> None:
    async for frames in outbox.frames():
        for frame in frames:
            await stream.send_message(frame)
