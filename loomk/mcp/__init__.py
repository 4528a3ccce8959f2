"""MCP servers' tools as broker capabilities: the client side of the Model Context Protocol.

``async with open_mcp(kernel, servers) as mcp:`` connects each server (stdio or Streamable
HTTP), registers its tools as ``server:tool`` capabilities, and keeps them connected (see
:mod:`loomk.mcp.manager`). Importing this package imports the ``mcp`` SDK (the ``mcp``
extra); the kernel itself never imports it.
"""

from __future__ import annotations

from loomk.mcp.errors import (
    INVALID_PARAMS,
    PROTOCOL_ERROR,
    SERVER_ERROR,
    TIMEOUT,
    TOOL_ERROR,
    TOOL_NOT_FOUND,
    TRANSPORT_ERROR,
    McpError,
)
from loomk.mcp.manager import McpManager, McpServerInfo, McpServerStats, McpStats, open_mcp

__all__ = [
    "INVALID_PARAMS",
    "PROTOCOL_ERROR",
    "SERVER_ERROR",
    "TIMEOUT",
    "TOOL_ERROR",
    "TOOL_NOT_FOUND",
    "TRANSPORT_ERROR",
    "McpError",
    "McpManager",
    "McpServerInfo",
    "McpServerStats",
    "McpStats",
    "open_mcp",
]
