"""A tiny Loom-like Bridge server (grpc.aio) that proves the harness speaks Loom's protocol.

    PYTHONPATH=tests/integration python -m loom_client.reference_server [PORT]

Binds 127.0.0.1:PORT (0 = a free port) and prints ``{"step": "listening", "port": N,
"address": "127.0.0.1:N"}`` first, then one JSON line per thing it does. It follows Loom's
bridge (LOOM-REFERENCE section 11): RegisterAgent refuses an empty id with
``success=false``; EventStream requires an Ack first (else INVALID_ARGUMENT), subscribes
the topics registered at that moment, delivers every publish to the subscribed streams
(the sender's own included), answers ``ping`` with ``pong`` (server time, "ok") and stores
``action_result``\\s; ForwardAction serves ``test.echo`` (version ``""`` or ``1.0``) and
answers anything else with ACTION_ERROR / BROKER_ERROR; Heartbeat echoes the timestamp.

Unlike Loom, and as loomk's kernel is expected to, ForwardAction of a capability that a
connected agent registered is pushed to that agent as an ``action_call`` and its
``action_result`` returned (ACTION_TIMEOUT after the call's ``timeout_ms``, default 5 s).
Loom's ``push_action_call`` is a stdin command: ``push AGENT CALL_ID CAPABILITY [JSON]``;
``publish TOPIC TYPE PAYLOAD`` puts an event on the bus; ``quit`` or the end of stdin stops
the server (so it never outlives its parent; keep stdin open when running it by hand).
Queues are unbounded: this is a test double, not a model of Loom's backpressure.
"""

from __future__ import annotations

import asyncio
import sys
import threading
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

import grpc

from .scenarios import emit_line, result_fields, text
from .sdk import load_protos

pb = load_protos()
bridge_pb2, action_pb2, event_pb2 = pb.bridge_pb2, pb.action_pb2, pb.event_pb2
HANDSHAKE_ERROR = "first stream message must be Ack carrying agent_id"


BridgeServicer: Any = pb.bridge_pb2_grpc.BridgeServicer


class ReferenceBridge(BridgeServicer):  # type: ignore[misc]
    """Loom's BridgeService state and RPCs, in one asyncio process."""

    def __init__(self) -> None:
        self.registrations: dict[str, Any] = {}  # agent id -> AgentRegisterRequest
        self.streams: dict[str, asyncio.Queue[Any]] = {}
        self.subscribers: dict[str, set[asyncio.Queue[Any]]] = {}
        self.results: dict[str, Any] = {}
        self.waiters: dict[str, asyncio.Future[Any]] = {}

    async def RegisterAgent(self, request: Any, context: Any) -> Any:
        if not request.agent_id:
            return bridge_pb2.AgentRegisterResponse(
                success=False, error_message="agent_id cannot be empty"
            )
        self.registrations[request.agent_id] = request
        emit_line(
            {
                "step": "registered",
                "agent_id": request.agent_id,
                "topics": list(request.subscribed_topics),
                "capabilities": [f"{c.name}:{c.version}" for c in request.capabilities],
                "metadata": dict(request.metadata),
            }
        )
        return bridge_pb2.AgentRegisterResponse(success=True)

    async def Heartbeat(self, request: Any, context: Any) -> Any:
        return bridge_pb2.HeartbeatResponse(timestamp_ms=request.timestamp_ms, status="ok")

    async def ForwardAction(self, call: Any, context: Any) -> Any:
        if call.capability == "test.echo" and call.version in ("", "1.0"):
            return action_pb2.ActionResult(
                id=call.id, status=action_pb2.ACTION_OK, output=call.payload
            )
        provider = self.provider_of(call.capability, call.version)
        if provider is None:
            return action_pb2.ActionResult(
                id=call.id,
                status=action_pb2.ACTION_ERROR,
                error=action_pb2.ActionError(
                    code="BROKER_ERROR", message=f"Capability not found: {call.capability}"
                ),
            )
        timeout = (call.timeout_ms or 5000) / 1000
        future = self.waiters[call.id] = asyncio.get_running_loop().create_future()
        self.push(provider, call)
        try:
            return await asyncio.wait_for(future, timeout)
        except TimeoutError:
            return action_pb2.ActionResult(
                id=call.id,
                status=action_pb2.ACTION_TIMEOUT,
                error=action_pb2.ActionError(code="TIMEOUT", message=f"after {timeout}s"),
            )
        finally:
            self.waiters.pop(call.id, None)

    def provider_of(self, name: str, version: str) -> str | None:
        """A connected agent that registered capability ``name`` (any version if empty)."""
        for agent_id, registration in self.registrations.items():
            for cap in registration.capabilities:
                if cap.name == name and version in ("", cap.version) and agent_id in self.streams:
                    return agent_id
        return None

    def push(self, agent_id: str, call: Any) -> None:
        """Send ``action_call`` on the agent's stream (Loom's ``push_action_call``)."""
        self.streams[agent_id].put_nowait(bridge_pb2.ServerEvent(action_call=call))
        emit_line({"step": "pushed", "agent_id": agent_id, "id": call.id, "sent": True})

    def publish(self, topic: str, event: Any) -> None:
        """Deliver to every stream subscribed to ``topic`` (exact match)."""
        delivery = bridge_pb2.ServerEvent(delivery=bridge_pb2.Delivery(topic=topic, event=event))
        for queue in self.subscribers.get(topic, ()):
            queue.put_nowait(delivery)

    async def EventStream(self, request_iterator: Any, context: Any) -> AsyncIterator[Any]:
        frames = request_iterator.__aiter__()
        try:
            first = await frames.__anext__()
        except StopAsyncIteration:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "no first message")
        if first.WhichOneof("msg") != "ack":
            emit_line({"step": "rejected", "first": first.WhichOneof("msg")})
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, HANDSHAKE_ERROR)
        agent_id = first.ack.message_id
        queue: asyncio.Queue[Any] = asyncio.Queue()
        self.streams[agent_id] = queue
        registration = self.registrations.get(agent_id)
        topics = list(registration.subscribed_topics) if registration else []
        for topic in topics:
            self.subscribers.setdefault(topic, set()).add(queue)
        emit_line({"step": "stream_open", "agent_id": agent_id, "topics": topics})
        inbound = asyncio.create_task(self.inbound(agent_id, frames, queue))
        try:
            while (frame := await queue.get()) is not None:
                yield frame
        finally:
            inbound.cancel()
            for subscribed in self.subscribers.values():
                subscribed.discard(queue)
            if self.streams.get(agent_id) is queue:
                del self.streams[agent_id]
            emit_line({"step": "stream_closed", "agent_id": agent_id})

    async def inbound(self, agent_id: str, frames: Any, queue: asyncio.Queue[Any]) -> None:
        """The stream's client frames, in order; ends the outbound side when they end."""
        try:
            async for frame in frames:
                which = frame.WhichOneof("msg")
                if which == "publish" and frame.publish.HasField("event"):
                    self.publish(frame.publish.topic, frame.publish.event)
                elif which == "ping":
                    pong = bridge_pb2.HeartbeatResponse(
                        timestamp_ms=int(time.time() * 1000), status="ok"
                    )
                    queue.put_nowait(bridge_pb2.ServerEvent(pong=pong))
                elif which == "action_result":
                    result = frame.action_result
                    self.results[result.id] = result
                    emit_line(
                        {"step": "action_result", "agent_id": agent_id, **result_fields(pb, result)}
                    )
                    waiter = self.waiters.get(result.id)
                    if waiter is not None and not waiter.done():
                        waiter.set_result(result)
        except Exception as exc:
            emit_line({"step": "inbound_error", "agent_id": agent_id, "error": repr(exc)})
        finally:
            queue.put_nowait(None)

    def command(self, line: str) -> bool:
        """One stdin command; False to stop the server."""
        words = line.split(maxsplit=4)
        if words[:1] == ["quit"]:
            return False
        if words[:1] == ["push"] and len(words) >= 4:
            agent_id, call_id, capability = words[1:4]
            payload = words[4].encode() if len(words) > 4 else b""
            if agent_id not in self.streams:
                emit_line({"step": "pushed", "agent_id": agent_id, "id": call_id, "sent": False})
                return True
            self.push(
                agent_id,
                action_pb2.ActionCall(
                    id=call_id, capability=capability, payload=payload, correlation_id=call_id
                ),
            )
        elif words[:1] == ["publish"] and len(words) >= 3:
            payload = words[3].encode() if len(words) > 3 else b""
            event = event_pb2.Event(
                id=str(uuid.uuid4()),
                type=words[2],
                timestamp_ms=int(time.time() * 1000),
                source="reference_server",
                payload=payload,
            )
            self.publish(words[1], event)
            emit_line(
                {"step": "published", "topic": words[1], "type": words[2], "payload": text(payload)}
            )
        else:
            emit_line({"step": "unknown_command", "line": line})
        return True


async def serve(port: int) -> None:
    """Serve until ``quit`` on stdin or the process is ended."""
    bridge = ReferenceBridge()
    server = grpc.aio.server()
    pb.bridge_pb2_grpc.add_BridgeServicer_to_server(bridge, server)
    bound = server.add_insecure_port(f"127.0.0.1:{port}")
    await server.start()
    emit_line({"step": "listening", "port": bound, "address": f"127.0.0.1:{bound}"})
    lines: asyncio.Queue[str | None] = asyncio.Queue()
    loop = asyncio.get_running_loop()

    def read_stdin() -> None:
        for line in sys.stdin:
            loop.call_soon_threadsafe(lines.put_nowait, line.strip())
        loop.call_soon_threadsafe(lines.put_nowait, None)  # parent gone: do not outlive it

    threading.Thread(target=read_stdin, daemon=True).start()
    try:
        while (line := await lines.get()) is not None:
            if line and not bridge.command(line):
                break
    finally:
        await server.stop(grace=None)


def main() -> int:
    """``[PORT]``: serve on 127.0.0.1."""
    port = int(sys.argv[1]) if len(sys.argv) > 1 else 0
    asyncio.run(serve(port))
    return 0


if __name__ == "__main__":
    sys.exit(main())
