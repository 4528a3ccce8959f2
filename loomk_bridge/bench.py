"""``loomk bench bridge``: events and calls through the bridge, beside bare grpclib.

A client process (``loomk_bridge._bench_client``, grpclib + upb) publishes events to a
kernel's bridge, one per frame and then in ``PublishBatch`` frames of 100, while a task in
the kernel drains a subscription to them; then it makes sequential ``ForwardAction`` calls
of a no-op capability. The baseline, in the same run, is the same client against a bare
grpclib server on the same trio-asyncio footing that only decodes and counts the frames and
answers calls at once: what any bridge pays for gRPC, HTTP/2 and protobuf alone.

Events/s count from the first frame sent to the pong that follows the last one (the server
handles a stream's frames in order, so every event is on the bus by then).
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

from loomk.bench.options import BenchOption, Scenario, count

__all__ = ["SCENARIO", "BridgeReport", "format_report", "run_bridge_bench"]

SCENARIO = Scenario(
    "bridge",
    "events and ForwardAction calls through the gRPC bridge vs bare grpclib",
    "A client process publishes events to the kernel's bridge (one per frame, then 100 per "
    "PublishBatch frame) while a kernel task drains them, then makes sequential "
    "ForwardAction calls; beside the same client against a bare grpclib server that only "
    "decodes and counts. Needs loomk[bridge].",
    (
        BenchOption("--events", "events", count, 100_000, 5_000, "events per publishing run"),
        BenchOption("--calls", "calls", count, 5_000, 500, "ForwardAction calls per run"),
        BenchOption("--repeats", "repeats", count, 3, 1, "keep the best of N runs"),
    ),
)


@dataclass(frozen=True, slots=True)
class Rates:
    """One figure through loomk's bridge and through bare grpclib (per second)."""

    count: int
    loomk_per_s: float
    bare_per_s: float

    @property
    def ratio(self) -> float:
        return self.loomk_per_s / self.bare_per_s


@dataclass(frozen=True, slots=True)
class BridgeReport:
    """Everything ``loomk bench bridge`` measured."""

    frames: Rates  # events/s, one event per frame
    batches: Rates  # events/s, 100 events per frame
    calls: Rates  # ForwardAction round trips/s

    @property
    def batching_gain(self) -> float:
        """Batched over per-event frames, both through loomk's bridge."""
        return self.batches.loomk_per_s / self.frames.loomk_per_s

    def as_dict(self) -> dict[str, Any]:
        return {
            "frames": asdict(self.frames) | {"ratio": self.frames.ratio},
            "batches": asdict(self.batches) | {"ratio": self.batches.ratio},
            "calls": asdict(self.calls) | {"ratio": self.calls.ratio},
            "batching_gain": self.batching_gain,
        }


def run_bridge_bench(
    *,
    events: int = 100_000,
    calls: int = 5_000,
    repeats: int = 3,
    progress: Callable[[str], None] = print,
) -> BridgeReport:
    """Measure the bridge and bare grpclib (best of ``repeats`` each)."""
    import trio

    from loomk_bridge._bench_servers import bare_server, loomk_server

    best: dict[tuple[str, str], float] = {}
    for attempt in range(1, repeats + 1):
        for side, server in (("loomk", loomk_server), ("bare", bare_server)):
            progress(f"run {attempt}/{repeats}: {side}: {events:,} events x 2, {calls:,} calls")
            for mode, size in (("frames", events), ("batches", events), ("unary", calls)):
                seconds = trio.run(server, _client(mode, size))
                rate = size / seconds
                best[side, mode] = max(best.get((side, mode), 0.0), rate)
    return BridgeReport(
        Rates(events, best["loomk", "frames"], best["bare", "frames"]),
        Rates(events, best["loomk", "batches"], best["bare", "batches"]),
        Rates(calls, best["loomk", "unary"], best["bare", "unary"]),
    )


def _client(mode: str, size: int) -> Callable[[str], list[str]]:
    def command(address: str) -> list[str]:
        return [sys.executable, "-m", "loomk_bridge._bench_client", address, mode, str(size)]

    return command


def format_report(report: BridgeReport) -> str:
    """The report as a plain-text table."""
    rows = [
        ("events, 1 per frame", report.frames),
        ("events, 100 per frame", report.batches),
        ("ForwardAction calls", report.calls),
    ]
    lines = [
        "bridge throughput from a client process (per second; bare = grpclib only)",
        f"{'':>22}  {'count':>9}  {'loomk':>10}  {'bare grpclib':>12}  {'ratio':>5}",
    ]
    for label, rates in rows:
        lines.append(
            f"{label:>22}  {rates.count:>9,}  {rates.loomk_per_s:>10,.0f}  "
            f"{rates.bare_per_s:>12,.0f}  {rates.ratio:>5.2f}"
        )
    lines.append(f"batched / per-event frames through loomk: {report.batching_gain:.1f}x")
    return "\n".join(lines)
