"""A real HTTP/1.1 server on loopback for tests, in the test's own trio nursery.

Tests that talk to outside services (weather, search, an OpenAI-compatible model) start one
of these with a handler that speaks that service's wire format, and can misbehave on demand:
a status code, malformed JSON, a stream cut in the middle, or no answer at all (``hang``).

    async def handler(request: Request) -> Response:
        return Response.json_body({"ok": True})

    async with serve_http(handler) as server:
        ... server.url ...          # "http://127.0.0.1:PORT"
        server.requests             # every Request received, in order
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import h11
import trio

__all__ = ["Request", "Response", "Server", "serve_http"]


@dataclass
class Request:
    """One request as the server read it."""

    method: str
    target: str
    headers: dict[str, str]
    body: bytes

    @property
    def path(self) -> str:
        return urlsplit(self.target).path

    @property
    def query(self) -> dict[str, str]:
        return dict(parse_qsl(urlsplit(self.target).query, keep_blank_values=True))

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class Response:
    """What to answer. ``chunks`` streams the body piece by piece (chunked encoding);
    ``cut`` closes the connection after the chunks without ending the body; ``hang`` never
    answers (until the client gives up)."""

    status: int = 200
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)
    chunks: list[bytes] | None = None
    cut: bool = False
    hang: bool = False

    @classmethod
    def json_body(cls, value: Any, status: int = 200, **headers: str) -> Response:
        return cls(
            status, json.dumps(value).encode(), {"content-type": "application/json", **headers}
        )


Handler = Callable[[Request], Awaitable[Response]]


@dataclass
class Server:
    url: str
    requests: list[Request] = field(default_factory=list)


@asynccontextmanager
async def serve_http(handler: Handler) -> AsyncIterator[Server]:
    """Serve ``handler`` on 127.0.0.1 (a free port) until the block ends."""
    server = Server("")
    async with trio.open_nursery() as nursery:
        listeners = await nursery.start(
            trio.serve_tcp, lambda stream: _serve_connection(stream, handler, server), 0
        )
        server.url = f"http://127.0.0.1:{listeners[0].socket.getsockname()[1]}"
        yield server
        nursery.cancel_scope.cancel()


async def _serve_connection(stream: trio.SocketStream, handler: Handler, server: Server) -> None:
    connection = h11.Connection(h11.SERVER)
    async with stream:
        while True:
            request = await _read_request(stream, connection)
            if request is None:
                return
            server.requests.append(request)
            response = await handler(request)
            if response.hang:
                await trio.sleep_forever()
            if not await _write_response(stream, connection, response):
                return
            if connection.our_state is not h11.DONE or connection.their_state is not h11.DONE:
                return
            try:
                connection.start_next_cycle()
            except h11.LocalProtocolError:
                return


async def _read_request(stream: trio.SocketStream, connection: h11.Connection) -> Request | None:
    head: h11.Request | None = None
    body = bytearray()
    while True:
        try:
            event = connection.next_event()
        except h11.RemoteProtocolError:
            return None
        if event is h11.NEED_DATA:
            try:
                data = await stream.receive_some(65536)
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                return None
            connection.receive_data(data)
        elif isinstance(event, h11.Request):
            head = event
        elif isinstance(event, h11.Data):
            body += event.data
        elif isinstance(event, h11.EndOfMessage) and head is not None:
            headers = {k.decode().lower(): v.decode() for k, v in head.headers}
            return Request(head.method.decode(), head.target.decode(), headers, bytes(body))
        elif isinstance(event, h11.ConnectionClosed) or event is h11.PAUSED:
            return None


async def _write_response(
    stream: trio.SocketStream, connection: h11.Connection, response: Response
) -> bool:
    """Send ``response``; False when the connection must close now."""
    headers = [(k.encode(), v.encode()) for k, v in response.headers.items()]
    if response.chunks is None:
        headers.append((b"content-length", str(len(response.body)).encode()))
    else:
        headers.append((b"transfer-encoding", b"chunked"))
    try:
        await stream.send_all(
            connection.send(h11.Response(status_code=response.status, headers=headers))
        )
        pieces = response.chunks if response.chunks is not None else [response.body]
        for piece in pieces:
            if piece:
                await stream.send_all(connection.send(h11.Data(data=piece)))
        if response.cut:
            return False
        await stream.send_all(connection.send(h11.EndOfMessage()))
    except (trio.BrokenResourceError, trio.ClosedResourceError):
        return False
    return True
