"""``loomk bench bus``: bus throughput and latency beside a raw trio memory-channel baseline.

Both sides do the same work per delivery: create an :class:`~loomk.Event`, hand it to every
subscriber, and call an async handler in each subscriber's task. The baseline uses trio
memory channels with the fastest known pattern (``send_nowait`` with a fallback to ``send``;
the consumer drains with ``receive_nowait`` and parks only when empty); the bus side uses the
public API the same way (``publish``, then ``Subscription.receive_nowait`` in a loop and
``await receive()`` only when empty). Figures are reported as
ratios against the baseline measured in the same run, since absolute numbers vary with the
machine and its load.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from functools import partial
from typing import Any

import trio
import trio.testing

from loomk.bench._shared import (
    PAYLOAD,
    TOPIC,
    Counter,
    Handler,
    best_of,
    drain_subscription,
)
from loomk.bench.dashboard import DashboardResult, run_dashboard_comparison
from loomk.bus import EventBus
from loomk.events import Event, QoS


@dataclass(frozen=True, slots=True)
class ThroughputResult:
    """Deliveries per second for one fan-out width, loomk and baseline."""

    subscribers: int
    deliveries: int
    loomk_per_s: float
    baseline_per_s: float

    @property
    def ratio(self) -> float:
        """loomk throughput as a fraction of the baseline's."""
        return self.loomk_per_s / self.baseline_per_s


@dataclass(frozen=True, slots=True)
class LatencyResult:
    """Publish-to-handler latency percentiles (microseconds) at a fixed offered rate."""

    side: str
    rate_per_s: int
    samples: int
    p50_us: float
    p99_us: float
    max_us: float


async def _drain_channel(receive: trio.MemoryReceiveChannel[Event], handle: Handler) -> None:
    """The baseline's consumer: the same drain pattern on a raw trio memory channel."""
    while True:
        try:
            event = receive.receive_nowait()
        except trio.WouldBlock:
            try:
                event = await receive.receive()
            except trio.EndOfChannel:
                return
        except trio.EndOfChannel:
            return
        await handle(TOPIC, event)


async def _bus_throughput(subscribers: int, events: int) -> float:
    bus = EventBus()
    counters = [Counter() for _ in range(subscribers)]
    subs = [bus.subscribe(TOPIC, qos=QoS.BATCHED) for _ in range(subscribers)]

    async with trio.open_nursery() as nursery:
        for sub, counter in zip(subs, counters, strict=True):
            nursery.start_soon(drain_subscription, sub, counter.handle)
        await trio.testing.wait_all_tasks_blocked()
        started = time.perf_counter()
        publish = bus.publish
        for _ in range(events):
            await publish(TOPIC, Event("reading", PAYLOAD))
        for sub in subs:
            sub.unsubscribe()
    elapsed = time.perf_counter() - started
    assert all(c.count == events for c in counters), "bus lost events in the benchmark"
    return subscribers * events / elapsed


async def channel_throughput(subscribers: int, events: int) -> float:
    """The baseline: raw trio memory channels, one consumer task per subscriber."""
    pairs = [trio.open_memory_channel[Event](1024) for _ in range(subscribers)]
    counters = [Counter() for _ in range(subscribers)]

    async with trio.open_nursery() as nursery:
        for (_, receive), counter in zip(pairs, counters, strict=True):
            nursery.start_soon(_drain_channel, receive, counter.handle)
        await trio.testing.wait_all_tasks_blocked()
        started = time.perf_counter()
        senders = [send for send, _ in pairs]
        for _ in range(events):
            event = Event("reading", PAYLOAD)
            for send in senders:
                try:
                    send.send_nowait(event)
                except trio.WouldBlock:
                    await send.send(event)
        for send in senders:
            await send.aclose()
    elapsed = time.perf_counter() - started
    assert all(c.count == events for c in counters), "baseline lost events"
    return subscribers * events / elapsed


async def _latency(side: str, rate: int, seconds: float) -> LatencyResult:
    count = int(rate * seconds)
    sent = [0] * count
    latencies: list[int] = []
    interval = 1.0 / rate
    clock = time.perf_counter_ns

    async def record(topic: str, event: Event) -> None:
        latencies.append(clock() - sent[int.from_bytes(event.payload, "little")])

    if side == "loomk":
        bus = EventBus()
        sub = bus.subscribe(TOPIC, qos=QoS.BATCHED)

        async def consume() -> None:
            await drain_subscription(sub, record)

        async def produce() -> None:
            start = trio.current_time()
            for i in range(count):
                await trio.sleep_until(start + i * interval)
                sent[i] = clock()
                await bus.publish(TOPIC, Event("reading", i.to_bytes(4, "little")))
            sub.unsubscribe()

    else:
        send, receive = trio.open_memory_channel[Event](1024)

        async def consume() -> None:
            async with receive:
                await _drain_channel(receive, record)

        async def produce() -> None:
            start = trio.current_time()
            async with send:
                for i in range(count):
                    await trio.sleep_until(start + i * interval)
                    sent[i] = clock()
                    event = Event("reading", i.to_bytes(4, "little"))
                    try:
                        send.send_nowait(event)
                    except trio.WouldBlock:
                        await send.send(event)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(consume)
        nursery.start_soon(produce)
    latencies.sort()
    return LatencyResult(
        side=side,
        rate_per_s=rate,
        samples=len(latencies),
        p50_us=latencies[len(latencies) // 2] / 1000,
        p99_us=latencies[int(len(latencies) * 0.99)] / 1000,
        max_us=latencies[-1] / 1000,
    )


@dataclass(frozen=True, slots=True)
class BusReport:
    """Everything ``loomk bench bus`` measured."""

    throughput: list[ThroughputResult]
    latency: list[LatencyResult]
    dashboard: DashboardResult | None = None

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready figures."""
        figures: dict[str, Any] = {
            "throughput": [asdict(t) | {"ratio": t.ratio} for t in self.throughput],
            "latency": [asdict(lat) for lat in self.latency],
        }
        if self.dashboard is not None:
            figures["dashboard"] = asdict(self.dashboard) | {"ratio": self.dashboard.ratio}
        return figures


def run_bus_bench(
    *,
    widths: tuple[int, ...] = (1, 10, 100),
    deliveries: int = 300_000,
    repeats: int = 3,
    rate: int = 10_000,
    latency_seconds: float = 2.0,
    dashboard: bool = False,
    progress: Callable[[str], None] = print,
) -> BusReport:
    """Measure bus throughput for each fan-out width and latency at ``rate`` events/s;
    with ``dashboard``, also a kernel's throughput serving the dashboard to one client."""
    results = []
    for width in widths:
        events = max(1, deliveries // width)
        progress(f"throughput 1 -> {width}: {events * width:,} deliveries, best of {repeats}")
        base = best_of(repeats, partial(trio.run, channel_throughput, width, events))
        ours = best_of(repeats, partial(trio.run, _bus_throughput, width, events))
        results.append(ThroughputResult(width, events * width, ours, base))
    progress(f"latency at {rate:,} events/s for {latency_seconds:g} s each")
    latency = [
        trio.run(_latency, "baseline", rate, latency_seconds),
        trio.run(_latency, "loomk", rate, latency_seconds),
    ]
    compared = None
    if dashboard:
        compared = run_dashboard_comparison(deliveries, repeats, progress)
    return BusReport(results, latency, compared)


def format_report(report: BusReport) -> str:
    """The report as two plain-text tables."""
    lines = [
        "throughput (deliveries/s; each creates an Event and calls an async handler)",
        f"{'fan-out':>8} {'deliveries':>11} {'loomk':>12} {'trio channels':>14} {'ratio':>6}",
    ]
    for t in report.throughput:
        lines.append(
            f"{'1 -> ' + str(t.subscribers):>8} {t.deliveries:>11,} {t.loomk_per_s:>12,.0f} "
            f"{t.baseline_per_s:>14,.0f} {t.ratio:>6.2f}"
        )
    lines += [
        "",
        "latency publish -> handler (microseconds)",
        f"{'side':>9} {'rate/s':>8} {'samples':>8} {'p50':>8} {'p99':>8} {'max':>9}",
    ]
    for lat in report.latency:
        lines.append(
            f"{lat.side:>9} {lat.rate_per_s:>8,} {lat.samples:>8,} {lat.p50_us:>8.1f} "
            f"{lat.p99_us:>8.1f} {lat.max_us:>9.1f}"
        )
    shown = report.dashboard
    if shown is not None:
        lines += [
            "",
            "a kernel's bus serving the dashboard to one client (deliveries/s, 1 -> 1)",
            f"{'deliveries':>11} {'dashboard':>12} {'without':>12} {'ratio':>6} {'frames':>7}",
            f"{shown.deliveries:>11,} {shown.with_dashboard_per_s:>12,.0f} "
            f"{shown.without_per_s:>12,.0f} {shown.ratio:>6.2f} {shown.frames_received:>7,}",
        ]
    return "\n".join(lines)
