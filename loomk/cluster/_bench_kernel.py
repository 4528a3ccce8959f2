"""The far side of ``loomk bench cluster``: a kernel (or bare nats-py) in a process of its own.

Run as ``python -m loomk.cluster._bench_kernel MODE ...``; each mode prints JSON lines on
stdout (anything else there is not for the benchmark):

- ``kernel URL NODE PREFIX ROUND...``: a kernel named NODE joins URL with subject prefix
  PREFIX, sharing ``bench.core.>`` over core NATS and ``bench.js.>`` over JetStream, with an
  agent on ``bench.>``. It prints ``{"ready": true}`` once joined (its subscriptions and its
  durable consumer exist), then one result line per ROUND (``core:COUNT`` or ``js:COUNT``),
  in order: once COUNT distinct events of that round arrived, or after ``IDLE_S`` without
  one (core NATS may drop).
- ``raw URL SUBJECT COUNT``: nats-py alone (asyncio) subscribes to SUBJECT, prints
  ``{"ready": true}``, then one result line the same way.

Every event's payload starts with :data:`HEAD` (round, index, publish time in
``time.time_ns()``: the wall clock is the one clock both processes share), so the receiver
counts distinct events and duplicates, and measures publish -> handler latency. A result
line holds ``received`` (deliveries), ``unique``, ``duplicates``, ``seconds`` (first to last
delivery), and latency percentiles in microseconds.
"""

from __future__ import annotations

import asyncio
import json
import struct
import sys
import time
from collections.abc import Callable
from typing import Any

import trio

__all__ = ["HEAD", "SHARE", "Tally", "payload", "round_number"]

HEAD = struct.Struct(">BIq")
"""Round, index and publish time (``time.time_ns()``) at the start of every payload."""
PAYLOAD_BYTES = 100
"""The size of every payload (the nats-py baseline's)."""
_PAD = b"x" * (PAYLOAD_BYTES - HEAD.size)
SHARE = "bench.core.>=realtime, bench.js.>=batched"
"""What both kernels share: core NATS for one pattern, JetStream for the other."""
IDLE_S = 2.0
"""A round that has seen events ends after this long without one."""
FIRST_EVENT_S = 60.0
"""A round that has seen none gives up after this long."""
ACK_WAIT_S = 5.0


def payload(round_no: int, index: int) -> bytes:
    """A benchmark payload: its round, its index, the time now, padding."""
    return HEAD.pack(round_no, index, time.time_ns()) + _PAD


def round_number(data: bytes) -> int:
    """The round a payload belongs to."""
    return data[0]


class Tally:
    """What one round received: distinct events, duplicates, first and last arrival, and
    each event's publish -> arrival latency."""

    def __init__(self, count: int) -> None:
        self.count = count
        self.received = 0
        self.seen: set[int] = set()
        self.first = 0.0
        self.last = 0.0
        self.latencies_ns: list[int] = []

    def mark(self, data: bytes) -> bool:
        """Count one delivery; True once every event of the round has come."""
        now_ns = time.time_ns()
        now = time.perf_counter()
        _, index, stamp = HEAD.unpack_from(data)
        if not self.received:
            self.first = now
        self.last = now
        self.received += 1
        if index not in self.seen:
            self.seen.add(index)
            self.latencies_ns.append(now_ns - stamp)
        return len(self.seen) >= self.count

    def result(self) -> dict[str, Any]:
        """The round's figures (JSON-ready)."""
        latencies = sorted(self.latencies_ns)

        def at(fraction: float) -> float:
            if not latencies:
                return 0.0
            return latencies[min(len(latencies) - 1, int(len(latencies) * fraction))] / 1000

        return {
            "count": self.count,
            "received": self.received,
            "unique": len(self.seen),
            "duplicates": self.received - len(self.seen),
            "seconds": self.last - self.first,
            "p50_us": at(0.5),
            "p99_us": at(0.99),
            "max_us": latencies[-1] / 1000 if latencies else 0.0,
        }


def _emit(line: dict[str, Any]) -> None:
    print(json.dumps(line), flush=True)


async def wait_round(tally: Tally, done: trio.Event) -> None:
    """Until ``done``, or ``IDLE_S`` without a delivery once some came (``FIRST_EVENT_S``
    before the first)."""
    give_up = trio.current_time() + FIRST_EVENT_S
    while not done.is_set():
        seen = tally.received
        with trio.move_on_after(IDLE_S):
            await done.wait()
        if tally.received == seen and (seen or trio.current_time() >= give_up):
            return


class Rounds:
    """The rounds one receiver counts, told apart by the round number in each payload."""

    def __init__(self, counts: list[int]) -> None:
        self.tallies = [Tally(count) for count in counts]
        self.done = [trio.Event() for _ in counts]
        self.strays = 0

    def mark(self, data: bytes) -> None:
        """Count one delivery in its round."""
        number = round_number(data)
        if number >= len(self.tallies):
            self.strays += 1
            return
        if self.tallies[number].mark(data):
            self.done[number].set()

    async def wait(self, number: int) -> dict[str, Any]:
        """Round ``number``'s result, once it is over."""
        await wait_round(self.tallies[number], self.done[number])
        return self.tallies[number].result()


async def _kernel(url: str, node: str, prefix: str, specs: list[str]) -> None:
    import loomk
    from loomk.cluster import join

    counts = [int(spec.split(":", 1)[1]) for spec in specs]
    rounds = Rounds(counts)

    @loomk.agent("bench-sink", topics=["bench.>"])
    async def sink(ctx: Any, event: loomk.Event) -> None:
        rounds.mark(event.payload)

    async with loomk.open_kernel(state_temporary=True, cluster_node=node) as kernel:
        await kernel.spawn(sink)
        async with join(
            kernel, url, node=node, share=SHARE, prefix=prefix, ack_wait_s=ACK_WAIT_S
        ) as link:
            with trio.fail_after(30):
                await link.wait_connected()
            _emit({"ready": True})
            for number, spec in enumerate(specs):
                result = await rounds.wait(number)
                stats = link.stats()
                _emit(
                    result
                    | {
                        "round": spec,
                        "lagged": stats.lagged,
                        "redelivered": stats.redelivered,
                        "strays": rounds.strays,
                    }
                )


async def _raw(url: str, subject: str, count: int) -> None:
    import nats

    nc = await nats.connect(url)
    tally = Tally(count)
    done = asyncio.Event()

    async def on_message(msg: Any) -> None:
        if tally.mark(msg.data):
            done.set()

    await nc.subscribe(subject, cb=on_message, pending_msgs_limit=max(count, 65536))
    await nc.flush()
    _emit({"ready": True})
    give_up = time.monotonic() + FIRST_EVENT_S
    while not done.is_set():
        seen = tally.received
        try:
            await asyncio.wait_for(done.wait(), IDLE_S)
        except TimeoutError:
            if tally.received == seen and (seen or time.monotonic() >= give_up):
                break
    _emit(tally.result())
    await nc.close()


async def paced_publish(
    publish: Callable[[str, bytes], Any], subject: str, round_no: int, count: int, rate: float
) -> None:
    """(asyncio) Publish ``count`` payloads on ``subject`` at ``rate`` per second with
    nats-py's ``publish``: the raw side of the latency comparison."""
    loop = asyncio.get_running_loop()
    start = loop.time()
    interval = 1.0 / rate
    for index in range(count):
        delay = start + index * interval - loop.time()
        if delay > 0:
            await asyncio.sleep(delay)
        await publish(subject, payload(round_no, index))


def main(argv: list[str] | None = None) -> None:
    """Run one mode (see the module)."""
    args = sys.argv[1:] if argv is None else argv
    if len(args) >= 4 and args[0] == "kernel":
        trio.run(_kernel, args[1], args[2], args[3], args[4:])
    elif len(args) == 4 and args[0] == "raw":
        asyncio.run(_raw(args[1], args[2], int(args[3])))
    else:
        sys.exit(
            "usage: python -m loomk.cluster._bench_kernel "
            "kernel URL NODE PREFIX {core,js}:COUNT... | raw URL SUBJECT COUNT"
        )


if __name__ == "__main__":
    main()
