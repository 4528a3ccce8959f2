"""``loomk bench collab``: request/reply between two agents, and broker invocations.

Round trips: agent ``asker`` sends requests one at a time with ``ctx.request`` to agent
``answerer``, which answers with ``ctx.reply``; each round trip is timed. The baseline, in
the same run, is two bare trio tasks playing ping-pong over two memory channels (the least
any request/reply between two tasks costs).

Broker: ``kernel.broker.invoke`` of a no-op provider with a new call id each time (so the
idempotency cache never answers), against calling the provider's ``invoke`` directly.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

import trio

from loomk.actions.provider import capability
from loomk.actions.types import ActionCall
from loomk.agents.agent import Agent
from loomk.agents.context import Context
from loomk.events import Event
from loomk.kernel import open_kernel


@dataclass(frozen=True, slots=True)
class RoundTrips:
    """Sequential request/reply round trips and their latencies (microseconds)."""

    count: int
    per_s: float
    p50_us: float
    p99_us: float
    baseline_per_s: float
    baseline_p50_us: float
    baseline_p99_us: float

    @property
    def ratio(self) -> float:
        """Round trips/s over the raw ping-pong's."""
        return self.per_s / self.baseline_per_s


@dataclass(frozen=True, slots=True)
class Invocations:
    """Broker invocations of a no-op provider per second, beside direct provider calls."""

    count: int
    per_s: float
    baseline_per_s: float

    @property
    def ratio(self) -> float:
        """Broker invocations/s over direct calls/s."""
        return self.per_s / self.baseline_per_s


@dataclass(frozen=True, slots=True)
class CollabReport:
    """Everything ``loomk bench collab`` measured."""

    round_trips: RoundTrips
    invocations: Invocations

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready figures."""
        return {
            "round_trips": asdict(self.round_trips) | {"ratio": self.round_trips.ratio},
            "invocations": asdict(self.invocations) | {"ratio": self.invocations.ratio},
        }


class _Answerer(Agent):
    topics = ("bench.ask",)

    async def on_event(self, ctx: Context, event: Event) -> None:
        await ctx.reply(event, Event("collab.reply", event.payload))


class _Asker(Agent):
    topics = ("bench.go",)

    def __init__(self, count: int, done: trio.Event) -> None:
        super().__init__("asker")
        self.count = count
        self.done = done
        self.latencies: list[float] = []
        self.elapsed = 0.0

    async def on_event(self, ctx: Context, event: Event) -> None:
        question = Event("collab.request", b"?")
        clock = time.perf_counter
        latencies = self.latencies
        started = clock()
        for _ in range(self.count):
            sent = clock()
            await ctx.request("bench.ask", question, timeout_s=5.0)
            latencies.append(clock() - sent)
        self.elapsed = clock() - started
        self.done.set()


async def _loomk_round_trips(count: int) -> tuple[float, list[float]]:
    async with open_kernel(env={}, log_level="error", state_temporary=True) as kernel:
        done = trio.Event()
        asker = _Asker(count, done)
        await kernel.spawn(_Answerer("answerer"))
        await kernel.spawn(asker)
        await kernel.bus.publish("bench.go", Event("go"))
        await done.wait()
        return count / asker.elapsed, asker.latencies


async def _raw_round_trips(count: int) -> tuple[float, list[float]]:
    to_answerer, answerer_in = trio.open_memory_channel[bytes](1)
    to_asker, asker_in = trio.open_memory_channel[bytes](1)
    latencies: list[float] = []
    clock = time.perf_counter

    async def answerer() -> None:
        async for message in answerer_in:
            await to_asker.send(message)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(answerer)
        started = clock()
        for _ in range(count):
            sent = clock()
            await to_answerer.send(b"?")
            await asker_in.receive()
            latencies.append(clock() - sent)
        elapsed = clock() - started
        await to_answerer.aclose()
    return count / elapsed, latencies


async def _invocations(count: int) -> tuple[float, float]:
    @capability("bench.noop")
    async def noop(args: dict[str, Any]) -> None:
        return None

    async with open_kernel(env={}, log_level="error", state_temporary=True) as kernel:
        kernel.broker.register(noop)
        calls = [ActionCall(f"c{i}", "bench.noop", b"{}") for i in range(count)]
        started = time.perf_counter()
        for call in calls:
            await kernel.broker.invoke(call)
        broker = count / (time.perf_counter() - started)
        started = time.perf_counter()
        for call in calls:
            await noop.invoke(call)
        direct = count / (time.perf_counter() - started)
    return broker, direct


def _percentile_us(latencies: list[float], q: int) -> float:
    return statistics.quantiles(latencies, n=100)[q - 1] * 1e6


def run_collab_bench(
    *,
    round_trips: int = 20_000,
    invocations: int = 50_000,
    repeats: int = 3,
    progress: Callable[[str], None] = print,
) -> CollabReport:
    """Measure request/reply round trips and broker invocations (best of ``repeats``)."""
    best: tuple[float, list[float]] = (0.0, [])
    raw: tuple[float, list[float]] = (0.0, [])
    broker = direct = 0.0
    for attempt in range(1, repeats + 1):
        progress(f"run {attempt}/{repeats}: {round_trips:,} round trips, loomk and raw")
        best = max(best, trio.run(_loomk_round_trips, round_trips), key=lambda r: r[0])
        raw = max(raw, trio.run(_raw_round_trips, round_trips), key=lambda r: r[0])
        progress(f"run {attempt}/{repeats}: {invocations:,} broker invocations and direct")
        b, d = trio.run(_invocations, invocations)
        broker, direct = max(broker, b), max(direct, d)
    return CollabReport(
        RoundTrips(
            round_trips,
            best[0],
            _percentile_us(best[1], 50),
            _percentile_us(best[1], 99),
            raw[0],
            _percentile_us(raw[1], 50),
            _percentile_us(raw[1], 99),
        ),
        Invocations(invocations, broker, direct),
    )


def format_report(report: CollabReport) -> str:
    """The report as a plain-text table."""
    rt = report.round_trips
    inv = report.invocations
    return "\n".join(
        [
            "request/reply between two agents (sequential round trips)",
            f"{'':<22} {'per s':>10} {'p50 us':>8} {'p99 us':>8}",
            f"{'loomk ctx.request':<22} {rt.per_s:>10,.0f} {rt.p50_us:>8.1f} {rt.p99_us:>8.1f}",
            f"{'raw channel ping-pong':<22} {rt.baseline_per_s:>10,.0f} "
            f"{rt.baseline_p50_us:>8.1f} {rt.baseline_p99_us:>8.1f}",
            f"ratio {rt.ratio:.2f}",
            "",
            "broker invocations of a no-op provider",
            f"{'kernel.broker.invoke':<22} {inv.per_s:>10,.0f}",
            f"{'provider.invoke':<22} {inv.baseline_per_s:>10,.0f}",
            f"ratio {inv.ratio:.2f}",
        ]
    )
