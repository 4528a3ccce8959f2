"""``loomk bench bus --dashboard``: the bus's throughput in a kernel serving the dashboard
with one connected websocket client, beside the same kernel without a dashboard.

Both sides run the same workload in a kernel (temporary state, no edges but the one
measured): one publisher, one subscriber draining its subscription. The dashboard side
also serves the page's feed to a client that reads every frame, so the figure includes
the tap on the bus, the feed's frames and the websocket writes. The client runs in a process
of its own, as a browser would: what it costs to read the frames is not the kernel's.
"""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial

import trio
import trio.testing

from loomk.bench._shared import PAYLOAD, TOPIC, Counter, best_of, drain_subscription
from loomk.events import Event, QoS
from loomk.kernel import Kernel, open_kernel

__all__ = ["DashboardResult", "run_dashboard_comparison"]


@dataclass(frozen=True, slots=True)
class DashboardResult:
    """Deliveries per second with and without the dashboard, and the frames its client got."""

    deliveries: int
    with_dashboard_per_s: float
    without_per_s: float
    frames_received: int

    @property
    def ratio(self) -> float:
        """Throughput with the dashboard as a fraction of the throughput without."""
        return self.with_dashboard_per_s / self.without_per_s


async def _publish_and_drain(kernel: Kernel, events: int) -> float:
    counter = Counter()
    subscription = kernel.bus.subscribe(TOPIC, qos=QoS.BATCHED)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(drain_subscription, subscription, counter.handle)
        await trio.testing.wait_all_tasks_blocked()
        started = time.perf_counter()
        publish = kernel.bus.publish
        for _ in range(events):
            await publish(TOPIC, Event("reading", PAYLOAD))
        subscription.unsubscribe()
    elapsed = time.perf_counter() - started
    assert counter.count == events, "the bus lost events in the benchmark"
    return events / elapsed


async def _without(events: int) -> float:
    async with open_kernel(state_temporary=True, edges=()) as kernel:
        return await _publish_and_drain(kernel, events)


async def _with(events: int, frames: list[int]) -> float:
    async with open_kernel(state_temporary=True, dashboard_address="127.0.0.1:0") as kernel:
        url = str(kernel.edge("dashboard").ws_url)  # type: ignore[attr-defined]
        reader = await trio.lowlevel.open_process(
            [sys.executable, "-m", "loomk.bench._feed_reader", url],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
        )
        assert reader.stdin is not None
        assert reader.stdout is not None
        try:
            said = await _line(reader.stdout)
            if said != "ready":
                raise RuntimeError(f"the feed client did not start: {said!r}")
            rate = await _publish_and_drain(kernel, events)
            await trio.sleep(0.3)  # the last frames of the run reach the client
            await reader.stdin.aclose()
            frames.append(int(await _line(reader.stdout)))
        finally:
            with trio.move_on_after(5):
                await reader.wait()
            reader.kill()
        return rate


async def _line(stream: trio.abc.ReceiveStream) -> str:
    """One line of a child's output (it writes nothing until asked, so no more follows)."""
    data = b""
    while not data.endswith(b"\n"):
        chunk = await stream.receive_some()
        if not chunk:
            break
        data += chunk
    return data.decode().strip()


def run_dashboard_comparison(
    deliveries: int, repeats: int, progress: Callable[[str], None] = print
) -> DashboardResult:
    """Best of ``repeats`` runs each way, alternating, ``deliveries`` events per run."""
    progress(f"dashboard: {deliveries:,} deliveries with and without it, best of {repeats}")
    frames: list[int] = []
    without = 0.0
    with_dashboard = 0.0
    for _ in range(repeats):  # alternated, so a slow spell of the machine hits both sides
        without = max(without, best_of(1, partial(trio.run, _without, deliveries)))
        with_dashboard = max(
            with_dashboard, best_of(1, partial(trio.run, _with, deliveries, frames))
        )
    return DashboardResult(deliveries, with_dashboard, without, max(frames, default=0))
