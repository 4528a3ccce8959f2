"""The kernel's capabilities as an MCP server: what ``loomk mcp serve`` runs.

Any MCP client (a desktop assistant, an IDE, another kernel) lists the kernel's broker
capabilities as tools and calls them:

- ``tools/list``: one tool per capability name (its highest version), named in the form
  MCP clients accept (``^[a-zA-Z0-9_-]{1,64}$``, which Claude Desktop and others enforce):
  ``time.now`` becomes ``time_now`` and ``docs:search`` ``docs_search`` (see
  :func:`tool_names`), the capability's own name kept as the tool's ``title``; described by
  its ``desc`` metadata, its input schema from its ``schema`` metadata (a JSON schema as a
  JSON string), else ``{"type": "object"}`` (any arguments);
- ``tools/call``: the tool name is mapped back to its capability (a capability's own name
  is accepted too), the arguments go to ``kernel.broker.invoke`` as the call's JSON payload;
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

import hashlib
import ipaddress
import json
import re
import uuid
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

import mcp_types as types
import trio
from mcp.server.context import ServerRequestContext
from mcp.server.lowlevel import Server
from mcp.server.stdio import stdio_server

from loomk.actions.types import ActionCall, ActionStatus, CapabilityDescriptor
from loomk.telemetry import get_logger

if TYPE_CHECKING:
    from loomk import Kernel

__all__ = [
    "DEFAULT_HTTP_PATH",
    "build_server",
    "serve_http",
    "serve_stdio",
    "tool_names",
    "tool_of",
]

_log = get_logger("loomk.mcp.serve")

DEFAULT_HTTP_PATH = "/mcp"
"""Where :func:`serve_http` answers (the SDK's and most clients' default)."""

_ANY_ARGUMENTS: dict[str, Any] = {"type": "object"}
_TOOL_NAME = re.compile(r"[a-zA-Z0-9_-]{1,64}")
_NOT_TOOL_NAME = re.compile(r"[^a-zA-Z0-9_-]")
_MAX_TOOL_NAME = 64


def tool_names(capabilities: list[str]) -> dict[str, str]:
    """The MCP tool name of each capability name, deterministic for a given set.

    Many MCP clients accept only tool names matching ``^[a-zA-Z0-9_-]{1,64}$``, while
    capability names carry ``.`` and ``:`` (``time.now``, ``docs:search``). A name that
    fits is kept; any other has each other character replaced by ``_`` (``time_now``).
    One that is then too long, or taken (by a capability of that very name, or by an
    earlier one in sorted order that mapped to it), gets the first 8 hex digits of its
    name's SHA-256 instead of its tail (``a_b_1f2e3d4c``), so two capabilities never share
    a tool and a name does not depend on which others come and go (short of a clash).
    """
    names: dict[str, str] = {}
    taken: set[str] = set()
    for name in capabilities:
        if _TOOL_NAME.fullmatch(name):
            names[name] = name
            taken.add(name)
    for name in sorted(n for n in capabilities if n not in names):
        safe = _NOT_TOOL_NAME.sub("_", name) or "_"
        if len(safe) > _MAX_TOOL_NAME or safe in taken:
            digest = hashlib.sha256(name.encode("utf-8")).hexdigest()[:8]
            safe = f"{safe[: _MAX_TOOL_NAME - 9]}_{digest}"
        names[name] = safe
        taken.add(safe)
    return names


def tool_of(descriptor: CapabilityDescriptor, tool_name: str = "") -> types.Tool:
    """The MCP tool offering ``descriptor`` as ``tool_name`` (default: the capability's
    name): the capability's name as its ``title``, its ``desc`` and ``schema`` metadata.

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
        name=tool_name or descriptor.name,
        title=descriptor.name,
        description=descriptor.metadata.get("desc") or None,
        input_schema=schema,
    )


def build_server(kernel: Kernel, *, name: str = "") -> Server[Any]:
    """An MCP server offering ``kernel``'s capabilities as tools (see the module)."""

    def offered() -> tuple[dict[str, CapabilityDescriptor], dict[str, str]]:
        """The capabilities offered (the highest version of each name) and their tool
        names; computed afresh each time, as capabilities come and go."""
        newest: dict[str, CapabilityDescriptor] = {}
        for descriptor in kernel.capabilities.list():  # by name, highest version first
            newest.setdefault(descriptor.name, descriptor)
        return newest, tool_names(list(newest))

    async def list_tools(
        ctx: ServerRequestContext[Any], params: types.PaginatedRequestParams | None
    ) -> types.ListToolsResult:
        newest, names = offered()
        return types.ListToolsResult(tools=[tool_of(d, names[n]) for n, d in newest.items()])

    async def call_tool(
        ctx: ServerRequestContext[Any], params: types.CallToolRequestParams
    ) -> types.CallToolResult:
        call_id = f"mcp-{uuid.uuid4().hex}"
        _, names = offered()
        capability = {tool: name for name, tool in names.items()}.get(params.name, params.name)
        try:
            call = ActionCall.with_args(call_id, capability, dict(params.arguments or {}))
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


def _is_loopback(host: str) -> bool:
    """Whether ``host`` (a bound socket's address) is a loopback address."""
    try:
        return ipaddress.ip_address(host.split("%", 1)[0]).is_loopback
    except ValueError:
        return False


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
    protection). Bound to any other address it has **no authentication**: anyone who can
    reach it can call every capability, so a warning is logged. Raises :class:`OSError` or
    :class:`ValueError` for a bad or busy address.
    """
    from loomk import edges
    from loomk.asgi import HttpServer

    sock = edges.listening_socket(address, setting="--http")
    host = sock.getsockname()[0]
    if not _is_loopback(host):
        _log.warning(
            "MCP server reachable beyond this machine, with no authentication: anyone who "
            "can reach it can call every capability",
            address=address,
        )
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
