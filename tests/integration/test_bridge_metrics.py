"""The bridge's server and link counters reach ``kernel.metrics`` while they run, and
leave it when they stop."""

from __future__ import annotations

from typing import Any

import trio
from bridge_support import SERVER_DEFAULTS, until
from prometheus_client.parser import text_string_to_metric_families

from loomk import Event, Kernel
from loomk.testing import open_test_kernel
from loomk_bridge import open_bridge_server
from loomk_bridge.link import connect


def samples(kernel: Kernel) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    text = kernel.metrics.render_prometheus()
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


async def test_bridge_connections_and_frames_are_exported_while_the_bridge_runs() -> None:
    async with open_test_kernel() as server_kernel, open_test_kernel() as client_kernel:
        async with (
            open_bridge_server(server_kernel, "127.0.0.1:0", **SERVER_DEFAULTS) as server,
            connect(client_kernel, server.address, name="remote") as link,
            server_kernel.bus.subscribe("up.>") as up,
        ):
            with trio.fail_after(60):
                await link.wait_connected()
                await until(server, lambda: server.stats().streams == 1)
                await client_kernel.bus.publish("up.one", Event("t", b"x"))
                await up.receive()
                await until(server, lambda: server.stats().events_in >= 1)
            stats: Any = server.stats()
            here = samples(server_kernel)
            assert here[("bridge_connections", ())] == stats.streams == 1
            assert here[("bridge_agents", ())] == stats.agents
            assert here[("bridge_frames_total", (("direction", "in"),))] == stats.events_in
            assert here[("bridge_frames_total", (("direction", "out"),))] == stats.events_out
            there = samples(client_kernel)
            link_stats = link.stats()
            assert there[("link_connected", (("link", "remote"),))] == 1
            key = ("link_frames_total", (("direction", "out"), ("link", "remote")))
            assert there[key] == link_stats.sent >= 1
        assert "bridge" not in server_kernel.metrics.sources()
        assert not any(name.startswith("bridge_") for name, _ in samples(server_kernel))
        assert not any(name.startswith("link_") for name, _ in samples(client_kernel))
