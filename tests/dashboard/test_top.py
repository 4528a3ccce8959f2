"""``loomk top``: the dashboard in a terminal.

Against a real kernel serving the dashboard, ``loomk top`` runs in a pseudo-terminal as a
user runs it (the live screen shows a spawned agent; Ctrl+C exits 0) and ``--once`` prints
it. A fake trio-websocket server plays a feed that sends garbage, drops the connection or
is not there at all. The drawing is checked apart from any socket: a snapshot dict in,
text out, whatever the snapshot lacks.
"""

from __future__ import annotations

import fcntl
import json
import math
import os
import signal
import struct
import subprocess
import sys
import termios
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import pytest
import trio
from rich.console import Console
from trio_websocket import ConnectionClosed, WebSocketConnection, WebSocketRequest, serve_websocket

from loomk.dashboard._top_view import TopView, apply_frame, render_snapshot, render_top
from loomk.dashboard.top import feed_url, follow_feed
from loomk.testing import ScriptedAgent, open_test_kernel

LOOMK = str(Path(sys.executable).with_name("loomk"))


def _snapshot(*agent_ids: str, **extra: Any) -> dict[str, Any]:
    """A snapshot frame as docs/dashboard.md describes it, one running agent per id."""
    return {
        "type": "snapshot",
        "t_ms": 1_700_000_000_000,
        "kernel": "home",
        "uptime_s": 3725.5,
        "totals": {
            "published": 1200,
            "delivered": 2400,
            "dropped": 3,
            "published_per_s": 12.5,
            "delivered_per_s": 25.0,
        },
        "agents": [
            {
                "id": agent_id,
                "status": "running",
                "mailbox": 2,
                "mailbox_high_water": 9,
                "handled": 1000,
                "failures": 0,
                "restarts": 1,
                "expired": 0,
                "handled_per_s": 7.5,
                "subscriptions": ["home.>"],
                "latency_ms": {"p50": 0.4, "p99": 3.25, "max": 9.0, "count": 1000},
            }
            for agent_id in agent_ids
        ],
        "topics": [
            {
                "topic": "home.temperature",
                "published": 1000,
                "delivered": 1000,
                "dropped": 3,
                "subscriptions": 1,
                "depth": 4,
                "published_per_s": 10.0,
            }
        ],
        "edges": {"dashboard": {"clients": 1, "frames_sent": 42}},
        "capabilities": [],
        "routes": {},
        **extra,
    }


def _text_of(renderable: object, width: int = 100) -> str:
    console = Console(record=True, width=width, file=open(os.devnull, "w"))  # noqa: SIM115
    console.print(renderable)
    console.file.close()
    return console.export_text()


# --- drawing, apart from any socket ---------------------------------------------------------


def test_a_snapshot_is_drawn_with_its_agents_rates_topics_and_edges() -> None:
    text = _text_of(render_snapshot(_snapshot("thermostat", "lights")))
    assert "thermostat" in text
    assert "lights" in text
    assert "12.5" in text  # published/s
    assert "25.0" in text  # delivered/s
    assert "7.5" in text  # handled/s
    assert "3.2" in text  # p99 latency, ms
    assert "home.temperature" in text
    assert "frames_sent 42" in text
    assert "1h02m" in text  # uptime


def test_the_live_screen_shows_the_connection_events_and_trouble() -> None:
    view = TopView(url="ws://127.0.0.1:8765/ws")
    view.connection = "reconnecting"
    view.connection_detail = "closed by the server"
    assert apply_frame(view, json.dumps(_snapshot("thermostat"))) == "snapshot"
    events = {
        "type": "events",
        "missed": 5,
        "events": [{"seq": 7, "topic": "home.temperature", "type": "reading", "size": 20}],
    }
    assert apply_frame(view, json.dumps(events)) == "events"
    assert apply_frame(view, "not json") is None
    error = {"type": "error", "code": "BAD_FILTER", "message": "bad pattern"}
    assert apply_frame(view, json.dumps(error)) == "error"
    text = _text_of(render_top(view))
    for shown in (
        "kernel home",
        "reconnecting",
        "thermostat",
        "reading",
        "malformed frames: 1",
        "BAD_FILTER: bad pattern",
        "events not sent to us: 5",
    ):
        assert shown in text


def test_the_live_screen_lists_as_many_agents_as_fit_and_says_how_many_more() -> None:
    view = TopView(url="ws://h:1/ws")
    apply_frame(view, json.dumps(_snapshot(*(f"agent-{n:02d}" for n in range(20)))))
    text = _text_of(render_top(view, agent_rows=5))
    assert "agent-04" in text
    assert "agent-05" not in text
    assert "15 more agents" in text


@pytest.mark.parametrize(
    "snapshot",
    [
        {"type": "snapshot"},
        {"type": "snapshot", "agents": "oops", "topics": 7, "edges": [], "totals": None},
        {"type": "snapshot", "agents": [1, None, {"latency_ms": "x", "mailbox": "many"}]},
        {"type": "snapshot", "agents": [{"id": 5, "status": ["running"], "handled": 1e400}]},
        {"type": "snapshot", "uptime_s": -1, "totals": {"published": True, "dropped": 10**400}},
        {"type": "snapshot", "topics": [{"topic": None, "published_per_s": "fast"}]},
        {"type": "snapshot", "edges": {"deep": {"a": {"b": {"c": {"d": 1}}}}, "odd": [1, 2]}},
    ],
)
def test_a_snapshot_missing_or_mistyping_fields_is_drawn_with_dashes(
    snapshot: dict[str, Any],
) -> None:
    view = TopView(url="ws://h:1/ws")
    assert apply_frame(view, json.dumps(snapshot)) == "snapshot"
    assert "agents" in _text_of(render_top(view))
    assert "agents" in _text_of(render_snapshot(snapshot))


def test_server_text_is_shown_literally_never_as_markup_or_escape_sequences() -> None:
    snapshot = _snapshot("[bold]x[/]", "[/oops]", "clear\x1b[2Jscreen")
    text = _text_of(render_snapshot(snapshot), width=120)
    assert "[bold]x[/]" in text
    assert "[/oops]" in text
    assert "\x1b" not in text
    assert "clear?[2Jscreen" in text


@pytest.mark.parametrize(
    "frame",
    [
        "not json",
        "[1, 2]",
        "42",
        '{"no": "type"}',
        '{"type": 7}',
        '{"type": "surprise"}',
        '{"type": "events", "events": "none"}',
        b"\x00\x01binary",
        "[" * 100_000,
        "",
    ],
)
def test_a_frame_outside_the_protocol_is_counted_as_malformed(frame: str | bytes) -> None:
    view = TopView(url="ws://h:1/ws")
    assert apply_frame(view, frame) is None
    assert (view.frames, view.malformed_frames) == (1, 1)
    assert view.snapshot is None


@pytest.mark.parametrize(
    ("typed", "url"),
    [
        ("ws://127.0.0.1:8765/ws", "ws://127.0.0.1:8765/ws"),
        ("ws://127.0.0.1:8765", "ws://127.0.0.1:8765/ws"),
        ("wss://dash.example:443/", "wss://dash.example:443/ws"),
        ("http://127.0.0.1:8765/", "ws://127.0.0.1:8765/ws"),
        ("http://127.0.0.1:8765", "ws://127.0.0.1:8765/ws"),
        ("https://dash.example/loomk/", "wss://dash.example/loomk/ws"),
        ("127.0.0.1:8765", "ws://127.0.0.1:8765/ws"),
        ("localhost:8765/ws", "ws://localhost:8765/ws"),
        ("[::1]:8765", "ws://[::1]:8765/ws"),
    ],
)
def test_the_feed_url_is_derived_from_what_the_user_typed(typed: str, url: str) -> None:
    assert feed_url(typed) == url


@pytest.mark.parametrize("typed", ["ftp://h:1/", "h:port", "://nothing", ""])
def test_a_url_that_names_no_feed_is_refused(typed: str) -> None:
    with pytest.raises(ValueError, match=r"."):
        feed_url(typed)


# --- a fake feed ----------------------------------------------------------------------------

Script = Callable[[WebSocketConnection, int], Awaitable[None]]
"""What the fake feed does on a connection (given its number, from 1)."""


@dataclass
class FakeFeed:
    url: str
    received: list[str] = field(default_factory=list)
    connections: int = 0


@asynccontextmanager
async def fake_feed(script: Script) -> AsyncIterator[FakeFeed]:
    """A trio-websocket server on a free port running ``script`` on each connection, then
    recording what the client sends until it goes."""
    feed = FakeFeed(url="")

    async def handler(request: WebSocketRequest) -> None:
        websocket = await request.accept()
        feed.connections += 1
        try:
            await script(websocket, feed.connections)
            while True:
                message = await websocket.get_message()
                feed.received.append(str(message))
        except ConnectionClosed:
            pass

    async with trio.open_nursery() as nursery:
        server = await nursery.start(serve_websocket, handler, "127.0.0.1", 0, None)
        feed.url = f"ws://127.0.0.1:{server.port}/ws"
        yield feed
        nursery.cancel_scope.cancel()


async def _send_all(websocket: WebSocketConnection, frames: Sequence[str | bytes]) -> None:
    for frame in frames:
        await websocket.send_message(frame)


GARBAGE: list[str | bytes] = ["not json", "[1]", '{"type": "surprise"}', b"\xff\x00"]
HELLO = json.dumps({"type": "hello", "protocol": 1, "kernel": "fake"})


async def test_the_feed_is_followed_through_garbage_and_a_dropped_connection() -> None:
    async def script(websocket: WebSocketConnection, connection: int) -> None:
        if connection == 1:  # garbage, a snapshot, then the server goes
            await _send_all(websocket, [HELLO, *GARBAGE, json.dumps(_snapshot("first"))])
            await websocket.aclose()
        else:  # answers once the filter is set
            filter_command = json.loads(await websocket.get_message())
            assert filter_command == {"type": "filter", "topic": "home.>"}
            await _send_all(websocket, [HELLO, json.dumps(_snapshot("second"))])

    states: list[str] = []
    changes_in, changes = trio.open_memory_channel[None](math.inf)
    async with fake_feed(script) as feed:
        view = TopView(url=feed.url)

        def on_change() -> None:
            states.append(view.connection)
            changes_in.send_nowait(None)

        async with trio.open_nursery() as nursery:
            follow = partial(follow_feed, topic_filter="home.>", retry_delays_s=(0.01,))
            nursery.start_soon(follow, feed.url, view, on_change)
            with trio.fail_after(10):
                while _agent_ids(view) != ["second"]:
                    await changes.receive()
            nursery.cancel_scope.cancel()
    assert view.malformed_frames == len(GARBAGE)
    assert view.connections == feed.connections == 2
    assert "reconnecting" in states
    assert states[-1] == "connected"
    assert "malformed frames: 4" in _text_of(render_top(view))


def _agent_ids(view: TopView) -> list[str]:
    agents = (view.snapshot or {}).get("agents")
    return [agent["id"] for agent in agents] if isinstance(agents, list) else []


async def _loomk(*args: str) -> subprocess.CompletedProcess[bytes]:
    with trio.fail_after(30):
        return await trio.run_process(
            [LOOMK, *args], capture_stdout=True, capture_stderr=True, check=False
        )


@pytest.mark.e2e
async def test_once_against_a_feed_sending_garbage_prints_the_snapshot_and_counts_it() -> None:
    async def script(websocket: WebSocketConnection, connection: int) -> None:
        await _send_all(websocket, [HELLO, *GARBAGE, json.dumps(_snapshot("thermostat"))])

    async with fake_feed(script) as feed:
        done = await _loomk("top", "--once", feed.url)
    out, err = done.stdout.decode(), done.stderr.decode()
    assert done.returncode == 0, err
    assert "thermostat" in out
    assert "ignored 4 malformed frame(s)" in err
    assert "Traceback" not in err


@pytest.mark.e2e
async def test_once_against_nothing_says_so_in_one_line_and_exits_2() -> None:
    with trio.socket.socket() as probe:  # a port nobody listens on: bound, then let go
        await probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    done = await _loomk("top", "--once", f"127.0.0.1:{port}")
    err = done.stderr.decode()
    assert done.returncode == 2
    assert done.stdout == b""
    assert err.count("\n") == 1, err
    assert err.startswith(f"loomk top: cannot reach ws://127.0.0.1:{port}/ws")


# --- against a real kernel ------------------------------------------------------------------


@asynccontextmanager
async def kernel_with_a_thermostat() -> AsyncIterator[Any]:
    """A kernel serving the dashboard on a free port, running an agent named thermostat,
    once its feed's snapshots list the agent (so every new client is sent one that does);
    its dashboard edge."""
    async with open_test_kernel(dashboard_address="127.0.0.1:0") as kernel:
        await kernel.spawn(ScriptedAgent("thermostat"))
        dashboard: Any = kernel.edge("dashboard")
        with trio.fail_after(10):
            await _until_the_feed_lists(dashboard.ws_url, "thermostat")
        yield dashboard


async def _until_the_feed_lists(url: str, agent_id: str) -> None:
    """Follow the feed at ``url`` until a snapshot lists ``agent_id``."""
    view = TopView(url=url)
    changes_in, changes = trio.open_memory_channel[None](math.inf)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(follow_feed, url, view, partial(changes_in.send_nowait, None))
        while agent_id not in _agent_ids(view):
            await changes.receive()
        nursery.cancel_scope.cancel()


@pytest.mark.e2e
async def test_once_prints_a_live_kernels_agents_and_exits_0() -> None:
    async with kernel_with_a_thermostat() as dashboard:
        done = await _loomk("top", "--once", dashboard.url)  # the page's http:// address
    assert done.returncode == 0, done.stderr.decode()
    assert "thermostat" in done.stdout.decode()


@pytest.mark.e2e
async def test_top_shows_a_live_kernel_in_a_terminal_and_ctrl_c_exits_0() -> None:
    async with kernel_with_a_thermostat() as dashboard:
        screen, status = await _top_in_a_terminal(dashboard.ws_url, until=b"thermostat")
    assert b"thermostat" in screen
    assert status == 0, screen.decode(errors="replace")
    assert b"Traceback" not in screen


async def _top_in_a_terminal(url: str, *, until: bytes) -> tuple[bytes, int]:
    """Run ``loomk top URL`` in a 40x120 pseudo-terminal until ``until`` is on its screen,
    then send Ctrl+C (SIGINT); everything it wrote, and its exit status."""
    controller, terminal = os.openpty()
    fcntl.ioctl(terminal, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 120, 0, 0))
    env = {**os.environ, "TERM": "xterm-256color", "COLUMNS": "120", "LINES": "40"}
    try:
        process = await trio.lowlevel.open_process(
            [LOOMK, "top", url], stdin=terminal, stdout=terminal, stderr=terminal, env=env
        )
    finally:
        os.close(terminal)  # the child has it: the controller reads EOF once the child is gone
    screen = bytearray()
    async with trio.lowlevel.FdStream(controller) as output:
        try:
            with trio.fail_after(20):
                while until not in screen:
                    chunk = await _read(output)
                    assert chunk, f"loomk top ended early: {screen.decode(errors='replace')}"
                    screen += chunk
            process.send_signal(signal.SIGINT)
            with trio.fail_after(20):
                while chunk := await _read(output):  # read on: a full terminal blocks it
                    screen += chunk
                status = await process.wait()
        finally:
            if process.returncode is None:
                process.kill()
                await process.wait()
    return bytes(screen), status


async def _read(output: trio.lowlevel.FdStream) -> bytes:
    """What the program wrote to the terminal next; b"" once it has closed it (Linux says
    EIO on a pseudo-terminal whose other side is closed)."""
    try:
        return await output.receive_some(65536)
    except trio.BrokenResourceError:
        return b""


@pytest.mark.e2e
async def test_the_live_screen_counts_garbage_from_the_feed_and_ctrl_c_exits_0() -> None:
    async def script(websocket: WebSocketConnection, connection: int) -> None:
        await _send_all(websocket, [HELLO, *GARBAGE, json.dumps(_snapshot("thermostat"))])

    async with fake_feed(script) as feed:
        screen, status = await _top_in_a_terminal(feed.url, until=b"malformed frames: 4")
    assert b"thermostat" in screen
    assert status == 0, screen.decode(errors="replace")
    assert b"Traceback" not in screen


@pytest.mark.e2e
async def test_the_help_pages_load_neither_the_feed_client_nor_the_drawing() -> None:
    program = (
        "import contextlib, io, sys\n"
        "from loomk.cli import main\n"
        "for argv in (['--help'], ['top', '--help']):\n"
        "    with contextlib.redirect_stdout(io.StringIO()) as out, "
        "contextlib.suppress(SystemExit):\n"
        "        main(argv)\n"
        "    assert 'top' in out.getvalue(), out.getvalue()\n"
        "loaded = {'trio_websocket', 'loomk.dashboard._top_view'} & set(sys.modules)\n"
        "assert not loaded, loaded\n"
    )
    with trio.fail_after(30):
        done = await trio.run_process(
            [sys.executable, "-c", program], capture_stderr=True, check=False
        )
    assert done.returncode == 0, done.stderr.decode()
