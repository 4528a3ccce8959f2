"""The remote side of ``loomk bench bridge``: a grpclib client in a process of its own.

Usage: python -m loomk_bridge._bench_client HOST:PORT MODE COUNT
MODE ``frames`` publishes COUNT events one per frame, ``batches`` in PublishBatch frames of
``BATCH`` events; both then ping and wait for the pong (the server handles a stream's frames
in order, so the pong means every event is on the bus). ``unary`` makes COUNT sequential
ForwardAction calls of ``bench.noop``. Prints the seconds taken.
"""

from __future__ import annotations

import asyncio
import sys
import time

from grpclib.client import Channel

from loomk_bridge._proto import action_pb2, bridge_pb2, event_pb2
from loomk_bridge._proto.bridge_grpc import BridgeStub

BATCH = 100
TOPIC = "bench.remote"


def _event(index: int) -> event_pb2.Event:
    return event_pb2.Event(
        id=f"bench-{index}",
        type="reading",
        timestamp_ms=1,
        source="bench",
        metadata={"sender": "remote", "trace": "0123456789abcdef0123456789abcdef"},
        payload=b"x" * 64,
    )


async def _stream(bridge: BridgeStub, count: int, batched: bool) -> float:
    frames = []
    if batched:
        for start in range(0, count, BATCH):
            publishes = [
                bridge_pb2.Publish(topic=TOPIC, event=_event(i))
                for i in range(start, min(start + BATCH, count))
            ]
            batch = bridge_pb2.PublishBatch(publishes=publishes)
            frames.append(bridge_pb2.ClientEvent(publish_batch=batch))
    else:
        frames = [
            bridge_pb2.ClientEvent(publish=bridge_pb2.Publish(topic=TOPIC, event=_event(i)))
            for i in range(count)
        ]
    async with bridge.EventStream.open() as stream:
        await stream.send_message(bridge_pb2.ClientEvent(ack=bridge_pb2.Ack(message_id="bench")))
        started = time.perf_counter()
        for frame in frames:
            await stream.send_message(frame)
        await stream.send_message(bridge_pb2.ClientEvent(ping=bridge_pb2.HeartbeatRequest()))
        while True:
            reply = await stream.recv_message()
            if reply is None or reply.HasField("pong"):
                break
        elapsed = time.perf_counter() - started
        await stream.end()
    return elapsed


async def _unary(bridge: BridgeStub, count: int) -> float:
    started = time.perf_counter()
    for i in range(count):
        await bridge.ForwardAction(action_pb2.ActionCall(id=f"u{i}", capability="bench.noop"))
    return time.perf_counter() - started


async def main(address: str, mode: str, count: int) -> float:
    host, _, port = address.rpartition(":")
    channel = Channel(host, int(port))
    try:
        bridge = BridgeStub(channel)
        if mode == "unary":
            return await _unary(bridge, count)
        return await _stream(bridge, count, batched=mode == "batches")
    finally:
        channel.close()


if __name__ == "__main__":
    print(asyncio.run(main(sys.argv[1], sys.argv[2], int(sys.argv[3]))))
