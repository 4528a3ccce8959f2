"""loomk's gRPC bridge: Loom's ``loom.v1.Bridge`` protocol, served from a kernel.

Agents in other processes and languages join the kernel's bus through it: Loom's own SDKs
unchanged, and other loomk kernels (their agents stay ordinary ``loomk.Agent`` s). Install
with ``pip install 'loomk[bridge]'``; set ``bridge_address`` and every kernel serves it, or
run ``loomk bridge serve``.

The names below load on first use, so ``import loomk_bridge`` (which ``loomk --help`` and
``loomk bench --help`` do, to list the bridge's command and benchmark) imports no grpclib.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from loomk_bridge.errors import BridgeError
    from loomk_bridge.link import BridgeLink, connect
    from loomk_bridge.server import AUDIT_LOGGER, BridgeServer, BridgeStats, open_bridge_server

__all__ = [
    "AUDIT_LOGGER",
    "BridgeError",
    "BridgeLink",
    "BridgeServer",
    "BridgeStats",
    "connect",
    "open_bridge_server",
]

_HOMES = {
    "AUDIT_LOGGER": "loomk_bridge.server",
    "BridgeError": "loomk_bridge.errors",
    "BridgeLink": "loomk_bridge.link",
    "connect": "loomk_bridge.link",
    "BridgeServer": "loomk_bridge.server",
    "BridgeStats": "loomk_bridge.server",
    "open_bridge_server": "loomk_bridge.server",
}


def __getattr__(name: str) -> Any:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module 'loomk_bridge' has no attribute {name!r}")
    value = getattr(importlib.import_module(home), name)
    globals()[name] = value
    return value
