"""A kernel serving the bridge on a loopback port, and an in-process grpclib client.

The client runs on its own trio-asyncio loop in the test's trio run; each test writes its
client steps as an asyncio coroutine and runs it with :func:`as_client`. Loom's grpcio
clients (in a subprocess) are in ``integration/loom_client``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from typing import Any, TypeVar

import trio
import trio_asyncio
from grpclib.client import Channel
from support import capture_component_logs

from loomk import Kernel
from loomk.testing import open_test_kernel
from loomk_bridge import BridgeServer, open_bridge_server
from loomk_bridge._audit import AUDIT_LOGGER
from loomk_bridge._proto import action_pb2, bridge_pb2, event_pb2
from loomk_bridge._proto.bridge_grpc import BridgeStub

T = TypeVar("T")

SERVER_DEFAULTS: dict[str, Any] = {
    "token": "",
    "tls_cert": "",
    "tls_key": "",
    "tls_client_ca": "",
    "heartbeat_timeout_s": 60.0,
    "max_message_bytes": 1 << 20,
    "stream_queue": 512,
}


@asynccontextmanager
async def bridge_kernel(**options: Any) -> AsyncIterator[tuple[Kernel, BridgeServer]]:
    """A test kernel and its bridge server on ``127.0.0.1:0``."""
    async with (
        open_test_kernel() as kernel,
        open_bridge_server(kernel, "127.0.0.1:0", **{**SERVER_DEFAULTS, **options}) as server,
    ):
        yield kernel, server


async def as_client(steps: Callable[[], Awaitable[T]]) -> T:
    """Run the asyncio coroutine function ``steps`` on a client loop of its own."""
    async with trio_asyncio.open_loop():
        return await trio_asyncio.aio_as_trio(steps)()


def channel(server: BridgeServer, **options: Any) -> Channel:
    """A grpclib channel to ``server`` (asyncio side)."""
    host, _, port = server.address.rpartition(":")
    return Channel(host, int(port), **options)


def stub(ch: Channel) -> BridgeStub:
    return BridgeStub(ch)


async def until(server: BridgeServer, condition: Callable[[], bool]) -> None:
    """Wait (trio side) until the bridge's state satisfies ``condition``."""
    while not condition():
        await server.wait_changed()


def event(type_: str = "test_input", payload: bytes = b"hello", **fields: Any) -> Any:
    return event_pb2.Event(id=fields.pop("id", "e1"), type=type_, payload=payload, **fields)


def publish(topic: str, ev: Any) -> Any:
    return bridge_pb2.ClientEvent(publish=bridge_pb2.Publish(topic=topic, event=ev))


def ack(agent_id: str) -> Any:
    return bridge_pb2.ClientEvent(ack=bridge_pb2.Ack(message_id=agent_id))


def register(agent_id: str, topics: list[str], **fields: Any) -> Any:
    return bridge_pb2.AgentRegisterRequest(agent_id=agent_id, subscribed_topics=topics, **fields)


def descriptor(name: str, version: str = "1.0.0") -> Any:
    return action_pb2.CapabilityDescriptor(
        name=name, version=version, provider=action_pb2.PROVIDER_GRPC
    )


@contextmanager
def capture_audit() -> Iterator[list[dict[str, Any]]]:
    """The bridge's audit records (``loomk.bridge.audit``) written meanwhile, as dicts.

    Whatever level the logs were set to (a test kernel logs only critical records, and
    ``structlog.testing.capture_logs`` keeps that filter): structlog is configured to keep
    everything for the block, and put back as it was after it. The audit log takes a fresh
    logger per record, so it follows; nothing else is printed meanwhile.
    """
    with capture_component_logs(AUDIT_LOGGER) as records:
        yield records


__all__ = [
    "action_pb2",
    "bridge_pb2",
    "event_pb2",
    "trio",
]
