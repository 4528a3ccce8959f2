"""The ``mcp`` edge: the kernel connects to its MCP servers when ``mcp_servers`` is set.

Announced through the ``loomk.edges`` entry point ``mcp``, so a kernel without
``mcp_servers`` never imports this package nor the ``mcp`` SDK (about a second to import,
and an optional extra: ``pip install 'loomk[mcp]'``). ``kernel.edge("mcp")``, also
``kernel.mcp``, is the running :class:`~loomk.mcp.manager.McpManager`: servers can be
added, removed and reconnected from code while the kernel runs.

A configured server that fails to start never keeps the kernel from starting: the servers
are started together, and one that fails is logged, shown as ``failed`` by
``kernel.mcp.info(name)`` and tried again with backoff (see
:meth:`~loomk.mcp.manager.McpManager.start`).
"""

from __future__ import annotations

from contextlib import AbstractAsyncContextManager
from typing import TYPE_CHECKING

from loomk.config import Config
from loomk.mcp.manager import McpManager, open_mcp

if TYPE_CHECKING:
    from loomk import Kernel

__all__ = ["EDGE", "McpEdge"]


class McpEdge:
    """Opens an :class:`~loomk.mcp.manager.McpManager` on the kernel's ``mcp_servers``."""

    name = "mcp"

    def wanted(self, config: Config) -> bool:
        return bool(config.mcp_servers)

    def open(self, kernel: Kernel) -> AbstractAsyncContextManager[McpManager]:
        return open_mcp(kernel, kernel.config.mcp_servers)


EDGE = McpEdge()
