"""loomk_bridge.connect: a second kernel linked to a bridge server over real loopback gRPC.

Its agents are ordinary loomk agents that collaborate with the server's: events both ways
without echoes, request/reply and capabilities in both directions, subscriptions that
follow, reconnection with a bounded backlog, and a linked process killed mid-call.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import trio
from bridge_support import SERVER_DEFAULTS, until

import loomk
from loomk import ActionCall, ActionStatus, ErrorCode, Event, Kernel
from loomk.testing import open_test_kernel
from loomk_bridge import BridgeServer, open_bridge_server
from loomk_bridge.link import BridgeLink, connect

HERE = Path(__file__).resolve().parent


@asynccontextmanager
async def linked(
    **link_options: object,
) -> AsyncIterator[tuple[Kernel, BridgeServer, Kernel, BridgeLink]]:
    """A server kernel with its bridge, and a client kernel linked to it (connected)."""
    async with (
        open_test_kernel() as server_kernel,
        open_bridge_server(server_kernel, "127.0.0.1:0", **SERVER_DEFAULTS) as server,
        open_test_kernel() as client_kernel,
        connect(client_kernel, server.address, name="remote", **link_options) as link,  # type: ignore[arg-type]
    ):
        with trio.fail_after(60):  # a hang fails the test instead of stalling the suite
            await link.wait_connected()
            yield server_kernel, server, client_kernel, link


async def test_events_cross_both_ways_once_and_never_echo() -> None:
    async with (
        linked() as (server_kernel, server, client_kernel, _),
        server_kernel.bus.subscribe("up.>") as up_here,
        server_kernel.bus.subscribe("down.>") as down_here,
        client_kernel.bus.subscribe("up.>") as up_there,
        client_kernel.bus.subscribe("down.>") as down_there,
    ):
        await until(server, lambda: {"up.>", "down.>"} <= set(_link_topics(server_kernel)))
        # client -> server; then a marker from the server: an echo would come before it
        await client_kernel.bus.publish("up.one", Event("t", b"from the client"))
        assert (await up_here.receive())[1].payload == b"from the client"
        await server_kernel.bus.publish("up.marker", Event("t", b"marker"))
        assert [(await up_there.receive())[0] for _ in range(2)] == ["up.one", "up.marker"]
        # server -> client; then a marker from the client: an echo would come before it
        await server_kernel.bus.publish("down.one", Event("t", b"from the server"))
        assert (await down_there.receive())[1].payload == b"from the server"
        await client_kernel.bus.publish("down.marker", Event("t", b"marker"))
        assert [(await down_here.receive())[0] for _ in range(2)] == ["down.one", "down.marker"]
        assert up_here.stats().delivered == 1


async def test_a_subscription_on_an_exported_pattern_is_announced_too() -> None:
    async with linked() as (server_kernel, server, client_kernel, _):
        assert ">" not in _link_topics(server_kernel)  # the link's own binding is no interest
        async with client_kernel.bus.subscribe(">") as everything:
            await until(server, lambda: ">" in _link_topics(server_kernel))
            await server_kernel.bus.publish("any.topic", Event("t", b"seen"))
            assert (await everything.receive())[1].payload == b"seen"


async def test_a_refused_registration_keeps_the_link_and_says_why() -> None:
    async with (
        open_test_kernel() as server_kernel,
        open_bridge_server(
            server_kernel, "127.0.0.1:0", **{**SERVER_DEFAULTS, "max_registration_items": 6}
        ) as server,
        open_test_kernel() as client_kernel,
        connect(client_kernel, server.address, name="remote") as link,
    ):
        with trio.fail_after(60):
            await link.wait_connected()
            subscriptions = [client_kernel.bus.subscribe(f"many.t{n}") for n in range(8)]
            while not link.last_error:
                await link.wait_changed()
            assert "refused" in link.last_error
            assert link.connected  # the last registration the server took still holds
            await client_kernel.bus.publish("up.x", Event("t", b"still flowing"))
            for subscription in subscriptions:
                subscription.unsubscribe()


async def test_leaving_sends_what_is_pending_first() -> None:
    async with (
        open_test_kernel() as server_kernel,
        open_bridge_server(server_kernel, "127.0.0.1:0", **SERVER_DEFAULTS) as server,
        open_test_kernel() as client_kernel,
    ):
        with trio.fail_after(60):
            async with server_kernel.bus.subscribe("burst", capacity=2000) as burst:
                async with connect(client_kernel, server.address, name="remote") as link:
                    await link.wait_connected()
                    for n in range(1000):
                        await client_kernel.bus.publish("burst", Event("t", b"%d" % n))
                await until(server, lambda: "remote" not in server_kernel.directory)
                got = [burst.receive_nowait()[1].payload for _ in range(1000)]
            assert got == [b"%d" % n for n in range(1000)]
            assert link.stats().dropped == 0


async def test_batches_are_cut_to_the_frame_limit() -> None:
    limit = 64 * 1024
    options = {**SERVER_DEFAULTS, "max_message_bytes": limit}
    async with (
        open_test_kernel() as server_kernel,
        open_bridge_server(server_kernel, "127.0.0.1:0", **options) as server,
        open_test_kernel() as client_kernel,
        server_kernel.bus.subscribe("big.>", capacity=200) as big,
        connect(client_kernel, server.address, name="remote", max_message_bytes=limit) as link,
    ):
        with trio.fail_after(60):
            await link.wait_connected()
            for n in range(100):  # 2 MB in all: 33 frames' worth
                await client_kernel.bus.publish("big.part", Event("t", bytes([n]) * 20_000))
            await client_kernel.bus.publish("big.toolarge", Event("t", b"x" * limit))
            await client_kernel.bus.publish("big.end", Event("t", b"end"))
            got = [await big.receive() for _ in range(101)]
            assert [topic for topic, _ in got] == ["big.part"] * 100 + ["big.end"]
            assert [event.payload[0] for _, event in got[:100]] == list(range(100))
            assert (link.stats().rejected, link.stats().connects) == (1, 1)


async def test_agents_on_both_sides_request_and_reply() -> None:
    @loomk.agent("researcher", topics=["research.request"])
    async def researcher(ctx: loomk.Context, event: Event) -> None:  # runs in the client
        await ctx.reply(event, Event("research.result", b"notes on " + event.payload))

    @loomk.agent("editor", topics=["edit.request"])
    async def editor(ctx: loomk.Context, event: Event) -> None:  # runs in the server
        await ctx.reply(event, Event("edit.result", event.payload.upper()))

    async with linked() as (server_kernel, server, client_kernel, _):
        await client_kernel.spawn(researcher)
        await server_kernel.spawn(editor)
        await until(server, lambda: "research.request" in _link_topics(server_kernel))
        collaborator = server_kernel.collaborator("agent.planner")
        answer = await collaborator.request("research.request", "loom", timeout_s=10)
        assert answer.payload == b"notes on loom"
        back = await client_kernel.collaborator("agent.writer").request(
            "edit.request", "draft", timeout_s=10
        )
        assert back.payload == b"DRAFT"


def _link_topics(kernel: Kernel) -> list[str]:
    info = kernel.directory.get("remote")
    return list(info.topics) if info is not None else []


async def test_capabilities_are_invocable_from_either_side() -> None:
    @loomk.capability("client.double")
    async def double(args: dict[str, int]) -> dict[str, int]:
        return {"value": args["x"] * 2}

    @loomk.capability("server.square")
    async def square(args: dict[str, int]) -> dict[str, int]:
        return {"value": args["x"] ** 2}

    async with linked() as (server_kernel, server, client_kernel, _):
        server_kernel.broker.register(square)
        client_kernel.broker.register(double)  # after connecting: registered again
        await until(server, lambda: server_kernel.broker.resolve("client.double") is not None)
        here = await server_kernel.broker.invoke(
            ActionCall.with_args("c1", "client.double", {"x": 21})
        )
        assert here.status is ActionStatus.ACTION_OK
        assert json.loads(here.output) == {"value": 42}
        there = await client_kernel.broker.invoke(
            ActionCall.with_args("c2", "server.square", {"x": 7})
        )
        assert there.status is ActionStatus.ACTION_OK
        assert json.loads(there.output) == {"value": 49}
        missing = await client_kernel.broker.invoke(
            ActionCall.with_args("c3", "nowhere.at.all", {})
        )
        assert missing.status is ActionStatus.ACTION_ERROR
        assert client_kernel.broker.stats().upstream.calls == 2
        # the built-in capabilities both kernels have are served where they are called
        assert server_kernel.directory.get("remote") is not None
        assert "time.now" not in server_kernel.directory.get("remote").capabilities  # type: ignore[union-attr]


async def test_a_new_local_subscription_is_registered_on_the_server() -> None:
    async with linked() as (server_kernel, server, client_kernel, _):
        async with client_kernel.bus.subscribe("late.*") as late:
            await until(server, lambda: "late.*" in _link_topics(server_kernel))
            await server_kernel.bus.publish("late.news", Event("t", b"now"))
            topic, event = await late.receive()
        assert (topic, event.payload) == ("late.news", b"now")
        await until(server, lambda: "late.*" not in _link_topics(server_kernel))


async def test_reconnects_resubscribes_and_sends_the_bounded_backlog() -> None:
    with trio.fail_after(60):  # a hang fails the test instead of stalling the suite

        async def serve_until(
            kernel: Kernel, stop: trio.Event, *, task_status: trio.TaskStatus[BridgeServer]
        ) -> None:
            async with open_bridge_server(kernel, "127.0.0.1:0", **SERVER_DEFAULTS) as server:
                task_status.started(server)
                await stop.wait()

        async with (
            open_test_kernel() as server_kernel,
            open_test_kernel() as client_kernel,
            trio.open_nursery() as nursery,
        ):
            stop = trio.Event()
            first: BridgeServer = await nursery.start(serve_until, server_kernel, stop)
            address = first.address
            async with connect(
                client_kernel, address, name="remote", buffer=3, backoff_s=0.01, max_backoff_s=0.05
            ) as link:
                await link.wait_connected()
                stop.set()  # the server goes away
                while link.connected:
                    await link.wait_changed()
                for n in range(5):
                    await client_kernel.bus.publish("held.reading", Event("t", str(n).encode()))
                await trio.testing.wait_all_tasks_blocked()
                stats = link.stats()
                assert (stats.connected, stats.dropped, stats.backlog) == (False, 2, 3)
                async with (
                    open_bridge_server(server_kernel, address, **SERVER_DEFAULTS) as server,
                    server_kernel.bus.subscribe("held.>") as held,
                    client_kernel.bus.subscribe("again.*") as again,
                ):
                    await link.wait_connected()
                    got = [(await held.receive())[1].payload for _ in range(3)]
                    assert got == [b"2", b"3", b"4"]
                    assert link.stats().connects == 2
                    # registered again with its subscriptions: deliveries flow once more
                    await until(server, lambda: "again.*" in _link_topics(server_kernel))
                    await server_kernel.bus.publish("again.news", Event("t", b"back"))
                    assert (await again.receive())[1].payload == b"back"


async def test_a_linked_process_killed_mid_call_fails_the_call_not_hangs(tmp_path: Path) -> None:
    async with (
        open_test_kernel() as server_kernel,
        open_bridge_server(server_kernel, "127.0.0.1:0", **SERVER_DEFAULTS) as server,
        server_kernel.bus.subscribe("slow.started") as started,
    ):
        process = subprocess.Popen(
            [sys.executable, str(HERE / "link_process.py"), server.address],
            cwd=tmp_path,
            env={**os.environ, "PYTHONPATH": str(HERE.parents[1])},
        )
        try:
            with trio.fail_after(60):  # a process start, not a synchronisation
                await until(server, lambda: server.streaming("slow-process"))
            async with trio.open_nursery() as nursery:
                results = []

                async def call() -> None:
                    call = ActionCall.with_args("k1", "slow.op", {}, timeout_ms=600_000)
                    results.append(await server_kernel.broker.invoke(call))

                nursery.start_soon(call)
                await started.receive()  # the call is running in the other process
                process.send_signal(signal.SIGKILL)
        finally:
            process.kill()
            process.wait()
    (result,) = results
    assert result.status is ActionStatus.ACTION_ERROR
    assert result.error is not None
    assert result.error.code == ErrorCode.PROVIDER_UNAVAILABLE


async def test_the_server_lists_the_linked_agents_while_the_link_lives() -> None:
    with trio.fail_after(60):  # a hang fails the test instead of stalling the suite

        @loomk.agent("scout", topics=["scout.task"], capabilities=["scout.look"])
        async def scout(ctx: loomk.Context, event: Event) -> None:
            pass

        async with (
            open_test_kernel() as server_kernel,
            open_test_kernel() as client_kernel,
            open_bridge_server(server_kernel, "127.0.0.1:0", **SERVER_DEFAULTS) as server,
        ):
            await client_kernel.spawn(scout)
            async with connect(client_kernel, server.address, name="remote") as link:
                await link.wait_connected()
                info = server_kernel.directory.get("scout")
                assert info is not None
                assert set(info.topics) == {"agent.scout.replies", "scout.task"}
                assert info.capabilities == ("scout.look",)
                assert info.metadata == {"loomk.remote": "bridge", "loomk.via": "remote"}
                assert server_kernel.directory.by_topic("scout.task") == ["remote", "scout"]
                await client_kernel.stop_agent("scout")  # its subscription goes: registered again
                await until(server, lambda: "scout" not in server_kernel.directory)
            await until(server, lambda: "remote" not in server_kernel.directory)


async def test_a_link_presents_the_server_s_token() -> None:
    with trio.fail_after(60):  # a hang fails the test instead of stalling the suite
        async with (
            open_test_kernel() as server_kernel,
            open_bridge_server(
                server_kernel, "127.0.0.1:0", **{**SERVER_DEFAULTS, "token": "s3cret"}
            ) as server,
            open_test_kernel() as client_kernel,
        ):
            async with connect(
                client_kernel, server.address, name="wrong", token="guess", backoff_s=0.01
            ) as refused:
                while not refused.last_error:
                    await refused.wait_changed()
                assert "UNAUTHENTICATED" in refused.last_error
                assert not refused.connected
            async with connect(client_kernel, server.address, name="right", token="s3cret") as link:
                await link.wait_connected()
                assert server.agents() == ["right"]


async def test_a_kernel_links_itself_when_bridge_link_address_is_set() -> None:
    async with (
        open_test_kernel() as server_kernel,
        open_bridge_server(server_kernel, "127.0.0.1:0", **SERVER_DEFAULTS) as server,
        open_test_kernel(
            bridge_link_address=server.address, bridge_link_name="configured"
        ) as client_kernel,
    ):
        link = client_kernel.edge("bridge_link")
        assert isinstance(link, BridgeLink)
        with trio.fail_after(60):
            await link.wait_connected()
        assert server.agents() == ["configured"]
