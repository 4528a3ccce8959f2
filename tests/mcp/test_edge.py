"""The ``mcp`` edge: a kernel with ``mcp_servers`` connects them at start and ``kernel.mcp``
is the running manager; without it, ``kernel.mcp`` says how to get one."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import trio

import loomk
from loomk.config import Config
from loomk.errors import EdgeNotFound
from loomk.mcp import McpError, McpManager
from loomk.testing import open_test_kernel

TIME_SERVER = {
    "name": "time",
    "command": str(Path(sys.executable).parent / "mcp-server-time"),
    "args": ["--local-timezone", "UTC"],
}


async def test_without_mcp_servers_kernel_mcp_says_how_to_get_one() -> None:
    async with open_test_kernel() as kernel:
        with pytest.raises(EdgeNotFound, match=r"set mcp_servers.*open_mcp\(kernel\)"):
            _ = kernel.mcp


async def test_a_kernel_with_mcp_servers_connects_them_and_offers_kernel_mcp(
    tmp_path: Path,
) -> None:
    config = Config.load(
        env={}, cwd=tmp_path, state_temporary=True, log_level="error", mcp_servers=[TIME_SERVER]
    )
    with trio.fail_after(60):
        async with loomk.open_kernel(config) as kernel:
            manager = kernel.mcp
            assert isinstance(manager, McpManager)
            assert manager is kernel.edge("mcp")
            assert manager.servers() == ["time"]
            assert "time:get_current_time" in kernel.capabilities
            call = loomk.ActionCall.with_args(
                "c1",
                "time:convert_time",
                {"source_timezone": "UTC", "time": "06:30", "target_timezone": "Asia/Kolkata"},
            )
            result = await kernel.broker.invoke(call)
            assert result.ok, result.error
            assert "12:00" in result.json()["result"]
            assert await manager.remove("time")
            assert "time:get_current_time" not in kernel.capabilities


async def test_a_bad_server_in_mcp_servers_does_not_stop_the_kernel(tmp_path: Path) -> None:
    """A configured server that exits at start is reported (``info`` says why) while the
    kernel starts and the good server works."""
    config = Config.load(
        env={},
        cwd=tmp_path,
        state_temporary=True,
        log_level="error",
        mcp_servers=[TIME_SERVER, {"name": "bad", "command": "/bin/false"}],
    )
    with trio.fail_after(60):
        async with loomk.open_kernel(config) as kernel:
            manager = kernel.mcp
            assert manager.servers() == ["bad", "time"]
            call = loomk.ActionCall.with_args("c1", "time:get_current_time", {"timezone": "UTC"})
            result = await kernel.broker.invoke(call)
            assert result.ok, result.error
            info = manager.info("bad")
            assert info.state in ("failed", "connecting")  # tried again with backoff
            assert "'bad'" in info.last_error
            assert "closed the connection" in info.last_error
            assert not [d for d in kernel.broker.list_capabilities() if d.name.startswith("bad:")]
            with pytest.raises(McpError, match="'bad'") as caught:
                await manager.reconnect("bad")  # tries it now: fails the same way
            assert caught.value.code == "TRANSPORT_ERROR"
            assert manager.info("time").state == "ready"
