"""The ``bridge`` edge: a kernel with ``bridge_address`` set serves ``loom.v1.Bridge``.

Announced to the kernel through the ``loomk.edges`` entry point, so ``import loomk`` never
imports grpclib; what the edge yields (``kernel.edge("bridge")``) is the
:class:`~loomk_bridge.server.BridgeServer`.
"""

from __future__ import annotations

from contextlib import AbstractAsyncContextManager
from typing import Any

from loomk import Config, Kernel
from loomk_bridge.server import open_bridge_server

__all__ = ["EDGE", "BridgeEdge"]


class BridgeEdge:
    """Opens the bridge server when ``bridge_address`` is set."""

    name = "bridge"

    def wanted(self, config: Config) -> bool:
        return bool(config.bridge_address)

    def open(self, kernel: Kernel) -> AbstractAsyncContextManager[Any]:
        return open_bridge_server(kernel)


EDGE = BridgeEdge()
