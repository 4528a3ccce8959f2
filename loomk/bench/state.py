"""``loomk bench state``: acknowledged state writes per second, beside raw plyvel.

A write counts once its commit is acknowledged (durable per the ``sync`` setting). loomk's
figure comes from agents: each handler writes ``keys`` values to ``ctx.state``; the runtime
commits an agent's consecutive handlers in groups, and many agents' commits share one
WriteBatch. The baselines are
raw plyvel in the same run: 1,000-put WriteBatches without sync (the ceiling for unsynced
writes) and one fsync'd put per write (what durability costs without group commit).
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import plyvel
import trio
import trio.testing

from loomk.agents.agent import Agent
from loomk.agents.context import Context
from loomk.events import Event
from loomk.kernel import open_kernel
from loomk.state.service import StateService

VALUE = b"v" * 200


@dataclass(frozen=True, slots=True)
class StateResult:
    """Acknowledged writes/s through agents and the raw plyvel baselines of the same run."""

    sync: bool
    writes: int
    loomk_per_s: float
    baseline: str
    baseline_per_s: float

    @property
    def ratio(self) -> float:
        """loomk's rate over the baseline's."""
        return self.loomk_per_s / self.baseline_per_s


class _Writer(Agent):
    topics = ("bench.state",)

    def __init__(self, agent_id: str, keys: int) -> None:
        super().__init__(agent_id)
        self.keys = keys
        self.done = 0

    async def on_event(self, ctx: Context, event: Event) -> None:
        base = self.done * self.keys
        for i in range(self.keys):
            ctx.state[f"k{base + i}"] = VALUE
        self.done += 1


async def _loomk_writes(path: Path, *, sync: bool, agents: int, events: int, keys: int) -> float:
    async with open_kernel(data_dir=path, state_sync=sync) as kernel:
        writers = [_Writer(f"writer-{i}", keys) for i in range(agents)]
        await kernel.spawn_many(writers)
        started = time.perf_counter()
        event = Event("write", b"", metadata={"sender": "agent.bench"})
        for _ in range(events):
            await kernel.bus.publish("bench.state", event)
        for writer in writers:  # ``handled`` counts a handler once its commit is acknowledged
            handle = kernel.agents.get(writer.agent_id)
            while handle.handled < events:
                await trio.sleep(0.001)  # the last commits may be in the fsync thread
        elapsed = time.perf_counter() - started
    return agents * events * keys / elapsed


def raw_batches(path: Path, agents: int, events: int, keys: int) -> float:
    """The same keys and stored values as the agents write, in 1,000-put batches."""
    stored = b"\x00" + VALUE  # how ctx.state stores bytes
    keys_in_order = [
        StateService.state_key(f"writer-{a}", f"k{n}")
        for n in range(events * keys)
        for a in range(agents)
    ]
    db = plyvel.DB(str(path), create_if_missing=True)
    try:
        started = time.perf_counter()
        for offset in range(0, len(keys_in_order), 1000):
            with db.write_batch() as batch:
                for key in keys_in_order[offset : offset + 1000]:
                    batch.put(key, stored)
        return len(keys_in_order) / (time.perf_counter() - started)
    finally:
        db.close()


def _raw_fsync(path: Path, writes: int) -> float:
    db = plyvel.DB(str(path), create_if_missing=True)
    try:
        started = time.perf_counter()
        for i in range(writes):
            db.put(f"k{i}".encode(), VALUE, sync=True)
        return writes / (time.perf_counter() - started)
    finally:
        db.close()


@dataclass(frozen=True, slots=True)
class StateReport:
    """Everything ``loomk bench state`` measured."""

    results: list[StateResult]

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready figures."""
        return {"results": [asdict(r) | {"ratio": r.ratio} for r in self.results]}


def run_state_bench(
    *,
    agents: int = 200,
    events: int = 100,
    keys: int = 5,
    fsync_writes: int = 500,
    progress: Callable[[str], None] = print,
) -> StateReport:
    """Measure acknowledged state writes with sync off and on, beside raw plyvel."""
    writes = agents * events * keys
    with tempfile.TemporaryDirectory(prefix="loomk-bench-state-") as scratch:
        root = Path(scratch)
        progress(f"raw plyvel: {writes:,} puts in 1,000-put batches, {fsync_writes} fsync'd puts")
        batches = raw_batches(root / "raw-batches", agents, events, keys)
        fsyncs = _raw_fsync(root / "raw-fsync", fsync_writes)
        progress(f"loomk, sync off: {agents} agents x {events} handlers x {keys} keys")
        unsynced = trio.run(
            lambda: _loomk_writes(root / "off", sync=False, agents=agents, events=events, keys=keys)
        )
        progress(f"loomk, sync on: {agents} agents x {events} handlers x {keys} keys")
        synced = trio.run(
            lambda: _loomk_writes(root / "on", sync=True, agents=agents, events=events, keys=keys)
        )
    return StateReport(
        [
            StateResult(False, writes, unsynced, "plyvel WriteBatch(1000), no sync", batches),
            StateResult(True, writes, synced, "plyvel put(sync=True) per write", fsyncs),
        ]
    )


def format_report(report: StateReport) -> str:
    """The report as a plain-text table."""
    lines = [
        "acknowledged state writes/s (agents write ctx.state; commits grouped per agent)",
        f"{'sync':>5} {'writes':>9} {'loomk':>10}  {'baseline':<36} "
        f"{'baseline/s':>11} {'ratio':>6}",
    ]
    for r in report.results:
        lines.append(
            f"{'on' if r.sync else 'off':>5} {r.writes:>9,} {r.loomk_per_s:>10,.0f}  "
            f"{r.baseline:<36} {r.baseline_per_s:>11,.0f} {r.ratio:>6.2f}"
        )
    return "\n".join(lines)
