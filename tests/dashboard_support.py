"""Helpers for the dashboard's tests: a kernel serving a dashboard, feed frames, raw
sockets, and the dashboard's log records."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path
from typing import Any

import trio
from support import capture_component_logs
from trio_websocket import CloseReason, ConnectionClosed, WebSocketConnection

from loomk import Kernel
from loomk.dashboard import Dashboard, DashboardLimits, open_dashboard
from loomk.dashboard.top import open_feed
from loomk.testing import open_test_kernel

__all__ = [
    "FAST",
    "capture_dashboard_logs",
    "close_reason",
    "feed_client",
    "next_frame",
    "open_stream",
    "raw_upgrade",
    "serving",
    "upgrade_request",
]

FAST = DashboardLimits(tick_s=0.01, snapshot_interval_s=0.05, shutdown_grace_s=0.5)
"""The contract's limits with the cadence shortened, so tests wait milliseconds."""


@asynccontextmanager
async def serving(
    limits: DashboardLimits = FAST, static_dir: Path | None = None, **settings: Any
) -> AsyncIterator[tuple[Kernel, Dashboard]]:
    """A test kernel and a dashboard of it on a free loopback port."""
    async with (
        open_test_kernel(**settings) as kernel,
        open_dashboard(kernel, "127.0.0.1:0", limits=limits, static_dir=static_dir) as dashboard,
    ):
        yield kernel, dashboard


async def open_stream(dashboard: Dashboard) -> trio.SocketStream:
    """A TCP connection to the dashboard."""
    host, port = dashboard.address.rsplit(":", 1)
    return await trio.open_tcp_stream(host, int(port))


@asynccontextmanager
async def feed_client(
    dashboard: Dashboard, path: str = "/ws", **options: Any
) -> AsyncIterator[WebSocketConnection]:
    """A websocket client of the feed (``options`` go to :func:`loomk.dashboard.top.open_feed`,
    ``loomk top``'s own client: it owns and closes its TCP stream, which trio-websocket
    0.12's client leaves open when the server closes first)."""
    async with open_feed(f"ws://{dashboard.address}{path}", **options) as ws:
        yield ws


async def next_frame(ws: WebSocketConnection, kind: str) -> dict[str, Any]:
    """The next frame of type ``kind`` (frames of other types are skipped)."""
    while True:
        frame: dict[str, Any] = json.loads(await ws.get_message())
        if frame["type"] == kind:
            return frame


async def close_reason(ws: WebSocketConnection) -> CloseReason:
    """Read (and drop) frames until the server closes ``ws``; why it did."""
    while True:
        try:
            await ws.get_message()
        except ConnectionClosed as closed:
            return closed.reason


def upgrade_request(port: int, path: str = "/ws") -> bytes:
    """A websocket handshake request, as a browser sends it."""
    return (
        f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: Upgrade\r\n"
        "Upgrade: websocket\r\nSec-WebSocket-Version: 13\r\n"
        "Sec-WebSocket-Key: bKdPyn3u98cTfZJSh4TNeQ==\r\n\r\n"
    ).encode()


async def raw_upgrade(
    dashboard: Dashboard, trailing: bytes = b"", receive_buffer: int | None = None
) -> trio.SocketStream:
    """A TCP connection that sent a websocket handshake (then ``trailing`` bytes) and read
    the answer's head, nothing more: a client that never reads, with ``receive_buffer``
    bytes of kernel buffer if given."""
    host, port = dashboard.address.rsplit(":", 1)
    sock = trio.socket.socket()
    if receive_buffer is not None:
        sock.setsockopt(trio.socket.SOL_SOCKET, trio.socket.SO_RCVBUF, receive_buffer)
    await sock.connect((host, int(port)))
    stream = trio.SocketStream(sock)
    await stream.send_all(upgrade_request(int(port)) + trailing)
    head = b""
    while b"\r\n\r\n" not in head:
        chunk = await stream.receive_some(1)
        if not chunk:
            break
        head += chunk
    return stream


@contextmanager
def capture_dashboard_logs() -> Iterator[list[dict[str, Any]]]:
    """The dashboard's log records written meanwhile, as dicts (with ``log_level``),
    whatever the logs were set to (structlog is configured to keep everything for the
    block, and put back after it)."""
    with capture_component_logs("loomk.dashboard") as records:
        yield records
