"""The HTTP server: hypercorn's trio worker serving the dashboard's ASGI app on one socket.

Why not ``hypercorn.trio.serve``: it lets one connection's protocol error escape into the
server's nursery, so one bad request ends the whole server (pgjones/hypercorn#225: an
upgrade request followed by trailing bytes does it). :class:`HttpServer` runs hypercorn's
own per-connection :class:`~hypercorn.trio.tcp_server.TCPServer` under a guard instead: a
connection that fails is logged and closed, and the server serves on. It also keeps each
connection's stream, so a websocket whose client stopped reading (hypercorn's writes are
shielded, a stuck one cannot be cancelled) can be cut (:meth:`HttpServer.abort`), and
shutdown never waits on a dead peer.

The socket is bound by :func:`listening_socket` before anything runs, so a bad or busy
address fails ``open_dashboard`` at once with :class:`DashboardError`, and port 0 gives the
real port at once (:attr:`HttpServer.address`).
"""

from __future__ import annotations

import contextlib
import logging
import socket
from functools import partial

import trio
from hypercorn.config import Config as HypercornConfig
from hypercorn.trio.tcp_server import TCPServer
from hypercorn.trio.worker_context import WorkerContext
from hypercorn.typing import AppWrapper, ASGIFramework
from hypercorn.utils import wrap_app

from loomk.config import split_address
from loomk.dashboard._logs import dashboard_log as _log
from loomk.errors import EdgeError

__all__ = ["DashboardError", "HttpServer", "listening_socket"]


_HYPERCORN_LOGGER = "loomk.dashboard.hypercorn"

Peer = tuple[str, int]


class DashboardError(EdgeError):
    """The dashboard cannot start: a bad or busy address (``edge`` is ``"dashboard"``)."""

    code = "DASHBOARD_FAILED"

    def __init__(self, message: str, cause: BaseException | None = None) -> None:
        super().__init__("dashboard", message, cause)


def listening_socket(address: str, backlog: int = 512) -> socket.socket:
    """A TCP socket bound to ``address`` (``HOST:PORT``, port 0 for a free one) and
    listening; :class:`DashboardError` naming the address if it cannot be."""
    parsed = split_address(address)
    if parsed is None:
        raise DashboardError(f"address must be HOST:PORT, got {address!r}")
    host, port = parsed
    try:
        family, kind, proto, _, where = socket.getaddrinfo(
            host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )[0]
        sock = socket.socket(family, kind, proto)
    except OSError as error:
        raise DashboardError(f"address {address!r}: {error}", error) from error
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(where)
        sock.listen(backlog)
        sock.setblocking(False)
    except OSError as error:
        sock.close()
        raise DashboardError(
            f"cannot listen on {address!r} ({error.strerror or error}): another program may "
            "hold the port; choose another dashboard_address (port 0 picks a free one)",
            error,
        ) from error
    return sock


def bound_address(sock: socket.socket) -> str:
    """``host:port`` (``[v6]:port``) a socket is bound to."""
    host, port = sock.getsockname()[:2]
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


class HttpServer:
    """Serves an ASGI app on a listening socket (see the module); run :meth:`serve` in a
    nursery, end it with :meth:`stop`."""

    def __init__(self, sock: socket.socket, *, max_message_bytes: int) -> None:
        self.address = bound_address(sock)
        self._sock = sock
        self._config = HypercornConfig()
        # The app refuses messages over its own limit with a logged reason; hypercorn's
        # limit is the backstop that keeps a huge message from being buffered at all.
        self._config.websocket_max_message_size = max_message_bytes * 4
        self._config.errorlog = logging.getLogger(_HYPERCORN_LOGGER)
        self._config.accesslog = None
        self._context = WorkerContext(None)
        self._connections: dict[Peer, trio.SocketStream] = {}
        self._drained = trio.Event()
        self._scope = trio.CancelScope()
        self.failed_connections = 0
        """Connections that broke hypercorn's protocol handling and were closed."""

    async def serve(
        self, app: ASGIFramework, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> None:
        """Serve ``app`` on the socket until :meth:`stop` (or cancellation); the socket is
        closed when it returns."""
        wrapped = wrap_app(app, self._config.wsgi_max_body_size, "asgi")
        listener = trio.SocketListener(trio.socket.from_stdlib_socket(self._sock))
        try:
            with self._scope:
                async with trio.open_nursery() as connections:
                    task_status.started()
                    await trio.serve_listeners(
                        partial(self._serve_connection, wrapped),
                        [listener],
                        handler_nursery=connections,
                    )
        finally:
            with trio.CancelScope(shield=True):
                await listener.aclose()

    def abort(self, peer: Peer) -> bool:
        """Cut the connection from ``peer`` (its pending reads and writes fail, which ends
        it); False if there is none."""
        stream = self._connections.get(peer)
        if stream is None:
            return False
        stream.socket.close()
        return True

    async def stop(self, grace_s: float) -> None:
        """Stop accepting; give the open connections ``grace_s`` to end (keep-alive ones
        close after their current request), then cut the rest."""
        await self._context.terminated.set()
        with trio.move_on_after(grace_s):
            while self._connections:
                await self._drained.wait()
        for stream in list(self._connections.values()):
            stream.socket.close()
        self._scope.cancel()

    async def _serve_connection(self, app: AppWrapper, stream: trio.SocketStream) -> None:
        try:
            peer: Peer = stream.socket.getpeername()[:2]
        except OSError:  # gone already
            await stream.aclose()
            return
        self._connections[peer] = stream
        try:
            # TCPServer takes a plain stream too (it asks for TLS by duck typing)
            tcp = TCPServer(app, self._config, self._context, {}, stream)  # type: ignore[arg-type]
            await tcp.run()
        except Exception as error:  # one connection's failure must not end the server
            self.failed_connections += 1
            _log().warning(
                "dashboard: a connection broke the HTTP protocol handling and was closed",
                client=f"{peer[0]}:{peer[1]}",
                error=repr(_innermost(error)),
            )
            await _close_quietly(stream)
        finally:
            if self._connections.get(peer) is stream:
                del self._connections[peer]
            if not self._connections:
                self._drained.set()
                self._drained = trio.Event()


def _innermost(error: BaseException) -> BaseException:
    """The first leaf of an exception group (the error itself otherwise)."""
    while isinstance(error, BaseExceptionGroup) and error.exceptions:
        error = error.exceptions[0]
    return error


async def _close_quietly(stream: trio.SocketStream) -> None:
    with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError, OSError):
        await stream.aclose()
