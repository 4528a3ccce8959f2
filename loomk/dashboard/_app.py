"""The dashboard's ASGI app: routing, the HTTP answers, and each websocket of the feed.

Routes (docs/dashboard.md): ``/`` (the page, ``static/index.html``), ``/static/<file>``,
``/metrics``, ``/api/snapshot``, ``/healthz`` and the websocket ``/ws``. Anything else is
404, any method but GET/HEAD on a known path 405. Static files are read per request (no
cache, ``Cache-Control: no-cache``), from inside the static directory only. ``/metrics`` is
rendered at most once a second (:class:`~loomk.dashboard._metrics.RenderCache`).

Before any of that, a request whose ``Host`` is not for this dashboard (a loopback
dashboard reached by another name: DNS rebinding, :mod:`loomk.dashboard._hosts`) is
answered 421, a websocket handshake refused with 421 before it is accepted. Every answer
carries :data:`SECURITY_HEADERS`: a Content-Security-Policy allowing the page its own
files and websocket only, no framing, no sniffing, no referrer.

A websocket of ``/ws`` is one :class:`~loomk.dashboard._client.FeedClient`: a reader task
acts on what it sends, a writer task sends what its outbox holds, and the handler waits
for either side to end it. A browser page of another origin is refused (403): the feed
shows payloads, and any page the user visits could otherwise open it.
"""

from __future__ import annotations

import mimetypes
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import TYPE_CHECKING

import trio
from hypercorn.typing import (
    ASGIReceiveCallable,
    ASGISendCallable,
    HTTPScope,
    Scope,
    WebsocketScope,
)

from loomk.dashboard._client import CLOSE_GOING_AWAY, CLOSE_TRY_LATER, FeedClient
from loomk.dashboard._hosts import HostPolicy
from loomk.dashboard._hub import FeedHub
from loomk.dashboard._logs import dashboard_log as _log
from loomk.dashboard._metrics import RenderCache

if TYPE_CHECKING:
    from loomk import Kernel

__all__ = ["CONTENT_SECURITY_POLICY", "METRICS_CONTENT_TYPE", "SECURITY_HEADERS", "DashboardApp"]

METRICS_CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
CONTENT_SECURITY_POLICY = (
    "default-src 'self'; connect-src 'self' ws: wss:; frame-ancestors 'none'; base-uri 'none'"
)
"""The page loads its own files only (no inline script or style, no CDN), talks to its
own server and websockets only, and may not be framed (no clickjacking)."""
SECURITY_HEADERS: tuple[tuple[bytes, bytes], ...] = (
    (b"content-security-policy", CONTENT_SECURITY_POLICY.encode()),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
)
"""Sent with every answer the app makes (pages, errors, refused handshakes)."""
_CONTENT_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".mjs": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".json": "application/json",
    ".map": "application/json",
    ".svg": "image/svg+xml",
    ".png": "image/png",
    ".ico": "image/x-icon",
    ".txt": "text/plain; charset=utf-8",
    ".woff2": "font/woff2",
}
_ROUTES = frozenset(("/", "/ws", "/metrics", "/api/snapshot", "/healthz"))
_METHODS = frozenset(("GET", "HEAD"))


Peer = tuple[str, int]
Headers = list[tuple[bytes, bytes]]


class DashboardApp:
    """The ASGI app of one dashboard (see the module)."""

    def __init__(
        self,
        kernel: Kernel,
        hub: FeedHub,
        static_dir: Path,
        cut_connection: Callable[[Peer], bool],
        *,
        close_grace_s: float = 1.0,
        hosts: HostPolicy | None = None,
        metrics_max_age_s: float = 1.0,
        clock: Callable[[], float] = trio.current_time,
    ) -> None:
        self.kernel = kernel
        self.hub = hub
        self.static_dir = static_dir
        self.hosts = HostPolicy(loopback_only=False) if hosts is None else hosts
        """Which ``Host`` and ``Origin`` are answered (``open_dashboard`` passes the real
        one; the default, any ``Host``, suits tests that drive the app directly)."""
        self.metrics = RenderCache(kernel.metrics.render_prometheus, metrics_max_age_s, clock)
        """``/metrics``' text, rendered at most every ``metrics_max_age_s``."""
        self._cut_connection = cut_connection
        self._close_grace_s = close_grace_s

    async def __call__(
        self, scope: Scope, receive: ASGIReceiveCallable, send: ASGISendCallable
    ) -> None:
        """Serve one HTTP request or one websocket. :class:`~._server.HttpServer` runs
        hypercorn's per-connection handler, which never sends the ``lifespan`` scope (only
        ``hypercorn.trio.serve`` does): any other scope is refused by raising, which is how
        an ASGI app says it does not take part (the spec's "not supported")."""
        if scope["type"] == "http":
            await self._http(scope, send)
        elif scope["type"] == "websocket":
            await self._websocket(scope, receive, send)
        else:
            raise ValueError(f"the dashboard serves http and websocket, not {scope['type']!r}")

    # ---- HTTP ---------------------------------------------------------------------------------

    async def _http(self, scope: HTTPScope, send: ASGISendCallable) -> None:
        path, method = scope["path"], scope["method"]
        problem = self.hosts.misdirected(_header(scope["headers"], b"host"))
        if problem:
            _log().warning("dashboard: request refused", client=_peer(scope), reason=problem)
            await _respond(send, method, 421, _MISDIRECTED)
            return
        static = path.startswith("/static/")
        if path not in _ROUTES and not static:
            await _respond(send, method, 404, b"not found\n")
            return
        if method not in _METHODS:
            await _respond(send, method, 405, b"method not allowed\n", allow=True)
            return
        if path == "/":
            await self._static(send, method, "index.html")
        elif static:
            await self._static(send, method, path[len("/static/") :])
        elif path == "/metrics":
            text = self.metrics.get()
            await _respond(send, method, 200, text.encode(), METRICS_CONTENT_TYPE)
        elif path == "/api/snapshot":
            body = self.hub.current_snapshot().encode()
            await _respond(send, method, 200, body, "application/json")
        elif path == "/healthz":
            await _respond(send, method, 200, b"ok\n")
        else:  # /ws without the websocket upgrade
            await _respond(send, method, 426, b"/ws is a websocket\n", upgrade=True)

    async def _static(self, send: ASGISendCallable, method: str, name: str) -> None:
        found = await trio.to_thread.run_sync(_read_static, self.static_dir, name)
        if found is None:
            await _respond(send, method, 404, b"not found\n")
            return
        body, content_type = found
        await _respond(send, method, 200, body, content_type, cache="no-cache")

    # ---- the feed -----------------------------------------------------------------------------

    async def _websocket(
        self, scope: WebsocketScope, receive: ASGIReceiveCallable, send: ASGISendCallable
    ) -> None:
        client_address = scope["client"]
        peer = _peer(scope)
        client: FeedClient | None = None
        try:
            if (await receive())["type"] != "websocket.connect":
                return
            host = _header(scope["headers"], b"host")
            problem = self.hosts.misdirected(host)
            if problem:
                _log().warning("dashboard: feed client refused", client=peer, reason=problem)
                await _reject(send, 421, _MISDIRECTED)
                return
            if scope["path"] != "/ws":
                await _reject(send, 404, b"not found\n")
                return
            problem = self.hosts.cross_origin(_header(scope["headers"], b"origin"), host)
            if problem:
                _log().warning("dashboard: feed client refused", client=peer, reason=problem)
                await _reject(send, 403, b"cross-origin websocket refused\n")
                return

            def cut() -> None:
                if client_address is not None:
                    self._cut_connection(client_address)

            client = self.hub.admit(peer, cut)
            accept_headers = list(SECURITY_HEADERS)
            await send({"type": "websocket.accept", "subprotocol": None, "headers": accept_headers})
            if client is None:  # refused (logged by the hub)
                code, reason = (
                    (CLOSE_GOING_AWAY, "shutdown")
                    if self.hub.stopping
                    else (CLOSE_TRY_LATER, "try again later")
                )
                await send({"type": "websocket.close", "code": code, "reason": reason})
                return
            await self._serve_client(client, receive, send)
        except Exception as error:  # hypercorn's protocol state broke under the feed
            _log().warning("dashboard: a feed connection failed", client=peer, error=repr(error))
            if client is not None and not client.close_reason:
                client.close_reason = "connection failed"
        finally:
            if client is not None:
                self.hub.leave(client)

    async def _serve_client(
        self, client: FeedClient, receive: ASGIReceiveCallable, send: ASGISendCallable
    ) -> None:
        """Feed ``client`` until either side ends it, then close it if it is still there.

        The writer is never cancelled in the middle of a frame (a frame taken from the
        outbox is sent, or its connection is gone); it returns once the client is done."""
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._read, client, receive)
            await self._write(client, send)
            nursery.cancel_scope.cancel()
        if client.close_code is not None and not (client.transport_aborted or client.peer_gone):
            await self._close(client, send)

    async def _read(self, client: FeedClient, receive: ASGIReceiveCallable) -> None:
        while not client.done.is_set():
            message = await receive()
            if message["type"] == "websocket.receive":
                client.handle_message(message.get("text"), message.get("bytes"))
            elif message["type"] == "websocket.disconnect":
                client.disconnected()

    async def _write(self, client: FeedClient, send: ASGISendCallable) -> None:
        outbox = client.outbox
        while not client.done.is_set():
            frame = await outbox.take()
            if frame is not None:
                await send({"type": "websocket.send", "text": frame, "bytes": None})
                self.hub.sent()

    async def _close(self, client: FeedClient, send: ASGISendCallable) -> None:
        """Send what control frames wait (the errors that led here), then the close frame;
        a client that does not take them within the grace period is cut off."""
        code = client.close_code
        assert code is not None

        async def cut_after_grace() -> None:
            await trio.sleep(self._close_grace_s)
            client.close(code, client.close_reason, "its close frame was not taken", abort=True)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(cut_after_grace)
            for frame in client.outbox.drain_control():
                await send({"type": "websocket.send", "text": frame, "bytes": None})
                self.hub.sent()
            await send({"type": "websocket.close", "code": code, "reason": client.close_reason})
            nursery.cancel_scope.cancel()


async def _respond(
    send: ASGISendCallable,
    method: str,
    status: int,
    body: bytes,
    content_type: str = "text/plain; charset=utf-8",
    *,
    cache: str = "no-store",
    allow: bool = False,
    upgrade: bool = False,
) -> None:
    headers: Headers = [
        (b"content-type", content_type.encode()),
        (b"content-length", str(len(body)).encode()),
        (b"cache-control", cache.encode()),
        *SECURITY_HEADERS,
    ]
    if allow:
        headers.append((b"allow", b"GET, HEAD"))
    if upgrade:
        headers.append((b"upgrade", b"websocket"))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send(
        {
            "type": "http.response.body",
            "body": b"" if method == "HEAD" else body,
            "more_body": False,
        }
    )


async def _reject(send: ASGISendCallable, status: int, body: bytes) -> None:
    """Answer a websocket handshake with a plain HTTP response instead of accepting it."""
    headers: Headers = [
        (b"content-type", b"text/plain; charset=utf-8"),
        (b"content-length", str(len(body)).encode()),
        *SECURITY_HEADERS,
    ]
    await send({"type": "websocket.http.response.start", "status": status, "headers": headers})
    await send({"type": "websocket.http.response.body", "body": body, "more_body": False})


_MISDIRECTED = b"misdirected request: this dashboard does not answer to that Host\n"


def _header(headers: Iterable[tuple[bytes, bytes]], name: bytes) -> str | None:
    """The value of the header ``name`` (lower-case), or None when there is none."""
    for key, value in headers:
        if key.lower() == name:
            return value.decode("latin-1")
    return None


def _peer(scope: HTTPScope | WebsocketScope) -> str:
    """``host:port`` of the client, for the logs (``?`` when unknown)."""
    client = scope["client"]
    return f"{client[0]}:{client[1]}" if client else "?"


def _read_static(static_dir: Path, name: str) -> tuple[bytes, str] | None:
    """The bytes and content type of ``static_dir/name``, or None when it is not a file
    inside ``static_dir`` (no ``..``, no hidden files, no link out of it)."""
    parts = name.split("/")
    if any(not part or part.startswith(".") or "\\" in part or "\0" in part for part in parts):
        return None
    try:
        root = static_dir.resolve(strict=True)
        path = root.joinpath(*parts).resolve(strict=True)
        if not path.is_relative_to(root) or not path.is_file():
            return None
        body = path.read_bytes()
    except (OSError, ValueError):
        return None
    content_type = _CONTENT_TYPES.get(path.suffix.lower())
    if content_type is None:
        content_type = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
    return body, content_type
