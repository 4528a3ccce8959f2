"""The kernel's capabilities as an MCP server: what ``loomk mcp serve`` runs.

Any MCP client (a desktop assistant, an IDE, another kernel) lists the kernel's broker
capabilities as tools and calls them:

- ``tools/list``: one tool per capability name (its highest version), described by its
  ``desc`` metadata, its input schema from its ``schema`` metadata (a JSON schema as a
  JSON string), else ``{"type": "object"}`` (any arguments);
- ``tools/call``: the arguments go to ``kernel.broker.invoke`` as the call's JSON payload;
  an OK result comes back as one text content holding the output (JSON), any other as a
  result with ``isError`` whose text is ``CODE: message`` (an unknown tool is the broker's
  ``PROVIDER_UNAVAILABLE``). A failing call never fails the session.

Two transports: :func:`serve_stdio` (the client started this process; stdout carries the
protocol only, while serving the SDK points file descriptor 1 at stderr so a stray print
cannot corrupt it, and loomk logs to stderr anyway) and :func:`serve_http` (Streamable HTTP
at ``http://HOST:PORT/mcp``, served by hypercorn's trio worker through loomk's
:class:`~loomk.asgi.HttpServer`). The server is built on the SDK's low-level
:class:`mcp.server.lowlevel.Server`, which runs under trio (anyio).
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

import mcp_types as types
import trio
from mcp.server.context import ServerRequestContext
from mcp.server.lowlevel import Server
from mcp.server.stdio import stdio_server

from loomk.actions.types import ActionCall, ActionStatus, CapabilityDescriptor

if TYPE_CHECKING:
    from loomk import Kernel

__all__ = ["DEFAULT_HTTP_PATH", "build_server", "serve_http", "serve_stdio", "tool_of"]

DEFAULT_HTTP_PATH = "/mcp"
"""Where :func:`serve_http` answers (the SDK's and most clients' default)."""

_ANY_ARGUMENTS: dict[str, Any] = {"type": "object"}


def tool_of(descriptor: CapabilityDescriptor) -> types.Tool:
    """The MCP tool offering ``descriptor``: its name, ``desc`` and ``schema`` metadata.

    A ``schema`` that is not a JSON object (or not JSON) is replaced by "any object", so
    one badly described capability cannot break ``tools/list`` for the others.
    """
    schema: dict[str, Any] = dict(_ANY_ARGUMENTS)
    text = descriptor.metadata.get("schema", "")
    if text:
        try:
            parsed = json.loads(text)
        except ValueError:
            parsed = None
        if isinstance(parsed, dict):
            schema = parsed
            schema.setdefault("type", "object")
    return types.Tool(
        name=descriptor.name,
        description=descriptor.metadata.get("desc") or None,
        input_schema=schema,
    )


def build_server(kernel: Kernel, *, name: str = "") -> Server[Any]:
    """An MCP server offering ``kernel``'s capabilities as tools (see the module)."""

    async def list_tools(
        ctx: ServerRequestContext[Any], params: types.PaginatedRequestParams | None
    ) -> types.ListToolsResult:
        newest: dict[str, CapabilityDescriptor] = {}
        for descriptor in kernel.capabilities.list():  # by name, highest version first
            newest.setdefault(descriptor.name, descriptor)
        return types.ListToolsResult(tools=[tool_of(d) for d in newest.values()])

    async def call_tool(
        ctx: ServerRequestContext[Any], params: types.CallToolRequestParams
    ) -> types.CallToolResult:
        call_id = f"mcp-{uuid.uuid4().hex}"
        try:
            call = ActionCall.with_args(call_id, params.name, dict(params.arguments or {}))
        except ValueError as error:  # a name or payload the broker cannot carry
            return _error("INVALID_PARAMS", str(error))
        result = await kernel.broker.invoke(call)
        if result.status is ActionStatus.ACTION_OK:
            text = result.output.decode("utf-8", errors="replace")
            return types.CallToolResult(content=[types.TextContent(type="text", text=text)])
        failure = result.error
        code = failure.code if failure is not None else result.status.name
        message = failure.message if failure is not None else ""
        return _error(code, message)

    return Server(
        name or f"loomk:{kernel.config.name}",
        version=_version(),
        instructions="The capabilities of a loomk kernel, one tool each.",
        on_list_tools=list_tools,
        on_call_tool=call_tool,
    )


def _error(code: str, message: str) -> types.CallToolResult:
    text = f"{code}: {message}" if message else code
    return types.CallToolResult(content=[types.TextContent(type="text", text=text)], is_error=True)


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("loomk")
    except PackageNotFoundError:  # run from a source tree
        return "0"


async def serve_stdio(kernel: Kernel) -> None:
    """Serve ``kernel``'s capabilities over this process's stdin and stdout until the
    client closes stdin."""
    server = build_server(kernel)
    async with stdio_server() as (read_stream, write_stream):
        await server.run(read_stream, write_stream, server.create_initialization_options())


async def serve_http(
    kernel: Kernel,
    address: str,
    *,
    ready: Callable[[str], Awaitable[None] | None] | None = None,
    max_connections: int = 100,
) -> None:
    """Serve ``kernel``'s capabilities over Streamable HTTP on ``address`` (``HOST:PORT``,
    port 0 for a free one) at :data:`DEFAULT_HTTP_PATH`, until cancelled.

    ``ready`` is called with the URL once the socket listens. Bound to a loopback address,
    the SDK accepts loopback ``Host`` and ``Origin`` headers only (DNS rebinding
    protection). Raises :class:`OSError` or :class:`ValueError` for a bad or busy address.
    """
    from loomk import edges
    from loomk.asgi import HttpServer

    sock = edges.listening_socket(address, setting="--http")
    host = sock.getsockname()[0]
    http = HttpServer(
        sock,
        max_message_bytes=4 * 1024 * 1024,
        max_connections=max_connections,
        logger="loomk.mcp.serve",
        label="mcp serve",
    )
    server = build_server(kernel)
    app = server.streamable_http_app(streamable_http_path=DEFAULT_HTTP_PATH, host=host)
    # hypercorn runs no ASGI lifespan per connection: the SDK's session manager (what the
    # app's lifespan would start) runs here, around the server
    async with server.session_manager.run(), trio.open_nursery() as nursery:
        await nursery.start(http.serve, app)
        url = f"http://{http.address}{DEFAULT_HTTP_PATH}"
        if ready is not None:
            waited = ready(url)
            if waited is not None:
                await waited
        try:
            await trio.sleep_forever()
        finally:
            with trio.CancelScope(shield=True):
                await http.stop(1.0)
