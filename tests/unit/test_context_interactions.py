"""Interactive calls on the agent Context (request, fanout, barrier, contract-net, invoke) and
agent actions as Loom's runtime publishes them.

An interactive call acts outside the agent, so it first commits the state the handler wrote
and publishes the events it held. ``ctx.invoke`` maps priority to QoS, gives the call a fresh
envelope, returns an ActionResult whatever happens (a missing capability no longer ends the
agent) and publishes ``action_result`` on ``agent.{id}``.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
import trio
import trio.testing
from collab_support import (
    Echo,
    loom_reply,
    settle,
)

from loomk import (
    ActionCall,
    ActionResult,
    ActionStatus,
    Agent,
    CollabTimeout,
    Context,
    ErrorCode,
    Event,
    EventError,
    Kernel,
    QoS,
    capability,
)
from loomk.actions.agent_actions import qos_for_priority
from loomk.envelope import RESERVED_KEYS
from loomk.testing import RecordingProvider, ScriptedAgent, capture_events, open_test_kernel


def committed(kernel: Kernel, agent_id: str) -> dict[str, Any]:
    """The agent's committed state."""
    state: dict[str, Any] = json.loads(kernel.agent_state(agent_id).persistent_state)
    return state


# --- interactive calls commit first -------------------------------------------------------


async def test_request_publishes_and_commits_what_the_handler_held(
    autojump_clock: trio.testing.MockClock,
) -> None:
    answers: list[Event] = []
    state_at_request: list[dict[str, Any]] = []

    async def ask(ctx: Context, event: Event) -> None:
        await ctx.emit("obs.note", Event("note", b"before"))
        ctx.state["step"] = 1
        answers.append(await ctx.request("obs.svc", b"q", timeout_s=5))
        await ctx.emit("obs.note", Event("note", b"after"))

    async def responder(task_status: trio.TaskStatus[None]) -> None:
        async with kernel.bus.subscribe("obs.svc") as requests:
            task_status.started()
            async for _, request in requests:
                state_at_request.append(committed(kernel, "asker"))
                topic, reply = loom_reply(request, b"re:" + request.payload, "svc")
                await kernel.bus.publish(topic, reply)

    async with open_test_kernel() as kernel:
        seen = capture_events(kernel.bus, "obs.>")
        await kernel.start(responder)
        await kernel.spawn(ScriptedAgent("asker", {"go": ask}))
        await kernel.bus.publish("in.asker", Event("go"))
        await settle()
        assert committed(kernel, "asker") == {"step": 1}
    assert [(topic, event.type, event.payload) for topic, event in seen.items] == [
        ("obs.note", "note", b"before"),
        ("obs.svc", "collab.request", b"q"),
        ("obs.note", "note", b"after"),
    ]
    assert state_at_request == [{"step": 1}]
    [answer] = answers
    assert answer.payload == b"re:q"
    assert seen.items[1][1].metadata["sender"] == "agent.asker"


Interaction = Callable[[Context], Awaitable[object]]


async def _request(ctx: Context) -> object:
    try:
        return await ctx.request("obs.svc", b"q", timeout_s=1)
    except CollabTimeout:
        return None


INTERACTIONS: dict[str, tuple[str, Interaction]] = {
    # name: (where the call's first message shows, the call)
    "request": ("obs.svc", _request),
    "fanout": ("obs.svc", lambda ctx: ctx.fanout(["obs.svc"], b"q", timeout_s=1)),
    "barrier": ("thread.meet.barrier", lambda ctx: ctx.barrier("meet", 1, timeout_s=1)),
    "contract_net": ("thread.job.broadcast", lambda ctx: ctx.contract_net("job", b"", window_s=1)),
    "invoke": ("", lambda ctx: ctx.invoke("probe.call")),
}


@pytest.mark.parametrize("name", sorted(INTERACTIONS))
async def test_every_interactive_call_commits_first(
    autojump_clock: trio.testing.MockClock, name: str
) -> None:
    """At the moment the call's first message is published (or the provider is called), the
    note emitted before it is out and the state written before it is committed."""
    where, interaction = INTERACTIONS[name]
    probes: list[tuple[int, dict[str, Any]]] = []
    done = trio.Event()

    def probe() -> None:
        probes.append((kernel.bus.stats("obs.note").published, committed(kernel, "actor")))

    async def provider_probe(call: ActionCall) -> ActionResult:
        probe()
        return ActionResult.success(call.id, {"ok": True})

    def on_publish(topic: str, event: Event) -> bool:
        probe()
        return True

    async def act(ctx: Context, event: Event) -> None:
        await ctx.emit("obs.note", Event("note"))
        ctx.state["written"] = name
        await interaction(ctx)
        done.set()

    async with open_test_kernel() as kernel:
        if where:
            kernel.bus.attach_handler(where, on_publish)
        kernel.broker.register(RecordingProvider("probe.call", behaviour=provider_probe))
        await kernel.spawn(ScriptedAgent("actor", {"go": act}))
        await kernel.bus.publish("in.actor", Event("go"))
        with trio.fail_after(10):
            await done.wait()
    assert probes[0] == (1, {"written": name})


# --- invoke and action_result -------------------------------------------------------------


async def test_invoke_returns_the_result_and_publishes_action_result(
    autojump_clock: trio.testing.MockClock,
) -> None:
    results: list[ActionResult] = []

    @capability("math.double")
    async def double(args: dict[str, Any]) -> Any:
        return {"value": args["x"] * 2}

    async def go(ctx: Context, event: Event) -> None:
        results.append(await ctx.invoke("math.double", {"x": 21}, priority=80))

    async with open_test_kernel() as kernel:
        kernel.broker.register(double)
        seen = capture_events(kernel.bus, "agent.worker")
        await kernel.spawn(ScriptedAgent("worker", {"go": go}))
        await kernel.bus.publish("in.worker", Event("go"))
        await settle()
    [result] = results
    assert result.status is ActionStatus.ACTION_OK
    assert result.json() == {"value": 42}
    [(topic, event)] = seen.items
    assert topic == "agent.worker"
    assert event.type == "action_result"
    assert event.source == "agent.worker"
    assert event.tags == ("action",)
    assert event.priority == 80
    assert event.payload == result.output
    meta = event.metadata
    assert meta["action_type"] == "math.double"
    assert meta["status"] == "ok"
    assert "error_code" not in meta
    assert set(RESERVED_KEYS) <= meta.keys()
    assert meta["thread_id"] == meta["correlation_id"] == result.id
    assert meta["sender"] == "agent.worker"
    assert meta["reply_to"] == f"thread.{result.id}.reply"


async def _hang(call: ActionCall) -> None:
    await trio.sleep_forever()


async def _fail(call: ActionCall) -> None:
    raise RuntimeError("provider broke")


@pytest.mark.parametrize(
    ("provider", "status", "code"),
    [
        (None, ActionStatus.ACTION_ERROR, ErrorCode.PROVIDER_UNAVAILABLE),
        (_fail, ActionStatus.ACTION_ERROR, ErrorCode.CAPABILITY_ERROR),
        (_hang, ActionStatus.ACTION_TIMEOUT, ErrorCode.ACTION_TIMEOUT),
    ],
)
async def test_a_failed_call_is_a_result_and_the_agent_keeps_running(
    autojump_clock: trio.testing.MockClock,
    provider: Callable[[ActionCall], Awaitable[None]] | None,
    status: ActionStatus,
    code: str,
) -> None:
    results: list[ActionResult] = []
    handled = trio.Event()

    async def go(ctx: Context, event: Event) -> None:
        results.append(await ctx.invoke("flaky.call", {"a": 1}, timeout_s=2, priority=20))

    async def after(ctx: Context, event: Event) -> None:
        handled.set()

    async with open_test_kernel() as kernel:
        if provider is not None:
            kernel.broker.register(RecordingProvider("flaky.call", behaviour=provider))
        seen = capture_events(kernel.bus, "agent.worker")
        handle = await kernel.spawn(ScriptedAgent("worker", {"go": go, "next": after}))
        await kernel.bus.publish("in.worker", Event("go"))
        await kernel.bus.publish("in.worker", Event("next"))
        with trio.fail_after(10):
            await handled.wait()  # the agent handled its next event
        assert trio.current_time() == (2.0 if status is ActionStatus.ACTION_TIMEOUT else 0.0)
        stats = handle.stats()
        assert (stats.status, stats.failures, stats.restarts) == ("running", 0, 0)
    [result] = results
    assert (result.status, result.code) == (status, code)
    [(_, event)] = seen.items
    assert event.metadata["status"] == status.label
    assert event.metadata["error_code"] == code
    assert event.metadata["action_type"] == "flaky.call"
    assert event.priority == 20
    assert event.payload == b""


@pytest.mark.parametrize(
    ("priority", "qos"),
    [
        (0, QoS.BACKGROUND),
        (29, QoS.BACKGROUND),
        (30, QoS.BATCHED),
        (50, QoS.BATCHED),
        (69, QoS.BATCHED),
        (70, QoS.REALTIME),
        (100, QoS.REALTIME),
    ],
)
def test_qos_for_priority(priority: int, qos: QoS) -> None:
    assert qos_for_priority(priority) is qos


@pytest.mark.parametrize(
    ("priority", "qos"),
    [(29, QoS.BACKGROUND), (30, QoS.BATCHED), (69, QoS.BATCHED), (70, QoS.REALTIME)],
)
async def test_the_provider_gets_the_qos_and_a_fresh_envelope(
    autojump_clock: trio.testing.MockClock, priority: int, qos: QoS
) -> None:
    provider = RecordingProvider("probe.call")
    results: list[ActionResult] = []

    async def go(ctx: Context, event: Event) -> None:
        results.append(await ctx.invoke("probe.call", {"n": 1}, priority=priority))

    async with open_test_kernel() as kernel:
        kernel.broker.register(provider)
        seen = capture_events(kernel.bus, "agent.worker")
        await kernel.spawn(ScriptedAgent("worker", {"go": go}))
        # the incoming event's thread is not propagated to the call (as in Loom)
        await kernel.bus.publish("in.worker", Event("go", metadata={"thread_id": "incoming"}))
        await settle()
    [call] = provider.calls
    [result] = results
    assert call.qos is qos
    assert call.payload == b'{"n": 1}'
    assert call.id == result.id
    assert call.correlation_id == call.id
    headers = call.headers
    assert set(RESERVED_KEYS) <= headers.keys()
    assert headers["thread_id"] == headers["correlation_id"] == call.id
    assert headers["sender"] == "agent.worker"
    assert headers["reply_to"] == f"thread.{call.id}.reply"
    assert (headers["ttl"], headers["hop"]) == ("16", "0")
    assert headers["ts"].isdigit()
    [(_, event)] = seen.items
    assert event.priority == priority
    assert {key: event.metadata[key] for key in RESERVED_KEYS} == {
        key: headers[key] for key in RESERVED_KEYS
    }


async def test_non_json_arguments_raise_and_the_failure_is_contained(
    autojump_clock: trio.testing.MockClock,
) -> None:
    provider = RecordingProvider("probe.call")
    errors: list[Exception] = []

    async def go(ctx: Context, event: Event) -> None:
        try:
            await ctx.invoke("probe.call", {"when": object()})
        except Exception as error:
            errors.append(error)
            raise

    async with open_test_kernel() as kernel:
        kernel.broker.register(provider)
        seen = capture_events(kernel.bus, "agent.worker")
        failed = capture_events(kernel.bus, "system.agent.failed")
        handle = await kernel.spawn(ScriptedAgent("worker", {"go": go}), restart="temporary")
        await kernel.spawn(Echo("echo", "svc.echo"))
        await kernel.bus.publish("in.worker", Event("go"))
        with trio.fail_after(10):
            await handle.wait_finished()
        await settle()
        [error] = errors
        assert isinstance(error, EventError)
        assert provider.calls == []
        assert seen.items == []  # no call was made, so no action_result
        assert [event.metadata["agent_id"] for event in failed.events] == ["worker"]
        assert "worker" not in kernel.agents
        assert not kernel.stopping
        reply = await kernel.collaborator("tester").request("svc.echo", b"alive", timeout_s=1)
        assert reply.payload == b"echo:alive"
    assert kernel.closed


async def test_a_handler_holding_many_events_still_lets_other_tasks_run() -> None:
    progress: list[str] = []

    async def other() -> None:
        progress.append("other task ran")

    class Chatty(Agent):
        topics = ("in.chatty",)

        async def on_event(self, ctx: Context, event: Event) -> None:
            ctx.kernel.start_soon(other)  # runnable from the handler's next checkpoint on
            for n in range(40):
                await ctx.emit("out.chatty", Event("n", str(n).encode()))
            progress.append("handler done")

    async with open_test_kernel() as kernel:
        await kernel.spawn(Chatty("chatty"))
        await kernel.bus.publish("in.chatty", Event("go"))
        await trio.testing.wait_all_tasks_blocked()
    assert progress == ["other task ran", "handler done"]
