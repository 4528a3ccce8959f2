"""Bridge streams under stress and abuse: replacement, liveness, bad frames, limits, auth."""

from __future__ import annotations

from typing import Any

import pytest
import trio
import trio_asyncio
from bridge_support import (
    ack,
    as_client,
    bridge_kernel,
    bridge_pb2,
    channel,
    event,
    publish,
    register,
    stub,
    until,
)
from grpclib.const import Status
from grpclib.encoding.proto import ProtoCodec
from grpclib.exceptions import GRPCError

from loomk import Event
from loomk.testing import capture_events


async def test_a_second_stream_replaces_the_first_cleanly() -> None:
    async with bridge_kernel() as (kernel, server):
        first_done = trio.Event()
        second_open = trio.Event()
        received: dict[str, list[Any]] = {"first": [], "second": []}

        async def first() -> None:
            ch = channel(server)
            try:
                bridge = stub(ch)
                await bridge.RegisterAgent(register("twin", ["news.>"]))
                async with bridge.EventStream.open() as stream:
                    await stream.send_message(ack("twin"))
                    while (frame := await stream.recv_message()) is not None:
                        received["first"].append(frame)
                    await stream.end()
                first_done.set()
            finally:
                ch.close()

        async def second() -> None:
            ch = channel(server)
            try:
                async with stub(ch).EventStream.open() as stream:
                    await stream.send_message(ack("twin"))
                    second_open.set()
                    received["second"].append(await stream.recv_message())
                    await stream.end()
            finally:
                ch.close()

        async with trio.open_nursery() as nursery:
            nursery.start_soon(as_client, first)
            await until(server, lambda: server.streaming("twin"))
            nursery.start_soon(as_client, second)
            await second_open.wait()
            await first_done.wait()
            await kernel.bus.publish("news.today", Event("headline"))
        (end,) = received["first"]
        assert (end.err.code, "replaced" in end.err.message) == ("REPLACED", True)
        (delivery,) = received["second"]
        assert delivery.delivery.event.type == "headline"
        assert server.agents() == ["twin"]  # still registered after its old stream ended


async def test_an_agent_that_misses_its_heartbeats_is_dropped_with_its_capabilities() -> None:
    async with bridge_kernel(heartbeat_timeout_s=0.2) as (kernel, server):
        from bridge_support import descriptor

        frames: list[Any] = []
        ended: list[Status] = []

        async def silent() -> None:
            ch = channel(server)
            try:
                bridge = stub(ch)
                await bridge.RegisterAgent(
                    register("quiet", ["t.x"], capabilities=[descriptor("quiet.op")])
                )
                try:
                    await _read_all(bridge, "quiet", frames)
                except GRPCError as error:  # the end tells a Loom client to reconnect
                    ended.append(error.status)
            finally:
                ch.close()

        async with trio.open_nursery() as nursery:
            nursery.start_soon(as_client, silent)
            await until(server, lambda: server.streaming("quiet"))
            assert kernel.broker.resolve("quiet.op") is not None
            await until(server, lambda: not server.agents())
        assert [f.err.code for f in frames] == ["HEARTBEAT_TIMEOUT"]
        assert ended == [Status.UNAVAILABLE]
        assert "quiet" not in kernel.directory
        assert kernel.broker.resolve("quiet.op") is None
        assert server.stats().dropped == 1


async def _read_all(bridge: Any, agent_id: str, frames: list[Any]) -> None:
    async with bridge.EventStream.open() as stream:
        await stream.send_message(ack(agent_id))
        while (frame := await stream.recv_message()) is not None:
            frames.append(frame)
        await stream.end()


BAD_FRAMES = {
    "invalid topic": (publish("bad..topic", event()), "INVALID_TOPIC"),
    "wildcard topic": (publish("a.*", event()), "INVALID_TOPIC"),
    "NUL in metadata": (publish("t.x", event(metadata={"k": "a\x00b"})), "INVALID_EVENT"),
    "priority out of range": (publish("t.x", event(priority=1000)), "INVALID_EVENT"),
    "missing event": (
        bridge_pb2.ClientEvent(publish=bridge_pb2.Publish(topic="t.x")),
        "MISSING_EVENT",
    ),
    "no known case": (bridge_pb2.ClientEvent(), "UNKNOWN_MESSAGE"),
}


@pytest.mark.parametrize("name", BAD_FRAMES)
async def test_a_bad_frame_gets_an_err_frame_and_the_stream_goes_on(name: str) -> None:
    bad, code = BAD_FRAMES[name]
    async with bridge_kernel() as (kernel, server):
        with capture_events(kernel.bus, "t.x") as seen:

            async def steps() -> list[Any]:
                ch = channel(server)
                try:
                    async with stub(ch).EventStream.open() as stream:
                        await stream.send_message(ack("sender"))
                        await stream.send_message(bad)
                        error = await stream.recv_message()
                        await stream.send_message(publish("t.x", event("after")))
                        await stream.send_message(
                            bridge_pb2.ClientEvent(ping=bridge_pb2.HeartbeatRequest())
                        )
                        pong = await stream.recv_message()
                        await stream.end()
                        return [error, pong]
                finally:
                    ch.close()

            error, pong = await as_client(steps)
        assert error.err.code == code
        assert pong.pong.status == "ok"
        assert [e.type for e in seen.events] == ["after"]  # the bad one went nowhere


def test_an_unknown_oneof_case_parses_as_no_case() -> None:
    """What a newer client's frame looks like to this server: field 30 is no case."""
    frame = bridge_pb2.ClientEvent.FromString(bytes([0xF2, 0x01, 0x00]))  # field 30, empty
    assert frame.WhichOneof("msg") is None


class _RawCodec(ProtoCodec):
    """Sends bytes as they are: lets a test put garbage on the wire."""

    def encode(self, message: Any, message_type: Any) -> bytes:
        return message if isinstance(message, bytes) else message.SerializeToString()


@pytest.mark.parametrize(
    ("garbage", "status"),
    [
        (b"\xff\xff\xff\xff", Status.INVALID_ARGUMENT),  # truncated varint tag
        (b"\x0a\x05ab", Status.INVALID_ARGUMENT),  # a field longer than the frame
        (b"\x0a" + b"\x80" * 10, Status.INVALID_ARGUMENT),
        (bytes(2 << 20), Status.RESOURCE_EXHAUSTED),  # over the 1 MiB limit of the test server
    ],
)
async def test_a_broken_frame_ends_only_its_own_stream(garbage: bytes, status: Status) -> None:
    async with bridge_kernel() as (kernel, server):
        with capture_events(kernel.bus, "t.x") as seen:
            bystander_open = trio.Event()
            broken = trio.Event()

            async def breaker() -> GRPCError:
                await trio_asyncio.trio_as_aio(bystander_open.wait)()
                ch = channel(server, codec=_RawCodec())
                try:
                    with pytest.raises(GRPCError) as caught:
                        await _send_then_read(stub(ch), garbage)
                    return caught.value
                finally:
                    ch.close()
                    broken.set()

            async def bystander() -> int:
                """A stream open before the breaker and used after it broke."""
                ch = channel(server)
                try:
                    async with stub(ch).EventStream.open() as stream:
                        await stream.send_message(ack("bystander"))
                        await _ping(stream)
                        bystander_open.set()
                        await trio_asyncio.trio_as_aio(broken.wait)()
                        for i in range(100):
                            await stream.send_message(publish("t.x", event(id=f"b{i}")))
                        await _ping(stream)  # the pong: everything before it is in
                        await stream.end()
                        return 100
                finally:
                    ch.close()

            outcome: dict[str, Any] = {}

            async def run(name: str, steps: Any) -> None:
                outcome[name] = await as_client(steps)

            async with trio.open_nursery() as nursery:
                nursery.start_soon(run, "sent", bystander)
                nursery.start_soon(run, "error", breaker)
            error, sent = outcome["error"], outcome["sent"]
        assert error.status is status
        assert len(seen.events) == sent
        assert not kernel.closed


async def _ping(stream: Any) -> None:
    await stream.send_message(bridge_pb2.ClientEvent(ping=bridge_pb2.HeartbeatRequest()))
    while not (await stream.recv_message()).HasField("pong"):
        pass


async def _send_then_read(bridge: Any, garbage: bytes) -> None:
    async with bridge.EventStream.open() as stream:
        await stream.send_message(ack("breaker").SerializeToString())
        await stream.send_message(garbage)
        while await stream.recv_message() is not None:
            pass


async def test_a_token_is_required_when_configured() -> None:
    async with bridge_kernel(token="s3cret") as (_, server):

        async def steps() -> tuple[GRPCError, GRPCError, Any]:
            ch = channel(server)
            try:
                bridge = stub(ch)
                request = bridge_pb2.HeartbeatRequest(timestamp_ms=1)
                with pytest.raises(GRPCError) as missing:
                    await bridge.Heartbeat(request)
                with pytest.raises(GRPCError) as wrong:
                    await bridge.Heartbeat(request, metadata={"authorization": "Bearer nope"})
                ok = await bridge.Heartbeat(request, metadata={"authorization": "Bearer s3cret"})
                return missing.value, wrong.value, ok
            finally:
                ch.close()

        missing, wrong, ok = await as_client(steps)
        assert missing.status is wrong.status is Status.UNAUTHENTICATED
        assert ok.status == "ok"
        assert server.stats().refused == 2


async def test_batch_frames_only_for_clients_that_ask() -> None:
    async with bridge_kernel() as (kernel, server):
        with capture_events(kernel.bus, "in.x") as seen:

            async def steps() -> Any:
                ch = channel(server)
                try:
                    bridge = stub(ch)
                    await bridge.RegisterAgent(
                        register("batcher", ["out.>"], metadata={"loomk.batch": "1"})
                    )
                    async with bridge.EventStream.open() as stream:
                        await stream.send_message(ack("batcher"))
                        publishes = [
                            bridge_pb2.Publish(topic="in.x", event=event(id=f"p{i}"))
                            for i in range(50)
                        ]
                        await stream.send_message(
                            bridge_pb2.ClientEvent(
                                publish_batch=bridge_pb2.PublishBatch(publishes=publishes)
                            )
                        )
                        await stream.send_message(
                            bridge_pb2.ClientEvent(ping=bridge_pb2.HeartbeatRequest())
                        )
                        frames = []
                        while (
                            len([f for f in frames if f.HasField("pong")]) < 1
                            or sum(len(f.delivery_batch.deliveries) for f in frames) < 20
                        ):
                            frames.append(await stream.recv_message())
                        await stream.end()
                        return frames
                finally:
                    ch.close()

            async with trio.open_nursery() as nursery:

                async def publisher() -> None:
                    await until(server, lambda: server.streaming("batcher"))
                    for i in range(20):
                        await kernel.bus.publish("out.y", Event("o", payload=b"%d" % i))

                nursery.start_soon(publisher)
                frames = await as_client(steps)
        kinds = {f.WhichOneof("msg") for f in frames}
        assert kinds == {"delivery_batch", "pong"}
        payloads = [d.event.payload for f in frames for d in f.delivery_batch.deliveries]
        assert payloads == [b"%d" % i for i in range(20)]
        assert [e.id for e in seen.events] == [f"p{i}" for i in range(50)]


async def test_a_slow_reader_replaced_gets_every_queued_frame_then_its_err() -> None:
    """A full outbox must not drop queued deliveries, nor the err frame saying why."""
    async with bridge_kernel(stream_queue=2) as (kernel, server):
        first_frames: list[Any] = []
        stalled = trio.Event()
        release = trio.Event()

        async def slow() -> None:
            ch = channel(server)
            try:
                bridge = stub(ch)
                await bridge.RegisterAgent(register("slow", ["flood.x"]))
                async with bridge.EventStream.open() as stream:
                    await stream.send_message(ack("slow"))
                    stalled.set()
                    await _aio_wait(release)  # reads nothing until told
                    while (frame := await stream.recv_message()) is not None:
                        first_frames.append(frame)
                    await stream.end()
            finally:
                ch.close()

        async def replacement() -> None:
            ch = channel(server)
            try:
                async with stub(ch).EventStream.open() as stream:
                    await stream.send_message(ack("slow"))
                    await stream.send_message(
                        bridge_pb2.ClientEvent(ping=bridge_pb2.HeartbeatRequest())
                    )
                    await stream.recv_message()
                    await stream.end()
            finally:
                ch.close()

        async with trio.open_nursery() as nursery:
            nursery.start_soon(as_client, slow)
            await stalled.wait()
            await until(server, lambda: server.streaming("slow"))
            for i in range(600):  # far more than the two frame lists the outbox holds
                await kernel.bus.publish("flood.x", Event("f", payload=b"%d" % i))
            await as_client(replacement)
            release.set()
        numbers = [int(f.delivery.event.payload) for f in first_frames if f.HasField("delivery")]
        assert numbers == list(range(len(numbers)))  # in order, no gap
        assert numbers  # some were sent before the stream ended
        assert first_frames[-1].err.code == "REPLACED"


async def _aio_wait(event: trio.Event) -> None:
    """Wait (asyncio side) for a trio event."""
    await trio_asyncio.trio_as_aio(event.wait)()


async def test_dropping_a_remote_agent_leaves_a_provider_that_replaced_it() -> None:
    from bridge_support import descriptor

    from loomk import ActionResult, CapabilityDescriptor

    class Local:
        descriptor = CapabilityDescriptor("shared.op", "1.0.0")

        async def invoke(self, call: Any) -> ActionResult:
            return ActionResult.success(call.id, "local")

    async with bridge_kernel(heartbeat_timeout_s=0.2) as (kernel, server):

        async def steps() -> None:
            ch = channel(server)
            try:
                offer = [descriptor("shared.op")]
                await stub(ch).RegisterAgent(register("remote", [], capabilities=offer))
            finally:
                ch.close()

        await as_client(steps)
        local = Local()
        kernel.broker.register(local)  # replaces the remote agent's registration
        await until(server, lambda: not server.agents())  # dropped: it never streamed
        assert kernel.broker.resolve("shared.op", "1.0.0") is local


async def test_a_client_that_stops_reading_is_cut_and_publishers_go_on() -> None:
    """Deliveries are lossless, so a client that reads nothing would stall its topics'
    publishers for ever: after the heartbeat timeout it is cut as a slow consumer."""
    async with bridge_kernel(stream_queue=1, heartbeat_timeout_s=0.3) as (kernel, server):
        opened = trio.Event()
        release = trio.Event()
        outcome: list[Any] = []

        async def deaf() -> None:
            ch = channel(server)
            try:
                bridge = stub(ch)
                await bridge.RegisterAgent(register("deaf", ["busy.x"]))
                try:
                    async with bridge.EventStream.open() as stream:
                        await stream.send_message(ack("deaf"))
                        opened.set()
                        await trio_asyncio.trio_as_aio(release.wait)()  # never reads before
                        while (frame := await stream.recv_message()) is not None:
                            outcome.append(frame)
                        await stream.end()
                except GRPCError as error:
                    outcome.append(error)
            finally:
                ch.close()

        async with trio.open_nursery() as nursery:
            nursery.start_soon(as_client, deaf)
            await opened.wait()
            await until(server, lambda: server.streaming("deaf"))
            big = b"x" * 4096  # 5000 x 4 KiB: more than HTTP/2's windows, lane and outbox hold
            for _ in range(5000):
                await kernel.bus.publish("busy.x", Event("b", payload=big))
            release.set()  # the publisher got through: now let the client see its end
        end = outcome[-1]
        assert isinstance(end, GRPCError)
        assert end.status is Status.UNAVAILABLE
        assert "SLOW_CONSUMER" in str(end.message)
        delivered = outcome[:-1]
        assert 0 < len(delivered) < 5000  # it was cut, and what it got came in order
        assert {f.WhichOneof("msg") for f in delivered} <= {"delivery", "err"}


async def test_shutdown_ends_every_stream_with_unavailable() -> None:
    """A client mid-stream when the kernel stops hears why (err SHUTDOWN) and gets a status
    that tells Loom's SDK to reconnect, rather than a stream that just hangs."""
    frames: list[Any] = []
    statuses: list[Status] = []
    streaming = trio.Event()
    finished = trio.Event()

    async with trio.open_nursery() as nursery:
        async with bridge_kernel() as (_, server):

            async def client() -> None:
                ch = channel(server)
                try:
                    await stub(ch).RegisterAgent(register("stayer", ["t.x"]))
                    try:
                        await _read_until_end(stub(ch), frames, streaming)
                    except GRPCError as error:
                        statuses.append(error.status)
                finally:
                    ch.close()

            async def run_client() -> None:
                await as_client(client)
                finished.set()

            nursery.start_soon(run_client)
            await streaming.wait()
        with trio.fail_after(30):  # the server is gone: the client must not hang
            await finished.wait()
    assert [f.err.code for f in frames if f.HasField("err")] == ["SHUTDOWN"]
    assert statuses == [Status.UNAVAILABLE]


async def _read_until_end(bridge: Any, frames: list[Any], streaming: trio.Event) -> None:
    async with bridge.EventStream.open() as stream:
        await stream.send_message(ack("stayer"))
        await _ping(stream)
        streaming.set()
        while (frame := await stream.recv_message()) is not None:
            frames.append(frame)
        await stream.end()


async def test_agent_ids_that_cannot_name_topics_are_refused() -> None:
    async with bridge_kernel() as (_, server):

        async def steps() -> tuple[Any, GRPCError]:
            ch = channel(server)
            try:
                bridge = stub(ch)
                registered = await bridge.RegisterAgent(register("bad id*", []))
                with pytest.raises(GRPCError) as caught:
                    await _ack_only(bridge, "a\x00b")
                return registered, caught.value
            finally:
                ch.close()

        registered, refused = await as_client(steps)
    assert not registered.success
    assert "invalid agent id" in registered.error_message
    assert refused.status is Status.INVALID_ARGUMENT


async def _ack_only(bridge: Any, agent_id: str) -> None:
    async with bridge.EventStream.open() as stream:
        await stream.send_message(ack(agent_id))
        await stream.end()
        await stream.recv_message()


@pytest.mark.parametrize("batching", [True, False])
async def test_bad_items_of_a_batch_frame_are_refused_in_place(batching: bool) -> None:
    """Every item of a publish_batch is published or refused with its reason, in order,
    whether the client asked for batches (the fast path) or not."""
    metadata = {"loomk.batch": "1"} if batching else {}
    async with bridge_kernel(max_payload_bytes=8) as (kernel, server):
        with capture_events(kernel.bus, "in.>") as seen:

            async def steps() -> Any:
                ch = channel(server)
                try:
                    bridge = stub(ch)
                    await bridge.RegisterAgent(register("mixed", [], metadata=metadata))
                    publishes = [
                        bridge_pb2.Publish(topic="in.a", event=event(id="p1")),
                        bridge_pb2.Publish(topic="in.b"),  # no event
                        bridge_pb2.Publish(topic="in..c", event=event(id="p2")),  # bad topic
                        bridge_pb2.Publish(topic="in.d", event=event("", id="p3")),  # no type
                        bridge_pb2.Publish(topic="in.e", event=event(id="p4", payload=b"x" * 9)),
                        bridge_pb2.Publish(topic="in.f", event=event(id="p5")),
                    ]
                    async with bridge.EventStream.open() as stream:
                        await stream.send_message(ack("mixed"))
                        await stream.send_message(
                            bridge_pb2.ClientEvent(
                                publish_batch=bridge_pb2.PublishBatch(publishes=publishes)
                            )
                        )
                        await stream.send_message(
                            bridge_pb2.ClientEvent(ping=bridge_pb2.HeartbeatRequest())
                        )
                        codes = []
                        while True:
                            frame = await stream.recv_message()
                            if frame.HasField("pong"):
                                break
                            codes.append(frame.err.code)
                        await stream.end()
                        return codes
                finally:
                    ch.close()

            codes = await as_client(steps)
        assert codes == ["MISSING_EVENT", "INVALID_TOPIC", "INVALID_EVENT", "PAYLOAD_TOO_LARGE"]
        assert [e.id for e in seen.events] == ["p1", "p5"]
        assert server.stats().events_in == 2
