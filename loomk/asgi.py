"""Serving an ASGI app from an edge: hypercorn's HTTP/1.1 and websocket handling on trio,
one socket, robust against bad connections (the dashboard and ``loomk mcp serve --http``).

Why not ``hypercorn.trio.serve``: it lets one connection's protocol error escape into the
server's nursery, so one bad request ends the whole server (pgjones/hypercorn#225: an
upgrade request followed by trailing bytes does it). :class:`HttpServer` runs hypercorn's
own per-connection ``TCPServer`` under a guard instead: a connection that fails is logged
and closed, and the server serves on. It also keeps each connection's stream, so a
websocket whose client stopped reading (hypercorn's writes are shielded, a stuck one cannot
be cancelled) can be cut (:meth:`HttpServer.abort`), and shutdown never waits on a dead
peer. This uses hypercorn's internals (``TCPServer``, ``WorkerContext``): the extras pin
hypercorn's minor version.

Two more things happen before hypercorn sees a connection:

- At most ``max_connections`` are served at once; one beyond is closed at once (logged),
  so a flood of idle connections cannot pile up tasks and buffers.
- Only HTTP/1.1 is spoken. hypercorn would switch a connection to HTTP/2 on an
  ``Upgrade: h2c`` request (answering 101) or on the HTTP/2 preface (``PRI *
  HTTP/2.0``, "prior knowledge"), and hypercorn 0.18 has no setting to turn either off.
  Over HTTP/2 many websockets share one TCP connection, so cutting one client that stopped
  reading (:meth:`HttpServer.abort`) would cut the others. The bytes each connection sends
  are watched and either is refused before hypercorn reads it: a plain 505 (preface) or 400
  (h2c) when it is the connection's first request, then the connection is closed, with a
  logged reason.

The socket is bound before anything runs (:func:`loomk.edges.listening_socket`), so a bad
or busy address fails at once, and port 0 gives the real port at once
(:attr:`HttpServer.address`). Import it only from an edge: it imports hypercorn.
"""

from __future__ import annotations

import contextlib
import ipaddress
import logging
import socket
from collections.abc import Callable
from functools import partial
from typing import TYPE_CHECKING

import trio
from hypercorn.config import Config as HypercornConfig
from hypercorn.trio.tcp_server import TCPServer
from hypercorn.trio.worker_context import WorkerContext
from hypercorn.typing import AppWrapper, ASGIFramework
from hypercorn.utils import wrap_app

from loomk.telemetry.logging import get_logger

if TYPE_CHECKING:
    pass

__all__ = ["HttpServer", "bound_address", "is_loopback_socket"]


Peer = tuple[str, int]


def is_loopback_socket(sock: socket.socket) -> bool:
    """Whether ``sock`` is bound to a loopback address (127.0.0.0/8, ``::1``)."""
    host = str(sock.getsockname()[0]).partition("%")[0]
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped.is_loopback
    return address.is_loopback


def bound_address(sock: socket.socket) -> str:
    """``host:port`` (``[v6]:port``) a socket is bound to."""
    host, port = sock.getsockname()[:2]
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


class HttpServer:
    """Serves an ASGI app on a listening socket (see the module); run :meth:`serve` in a
    nursery, end it with :meth:`stop`."""

    def __init__(
        self,
        sock: socket.socket,
        *,
        max_message_bytes: int,
        max_connections: int,
        logger: str = "loomk.asgi",
        label: str = "http",
    ) -> None:
        self.address = bound_address(sock)
        self.loopback = is_loopback_socket(sock)
        """Bound to a loopback address (the app then answers loopback names only)."""
        self.max_connections = max_connections
        """Connections served at once; one more is closed at once."""
        self._sock = sock
        self._config = HypercornConfig()
        # The app refuses messages over its own limit with a logged reason; hypercorn's
        # limit is the backstop that keeps a huge message from being buffered at all.
        self._config.websocket_max_message_size = max_message_bytes * 4
        self.logger = logger
        """The ``component`` of this server's log records (hypercorn's own go to the
        stdlib logger ``{logger}.hypercorn``)."""
        self.label = label
        """What its log messages start with (``dashboard: ...``)."""
        self._config.errorlog = logging.getLogger(f"{logger}.hypercorn")
        self._config.accesslog = None
        self._context = WorkerContext(None)
        self._connections: dict[Peer, trio.SocketStream] = {}
        self._drained = trio.Event()
        self._scope = trio.CancelScope()
        self.failed_connections = 0
        """Connections that broke hypercorn's protocol handling and were closed."""
        self.refused_connections = 0
        """Connections closed at once: over ``max_connections``, or speaking HTTP/2."""

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
        if len(self._connections) >= self.max_connections:
            self.refused_connections += 1
            get_logger(self.logger).warning(
                f"{self.label}: connection refused: too many connections",
                client=f"{peer[0]}:{peer[1]}",
                connections=len(self._connections),
                max_connections=self.max_connections,
            )
            await _close_quietly(stream)
            return
        self._connections[peer] = stream
        try:
            # TCPServer takes a plain stream too (it asks for TLS by duck typing)
            http1 = _Http1Only(stream, f"{peer[0]}:{peer[1]}", self._refused, self)
            tcp = TCPServer(app, self._config, self._context, {}, http1)  # type: ignore[arg-type]
            await tcp.run()
        except Exception as error:  # one connection's failure must not end the server
            self.failed_connections += 1
            get_logger(self.logger).warning(
                f"{self.label}: a connection broke the HTTP protocol handling and was closed",
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

    def _refused(self) -> None:
        self.refused_connections += 1


_LINE_KEPT = 256
"""Bytes of each line :class:`_Http1Only` keeps to look at (header lines that matter are
short; a longer ``Upgrade`` line is refused whole)."""
_H2_PREFACE = b"pri * http/2.0"
_H2C_REFUSAL = (
    "HTTP/1.1 400 Bad Request",
    "this server speaks HTTP/1.1 only: send the request without 'Upgrade: h2c'\n",
)
_PREFACE_REFUSAL = (
    "HTTP/1.1 505 HTTP Version Not Supported",
    "this server speaks HTTP/1.1 only, not HTTP/2\n",
)


class _Http1Only(trio.abc.HalfCloseableStream):
    """A connection's stream as hypercorn gets it: what the client sends, once it is an
    HTTP/2 preface or an h2c upgrade, is not passed on; the connection is refused instead
    (see the module).

    It looks at every line the client sends (only each line's first ``_LINE_KEPT`` bytes
    are kept, so it costs a scan of each chunk): a request line ``PRI * HTTP/2.0``, an
    ``Upgrade`` header naming ``h2c`` (or empty, or continued on the next line: a folded
    value h11 would join) or an ``HTTP2-Settings`` header. A line in a request body or a
    websocket frame that looks like one refuses its own connection, nobody else's (the
    dashboard takes no bodies, and browsers mask websocket frames)."""

    def __init__(
        self,
        transport: trio.SocketStream,
        peer: str,
        on_refused: Callable[[], None],
        server: HttpServer,
    ) -> None:
        self.transport = transport
        self._server = server  # whose logger and label its refusals use
        self.socket = transport.socket
        """hypercorn reads the peer's and the server's address from it."""
        self._peer = peer
        self._on_refused = on_refused
        self._line = bytearray()
        self._in_upgrade = False  # the last header line was Upgrade (a folded value follows?)
        self._head_ends = False  # the bytes being scanned end a request head
        self._answering = False
        """A whole request head has reached hypercorn: it may be writing an answer, so a
        refusal cannot write one of its own."""

    async def receive_some(self, max_bytes: int | None = None) -> bytes:
        data = await self.transport.receive_some(max_bytes)
        self._head_ends = False
        problem = self._scan(data)
        if not problem:
            self._answering = self._answering or self._head_ends
            return bytes(data)
        await self._refuse(problem)
        return b""  # hypercorn sees the client go

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        await self.transport.send_all(data)

    async def wait_send_all_might_not_block(self) -> None:
        await self.transport.wait_send_all_might_not_block()

    async def send_eof(self) -> None:
        await self.transport.send_eof()

    async def aclose(self) -> None:
        await self.transport.aclose()

    def _scan(self, data: bytes | bytearray) -> str:
        """Why ``data`` (the next bytes from the client) makes an HTTP/2 connection ('' if
        it does not); lines split across chunks are seen whole."""
        start = 0
        while True:
            end = data.find(b"\n", start)
            room = _LINE_KEPT - len(self._line)
            if end < 0:
                if room > 0:
                    self._line += data[start : start + room]
                return ""
            if room > 0:
                self._line += data[start : min(end, start + room)]
            line = bytes(self._line).rstrip(b"\r").lower()
            self._line.clear()
            self._head_ends = self._head_ends or not line
            problem = self._h2_line(line)
            if problem:
                return problem
            start = end + 1

    def _h2_line(self, line: bytes) -> str:
        if line.startswith(_H2_PREFACE):
            return "HTTP/2 with prior knowledge"
        if self._in_upgrade and line[:1] in (b" ", b"\t"):
            if b"h2c" in line:
                return "an h2c upgrade (Upgrade: h2c)"
            return ""
        name, colon, value = line.partition(b":")
        self._in_upgrade = bool(colon) and name == b"upgrade"
        if self._in_upgrade and (b"h2c" in value or not value.strip()):
            return "an h2c upgrade (Upgrade: h2c)"
        if colon and name == b"http2-settings":
            return "an h2c upgrade (HTTP2-Settings)"
        return ""

    async def _refuse(self, problem: str) -> None:
        """Log why, answer a first request in plain HTTP/1.1 (a later one may be in the
        middle of an answer: it is cut), and close the connection."""
        self._on_refused()
        get_logger(self._server.logger).warning(
            f"{self._server.label}: connection refused: HTTP/2 is not served",
            client=self._peer,
            reason=problem,
        )
        if not self._answering:
            status, body = _PREFACE_REFUSAL if "prior" in problem else _H2C_REFUSAL
            answer = (
                f"{status}\r\ncontent-type: text/plain; charset=utf-8\r\n"
                f"content-length: {len(body)}\r\nconnection: close\r\n\r\n{body}"
            )
            with trio.move_on_after(1.0), contextlib.suppress(trio.BrokenResourceError, OSError):
                await self.transport.send_all(answer.encode())
        await _close_quietly(self.transport)


def _innermost(error: BaseException) -> BaseException:
    """The first leaf of an exception group (the error itself otherwise)."""
    while isinstance(error, BaseExceptionGroup) and error.exceptions:
        error = error.exceptions[0]
    return error


async def _close_quietly(stream: trio.SocketStream) -> None:
    with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError, OSError):
        await stream.aclose()
