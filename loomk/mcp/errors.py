"""The errors of the MCP client: :class:`McpError` with Loom's MCP error codes.

Every failure to reach or use an MCP server is an :class:`McpError` whose ``code`` is one of
Loom's (``TRANSPORT_ERROR``, ``PROTOCOL_ERROR``, ...); the capability adapters turn it into
an ``ACTION_ERROR`` (``ACTION_TIMEOUT`` for ``TIMEOUT``) with the same code, so a caller of
the broker reads the same codes a Loom caller did.
"""

from __future__ import annotations

from loomk.errors import LoomkError

__all__ = [
    "INVALID_PARAMS",
    "PROTOCOL_ERROR",
    "SERVER_ERROR",
    "TIMEOUT",
    "TOOL_ERROR",
    "TOOL_NOT_FOUND",
    "TRANSPORT_ERROR",
    "McpError",
]

TRANSPORT_ERROR = "TRANSPORT_ERROR"
"""The server could not be started or reached, or the connection dropped."""
PROTOCOL_ERROR = "PROTOCOL_ERROR"
"""The server broke the protocol: not JSON-RPC, an unsupported version, a malformed answer."""
TOOL_NOT_FOUND = "TOOL_NOT_FOUND"
"""The server does not know the tool (it went away between listing and calling)."""
INVALID_PARAMS = "INVALID_PARAMS"
"""The arguments do not fit the tool's input schema (checked before anything is sent)."""
TOOL_ERROR = "TOOL_ERROR"
"""The tool ran and reported a failure (``isError``)."""
TIMEOUT = "TIMEOUT"
"""The server did not answer within the server's ``timeout_s``."""
SERVER_ERROR = "SERVER_ERROR"
"""The server answered with a JSON-RPC error."""


class McpError(LoomkError):
    """A failure of an MCP server or of the talk with it; ``code`` says which kind (one of
    the module's constants) and the message names the server."""

    code: str = "MCP_ERROR"

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code

    def __repr__(self) -> str:
        return f"McpError({self.code!r}, {self.message!r})"
