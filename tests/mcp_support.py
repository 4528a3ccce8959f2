"""What the MCP client tests share: settings of the test servers and a call helper.

The servers are real processes: ``mcp-server-time`` from the virtual environment, and the
ones in ``tests/mcp/servers`` run with this interpreter (``toolbox.py``, made with the SDK;
``broken.py``, which misbehaves on purpose).
"""

from __future__ import annotations

import os
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import trio

from loomk import ActionBroker, ActionCall, ActionResult
from loomk.config import McpServerSettings

SERVERS = Path(__file__).resolve().parent / "mcp" / "servers"
TIME_SERVER = str(Path(sys.executable).with_name("mcp-server-time"))
_calls = 0


def toolbox(name: str = "box", **settings: Any) -> McpServerSettings:
    """The SDK-made test server over stdio."""
    return McpServerSettings(
        name, command=sys.executable, args=(str(SERVERS / "toolbox.py"), "stdio"), **settings
    )


def broken(mode: str, name: str = "bad", **settings: Any) -> McpServerSettings:
    """A server that misbehaves in ``mode`` (see ``servers/broken.py``)."""
    return McpServerSettings(
        name, command=sys.executable, args=(str(SERVERS / "broken.py"), mode), **settings
    )


async def tool_pid(broker: ActionBroker, server: str = "box") -> int:
    """The process id of the toolbox named ``server`` (its ``pid`` tool)."""
    result = await invoke(broker, f"{server}:pid")
    assert result.ok, result.error
    pid = result.json()["structured"]["result"]
    assert isinstance(pid, int)
    return pid


def process_gone(pid: int) -> bool:
    """Whether no process ``pid`` exists any more (a zombie still counts as existing)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


async def invoke(broker: ActionBroker, capability: str, args: Any = None) -> ActionResult:
    """Call ``capability`` with ``args`` (a JSON object) through the broker."""
    global _calls
    _calls += 1
    return await broker.invoke(ActionCall.with_args(f"call-{_calls}", capability, args or {}))


@asynccontextmanager
async def toolbox_over_http() -> AsyncIterator[str]:
    """Run the toolbox as a Streamable HTTP server on a free loopback port; its URL."""
    async with toolbox_http_process() as (url, _process):
        yield url


@asynccontextmanager
async def toolbox_http_process(port: int = 0) -> AsyncIterator[tuple[str, trio.Process]]:
    """Run the toolbox as a Streamable HTTP server on loopback ``port`` (a free one by
    default); its URL and its process (so a test can kill it)."""
    async with trio.open_nursery() as nursery:
        process: trio.Process = await nursery.start(
            lambda task_status: trio.run_process(
                [sys.executable, str(SERVERS / "toolbox.py"), "http", str(port)],
                stdout=-1,  # subprocess.PIPE
                check=False,
                task_status=task_status,
                env=dict(os.environ),
            )
        )
        try:
            assert process.stdout is not None
            line = b""
            with trio.fail_after(20):
                while not line.endswith(b"\n"):
                    chunk = await process.stdout.receive_some(1)
                    assert chunk, "the HTTP test server exited before listening"
                    line += chunk
            port = int(line.split()[1])
            yield f"http://127.0.0.1:{port}/mcp", process
        finally:
            process.kill()


class Toolbox:
    """The toolbox over one transport (``stdio`` or ``http``), for tests run over both: its
    settings, and for HTTP the running server, which :meth:`start` starts (again, on the
    same port) in ``nursery``."""

    def __init__(self, transport: str, nursery: trio.Nursery) -> None:
        self.transport = transport
        self.url = ""
        self._nursery = nursery

    def settings(self, name: str = "box", **settings: Any) -> McpServerSettings:
        if self.transport == "stdio":
            return toolbox(name, **settings)
        return McpServerSettings(name, url=self.url, **settings)

    async def start(self) -> None:
        """Start the HTTP server, on the port of the previous one if there was one."""
        port = int(self.url.rsplit(":", 1)[1].split("/")[0]) if self.url else 0

        async def serve(task_status: trio.TaskStatus[str]) -> None:
            async with toolbox_http_process(port) as (url, _process):
                task_status.started(url)
                await trio.sleep_forever()

        self.url = await self._nursery.start(serve)
