"""The bridge server over real loopback sockets: Loom's semantics and what loomk adds."""

from __future__ import annotations

import json
from typing import Any

import pytest
import trio
from bridge_support import (
    ack,
    action_pb2,
    as_client,
    bridge_kernel,
    bridge_pb2,
    channel,
    descriptor,
    event,
    publish,
    register,
    stub,
    until,
)
from grpclib.const import Status
from grpclib.exceptions import GRPCError

from loomk import ActionCall, ActionStatus, ErrorCode, Event
from loomk.testing import capture_events


async def test_heartbeat_echoes_the_timestamp_with_status_ok() -> None:
    async with bridge_kernel() as (_, server):

        async def steps() -> Any:
            ch = channel(server)
            try:
                return await stub(ch).Heartbeat(bridge_pb2.HeartbeatRequest(timestamp_ms=12345))
            finally:
                ch.close()

        reply = await as_client(steps)
    assert (reply.timestamp_ms, reply.status) == (12345, "ok")


async def test_register_refuses_an_empty_id_without_a_grpc_error() -> None:
    async with bridge_kernel() as (kernel, server):

        async def steps() -> tuple[Any, Any]:
            ch = channel(server)
            try:
                bridge = stub(ch)
                empty = await bridge.RegisterAgent(register("", ["topic.test"]))
                good = await bridge.RegisterAgent(
                    register(
                        "agentA", ["topic.test", "sensors.>"], capabilities=[descriptor("x.y")]
                    )
                )
                return empty, good
            finally:
                ch.close()

        empty, good = await as_client(steps)
        assert not empty.success
        assert "agent_id" in empty.error_message
        assert good.success
        info = kernel.directory.get("agentA")
        assert info is not None
        assert info.topics == ("topic.test", "sensors.>")
        assert info.capabilities == ("x.y",)
        assert info.metadata["loomk.remote"] == "bridge"
        assert server.agents() == ["agentA"]
        assert kernel.broker.resolve("x.y") is not None


async def test_register_refuses_an_id_of_a_local_agent_and_a_bad_pattern() -> None:
    async with bridge_kernel() as (kernel, server):
        from loomk.testing import ScriptedAgent

        await kernel.spawn(ScriptedAgent("local", topics=["t.x"]))

        async def steps() -> list[Any]:
            ch = channel(server)
            try:
                bridge = stub(ch)
                return [
                    await bridge.RegisterAgent(register("local", [])),
                    await bridge.RegisterAgent(register("r1", ["bad..topic"])),
                ]
            finally:
                ch.close()

        taken, bad = await as_client(steps)
    assert not taken.success
    assert "taken" in taken.error_message
    assert not bad.success
    assert "bad..topic" in bad.error_message


@pytest.mark.parametrize("first", ["publish", "ping", None])
async def test_a_stream_must_open_with_an_ack(first: str | None) -> None:
    async with bridge_kernel() as (_, server):

        async def steps() -> GRPCError:
            ch = channel(server)
            try:
                async with stub(ch).EventStream.open() as stream:
                    if first == "publish":
                        await stream.send_message(publish("topic.test", event()))
                    elif first == "ping":
                        await stream.send_message(
                            bridge_pb2.ClientEvent(ping=bridge_pb2.HeartbeatRequest())
                        )
                    if first is None:
                        await stream.send_request(end=True)  # headers, then nothing
                    else:
                        await stream.end()
                    with pytest.raises(GRPCError) as caught:
                        await stream.recv_message()
                    return caught.value
            finally:
                ch.close()

        error = await as_client(steps)
    assert error.status is Status.INVALID_ARGUMENT
    expected = "no first message" if first is None else "Ack carrying agent_id"
    assert expected in str(error.message)


async def test_publish_receive_own_event_and_inline_ping() -> None:
    """Loom's e2e flow: agentA on topic.test publishes and gets its own event back."""
    async with bridge_kernel() as (kernel, server):
        with capture_events(kernel.bus, "topic.test") as seen:

            async def steps() -> list[Any]:
                ch = channel(server)
                try:
                    bridge = stub(ch)
                    await bridge.RegisterAgent(register("agentA", ["topic.test"]))
                    async with bridge.EventStream.open() as stream:
                        await stream.send_message(ack("agentA"))
                        await stream.send_message(publish("topic.test", event()))
                        delivery = await stream.recv_message()
                        await stream.send_message(
                            bridge_pb2.ClientEvent(ping=bridge_pb2.HeartbeatRequest())
                        )
                        pong = await stream.recv_message()
                        await stream.end()
                        return [delivery, pong]
                finally:
                    ch.close()

            delivery, pong = await as_client(steps)
        assert delivery.WhichOneof("msg") == "delivery"
        assert delivery.delivery.topic == "topic.test"
        assert (delivery.delivery.event.type, delivery.delivery.event.payload) == (
            "test_input",
            b"hello",
        )
        assert pong.pong.status == "ok"
        assert pong.pong.timestamp_ms > 0
        assert [(t, e.type, e.payload) for t, e in seen.items] == [
            ("topic.test", "test_input", b"hello")
        ]
        assert server.stats().events_in == 1


async def test_kernel_events_reach_a_remote_subscriber_through_wildcards() -> None:
    async with bridge_kernel() as (kernel, server):
        streaming = trio.Event()
        done = trio.Event()

        async def steps() -> list[Any]:
            ch = channel(server)
            try:
                bridge = stub(ch)
                await bridge.RegisterAgent(register("watcher", ["sensors.>"]))
                async with bridge.EventStream.open() as stream:
                    await stream.send_message(ack("watcher"))
                    streaming.set()
                    got = [await stream.recv_message() for _ in range(3)]
                    done.set()
                    await stream.end()
                    return got
            finally:
                ch.close()

        async with trio.open_nursery() as nursery:

            async def publisher() -> None:
                await until(server, lambda: server.streaming("watcher"))
                for i, topic in enumerate(["sensors.a", "other.b", "sensors.a.b", "sensors.c"]):
                    await kernel.bus.publish(topic, Event(f"r{i}", payload=b"%d" % i))

            nursery.start_soon(publisher)
            got = await as_client(steps)
    assert [(m.delivery.topic, m.delivery.event.type) for m in got] == [
        ("sensors.a", "r0"),
        ("sensors.a.b", "r2"),
        ("sensors.c", "r3"),
    ]


async def _serve_calls(server: Any, agent_id: str, capability: str, answers: int) -> list[str]:
    """A remote agent offering ``capability``: answers ``answers`` pushed calls with the
    upper-cased ``text`` of the payload; returns the call ids it saw."""
    ch = channel(server)
    try:
        bridge = stub(ch)
        registered = await bridge.RegisterAgent(
            register(agent_id, [], capabilities=[descriptor(capability)])
        )
        assert registered.success, registered.error_message
        seen = []
        async with bridge.EventStream.open() as stream:
            await stream.send_message(ack(agent_id))
            while len(seen) < answers:
                frame = await stream.recv_message()
                call = frame.action_call
                seen.append(call.id)
                text = json.loads(call.payload)["text"]
                await stream.send_message(
                    bridge_pb2.ClientEvent(
                        action_result=action_pb2.ActionResult(
                            id=call.id,
                            status=action_pb2.ACTION_OK,
                            output=json.dumps(text.upper()).encode(),
                        )
                    )
                )
            await stream.end()
        return seen
    finally:
        ch.close()


async def test_a_remote_capability_is_invocable_through_the_broker() -> None:
    async with bridge_kernel() as (kernel, server):
        results = []
        async with trio.open_nursery() as nursery:

            async def caller() -> None:
                await until(server, lambda: server.streaming("upper"))
                for i in range(3):
                    call = ActionCall.with_args(f"c{i}", "text.upper", {"text": f"hi {i}"})
                    results.append(await kernel.broker.invoke(call))

            nursery.start_soon(caller)
            seen = await as_client(lambda: _serve_calls(server, "upper", "text.upper", 3))
        assert seen == ["c0", "c1", "c2"]
        assert [(r.status, r.json()) for r in results] == [
            (ActionStatus.ACTION_OK, "HI 0"),
            (ActionStatus.ACTION_OK, "HI 1"),
            (ActionStatus.ACTION_OK, "HI 2"),
        ]
        assert server.stats().calls == 3


async def test_a_call_to_a_vanished_agent_fails_at_once_not_at_its_timeout() -> None:
    async with bridge_kernel() as (kernel, server):
        outcome: list[Any] = []
        async with trio.open_nursery() as nursery:

            async def caller() -> None:
                await until(server, lambda: server.streaming("flaky"))
                call = ActionCall.with_args("c1", "flaky.op", {"text": "x"}, timeout_ms=600_000)
                with trio.fail_after(30):  # far below the call's own ten minutes
                    outcome.append(await kernel.broker.invoke(call))

            async def remote() -> None:
                ch = channel(server)
                bridge = stub(ch)
                await bridge.RegisterAgent(
                    register("flaky", [], capabilities=[descriptor("flaky.op")])
                )
                stream = bridge.EventStream.open()
                await stream.__aenter__()
                await stream.send_message(ack("flaky"))
                await stream.recv_message()  # the call arrives ...
                ch.close()  # ... and the process vanishes without answering or closing

            nursery.start_soon(caller)
            await as_client(remote)
        (result,) = outcome
        assert result.status is ActionStatus.ACTION_ERROR
        assert result.code == ErrorCode.PROVIDER_UNAVAILABLE
        assert "flaky" in result.error.message


async def test_forward_action_runs_a_kernel_capability_and_maps_a_missing_one() -> None:
    async with bridge_kernel() as (kernel, server):
        from loomk import capability

        @capability("math.add", version="1.0.0")
        async def add(args: dict[str, Any]) -> int:
            return int(args["a"]) + int(args["b"])

        kernel.broker.register(add)

        async def steps() -> tuple[Any, Any]:
            ch = channel(server)
            try:
                bridge = stub(ch)
                ok = await bridge.ForwardAction(
                    action_pb2.ActionCall(
                        id="f1", capability="math.add", payload=b'{"a": 2, "b": 3}'
                    )
                )
                missing = await bridge.ForwardAction(
                    action_pb2.ActionCall(id="f2", capability="no.such")
                )
                return ok, missing
            finally:
                ch.close()

        ok, missing = await as_client(steps)
    assert (ok.id, ok.status, json.loads(ok.output)) == ("f1", action_pb2.ACTION_OK, 5)
    assert (missing.id, missing.status, missing.error.code) == (
        "f2",
        action_pb2.ACTION_ERROR,
        "BROKER_ERROR",
    )


async def test_a_port_in_use_stops_the_kernel_at_start_naming_it() -> None:
    import socket

    from loomk import EdgeError
    from loomk.testing import open_test_kernel
    from loomk_bridge import BridgeError

    holder = socket.socket()
    holder.bind(("127.0.0.1", 0))
    holder.listen(1)
    address = f"127.0.0.1:{holder.getsockname()[1]}"
    try:
        with pytest.raises(EdgeError) as caught:
            async with open_test_kernel(bridge_address=address):
                pytest.fail("the kernel started on a port in use")
    finally:
        holder.close()
    assert isinstance(caught.value.__cause__, BridgeError)
    assert address in str(caught.value)
    assert "in use" in str(caught.value)


async def test_the_kernel_starts_the_bridge_edge_when_an_address_is_set() -> None:
    from loomk.testing import open_test_kernel
    from loomk_bridge import BridgeServer

    async with open_test_kernel(bridge_address="127.0.0.1:0") as kernel:
        server = kernel.edge("bridge")
        assert isinstance(server, BridgeServer)

        async def steps() -> Any:
            ch = channel(server)
            try:
                return await stub(ch).Heartbeat(bridge_pb2.HeartbeatRequest(timestamp_ms=5))
            finally:
                ch.close()

        assert (await as_client(steps)).timestamp_ms == 5
    async with open_test_kernel() as plain:
        assert "bridge" not in plain.edges


async def test_re_registering_while_streaming_moves_the_subscriptions() -> None:
    async with bridge_kernel() as (kernel, server):
        got: list[Any] = []

        async def steps() -> None:
            ch = channel(server)
            try:
                bridge = stub(ch)
                await bridge.RegisterAgent(register("mover", ["old.x"]))
                async with bridge.EventStream.open() as stream:
                    await stream.send_message(ack("mover"))
                    await bridge.RegisterAgent(register("mover", ["new.x"]))
                    await stream.send_message(publish("old.x", event("on_old")))
                    await stream.send_message(publish("new.x", event("on_new")))
                    got.append(await stream.recv_message())
                    await stream.send_message(
                        bridge_pb2.ClientEvent(ping=bridge_pb2.HeartbeatRequest())
                    )
                    got.append(await stream.recv_message())
                    await stream.end()
            finally:
                ch.close()

        await as_client(steps)
        info = kernel.directory.get("mover")
        assert info is not None
        assert info.topics == ("new.x",)
    # only the event on the new topic came back, then the pong: nothing from old.x
    assert [f.WhichOneof("msg") for f in got] == ["delivery", "pong"]
    assert got[0].delivery.event.type == "on_new"


async def test_events_are_not_sent_back_to_the_link_they_came_from() -> None:
    async with bridge_kernel() as (kernel, server):
        got: list[Any] = []

        async def steps() -> None:
            ch = channel(server)
            try:
                bridge = stub(ch)
                await bridge.RegisterAgent(
                    register("link", ["shared.x"], metadata={"loomk.origin": "kernel-b"})
                )
                async with bridge.EventStream.open() as stream:
                    await stream.send_message(ack("link"))
                    mine = event("from_b", metadata={"loomk.origin": "kernel-b"})
                    await stream.send_message(publish("shared.x", mine))
                    await stream.send_message(publish("shared.x", event("plain")))
                    got.append(await stream.recv_message())
                    await stream.end()
            finally:
                ch.close()

        with capture_events(kernel.bus, "shared.x") as seen:
            await as_client(steps)
        assert [e.type for e in seen.events] == ["from_b", "plain"]  # both reached the bus
    assert [f.delivery.event.type for f in got] == ["plain"]  # its own came not back
