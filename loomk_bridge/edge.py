"""The bridge's edges: ``bridge`` serves ``loom.v1.Bridge`` when ``bridge_address`` is set;
``bridge_link`` links the kernel to another's bridge when ``bridge_link_address`` is set.

Announced to the kernel through ``loomk.edges`` entry points, so ``import loomk`` never
imports grpclib. ``kernel.edge("bridge")`` is the :class:`~loomk_bridge.server.BridgeServer`;
``kernel.edge("bridge_link")`` the :class:`~loomk_bridge.link.BridgeLink`.
"""

from __future__ import annotations

from contextlib import AbstractAsyncContextManager
from typing import Any

from loomk import Config, Kernel
from loomk_bridge.link import connect
from loomk_bridge.server import open_bridge_server

__all__ = ["EDGE", "LINK_EDGE", "BridgeEdge", "BridgeLinkEdge"]


class BridgeEdge:
    """Opens the bridge server when ``bridge_address`` is set."""

    name = "bridge"

    def wanted(self, config: Config) -> bool:
        return bool(config.bridge_address)

    def open(self, kernel: Kernel) -> AbstractAsyncContextManager[Any]:
        return open_bridge_server(kernel)


EDGE = BridgeEdge()


class BridgeLinkEdge:
    """Links the kernel to the bridge server at ``bridge_link_address`` (named
    ``bridge_link_name``, presenting ``bridge_link_token``); it does not wait for the first
    connection (``await kernel.edge("bridge_link").wait_connected()``)."""

    name = "bridge_link"

    def wanted(self, config: Config) -> bool:
        return bool(config.bridge_link_address)

    def open(self, kernel: Kernel) -> AbstractAsyncContextManager[Any]:
        config = kernel.config
        return connect(
            kernel,
            config.bridge_link_address,
            name=config.bridge_link_name or None,
            token=config.bridge_link_token,
        )


LINK_EDGE = BridgeLinkEdge()
