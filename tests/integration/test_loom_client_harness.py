"""The Loom SDK stand-in (``loom_client``) against a Loom-like reference server.

Until loomk's bridge server exists, this checks the harness itself: every scenario runs in
its own process (the generated ``loom.v1`` code must not meet loomk's in one process)
against ``loom_client.reference_server``, which implements Loom's bridge semantics. A
scenario that passes here speaks Loom's protocol, so the same scenario failing against
loomk's server points at the server. Synchronisation is on the children's output lines
(``ready``, ``listening``), each wait bounded; children are always ended.
"""

from __future__ import annotations

import json
import socket
import sys
from collections.abc import AsyncIterator
from typing import Any

import pytest
from integration.loom_client.scenarios import (
    ReferenceServer,
    open_reference_server,
    open_scenario,
    run_scenario,
)

pytestmark = pytest.mark.e2e


@pytest.fixture
async def server() -> AsyncIterator[ReferenceServer]:
    """A reference server on a free port."""
    async with open_reference_server() as reference:
        yield reference


def assert_ok(final: dict[str, object], returncode: int | None) -> None:
    assert final["ok"] is True, final
    assert returncode == 0


async def test_register_and_empty_agent_id(server: ReferenceServer) -> None:
    result = await run_scenario(server.address, "register")
    assert_ok(result.final, result.returncode)
    [registered] = result.steps("registered")
    assert registered["success"] is True
    [empty] = result.steps("register_empty")
    assert empty["success"] is False
    assert "agent_id" in empty["error_message"]


async def test_heartbeat_echoes_the_timestamp(server: ReferenceServer) -> None:
    result = await run_scenario(server.address, "heartbeat")
    assert_ok(result.final, result.returncode)
    sdk_beat, echo = result.steps("heartbeat")
    assert sdk_beat["sent"] == 0  # loom-py's heartbeat() sends an empty request
    assert (echo["timestamp_ms"], echo["status"]) == (12345, "ok")


async def test_stream_echo_after_ack_first(server: ReferenceServer) -> None:
    result = await run_scenario(server.address, "stream_echo")
    assert_ok(result.final, result.returncode)
    [registered] = result.steps("registered")
    assert registered["topics"] == ["topic.test", "agent.agentA.replies"]
    delivery = result.steps("delivery")[0]
    assert (delivery["topic"], delivery["type"], delivery["payload"]) == (
        "topic.test",
        "test_input",
        "hello",
    )
    assert delivery["metadata"] == {"loom.sender": "agentA"}
    opened = await server.child.wait_for("stream_open")
    assert opened["agent_id"] == "agentA"  # the server read the Ack's message_id first


async def test_inline_ping_gets_pong(server: ReferenceServer) -> None:
    result = await run_scenario(server.address, "inline_ping")
    assert_ok(result.final, result.returncode)
    [pong] = result.steps("pong")
    assert pong["status"] == "ok"


async def test_forward_action_echo(server: ReferenceServer) -> None:
    result = await run_scenario(server.address, "forward_action", {"expect_output": "ping"})
    assert_ok(result.final, result.returncode)
    [call] = result.steps("call")
    assert (call["capability"], call["version"]) == ("test.echo", "1.0")
    assert result.final["status"] == "ACTION_OK"
    assert result.final["id"] == call["id"]


async def test_forward_missing_capability(server: ReferenceServer) -> None:
    result = await run_scenario(server.address, "forward_missing")
    assert_ok(result.final, result.returncode)
    assert result.final["status"] == "ACTION_ERROR"
    assert result.final["error_code"] == "BROKER_ERROR"


@pytest.mark.parametrize(
    ("first", "details"),
    [
        ("publish", "first stream message must be Ack carrying agent_id"),
        ("ping", "first stream message must be Ack carrying agent_id"),
        ("none", "no first message"),
    ],
)
async def test_stream_without_ack_first_is_refused(
    server: ReferenceServer, first: str, details: str
) -> None:
    result = await run_scenario(server.address, "no_ack_first", {"first": first})
    assert_ok(result.final, result.returncode)
    assert (result.final["code"], result.final["details"]) == ("INVALID_ARGUMENT", details)


async def test_serve_capability_answers_a_pushed_call(server: ReferenceServer) -> None:
    """Loom's e2e push: the server pushes ``push1`` and reads the agent's result back."""
    async with open_scenario(server.address, "serve_capability", {"count": 1}) as worker:
        await worker.wait_for("ready")
        await server.child.send_line('push worker push1 echo.upper {"text": "done"}')
        stored = await server.child.wait_for("action_result")
        assert (stored["id"], stored["status"]) == ("push1", "ACTION_OK")
        assert json.loads(stored["output"]) == {"text": "DONE"}
        final = await worker.finish()
    assert_ok(final, worker.process.returncode)
    assert final["calls"] == ["push1"]
    [call] = [line for line in worker.lines if line.get("step") == "action_call"]
    assert call["id"] == "push1"


async def test_serve_capability_through_forward_action(server: ReferenceServer) -> None:
    """The composition loomk's tests will use: an agent serves, a client invokes it."""
    args = {
        "capabilities": [
            {"name": "echo.upper", "version": "1.0", "behaviour": "upper"},
            {"name": "echo.fail", "version": "1.0", "behaviour": "fail"},
        ]
    }
    async with open_scenario(server.address, "serve_capability", args) as worker:
        await worker.wait_for("ready")
        ok = await run_scenario(
            server.address,
            "forward_action",
            {"capability": "echo.upper", "json": {"text": "hello"}},
        )
        assert json.loads(ok.final["output"]) == {"text": "HELLO"}
        cases: list[tuple[dict[str, Any], str]] = [
            ({"capability": "echo.upper", "json": {"txt": "hello"}}, "INVALID_INPUT"),
            ({"capability": "echo.upper", "payload": "not json"}, "INVALID_INPUT"),
            ({"capability": "echo.fail", "json": {}}, "CAPABILITY_ERROR"),
        ]
        for call_args, code in cases:
            failed = await run_scenario(
                server.address,
                "forward_action",
                {**call_args, "expect_status": "ACTION_ERROR", "expect_error_code": code},
            )
            assert_ok(failed.final, failed.returncode)
        await server.child.send_line("push worker push9 no.such.capability {}")
        not_found = await server.child.wait_for(
            lambda line: line.get("id") == "push9" and line.get("step") == "action_result"
        )
        assert not_found["error_code"] == "NOT_FOUND"
        await worker.send_line("stop")
        final = await worker.finish()
    assert_ok(final, worker.process.returncode)
    assert (final["reason"], final["received"]) == ("stopped", 5)


async def test_publish_many_reaches_a_listener_in_order(server: ReferenceServer) -> None:
    n = 200
    listen_args = {"topics": ["topic.bench"], "count": n}
    async with open_scenario(server.address, "listen", listen_args) as listener:
        await listener.wait_for("ready")
        published = await run_scenario(
            server.address, "publish_many", {"n": n, "topic": "topic.bench"}
        )
        assert_ok(published.final, published.returncode)
        assert published.final["n"] == n
        final = await listener.finish()
    assert_ok(final, listener.process.returncode)
    payloads = [line["payload"] for line in listener.lines if line.get("step") == "delivery"]
    assert payloads == [str(i) for i in range(n)]


async def test_request_is_answered_by_reply(server: ReferenceServer) -> None:
    async with open_scenario(server.address, "respond", {"count": 1}) as responder:
        await responder.wait_for("ready")
        result = await run_scenario(
            server.address, "request", {"payload": "hello", "expect_payload": "HELLO"}
        )
        assert_ok(result.final, result.returncode)
        request = await responder.wait_for("request")
        final = await responder.finish()
    assert_ok(final, responder.process.returncode)
    # As loom-py sends it: only loom.sender on the wire; the reply carries the request id.
    assert request["metadata"] == {"loom.sender": "requester"}
    [reply] = result.steps("reply")
    assert reply["correlation_id"] == request["id"]
    assert reply["metadata"]["loom.correlation_id"] == request["id"]


async def test_nothing_delivered_fails_within_the_idle_timeout(server: ReferenceServer) -> None:
    result = await run_scenario(server.address, "listen", {"count": 1, "idle_timeout": 0.3})
    assert result.returncode == 1
    assert (result.final["ok"], result.final["reason"]) == (False, "idle_timeout")


async def test_no_server_fails_fast() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    result = await run_scenario(f"127.0.0.1:{port}", "stream_echo", timeout=15)
    assert result.returncode == 1
    assert result.final["ok"] is False
    assert result.final["code"] == "UNAVAILABLE"


def test_this_process_never_loads_the_generated_code() -> None:
    assert "loom.v1" not in sys.modules
    assert "loom" not in sys.modules
