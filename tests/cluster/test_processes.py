"""Kernels in separate processes share one bus through a real ``nats-server`` (issue #16).

Each kernel is a ``cluster_child.py`` process: its recorder agent commits one state key per
event payload (a key counted twice is a duplicate) and the child answers commands on its
pipes (see its docstring). The tests check what the cluster promises between processes:

- events go both ways, realtime (core NATS) and batched (JetStream), each to every other
  kernel once, and the directories list the other kernels' agents;
- a kernel SIGKILLed in the middle of batched traffic and restarted on its data directory
  ends with every event committed exactly once (JetStream redelivers what was not
  acknowledged, the stream mark keeps what was from being handled again);
- a NATS server restart: local traffic flows meanwhile, batched events published during the
  outage wait in the link's backlog and arrive once it is back, the links reconnect, and
  batched traffic flows again.

Each test ends by waiting until every JetStream consumer has nothing pending or unacknowledged
(nothing more can be delivered) and then checks that no id was committed twice.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator, Iterable
from contextlib import AsyncExitStack, asynccontextmanager, suppress
from pathlib import Path
from typing import Any

import nats
import pytest
import trio
import trio_asyncio

from loomk.cluster._durable import stream_name
from loomk.cluster.nats_server import NatsServer

pytestmark = pytest.mark.e2e

CHILD = Path(__file__).with_name("cluster_child.py")
SHARE = "rt.>=realtime, bt.>=batched"
RECORD = ("rt.>", "bt.>")
BATCHED = ("bt.>",)  # the batched patterns of SHARE: their consumers are checked for drain
START_TIMEOUT_S = 20  # a child starts python, opens its kernel, connects, hears its peers
STEP_TIMEOUT_S = 20


def labels(label: str, count: int) -> set[str]:
    """The payloads ``publish ... COUNT LABEL`` sends."""
    return {f"{label}-{index}" for index in range(count)}


class Child:
    """A running ``cluster_child.py``: commands in, JSON lines out."""

    def __init__(self, node: str, process: trio.Process, stderr_path: Path) -> None:
        self.node = node
        self.process = process
        self.stderr_path = stderr_path
        self.lines: list[dict[str, Any]] = []  # read, not yet taken by expect()
        self._buffer = b""
        self.received = 0  # the last {"received": N}

    async def send(self, command: str) -> None:
        assert self.process.stdin is not None
        await self.process.stdin.send_all((command + "\n").encode())

    async def expect(self, key: str, value: Any = None, *, timeout: float = STEP_TIMEOUT_S) -> Any:
        """The next line holding ``key`` (with ``value``, if given, or a dict whose first
        entry is ``value``); other lines are kept for later calls."""
        with trio.fail_after(timeout):
            while True:
                for index, line in enumerate(self.lines):
                    if key in line and (value is None or line[key] == value):
                        del self.lines[index]
                        return line
                await self._read()

    async def request(self, command: str, key: str, value: Any = None) -> Any:
        """Send ``command`` and return its answer line."""
        await self.send(command)
        return await self.expect(key, value)

    async def report(self) -> dict[str, Any]:
        line = await self.request("report", "report")
        return line["report"]  # type: ignore[no-any-return]

    async def wait(self, label: str, count: int) -> None:
        """Until ``count`` ids of ``label`` are committed in this child (on timeout, fails
        saying what it has)."""
        try:
            await self.request(f"wait {label}- {count}", "waited", f"{label}-")
        except trio.TooSlowError:
            report = await self.report()
            have = sorted(i for i in report["ids"] if i.startswith(f"{label}-"))
            raise AssertionError(
                f"{self.node} has {len(have)} of {count} {label} ids (missing "
                f"{sorted(set(range(count)) - {int(i.rsplit('-', 1)[1]) for i in have})[:200]}); "
                f"duplicates "
                f"{report['duplicates'][:20]}; stats {report['stats']}"
            ) from None

    async def publish(self, topic: str, label: str, count: int, per_s: float = 1000) -> None:
        """Start publishing (the answer, ``published``, is read by :meth:`published`)."""
        await self.send(f"publish {topic} {count} {label} {per_s}")

    async def published(self, label: str) -> None:
        await self.expect("published", label)

    async def wait_received(self, at_least: int) -> int:
        """Until the child says it has committed ``at_least`` ids."""
        while self.received < at_least:
            line = await self.expect("received")
            self.received = line["received"]
        return self.received

    async def _read(self) -> None:
        assert self.process.stdout is not None
        chunk = await self.process.stdout.receive_some()
        if not chunk:
            raise AssertionError(f"child {self.node} ended (status {self.process.poll()})")
        self._buffer += chunk
        *complete, self._buffer = self._buffer.split(b"\n")
        self.lines += [json.loads(line) for line in complete]

    def stderr(self) -> str:
        return self.stderr_path.read_text(errors="replace")


@asynccontextmanager
async def open_child(
    tmp_path: Path,
    url: str,
    node: str,
    *,
    peers: Iterable[str],
    record: Iterable[str] = RECORD,
    run: int = 0,
) -> AsyncIterator[Child]:
    """Start the child ``node`` (data in ``tmp_path/node``); on the way out close its stdin
    (it stops gracefully), killing it if it has not ended within 5 s or was asked to die.
    Its stderr is printed when the block fails (pytest shows it with the failure)."""
    data_dir = tmp_path / node
    stderr_path = tmp_path / f"{node}.{run}.stderr"
    command = [sys.executable, str(CHILD), "--nats", url, "--node", node]
    command += ["--data-dir", str(data_dir), "--share", SHARE, "--ack-wait", "1"]
    command += ["--expect-peers", ",".join(peers)]
    for pattern in record:
        command += ["--record", pattern]
    env = {k: v for k, v in os.environ.items() if not k.startswith("LOOMK_")}
    with stderr_path.open("wb") as stderr:
        process = await trio.lowlevel.open_process(
            command,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=stderr,
            env=env,
            cwd=tmp_path,
        )
    child = Child(node, process, stderr_path)
    try:
        yield child
    except BaseException:
        print(f"--- stderr of {node} (run {run}) ---\n{child.stderr()}")
        raise
    finally:
        with trio.CancelScope(shield=True):
            assert process.stdin is not None
            assert process.stdout is not None
            with suppress(trio.BrokenResourceError, trio.ClosedResourceError):
                await process.stdin.aclose()  # end of stdin: the child stops gracefully
            if process.returncode is None:
                with trio.move_on_after(5):
                    await process.wait()
            if process.returncode is None:
                process.kill()
                await process.wait()
            await process.stdout.aclose()


async def start(
    stack: AsyncExitStack, tmp_path: Path, url: str, nodes: list[str], **options: Any
) -> list[Child]:
    """Start one child per node, each expecting all the others; wait until all are ready."""
    children = [
        await stack.enter_async_context(
            open_child(tmp_path, url, node, peers=[n for n in nodes if n != node], **options)
        )
        for node in nodes
    ]
    for child in children:
        await child.expect("ready", timeout=START_TIMEOUT_S)
    return children


async def wait_drained(url: str, nodes: Iterable[str]) -> None:
    """Until every node's consumer of every batched stream has nothing left to deliver and
    nothing unacknowledged: after that no event can come again (a redelivery would)."""
    names = [stream_name("loomk", pattern) for pattern in BATCHED]
    async with trio_asyncio.open_loop():
        nc = await trio_asyncio.aio_as_trio(nats.connect)(url)
        try:
            js = nc.jetstream()
            info = trio_asyncio.aio_as_trio(js.consumer_info)
            consumer = None
            try:
                with trio.fail_after(STEP_TIMEOUT_S):
                    for name in names:
                        for node in nodes:
                            while True:
                                consumer = await info(name, node)
                                if consumer.num_pending == 0 and consumer.num_ack_pending == 0:
                                    break
                                await trio.sleep(0.05)  # polling the server's counters
            except trio.TooSlowError:
                raise AssertionError(f"a consumer is not drained: {consumer}") from None
        finally:
            await trio_asyncio.aio_as_trio(nc.close)()


def check(report: dict[str, Any], node: str, expected: set[str]) -> None:
    """``node`` committed exactly ``expected``, each once."""
    assert report["duplicates"] == [], f"{node} handled these twice: {report['duplicates']}"
    ids = set(report["ids"])
    assert ids == expected, (
        f"{node}: missing {sorted(expected - ids)[:20]}, unexpected {sorted(ids - expected)[:20]}"
    )


async def test_two_kernels_exchange_realtime_and_batched_events_both_ways(
    nats_server: NatsServer, tmp_path: Path
) -> None:
    """Each kernel receives exactly the other's events (and its own, locally), realtime and
    batched, each once: nothing lost, nothing echoed back, nothing twice."""
    async with AsyncExitStack() as stack:
        a, b = await start(stack, tmp_path, nats_server.url, ["a", "b"])
        for child in (a, b):
            await child.publish("rt.x", f"{child.node}-rt", 100)
            await child.publish("bt.x", f"{child.node}-bt", 100)
        for child in (a, b):
            await child.published(f"{child.node}-rt")
            await child.published(f"{child.node}-bt")
        for child in (a, b):
            for label in ("a-rt", "a-bt", "b-rt", "b-bt"):  # the other's and its own
                await child.wait(label, 100)
        await wait_drained(nats_server.url, ["a", "b"])
        everything = set().union(*(labels(f"{n}-{q}", 100) for n in "ab" for q in ("rt", "bt")))
        for child in (a, b):
            report = await child.report()
            check(report, child.node, everything)
            # what came over NATS is exactly the other kernel's 200 events
            assert report["stats"]["link"]["received"] == 200, report["stats"]
            assert report["stats"]["link"]["sent"] == 200, report["stats"]


async def test_three_kernels_each_event_reaches_the_two_others_once(
    nats_server: NatsServer, tmp_path: Path
) -> None:
    """An event of one kernel reaches the other two once each; every kernel's directory lists
    the other kernels' agents, marked with their node."""
    nodes = ["a", "b", "c"]
    async with AsyncExitStack() as stack:
        children = await start(stack, tmp_path, nats_server.url, nodes)
        a, _, c = children
        await a.publish("rt.x", "a-rt", 30)
        await a.publish("bt.x", "a-bt", 30)
        await c.publish("bt.y", "c-bt", 30)
        for child in children:
            await child.wait("a-rt", 30)
            await child.wait("a-bt", 30)
            await child.wait("c-bt", 30)
        await wait_drained(nats_server.url, nodes)
        expected = labels("a-rt", 30) | labels("a-bt", 30) | labels("c-bt", 30)
        for child in children:
            report = await child.report()
            check(report, child.node, expected)
            remote = {(entry["agent"], entry["node"]) for entry in report["directory"]}
            others = {n for n in nodes if n != child.node}
            assert {(f"recorder-{n}", n) for n in others} <= remote, report["directory"]
            assert {node for _, node in remote} == others, report["directory"]


async def test_kernel_killed_during_batched_traffic_resumes_without_loss_or_duplicate(
    nats_server: NatsServer, tmp_path: Path
) -> None:
    """B is SIGKILLed while A publishes 3000 batched events, then restarted on the same data
    directory and node: in the end B's committed state holds every id exactly once.

    The restarted B gets what the first B never received at once, and what it received
    but had not settled after ack_wait, out of order: each message is acknowledged on its
    own once handled, and what was settled before the kill is recorded with the commit
    that settled it, so nothing is lost and nothing handled twice."""
    total = 3000
    async with AsyncExitStack() as stack:
        b_first = open_child(tmp_path, nats_server.url, "b", peers=["a"], record=["bt.>"])
        b = await stack.enter_async_context(b_first)
        a = await stack.enter_async_context(
            open_child(tmp_path, nats_server.url, "a", peers=["b"], record=["bt.>"])
        )
        for child in (a, b):
            await child.expect("ready", timeout=START_TIMEOUT_S)
        await a.publish("bt.load", "a-bt", total, per_s=1500)
        committed = await b.wait_received(600)
        os.kill(b.process.pid, signal.SIGKILL)
        with trio.fail_after(STEP_TIMEOUT_S):
            await b.process.wait()
        assert b.process.returncode == -signal.SIGKILL

        async with open_child(
            tmp_path, nats_server.url, "b", peers=["a"], record=["bt.>"], run=1
        ) as b_again:
            ready = await b_again.expect("ready", timeout=START_TIMEOUT_S)
            # what the first B said was committed survived the kill
            assert ready["ready"]["restored"] >= committed, ready
            await a.published("a-bt")
            await b_again.wait("a-bt", total)
            await a.wait("a-bt", total)
            await wait_drained(nats_server.url, ["a", "b"])
            check(await b_again.report(), "b", labels("a-bt", total))
            check(await a.report(), "a", labels("a-bt", total))


async def test_nats_server_restart(nats_server: NatsServer, tmp_path: Path) -> None:
    """While the server is down, local traffic flows and batched events wait in the link's
    backlog; once it is back the links reconnect, the waiting events arrive, and batched
    traffic flows both ways again. Realtime events of the outage may be lost (at most once):
    nothing is asserted of them but that none comes twice."""
    async with AsyncExitStack() as stack:
        a, b = await start(stack, tmp_path, nats_server.url, ["a", "b"])
        await a.publish("rt.x", "a-rt1", 10)
        await a.publish("bt.x", "a-bt1", 10)
        for child in (a, b):
            await child.wait("a-rt1", 10)
            await child.wait("a-bt1", 10)

        await nats_server.stop()
        for child in (a, b):
            await child.request("disconnected", "disconnected")
        await a.publish("bt.x", "a-bt2", 20)
        await a.publish("rt.x", "a-rt2", 20)
        await b.publish("bt.x", "b-bt2", 20)
        await a.wait("a-bt2", 20)  # local handlers get the events of the outage
        await a.wait("a-rt2", 20)
        await b.wait("b-bt2", 20)
        stats = (await a.report())["stats"]
        assert not stats["link"]["connected"], stats
        assert stats["link"]["backlog"] >= 20, stats  # the batched events, at least, wait

        await nats_server.start()
        for child in (a, b):
            line = await child.request("connected", "connected")
            assert line["connected"]["link"]["connects"] >= 2, line
        await b.wait("a-bt2", 20)  # the outage's batched events arrive, both ways
        await a.wait("b-bt2", 20)
        await a.publish("bt.x", "a-bt3", 20)
        await b.publish("bt.x", "b-bt3", 20)
        for child in (a, b):
            await child.wait("a-bt3", 20)
            await child.wait("b-bt3", 20)
        await wait_drained(nats_server.url, ["a", "b"])

        batched = set().union(*(labels(f"{n}-bt{i}", 20) for n in "ab" for i in (2, 3)))
        batched |= labels("a-bt1", 10)
        outage_realtime = labels("a-rt2", 20)
        for child in (a, b):
            report = await child.report()
            expected = batched | labels("a-rt1", 10)
            if child is a:
                expected |= outage_realtime  # its own, handled locally
            else:  # B may have got some of them (from A's backlog) or none
                report["ids"] = [i for i in report["ids"] if i not in outage_realtime]
            check(report, child.node, expected)
