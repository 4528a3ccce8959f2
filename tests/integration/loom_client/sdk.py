"""A stand-in for Loom's Python SDK (``loom-py``): what its client puts on the wire.

loomk's bridge must work with Loom's own SDK unchanged, so the tests drive it with a client
that behaves like ``loom.client.BridgeClient``, ``loom.agent.Agent``, ``loom.context.Context``,
``loom.envelope.Envelope`` and ``@loom.capability`` (asyncio + grpc.aio, insecure channel):

* the stream's first frame is ``Ack(message_id=agent_id)``, yielded by the request iterator
  before anything queued, so it is on its way before the call is awaited;
* an agent registers its topics plus ``agent.{id}.replies`` and its capabilities as
  ``PROVIDER_GRPC`` with ``input_schema``/``output_schema`` metadata;
* server-pushed ``action_call`` frames go to the first capability of that name (version
  ignored) and are answered with an ``action_result`` frame: ``INVALID_INPUT``,
  ``CAPABILITY_ERROR`` or ``NOT_FOUND`` on failure;
* envelope keys are ``loom.``-prefixed; ``request`` matches replies on
  ``loom.correlation_id`` (and, as in the SDK, writes only ``loom.sender`` on the request);
* the unary ``Heartbeat`` carries timestamp 0; ``tool`` sends ``ActionCall``\\s with the
  ``x-correlation-id``/``x-agent-id`` headers and version ``"1.0"`` by default.

Differences, all off the wire: no pydantic (inputs are checked against the function's
signature), no OpenTelemetry, reconnecting is optional (off by default, so a broken server
fails a test instead of being retried forever), and an agent exposes pongs, pushed calls and
stream errors to the harness through ``on_wire``/``pongs``.

The ``loom.v1`` modules are generated at run time from ``schemas/`` into a temporary
directory (once per process): Loom's SDK ships its own generated code, and two sets of
``loom.v1`` descriptors cannot share one process, so this module never imports loomk's.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import inspect
import json
import logging
import os
import shutil
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

import grpc

log = logging.getLogger("loom_client")

SCHEMAS_DIR = Path(__file__).resolve().parents[3] / "schemas"
DEFAULT_ADDR = "127.0.0.1:50051"
META_PREFIX = "loom"
OUTBOUND_QUEUE_SIZE = 1024  # Agent._outbound_queue in loom-py
CHANNEL_OPTIONS = [("grpc.enable_http_proxy", 0)]  # local tests must not go through a proxy


# --------------------------------------------------------------------------------------------
# Generated code


@dataclass(frozen=True)
class Protos:
    """The generated ``loom.v1`` modules the client needs."""

    event_pb2: ModuleType
    action_pb2: ModuleType
    bridge_pb2: ModuleType
    bridge_pb2_grpc: ModuleType


_protos: Protos | None = None


def generate_stubs(schemas: Path = SCHEMAS_DIR) -> Path:
    """Run protoc over ``schemas/loom/v1/*.proto`` into a new temporary directory."""
    from grpc_tools import protoc

    protos = sorted(str(p.relative_to(schemas)) for p in (schemas / "loom" / "v1").glob("*.proto"))
    if not protos:
        raise FileNotFoundError(f"no .proto files under {schemas}/loom/v1")
    out = Path(tempfile.mkdtemp(prefix="loom_client_stubs_"))
    atexit.register(shutil.rmtree, out, ignore_errors=True)
    rc = protoc.main(
        ["protoc", f"-I{schemas}", f"--python_out={out}", f"--grpc_python_out={out}", *protos]
    )
    if rc != 0:
        raise RuntimeError(f"protoc failed ({rc}) on {schemas}")
    for package in (out / "loom", out / "loom" / "v1"):
        (package / "__init__.py").touch()
    return out


def load_protos() -> Protos:
    """Generate (once per process) and import the ``loom.v1`` modules."""
    global _protos
    if _protos is None:
        if "loom" in sys.modules:
            raise RuntimeError("a 'loom' package is already imported in this process")
        out = generate_stubs()
        sys.path.insert(0, str(out))
        from loom.v1 import (
            action_pb2,
            bridge_pb2,
            bridge_pb2_grpc,
            event_pb2,
        )

        _protos = Protos(event_pb2, action_pb2, bridge_pb2, bridge_pb2_grpc)
    return _protos


# --------------------------------------------------------------------------------------------
# BridgeClient


class RegisterError(RuntimeError):
    """``RegisterAgent`` answered ``success=false`` (loom-py raises RuntimeError)."""

    def __init__(self, error_message: str) -> None:
        super().__init__(f"RegisterAgent failed: {error_message}")
        self.error_message = error_message


class BridgeClient:
    """The four Bridge RPCs as loom-py's ``BridgeClient`` calls them (no deadlines)."""

    def __init__(self, address: str | None = None) -> None:
        self.address = address or os.environ.get("LOOM_BRIDGE_ADDR", DEFAULT_ADDR)
        self.pb = load_protos()
        self._channel: grpc.aio.Channel | None = None
        self._stub: Any = None

    @property
    def stub(self) -> Any:
        """The ``BridgeStub``; the client must be connected."""
        if self._stub is None:
            raise RuntimeError("BridgeClient is not connected")
        return self._stub

    async def connect(self) -> None:
        """Open the insecure channel (nothing is sent until the first call)."""
        if self._channel is None:
            self._channel = grpc.aio.insecure_channel(self.address, options=CHANNEL_OPTIONS)
            self._stub = self.pb.bridge_pb2_grpc.BridgeStub(self._channel)

    async def close(self) -> None:
        """Close the channel, cancelling any call still open on it."""
        if self._channel is not None:
            channel, self._channel, self._stub = self._channel, None, None
            await channel.close()

    async def register_agent(
        self,
        agent_id: str,
        topics: Iterable[str],
        capabilities: Iterable[Any] = (),
        metadata: dict[str, str] | None = None,
    ) -> bool:
        """``RegisterAgent``; raises :class:`RegisterError` when the server says no."""
        request = self.pb.bridge_pb2.AgentRegisterRequest(
            agent_id=agent_id,
            subscribed_topics=list(topics),
            capabilities=list(capabilities),
            metadata=metadata or {},
        )
        response = await self.stub.RegisterAgent(request)
        if not response.success:
            raise RegisterError(response.error_message)
        return True

    async def event_stream(self, agent_id: str, outbound: AsyncIterator[Any]) -> Any:
        """Open ``EventStream``: the request iterator yields the Ack before ``outbound``."""
        ack = self.pb.bridge_pb2.ClientEvent(ack=self.pb.bridge_pb2.Ack(message_id=agent_id))

        async def with_handshake() -> AsyncIterator[Any]:
            yield ack
            async for item in outbound:
                yield item

        return self.stub.EventStream(with_handshake())

    async def forward_action(self, call: Any) -> Any:
        """``ForwardAction``: invoke a capability through the server's broker."""
        return await self.stub.ForwardAction(call)

    async def heartbeat(self, timestamp_ms: int = 0) -> Any:
        """Unary ``Heartbeat``; loom-py always sends an empty request (timestamp 0)."""
        return await self.stub.Heartbeat(
            self.pb.bridge_pb2.HeartbeatRequest(timestamp_ms=timestamp_ms)
        )


# --------------------------------------------------------------------------------------------
# Envelope


@dataclass
class Envelope:
    """loom-py's envelope: an Event plus ``loom.``-prefixed metadata keys."""

    id: str
    type: str
    timestamp_ms: int
    source: str
    payload: bytes
    metadata: dict[str, str] = field(default_factory=dict)
    tags: list[str] = field(default_factory=list)
    priority: int = 50
    thread_id: str | None = None
    correlation_id: str | None = None
    sender: str | None = None
    reply_to: str | None = None
    ttl_ms: int | None = None

    @classmethod
    def new(
        cls,
        type: str,  # noqa: A002 - the SDK's name
        payload: bytes = b"",
        source: str = "python",
        thread_id: str | None = None,
        correlation_id: str | None = None,
        sender: str | None = None,
        reply_to: str | None = None,
        ttl_ms: int | None = None,
        metadata: dict[str, str] | None = None,
    ) -> Envelope:
        """A fresh envelope (uuid4 id, now); set fields are written into the metadata."""
        meta = dict(metadata or {})
        for key, value in (
            ("thread_id", thread_id),
            ("correlation_id", correlation_id),
            ("sender", sender),
            ("reply_to", reply_to),
            ("ttl_ms", ttl_ms),
        ):
            if value is not None:
                meta[f"{META_PREFIX}.{key}"] = str(value)
        return cls(
            id=str(uuid.uuid4()),
            type=type,
            timestamp_ms=int(time.time() * 1000),
            source=source,
            payload=payload,
            metadata=meta,
            thread_id=thread_id,
            correlation_id=correlation_id,
            sender=sender,
            reply_to=reply_to,
            ttl_ms=ttl_ms,
        )

    @classmethod
    def from_proto(cls, event: Any) -> Envelope:
        """Read an Event; the envelope fields come from the ``loom.*`` metadata keys."""
        meta = dict(event.metadata)
        ttl = meta.get(f"{META_PREFIX}.ttl_ms")
        return cls(
            id=event.id,
            type=event.type,
            timestamp_ms=event.timestamp_ms,
            source=event.source,
            payload=bytes(event.payload),
            metadata=meta,
            tags=list(event.tags),
            priority=event.priority,
            thread_id=meta.get(f"{META_PREFIX}.thread_id"),
            correlation_id=meta.get(f"{META_PREFIX}.correlation_id"),
            sender=meta.get(f"{META_PREFIX}.sender"),
            reply_to=meta.get(f"{META_PREFIX}.reply_to"),
            ttl_ms=int(ttl) if ttl else None,
        )

    def to_proto(self, event_cls: Any) -> Any:
        """The Event loom-py sends: ``metadata`` as stored (attributes are not re-synced)."""
        return event_cls(
            id=self.id,
            type=self.type,
            timestamp_ms=self.timestamp_ms,
            source=self.source,
            metadata=self.metadata,
            payload=self.payload,
            confidence=1.0,
            tags=self.tags,
            priority=self.priority,
        )


# --------------------------------------------------------------------------------------------
# @capability


_JSON_TYPES: dict[Any, tuple[str, tuple[type, ...]]] = {
    str: ("string", (str,)),
    int: ("integer", (int,)),
    float: ("number", (int, float)),
    bool: ("boolean", (bool,)),
    list: ("array", (list,)),
    dict: ("object", (dict,)),
}


@dataclass
class Capability:
    """A declared capability: the function and its inputs (its parameters)."""

    name: str
    version: str
    func: Callable[..., Any]
    params: dict[str, inspect.Parameter]

    @property
    def metadata(self) -> dict[str, str]:
        """``input_schema`` as a compact JSON schema, as loom-py registers it."""
        if not self.params:
            return {}
        properties: dict[str, Any] = {}
        required = []
        for name, param in self.params.items():
            prop: dict[str, Any] = {"title": name.replace("_", " ").title()}
            if param.annotation in _JSON_TYPES:
                prop["type"] = _JSON_TYPES[param.annotation][0]
            if param.default is inspect.Parameter.empty:
                required.append(name)
            else:
                prop["default"] = param.default
            properties[name] = prop
        schema = {
            "properties": properties,
            "required": required,
            "title": f"{self.func.__name__.capitalize()}Input",
            "type": "object",
        }
        return {"input_schema": json.dumps(schema, separators=(",", ":"))}

    def arguments(self, payload: bytes) -> dict[str, Any]:
        """The keyword arguments for ``func`` from a JSON payload; ValueError if invalid."""
        if not self.params:
            return {}  # loom-py has no input model then and ignores the payload
        data = json.loads(payload.decode("utf-8")) if payload else {}
        if not isinstance(data, dict):
            raise ValueError("input should be a JSON object")
        args: dict[str, Any] = {}
        for name, param in self.params.items():
            if name not in data:
                if param.default is inspect.Parameter.empty:
                    raise ValueError(f"{name}: field required")
                args[name] = param.default
                continue
            value = data[name]
            expected = _JSON_TYPES.get(param.annotation)
            if expected is not None and (
                not isinstance(value, expected[1])
                or (isinstance(value, bool) and bool not in expected[1])
            ):
                raise ValueError(f"{name}: input should be of type {expected[0]}")
            args[name] = value
        return args


def capability(
    name: str, version: str = "1.0"
) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Declare a function as a capability (``@loom.capability``)."""

    def wrap(func: Callable[..., Any]) -> Callable[..., Any]:
        signature = inspect.signature(func, eval_str=True)
        params = {n: p for n, p in signature.parameters.items() if n != "self"}
        func.__loom_capability__ = Capability(name, version, func, params)  # type: ignore[attr-defined]
        return func

    return wrap


# --------------------------------------------------------------------------------------------
# Context


def make_action_call(
    pb: Protos,
    name: str,
    *,
    agent_id: str,
    version: str = "1.0",
    payload: Any = None,
    timeout_ms: int = 5000,
    headers: dict[str, str] | None = None,
) -> Any:
    """The ActionCall ``Context.tool`` sends: uuid4 id, correlation id = id, QoS 0."""
    data = payload
    if payload is not None and not isinstance(payload, bytes | bytearray):
        data = json.dumps(payload).encode("utf-8")
    call_id = str(uuid.uuid4())
    call_headers = {"x-correlation-id": call_id, "x-agent-id": agent_id, **(headers or {})}
    return pb.action_pb2.ActionCall(
        id=call_id,
        capability=name,
        version=version,
        payload=bytes(data or b""),
        headers=call_headers,
        timeout_ms=timeout_ms,
        correlation_id=call_id,
        qos=0,
    )


class Context:
    """What a handler uses: emit, request/reply over the stream, tools over ForwardAction."""

    def __init__(self, agent_id: str, client: BridgeClient, outbound: asyncio.Queue[Any]) -> None:
        self.agent_id = agent_id
        self.client = client
        self.pb = client.pb
        self._outbound = outbound
        self._pending: dict[str, asyncio.Future[Envelope]] = {}

    async def send(self, client_event: Any) -> None:
        """Queue a raw ClientEvent behind the Ack (loom-py's ``_send``)."""
        await self._outbound.put(client_event)

    async def emit(
        self,
        topic: str,
        *,
        type: str,  # noqa: A002 - the SDK's name
        payload: bytes = b"",
        envelope: Envelope | None = None,
    ) -> None:
        """Publish an event on ``topic`` through the stream (sender = this agent)."""
        env = envelope or Envelope.new(type=type, payload=payload, sender=self.agent_id)
        event = env.to_proto(self.pb.event_pb2.Event)
        publish = self.pb.bridge_pb2.Publish(topic=topic, event=event)
        await self.send(self.pb.bridge_pb2.ClientEvent(publish=publish))

    async def request(
        self,
        topic: str,
        *,
        type: str,  # noqa: A002 - the SDK's name
        payload: bytes = b"",
        timeout_ms: int = 5000,
    ) -> Envelope:
        """Emit and wait for the delivery whose ``loom.correlation_id`` is the event's id.

        As in loom-py, correlation id and reply topic are set on the envelope object only, so
        the request carries just ``loom.sender``: the replier falls back to the event id and
        ``agent.{sender}.replies``.
        """
        env = Envelope.new(type=type, payload=payload, sender=self.agent_id)
        env.correlation_id = env.id
        env.reply_to = f"agent.{self.agent_id}.replies"
        future: asyncio.Future[Envelope] = asyncio.get_running_loop().create_future()
        self._pending[env.id] = future
        try:
            await self.emit(topic, type=type, payload=payload, envelope=env)
            return await asyncio.wait_for(future, timeout=timeout_ms / 1000)
        finally:
            self._pending.pop(env.id, None)

    async def reply(
        self,
        original: Envelope,
        *,
        type: str,  # noqa: A002 - the SDK's name
        payload: bytes = b"",
    ) -> None:
        """Answer ``original`` on its reply topic with its correlation id."""
        topic = original.reply_to or f"agent.{original.sender}.replies"
        env = Envelope.new(
            type=type,
            payload=payload,
            sender=self.agent_id,
            correlation_id=original.correlation_id or original.id,
            thread_id=original.thread_id,
        )
        await self.emit(topic, type=env.type, payload=env.payload, envelope=env)

    async def tool(
        self,
        name: str,
        *,
        version: str = "1.0",
        payload: Any = None,
        timeout_ms: int = 5000,
        headers: dict[str, str] | None = None,
    ) -> bytes:
        """Invoke a capability via ForwardAction; its output, or RuntimeError if not OK."""
        call = make_action_call(
            self.pb,
            name,
            agent_id=self.agent_id,
            version=version,
            payload=payload,
            timeout_ms=timeout_ms,
            headers=headers,
        )
        result = await self.client.forward_action(call)
        if result.status != self.pb.action_pb2.ACTION_OK:
            raise RuntimeError(f"Tool call failed: {result.error.message or 'unknown'}")
        return bytes(result.output)

    async def join_thread(self, thread_id: str) -> None:
        """A no-op in loom-py."""

    def _on_delivery(self, delivery: Any) -> None:
        """Resolve a pending request whose id is the delivery's ``loom.correlation_id``."""
        env = Envelope.from_proto(delivery.event)
        future = self._pending.get(env.correlation_id) if env.correlation_id else None
        if future is not None and not future.done():
            future.set_result(env)


# --------------------------------------------------------------------------------------------
# Agent

EventHandler = Callable[[Context, str, Envelope], Awaitable[None]]
WireHook = Callable[[str, Any], None]


class Agent:
    """loom-py's ``Agent``: register, open the stream, dispatch deliveries and calls.

    ``on_wire(kind, message)`` sees ``"action_call"``, ``"action_result"`` (as sent),
    ``"pong"``, ``"err"`` and ``"unknown"`` frames; ``pongs`` queues the pongs (loom-py
    ignores them). ``stream_done`` is set when the stream ends, with ``stream_error`` holding
    the exception if it failed and ``reconnect`` is off.
    """

    def __init__(
        self,
        agent_id: str,
        topics: Iterable[str],
        capabilities: Iterable[Callable[..., Any]] | None = None,
        address: str | None = None,
        on_event: EventHandler | None = None,
        *,
        metadata: dict[str, str] | None = None,
        heartbeat_interval: float | None = 15.0,
        reconnect: bool = False,
        on_wire: WireHook | None = None,
    ) -> None:
        self.agent_id = agent_id
        self.topics = list(topics)
        self._caps: list[Capability] = []
        for func in capabilities or ():
            cap = getattr(func, "__loom_capability__", None)
            if cap is None:
                raise ValueError(f"Function {func.__name__} is not decorated with @capability")
            self._caps.append(cap)
        self._on_event = on_event
        self._metadata = metadata
        self._heartbeat_interval = heartbeat_interval
        self._reconnect_enabled = reconnect
        self._on_wire = on_wire
        self.client = BridgeClient(address)
        self.pb = self.client.pb
        self._outbound: asyncio.Queue[Any] = asyncio.Queue(maxsize=OUTBOUND_QUEUE_SIZE)
        self.ctx = Context(agent_id, self.client, self._outbound)
        self.pongs: asyncio.Queue[Any] = asyncio.Queue()
        self.stream_done = asyncio.Event()
        self.stream_error: BaseException | None = None
        self._stopped = asyncio.Event()
        self._stream: Any = None
        self._stream_task: asyncio.Task[None] | None = None
        self._heartbeat_task: asyncio.Task[None] | None = None
        self._reconnect_lock = asyncio.Lock()

    @property
    def registered_topics(self) -> list[str]:
        """The topics sent to RegisterAgent: ours plus ``agent.{id}.replies``."""
        reply_topic = f"agent.{self.agent_id}.replies"
        return [*self.topics, reply_topic] if reply_topic not in self.topics else list(self.topics)

    def descriptors(self) -> list[Any]:
        """The capability descriptors sent to RegisterAgent."""
        return [
            self.pb.action_pb2.CapabilityDescriptor(
                name=c.name,
                version=c.version,
                provider=self.pb.action_pb2.PROVIDER_GRPC,
                metadata=c.metadata,
            )
            for c in self._caps
        ]

    async def start(self) -> None:
        """Connect, register, open the stream and start the stream and heartbeat tasks."""
        await self.client.connect()
        await self._open()
        if self._heartbeat_interval is not None:
            self._heartbeat_task = asyncio.create_task(self._heartbeat_loop())

    async def _open(self) -> None:
        await self.client.register_agent(
            self.agent_id, self.registered_topics, self.descriptors(), self._metadata
        )

        async def outbound() -> AsyncIterator[Any]:
            while True:
                yield await self._outbound.get()

        self._stream = await self.client.event_stream(self.agent_id, outbound())
        self._stream_task = asyncio.create_task(self._run_stream())

    def _hook(self, kind: str, message: Any) -> None:
        if self._on_wire is not None:
            self._on_wire(kind, message)

    async def _run_stream(self) -> None:
        try:
            async for frame in self._stream:
                which = frame.WhichOneof("msg")
                if which == "delivery":
                    self.ctx._on_delivery(frame.delivery)
                    if self._on_event is not None:
                        env = Envelope.from_proto(frame.delivery.event)
                        await self._on_event(self.ctx, frame.delivery.topic, env)
                elif which == "action_call":
                    self._hook("action_call", frame.action_call)
                    await self._handle_action_call(frame.action_call)
                elif which == "pong":
                    self.pongs.put_nowait(frame.pong)
                    self._hook("pong", frame.pong)
                elif which == "err":
                    log.error(
                        "[loom] Server error on stream: %s - %s", frame.err.code, frame.err.message
                    )
                    self._hook("err", frame.err)
                else:  # a loomk extension frame: loom-py's generated code would not know it
                    self._hook("unknown", frame)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.warning("[loom] Stream error: %s", exc)
            if self._reconnect_enabled and not self._stopped.is_set():
                await self._reconnect()
                return
            self.stream_error = exc
        self.stream_done.set()

    async def _reconnect(self) -> None:
        """Close, reconnect, re-register and reopen; backoff 0.5 s doubling to 10 s."""
        async with self._reconnect_lock:
            backoff = 0.5
            while not self._stopped.is_set():
                try:
                    await self.client.close()
                    await self.client.connect()
                    await self._open()
                    log.info("[loom] Reconnected agent %s", self.agent_id)
                    return
                except Exception as exc:
                    log.warning("[loom] Reconnect failed: %s; retrying in %.1fs", exc, backoff)
                    await asyncio.sleep(backoff)
                    backoff = min(backoff * 2, 10.0)

    async def _heartbeat_loop(self) -> None:
        assert self._heartbeat_interval is not None
        while not self._stopped.is_set():
            await asyncio.sleep(self._heartbeat_interval)
            try:
                await asyncio.wait_for(self.client.heartbeat(), timeout=5)
            except Exception as exc:
                log.warning("[loom] Heartbeat failed: %s", exc)
                if self._reconnect_enabled:
                    await self._reconnect()

    async def _handle_action_call(self, call: Any) -> None:
        """Run the named capability and queue its ActionResult on the stream."""
        action_pb2 = self.pb.action_pb2
        cap = next((c for c in self._caps if c.name == call.capability), None)
        if cap is None:
            result = action_pb2.ActionResult(
                id=call.id,
                status=action_pb2.ACTION_ERROR,
                error=action_pb2.ActionError(
                    code="NOT_FOUND", message=f"Capability {call.capability} not found"
                ),
            )
        else:
            result = await self._run_capability(cap, call)
        self._hook("action_result", result)
        await self.ctx.send(self.pb.bridge_pb2.ClientEvent(action_result=result))

    async def _run_capability(self, cap: Capability, call: Any) -> Any:
        action_pb2 = self.pb.action_pb2
        try:
            args = cap.arguments(bytes(call.payload))
        except Exception as exc:
            return action_pb2.ActionResult(
                id=call.id,
                status=action_pb2.ACTION_ERROR,
                error=action_pb2.ActionError(
                    code="INVALID_INPUT",
                    message=f"Failed to parse input for capability '{cap.name}': {exc}",
                ),
            )
        try:
            value = cap.func(**args)
            if inspect.isawaitable(value):
                value = await value
            if value is None:
                output = b""
            elif isinstance(value, bytes | bytearray):
                output = bytes(value)
            else:
                output = json.dumps(value).encode("utf-8")
            return action_pb2.ActionResult(id=call.id, status=action_pb2.ACTION_OK, output=output)
        except Exception as exc:
            return action_pb2.ActionResult(
                id=call.id,
                status=action_pb2.ACTION_ERROR,
                error=action_pb2.ActionError(code="CAPABILITY_ERROR", message=str(exc)),
            )

    async def stop(self) -> None:
        """Cancel the stream and heartbeat tasks and close the channel."""
        self._stopped.set()
        for task in (self._stream_task, self._heartbeat_task):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
        await self.client.close()
