"""The bridge's errors."""

from __future__ import annotations

from loomk import LoomkError

__all__ = ["BridgeError"]


class BridgeError(LoomkError):
    """The bridge cannot start or connect: a bad address, a port in use, unusable TLS files."""

    code = "BRIDGE_ERROR"
