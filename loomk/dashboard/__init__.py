"""The web dashboard: a live page, a websocket feed and Prometheus ``/metrics`` on one port.

``open_dashboard(kernel, address)`` serves, for as long as its ``async with`` lasts, what
docs/dashboard.md describes; the kernel opens one by itself when ``dashboard_address`` is
set (the ``dashboard`` edge, :mod:`loomk.dashboard.edge`), and ``kernel.edge("dashboard")``
is then the :class:`Dashboard`. It needs the ``dashboard`` extra (hypercorn); the kernel
never imports this package unless asked to.

Inside: hypercorn's trio worker (:mod:`._server`) runs the ASGI app (:mod:`._app`); one hub
task (:mod:`._hub`) reads a bus tap every 100 ms and a snapshot (:mod:`._snapshot`) every
second, and hands frames to each client's bounded outbox (:mod:`._outbox`), so no client,
however slow, makes a publisher or the hub wait.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import TYPE_CHECKING

import trio

from loomk.dashboard._app import DashboardApp
from loomk.dashboard._client import CLOSE_GOING_AWAY
from loomk.dashboard._hosts import HostPolicy, parse_allowed_hosts
from loomk.dashboard._hub import DashboardLimits, DashboardStats, FeedHub
from loomk.dashboard._logs import LOGGER
from loomk.dashboard._logs import dashboard_log as _log
from loomk.dashboard._metrics import dashboard_metrics
from loomk.dashboard._server import DashboardError, HttpServer, listening_socket

if TYPE_CHECKING:
    from loomk import Kernel

__all__ = [
    "STATIC_DIR",
    "Dashboard",
    "DashboardError",
    "DashboardLimits",
    "DashboardStats",
    "open_dashboard",
]

STATIC_DIR = Path(__file__).parent / "static"
"""Where the page's files are shipped (index.html, app.js, style.css)."""


class Dashboard:
    """A running dashboard (made by :func:`open_dashboard`)."""

    def __init__(self, hub: FeedHub, address: str) -> None:
        self._hub = hub
        self.address = address
        """``host:port`` it listens on (the real port when 0 was asked for)."""
        self.url = f"http://{address}/"
        """The page's URL."""
        self.ws_url = f"ws://{address}/ws"
        """The websocket feed's URL."""

    def __repr__(self) -> str:
        return f"Dashboard({self.url!r})"

    def stats(self) -> DashboardStats:
        """Clients now, frames and events sent, events missed, clients refused, clients
        closed by reason."""
        return self._hub.stats()

    async def wait_until(self, predicate: Callable[[DashboardStats], bool]) -> DashboardStats:
        """Wait until ``predicate(self.stats())`` holds, checked at every feed tick and every
        client change (for tests and tools that must not poll)."""
        return await self._hub.wait_until(predicate)


@asynccontextmanager
async def open_dashboard(
    kernel: Kernel,
    address: str | None = None,
    *,
    limits: DashboardLimits | None = None,
    static_dir: str | Path | None = None,
    allowed_hosts: str | Iterable[str] | None = None,
) -> AsyncIterator[Dashboard]:
    """Serve the dashboard of ``kernel`` on ``address`` (default: the kernel's
    ``dashboard_address``; port 0 picks a free port) until the block ends.

    ``limits`` changes the cadence and limits (tests shrink the times); ``static_dir``
    serves the page from another directory than the shipped one; ``allowed_hosts`` (default:
    the kernel's ``dashboard_allowed_hosts``) are the names, besides loopback ones, a
    dashboard on a loopback address answers to (docs/dashboard.md). Raises
    :class:`DashboardError` at once when the address cannot be listened on. When the block
    ends, each feed client is sent a close frame (1001) and given
    ``limits.shutdown_grace_s`` to take it, then every connection is cut.
    """
    limits = DashboardLimits() if limits is None else limits
    address = kernel.config.dashboard_address if address is None else address
    if not address:
        raise DashboardError("no address: set dashboard_address (HOST:PORT)")
    if allowed_hosts is None:
        allowed_hosts = kernel.config.dashboard_allowed_hosts
    sock = listening_socket(address)
    try:
        hub = FeedHub(kernel, limits)
        server = HttpServer(
            sock,
            max_message_bytes=limits.max_message_bytes,
            max_connections=(
                4 * hub.max_clients if limits.max_connections is None else limits.max_connections
            ),
            logger=LOGGER,
            label="dashboard",
        )
    except BaseException:
        sock.close()
        raise
    app = DashboardApp(
        kernel,
        hub,
        Path(STATIC_DIR if static_dir is None else static_dir),
        server.abort,
        close_grace_s=limits.shutdown_grace_s,
        hosts=HostPolicy(server.loopback, parse_allowed_hosts(allowed_hosts)),
        metrics_max_age_s=limits.metrics_max_age_s,
    )
    dashboard = Dashboard(hub, server.address)
    # The services run shielded: when the kernel cancels its edge layer they must still
    # say goodbye to the clients; they stop when the block's exit says so.
    services_scope = trio.CancelScope(shield=True)

    async def run_services(task_status: trio.TaskStatus[None]) -> None:
        with services_scope:
            async with trio.open_nursery() as services:
                await services.start(hub.run)
                await services.start(server.serve, app)
                task_status.started()

    async with trio.open_nursery() as nursery:
        try:
            await nursery.start(run_services)
        except BaseException:
            sock.close()
            raise
        remove_metrics = kernel.metrics.register(
            "dashboard",
            dashboard_metrics(
                hub.stats,
                lambda: server.failed_connections,
                lambda: server.refused_connections,
            ),
        )
        _log().info(f"dashboard: {dashboard.url}", url=dashboard.url, feed=dashboard.ws_url)
        if not server.loopback:
            _log().warning(
                "dashboard open to the network: it has no authentication, and its feed shows "
                "event payloads to anyone who reaches it",
                address=server.address,
            )
        try:
            yield dashboard
        finally:
            remove_metrics()
            with trio.CancelScope(shield=True):
                hub.stop(CLOSE_GOING_AWAY, "shutdown")
                await server.stop(limits.shutdown_grace_s)
                services_scope.cancel()
