"""Loom's SDK flows (a grpcio client in its own process) against loomk's bridge server.

The client is ``loom_client``: a stand-in for Loom's loom-py that speaks its wire protocol
with stubs generated from ``schemas/`` inside the child process. Each flow is one of Loom's
own bridge tests or SDK paths; what loomk adds (remote capabilities in the broker, agents in
the directory) is checked from the kernel's side.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import pytest
import trio
from bridge_support import bridge_kernel, until
from integration.loom_client.scenarios import open_scenario, run_scenario

from loomk import ActionCall, ActionStatus, Agent, Context, ErrorCode, Event, Kernel, capability
from loomk_bridge import BridgeServer

pytestmark = pytest.mark.e2e


@pytest.fixture
async def bridged() -> AsyncIterator[tuple[Kernel, BridgeServer]]:
    async with bridge_kernel() as pair:
        yield pair


def _ok(final: dict[str, Any], returncode: int | None) -> None:
    assert final["ok"] is True, final
    assert returncode == 0


async def test_register_heartbeat_and_inline_ping(bridged: tuple[Kernel, BridgeServer]) -> None:
    _, server = bridged
    registered = await run_scenario(server.address, "register")
    _ok(registered.final, registered.returncode)
    [empty] = registered.steps("register_empty")
    assert (empty["success"], "agent_id" in empty["error_message"]) == (False, True)
    beat = await run_scenario(server.address, "heartbeat")
    _ok(beat.final, beat.returncode)
    assert [(s["timestamp_ms"], s["status"]) for s in beat.steps("heartbeat")][-1] == (12345, "ok")
    ping = await run_scenario(server.address, "inline_ping")
    _ok(ping.final, ping.returncode)
    [pong] = ping.steps("pong")
    assert pong["status"] == "ok"


async def test_stream_echo_as_in_looms_e2e_test(bridged: tuple[Kernel, BridgeServer]) -> None:
    _, server = bridged
    result = await run_scenario(server.address, "stream_echo")
    _ok(result.final, result.returncode)
    delivery = result.steps("delivery")[0]
    assert (delivery["topic"], delivery["type"], delivery["payload"]) == (
        "topic.test",
        "test_input",
        "hello",
    )
    assert delivery["metadata"]["loom.sender"] == "agentA"


@pytest.mark.parametrize("first", ["publish", "ping", "none"])
async def test_a_stream_without_the_ack_first_is_refused(
    bridged: tuple[Kernel, BridgeServer], first: str
) -> None:
    _, server = bridged
    result = await run_scenario(server.address, "no_ack_first", {"first": first})
    _ok(result.final, result.returncode)
    expected = (
        "no first message"
        if first == "none"
        else "first stream message must be Ack carrying agent_id"
    )
    assert (result.final["code"], result.final["details"]) == ("INVALID_ARGUMENT", expected)


async def test_forward_action_reaches_a_kernel_capability(
    bridged: tuple[Kernel, BridgeServer],
) -> None:
    kernel, server = bridged

    @capability("test.echo", version="1.0.0")
    async def echo(args: dict[str, Any]) -> Any:
        return args

    kernel.broker.register(echo)
    ok = await run_scenario(
        server.address, "forward_action", {"capability": "test.echo", "json": {"x": "ping"}}
    )
    _ok(ok.final, ok.returncode)
    assert (ok.final["status"], json.loads(ok.final["output"])) == ("ACTION_OK", {"x": "ping"})
    missing = await run_scenario(server.address, "forward_missing")
    _ok(missing.final, missing.returncode)
    assert (missing.final["status"], missing.final["error_code"]) == (
        "ACTION_ERROR",
        "BROKER_ERROR",
    )


class _Asker(Agent):
    """An in-kernel agent that calls the SDK agent's capability with ``ctx.invoke``."""

    topics = ("ask.upper",)

    def __init__(self) -> None:
        super().__init__("asker")
        self.results: list[Any] = []
        self.answered = trio.Event()

    async def on_event(self, ctx: Context, event: Event) -> None:
        self.results.append(await ctx.invoke("echo.upper", {"text": event.payload.decode()}))
        self.answered.set()


async def test_an_sdk_agents_capability_serves_the_broker_and_agents(
    bridged: tuple[Kernel, BridgeServer],
) -> None:
    kernel, server = bridged
    async with open_scenario(server.address, "serve_capability", {"count": 2}) as worker:
        await worker.wait_for("ready")
        assert "worker" in kernel.directory
        assert kernel.directory.by_capability("echo.upper") == ["worker"]
        direct = await kernel.broker.invoke(ActionCall.with_args("k1", "echo.upper", {"text": "a"}))
        asker = _Asker()
        await kernel.spawn(asker)
        await kernel.bus.publish("ask.upper", Event("ask", payload=b"b"))
        await asker.answered.wait()
        final = await worker.finish()
    _ok(final, worker.process.returncode)
    assert (direct.status, direct.json()) == (ActionStatus.ACTION_OK, {"text": "A"})
    (via_agent,) = asker.results
    assert via_agent.json() == {"text": "B"}
    calls = [line for line in worker.lines if line.get("step") == "action_call"]
    assert [c["capability"] for c in calls] == ["echo.upper", "echo.upper"]
    assert kernel.broker.resolve("echo.upper", "1.0.0") is not None  # the SDK's "1.0"


async def test_sdk_errors_come_back_as_results(bridged: tuple[Kernel, BridgeServer]) -> None:
    kernel, server = bridged
    args = {
        "capabilities": [
            {"name": "echo.upper", "behaviour": "upper"},
            {"name": "echo.fail", "behaviour": "fail"},
        ]
    }
    async with open_scenario(server.address, "serve_capability", args) as worker:
        await worker.wait_for("ready")
        bad_input = await kernel.broker.invoke(ActionCall.with_args("k1", "echo.upper", {"txt": 1}))
        raised = await kernel.broker.invoke(ActionCall.with_args("k2", "echo.fail", {"text": "x"}))
        await worker.send_line("stop")
        await worker.finish()
    assert (bad_input.status, bad_input.code) == (ActionStatus.ACTION_ERROR, "INVALID_INPUT")
    assert (raised.status, raised.code) == (ActionStatus.ACTION_ERROR, "CAPABILITY_ERROR")


async def test_killing_the_sdk_process_mid_call_fails_the_call_at_once(
    bridged: tuple[Kernel, BridgeServer],
) -> None:
    kernel, server = bridged
    args = {"capabilities": [{"name": "slow.op", "behaviour": "slow", "delay": 600}]}
    outcome: list[Any] = []
    async with open_scenario(server.address, "serve_capability", args) as worker:
        await worker.wait_for("ready")
        async with trio.open_nursery() as nursery:

            async def call() -> None:
                slow = ActionCall.with_args("k1", "slow.op", {"text": "x"}, timeout_ms=600_000)
                with trio.fail_after(60):  # far below the call's own ten minutes
                    outcome.append(await kernel.broker.invoke(slow))

            nursery.start_soon(call)
            await worker.wait_for("action_call")
            worker.process.kill()
    (result,) = outcome
    assert (result.status, result.code) == (
        ActionStatus.ACTION_ERROR,
        ErrorCode.PROVIDER_UNAVAILABLE,
    )
    await until(server, lambda: not server.streaming("worker"))


async def test_kernel_events_reach_an_sdk_listener_in_order(
    bridged: tuple[Kernel, BridgeServer],
) -> None:
    kernel, server = bridged
    n = 200
    async with open_scenario(
        server.address, "listen", {"topics": ["topic.bench"], "count": n}
    ) as listener:
        await listener.wait_for("ready")
        for i in range(n):
            await kernel.bus.publish("topic.bench", Event("tick", payload=str(i).encode()))
        final = await listener.finish()
    _ok(final, listener.process.returncode)
    payloads = [line["payload"] for line in listener.lines if line.get("step") == "delivery"]
    assert payloads == [str(i) for i in range(n)]


async def test_sdk_publishes_reach_an_sdk_listener_through_the_kernel(
    bridged: tuple[Kernel, BridgeServer],
) -> None:
    _, server = bridged
    n = 200
    async with open_scenario(
        server.address, "listen", {"topics": ["topic.bench"], "count": n}
    ) as listener:
        await listener.wait_for("ready")
        published = await run_scenario(
            server.address, "publish_many", {"n": n, "topic": "topic.bench"}
        )
        _ok(published.final, published.returncode)
        final = await listener.finish()
    _ok(final, listener.process.returncode)
    payloads = [line["payload"] for line in listener.lines if line.get("step") == "delivery"]
    assert payloads == [str(i) for i in range(n)]


async def test_sdk_request_answered_by_an_sdk_responder(
    bridged: tuple[Kernel, BridgeServer],
) -> None:
    _, server = bridged
    async with open_scenario(server.address, "respond", {"count": 1}) as responder:
        await responder.wait_for("ready")
        result = await run_scenario(
            server.address, "request", {"payload": "hello", "expect_payload": "HELLO"}
        )
        _ok(result.final, result.returncode)
        await responder.finish()


async def test_sdk_request_answered_by_a_loomk_agent(
    bridged: tuple[Kernel, BridgeServer],
) -> None:
    kernel, server = bridged

    class Upper(Agent):
        topics = ("topic.requests",)

        async def on_event(self, ctx: Context, event: Event) -> None:
            await ctx.reply(event, Event("answer", event.payload.upper()))

    await kernel.spawn(Upper("upper"))
    result = await run_scenario(
        server.address, "request", {"payload": "hello", "expect_payload": "HELLO"}
    )
    _ok(result.final, result.returncode)
    [reply] = result.steps("reply")
    assert reply["metadata"]["loom.sender"] == "upper"  # the SDK's spelling, no "agent."


async def test_loomk_request_answered_by_an_sdk_responder(
    bridged: tuple[Kernel, BridgeServer],
) -> None:
    kernel, server = bridged
    async with open_scenario(server.address, "respond", {"count": 1}) as responder:
        await responder.wait_for("ready")
        with trio.fail_after(30):
            answer = await kernel.collaborator("agent.asker").request(
                "topic.requests", "hello", timeout_s=20
            )
        assert answer.payload == b"HELLO"
        assert answer.metadata["sender"] == "agent.responder"
        await responder.finish()
