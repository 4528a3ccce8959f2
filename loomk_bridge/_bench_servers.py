"""The two servers of ``loomk bench bridge``: a kernel with its bridge, and bare grpclib.

Each runs one client process (``command(address)``) against itself and returns the seconds
the client reported.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import trio
import trio_asyncio
from grpclib.server import Server

from loomk import ActionResult, CapabilityDescriptor
from loomk.kernel import open_kernel
from loomk_bridge._bench_client import TOPIC
from loomk_bridge._proto import action_pb2, bridge_grpc, bridge_pb2
from loomk_bridge.server import listening_socket, open_bridge_server

__all__ = ["bare_server", "loomk_server"]

Command = Callable[[str], list[str]]


async def _client_seconds(command: list[str]) -> float:
    done = await trio.run_process(command, capture_stdout=True)
    return float(done.stdout.decode().strip().splitlines()[-1])


class _Noop:
    descriptor = CapabilityDescriptor("bench.noop", "1.0.0")

    async def invoke(self, call: Any) -> ActionResult:
        return ActionResult.success(call.id)


async def loomk_server(command: Command) -> float:
    """A kernel serving the bridge, a task draining the published topic, a no-op capability."""
    async with open_kernel(
        env={}, log_level="error", state_temporary=True, handle_signals=False
    ) as kernel:
        kernel.broker.register(_Noop())
        async with open_bridge_server(kernel, "127.0.0.1:0") as server:
            subscription = kernel.bus.subscribe(TOPIC)
            async with trio.open_nursery() as nursery:

                async def drain() -> None:
                    async for _ in subscription:
                        pass

                nursery.start_soon(drain)
                seconds = await _client_seconds(command(server.address))
                nursery.cancel_scope.cancel()
            return seconds


class _Bare(bridge_grpc.BridgeBase):
    """Decodes and counts; answers pings and calls at once."""

    def __init__(self) -> None:
        self.events = 0

    async def RegisterAgent(self, stream: Any) -> None:
        await stream.recv_message()
        await stream.send_message(bridge_pb2.AgentRegisterResponse(success=True))

    async def EventStream(self, stream: Any) -> None:
        async for frame in stream:
            kind = frame.WhichOneof("msg")
            if kind == "publish":
                self.events += 1
            elif kind == "publish_batch":
                self.events += len(frame.publish_batch.publishes)
            elif kind == "ping":
                await stream.send_message(
                    bridge_pb2.ServerEvent(pong=bridge_pb2.HeartbeatResponse(status="ok"))
                )

    async def ForwardAction(self, stream: Any) -> None:
        call = await stream.recv_message()
        await stream.send_message(action_pb2.ActionResult(id=call.id))

    async def Heartbeat(self, stream: Any) -> None:
        request = await stream.recv_message()
        await stream.send_message(
            bridge_pb2.HeartbeatResponse(timestamp_ms=request.timestamp_ms, status="ok")
        )


async def bare_server(command: Command) -> float:
    """grpclib alone, on the same trio-asyncio loop a kernel's bridge uses."""
    sock = listening_socket("127.0.0.1:0")  # the bridge's own: same TCP options
    address = "{}:{}".format(*sock.getsockname())
    async with trio_asyncio.open_loop():
        server = Server([_Bare()])
        await trio_asyncio.aio_as_trio(server.start)(sock=sock)
        try:
            return await _client_seconds(command(address))
        finally:
            server.close()
            await trio_asyncio.aio_as_trio(server.wait_closed)()
