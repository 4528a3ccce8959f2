"""One kernel of a cluster in its own process, driven by ``test_processes.py`` over its pipes.

Usage::

    python cluster_child.py --nats URL --node NAME --data-dir DIR --share SHARE
        [--record PATTERN ...] [--expect-peers a,b] [--ack-wait 1] [--progress 100]

It opens a kernel on ``DIR`` (persistent state: a killed child restarted on the same
directory and node resumes its JetStream consumers) with the ``cluster`` edge joined to
``URL`` as ``NAME``, sharing ``SHARE`` (``cluster_share``'s form). Its agent
``recorder-NAME`` listens to the ``--record`` patterns and, for each event, adds one to the
state key ``seen/<payload>``: a key holding more than 1 is an event handled twice *after*
its first handling was committed (a duplicate); a handling lost with a killed process
leaves no trace and is not one. The agent then emits ``recorder.done``, which the outbox
holds until the state is committed, so the count of ``recorder.done`` (plus the keys found
at start) is the number of ids *committed*.

Stdout carries one JSON object per line (one write(2) each):

- ``{"ready": {"node", "restored"}}`` once the link is connected and every ``--expect-peers``
  kernel has been heard from with its recorder listed in this kernel's directory;
- ``{"received": N}`` every ``--progress`` committed ids;
- answers to commands read on stdin, one per line (each runs as its own task):

  - ``publish TOPIC COUNT LABEL PER_S``: publish ``COUNT`` events on ``TOPIC`` with payloads
    ``LABEL-0`` ... at about ``PER_S`` a second -> ``{"published": LABEL, "count": COUNT}``;
  - ``wait PREFIX COUNT``: -> ``{"waited": PREFIX, "count": n}`` once ``n >= COUNT``
    committed ids start with ``PREFIX``;
  - ``disconnected`` / ``connected``: -> ``{"disconnected": STATS}`` /
    ``{"connected": STATS}`` once the link (and its stats) are in that state;
  - ``report``: -> ``{"report": {"ids", "duplicates", "directory", "stats"}}``: the
    committed ids, those counted more than once, the directory's remote agents
    (``{"agent", "node"}``) and the link's counters.

End of stdin stops the kernel gracefully. Logs (warnings and up) go to stderr.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
from pathlib import Path
from typing import Any

import trio

import loomk
from loomk.cluster.edge import EDGE
from loomk.cluster.link import ClusterLink

PREFIX = "seen/"
DONE_TOPIC = "recorder.done"


def say(**fields: Any) -> None:
    """One JSON line on stdout, in one write(2): never half a line in the pipe."""
    os.write(1, (json.dumps(fields, separators=(",", ":")) + "\n").encode())


class Child:
    def __init__(self, kernel: loomk.Kernel, args: argparse.Namespace) -> None:
        self.kernel = kernel
        self.args = args
        self.agent_id = f"recorder-{args.node}"
        self.link: ClusterLink = kernel.edge("cluster")  # type: ignore[assignment]
        stored = kernel.state.load(self.agent_id)
        self.committed: list[str] = [key[len(PREFIX) :] for key in stored if key.startswith(PREFIX)]
        self.restored = len(self.committed)
        self.changed = trio.Event()

    def recorder(self) -> loomk.Agent:
        @loomk.agent(self.agent_id, topics=list(self.args.record))
        async def record(ctx: loomk.Context, event: loomk.Event) -> None:
            label = event.payload.decode()
            key = PREFIX + label
            ctx.state[key] = ctx.state.get(key, 0) + 1
            await ctx.emit(DONE_TOPIC, loomk.Event("done", event.payload))

        return record

    async def count_done(self, subscription: Any) -> None:
        progress = self.args.progress
        async for _topic, event in subscription:
            self.committed.append(event.payload.decode())
            if len(self.committed) % progress == 0:
                say(received=len(self.committed))
            self.changed.set()
            self.changed = trio.Event()

    async def wait_ready(self) -> None:
        link = self.link
        await link.wait_connected()
        expected = [peer for peer in self.args.expect_peers.split(",") if peer]
        while not all(self._listed(peer) for peer in expected):
            await link.wait_changed()
        say(ready={"node": link.node, "restored": self.restored})

    def _listed(self, peer: str) -> bool:
        info = self.kernel.directory.get(f"recorder-{peer}")
        return info is not None and info.metadata.get("loomk.node") == peer

    def report(self) -> dict[str, Any]:
        stored = self.kernel.state.load(self.agent_id)
        seen = {key[len(PREFIX) :]: n for key, n in stored.items() if key.startswith(PREFIX)}
        directory = [
            {"agent": info.agent_id, "node": info.metadata.get("loomk.node")}
            for info in self.kernel.directory.all()
            if info.metadata.get("loomk.remote") == "cluster"
        ]
        return {
            "ids": sorted(seen),
            "duplicates": sorted(label for label, n in seen.items() if n != 1),
            "directory": directory,
            "stats": self.stats(),
        }

    async def wait_for(self, prefix: str, count: int) -> int:
        """Wait until ``count`` committed ids start with ``prefix``; how many do then."""
        n, looked = 0, 0
        while True:
            for label in self.committed[looked:]:
                n += label.startswith(prefix)
            looked = len(self.committed)
            if n >= count:
                return n
            await self.changed.wait()

    def stats(self) -> dict[str, Any]:
        return dataclasses.asdict(self.link.stats())

    async def command(self, line: str) -> None:
        words = line.split()
        match words:
            case ["publish", topic, count, label, per_s]:
                await self.publish(topic, int(count), label, float(per_s))
                say(published=label, count=int(count))
            case ["wait", prefix, count]:
                n = await self.wait_for(prefix, int(count))
                say(waited=prefix, count=n)
            case ["disconnected"]:
                while self.link.connected:
                    await self.link.wait_changed()
                say(disconnected=self.stats())
            case ["connected"]:
                # wait_connected() can return a moment before the link's stats count the
                # reconnection (nats-py is connected before its reconnected callback runs):
                # wait until both agree (reported to the lead)
                await self.link.wait_connected()
                while not self.link.stats().link.connected:
                    await self.link.wait_changed()
                say(connected=self.stats())
            case ["report"]:
                say(report=self.report())
            case _:
                raise ValueError(f"unknown command {line!r}")

    async def publish(self, topic: str, count: int, label: str, per_s: float) -> None:
        """``count`` events at a steady pace: a pause every 10 (pacing, not synchronising)."""
        for index in range(count):
            await self.kernel.bus.publish(topic, loomk.Event("ev", f"{label}-{index}".encode()))
            if index % 10 == 9:
                await trio.sleep(10 / per_s)


async def read_commands(child: Child, nursery: trio.Nursery) -> None:
    stdin = trio.lowlevel.FdStream(os.dup(0))
    buffer = b""
    async with stdin:
        while chunk := await stdin.receive_some():
            buffer += chunk
            *lines, buffer = buffer.split(b"\n")
            for line in lines:
                if line.strip():
                    nursery.start_soon(child.command, line.decode())


async def main(args: argparse.Namespace) -> None:
    async with loomk.open_kernel(
        edges=[EDGE],
        data_dir=Path(args.data_dir),
        state_temporary=False,
        cluster_nats_url=args.nats,
        cluster_node=args.node,
        cluster_share=args.share,
        cluster_ack_wait_s=args.ack_wait,
        log_level="warning",
    ) as kernel:
        child = Child(kernel, args)
        done = kernel.bus.subscribe(DONE_TOPIC)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(child.count_done, done)
            await kernel.spawn(child.recorder())
            await child.wait_ready()
            await read_commands(child, nursery)  # until stdin ends
            nursery.cancel_scope.cancel()


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--nats", required=True)
    parser.add_argument("--node", required=True)
    parser.add_argument("--data-dir", required=True)
    parser.add_argument("--share", required=True)
    parser.add_argument("--record", action="append", default=[])
    parser.add_argument("--expect-peers", default="")
    parser.add_argument("--ack-wait", type=float, default=1.0)
    parser.add_argument("--progress", type=int, default=100)
    return parser.parse_args(argv)


if __name__ == "__main__":
    trio.run(main, parse())
