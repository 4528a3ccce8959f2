"""The dashboard's socket and server: bound before anything runs, so a bad or busy address
fails ``open_dashboard`` at once with :class:`DashboardError`; served by
:class:`loomk.asgi.HttpServer` (see there why not ``hypercorn.trio.serve``)."""

from __future__ import annotations

import socket

from loomk import edges
from loomk.asgi import HttpServer, bound_address, is_loopback_socket
from loomk.errors import EdgeError

__all__ = [
    "DashboardError",
    "HttpServer",
    "bound_address",
    "is_loopback_socket",
    "listening_socket",
]


class DashboardError(EdgeError):
    """The dashboard cannot start: a bad or busy address (``edge`` is ``"dashboard"``)."""

    code = "DASHBOARD_FAILED"

    def __init__(self, message: str, cause: BaseException | None = None) -> None:
        super().__init__("dashboard", message, cause)


def listening_socket(address: str, backlog: int = 512) -> socket.socket:
    """A non-blocking TCP socket bound to ``address`` and listening;
    :class:`DashboardError` naming the address and the setting if it cannot be."""
    try:
        sock = edges.listening_socket(address, setting="dashboard_address", backlog=backlog)
    except (ValueError, OSError) as error:
        raise DashboardError(str(error), error) from error
    sock.setblocking(False)
    return sock
