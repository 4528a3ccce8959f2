"""An MCP server for the tests, made with the SDK's ``MCPServer``.

``python toolbox.py stdio`` serves on stdin/stdout; ``python toolbox.py http [PORT]`` binds
``PORT`` (a free loopback port by default), prints ``PORT <n>`` on stdout once it listens,
and serves Streamable HTTP at ``/mcp``. Its tools cover what the client must handle:
many tools (``tools/list`` pages of :data:`PAGE` tools), ``isError``, structured content, a
tool that sleeps, one that tells its pid (so a test can kill it mid-call, or check it is
gone), one that adds a tool and announces ``notifications/tools/list_changed``; plus two
resources and two prompts (listed one a page). A call to a tool it does not have is
answered with JSON-RPC error ``-32602``, as the spec says.
"""

from __future__ import annotations

import os
import socket
import sys
from typing import Any

import anyio
from mcp.server.mcpserver import Context, MCPServer
from mcp.server.mcpserver.exceptions import ToolError
from mcp.shared.exceptions import MCPError

INVALID_PARAMS = -32602

PAGE = 5
MANY = 12
PAGED = {"tools/list": ("tools", PAGE), "resources/list": ("resources", 1)}
PAGED["prompts/list"] = ("prompts", 1)

seen_calls: list[str] = []
"""The tools called so far, by name (so a test can tell a call never arrived)."""


async def paginate(ctx: Any, call_next: Any) -> Any:
    """Serve ``tools/list`` in pages of :data:`PAGE` (resources and prompts one a page), the
    cursor being the next index; answer
    a call to an unknown tool as the spec says, JSON-RPC error ``-32602`` "Unknown tool: x"
    (the SDK would answer an ``isError`` result)."""
    if ctx.method == "tools/call":
        name = (ctx.params or {}).get("name", "")
        seen_calls.append(name)
        if name not in {tool.name for tool in await server.list_tools()}:
            raise MCPError(INVALID_PARAMS, f"Unknown tool: {name}")
    result = await call_next(ctx)
    if ctx.method not in PAGED:
        return result
    key, size = PAGED[ctx.method]
    params = ctx.params or {}
    start = int(params.get("cursor") or 0)
    items = result[key]
    page = {**result, key: items[start : start + size]}
    if start + size < len(items):
        page["nextCursor"] = str(start + size)
    return page


server = MCPServer("toolbox", version="1.2.3", middleware=[paginate], log_level="WARNING")


@server.tool(description="Echo the text back.")
def echo(text: str, times: int = 1) -> str:
    return " ".join([text] * times)


@server.tool(description="Fail with the message.")
def fail(message: str) -> str:
    raise ToolError(message)


@server.tool(description="Add two numbers, with structured output.")
def add(a: int, b: int) -> dict[str, int]:
    return {"sum": a + b}


@server.tool(description="Sleep, then answer.")
async def nap(seconds: float) -> str:
    await anyio.sleep(seconds)
    return "rested"


@server.tool(description="The server's process id.")
def pid() -> int:
    return os.getpid()


@server.tool(description="Announce a tool list change, then wait forever (a call to kill in).")
async def block(ctx: Context) -> str:
    await ctx.session.send_tool_list_changed()  # tells the test the call has arrived
    await anyio.sleep_forever()
    return "never"


@server.tool(description="Count the calls this server has answered.")
def calls() -> int:
    return len(seen_calls)


@server.tool(description="Add a tool named `name`, announcing the change.")
async def grow(name: str, ctx: Context) -> str:
    def extra(x: int = 0) -> str:
        return f"{name}:{x}"

    server.add_tool(extra, name=name, description=f"A tool added at run time: {name}")
    await ctx.session.send_tool_list_changed()
    return "grown"


@server.tool(description="Remove the tool named `name`, announcing the change.")
async def shrink(name: str, ctx: Context) -> str:
    server.remove_tool(name)
    await ctx.session.send_tool_list_changed()
    return "shrunk"


for _index in range(MANY):

    def _numbered(index: int = _index) -> str:
        return f"n{index}"

    server.add_tool(_numbered, name=f"n{_index:02d}", description=f"Numbered tool {_index}")


@server.resource("note://hello", description="A greeting.", mime_type="text/plain")
def hello_note() -> str:
    return "hello from a resource"


@server.resource("note://bye", description="A farewell.", mime_type="text/plain")
def bye_note() -> str:
    return "goodbye from a resource"


@server.prompt(description="Greet someone.")
def greet(name: str) -> str:
    return f"Please greet {name} warmly."


@server.prompt(description="Say goodbye to someone.")
def farewell(name: str) -> str:
    return f"Please bid {name} farewell."


def serve_http(port: int = 0) -> None:
    import uvicorn

    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", port))
    sock.listen(64)
    print(f"PORT {sock.getsockname()[1]}", flush=True)
    config = uvicorn.Config(server.streamable_http_app(), log_level="warning")
    anyio.run(uvicorn.Server(config).serve, [sock])


if __name__ == "__main__":
    if sys.argv[1] == "http":
        serve_http(int(sys.argv[2]) if len(sys.argv) > 2 else 0)
    else:
        server.run("stdio")
