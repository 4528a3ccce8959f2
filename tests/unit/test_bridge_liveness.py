"""Which remote agents the bridge keeps: frames and same-connection heartbeats count, on a
mock clock (the rule itself, without sockets; tests/integration covers the wire)."""

from __future__ import annotations

import trio
import trio.testing

from loomk.testing import open_test_kernel
from loomk_bridge._core import BridgeCore
from loomk_bridge._outbox import Outbox
from loomk_bridge._proto import bridge_pb2

TIMEOUT_S = 10.0


def _request(agent_id: str) -> bridge_pb2.AgentRegisterRequest:
    return bridge_pb2.AgentRegisterRequest(agent_id=agent_id, subscribed_topics=["t.x"])


async def test_heartbeats_on_the_agents_connection_keep_it_and_silence_drops_it(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with open_test_kernel() as kernel:
        core = BridgeCore(kernel, heartbeat_timeout_s=TIMEOUT_S)
        for agent_id, peer in (("beating", "10.0.0.1:5000"), ("silent", "10.0.0.2:5000")):
            assert core.register(_request(agent_id), peer) == ""
            core.open_session(agent_id, Outbox(4), peer)
        for _ in range(3):  # 3 x 0.8 timeouts: past the timeout, always beating
            await trio.sleep(0.8 * TIMEOUT_S)
            core.heartbeat("10.0.0.1:5000")
            core.heartbeat("10.0.0.9:5000")  # another connection: counts for nobody
            core.drop_silent()
        assert sorted(core.agents) == ["beating"]
        assert "silent" not in kernel.directory
        await trio.sleep(1.1 * TIMEOUT_S)
        assert core.drop_silent() == ["beating"]
        assert core.dropped == 2


async def test_a_registered_agent_that_never_streams_is_dropped(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with open_test_kernel() as kernel:
        core = BridgeCore(kernel, heartbeat_timeout_s=TIMEOUT_S)
        core.register(_request("ghost"), "10.0.0.3:1")
        await trio.sleep(0.9 * TIMEOUT_S)
        assert core.drop_silent() == []
        await trio.sleep(0.2 * TIMEOUT_S)
        assert core.drop_silent() == ["ghost"]
        assert "ghost" not in kernel.directory
