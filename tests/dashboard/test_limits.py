"""What the feed does with bad, slow and too many clients (docs/dashboard.md): each is
answered or closed with a logged reason, and none of it makes a publisher wait."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import trio
from dashboard_support import (
    FAST,
    capture_dashboard_logs,
    close_reason,
    feed_client,
    next_frame,
    raw_upgrade,
    serving,
)
from trio_websocket import ConnectionClosed, ConnectionRejected

from loomk import Event
from loomk.dashboard import DashboardLimits
from loomk.dashboard._app import DashboardApp
from loomk.dashboard._hub import FeedHub
from loomk.testing import open_test_kernel


@pytest.mark.parametrize(
    ("message", "code"),
    [
        ("not json", "BAD_MESSAGE"),
        ("[1, 2]", "BAD_MESSAGE"),
        (b"\x00binary", "BAD_MESSAGE"),
        ('{"topic": "a"}', "BAD_MESSAGE"),
        ('{"type": 7}', "BAD_MESSAGE"),
        ('{"type": "launch"}', "UNKNOWN_COMMAND"),
        ('{"type": "filter", "topic": "a..b"}', "BAD_FILTER"),
        ('{"type": "filter"}', "BAD_FILTER"),
    ],
)
async def test_a_bad_message_is_answered_with_an_error_frame(
    message: str | bytes, code: str
) -> None:
    with capture_dashboard_logs() as logs:
        async with serving() as (_, dashboard), feed_client(dashboard) as ws:
            await ws.send_message(message)
            with trio.fail_after(10):
                error = await next_frame(ws, "error")
                await ws.send_message(json.dumps({"type": "ping"}))
                await next_frame(ws, "pong")
    assert error["code"] == code
    assert error["message"]
    [logged] = [r for r in logs if r["event"] == "dashboard: bad message from a feed client"]
    assert logged["code"] == code


async def test_ten_bad_messages_in_a_row_close_the_client_with_1008() -> None:
    async with serving() as (_, dashboard):
        async with feed_client(dashboard) as ws:
            for _ in range(9):
                await ws.send_message("nope")
            await ws.send_message(json.dumps({"type": "ping"}))  # a good one starts over
            for _ in range(10):
                await ws.send_message("nope")
            errors = 0
            with trio.fail_after(10):
                while True:
                    try:
                        frame = json.loads(await ws.get_message())
                    except ConnectionClosed as closed:
                        reason = closed.reason
                        break
                    errors += frame["type"] == "error"
        stats = dashboard.stats()
    assert (reason.code, reason.reason) == (1008, "bad messages")
    assert errors == 19
    assert stats.closed == {"bad messages": 1}


@pytest.mark.parametrize("size", [4097, 100_000])
async def test_a_message_over_4_kib_closes_the_client_with_1009(size: int) -> None:
    async with serving() as (_, dashboard):
        async with feed_client(dashboard) as ws:
            await ws.send_message(json.dumps({"type": "ping", "pad": "x" * (size - 27)}))
            with trio.fail_after(10):
                reason = await close_reason(ws)
        with trio.fail_after(10):
            stats = await dashboard.wait_until(lambda stats: stats.clients == 0)
    assert reason.code == 1009
    if size < 8192:  # refused by the app, which says why; far bigger ones by hypercorn
        assert stats.closed == {"message too big": 1}


async def test_a_message_of_4_kib_is_fine() -> None:
    async with serving() as (_, dashboard), feed_client(dashboard) as ws:
        message = json.dumps({"type": "ping", "pad": ""})
        await ws.send_message(json.dumps({"type": "ping", "pad": "x" * (4096 - len(message))}))
        with trio.fail_after(10):
            await next_frame(ws, "pong")


async def test_unknown_feed_paths_and_other_sites_pages_are_refused() -> None:
    with capture_dashboard_logs() as logs:
        async with serving() as (_, dashboard):
            with pytest.raises(ConnectionRejected) as unknown:
                async with feed_client(dashboard, "/feed"):
                    pass
            evil = [(b"Origin", b"http://evil.example")]
            with pytest.raises(ConnectionRejected) as foreign:
                async with feed_client(dashboard, extra_headers=evil):
                    pass
            own = [(b"Origin", f"http://{dashboard.address}".encode())]
            async with feed_client(dashboard, extra_headers=own) as ws:
                await next_frame(ws, "hello")
    assert unknown.value.status_code == 404
    assert foreign.value.status_code == 403
    assert any("evil.example" in r.get("reason", "") for r in logs)


async def test_a_client_that_never_reads_loses_events_then_is_closed() -> None:
    limits = DashboardLimits(
        tick_s=0.01,
        snapshot_interval_s=0.05,
        not_reading_timeout_s=0.5,
        outbox_events_frames=2,
        shutdown_grace_s=0.5,
    )
    published = 0
    with capture_dashboard_logs() as logs:
        async with serving(limits) as (kernel, dashboard):
            stalled = await raw_upgrade(dashboard, receive_buffer=4096)

            async def publish_forever() -> None:
                nonlocal published
                payload = b"x" * 160
                while True:
                    for _ in range(100):
                        published += 1  # counted first: a cancelled publish has counted too
                        await kernel.bus.publish(f"load.{published % 7}", Event("t", payload))
                    await trio.sleep(0)

            with trio.fail_after(30):
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(publish_forever)
                    stats = await dashboard.wait_until(
                        lambda stats: stats.closed.get("not reading") == 1
                    )
                    nursery.cancel_scope.cancel()
            await stalled.aclose()
            assert kernel.bus.totals().published == published
    assert stats.events_missed > 0
    assert published > stats.events_sent
    assert any(r.get("reason") == "not reading" for r in logs)


async def test_clients_beyond_max_clients_are_refused_with_1013() -> None:
    limits = DashboardLimits(max_clients=100, tick_s=0.01, snapshot_interval_s=0.05)
    admitted: list[int] = []
    refused: list[int] = []
    all_decided = trio.Event()
    async with serving(limits) as (kernel, dashboard):

        async def one_client(n: int) -> None:
            async with feed_client(dashboard) as ws:
                try:
                    await next_frame(ws, "hello")
                except ConnectionClosed as closed:
                    refused.append(closed.reason.code)
                else:
                    admitted.append(n)
                if len(admitted) + len(refused) == 150:
                    all_decided.set()
                await all_decided.wait()

        with trio.fail_after(30):
            async with trio.open_nursery() as nursery:
                for n in range(150):
                    nursery.start_soon(one_client, n)
                published = 0
                while not all_decided.is_set():
                    published += 1
                    await kernel.bus.publish("while.crowded", Event("t"))
                    await trio.sleep(0)
        stats = dashboard.stats()
        assert kernel.bus.stats("while.crowded").published == published
    assert len(admitted) == 100
    assert refused == [1013] * 50
    assert stats.refused == 50
    assert FAST.max_clients is None  # the default is the kernel's dashboard_max_clients


async def test_a_client_arriving_during_shutdown_is_told_shutdown_not_counted_refused() -> None:
    async with open_test_kernel() as kernel:
        hub = FeedHub(kernel, FAST)
        hub.stop(1001, "shutdown")
        app = DashboardApp(kernel, hub, Path("."), lambda peer: False)
        sent: list[dict[str, Any]] = []

        async def receive() -> dict[str, Any]:
            return {"type": "websocket.connect"}

        async def send(message: Any) -> None:
            sent.append(message)

        scope: Any = {"type": "websocket", "path": "/ws", "headers": [], "client": None}
        with capture_dashboard_logs() as logs:
            await app(scope, receive, send)
    assert [m["type"] for m in sent] == ["websocket.accept", "websocket.close"]
    assert (sent[1]["code"], sent[1]["reason"]) == (1001, "shutdown")
    assert hub.stats().refused == 0
    assert not any("too many clients" in r["event"] for r in logs)
