"""The manager's handling of configured servers (those given to ``open_mcp``, a kernel's
``mcp_servers``): started together, a failure reported and retried rather than raised; and
``add`` racing ``remove`` of the same name."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import pytest
import trio
import trio.testing
from mcp_support import SERVERS, broken, invoke, toolbox
from support import capture_component_logs

from loomk.config import McpServerSettings
from loomk.mcp import McpError, open_mcp
from loomk.testing import open_test_kernel


async def test_configured_servers_start_together_and_failures_do_not_stop_the_others() -> None:
    """Three servers that hang in the handshake (3 s each) and a good one: started one
    after another, that would take 9 s and more; together, about 3 s. Each hanging one is
    reported as failed with its reason, and logged as an error naming it (the long backoff
    keeps it failed for the test)."""
    hanging = [broken("hang", name=f"hang{i}", timeout_s=3) for i in range(3)]
    async with open_test_kernel() as kernel:
        with trio.fail_after(30), capture_component_logs("loomk.mcp") as records:
            began = trio.current_time()
            async with open_mcp(kernel, [*hanging, toolbox()], backoff_s=60) as mcp:
                assert trio.current_time() - began < 7.5
                assert mcp.servers() == ["box", "hang0", "hang1", "hang2"]
                for server in hanging:
                    info = mcp.info(server.name)
                    assert info.state == "failed"
                    assert f"{server.name!r}" in info.last_error
                    assert "handshake" in info.last_error
                assert (await invoke(kernel.broker, "box:echo", {"text": "fine"})).ok
                assert mcp.info("box").state == "ready"
                errors = {r["server"]: r["reason"] for r in records if r["log_level"] == "error"}
                assert sorted(errors) == ["hang0", "hang1", "hang2"]
                assert "handshake" in errors["hang1"]
                assert await mcp.remove("hang0")
                assert mcp.servers() == ["box", "hang1", "hang2"]


async def test_a_configured_server_that_fails_at_first_is_tried_again_until_it_works(
    tmp_path: Path,
) -> None:
    """A server whose program is not there yet fails its first attempt; once the program
    exists the retries bring it in, tools registered, with no call from the program."""
    script = tmp_path / "late.py"
    late = McpServerSettings("late", command=sys.executable, args=(str(script), "stdio"))
    async with open_test_kernel() as kernel:
        with trio.fail_after(30):
            async with open_mcp(kernel, [late], backoff_s=0.05, max_backoff_s=0.2) as mcp:
                assert "late" in mcp.info("late").last_error
                assert "late:echo" not in kernel.broker
                shutil.copy(SERVERS / "toolbox.py", script)
                info = await mcp.wait_ready("late")
                assert info.state == "ready"
                assert info.last_error == ""
                assert (await invoke(kernel.broker, "late:echo", {"text": "here"})).ok
                assert mcp.stats().servers["late"].restarts >= 1


async def test_reconnect_tries_a_failed_server_now(tmp_path: Path) -> None:
    script = tmp_path / "late.py"
    late = McpServerSettings("late", command=sys.executable, args=(str(script), "stdio"))
    async with open_test_kernel() as kernel:
        with trio.fail_after(30):
            async with open_mcp(kernel, [late], backoff_s=60) as mcp:
                assert mcp.info("late").state == "failed"
                shutil.copy(SERVERS / "toolbox.py", script)
                info = await mcp.reconnect("late")  # now, not after the 60 s backoff
                assert info.state == "ready"
                assert "late:echo" in kernel.broker


async def test_configured_settings_no_connection_can_come_of_are_reported() -> None:
    odd = broken("hang", name="odd", protocol_version="0.1")
    async with open_test_kernel() as kernel, open_mcp(kernel, [odd, toolbox()]) as mcp:
        assert mcp.servers() == ["box", "odd"]
        info = mcp.info("odd")
        assert info.state == "failed"
        assert "unsupported protocol version" in info.last_error
        with pytest.raises(McpError, match="unsupported protocol version"):
            await mcp.reconnect("odd")
        with pytest.raises(McpError, match="already added"):
            await mcp.add(toolbox("odd"))
        assert await mcp.remove("odd")
        assert mcp.servers() == ["box"]


async def test_add_from_code_still_raises_at_once() -> None:
    async with open_test_kernel() as kernel, open_mcp(kernel) as mcp:
        with trio.fail_after(20), pytest.raises(McpError, match="'bad'"):
            await mcp.add(broken("exit"))
        assert mcp.servers() == []


async def test_removing_a_server_while_it_is_being_added() -> None:
    """``remove`` during ``add`` of the same name: the ``add`` ends with an error saying
    so (it used to wait forever, and its clean-up then raised ``KeyError``), and the name
    can be added again."""
    outcome: list[McpError] = []
    async with open_test_kernel() as kernel, open_mcp(kernel) as mcp:

        async def adding() -> None:
            try:
                await mcp.add(broken("hang", name="slow", timeout_s=60))
            except McpError as error:
                outcome.append(error)

        with trio.fail_after(20):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(adding)
                await trio.testing.wait_all_tasks_blocked()  # add waits for the handshake
                assert mcp.info("slow").state == "connecting"
                assert await mcp.remove("slow")
            (error,) = outcome
            assert "'slow'" in error.message
            assert "removed" in error.message
            assert mcp.servers() == []
            await mcp.add(toolbox("slow"))
            assert mcp.servers() == ["slow"]
            assert (await invoke(kernel.broker, "slow:echo", {"text": "again"})).ok


async def test_a_cancelled_add_leaves_nothing_behind() -> None:
    """A cancelled ``add`` stops its half-made connection; the name is free again."""
    async with open_test_kernel() as kernel, open_mcp(kernel) as mcp:
        with trio.fail_after(20):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(mcp.add, broken("hang", name="slow", timeout_s=60))
                await trio.testing.wait_all_tasks_blocked()
                nursery.cancel_scope.cancel()
            assert mcp.servers() == []
            await mcp.add(toolbox("slow"))
            assert (await invoke(kernel.broker, "slow:echo", {"text": "mine"})).ok
