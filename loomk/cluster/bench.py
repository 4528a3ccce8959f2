"""``loomk bench cluster``: events between two kernels over NATS, beside nats-py alone.

One run starts its own nats-server (JetStream on, a temporary store) and measures, best of
``repeats``:

- **nats-py alone** between two processes (:mod:`loomk.cluster._bench_baseline`): what the
  server and the client library achieve before loomk adds anything, over core NATS and
  through JetStream (a window of unacknowledged publishes, a durable consumer).
- **The in-process bus**: one kernel publishing to an agent of its own.
- **Two kernels**: this process's kernel publishes; a kernel in another process
  (:mod:`loomk.cluster._bench_kernel`) joined to the same server has an agent on the events
  and counts them. First on a ``realtime`` pattern (core NATS: at most once, so drops are
  counted, not failed), then on a ``batched`` one (JetStream: every event must arrive once).

Throughput is what the receiving side saw: distinct events / seconds from the first to the
last delivery (the nats-py baseline counts the same way). Latency is publish -> handler at
a fixed offered rate (``rate`` events/s for ``latency_seconds``), stamped with
``time.time_ns()`` in the payload, the clock both processes share; the in-process bus and
nats-py alone (core NATS) are measured the same way beside the two kernels.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

from loomk.bench.options import BenchOption, Scenario, count, seconds

__all__ = [
    "SCENARIO",
    "ClusterReport",
    "Latency",
    "Throughput",
    "format_report",
    "run_cluster_bench",
]


def _paced_samples(chosen: Any) -> str | None:
    if chosen["rate"] * chosen["latency_seconds"] < 1:
        return (
            f"--rate {chosen['rate']} x --latency-seconds {chosen['latency_seconds']:g} "
            "gives no latency sample: the product must be at least 1"
        )
    if chosen["rate"] * chosen["latency_seconds"] >= 2**32:
        return "--rate x --latency-seconds is too many latency samples"
    return None


SCENARIO = Scenario(
    "cluster",
    "events between two kernels over NATS (core, JetStream) vs nats-py alone",
    "Start a nats-server; a kernel here publishes to an agent in a kernel in another "
    "process, over core NATS (realtime) and through JetStream (batched, nothing may be "
    "lost): events/s and publish -> handler latency at a fixed rate; beside nats-py alone "
    "between two processes and the in-process bus. Needs loomk[cluster] and nats-server.",
    (
        BenchOption("--events", "events", count, 100_000, 5_000, "events over core NATS"),
        BenchOption("--js-events", "js_events", count, 50_000, 2_000, "events through JetStream"),
        BenchOption(
            "--rate",
            "rate",
            count,
            2_000,
            1_000,
            "events offered per second in the latency runs",
            metavar="PER_S",
        ),
        BenchOption(
            "--latency-seconds",
            "latency_seconds",
            seconds,
            1.0,
            0.5,
            "length of each latency run",
            metavar="SECONDS",
        ),
        BenchOption("--repeats", "repeats", count, 2, 1, "keep the best of N runs"),
    ),
    _paced_samples,
)

CORE_TOPIC = "bench.core.reading"
JS_TOPIC = "bench.js.reading"
RAW_SUBJECT = "bench.raw"
_READY_S = 60.0
_ROUND_S = 180.0


@dataclass(frozen=True, slots=True)
class Throughput:
    """Events from one publisher to one receiver, as fast as it goes (best run)."""

    side: str
    """``bus`` (in-process), ``nats-py core``, ``loomk core``, ``nats-py js``, ``loomk js``."""
    sent: int
    received: int
    """Distinct events received in the best run."""
    duplicates: int
    """Events received more than once, in the best run."""
    lost: int
    """The most events lost in any run (sent, never received)."""
    events_per_s: float
    """Distinct events / seconds from the first to the last delivery."""
    publish_per_s: float
    """The publisher's own rate (publishing may end before delivery does)."""


@dataclass(frozen=True, slots=True)
class Latency:
    """Publish -> handler latency at a fixed offered rate (microseconds; run with the
    lowest p99)."""

    side: str
    rate_per_s: int
    sent: int
    received: int
    p50_us: float
    p99_us: float
    max_us: float


@dataclass(frozen=True, slots=True)
class ClusterReport:
    """Everything ``loomk bench cluster`` measured."""

    throughput: list[Throughput]
    latency: list[Latency]

    def side(self, name: str) -> Throughput:
        """The throughput row of ``name``."""
        return next(t for t in self.throughput if t.side == name)

    @property
    def core_ratio(self) -> float:
        """Two kernels over core NATS against nats-py alone between two processes."""
        return self.side("loomk core").events_per_s / self.side("nats-py core").events_per_s

    @property
    def js_ratio(self) -> float:
        """Two kernels through JetStream against nats-py alone through JetStream."""
        return self.side("loomk js").events_per_s / self.side("nats-py js").events_per_s

    @property
    def targets(self) -> dict[str, bool]:
        """Issue #16: core >= 0.5x nats-py core; JetStream >= 20,000 events/s, none lost."""
        js = self.side("loomk js")
        return {
            "core_half_of_nats_py": self.core_ratio >= 0.5,
            "js_20k_per_s": js.events_per_s >= 20_000,
            "js_nothing_lost": js.lost == 0 and js.duplicates == 0,
        }

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready figures."""
        return {
            "throughput": [asdict(t) for t in self.throughput],
            "latency": [asdict(lat) for lat in self.latency],
            "core_ratio": self.core_ratio,
            "js_ratio": self.js_ratio,
            "targets": self.targets,
        }


class _Best:
    """The best run of each side: highest throughput, lowest latency p99, most lost."""

    def __init__(self) -> None:
        self.throughput: dict[str, Throughput] = {}
        self.latency: dict[str, Latency] = {}
        self.lost: dict[str, int] = {}

    def rate(self, side: str, sent: int, result: dict[str, Any], publish_s: float) -> None:
        unique = int(result["unique"])
        lost = sent - unique
        self.lost[side] = max(self.lost.get(side, 0), lost)
        rate = unique / result["seconds"] if result["seconds"] > 0 else 0.0
        row = Throughput(
            side,
            sent,
            unique,
            int(result["duplicates"]),
            self.lost[side],
            rate,
            sent / publish_s if publish_s > 0 else 0.0,
        )
        known = self.throughput.get(side)
        if known is None or rate > known.events_per_s:
            self.throughput[side] = row
        else:
            self.throughput[side] = _with_lost(known, self.lost[side])

    def paced(self, side: str, rate: int, sent: int, result: dict[str, Any]) -> None:
        row = Latency(
            side,
            rate,
            sent,
            int(result["unique"]),
            float(result["p50_us"]),
            float(result["p99_us"]),
            float(result["max_us"]),
        )
        known = self.latency.get(side)
        if known is None or row.p99_us < known.p99_us:
            self.latency[side] = row


def _with_lost(row: Throughput, lost: int) -> Throughput:
    return Throughput(
        row.side,
        row.sent,
        row.received,
        row.duplicates,
        lost,
        row.events_per_s,
        row.publish_per_s,
    )


_ORDER = ("bus", "nats-py core", "loomk core", "nats-py js", "loomk js")


def run_cluster_bench(
    *,
    events: int = 100_000,
    js_events: int = 50_000,
    rate: int = 2_000,
    latency_seconds: float = 1.0,
    repeats: int = 2,
    progress: Callable[[str], None] = print,
) -> ClusterReport:
    """Measure every side ``repeats`` times against one nats-server; keep the best."""
    import trio

    best = _Best()
    paced = max(1, int(rate * latency_seconds))
    trio.run(_run, best, events, js_events, rate, paced, repeats, progress)
    throughput = [best.throughput[s] for s in _ORDER if s in best.throughput]
    latency = [best.latency[s] for s in _ORDER if s in best.latency]
    return ClusterReport(throughput, latency)


async def _run(
    best: _Best,
    events: int,
    js_events: int,
    rate: int,
    paced: int,
    repeats: int,
    progress: Callable[[str], None],
) -> None:
    from loomk.cluster._bench_baseline import run_baseline
    from loomk.cluster.nats_server import open_nats_server

    async with open_nats_server() as server:
        for attempt in range(1, repeats + 1):
            step = f"run {attempt}/{repeats}"
            progress(f"{step}: nats-py alone: {events:,} core, {js_events:,} JetStream events")
            for mode, size in (("core", events), ("js", js_events)):
                got = await run_baseline(server.url, size, mode)
                result = {"unique": got["received"], "duplicates": 0, "seconds": got["seconds"]}
                publish_s = got["sent"] / got["publish_per_s"] if got["publish_per_s"] else 0.0
                best.rate(f"nats-py {mode}", size, result, publish_s)
            progress(f"{step}: nats-py alone: {paced:,} core events at {rate:,}/s")
            best.paced("nats-py core", rate, paced, await _raw_latency(server.url, paced, rate))
            progress(f"{step}: in-process bus: {events:,} events, then {paced:,} at {rate:,}/s")
            await _in_process(best, events, paced, rate)
            progress(
                f"{step}: two kernels: {events:,} core, {js_events:,} JetStream events, "
                f"then {paced:,} of each at {rate:,}/s"
            )
            await _across(best, server.url, attempt, events, js_events, paced, rate)


async def _publish_rounds(
    publish: Callable[[str, Any], Any],
    topic: str,
    round_no: int,
    size: int,
    rate: int | None,
) -> float:
    """Publish ``size`` benchmark events on ``topic`` (flat out, or ``rate`` per second);
    the seconds it took."""
    import trio

    from loomk.cluster._bench_kernel import payload
    from loomk.events import Event

    started = time.perf_counter()
    if rate is None:
        for index in range(size):
            await publish(topic, Event("reading", payload(round_no, index)))
    else:
        start, interval = trio.current_time(), 1.0 / rate
        for index in range(size):
            await trio.sleep_until(start + index * interval)
            await publish(topic, Event("reading", payload(round_no, index)))
    return time.perf_counter() - started


async def _in_process(best: _Best, events: int, paced: int, rate: int) -> None:
    import loomk
    from loomk.cluster._bench_kernel import Rounds

    rounds = Rounds([events, paced])

    @loomk.agent("bench-sink", topics=["bench.>"])
    async def sink(ctx: Any, event: loomk.Event) -> None:
        rounds.mark(event.payload)

    async with loomk.open_kernel(state_temporary=True, cluster_nats_url="") as kernel:
        await kernel.spawn(sink)
        publish_s = await _publish_rounds(kernel.bus.publish, CORE_TOPIC, 0, events, None)
        best.rate("bus", events, await rounds.wait(0), publish_s)
        await _publish_rounds(kernel.bus.publish, CORE_TOPIC, 1, paced, rate)
        best.paced("bus", rate, paced, await rounds.wait(1))


async def _raw_latency(url: str, paced: int, rate: int) -> dict[str, Any]:
    """nats-py alone: a subscriber process, and paced publishes from this one (asyncio)."""
    import nats
    import trio_asyncio

    from loomk.cluster._bench_kernel import paced_publish

    command = ["raw", url, RAW_SUBJECT, str(paced)]
    async with _Child(command) as child, trio_asyncio.open_loop():
        await child.line(_READY_S)
        nc = await trio_asyncio.aio_as_trio(nats.connect)(url)
        try:
            await trio_asyncio.aio_as_trio(paced_publish)(nc.publish, RAW_SUBJECT, 0, paced, rate)
            await trio_asyncio.aio_as_trio(nc.flush)()
        finally:
            await trio_asyncio.aio_as_trio(nc.close)()
        return await child.line(_ROUND_S)


async def _across(
    best: _Best, url: str, attempt: int, events: int, js_events: int, paced: int, rate: int
) -> None:
    """Two kernels: this one publishes, the child's agent counts (see _bench_kernel)."""
    import trio

    import loomk
    from loomk.cluster import join
    from loomk.cluster._bench_kernel import ACK_WAIT_S, SHARE

    prefix = f"bench{attempt}x{os.getpid()}"  # fresh streams and consumers for every run
    rounds = [
        ("loomk core", CORE_TOPIC, events, None),
        ("loomk core", CORE_TOPIC, paced, rate),
        ("loomk js", JS_TOPIC, js_events, None),
        ("loomk js", JS_TOPIC, paced, rate),
    ]
    specs = [f"{'core' if 'core' in side else 'js'}:{size}" for side, _, size, _ in rounds]
    command = ["kernel", url, f"bench-b{attempt}", prefix, *specs]
    async with (
        _Child(command) as child,
        loomk.open_kernel(
            state_temporary=True, cluster_nats_url="", cluster_node=f"bench-a{attempt}"
        ) as kernel,
        join(kernel, url, share=SHARE, prefix=prefix, ack_wait_s=ACK_WAIT_S) as link,
    ):
        with trio.fail_after(_READY_S):
            await link.wait_connected()
        await child.line(_READY_S)
        for number, (side, topic, size, pace) in enumerate(rounds):
            publish_s = await _publish_rounds(kernel.bus.publish, topic, number, size, pace)
            result = await child.line(_ROUND_S)
            if pace is None:
                best.rate(side, size, result, publish_s)
            else:
                best.paced(side, rate, size, result)


class _Child:
    """A :mod:`loomk.cluster._bench_kernel` process whose JSON lines are read in turn;
    killed on the way out if it has not ended."""

    def __init__(self, args: list[str]) -> None:
        self.args = [sys.executable, "-m", "loomk.cluster._bench_kernel", *args]
        self.buffer = bytearray()
        self.process: Any = None

    async def __aenter__(self) -> _Child:
        import trio

        self.process = await trio.lowlevel.open_process(self.args, stdout=subprocess.PIPE)
        return self

    async def line(self, timeout_s: float) -> dict[str, Any]:
        """The next JSON object the child prints (other output is skipped)."""
        import trio

        from loomk.cluster._bench_baseline import read_line

        with trio.fail_after(timeout_s):
            while True:
                text = await read_line(self.process.stdout, self.buffer)
                try:
                    line = json.loads(text)
                except ValueError:
                    continue
                if isinstance(line, dict):
                    return line

    async def __aexit__(self, kind: object, *exc: object) -> None:
        import trio

        process = self.process
        with trio.CancelScope(shield=True):
            if kind is None:  # it ends once it has printed its last line
                with trio.move_on_after(10):
                    await process.wait()
            if process.returncode is None:
                process.kill()
                await process.wait()


def format_report(report: ClusterReport) -> str:
    """The report as two plain-text tables, with the ratios and targets."""
    lines = [
        "throughput, one publisher -> one receiver (distinct events/s at the receiver)",
        f"{'side':>13} {'sent':>9} {'received':>9} {'lost':>6} {'dup':>4} "
        f"{'events/s':>10} {'publish/s':>10}",
    ]
    for t in report.throughput:
        lines.append(
            f"{t.side:>13} {t.sent:>9,} {t.received:>9,} {t.lost:>6,} {t.duplicates:>4,} "
            f"{t.events_per_s:>10,.0f} {t.publish_per_s:>10,.0f}"
        )
    lines += [
        "",
        "latency publish -> handler at a fixed rate (microseconds)",
        f"{'side':>13} {'rate/s':>7} {'sent':>6} {'received':>9} {'p50':>8} {'p99':>8} {'max':>9}",
    ]
    for lat in report.latency:
        lines.append(
            f"{lat.side:>13} {lat.rate_per_s:>7,} {lat.sent:>6,} {lat.received:>9,} "
            f"{lat.p50_us:>8.0f} {lat.p99_us:>8.0f} {lat.max_us:>9.0f}"
        )
    targets = report.targets
    lines += [
        "",
        f"loomk core / nats-py core: {report.core_ratio:.2f} (target >= 0.5: "
        f"{'met' if targets['core_half_of_nats_py'] else 'missed'})",
        f"loomk js / nats-py js: {report.js_ratio:.2f}; loomk js "
        f"{report.side('loomk js').events_per_s:,.0f} events/s (target >= 20,000: "
        f"{'met' if targets['js_20k_per_s'] else 'missed'}), nothing lost: "
        f"{'yes' if targets['js_nothing_lost'] else 'NO'}",
    ]
    return "\n".join(lines)
