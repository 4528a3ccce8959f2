"""``loomk bench batch``: batch handlers against the per-event baselines they are for.

Two measurements, each beside a baseline run the same way in the same process:

- **delivery 1 -> 1**: a publisher makes an :class:`~loomk.Event` per delivery and
  publishes it to one agent whose ``on_batch`` counts what it gets. Two baselines, both a
  raw trio memory channel whose consumer calls an async handler per event, each side making
  its events: the way per-event consumers are written (``await send`` and ``async for``,
  a scheduler round trip per event, which is what batch handlers remove), and the fastest
  drain (``send_nowait`` and ``receive_nowait`` until empty, the bus bench's baseline).
- **acknowledged state writes**: agents whose ``on_batch`` writes ``keys`` values to
  ``ctx.state`` per event, a write counting once its batch's commit is acknowledged (sync
  off). Baseline: raw plyvel batches of 1,000 puts of the very keys and stored values.
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import trio
import trio.testing

from loomk.agents.agent import Agent
from loomk.agents.context import Context
from loomk.bench._shared import PAYLOAD, TOPIC, Counter, best_of
from loomk.bench.bus import channel_throughput
from loomk.bench.state import VALUE, raw_batches
from loomk.events import Event
from loomk.kernel import open_kernel

__all__ = ["BatchReport", "format_report", "run_batch_bench"]


@dataclass(frozen=True, slots=True)
class BatchResult:
    """One measurement: loomk's rate, its baseline's, and what they are."""

    what: str
    count: int
    loomk_per_s: float
    baseline: str
    baseline_per_s: float

    @property
    def ratio(self) -> float:
        """loomk's rate over the baseline's."""
        return self.loomk_per_s / self.baseline_per_s


class _BatchCounter(Agent):
    topics = (TOPIC,)

    def __init__(self, agent_id: str) -> None:
        super().__init__(agent_id)
        self.count = 0

    async def on_batch(self, ctx: Context, events: list[Event]) -> None:
        self.count += len(events)


class _BatchWriter(Agent):
    topics = ("bench.state",)

    def __init__(self, agent_id: str, keys: int) -> None:
        super().__init__(agent_id)
        self.keys = keys
        self.done = 0

    async def on_batch(self, ctx: Context, events: list[Event]) -> None:
        state = ctx.state
        keys = self.keys
        for _ in events:
            base = self.done * keys
            for i in range(keys):
                state[f"k{base + i}"] = VALUE
            self.done += 1


async def _batch_delivery(events: int) -> float:
    async with open_kernel(env={}, log_level="error", state_temporary=True) as kernel:
        counter = _BatchCounter("counter")
        handle = await kernel.spawn(counter)
        await trio.testing.wait_all_tasks_blocked()
        publish = kernel.bus.publish
        started = time.perf_counter()
        for _ in range(events):
            await publish(TOPIC, Event("reading", PAYLOAD))
        while handle.handled < events:
            await trio.testing.wait_all_tasks_blocked()
        elapsed = time.perf_counter() - started
        assert counter.count == events, "the batch handler lost events in the benchmark"
    return events / elapsed


async def _channel_per_event(events: int) -> float:
    """The per-event consumer as usually written: ``async for`` over a channel."""
    send, receive = trio.open_memory_channel[Event](1024)
    counter = Counter()

    async def consume() -> None:
        async for event in receive:
            await counter.handle(TOPIC, event)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(consume)
        await trio.testing.wait_all_tasks_blocked()
        started = time.perf_counter()
        for _ in range(events):
            await send.send(Event("reading", PAYLOAD))
        await send.aclose()
    elapsed = time.perf_counter() - started
    assert counter.count == events, "the baseline lost events"
    return events / elapsed


async def _batch_writes(path: Path, *, agents: int, events: int, keys: int) -> float:
    async with open_kernel(env={}, log_level="error", data_dir=path, state_sync=False) as kernel:
        writers = [_BatchWriter(f"writer-{i}", keys) for i in range(agents)]
        handles = await kernel.spawn_many(writers)
        started = time.perf_counter()
        event = Event("write", b"", metadata={"sender": "agent.bench"})
        for _ in range(events):
            await kernel.bus.publish("bench.state", event)
        for handle in handles:  # ``handled`` counts an event once its commit is acknowledged
            while handle.handled < events:
                await trio.sleep(0.001)  # the last commits may be in the writer's thread
        elapsed = time.perf_counter() - started
    return agents * events * keys / elapsed


@dataclass(frozen=True, slots=True)
class BatchReport:
    """Everything ``loomk bench batch`` measured."""

    results: list[BatchResult]

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready figures."""
        return {"results": [asdict(r) | {"ratio": r.ratio} for r in self.results]}


def run_batch_bench(
    *,
    deliveries: int = 300_000,
    agents: int = 200,
    events: int = 100,
    keys: int = 5,
    repeats: int = 3,
    progress: Callable[[str], None] = print,
) -> BatchReport:
    """Measure delivery through a batch handler and state writes from batch handlers."""
    progress(
        f"delivery 1 -> 1: {deliveries:,} events, batch handler and channel, best of {repeats}"
    )
    batch = best_of(repeats, lambda: trio.run(_batch_delivery, deliveries))
    per_event = best_of(repeats, lambda: trio.run(_channel_per_event, deliveries))
    drained = best_of(repeats, lambda: trio.run(channel_throughput, 1, deliveries))
    writes = agents * events * keys
    with tempfile.TemporaryDirectory(prefix="loomk-bench-batch-") as scratch:
        root = Path(scratch)
        progress(f"state: {agents} agents x {events} events x {keys} keys, and raw plyvel")
        raw = raw_batches(root / "raw", agents, events, keys)
        ours = trio.run(
            lambda: _batch_writes(root / "loomk", agents=agents, events=events, keys=keys)
        )
    return BatchReport(
        [
            BatchResult(
                "delivery 1 -> 1", deliveries, batch, "channel, async for per event", per_event
            ),
            BatchResult(
                "delivery 1 -> 1", deliveries, batch, "channel, receive_nowait drain", drained
            ),
            BatchResult("state writes, sync off", writes, ours, "plyvel WriteBatch(1000)", raw),
        ]
    )


def format_report(report: BatchReport) -> str:
    """The report as a plain-text table."""
    lines = [
        "batch handlers (on_batch) against per-event baselines",
        f"{'':<24} {'count':>9} {'loomk/s':>11}  {'baseline':<30} {'baseline/s':>11} {'ratio':>6}",
    ]
    for r in report.results:
        lines.append(
            f"{r.what:<24} {r.count:>9,} {r.loomk_per_s:>11,.0f}  {r.baseline:<30} "
            f"{r.baseline_per_s:>11,.0f} {r.ratio:>6.2f}"
        )
    return "\n".join(lines)
