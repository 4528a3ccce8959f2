"""``loomk bench agents``: the cost of idle agents and of delivering through the runtime.

Spawning: N idle agents (each with its private topic and one subscription), measured in a
fresh process per size for wall time and resident memory, beside a baseline of N bare trio
tasks each parked on its own memory channel (the least an agent could be).

Delivery: one publisher, N agents subscribed to the same topic, each handler counting
events, beside the bus-only figure of the same run (N plain subscriptions drained by tasks
that call the same handler). The runtime adds the mailbox, the envelope's hop/TTL step and
supervision; the ratio shows what they cost.
"""

from __future__ import annotations

import gc
import json
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from functools import partial
from typing import Any

import trio
import trio.testing

from loomk.agents.agent import Agent
from loomk.agents.context import Context
from loomk.bench._shared import PAYLOAD, TOPIC, Counter, best_of, drain_subscription
from loomk.events import Event
from loomk.kernel import open_kernel


@dataclass(frozen=True, slots=True)
class SpawnResult:
    """Time and memory to spawn ``agents`` idle agents, and the bare-task baseline."""

    agents: int
    seconds: float
    rss_bytes_per_agent: float
    baseline_seconds: float
    baseline_rss_bytes_per_agent: float


@dataclass(frozen=True, slots=True)
class DeliveryResult:
    """Deliveries per second to N agents, and the bus-only figure of the same run."""

    agents: int
    deliveries: int
    runtime_per_s: float
    bus_per_s: float

    @property
    def ratio(self) -> float:
        """Runtime throughput as a fraction of the bus-only throughput."""
        return self.runtime_per_s / self.bus_per_s


def _rss_bytes() -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS in /proc/self/status")


class _Idle(Agent):
    topics = ("bench.idle",)


class _Counting(Agent):
    topics = (TOPIC,)

    def __init__(self, agent_id: str) -> None:
        super().__init__(agent_id)
        self.count = 0

    async def on_event(self, ctx: Context, event: Event) -> None:
        self.count += 1


async def spawn_agents(count: int) -> dict[str, float]:
    """Seconds and resident bytes to spawn ``count`` idle agents (run in a fresh process)."""
    gc.collect()
    before = _rss_bytes()
    started = time.perf_counter()
    async with open_kernel(shutdown_timeout_s=60) as kernel:
        await kernel.spawn_many(_Idle(f"idle-{i}") for i in range(count))
        seconds = time.perf_counter() - started
        rss = _rss_bytes() - before
        assert len(kernel.agents) == count
    return {"seconds": seconds, "rss": rss}


async def spawn_tasks(count: int) -> dict[str, float]:
    """The baseline: seconds and bytes for ``count`` bare tasks, each parked on a channel."""
    gc.collect()
    before = _rss_bytes()
    started = time.perf_counter()
    channels = []
    async with trio.open_nursery() as nursery:
        for _ in range(count):
            send, receive = trio.open_memory_channel[Event](1024)
            channels.append(send)
            nursery.start_soon(receive.receive)
        await trio.testing.wait_all_tasks_blocked()
        seconds = time.perf_counter() - started
        rss = _rss_bytes() - before
        nursery.cancel_scope.cancel()
    return {"seconds": seconds, "rss": rss}


def _measure_in_child(kind: str, count: int) -> dict[str, float]:
    """Run one spawn measurement in a fresh interpreter, so sizes don't share a heap."""
    code = (
        "import json, trio; from loomk.bench import agents as a; "
        f"print(json.dumps(trio.run(a.spawn_{kind}, {count})))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=600
    )
    result: dict[str, float] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


async def _runtime_delivery(agents: int, events: int) -> float:
    async with open_kernel() as kernel:
        instances = [_Counting(f"counter-{i}") for i in range(agents)]
        for instance in instances:
            await kernel.spawn(instance)
        await trio.testing.wait_all_tasks_blocked()
        publish = kernel.bus.publish
        started = time.perf_counter()
        for _ in range(events):
            await publish(TOPIC, Event("reading", PAYLOAD, metadata={"sender": "agent.bench"}))
        handles = [kernel.agents.get(instance.agent_id) for instance in instances]
        while any(handle.handled < events for handle in handles):
            await trio.testing.wait_all_tasks_blocked()
        elapsed = time.perf_counter() - started
        assert all(handle.agent.count == events for handle in handles)  # type: ignore[attr-defined]
    return agents * events / elapsed


async def _bus_delivery(agents: int, events: int) -> float:
    async with open_kernel() as kernel:
        counters = [Counter() for _ in range(agents)]
        subs = [kernel.bus.subscribe(TOPIC) for _ in range(agents)]
        async with trio.open_nursery() as nursery:
            for sub, counter in zip(subs, counters, strict=True):
                nursery.start_soon(drain_subscription, sub, counter.handle)
            await trio.testing.wait_all_tasks_blocked()
            publish = kernel.bus.publish
            started = time.perf_counter()
            for _ in range(events):
                await publish(TOPIC, Event("reading", PAYLOAD, metadata={"sender": "agent.bench"}))
            for sub in subs:
                sub.unsubscribe()
        elapsed = time.perf_counter() - started
        assert all(counter.count == events for counter in counters)
    return agents * events / elapsed


@dataclass(frozen=True, slots=True)
class AgentsReport:
    """Everything ``loomk bench agents`` measured."""

    spawn: list[SpawnResult]
    delivery: list[DeliveryResult]

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready figures."""
        return {
            "spawn": [asdict(s) for s in self.spawn],
            "delivery": [asdict(d) | {"ratio": d.ratio} for d in self.delivery],
        }


def run_agents_bench(
    *,
    spawn_sizes: tuple[int, ...] = (1_000, 10_000, 100_000),
    widths: tuple[int, ...] = (1, 10, 100),
    deliveries: int = 200_000,
    repeats: int = 3,
    progress: Callable[[str], None] = print,
) -> AgentsReport:
    """Measure fan-out delivery through the runtime, then spawning idle agents.

    Delivery runs first: the large spawn runs leave the machine reclaiming memory.
    """
    delivery = []
    for width in widths:
        events = max(1, deliveries // width)
        progress(f"delivery 1 -> {width} agents: {events * width:,} deliveries, best of {repeats}")
        bus = best_of(repeats, partial(trio.run, _bus_delivery, width, events))
        runtime = best_of(repeats, partial(trio.run, _runtime_delivery, width, events))
        delivery.append(DeliveryResult(width, events * width, runtime, bus))
    spawn = []
    for size in spawn_sizes:
        progress(f"spawn {size:,} idle agents (fresh process), and {size:,} bare tasks")
        ours = _measure_in_child("agents", size)
        base = _measure_in_child("tasks", size)
        per_agent, per_task = ours["rss"] / size, base["rss"] / size
        spawn.append(SpawnResult(size, ours["seconds"], per_agent, base["seconds"], per_task))
    return AgentsReport(spawn, delivery)


def format_report(report: AgentsReport) -> str:
    """The report as two plain-text tables."""
    lines = [
        "spawning idle agents (each: a supervised task, a mailbox, two subscriptions)",
        f"{'agents':>8} {'seconds':>8} {'KiB/agent':>10} {'bare tasks s':>13} {'KiB/task':>9}",
    ]
    for s in report.spawn:
        lines.append(
            f"{s.agents:>8,} {s.seconds:>8.2f} {s.rss_bytes_per_agent / 1024:>10.2f} "
            f"{s.baseline_seconds:>13.2f} {s.baseline_rss_bytes_per_agent / 1024:>9.2f}"
        )
    lines += [
        "",
        "delivery to N agents (deliveries/s; bus-only = plain subscriptions, same handler)",
        f"{'agents':>8} {'deliveries':>11} {'runtime':>12} {'bus-only':>12} {'ratio':>6}",
    ]
    for d in report.delivery:
        lines.append(
            f"{d.agents:>8,} {d.deliveries:>11,} {d.runtime_per_s:>12,.0f} "
            f"{d.bus_per_s:>12,.0f} {d.ratio:>6.2f}"
        )
    return "\n".join(lines)
