"""Kernels joined through a real nats-server, in one process: events each way by QoS, the
directory and capabilities across kernels, collaboration across kernels, and bad input
(messages that are not loomk events, oversized events, a server down at start).

The multi-process cases (SIGKILL, server restart, three processes) are in test_processes.py.
"""

from __future__ import annotations

import json
import shutil
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path
from typing import Any

import nats
import pytest
import trio
import trio_asyncio

import loomk
from loomk import Agent, Context, Event
from loomk.actions import ActionCall, ActionResult, CapabilityDescriptor, ErrorCode
from loomk.cluster import ClusterError, ClusterLink, join
from loomk.cluster.nats_server import NatsServer, open_nats_server

SHARE = "sensor.>, order.>=batched, math.>, ask.>"


class Recorder(Agent):
    """Records every event it handles (type, payload) and wakes waiters."""

    def __init__(self, agent_id: str, topics: tuple[str, ...], gate: trio.Event | None = None):
        super().__init__(agent_id)
        self.topics = topics
        self.seen: list[tuple[str, bytes]] = []
        self.changed = trio.Event()
        self.gate = gate
        self.started_one = trio.Event()

    async def on_event(self, ctx: Context, event: Event) -> None:
        self.started_one.set()
        if self.gate is not None:
            await self.gate.wait()
        self.seen.append((event.type, event.payload))
        ctx.state[event.id] = 1
        self.changed.set()
        self.changed = trio.Event()

    async def wait_for(self, count: int) -> None:
        while len(self.seen) < count:
            await self.changed.wait()


class Doubler:
    """A native capability ``calc.double`` of one kernel."""

    descriptor = CapabilityDescriptor("calc.double", "1.0.0", metadata={"desc": "x * 2"})

    async def invoke(self, call: ActionCall) -> ActionResult:
        return ActionResult.success(call.id, json.loads(call.payload)["x"] * 2)


async def eventually(check: Callable[[], Awaitable[bool]], timeout_s: float = 10.0) -> None:
    """Wait until ``check()`` holds: for state held by another process (the NATS server)."""
    with trio.fail_after(timeout_s):
        while not await check():
            await trio.sleep(0.01)


@asynccontextmanager
async def kernels(
    server_url: str, tmp_path: Path, *names: str, **settings: Any
) -> AsyncIterator[list[tuple[loomk.Kernel, ClusterLink]]]:
    """Kernels named ``names``, each joined to ``server_url`` and seeing all the others."""
    async with AsyncExitStack() as stack:
        joined = []
        for name in names:
            kernel = await stack.enter_async_context(
                loomk.open_kernel(
                    data_dir=tmp_path / name,
                    cluster_share=settings.get("share", SHARE),
                    cluster_ack_wait_s=1.0,
                    handle_signals=False,
                )
            )
            link = await stack.enter_async_context(
                join(kernel, server_url, node=name, announce_s=settings.get("announce_s", 0.5))
            )
            joined.append((kernel, link))
        with trio.fail_after(10):
            for _, link in joined:
                await link.wait_connected()
                for other in names:
                    if other != link.node:
                        await link.wait_peer(other)
        yield joined


@asynccontextmanager
async def nats_client(url: str) -> AsyncIterator[Any]:
    """A plain nats-py client (a foreign program on the same server)."""
    async with trio_asyncio.open_loop():
        nc = await trio_asyncio.aio_as_trio(nats.connect)(url)
        try:
            yield nc
        finally:
            await trio_asyncio.aio_as_trio(nc.close)()


async def consumer_pending(nc: Any, stream: str, durable: str) -> int:
    info = await trio_asyncio.aio_as_trio(nc.jetstream().consumer_info)(stream, durable)
    return int(info.num_ack_pending) + int(info.num_pending)


async def test_events_cross_once_each_way_by_qos(nats_server: NatsServer, tmp_path: Path) -> None:
    async with kernels(nats_server.url, tmp_path, "a", "b") as [(ka, la), (kb, lb)]:
        sink_a = Recorder("sink-a", ("sensor.>", "order.>"))
        sink_b = Recorder("sink-b", ("sensor.>", "order.>"))
        await ka.spawn(sink_a)
        await kb.spawn(sink_b)
        with trio.fail_after(10):  # each sink is announced (its consumer made) first
            while "sink-b" not in ka.directory or "sink-a" not in kb.directory:
                await la.wait_changed()
        for i in range(20):
            await ka.bus.publish("sensor.temp", Event("temp", b"a%d" % i))
            await ka.bus.publish("order.new", Event("order", b"a%d" % i))
            await kb.bus.publish("order.new", Event("order", b"b%d" % i))
        with trio.fail_after(10):
            await sink_b.wait_for(60)
            await sink_a.wait_for(60)
        expected = sorted(
            [("temp", b"a%d" % i) for i in range(20)]
            + [("order", b"a%d" % i) for i in range(20)]
            + [("order", b"b%d" % i) for i in range(20)]
        )
        assert sorted(sink_b.seen) == expected  # each once: none echoed, none twice
        assert sorted(sink_a.seen) == expected
        assert la.stats().link.sent == 40
        assert lb.stats().link.received == 40
        assert la.stats().link.received == 20
        assert lb.stats().link.sent == 20


async def test_batched_events_are_acknowledged_only_after_the_handler_commits(
    nats_server: NatsServer, tmp_path: Path
) -> None:
    gate = trio.Event()
    async with kernels(nats_server.url, tmp_path, "a", "b") as [(ka, _), (kb, lb)]:
        sink = Recorder("sink", ("order.>",), gate=gate)
        await kb.spawn(sink)
        with trio.fail_after(10):
            while not ka.directory.by_topic("order.x"):
                await lb.wait_changed()
        stream = lb.stats()  # the stream is the one of the pattern "order.>"
        assert stream.node == "b"
        from loomk.cluster._durable import stream_name

        name = stream_name("loomk", "order.>")
        for i in range(5):
            await ka.bus.publish("order.x", Event("order", b"%d" % i))
        async with nats_client(nats_server.url) as nc:
            with trio.fail_after(10):
                await sink.started_one.wait()  # the first is in the handler, held
            assert await consumer_pending(nc, name, "b") == 5  # none acknowledged yet
            gate.set()
            with trio.fail_after(10):
                await sink.wait_for(5)

            async def all_acknowledged() -> bool:
                return await consumer_pending(nc, name, "b") == 0

            await eventually(all_acknowledged)
        assert len(json.loads(kb.agent_state("sink").persistent_state)) == 5  # committed


async def test_capabilities_and_agents_of_other_kernels(
    nats_server: NatsServer, tmp_path: Path
) -> None:
    async with kernels(nats_server.url, tmp_path, "a", "b") as [(ka, la), (kb, lb)]:
        kb.broker.register(Doubler())
        await kb.spawn(Recorder("worker", ("ask.>",)))
        with trio.fail_after(10):
            while ka.capabilities.get("calc.double") is None or "worker" not in ka.directory:
                await la.wait_changed()
        info = ka.directory.get("worker")
        assert info is not None
        assert info.metadata["loomk.node"] == "b"
        assert info.metadata["loomk.remote"] == "cluster"
        assert ka.directory.by_topic("ask.anything") == ["worker"]

        result = await ka.broker.invoke(ActionCall("c1", "calc.double", b'{"x": 21}'))
        assert result.ok, result.error
        assert json.loads(result.output) == 42
        assert la.stats().calls_out == 1
        assert lb.stats().calls_in == 1

        # a kernel's own capabilities are served there, never sent on to another kernel
        assert ka.capabilities.get("time.now") is not None
        assert "calc.double" not in kb.directory.get("worker").capabilities  # type: ignore[union-attr]


async def test_a_leaving_kernel_takes_its_agents_and_capabilities_along(
    nats_server: NatsServer, tmp_path: Path
) -> None:
    async with (
        loomk.open_kernel(data_dir=tmp_path / "a", cluster_share=SHARE, handle_signals=False) as ka,
        join(ka, nats_server.url, node="a", announce_s=0.5) as la,
    ):
        async with loomk.open_kernel(
            data_dir=tmp_path / "b", cluster_share=SHARE, handle_signals=False
        ) as kb:
            kb.broker.register(Doubler())
            await kb.spawn(Recorder("worker", ("ask.>",)))
            async with join(kb, nats_server.url, node="b", announce_s=0.5):
                with trio.fail_after(10):
                    while "worker" not in ka.directory or not ka.capabilities.get("calc.double"):
                        await la.wait_changed()
        with trio.fail_after(10):  # the goodbye, not the expiry (30 s away at 0.5 s)
            while "b" in la.peers():
                await la.wait_changed()
        assert "worker" not in ka.directory
        assert ka.capabilities.get("calc.double") is None
        result = await ka.broker.invoke(ActionCall("c2", "calc.double", b'{"x": 1}'))
        assert result.error is not None
        assert result.error.code == ErrorCode.PROVIDER_UNAVAILABLE


async def test_request_fanout_and_contract_net_across_kernels(
    nats_server: NatsServer, tmp_path: Path
) -> None:
    class Responder(Agent):
        def __init__(self, agent_id: str, topics: tuple[str, ...]) -> None:
            super().__init__(agent_id)
            self.topics = topics

        async def on_event(self, ctx: Context, event: Event) -> None:
            if event.type == "collab.cfp":
                await ctx.propose(event, 0.9 if self.agent_id == "bidder-b" else 0.1)
            elif event.type == "collab.award":
                if event.metadata["award_to"] == ctx.sender:
                    await ctx.report(event, Event("done", self.agent_id.encode()))
            else:
                await ctx.reply(event, Event("answer", self.agent_id.encode()))

    async with kernels(nats_server.url, tmp_path, "a", "b", "c") as joined:
        (ka, la), (kb, _), (kc, _) = joined
        await kb.spawn(Responder("bidder-b", ("ask.b", "thread.*.broadcast")))
        await kc.spawn(Responder("bidder-c", ("ask.c", "thread.*.broadcast")))
        with trio.fail_after(10):
            while not (ka.directory.by_topic("ask.b") and ka.directory.by_topic("ask.c")):
                await la.wait_changed()
        asker = ka.collaborator("asker")
        with trio.fail_after(10):
            answer = await asker.request("ask.b", Event("q", b"?"), timeout_s=5)
        assert answer.payload == b"bidder-b"
        with trio.fail_after(10):
            answers = await asker.fanout(["ask.b", "ask.c"], Event("q", b"?"), timeout_s=5)
        assert sorted(a.payload for a in answers) == [b"bidder-b", b"bidder-c"]
        with trio.fail_after(10):
            round_ = await asker.contract_net("job-1", Event("cfp", b"work"), window_s=1.0)
        assert [w.metadata.get("sender") for w in round_.winners] == ["agent.bidder-b"]
        assert round_.results["agent.bidder-b"].payload == b"bidder-b"  # the award went out


async def test_messages_that_are_not_loomk_events_are_counted_and_skipped(
    nats_server: NatsServer, tmp_path: Path
) -> None:
    async with kernels(nats_server.url, tmp_path, "a", "b") as [(ka, la), (kb, lb)]:
        sink = Recorder("sink", ("sensor.>", "order.>"))
        await kb.spawn(sink)
        with trio.fail_after(10):
            while not ka.directory.by_topic("order.x"):
                await la.wait_changed()
        async with nats_client(nats_server.url) as nc:
            publish = trio_asyncio.aio_as_trio(nc.publish)
            await publish("loomk.sensor.raw", b"21.5 degrees")
            await publish("loomk.sensor.raw", b"\x00LK1\x00\x00\x00\x09not json!")
            await publish("_loomk.announce", b"{not an announcement")
            await publish("_loomk.invoke.b", b"[1, 2]")
            js = nc.jetstream()
            await trio_asyncio.aio_as_trio(js.publish)("loomk.order.raw", b"plain bytes")
            await trio_asyncio.aio_as_trio(nc.flush)()
            await ka.bus.publish("sensor.ok", Event("ok", b"1"))
            await ka.bus.publish("order.ok", Event("ok", b"2"))
            with trio.fail_after(10):
                await sink.wait_for(2)
                while lb.stats().not_events < 5:
                    await trio.sleep(0.01)  # counted in b's receive task
            from loomk.cluster._durable import stream_name

            name = stream_name("loomk", "order.>")

            async def acknowledged() -> bool:
                return await consumer_pending(nc, name, "b") == 0

            await eventually(acknowledged)  # the foreign JetStream message is not redelivered
        assert sorted(sink.seen) == [("ok", b"1"), ("ok", b"2")]
        stats = lb.stats()
        assert stats.not_events == 5
        assert stats.link.rejected == 3
        assert kb.bus.totals().published >= 2  # the kernel goes on


async def test_an_event_too_large_for_nats_is_counted_and_local_delivery_goes_on(
    nats_server: NatsServer, tmp_path: Path
) -> None:
    async with kernels(nats_server.url, tmp_path, "a", "b") as [(ka, la), (kb, _)]:
        local = Recorder("local", ("sensor.>",))
        remote = Recorder("remote", ("sensor.>",))
        await ka.spawn(local)
        await kb.spawn(remote)
        with trio.fail_after(10):
            while "remote" not in ka.directory:
                await la.wait_changed()
        await ka.bus.publish("sensor.big", Event("big", b"x" * (2 << 20)))
        await ka.bus.publish("sensor.small", Event("small", b"y"))
        with trio.fail_after(10):
            await remote.wait_for(1)
            await local.wait_for(2)
        assert remote.seen == [("small", b"y")]
        assert [t for t, _ in local.seen] == ["big", "small"]
        assert la.stats().oversized == 1


async def test_a_server_down_at_start_is_retried_and_local_traffic_flows(tmp_path: Path) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    url = f"nats://127.0.0.1:{port}"
    async with (
        loomk.open_kernel(data_dir=tmp_path / "a", cluster_share=SHARE, handle_signals=False) as ka,
        join(ka, url, node="a", backoff_s=0.05, max_backoff_s=0.2) as la,
    ):
        local = Recorder("local", ("sensor.>", "order.>"))
        await ka.spawn(local)
        with trio.fail_after(10):
            while not la.last_error:
                await la.wait_changed()
        assert not la.connected
        assert "Error" in la.last_error or "refused" in la.last_error.lower()
        for i in range(5):
            await ka.bus.publish("order.early", Event("early", b"%d" % i))
        with trio.fail_after(10):
            await local.wait_for(5)  # local traffic flows while NATS is away
        assert la.stats().link.backlog == 5
        async with (
            open_nats_server(port=port) as server,
            loomk.open_kernel(
                data_dir=tmp_path / "b", cluster_share=SHARE, handle_signals=False
            ) as kb,
        ):
            remote = Recorder("remote", ("order.>",))
            await kb.spawn(remote)
            async with join(kb, server.url, node="b", announce_s=0.5) as lb:
                with trio.fail_after(15):
                    await la.wait_connected()
                    await lb.wait_connected()
                    await lb.wait_peer("a")
                # the backlog went out once a connected (b sees it if its consumer was
                # there by then); what a sends from now on, b sees
                await ka.bus.publish("order.late", Event("late", b"x"))
                with trio.fail_after(10):
                    while ("late", b"x") not in remote.seen:
                        await remote.changed.wait()
                assert la.stats().link.backlog == 0
                assert la.stats().link.sent == 6
                assert len(set(remote.seen)) == len(remote.seen)  # none twice


async def test_join_refuses_what_cannot_work(nats_server: NatsServer, tmp_path: Path) -> None:
    async with loomk.open_kernel(data_dir=tmp_path / "a", handle_signals=False) as kernel:
        with pytest.raises(ClusterError, match="overlap"):
            async with join(kernel, nats_server.url, share="a.>=batched, a.b=batched"):
                pass
        with pytest.raises(ClusterError, match="node name"):
            async with join(kernel, nats_server.url, node="bad name"):
                pass
        with pytest.raises(ClusterError, match="no NATS server"):
            async with join(kernel, " , "):
                pass


async def test_the_cluster_edge_joins_from_settings(
    nats_server: NatsServer, tmp_path: Path
) -> None:
    async with loomk.open_kernel(
        data_dir=tmp_path / "a",
        cluster_nats_url=nats_server.url,
        cluster_node="edge-a",
        handle_signals=False,
    ) as kernel:
        link = kernel.edge("cluster")
        assert isinstance(link, ClusterLink)
        with trio.fail_after(10):
            await link.wait_connected()
        assert link.node == "edge-a"
        text = kernel.metrics.render_prometheus()
        assert 'cluster_connected{node="edge-a"} 1' in text


async def test_a_node_name_is_made_once_and_kept_in_the_data_directory(
    nats_server: NatsServer, tmp_path: Path
) -> None:
    names = []
    for _ in range(2):
        async with (
            loomk.open_kernel(data_dir=tmp_path / "a", handle_signals=False) as kernel,
            join(kernel, nats_server.url) as link,
        ):
            names.append(link.node)
    assert names[0] == names[1]
    assert names[0].startswith("k-")


async def test_batched_patterns_without_jetstream_fail_loudly(tmp_path: Path) -> None:
    async with open_nats_server(jetstream=False) as server:
        with pytest.raises(ClusterError, match="-js"):
            async with loomk.open_kernel(
                data_dir=tmp_path / "a",
                cluster_nats_url=server.url,
                cluster_share="order.>=batched",
                handle_signals=False,
            ):
                await trio.sleep_forever()  # the edge fails the kernel


async def test_covering_patterns_deliver_each_event_once(
    nats_server: NatsServer, tmp_path: Path
) -> None:
    """'>' covers the collaboration topics and 'order.>' (which rides JetStream): one copy
    of each event crosses, whatever the patterns that match it."""
    share = ">, order.>=batched"
    async with kernels(nats_server.url, tmp_path, "a", "b", share=share) as [
        (ka, la),
        (kb, _),
    ]:
        sink = Recorder("sink", ("sensor.>", "order.>"))

        class Answer(Agent):
            topics = ("ask.it",)

            async def on_event(self, ctx: Context, event: Event) -> None:
                await ctx.reply(event, Event("answer", b"42"))

        await kb.spawn(sink)
        await kb.spawn(Answer("answer"))
        with trio.fail_after(10):
            while not ka.directory.by_topic("order.x") or "answer" not in ka.directory:
                await la.wait_changed()
        async with ka.bus.subscribe("thread.*.reply") as replies:
            await ka.bus.publish("sensor.t", Event("t", b"1"))
            await ka.bus.publish("order.x", Event("o", b"2"))
            with trio.fail_after(10):
                answer = await ka.collaborator("asker").request("ask.it", Event("q"), timeout_s=5)
                await sink.wait_for(2)
            assert answer.payload == b"42"
            await ka.bus.publish("sensor.t", Event("t", b"3"))  # behind everything above
            with trio.fail_after(10):
                await sink.wait_for(3)
            seen = []
            while True:
                try:
                    seen.append(replies.receive_nowait())
                except trio.WouldBlock:
                    break
        assert sorted(sink.seen) == [("o", b"2"), ("t", b"1"), ("t", b"3")]
        assert [event.type for _, event in seen].count("answer") == 1
        assert la.stats().link.sent == 4  # sensor, order, the question, sensor


async def test_events_handled_after_the_link_left_are_not_handled_again_on_rejoining(
    nats_server: NatsServer, tmp_path: Path
) -> None:
    """The link leaves with JetStream events still queued for an agent: the agent handles
    them afterwards, the link records them as settled, and the redeliveries that come
    when the kernel joins again are acknowledged, not handed to the agent a second time."""
    gate = trio.Event()
    async with (
        loomk.open_kernel(data_dir=tmp_path / "a", cluster_share=SHARE, handle_signals=False) as ka,
        loomk.open_kernel(data_dir=tmp_path / "b", cluster_share=SHARE, handle_signals=False) as kb,
        join(ka, nats_server.url, node="a", announce_s=0.3) as la,
    ):
        sink = Recorder("sink", ("order.>",), gate=gate)
        await kb.spawn(sink)
        async with join(kb, nats_server.url, node="b", announce_s=0.3, ack_wait_s=1) as lb:
            with trio.fail_after(10):
                while "sink" not in ka.directory:
                    await la.wait_changed()
            for i in range(20):
                await ka.bus.publish("order.new", Event("o", b"%d" % i))
            with trio.fail_after(10):
                await sink.started_one.wait()
                while lb.stats().link.received < 20:
                    await trio.sleep(0.01)  # counted by b's receive task
        gate.set()  # b left; its agent handles what it had queued
        with trio.fail_after(10):
            await sink.wait_for(20)
        async with join(kb, nats_server.url, node="b", announce_s=0.3, ack_wait_s=1) as again:
            async with nats_client(nats_server.url) as nc:
                from loomk.cluster._durable import stream_name

                name = stream_name("loomk", "order.>")

                async def all_acknowledged() -> bool:
                    return await consumer_pending(nc, name, "b") == 0

                await eventually(all_acknowledged)
            assert again.stats().redelivered == 20  # they came back, and were acknowledged
        assert len(sink.seen) == 20  # none handled twice


async def test_an_agent_of_the_same_id_on_two_kernels_stays_each_kernels_own(
    nats_server: NatsServer, tmp_path: Path
) -> None:
    async with kernels(nats_server.url, tmp_path, "a", "b", announce_s=0.3) as [
        (ka, la),
        (kb, _),
    ]:
        await kb.spawn(Recorder("worker", ("ask.>",)))
        with trio.fail_after(10):
            while "worker" not in ka.directory:
                await la.wait_changed()
        await ka.spawn(Recorder("worker", ("ask.>",)))  # the same app on both machines
        with trio.fail_after(10):
            for _ in range(3):  # announcements from b go on: the local entry stays
                await la.wait_changed()
        info = ka.directory.get("worker")
        assert info is not None
        assert "loomk.remote" not in info.metadata
        own = kb.directory.get("worker")
        assert own is not None
        assert "loomk.remote" not in own.metadata
    # a left and b left with it; stopping a kernel whose directory held the id worked


async def test_replies_are_not_held_up_behind_batched_events_waiting_for_an_agent(
    nats_server: NatsServer, tmp_path: Path
) -> None:
    """An agent asks another kernel on every batched event while more batched events than
    its lane holds are waiting: the answers (core NATS) must not wait behind them."""
    share = "order.>=batched, quote.>"
    count = 1500  # beyond the batched lane's 1024: the link waits on the agent's lane
    answered: list[bytes] = []
    all_answered = trio.Event()

    class Asker(Agent):
        topics = ("order.>",)

        async def on_event(self, ctx: Context, event: Event) -> None:
            reply = await ctx.request("quote.x", Event("q", event.payload), timeout_s=5)
            answered.append(reply.payload)
            if len(answered) == count:
                all_answered.set()

    class Quoter(Agent):
        topics = ("quote.>",)

        async def on_event(self, ctx: Context, event: Event) -> None:
            await ctx.reply(event, Event("a", event.payload))

    async with kernels(nats_server.url, tmp_path, "a", "b", share=share) as [
        (ka, la),
        (kb, _),
    ]:
        await ka.spawn(Quoter("quoter"))
        await kb.spawn(Asker("asker"))
        with trio.fail_after(10):
            while "asker" not in ka.directory:
                await la.wait_changed()
        for i in range(count):
            await ka.bus.publish("order.new", Event("o", b"%d" % i))
        with trio.fail_after(60):
            await all_answered.wait()
        assert sorted(answered) == sorted(b"%d" % i for i in range(count))


async def test_streams_and_consumers_the_server_lost_are_made_again(tmp_path: Path) -> None:
    """The server comes back with an empty JetStream store (wiped, or another server of
    a cluster without the stream): the links make the stream and consumer again."""
    store = tmp_path / "js"
    async with (
        open_nats_server(store_dir=store) as server,
        kernels(server.url, tmp_path, "a", "b") as [(ka, la), (kb, lb)],
    ):
        sink = Recorder("sink", ("order.>",))
        await kb.spawn(sink)
        with trio.fail_after(10):
            while "sink" not in ka.directory:
                await la.wait_changed()
        await ka.bus.publish("order.new", Event("o", b"before"))
        with trio.fail_after(10):
            await sink.wait_for(1)
        await server.stop()
        shutil.rmtree(store)
        await server.start()
        with trio.fail_after(20):
            while la.stats().link.connects < 2 or lb.stats().link.connects < 2:
                await la.wait_changed()
        # the stream is made again by whichever link comes back first; b's consumer too
        with trio.fail_after(20):
            while True:
                await ka.bus.publish("order.new", Event("o", b"after"))
                with trio.move_on_after(0.5):
                    while ("o", b"after") not in sink.seen:
                        await sink.changed.wait()
                if ("o", b"after") in sink.seen:
                    break
