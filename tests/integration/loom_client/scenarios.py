"""Scenarios a Loom SDK client runs against a Bridge server, each in its own process.

Child side (asyncio, the :mod:`sdk` stand-in for loom-py)::

    PYTHONPATH=tests/integration python -m loom_client.scenarios ADDRESS SCENARIO ['{json args}']

prints one JSON object per line as it goes (``{"step": ...}``) and a final line with
``"ok"``; the exit status is 0 when ok, 1 when not, 2 on bad usage. Every wait is bounded
(``timeout``, default 5 s; serving scenarios stop after ``idle_timeout`` without traffic,
default 10 s) so a broken server fails a test instead of hanging it. Scenarios that serve
(``serve_capability``, ``listen``, ``respond``) print ``ready`` once the server has answered
a ping sent after the Ack (Loom's server handles a stream's frames in order, so the
handshake and its subscriptions are done), and end on ``count``, ``duration`` or a ``stop``
line on stdin.

Parent side (trio, for tests): :func:`open_scenario`, :func:`run_scenario` and
:func:`open_reference_server` start the children with the right ``PYTHONPATH`` from any
working directory, read their lines with timeouts and always end them. This module imports
no generated code at import time, so a test process can use it next to loomk's own
``loom.v1`` modules.
"""

from __future__ import annotations

import asyncio
import base64
import json
import math
import os
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import grpc
import trio

from .sdk import Agent, BridgeClient, Envelope, RegisterError, capability, make_action_call

T = TypeVar("T")

DEFAULT_TIMEOUT = 5.0
DEFAULT_IDLE_TIMEOUT = 10.0
DEFAULT_MAX_DURATION = 300.0


# --------------------------------------------------------------------------------------------
# Child side: helpers


class StepTimeout(Exception):
    """A bounded wait ran out."""


class StreamEnded(Exception):
    """The agent's EventStream ended while a step waited on it."""


def text(data: bytes) -> str:
    """Bytes as UTF-8 text, or ``b64:...`` when they are not."""
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return "b64:" + base64.b64encode(data).decode("ascii")


def event_fields(topic: str, env: Envelope) -> dict[str, Any]:
    """A delivery as printed: topic, type, payload text, id, source and metadata."""
    return {
        "topic": topic,
        "type": env.type,
        "payload": text(env.payload),
        "id": env.id,
        "source": env.source,
        "metadata": env.metadata,
    }


def result_fields(pb: Any, result: Any) -> dict[str, Any]:
    """An ActionResult as printed: id, status name, output text and error."""
    return {
        "id": result.id,
        "status": pb.action_pb2.ActionStatus.Name(result.status),
        "output": text(bytes(result.output)),
        "error_code": result.error.code,
        "error_message": result.error.message,
    }


@dataclass
class Run:
    """One scenario run: the server address, the JSON arguments and the output."""

    address: str
    args: dict[str, Any]
    _stop: asyncio.Event | None = None

    def arg(self, name: str, default: Any = None) -> Any:
        """An argument, or ``default`` when it is absent or null."""
        value = self.args.get(name)
        return default if value is None else value

    @property
    def timeout(self) -> float:
        """Seconds each wait may take (``timeout``)."""
        return float(self.arg("timeout", DEFAULT_TIMEOUT))

    def step(self, step: str, **fields: Any) -> None:
        """Print one progress line."""
        emit_line({"step": step, **fields})

    async def within(self, aw: Awaitable[T], what: str, timeout: float | None = None) -> T:
        """Await ``aw`` for at most ``timeout`` seconds, else :class:`StepTimeout`."""
        limit = self.timeout if timeout is None else timeout
        try:
            return await asyncio.wait_for(aw, limit)
        except TimeoutError:
            raise StepTimeout(f"timed out after {limit:g}s waiting for {what}") from None

    async def on_stream(
        self, agent: Agent, aw: Awaitable[T], what: str, timeout: float | None = None
    ) -> T:
        """:meth:`within`, failing at once with :class:`StreamEnded` if the stream ends."""
        limit = self.timeout if timeout is None else timeout
        ended = asyncio.ensure_future(agent.stream_done.wait())
        work = asyncio.ensure_future(aw)
        try:
            done, _ = await asyncio.wait(
                {work, ended}, timeout=limit, return_when=asyncio.FIRST_COMPLETED
            )
            if work in done:
                return work.result()
            if ended in done:
                raise StreamEnded(f"stream ended ({agent.stream_error!r}) while waiting for {what}")
            raise StepTimeout(f"timed out after {limit:g}s waiting for {what}")
        finally:
            for task in (work, ended):
                task.cancel()

    def stop_event(self) -> asyncio.Event:
        """Set when a ``stop`` line arrives on stdin (read by a daemon thread)."""
        if self._stop is None:
            stop = self._stop = asyncio.Event()
            loop = asyncio.get_running_loop()

            def read() -> None:
                for line in sys.stdin:
                    if line.strip() == "stop":
                        loop.call_soon_threadsafe(stop.set)
                        return

            threading.Thread(target=read, daemon=True).start()
        return self._stop

    def agent(
        self,
        agent_id: str,
        topics: list[str],
        capabilities: list[Callable[..., Any]] | None = None,
        on_event: Callable[[Any, str, Envelope], Awaitable[None]] | None = None,
        on_wire: Callable[[str, Any], None] | None = None,
    ) -> Agent:
        """An SDK agent for this run; frames the SDK ignores are printed as steps."""

        def wire(kind: str, message: Any) -> None:
            if kind == "err":
                self.step("server_error", code=message.code, message=message.message)
            elif kind == "unknown":
                self.step("unknown_frame", which=message.WhichOneof("msg"))
            if on_wire is not None:
                on_wire(kind, message)

        return Agent(
            agent_id,
            topics,
            capabilities,
            self.address,
            on_event,
            metadata=self.arg("metadata"),
            heartbeat_interval=float(self.arg("heartbeat_interval", 15.0)) or None,
            reconnect=bool(self.arg("reconnect", False)),
            on_wire=wire,
        )

    async def start(self, agent: Agent) -> None:
        """Register and open the stream; print ``registered``."""
        await self.within(agent.start(), "RegisterAgent")
        self.step(
            "registered",
            agent_id=agent.agent_id,
            topics=agent.registered_topics,
            capabilities=[f"{d.name}:{d.version}" for d in agent.descriptors()],
        )

    async def ping(self, agent: Agent, timestamp_ms: int | None = None) -> Any:
        """Send a ``ping`` on the stream and wait for the pong (loom-py ignores pongs)."""
        ts = int(time.time() * 1000) if timestamp_ms is None else timestamp_ms
        bridge_pb2 = agent.pb.bridge_pb2
        await agent.ctx.send(
            bridge_pb2.ClientEvent(ping=bridge_pb2.HeartbeatRequest(timestamp_ms=ts))
        )
        return await self.on_stream(agent, agent.pongs.get(), "pong")

    async def drain(self, agent: Agent) -> None:
        """Before stopping: a ping round trip, so frames queued before it reached the server."""
        if not agent.stream_done.is_set():
            try:
                await self.ping(agent)
            except (StepTimeout, StreamEnded) as exc:
                self.step("drain_failed", error=str(exc))

    async def collect(
        self, agent: Agent, items: asyncio.Queue[Any], count: int | None
    ) -> tuple[list[Any], str]:
        """Take items until ``count``, ``duration``, ``stop``, idleness or the stream ends."""
        loop = asyncio.get_running_loop()
        duration = self.arg("duration")
        idle = float(self.arg("idle_timeout", DEFAULT_IDLE_TIMEOUT))
        end_at = loop.time() + float(duration if duration is not None else DEFAULT_MAX_DURATION)
        stop = self.stop_event()
        got: list[Any] = []
        while count is None or len(got) < count:
            wait = end_at - loop.time()
            idle_bound = count is not None and duration is None and idle < wait
            if idle_bound:
                wait = idle
            if wait <= 0:
                return got, "duration"
            waits = [
                asyncio.ensure_future(items.get()),
                asyncio.ensure_future(stop.wait()),
                asyncio.ensure_future(agent.stream_done.wait()),
            ]
            done, pending = await asyncio.wait(
                waits, timeout=wait, return_when=asyncio.FIRST_COMPLETED
            )
            for task in pending:
                task.cancel()
            if waits[0] in done:
                got.append(waits[0].result())
            elif waits[2] in done:
                return got, "stream_ended"
            elif waits[1] in done:
                return got, "stopped"
            else:
                return got, "idle_timeout" if idle_bound else "duration"
        return got, "count"


def collect_outcome(
    run: Run, agent: Agent, got: list[Any], reason: str, count: int | None
) -> dict[str, Any]:
    """The final fields of a serving scenario: ok unless the stream or idleness ended it."""
    ok = reason == "count" or (reason in ("stopped", "duration") and count is None)
    out: dict[str, Any] = {"ok": ok, "reason": reason, "received": len(got)}
    if reason == "stream_ended":
        out["error"] = repr(agent.stream_error)
    elif reason == "idle_timeout":
        out["error"] = f"nothing for {run.arg('idle_timeout', DEFAULT_IDLE_TIMEOUT)}s"
    elif not ok:
        out["error"] = f"{len(got)} of {count} before {reason}"
    return out


# --------------------------------------------------------------------------------------------
# Child side: scenarios


async def scenario_register(run: Run) -> dict[str, Any]:
    """RegisterAgent succeeds; an empty agent_id gives success=false naming agent_id."""
    client = BridgeClient(run.address)
    await client.connect()
    try:
        agent_id = run.arg("agent_id", "agentA")
        topics = run.arg("topics", ["topic.test"])
        action_pb2 = client.pb.action_pb2
        caps = [
            action_pb2.CapabilityDescriptor(
                name=c["name"], version=c.get("version", "1.0"), provider=action_pb2.PROVIDER_GRPC
            )
            for c in run.arg("capabilities", [])
        ]
        await run.within(
            client.register_agent(agent_id, topics, caps, run.arg("metadata")), "RegisterAgent"
        )
        run.step("registered", agent_id=agent_id, topics=topics, success=True)
        if not run.arg("check_empty", True):
            return {"ok": True}
        try:
            await run.within(client.register_agent("", topics, []), "RegisterAgent (empty id)")
        except RegisterError as exc:
            run.step("register_empty", success=False, error_message=exc.error_message)
            ok = "agent_id" in exc.error_message
            return {"ok": ok, **({} if ok else {"error": "message does not name agent_id"})}
        run.step("register_empty", success=True)
        return {"ok": False, "error": "empty agent_id was accepted"}
    finally:
        await client.close()


async def scenario_heartbeat(run: Run) -> dict[str, Any]:
    """Unary Heartbeat as loom-py sends it (timestamp 0), then with 12345: echoed, "ok"."""
    client = BridgeClient(run.address)
    await client.connect()
    try:
        ok = True
        for sent in (0, int(run.arg("timestamp_ms", 12345))):
            response = await run.within(client.heartbeat(sent), "Heartbeat")
            echoed = response.timestamp_ms == sent
            run.step(
                "heartbeat",
                sent=sent,
                timestamp_ms=response.timestamp_ms,
                status=response.status,
                echoed=echoed,
            )
            ok = ok and echoed and response.status == "ok"
        return {"ok": ok}
    finally:
        await client.close()


async def scenario_stream_echo(run: Run) -> dict[str, Any]:
    """Register on a topic, open the stream (Ack first), publish there, get it delivered."""
    topic = run.arg("topic", "topic.test")
    event_type = run.arg("type", "test_input")
    payload = run.arg("payload", "hello")
    deliveries: asyncio.Queue[tuple[str, Envelope]] = asyncio.Queue()

    async def on_event(ctx: Any, delivered_topic: str, env: Envelope) -> None:
        run.step("delivery", **event_fields(delivered_topic, env))
        await deliveries.put((delivered_topic, env))

    agent = run.agent(run.arg("agent_id", "agentA"), [topic], on_event=on_event)
    try:
        await run.start(agent)
        await agent.ctx.emit(topic, type=event_type, payload=payload.encode())
        run.step("published", topic=topic, type=event_type, payload=payload)

        async def matching() -> Envelope:
            while True:
                got_topic, env = await deliveries.get()
                if (got_topic, env.type, env.payload) == (topic, event_type, payload.encode()):
                    return env

        env = await run.on_stream(agent, matching(), f"the delivery of {event_type} on {topic}")
        return {"ok": True, "id": env.id}
    finally:
        await agent.stop()


async def scenario_inline_ping(run: Run) -> dict[str, Any]:
    """A ``ping`` on the stream is answered by a ``pong`` with status "ok"."""
    agent = run.agent(run.arg("agent_id", "pinger"), run.arg("topics", []))
    try:
        await run.start(agent)
        sent = int(run.arg("timestamp_ms", int(time.time() * 1000)))
        pong = await run.ping(agent, sent)
        run.step("pong", sent=sent, timestamp_ms=pong.timestamp_ms, status=pong.status)
        return {"ok": pong.status == "ok"}
    finally:
        await agent.stop()


async def scenario_forward_action(run: Run, *, missing: bool = False) -> dict[str, Any]:
    """ForwardAction an ActionCall built like ``Context.tool``; check the result."""
    client = BridgeClient(run.address)
    await client.connect()
    try:
        default_capability = "no.such.capability" if missing else "test.echo"
        payload: Any = run.arg("json")
        if payload is None:
            payload = run.arg("payload", "ping").encode()
        call = make_action_call(
            client.pb,
            run.arg("capability", default_capability),
            agent_id=run.arg("agent_id", "harness"),
            version=run.arg("version", "1.0"),
            payload=payload,
            timeout_ms=int(run.arg("timeout_ms", 5000)),
            headers=run.arg("headers"),
        )
        run.step("call", id=call.id, capability=call.capability, version=call.version)
        limit = max(run.timeout, call.timeout_ms / 1000 + 1)
        result = await run.within(client.forward_action(call), "ForwardAction", limit)
        fields = result_fields(client.pb, result)
        run.step("result", **fields)
        failures = []
        expect_status = run.arg("expect_status", "ACTION_ERROR" if missing else "ACTION_OK")
        for name, expected in (
            ("status", expect_status),
            ("output", run.arg("expect_output")),
            ("error_code", run.arg("expect_error_code")),
        ):
            if expected is not None and fields[name] != expected:
                failures.append(f"{name} {fields[name]!r} != {expected!r}")
        if result.id != call.id:
            failures.append(f"result id {result.id!r} != call id {call.id!r}")
        return {
            "ok": not failures,
            **fields,
            **({"error": "; ".join(failures)} if failures else {}),
        }
    finally:
        await client.close()


async def scenario_forward_missing(run: Run) -> dict[str, Any]:
    """ForwardAction of an unknown capability: ACTION_ERROR."""
    return await scenario_forward_action(run, missing=True)


def make_capability(spec: dict[str, Any]) -> Callable[..., Any]:
    """A capability function for ``serve_capability`` from ``{name, version, behaviour}``.

    Behaviours: ``upper`` (``{"text": TEXT}``), ``echo`` (``{"text": text}``), ``fail``
    (raises: CAPABILITY_ERROR), ``slow`` (``upper`` after ``delay`` seconds).
    """
    behaviour = spec.get("behaviour", "upper")
    delay = float(spec.get("delay", 1.0))

    def upper(text: str) -> dict[str, Any]:
        return {"text": text.upper()}

    def echo(text: str) -> dict[str, Any]:
        return {"text": text}

    def fail(text: str = "") -> None:
        raise RuntimeError(spec.get("message", "failing on purpose"))

    async def slow(text: str) -> dict[str, Any]:
        await asyncio.sleep(delay)
        return {"text": text.upper()}

    functions: dict[str, Callable[..., Any]] = {
        "upper": upper,
        "echo": echo,
        "fail": fail,
        "slow": slow,
    }
    if behaviour not in functions:
        raise ValueError(f"unknown behaviour {behaviour!r} (one of {sorted(functions)})")
    return capability(spec["name"], spec.get("version", "1.0"))(functions[behaviour])


async def scenario_serve_capability(run: Run) -> dict[str, Any]:
    """Offer capabilities and answer server-pushed ``action_call``\\s as loom-py does."""
    specs = run.arg("capabilities") or [
        {
            "name": run.arg("capability", "echo.upper"),
            "version": run.arg("version", "1.0"),
            "behaviour": run.arg("behaviour", "upper"),
        }
    ]
    answered: asyncio.Queue[str] = asyncio.Queue()
    agent: Agent

    def on_wire(kind: str, message: Any) -> None:
        if kind == "action_call":
            run.step(
                "action_call",
                id=message.id,
                capability=message.capability,
                version=message.version,
                payload=text(bytes(message.payload)),
                headers=dict(message.headers),
                correlation_id=message.correlation_id,
                timeout_ms=message.timeout_ms,
            )
        elif kind == "action_result":
            run.step("action_result", **result_fields(agent.pb, message))
            answered.put_nowait(message.id)

    agent = run.agent(
        run.arg("agent_id", "worker"),
        run.arg("topics", []),
        [make_capability(s) for s in specs],
        on_wire=on_wire,
    )
    try:
        await run.start(agent)
        await run.ping(agent)
        run.step("ready", agent_id=agent.agent_id)
        count = run.arg("count")
        got, reason = await run.collect(agent, answered, None if count is None else int(count))
        await run.drain(agent)
        return {**collect_outcome(run, agent, got, reason, count), "calls": got}
    finally:
        await agent.stop()


async def scenario_listen(run: Run) -> dict[str, Any]:
    """Subscribe to topics and print every delivery (``quiet``: count only)."""
    received: asyncio.Queue[str] = asyncio.Queue()
    quiet = bool(run.arg("quiet", False))

    async def on_event(ctx: Any, topic: str, env: Envelope) -> None:
        if not quiet:
            run.step("delivery", **event_fields(topic, env))
        received.put_nowait(env.id)

    agent = run.agent(
        run.arg("agent_id", "listener"), run.arg("topics", ["topic.test"]), on_event=on_event
    )
    try:
        await run.start(agent)
        await run.ping(agent)
        run.step("ready", agent_id=agent.agent_id)
        started = time.perf_counter()
        count = run.arg("count")
        got, reason = await run.collect(agent, received, None if count is None else int(count))
        return {
            **collect_outcome(run, agent, got, reason, count),
            "seconds": round(time.perf_counter() - started, 6),
        }
    finally:
        await agent.stop()


async def scenario_respond(run: Run) -> dict[str, Any]:
    """Answer requests on topics with ``Context.reply`` (payload upper-cased)."""
    handled: asyncio.Queue[str] = asyncio.Queue()
    request_type = run.arg("request_type")

    async def on_event(ctx: Any, topic: str, env: Envelope) -> None:
        if request_type is not None and env.type != request_type:
            return
        run.step("request", **event_fields(topic, env))
        reply_type = run.arg("reply_type", f"{env.type}.reply")
        await ctx.reply(env, type=reply_type, payload=env.payload.upper())
        run.step("replied", to=env.id, type=reply_type)
        handled.put_nowait(env.id)

    agent = run.agent(
        run.arg("agent_id", "responder"), run.arg("topics", ["topic.requests"]), on_event=on_event
    )
    try:
        await run.start(agent)
        await run.ping(agent)
        run.step("ready", agent_id=agent.agent_id)
        count = run.arg("count")
        got, reason = await run.collect(agent, handled, None if count is None else int(count))
        await run.drain(agent)
        return collect_outcome(run, agent, got, reason, count)
    finally:
        await agent.stop()


async def scenario_request(run: Run) -> dict[str, Any]:
    """``Context.request`` on a topic: wait for the reply matched by correlation id."""
    agent = run.agent(run.arg("agent_id", "requester"), run.arg("topics", []))
    try:
        await run.start(agent)
        topic = run.arg("topic", "topic.requests")
        timeout_ms = int(run.arg("timeout_ms", run.timeout * 1000))
        request = agent.ctx.request(
            topic,
            type=run.arg("type", "question"),
            payload=run.arg("payload", "hello").encode(),
            timeout_ms=timeout_ms,
        )
        env = await run.on_stream(agent, request, f"a reply on {topic}", timeout_ms / 1000 + 1)
        run.step(
            "reply",
            **event_fields(f"agent.{agent.agent_id}.replies", env),
            correlation_id=env.correlation_id,
        )
        expected = run.arg("expect_payload")
        ok = expected is None or text(env.payload) == expected
        return {"ok": ok, **({} if ok else {"error": f"payload {text(env.payload)!r}"})}
    finally:
        await agent.stop()


async def scenario_publish_many(run: Run) -> dict[str, Any]:
    """Publish ``n`` events, one ClientEvent each; timed until a ping after them returns."""
    n = int(run.arg("n", 100))
    topic = run.arg("topic", "topic.test")
    event_type = run.arg("type", "bench")
    fixed = run.arg("payload")
    agent = run.agent(run.arg("agent_id", "publisher"), run.arg("topics", []))
    try:
        await run.start(agent)
        await run.ping(agent)
        started = time.perf_counter()
        for i in range(n):
            payload = (str(i) if fixed is None else fixed).encode()
            await run.on_stream(
                agent, agent.ctx.emit(topic, type=event_type, payload=payload), "queue"
            )
        await run.ping(agent)
        seconds = time.perf_counter() - started
        fields = {
            "n": n,
            "topic": topic,
            "seconds": round(seconds, 6),
            "per_second": round(n / seconds, 1) if seconds else math.inf,
        }
        run.step("published", **fields)
        return {"ok": True, **fields}
    finally:
        await agent.stop()


async def scenario_no_ack_first(run: Run) -> dict[str, Any]:
    """Open EventStream without the Ack first: expect INVALID_ARGUMENT.

    ``first``: ``publish`` (default), ``ping`` or ``none`` (close the request side at once).
    """
    client = BridgeClient(run.address)
    await client.connect()
    bridge_pb2, event_pb2 = client.pb.bridge_pb2, client.pb.event_pb2
    first = run.arg("first", "publish")
    frames = {
        "publish": bridge_pb2.ClientEvent(
            publish=bridge_pb2.Publish(topic="topic.test", event=event_pb2.Event(id="e1", type="t"))
        ),
        "ping": bridge_pb2.ClientEvent(ping=bridge_pb2.HeartbeatRequest(timestamp_ms=1)),
    }
    answered = asyncio.Event()

    async def requests() -> AsyncIterator[Any]:
        if first != "none":
            yield frames[first]
            await answered.wait()  # keep the request side open until the server decides

    try:
        call = client.stub.EventStream(requests())

        async def outcome() -> tuple[str, str, int]:
            frames_seen = 0
            try:
                async for _ in call:
                    frames_seen += 1
            except grpc.aio.AioRpcError as exc:
                return exc.code().name, exc.details() or "", frames_seen
            return (await call.code()).name, await call.details() or "", frames_seen

        code, details, frames_seen = await run.within(outcome(), "the server to end the stream")
        answered.set()
        run.step("status", first=first, code=code, details=details, frames=frames_seen)
        expected = run.arg("expect_code", "INVALID_ARGUMENT")
        ok = code == expected
        return {
            "ok": ok,
            "code": code,
            "details": details,
            **({} if ok else {"error": f"expected {expected}"}),
        }
    finally:
        answered.set()
        await client.close()


SCENARIOS: dict[str, Callable[[Run], Awaitable[dict[str, Any]]]] = {
    "register": scenario_register,
    "heartbeat": scenario_heartbeat,
    "stream_echo": scenario_stream_echo,
    "inline_ping": scenario_inline_ping,
    "forward_action": scenario_forward_action,
    "forward_missing": scenario_forward_missing,
    "serve_capability": scenario_serve_capability,
    "no_ack_first": scenario_no_ack_first,
    "publish_many": scenario_publish_many,
    "listen": scenario_listen,
    "respond": scenario_respond,
    "request": scenario_request,
}


def emit_line(obj: dict[str, Any]) -> None:
    """Print one JSON line and flush it (a closed pipe is ignored)."""
    with suppress(BrokenPipeError):
        print(json.dumps(obj, default=str), flush=True)


async def run_named(address: str, name: str, args: dict[str, Any]) -> dict[str, Any]:
    """Run one scenario; any failure becomes ``{"ok": false, "error": ...}``."""
    try:
        return await SCENARIOS[name](Run(address, args))
    except StepTimeout as exc:
        return {"ok": False, "error": str(exc), "error_type": "timeout"}
    except StreamEnded as exc:
        return {"ok": False, "error": str(exc), "error_type": "stream_ended"}
    except RegisterError as exc:
        return {"ok": False, "error": str(exc), "error_type": "register"}
    except grpc.aio.AioRpcError as exc:
        return {
            "ok": False,
            "error": f"{exc.code().name}: {exc.details()}",
            "error_type": "rpc",
            "code": exc.code().name,
        }
    except Exception as exc:
        return {"ok": False, "error": repr(exc), "error_type": type(exc).__name__}


def main(argv: list[str] | None = None) -> int:
    """``ADDRESS SCENARIO [json-args]``: run it, print the final line, exit 0 when ok."""
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) not in (2, 3) or argv[1] not in SCENARIOS:
        print(
            f"usage: python -m loom_client.scenarios ADDRESS SCENARIO [json-args]\n"
            f"scenarios: {', '.join(SCENARIOS)}",
            file=sys.stderr,
        )
        return 2
    address, name = argv[0], argv[1]
    args = json.loads(argv[2]) if len(argv) == 3 else {}
    if not isinstance(args, dict):
        print("json-args must be an object", file=sys.stderr)
        return 2
    final = asyncio.run(run_named(address, name, args))
    emit_line({"scenario": name, **final})
    return 0 if final.get("ok") else 1


# --------------------------------------------------------------------------------------------
# Parent side (trio): start children, read their lines with timeouts, always end them

PYTHONPATH_ROOT = Path(__file__).resolve().parents[1]  # tests/integration


class HarnessError(AssertionError):
    """A child did not print what was expected in time (message: what it printed)."""


def child_env() -> dict[str, str]:
    """This environment with ``tests/integration`` first on PYTHONPATH."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(
        p for p in (str(PYTHONPATH_ROOT), env.get("PYTHONPATH")) if p
    )
    env["PYTHONUNBUFFERED"] = "1"
    return env


def scenario_command(address: str, scenario: str, args: dict[str, Any] | None = None) -> list[str]:
    """The command line of a scenario child."""
    return [
        sys.executable,
        "-m",
        "loom_client.scenarios",
        address,
        scenario,
        json.dumps(args or {}),
    ]


def reference_server_command(port: int = 0) -> list[str]:
    """The command line of the reference server child."""
    return [sys.executable, "-m", "loom_client.reference_server", str(port)]


@dataclass
class Child:
    """A running child: its JSON lines so far, its stderr, and ways to wait on them."""

    name: str
    process: trio.Process
    lines: list[dict[str, Any]] = field(default_factory=list)
    stderr: bytearray = field(default_factory=bytearray)
    final: dict[str, Any] | None = None

    def __post_init__(self) -> None:
        self._send, self._receive = trio.open_memory_channel[dict[str, Any]](math.inf)

    async def _pump_stdout(self) -> None:
        assert self.process.stdout is not None
        buffer = b""
        async with self._send:
            while chunk := await self.process.stdout.receive_some():
                buffer += chunk
                *complete, buffer = buffer.split(b"\n")
                for raw in complete:
                    if raw.strip():
                        await self._send.send(self._parse(raw))
            if buffer.strip():
                await self._send.send(self._parse(buffer))

    def _parse(self, raw: bytes) -> dict[str, Any]:
        try:
            line = json.loads(raw)
        except ValueError:
            line = None
        if not isinstance(line, dict):
            line = {"raw": raw.decode("utf-8", "replace")}
        self.lines.append(line)
        if "ok" in line:
            self.final = line
        return line

    async def _pump_stderr(self) -> None:
        assert self.process.stderr is not None
        while chunk := await self.process.stderr.receive_some():
            self.stderr += chunk

    def describe(self) -> str:
        """What the child printed, for failure messages."""
        out = "\n".join(json.dumps(line) for line in self.lines[-40:])
        err = bytes(self.stderr[-3000:]).decode("utf-8", "replace")
        return f"{self.name} (returncode {self.process.returncode})\nstdout:\n{out}\nstderr:\n{err}"

    async def next_line(self, timeout: float = DEFAULT_TIMEOUT) -> dict[str, Any]:
        """The next JSON line; HarnessError on timeout or when the child's output ends."""
        with trio.move_on_after(timeout):
            try:
                return await self._receive.receive()
            except trio.EndOfChannel:
                raise HarnessError(f"output ended: {self.describe()}") from None
        raise HarnessError(f"no line within {timeout}s: {self.describe()}")

    async def wait_for(
        self, match: str | Callable[[dict[str, Any]], bool], timeout: float = DEFAULT_TIMEOUT
    ) -> dict[str, Any]:
        """The next line whose ``step`` is ``match`` (or that ``match`` accepts)."""
        accept = (lambda line: line.get("step") == match) if isinstance(match, str) else match
        with trio.move_on_after(timeout):
            while True:
                line = await self.next_line(math.inf)
                if accept(line):
                    return line
                if "ok" in line:
                    raise HarnessError(f"finished before {match!r}: {self.describe()}")
        raise HarnessError(f"no {match!r} within {timeout}s: {self.describe()}")

    async def send_line(self, line: str) -> None:
        """Write one line to the child's stdin."""
        assert self.process.stdin is not None
        await self.process.stdin.send_all(line.encode() + b"\n")

    async def finish(self, timeout: float = 30.0) -> dict[str, Any]:
        """Wait for the child to exit; its final line (HarnessError if none)."""
        with trio.move_on_after(timeout):
            while True:
                try:
                    await self._receive.receive()
                except trio.EndOfChannel:
                    break
            await self.process.wait()
            if self.final is None:
                raise HarnessError(f"no final line: {self.describe()}")
            return self.final
        raise HarnessError(f"did not finish within {timeout}s: {self.describe()}")

    async def end(self) -> None:
        """SIGTERM, then SIGKILL after 5 s; waits for the exit."""
        if self.process.returncode is None:
            self.process.terminate()
            with trio.move_on_after(5):
                await self.process.wait()
        if self.process.returncode is None:
            self.process.kill()
            await self.process.wait()


@asynccontextmanager
async def open_child(command: list[str], name: str) -> AsyncIterator[Child]:
    """Start a child with piped stdio; it is ended however the block exits."""
    process = await trio.lowlevel.open_process(
        command,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=child_env(),
    )
    child = Child(name, process)
    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(child._pump_stdout)
            nursery.start_soon(child._pump_stderr)
            try:
                yield child
            finally:
                with trio.CancelScope(shield=True):
                    await child.end()
    finally:
        with trio.CancelScope(shield=True):
            await child.end()
            for stream in (process.stdin, process.stdout, process.stderr):
                if stream is not None:
                    await stream.aclose()


def open_scenario(
    address: str, scenario: str, args: dict[str, Any] | None = None
) -> AbstractAsyncContextManager[Child]:
    """Start a scenario child (for serving scenarios: wait for ``ready``, then drive)."""
    return open_child(scenario_command(address, scenario, args), scenario)


@dataclass
class ScenarioResult:
    """A finished scenario: exit status, every line, and the final line."""

    returncode: int
    lines: list[dict[str, Any]]
    final: dict[str, Any]

    def steps(self, step: str) -> list[dict[str, Any]]:
        """The lines of one step."""
        return [line for line in self.lines if line.get("step") == step]


async def run_scenario(
    address: str, scenario: str, args: dict[str, Any] | None = None, timeout: float = 30.0
) -> ScenarioResult:
    """Run a scenario child to the end."""
    async with open_scenario(address, scenario, args) as child:
        final = await child.finish(timeout)
        assert child.process.returncode is not None
        return ScenarioResult(child.process.returncode, list(child.lines), final)


@dataclass
class ReferenceServer:
    """A running reference server child and its address."""

    child: Child
    address: str


@asynccontextmanager
async def open_reference_server(timeout: float = 15.0) -> AsyncIterator[ReferenceServer]:
    """Start ``loom_client.reference_server`` on a free port; yields once it listens."""
    async with open_child(reference_server_command(0), "reference_server") as child:
        line = await child.wait_for("listening", timeout)
        yield ReferenceServer(child, line["address"])


if __name__ == "__main__":
    sys.exit(main())
