"""``loomk top ws://HOST:PORT/ws``: the dashboard in a terminal, for machines without a browser.

It reads the websocket feed the web page reads (the protocol is in docs/dashboard.md) and
redraws, on every frame, a screen of the kernel's agents, busiest topics, latest events and
edges' counters (:mod:`loomk.dashboard._top_view` draws it; this module talks to the feed).

- ``--once`` prints one snapshot as plain tables and exits 0, for scripts; a feed that cannot
  be reached (or sends no snapshot in ``--timeout`` seconds) is one line on stderr, exit 2.
- Without it the screen stays up: a dropped or refused connection is shown as
  ``reconnecting`` and retried with a growing delay, until Ctrl+C (or SIGTERM), exit 0.
- ``--filter PATTERN`` sends the feed's ``filter`` command: only matching events are listed.
- ``http://HOST:PORT/`` (the page's address) and ``HOST:PORT`` are accepted for the feed's
  URL: ``ws://HOST:PORT/ws`` is derived from them.

A server sending frames that are not the protocol's is counted and shown, never a
traceback. rich and trio-websocket (the ``dashboard`` extra) are imported only when the
command runs, so ``loomk --help`` lists ``top`` without them.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import ssl
import sys
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, NoReturn
from urllib.parse import urlsplit, urlunsplit

import trio

if TYPE_CHECKING:
    from rich.console import Console, RenderableType
    from trio_websocket import WebSocketConnection

    from loomk.dashboard._top_view import JsonObject, TopView

__all__ = [
    "COMMAND",
    "RETRY_DELAYS_S",
    "FeedUnavailable",
    "TopCommand",
    "feed_url",
    "fetch_snapshot",
    "follow_feed",
    "open_feed",
]

RETRY_DELAYS_S: tuple[float, ...] = (0.25, 0.5, 1.0, 2.0, 5.0)
"""Seconds before each reconnection attempt after a failure; the last repeats until a
snapshot arrives again."""
CONNECT_TIMEOUT_S = 10.0
"""How long one connection attempt (TCP and the websocket handshake) may take."""
DISCONNECT_TIMEOUT_S = 1.0
"""How long closing a websocket may wait for the server's close frame."""
MAX_FRAME_BYTES = 16 * 1024 * 1024
"""The largest frame taken from the feed (a snapshot of a big kernel is well under it)."""
_SCHEMES = {"ws": "ws", "wss": "wss", "http": "ws", "https": "wss"}


class FeedUnavailable(Exception):
    """The feed could not be reached, or sent no snapshot in time; the message says why."""


def feed_url(target: str) -> str:
    """The feed's ``ws://`` URL for what the user typed: ``ws://HOST:PORT/ws`` as given (a
    bare ``ws://HOST:PORT`` gets ``/ws``), the page's ``http://HOST:PORT/`` or ``HOST:PORT``
    becomes ``ws://HOST:PORT/ws`` (``https`` becomes ``wss``). ValueError if it is none."""
    text = target.strip()
    given = text if "://" in text else f"ws://{text}"
    parts = urlsplit(given)
    scheme = _SCHEMES.get(parts.scheme.lower())
    if scheme is None:
        raise ValueError(f"{target!r} is not a ws://, wss://, http:// or https:// URL")
    try:
        parts.port  # noqa: B018 - raises ValueError for a port that is not a number
    except ValueError:
        raise ValueError(f"{target!r}: the port is not a number from 0 to 65535") from None
    if not parts.hostname:
        raise ValueError(f"{target!r} names no host; expected ws://HOST:PORT/ws or HOST:PORT")
    path = parts.path
    if (parts.scheme.lower() in ("http", "https") or path in ("", "/")) and not path.endswith(
        "/ws"
    ):
        path = path.rstrip("/") + "/ws"  # the page's address: the feed is beside it
    return urlunsplit((scheme, parts.netloc, path, parts.query, ""))


def describe_failure(error: BaseException) -> str:
    """Why a connection to the feed failed or ended, in a few words for the screen."""
    import trio_websocket

    if isinstance(error, trio_websocket.ConnectionRejected):
        return f"the server refused the websocket (HTTP {error.status_code})"
    if isinstance(error, trio_websocket.ConnectionTimeout):
        return "the connection timed out"
    if isinstance(error, trio_websocket.ConnectionClosed):
        reason = error.reason
        if reason is None:
            return "closed by the server"
        said = f": {reason.reason}" if reason.reason else ""
        return f"closed by the server ({reason.code} {reason.name}{said})"
    cause = error.__cause__ or error.__context__
    if isinstance(error, trio_websocket.HandshakeError) and cause is not None:
        return describe_failure(cause)
    return str(error) or type(error).__name__


def _connection_errors() -> tuple[type[Exception], ...]:
    """What a connection to the feed raises when it fails or drops (not a bug of ours)."""
    import trio_websocket

    return (
        OSError,
        trio.BrokenResourceError,  # a TLS handshake that failed
        trio_websocket.HandshakeError,
        trio_websocket.ConnectionClosed,
    )


@asynccontextmanager
async def open_feed(
    url: str,
    *,
    connect_timeout_s: float = CONNECT_TIMEOUT_S,
    disconnect_timeout_s: float = DISCONNECT_TIMEOUT_S,
    max_message_bytes: int = MAX_FRAME_BYTES,
    extra_headers: list[tuple[bytes, bytes]] | None = None,
    ssl_context: ssl.SSLContext | None = None,
) -> AsyncIterator[WebSocketConnection]:
    """A websocket client of the feed at ``url`` (``ws://`` or ``wss://``), closed when the
    block ends, and its TCP stream with it.

    Why not ``trio_websocket.open_websocket_url``: its client (0.12) leaves the TCP stream
    open when the server closes the websocket first (it waits for the server to close TCP,
    as the RFC says, then never closes its side), so each reconnection would leave a socket
    for the garbage collector. Here the stream is opened by us and handed to
    ``trio_websocket.wrap_client_stream``, so we close it. The ``Host`` header is the URL's
    ``host:port`` as written (``[::1]:8765`` for IPv6, which trio-websocket gets wrong).

    Raises :class:`trio_websocket.ConnectionTimeout` when TCP and the handshake take over
    ``connect_timeout_s``, :class:`trio_websocket.ConnectionRejected` when the server
    answers the handshake with an HTTP status, ``OSError`` when the host cannot be
    reached; never an exception group (one error is raised as itself)."""
    import trio_websocket

    parts = urlsplit(url)
    secure = parts.scheme.lower() == "wss"
    host = parts.hostname or ""
    port = parts.port or (443 if secure else 80)
    resource = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    host_header = parts.netloc.rpartition("@")[2]
    stream: trio.abc.Stream
    try:
        with trio.fail_after(connect_timeout_s):
            if secure:
                context = ssl.create_default_context() if ssl_context is None else ssl_context
                stream = await trio.open_ssl_over_tcp_stream(
                    host, port, ssl_context=context, https_compatible=True
                )
            else:
                stream = await trio.open_tcp_stream(host, port)
    except trio.TooSlowError:
        raise trio_websocket.ConnectionTimeout from None
    try:
        async with trio.open_nursery() as nursery:
            try:
                with trio.fail_after(connect_timeout_s):
                    websocket = await trio_websocket.wrap_client_stream(
                        nursery,
                        stream,
                        host_header,
                        resource,
                        extra_headers=extra_headers,
                        max_message_size=max_message_bytes,
                    )
            except trio.TooSlowError:
                raise trio_websocket.ConnectionTimeout from None
            try:
                yield websocket
            finally:
                with trio.move_on_after(disconnect_timeout_s):
                    await websocket.aclose()
    except BaseExceptionGroup as group:
        # the library's reader task fails the nursery (a refused handshake, say): one error
        # is raised as itself, as open_websocket_url does
        raise _single_error(group) from None
    finally:
        await trio.aclose_forcefully(stream)


def _single_error(group: BaseExceptionGroup[BaseException]) -> BaseException:
    """The one exception in ``group`` that is not a cancellation (the group otherwise)."""
    errors = group.subgroup(lambda error: not isinstance(error, trio.Cancelled))
    if errors is None:
        return group
    error: BaseException = errors
    while isinstance(error, BaseExceptionGroup) and len(error.exceptions) == 1:
        error = error.exceptions[0]
    return error


async def fetch_snapshot(url: str, view: TopView, *, timeout_s: float) -> JsonObject:
    """Connect to the feed at ``url`` and fold frames into ``view`` until a snapshot
    arrives; that snapshot. :class:`FeedUnavailable` if the feed cannot be reached or sends
    none within ``timeout_s``."""
    try:
        with trio.fail_after(timeout_s):
            async with open_feed(url, connect_timeout_s=timeout_s) as websocket:
                view.connections += 1
                view.connection = "connected"
                while True:
                    if await _take_frame(websocket, view) == "snapshot":
                        assert view.snapshot is not None
                        return view.snapshot
    except trio.TooSlowError:
        raise FeedUnavailable(f"no snapshot from {url} within {timeout_s:g} s") from None
    except _connection_errors() as error:
        raise FeedUnavailable(f"cannot reach {url}: {describe_failure(error)}") from None


async def follow_feed(
    url: str,
    view: TopView,
    on_change: Callable[[], None],
    *,
    topic_filter: str | None = None,
    retry_delays_s: Sequence[float] = RETRY_DELAYS_S,
) -> NoReturn:
    """Fold the feed at ``url`` into ``view`` for ever, calling ``on_change`` after each
    change; a connection that fails or drops is retried after the next of ``retry_delays_s``
    (back to the first once a snapshot arrives), with ``view`` saying ``reconnecting``.
    ``topic_filter`` is sent as the ``filter`` command on every connection."""
    failures = 0
    while True:
        try:
            async with open_feed(url) as websocket:
                view.connections += 1
                view.connection, view.connection_detail = "connected", ""
                on_change()
                if topic_filter is not None:
                    command = {"type": "filter", "topic": topic_filter}
                    await websocket.send_message(json.dumps(command))
                while True:
                    if await _take_frame(websocket, view) == "snapshot":
                        failures = 0  # the feed works: the next failure retries quickly
                    on_change()
        except _connection_errors() as error:
            reason = describe_failure(error)
        delay = retry_delays_s[min(failures, len(retry_delays_s) - 1)]
        failures += 1
        view.connection = "reconnecting"
        view.connection_detail = f"{reason}; next try in {delay:g} s"
        on_change()
        await trio.sleep(delay)


async def _take_frame(websocket: WebSocketConnection, view: TopView) -> str | None:
    """Receive one frame from ``websocket`` and fold it into ``view``; its type or None."""
    from loomk.dashboard._top_view import apply_frame

    return apply_frame(view, await websocket.get_message())


async def _until_interrupted(work: Callable[[], Awaitable[object]]) -> bool:
    """Run ``work`` until it returns or Ctrl+C (SIGINT) or SIGTERM arrives; True if one did.

    The signal cancels ``work`` (so a live screen is taken down by its context manager)
    rather than raising KeyboardInterrupt wherever the program happens to be."""
    interrupted = False
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async with trio.open_nursery() as nursery:

            async def cancel_on_signal() -> None:
                nonlocal interrupted
                async for _ in signals:
                    interrupted = True
                    nursery.cancel_scope.cancel()
                    return

            nursery.start_soon(cancel_on_signal)
            await work()
            nursery.cancel_scope.cancel()
    return interrupted


async def print_once(url: str, *, timeout_s: float, console: Console | None = None) -> int:
    """``loomk top --once``: print the first snapshot as plain tables; the exit status (2,
    said on stderr in one line, if the feed cannot be reached)."""
    from loomk.dashboard._top_view import TopView, render_snapshot

    view = TopView(url=url)
    status: list[int] = []

    async def fetch_and_print() -> None:
        try:
            snapshot = await fetch_snapshot(url, view, timeout_s=timeout_s)
        except FeedUnavailable as error:
            print(f"loomk top: {error}", file=sys.stderr, flush=True)
            status.append(2)
            return
        (console or _plain_console()).print(render_snapshot(snapshot))
        if view.malformed_frames:
            print(
                f"loomk top: ignored {view.malformed_frames} malformed frame(s) from {url}",
                file=sys.stderr,
                flush=True,
            )
        status.append(0)

    interrupted = await _until_interrupted(fetch_and_print)
    return 0 if interrupted else status[0]


async def watch_live(url: str, *, topic_filter: str | None, console: Console) -> None:
    """``loomk top``: the live screen, redrawn on every frame, until Ctrl+C or SIGTERM."""
    from rich.live import Live

    from loomk.dashboard._top_view import TopView, render_top, rows_needed_besides_agents

    view = TopView(url=url)

    def draw() -> RenderableType:
        agent_rows = console.size.height - rows_needed_besides_agents(view)
        return render_top(view, agent_rows=max(agent_rows, 3))

    with Live(
        draw(),
        console=console,
        screen=True,
        auto_refresh=False,  # redrawn by the feed's frames, from trio's thread only
        redirect_stdout=False,
        redirect_stderr=False,
    ) as live:

        def redraw() -> None:
            live.update(draw(), refresh=True)

        async def follow() -> None:
            await follow_feed(url, view, redraw, topic_filter=topic_filter)

        await _until_interrupted(follow)


def _plain_console() -> Console:
    """The console ``--once`` prints on: as wide as the terminal, or 120 columns (COLUMNS
    if set) when the output goes to a file or a pipe, so tables are not squeezed."""
    from rich.console import Console

    if sys.stdout.isatty() or os.environ.get("COLUMNS"):
        return Console()
    return Console(width=120)


class TopCommand:
    """The ``top`` subcommand of ``loomk``: the dashboard in a terminal."""

    name = "top"
    help = (
        "watch a kernel's dashboard feed in the terminal: agents, topics, rates and recent "
        "events, live (needs loomk[dashboard])"
    )

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument(
            "url",
            metavar="URL",
            help="the dashboard's feed, ws://HOST:PORT/ws; the page's http://HOST:PORT/ or "
            "HOST:PORT work too",
        )
        parser.add_argument(
            "--filter",
            metavar="PATTERN",
            help="list only events whose topic matches PATTERN (the bus's grammar, * and >)",
        )
        parser.add_argument(
            "--once",
            action="store_true",
            help="print one snapshot as plain tables and exit 0 (2 if it cannot be had)",
        )
        parser.add_argument(
            "--timeout",
            metavar="SECONDS",
            type=_positive_seconds,
            default=CONNECT_TIMEOUT_S,
            help=f"with --once, how long to wait for a snapshot (default {CONNECT_TIMEOUT_S:g})",
        )

    def run(self, args: argparse.Namespace) -> int:
        try:
            url = feed_url(args.url)
        except ValueError as error:
            print(f"loomk top: {error}", file=sys.stderr)
            return 2
        try:
            import rich  # noqa: F401 - checked before anything is drawn
            import trio_websocket  # noqa: F401
        except ImportError as error:
            print(
                f"loomk top: {error.name or error} is not installed; to install it: "
                "pip install 'loomk[dashboard]'",
                file=sys.stderr,
            )
            return 2
        try:
            if args.once:
                return trio.run(lambda: print_once(url, timeout_s=args.timeout))
            from rich.console import Console

            trio.run(lambda: watch_live(url, topic_filter=args.filter, console=Console()))
        except KeyboardInterrupt:  # Ctrl+C before the signal receiver was listening
            pass
        return 0


def _positive_seconds(text: str) -> float:
    try:
        seconds = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if not 0 < seconds < 1e6:
        raise argparse.ArgumentTypeError(f"{text!r}: give a number of seconds above 0")
    return seconds


COMMAND = TopCommand()
