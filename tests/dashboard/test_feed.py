"""The websocket feed over real loopback sockets: hello and snapshot, events, filter,
pause/resume, ping, and the goodbye at shutdown (docs/dashboard.md, "The feed protocol")."""

from __future__ import annotations

import json

import trio
from dashboard_support import close_reason, feed_client, next_frame, open_stream, serving
from trio_websocket import wrap_client_stream

from loomk import Context, Event
from loomk.dashboard import DashboardLimits
from loomk.telemetry import Histogram, MetricFamily
from loomk.testing import ScriptedAgent


async def test_hello_then_a_snapshot_listing_a_spawned_agent() -> None:
    async def noop(ctx: Context, event: Event) -> None:
        pass

    async with serving() as (kernel, dashboard):
        await kernel.spawn(ScriptedAgent("watcher", {"ping": noop}, topics=["home.>"]))
        await kernel.bus.publish("home.door", Event("ping"))
        async with feed_client(dashboard) as ws:
            with trio.fail_after(10):
                hello = json.loads(await ws.get_message())
                first = json.loads(await ws.get_message())
                snapshot = first
                while not any(agent["id"] == "watcher" for agent in snapshot["agents"]):
                    snapshot = await next_frame(ws, "snapshot")
    assert hello == {
        "type": "hello",
        "protocol": 1,
        "kernel": kernel.name,
        "snapshot_interval_ms": 50,
        "events_per_frame": 200,
    }
    assert first["type"] == "snapshot"
    [agent] = [agent for agent in snapshot["agents"] if agent["id"] == "watcher"]
    assert agent["status"] == "running"
    assert "home.>" in agent["subscriptions"]
    assert set(agent["latency_ms"]) == {"p50", "p99", "max", "count"}
    assert snapshot["totals"]["published"] >= 1
    topics = {topic["topic"]: topic for topic in snapshot["topics"]}
    assert topics["home.door"]["published"] == 1


async def test_a_published_event_appears_in_an_events_frame() -> None:
    payload = ("é" * 200).encode()
    async with serving() as (kernel, dashboard), feed_client(dashboard) as ws:
        await next_frame(ws, "snapshot")
        event = Event("reading", payload, source="sensor-1").with_thread("t-1")
        await kernel.bus.publish("sensor.temp", event)
        with trio.fail_after(10):
            frame = await next_frame(ws, "events")
    assert frame["missed"] == 0
    [shown] = frame["events"]
    assert shown == {
        "seq": 1,
        "topic": "sensor.temp",
        "id": event.id,
        "type": "reading",
        "source": "sensor-1",
        "ts_ms": event.timestamp_ms,
        "thread_id": "t-1",
        "correlation_id": event.correlation_id,
        "size": len(payload),
        "preview": "é" * 160,
    }


async def test_a_filter_keeps_only_matching_topics_and_a_bad_one_changes_nothing() -> None:
    async with serving() as (kernel, dashboard), feed_client(dashboard) as ws:
        await ws.send_message(json.dumps({"type": "filter", "topic": "a.*"}))
        await ws.send_message(json.dumps({"type": "filter", "topic": "a.>.b"}))
        await ws.send_message(json.dumps({"type": "ping"}))
        with trio.fail_after(10):
            error = await next_frame(ws, "error")
            await next_frame(ws, "pong")
            for topic in ("b.x", "a.y", "a.y.z"):
                await kernel.bus.publish(topic, Event("t"))
            frame = await next_frame(ws, "events")
            await ws.send_message(json.dumps({"type": "filter", "topic": ""}))
            await ws.send_message(json.dumps({"type": "ping"}))
            await next_frame(ws, "pong")
            await kernel.bus.publish("b.x", Event("t"))
            everything = await next_frame(ws, "events")
    assert error["code"] == "BAD_FILTER"
    assert [shown["topic"] for shown in frame["events"]] == ["a.y"]
    assert [shown["topic"] for shown in everything["events"]] == ["b.x"]


async def test_pause_stops_events_frames_but_not_snapshots_and_resume_restarts_them() -> None:
    async with serving() as (kernel, dashboard), feed_client(dashboard) as ws:
        await ws.send_message(json.dumps({"type": "pause"}))
        await ws.send_message(json.dumps({"type": "ping"}))
        with trio.fail_after(10):
            await next_frame(ws, "pong")
            await kernel.bus.publish("while.paused", Event("t"))
            # a snapshot counting the publish is built after the hub went past it
            while True:
                frame = json.loads(await ws.get_message())
                assert frame["type"] != "events"
                if frame["type"] == "snapshot" and frame["totals"]["published"] >= 1:
                    break
            await ws.send_message(json.dumps({"type": "resume"}))
            await ws.send_message(json.dumps({"type": "ping"}))
            await next_frame(ws, "pong")
            await kernel.bus.publish("after.resume", Event("t"))
            resumed = await next_frame(ws, "events")
    assert [shown["topic"] for shown in resumed["events"]] == ["after.resume"]
    assert resumed["missed"] == 0


async def test_more_events_than_a_frame_holds_are_sampled_and_counted_missed() -> None:
    limits = DashboardLimits(tick_s=0.01, snapshot_interval_s=0.05, events_per_frame=10)
    async with serving(limits) as (kernel, dashboard), feed_client(dashboard) as ws:
        await next_frame(ws, "snapshot")
        for n in range(500):
            await kernel.bus.publish("burst", Event("t", str(n).encode()))
        frames = []
        with trio.fail_after(10):
            while sum(len(f["events"]) + f["missed"] for f in frames) < 500:
                frames.append(await next_frame(ws, "events"))
    assert sum(len(f["events"]) + f["missed"] for f in frames) == 500
    assert all(len(f["events"]) <= 10 for f in frames)
    assert sum(f["missed"] for f in frames) >= 500 - 10 * len(frames)
    seqs = [shown["seq"] for f in frames for shown in f["events"]]
    assert seqs == sorted(seqs)
    assert dashboard.stats().events_missed == sum(f["missed"] for f in frames)


async def test_shutdown_sends_every_client_a_going_away_close() -> None:
    async with trio.open_nursery() as nursery:
        async with serving() as (_, dashboard):
            stream = await open_stream(dashboard)
            ws = await wrap_client_stream(nursery, stream, dashboard.address, "/ws")
            await next_frame(ws, "snapshot")
        with trio.fail_after(10):
            reason = await close_reason(ws)
        await ws.aclose()
        await stream.aclose()
    assert (reason.code, reason.reason) == (1001, "shutdown")
    assert dashboard.stats().closed == {"shutdown": 1}


async def test_a_snapshot_shows_the_counters_of_metric_sources_that_are_no_edge() -> None:
    """The voice pipeline (or a user's source) registers metrics, not an edge: its
    counters still get a panel; the kernel's own families do not (they have theirs)."""

    def voice() -> list[MetricFamily]:
        return [
            MetricFamily("voice_turns_total", "counter", "Turns.").add(3, pipeline="voice"),
            MetricFamily("voice_wait_seconds", "histogram", "W.").add(Histogram().snapshot()),
        ]

    async with serving() as (kernel, dashboard):
        remove = kernel.metrics.register("voice:voice", voice)
        async with feed_client(dashboard) as ws:
            snapshot = await next_frame(ws, "snapshot")
            while "voice:voice" not in snapshot["edges"]:  # the one cached before it came
                snapshot = await next_frame(ws, "snapshot")
        remove()
    assert snapshot["edges"]["voice:voice"] == {"voice_turns_total{pipeline=voice}": 3}
    assert "kernel" not in snapshot["edges"]
    assert snapshot["uptime_s"] <= kernel.uptime_s
