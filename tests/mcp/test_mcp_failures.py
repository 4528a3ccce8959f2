"""MCP servers that fail: at the start (``add`` raises a clear :class:`McpError` naming the
server, and the kernel and the other servers carry on), and mid-session (a killed server's
call in flight ends at once with ``TRANSPORT_ERROR``; the supervisor brings it back with its
tools)."""

from __future__ import annotations

import os
import signal

import pytest
import trio
from mcp_support import broken, invoke, toolbox

from loomk import ActionStatus
from loomk.config import McpServerSettings
from loomk.mcp import McpError, open_mcp
from loomk.testing import open_test_kernel


@pytest.mark.parametrize(
    ("settings", "code", "words"),
    [
        (broken("garbage"), "PROTOCOL_ERROR", "not JSON-RPC"),
        (broken("exit"), "TRANSPORT_ERROR", "closed the connection during the handshake"),
        (broken("hang", timeout_s=0.5), "TIMEOUT", "did not finish the handshake within 0.5 s"),
        (broken("version"), "PROTOCOL_ERROR", "1999-01-01"),
        (broken("version", protocol_version="2025-06-18"), "PROTOCOL_ERROR", "not the '2025-06"),
        (broken("hang", protocol_version="0.1"), "PROTOCOL_ERROR", "unsupported protocol version"),
        (McpServerSettings("bad", command="/no/such/server"), "TRANSPORT_ERROR", "such"),
        (McpServerSettings("bad"), "TRANSPORT_ERROR", "exactly one of command and url"),
    ],
    ids=[
        "garbage",
        "exit",
        "hang",
        "version",
        "wanted-version",
        "bad-version",
        "no-command",
        "none",
    ],
)
async def test_a_server_that_fails_at_the_start_is_refused_clearly(
    settings: McpServerSettings, code: str, words: str
) -> None:
    async with open_test_kernel() as kernel, open_mcp(kernel, [toolbox()]) as mcp:
        with trio.fail_after(20):
            with pytest.raises(McpError) as caught:
                await mcp.add(settings)
        assert caught.value.code == code
        assert "'bad'" in caught.value.message
        assert words in caught.value.message
        assert mcp.servers() == ["box"]
        assert not [d for d in kernel.broker.list_capabilities() if d.name.startswith("bad:")]
        assert (await invoke(kernel.broker, "box:echo", {"text": "fine"})).ok
        assert (await invoke(kernel.broker, "math.eval", {"expression": "1+1"})).ok


async def test_open_mcp_raises_for_a_bad_server() -> None:
    async with open_test_kernel() as kernel:
        with pytest.raises(McpError, match="'bad'"):
            async with open_mcp(kernel, [toolbox(), broken("exit")]):
                pass  # pragma: no cover
        assert "box:echo" not in kernel.broker


async def test_a_server_killed_mid_call_fails_the_call_and_comes_back() -> None:
    async with open_test_kernel() as kernel, open_mcp(kernel, [toolbox()]) as mcp:
        first_pid = (await invoke(kernel.broker, "box:pid")).json()["structured"]["result"]
        arrived = trio.Event()
        stop = kernel.broker.watch(arrived.set)  # `block` announces a tool list change
        outcome = []

        async def blocked_call() -> None:
            outcome.append(await invoke(kernel.broker, "box:block"))

        with trio.fail_after(20):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(blocked_call)
                await arrived.wait()  # the server is inside the call now
                stop()
                os.kill(first_pid, signal.SIGKILL)
            [result] = outcome
            assert result.status is ActionStatus.ACTION_ERROR
            assert result.code == "TRANSPORT_ERROR"

            down = await invoke(kernel.broker, "box:echo", {"text": "anyone?"})
            assert down.code in ("PROVIDER_UNAVAILABLE", "TRANSPORT_ERROR")
            assert "box:echo" in kernel.broker  # kept registered while down

            info = await mcp.wait_ready("box")
        assert "echo" in info.tools
        assert "box:echo" in kernel.broker
        second_pid = (await invoke(kernel.broker, "box:pid")).json()["structured"]["result"]
        assert second_pid != first_pid
        assert (await invoke(kernel.broker, "box:echo", {"text": "back"})).ok
        stats = mcp.stats().servers["box"]
        assert stats.restarts == 1
        assert stats.connects == 2
        assert stats.transport_errors >= 1
