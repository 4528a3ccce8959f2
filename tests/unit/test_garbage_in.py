"""Garbage at every public entry point: a typed loomk error that says what is wrong, and a
kernel that works on as if nothing had happened.

Each row of the table is one bad call. It runs inside an agent's handler (where agents make
these mistakes); the handler records what was raised. The test then checks the error (a
:class:`LoomkError` of the expected class and code, with a message naming the problem) and
that the kernel is unharmed: the agent was not restarted and still handles events, publish,
subscribe, request/reply and the broker work, and nothing was left registered.

The strings the wire (protobuf ``loom.v1``) cannot carry are the same everywhere: NUL and
lone surrogates (not valid UTF-8); so are the numbers: int64 timestamps and timeouts, no NaN
or infinity in JSON.
"""

from __future__ import annotations

import math
import re
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
import trio
import trio.testing
from collab_support import start_responder

from loomk import (
    ActionCall,
    ActionCallError,
    ActionResult,
    AgentError,
    CapabilityError,
    CollabError,
    ConfigError,
    Context,
    Event,
    EventBus,
    EventError,
    InvalidAgentId,
    Kernel,
    LoomkError,
    Overflow,
    OverflowPolicyError,
    QoS,
    QoSError,
    ToolOrchestrator,
    Topic,
    TopicError,
    capability,
)
from loomk.bus import Mailbox
from loomk.testing import ScriptedAgent, capture_events, open_test_kernel

Attempt = Callable[[Kernel, Context], Any]

NUL = "a\x00b"
SURROGATE = "a\ud800b"


def nested(depth: int) -> list[Any]:
    """A list nested ``depth`` deep (built without recursion)."""
    value: list[Any] = []
    for _ in range(depth):
        value = [value]
    return value


def event_with_thread(thread_id: str) -> Event:
    return Event("ask", b"q", metadata={"thread_id": thread_id})


async def orchestrate(kernel: Kernel, correlation_id: Any) -> Any:
    async def never_called(request: dict[str, Any]) -> dict[str, Any]:
        raise AssertionError("the model is not asked when the call is refused")

    orchestrator = ToolOrchestrator(kernel.broker, never_called)
    return await orchestrator.run("hi", correlation_id=correlation_id)


def case(attempt: Attempt, error: type[LoomkError], match: str, id: str) -> Any:  # noqa: A002
    return pytest.param(attempt, error, match, id=id)


GARBAGE = [
    # ---- Event(...) ----------------------------------------------------------------------
    case(lambda k, c: Event(NUL), EventError, "type .* NUL", "Event-type-NUL"),
    case(lambda k, c: Event(SURROGATE), EventError, "type .* lone surrogate", "Event-type-surr"),
    case(lambda k, c: Event(""), EventError, "non-empty str", "Event-type-empty"),
    case(lambda k, c: Event(b"t"), EventError, "non-empty str", "Event-type-bytes"),
    case(lambda k, c: Event("t", source=NUL), EventError, "source .* NUL", "Event-source-NUL"),
    case(lambda k, c: Event("t", source=SURROGATE), EventError, "source", "Event-source-surr"),
    case(lambda k, c: Event("t", metadata={NUL: "v"}), EventError, "key .* NUL", "Event-md-key"),
    case(
        lambda k, c: Event("t", metadata={"k": SURROGATE}),
        EventError,
        "value of 'k' .* surrogate",
        "Event-md-value-surr",
    ),
    case(lambda k, c: Event("t", metadata={"k": 5}), EventError, "str to str", "Event-md-int"),
    case(lambda k, c: Event("t", tags=["ok", NUL]), EventError, "tag .* NUL", "Event-tag-NUL"),
    case(lambda k, c: Event("t", id=SURROGATE), EventError, "id .* surrogate", "Event-id-surr"),
    case(lambda k, c: Event("t", timestamp_ms=2**63), EventError, "int64", "Event-ts-int64"),
    case(lambda k, c: Event("t", timestamp_ms=-(2**63) - 1), EventError, "int64", "Event-ts-low"),
    case(lambda k, c: Event("t", timestamp_ms=1.5), EventError, "must be an int", "Event-ts-float"),
    case(lambda k, c: Event("t", confidence=math.nan), EventError, "confidence", "Event-conf-nan"),
    case(lambda k, c: Event("t", priority=101), EventError, "priority", "Event-priority"),
    # ---- Event.replace / with_metadata ---------------------------------------------------
    case(lambda k, c: Event("t").replace(type=NUL), EventError, "NUL", "replace-type"),
    case(lambda k, c: Event("t").replace(source=NUL), EventError, "NUL", "replace-source"),
    case(
        lambda k, c: Event("t").replace(metadata={"k": SURROGATE}),
        EventError,
        "surrogate",
        "replace-metadata",
    ),
    case(lambda k, c: Event("t").replace(timestamp_ms=2**64), EventError, "int64", "replace-ts"),
    case(lambda k, c: Event("t").replace(colour="red"), EventError, "no field", "replace-field"),
    case(
        lambda k, c: Event("t").with_metadata(k=SURROGATE), EventError, "surrogate", "with_md-surr"
    ),
    case(lambda k, c: Event("t").with_metadata(**{NUL: "v"}), EventError, "NUL", "with_md-key-NUL"),
    case(lambda k, c: Event("t").with_metadata(k=5), EventError, "str to str", "with_md-int"),
    # ---- bus.publish / subscribe / bind / attach_handler ---------------------------------
    case(lambda k, c: k.bus.publish(NUL, Event("t")), TopicError, "NUL", "publish-topic-NUL"),
    case(
        lambda k, c: k.bus.publish(SURROGATE, Event("t")),
        TopicError,
        "surrogate",
        "publish-topic-surr",
    ),
    case(lambda k, c: k.bus.publish("ok", "event"), EventError, "takes an Event", "publish-str"),
    case(lambda k, c: k.bus.subscribe("x", qos=7), QoSError, "QoS.REALTIME", "subscribe-qos-7"),
    case(
        lambda k, c: k.bus.subscribe("x", qos="fast"), QoSError, "unknown QoS", "subscribe-qos-str"
    ),
    case(lambda k, c: k.bus.subscribe(SURROGATE), TopicError, "surrogate", "subscribe-surr"),
    case(lambda k, c: k.bus.subscribe("x.\x00"), TopicError, "NUL", "subscribe-NUL"),
    case(lambda k, c: k.bus.subscribe("x", capacity=0), OverflowPolicyError, ">= 1", "capacity-0"),
    case(
        lambda k, c: k.bus.subscribe("x", capacity="big"),
        OverflowPolicyError,
        ">= 1",
        "capacity-str",
    ),
    case(
        lambda k, c: k.bus.subscribe("x", overflow="nope"),
        OverflowPolicyError,
        "drop_oldest",
        "overflow-name",
    ),
    case(
        lambda k, c: k.bus.subscribe("x", overflow=Overflow("nope")),  # type: ignore[arg-type]
        OverflowPolicyError,
        "unknown overflow kind",
        "overflow-kind",
    ),
    case(
        lambda k, c: k.bus.subscribe("x", overflow=Overflow("sample", every=0)),
        OverflowPolicyError,
        "every",
        "overflow-sample-0",
    ),
    case(
        lambda k, c: k.bus.subscribe("x", overflow=Overflow("aggregate")),
        OverflowPolicyError,
        "merge",
        "overflow-aggregate-no-merge",
    ),
    case(
        lambda k, c: k.bus.subscribe("x", event_types=[NUL]),
        EventError,
        "NUL",
        "event_types-NUL",
    ),
    case(
        lambda k, c: k.bus.subscribe("x", event_types="text"),
        EventError,
        "collection of str",
        "event_types-str",
    ),
    case(lambda k, c: k.bus.bind(Mailbox(), "x", qos=-1), QoSError, "unknown QoS", "bind-qos"),
    case(lambda k, c: k.bus.attach_handler("x", 5), EventError, "callable", "handler-not-callable"),
    case(
        lambda k, c: k.bus.attach_handler("x", lambda t, e: True, on_detach=5),
        EventError,
        "on_detach",
        "handler-on_detach",
    ),
    case(
        lambda k, c: k.bus.attach_handler(NUL, lambda t, e: True),
        TopicError,
        "NUL",
        "handler-pattern-NUL",
    ),
    case(
        lambda k, c: EventBus(capacities={QoS.REALTIME: 0}),
        OverflowPolicyError,
        "REALTIME",
        "EventBus-capacity-0",
    ),
    case(lambda k, c: EventBus(capacities={7: 10}), QoSError, "unknown QoS", "EventBus-cap-qos"),
    case(lambda k, c: EventBus(max_topics=-1), ConfigError, "max_topics", "EventBus-max_topics"),
    # ---- Overflow constructors -----------------------------------------------------------
    case(lambda k, c: Overflow.sample(0), OverflowPolicyError, "every", "sample-0"),
    case(lambda k, c: Overflow.latest(key=5), OverflowPolicyError, "key", "latest-key"),
    case(lambda k, c: Overflow.aggregate(5), OverflowPolicyError, "function", "aggregate-5"),
    # ---- agents: subscribe_agent, ctx.subscribe, Topic, spawn options --------------------
    case(
        lambda k, c: k.subscribe_agent("victim", "x", qos=7),
        QoSError,
        "unknown QoS",
        "subscribe_agent-qos",
    ),
    case(
        lambda k, c: k.subscribe_agent("victim", SURROGATE),
        TopicError,
        "surrogate",
        "subscribe_agent-pattern",
    ),
    case(
        lambda k, c: k.subscribe_agent("victim", "x", capacity=-1),
        OverflowPolicyError,
        ">= 1",
        "subscribe_agent-capacity",
    ),
    case(lambda k, c: c.subscribe("x", qos="fast"), QoSError, "unknown QoS", "ctx.subscribe-qos"),
    case(
        lambda k, c: k.spawn(ScriptedAgent("bad", topics=[Topic("x", qos=9)])),  # type: ignore[arg-type]
        QoSError,
        "unknown QoS",
        "spawn-Topic-qos",
    ),
    case(
        lambda k, c: k.spawn(ScriptedAgent("bad", topics=[Topic(NUL)])),
        TopicError,
        "NUL",
        "spawn-Topic-pattern",
    ),
    case(
        lambda k, c: k.spawn(ScriptedAgent("bad", topics=[Topic("x", capacity=0)])),
        OverflowPolicyError,
        ">= 1",
        "spawn-Topic-capacity",
    ),
    case(
        lambda k, c: k.spawn(ScriptedAgent("bad"), restart="sometimes"),
        AgentError,
        "restart",
        "spawn-restart",
    ),
    case(
        lambda k, c: k.spawn(ScriptedAgent("bad"), window_s=math.nan),
        AgentError,
        "window_s",
        "spawn-window-nan",
    ),
    case(
        lambda k, c: k.spawn(ScriptedAgent("bad"), stop_timeout_s="5"),
        AgentError,
        "stop_timeout_s",
        "spawn-stop_timeout",
    ),
    case(lambda k, c: ScriptedAgent(NUL), InvalidAgentId, "agent id", "agent-id-NUL"),
    # ---- ctx.emit / reply ----------------------------------------------------------------
    case(lambda k, c: c.emit(NUL, Event("t")), TopicError, "NUL", "emit-topic"),
    case(lambda k, c: c.emit("out.x", b"raw"), EventError, "takes an Event", "emit-bytes"),
    case(lambda k, c: c.reply("request", Event("t")), EventError, "request Event", "reply-str"),
    case(
        lambda k, c: c.reply(Event("q", metadata={"reply_to": "a b"}), Event("t")),
        TopicError,
        "whitespace",
        "reply-to-garbage",
    ),
    # ---- ctx.request / fanout / barrier / contract_net -----------------------------------
    case(
        lambda k, c: c.request("svc.x", b"q", timeout_s=math.nan),
        CollabError,
        "timeout_s",
        "request-timeout-nan",
    ),
    case(
        lambda k, c: c.request("svc.x", b"q", timeout_s="5"),
        CollabError,
        "timeout_s",
        "request-timeout-str",
    ),
    case(
        lambda k, c: c.request("svc.x", b"q", timeout_s=True),
        CollabError,
        "timeout_s",
        "request-timeout-bool",
    ),
    case(
        lambda k, c: c.request(SURROGATE, b"q", timeout_s=1),
        TopicError,
        "surrogate",
        "request-topic",
    ),
    case(
        lambda k, c: c.request("svc.x", SURROGATE, timeout_s=1),
        CollabError,
        "valid text",
        "request-message-surr",
    ),
    case(
        lambda k, c: c.request("svc.x", 42, timeout_s=1),
        EventError,
        "Event, bytes or str",
        "request-message-int",
    ),
    case(
        lambda k, c: c.request("svc.x", event_with_thread("a.b"), timeout_s=1),
        CollabError,
        "thread_id",
        "request-thread-dotted",
    ),
    case(
        lambda k, c: c.request("svc.x", event_with_thread("a b"), timeout_s=1),
        TopicError,
        "whitespace",
        "request-thread-space",
    ),
    case(
        lambda k, c: c.fanout("svc.x", b"q", timeout_s=1),
        CollabError,
        "list of topics",
        "fanout-one-str",
    ),
    case(lambda k, c: c.fanout(5, b"q", timeout_s=1), CollabError, "list", "fanout-int"),
    case(
        lambda k, c: c.fanout(["svc.x"], b"q", timeout_s=-1),
        CollabError,
        "timeout_s",
        "fanout-timeout",
    ),
    case(
        lambda k, c: c.fanout(["svc.x"], b"q", timeout_s=1, strategy="some"),
        CollabError,
        "strategy",
        "fanout-strategy",
    ),
    case(
        lambda k, c: c.fanout(["svc.x", NUL], b"q", timeout_s=1),
        TopicError,
        "NUL",
        "fanout-topic-NUL",
    ),
    case(lambda k, c: c.barrier("b", 0, timeout_s=1), CollabError, "n >= 1", "barrier-n"),
    case(lambda k, c: c.barrier("a.b", 2, timeout_s=1), CollabError, "one topic", "barrier-name"),
    case(lambda k, c: c.barrier(NUL, 2, timeout_s=1), TopicError, "NUL", "barrier-name-NUL"),
    case(
        lambda k, c: c.barrier("b", 2, timeout_s=math.nan),
        CollabError,
        "timeout_s",
        "barrier-timeout",
    ),
    case(
        lambda k, c: k.collaborator().barrier("b", 2, timeout_s=1, participant=NUL),
        CollabError,
        "participant .* NUL",
        "barrier-participant-NUL",
    ),
    case(
        lambda k, c: c.contract_net("job", b"cfp", window_s=math.nan),
        CollabError,
        "window_s",
        "contract_net-window",
    ),
    case(
        lambda k, c: c.contract_net("job", b"cfp", window_s=1, max_awards=0),
        CollabError,
        "max_awards",
        "contract_net-awards",
    ),
    case(
        lambda k, c: c.contract_net("a.b", b"cfp", window_s=1),
        CollabError,
        "thread id",
        "contract_net-thread",
    ),
    case(
        lambda k, c: c.contract_net("job", SURROGATE, window_s=1),
        CollabError,
        "valid text",
        "contract_net-cfp-surr",
    ),
    # ---- ctx.invoke ----------------------------------------------------------------------
    case(lambda k, c: c.invoke("t.echo", timeout_s=math.inf), ActionCallError, "finite", "inf"),
    case(lambda k, c: c.invoke("t.echo", timeout_s=math.nan), ActionCallError, "finite", "nan"),
    case(lambda k, c: c.invoke("t.echo", timeout_s="5"), ActionCallError, "timeout_s", "t-str"),
    case(lambda k, c: c.invoke("t.echo", timeout_s=True), ActionCallError, "timeout_s", "t-bool"),
    case(lambda k, c: c.invoke("t.echo", timeout_s=-1), ActionCallError, "> 0", "t-negative"),
    case(lambda k, c: c.invoke("t.echo", timeout_s=1e300), ActionCallError, "int64", "t-huge"),
    case(
        lambda k, c: c.invoke("t.echo", nested(100_000)),
        ActionCallError,
        "nested too deeply",
        "invoke-args-deep",
    ),
    case(
        lambda k, c: c.invoke("t.echo", {"x": math.nan}),
        ActionCallError,
        "NaN",
        "invoke-args-nan",
    ),
    case(
        lambda k, c: c.invoke("t.echo", {"x": -math.inf}),
        ActionCallError,
        "standard JSON",
        "invoke-args-inf",
    ),
    case(
        lambda k, c: c.invoke("t.echo", {"x": {1, 2}}),
        ActionCallError,
        "JSON-serialisable",
        "invoke-args-set",
    ),
    case(lambda k, c: c.invoke(""), ActionCallError, "capability name", "invoke-cap-empty"),
    case(lambda k, c: c.invoke(5), ActionCallError, "capability name", "invoke-cap-int"),
    case(lambda k, c: c.invoke("t.echo\x00"), ActionCallError, "NUL", "invoke-cap-NUL"),
    case(lambda k, c: c.invoke("t.echo", priority=101), ActionCallError, "priority", "priority"),
    case(lambda k, c: c.invoke("t.echo", call_id=NUL), ActionCallError, "NUL", "invoke-id-NUL"),
    case(lambda k, c: c.invoke("t.echo", call_id=7), ActionCallError, "call_id", "invoke-id-int"),
    case(lambda k, c: c.invoke("t.echo", version=1), ActionCallError, "version", "invoke-ver-int"),
    case(
        lambda k, c: c.invoke("t.echo", version=SURROGATE),
        ActionCallError,
        "surrogate",
        "invoke-ver-surr",
    ),
    # ---- ActionCall, the orchestrator ----------------------------------------------------
    case(lambda k, c: ActionCall("c", "t.echo", timeout_ms=2**63), ActionCallError, "int64", "ms"),
    case(lambda k, c: ActionCall("c", "t.echo", timeout_ms=-1), ActionCallError, "from 0", "ms-1"),
    case(lambda k, c: ActionCall("c", "t.echo", timeout_ms="5"), ActionCallError, "int", "ms-s"),
    case(lambda k, c: ActionCall(NUL, "t.echo"), ActionCallError, "id .* NUL", "call-id-NUL"),
    case(lambda k, c: ActionCall("c", ""), ActionCallError, "no capability", "call-cap-empty"),
    case(
        lambda k, c: ActionCall("c", "t.echo", headers={"k": 5}),
        ActionCallError,
        "headers",
        "call-headers-int",
    ),
    case(
        lambda k, c: ActionCall("c", "t.echo", headers={"k": SURROGATE}),
        ActionCallError,
        "surrogate",
        "call-headers-surr",
    ),
    case(lambda k, c: ActionCall("c", "t.echo", payload="{}"), ActionCallError, "bytes", "pay"),
    case(lambda k, c: ActionCall("c", "t.echo", qos=7), QoSError, "unknown QoS", "call-qos"),
    case(
        lambda k, c: ActionCall.with_args("c", "t.echo", [math.nan]),
        ActionCallError,
        "NaN",
        "with_args-nan",
    ),
    case(
        lambda k, c: ActionCall.with_args("c", "t.echo", nested(100_000)),
        ActionCallError,
        "nested",
        "with_args-deep",
    ),
    case(lambda k, c: ActionResult("c", 9), CapabilityError, "ACTION_OK 0", "result-status"),
    case(
        lambda k, c: ActionResult.success("c", {"x": math.nan}),
        CapabilityError,
        "NaN",
        "result-output-nan",
    ),
    case(
        lambda k, c: ToolOrchestrator(k.broker, orchestrate, per_tool_timeout_s=1e300),
        CapabilityError,
        "int64",
        "orchestrator-timeout",
    ),
    case(lambda k, c: orchestrate(k, NUL), ActionCallError, "NUL", "orchestrator-correlation"),
]


@capability("t.echo")
async def echo(args: dict[str, Any]) -> Any:
    return args


async def pong(ctx: Context, event: Event) -> None:
    """The victim's proof of life: a reply, an invoke and a request, all still working."""
    result = await ctx.invoke("t.echo", {"n": 1})
    answer = await ctx.request("svc.echo", event.payload, timeout_s=5)
    await ctx.emit(
        "out.pong", Event("pong", answer.payload, metadata={"echo": result.output.decode()})
    )


@pytest.mark.parametrize(("attempt", "error", "match"), GARBAGE)
async def test_garbage_raises_a_typed_error_and_the_kernel_works_on(
    attempt: Attempt,
    error: type[LoomkError],
    match: str,
    autojump_clock: trio.testing.MockClock,
) -> None:
    raised: list[BaseException | None] = []
    done = trio.Event()

    async def go(ctx: Context, event: Event) -> None:
        try:
            outcome = attempt(ctx.kernel, ctx)  # type: ignore[arg-type]
            if isinstance(outcome, Awaitable):
                await outcome
        except Exception as exc:
            raised.append(exc)
        else:
            raised.append(None)
        finally:
            done.set()

    async with open_test_kernel() as kernel:
        kernel.broker.register(echo)
        await start_responder(kernel, "svc.echo")
        victim = await kernel.spawn(ScriptedAgent("victim", {"go": go, "ping": pong}))
        before = sorted((s.pattern, s.qos) for s in kernel.bus.subscription_stats())
        await kernel.bus.publish("in.victim", Event("go"))
        with trio.fail_after(60):
            await done.wait()

        [exc] = raised
        assert exc is not None, "the garbage was accepted"
        assert type(exc) is error, repr(exc)
        assert isinstance(exc, LoomkError)
        assert exc.code == error.code
        assert str(exc) == exc.message
        assert re.search(match, exc.message), exc.message

        # the kernel is unharmed: the agent, the bus, collaboration and the broker work on
        assert sorted((s.pattern, s.qos) for s in kernel.bus.subscription_stats()) == before
        assert "bad" not in kernel.agents
        assert kernel.collab_service.waiting == 0
        assert kernel.collab_service.stats().barriers_open == 0
        with capture_events(kernel.bus, "out.pong") as pongs:
            await kernel.bus.publish("in.victim", Event("ping", b"alive"))
            with trio.fail_after(60):
                [proof] = await pongs.wait_for(1)
        assert proof.payload == b"re:alive"
        assert proof.metadata["echo"] == '{"n": 1}'
        assert victim.restarts == 0
        assert victim.failures == 0
        assert not kernel.stopping
        await kernel.spawn(ScriptedAgent("bad"))  # a name a refused spawn did not take
        assert kernel.subscriptions("bad") == ["agent.bad.replies", "in.bad"]


async def test_broker_invoke_answers_garbage_with_invalid_params_and_works_on() -> None:
    """The broker never raises: a call forged past ActionCall's checks is INVALID_PARAMS."""
    async with open_test_kernel() as kernel:
        kernel.broker.register(echo)
        for name, value in [
            ("id", NUL),
            ("capability", SURROGATE),
            ("timeout_ms", 2**63),
            ("headers", {"sender": NUL}),
            ("payload", None),
            ("qos", 7),
        ]:
            forged = ActionCall("c1", "t.echo")
            object.__setattr__(forged, name, value)
            result = await kernel.broker.invoke(forged)
            assert result.code == "INVALID_PARAMS", name
            assert result.id == ("" if name == "id" else "c1")
        assert (await kernel.broker.invoke(ActionCall.with_args("c2", "t.echo", {"a": 1}))).ok
        assert kernel.broker.stats().capability("t.echo").calls == 1
