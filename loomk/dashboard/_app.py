"""The dashboard's ASGI app: routing, the HTTP answers, and each websocket of the feed.

Routes (docs/dashboard.md): ``/`` (the page, ``static/index.html``), ``/static/<file>``,
``/metrics``, ``/api/snapshot``, ``/healthz`` and the websocket ``/ws``. Anything else is
404, any method but GET/HEAD on a known path 405. Static files are read per request (no
cache, ``Cache-Control: no-cache``), from inside the static directory only.

A websocket of ``/ws`` is one :class:`~loomk.dashboard._client.FeedClient`: a reader task
acts on what it sends, a writer task sends what its outbox holds, and the handler waits
for either side to end it. A browser page of another origin is refused (403): the feed
shows payloads, and any page the user visits could otherwise open it.
"""

from __future__ import annotations

import mimetypes
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

import trio
from hypercorn.typing import (
    ASGIReceiveCallable,
    ASGISendCallable,
    HTTPScope,
    Scope,
    WebsocketScope,
)

from loomk.dashboard._client import CLOSE_GOING_AWAY, CLOSE_TRY_LATER, FeedClient
from loomk.dashboard._hub import FeedHub
from loomk.dashboard._logs import dashboard_log as _log

if TYPE_CHECKING:
    from loomk import Kernel

__all__ = ["METRICS_CONTENT_TYPE", "DashboardApp"]

METRICS_CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
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
    ) -> None:
        self.kernel = kernel
        self.hub = hub
        self.static_dir = static_dir
        self._cut_connection = cut_connection
        self._close_grace_s = close_grace_s

    async def __call__(
        self, scope: Scope, receive: ASGIReceiveCallable, send: ASGISendCallable
    ) -> None:
        if scope["type"] == "http":
            await self._http(scope, send)
        elif scope["type"] == "websocket":
            await self._websocket(scope, receive, send)
        else:  # lifespan: nothing to set up or tear down
            while (await receive())["type"] != "lifespan.shutdown":
                await send({"type": "lifespan.startup.complete"})
            await send({"type": "lifespan.shutdown.complete"})

    # ---- HTTP ---------------------------------------------------------------------------------

    async def _http(self, scope: HTTPScope, send: ASGISendCallable) -> None:
        path, method = scope["path"], scope["method"]
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
            text = self.kernel.metrics.render_prometheus()
            await _respond(send, method, 200, text.encode(), METRICS_CONTENT_TYPE)
        elif path == "/api/snapshot":
            body = self.hub.latest_snapshot.encode()
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
        peer = f"{client_address[0]}:{client_address[1]}" if client_address else "?"
        client: FeedClient | None = None
        try:
            if (await receive())["type"] != "websocket.connect":
                return
            if scope["path"] != "/ws":
                await _reject(send, 404, b"not found\n")
                return
            problem = _cross_origin(scope)
            if problem:
                _log().warning("dashboard: feed client refused", client=peer, reason=problem)
                await _reject(send, 403, b"cross-origin websocket refused\n")
                return

            def cut() -> None:
                if client_address is not None:
                    self._cut_connection(client_address)

            client = self.hub.admit(peer, cut)
            await send({"type": "websocket.accept", "subprotocol": None, "headers": []})
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
        (b"x-content-type-options", b"nosniff"),
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
    ]
    await send({"type": "websocket.http.response.start", "status": status, "headers": headers})
    await send({"type": "websocket.http.response.body", "body": body, "more_body": False})


def _cross_origin(scope: WebsocketScope) -> str:
    """Why a websocket handshake comes from another site's page ('' if it does not): a
    browser sends ``Origin``; other clients (``loomk top``) send none."""
    origin = host = b""
    for name, value in scope["headers"]:
        if name.lower() == b"origin":
            origin = value
        elif name.lower() == b"host":
            host = value
    if not origin:
        return ""
    text = origin.decode("latin-1")
    if urlsplit(text).netloc.lower() != host.decode("latin-1").lower():
        return f"origin {text[:100]!r} is not this server"
    return ""


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
