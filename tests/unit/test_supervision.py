"""Supervision in the agent runtime: restarts, restart limits, backoff, isolation, bad handlers.

Every test runs on trio's MockClock with autojump (the ``autojump_clock`` fixture), so
backoffs and timeouts take no real time and every ``trio.current_time()`` below is exact.
One configurable agent, :class:`Worker`, is steered by the payloads it receives and writes
what each of its instances does into a shared :class:`Journal`.
"""

from __future__ import annotations

import json
from collections.abc import Coroutine
from typing import Any

import pytest
import trio
import trio.testing
from support import drain

import loomk
from loomk import (
    Agent,
    AgentContractError,
    AgentError,
    AgentFailed,
    AgentNotFound,
    AgentStartError,
    Context,
    Event,
    Kernel,
    LoomkError,
)
from loomk.agents import FunctionAgent
from loomk.bus import Subscription
from loomk.testing import open_test_kernel

RESTARTED = "system.agent.restarted"
FAILED = "system.agent.failed"


# ---- the test agent -------------------------------------------------------------------------


class Journal:
    """What every instance of one agent did, in order: ``(what, instance, detail, time)``.

    ``instance`` numbers the instances in creation order: 0 is the one given to ``spawn``,
    1 the first fresh one, and so on.
    """

    def __init__(self) -> None:
        self.entries: list[tuple[str, int, object, float]] = []
        self.instances: list[Worker] = []
        self.coroutines: list[Coroutine[Any, Any, None]] = []

    def log(self, what: str, agent: Worker, detail: object = None) -> None:
        self.entries.append((what, agent.serial, detail, trio.current_time()))

    def trace(self) -> list[tuple[str, int, object]]:
        return [(what, serial, detail) for what, serial, detail, _ in self.entries]

    def times(self, what: str, detail: object = None) -> list[float]:
        return [t for w, _, d, t in self.entries if w == what and (detail is None or d == detail)]

    def count(self, what: str) -> int:
        return sum(1 for w, *_ in self.entries if w == what)

    def restart_gaps(self) -> list[float]:
        """Seconds from each failing ``boom`` event to the start of the next instance."""
        fails = self.times("event", b"boom")
        starts = self.times("start")[1:]
        return [s - f for f, s in zip(fails, starts, strict=True)]

    def payloads(self) -> list[object]:
        return [d for w, _, d, _ in self.entries if w == "event"]


async def _idle() -> None:
    """A coroutine function a careless handler forgets to await."""


class Worker(Agent):
    """Handles ``work`` events by payload: ``boom`` raises, ``stop`` calls ``ctx.stop()``,
    ``hang`` never returns, ``list``/``coro`` return a value; anything else is just logged.
    """

    topics = ("work",)

    def __init__(
        self,
        agent_id: str,
        journal: Journal,
        *,
        topic: str = "work",
        label: str = "",
        start_failures: int = 0,
        failing_starts: range | None = None,
        stop_raises: bool = False,
        stop_hangs: bool = False,
    ) -> None:
        super().__init__(agent_id)
        self.topics = (topic,)  # type: ignore[misc]  # per-instance override
        self.journal = journal
        self.serial = len(journal.instances)
        journal.instances.append(self)
        self.label = label
        self.start_failures = start_failures
        self.failing_starts = range(0) if failing_starts is None else failing_starts
        self.stop_raises = stop_raises
        self.stop_hangs = stop_hangs
        self.handled_here = 0

    async def on_start(self, ctx: Context) -> None:
        self.journal.log("start", self)
        starts = self.journal.count("start")
        if starts <= self.start_failures or starts in self.failing_starts:
            raise RuntimeError("cannot start")

    async def on_event(self, ctx: Context, event: Event) -> None:
        self.handled_here += 1
        payload = event.payload
        self.journal.log("event", self, payload)
        if payload == b"boom":
            raise ValueError("boom")
        if payload == b"stop":
            ctx.stop()
        elif payload == b"hang":
            await trio.sleep_forever()
        elif payload == b"list":
            return [1, 2]  # type: ignore[return-value]
        elif payload == b"coro":
            coroutine = _idle()
            self.journal.coroutines.append(coroutine)
            return coroutine  # type: ignore[return-value]

    async def on_stop(self, ctx: Context) -> None:
        self.journal.log("stop", self)
        if self.stop_hangs:
            await trio.sleep_forever()
        if self.stop_raises:
            raise RuntimeError("on_stop failed")


class Recorder(Agent):
    """Records when it handles each event on ``other``."""

    topics = ("other",)

    def __init__(self, agent_id: str, seen: list[tuple[float, bytes]]) -> None:
        super().__init__(agent_id)
        self.seen = seen

    async def on_event(self, ctx: Context, event: Event) -> None:
        self.seen.append((trio.current_time(), event.payload))


# ---- helpers ----------------------------------------------------------------------------------


async def publish(kernel: Kernel, *payloads: bytes, topic: str = "work") -> None:
    for payload in payloads:
        await kernel.bus.publish(topic, Event("job", payload))


def announcements(sub: Subscription) -> list[tuple[str, dict[str, Any]]]:
    """``(topic, payload)`` of every queued system.agent.* event, checking its shape."""
    out = []
    for topic, event in drain(sub):
        assert event.type == {RESTARTED: "agent.restarted", FAILED: "agent.failed"}[topic]
        assert event.source == "loomk.runtime"
        details = json.loads(event.payload)
        assert set(details) == {"agent_id", "restarts", "failures", "error"}
        assert event.metadata["agent_id"] == details["agent_id"]
        out.append((topic, details))
    return out


def assert_gone(kernel: Kernel, agent_id: str, *topics: str) -> None:
    """The agent is out of the runtime, the directory and the bus."""
    assert agent_id not in kernel.agents
    assert agent_id not in kernel.agents.list()
    assert agent_id not in kernel.directory
    assert kernel.directory.get(agent_id) is None
    with pytest.raises(AgentNotFound):
        kernel.agents.get(agent_id)
    for topic in (f"agent.{agent_id}.replies", *topics):
        assert kernel.bus.stats(topic).subscriptions == 0, topic


async def collect(sub: Subscription, out: list[tuple[float, str, Event]]) -> None:
    async for topic, event in sub:
        out.append((trio.current_time(), topic, event))


# ---- a failure ends the instance; a fresh one takes over the mailbox --------------------------


async def test_failed_event_is_not_retried_and_queued_events_reach_a_fresh_instance(
    autojump_clock: trio.testing.MockClock,
) -> None:
    journal = Journal()
    async with open_test_kernel() as kernel:
        original = Worker("w", journal)
        handle = await kernel.spawn(original, backoff_s=0.1, jitter=0)
        await publish(kernel, b"boom", b"a", b"b")
        await trio.sleep(1)

        assert journal.trace() == [
            ("start", 0, None),
            ("event", 0, b"boom"),
            ("stop", 0, None),  # on_stop of the failed instance, before the restart
            ("start", 1, None),
            ("event", 1, b"a"),
            ("event", 1, b"b"),
        ]
        fresh = journal.instances[1]
        assert fresh is not original
        assert type(fresh) is Worker
        assert fresh.agent_id == "w"
        assert fresh.journal is journal
        assert handle.agent is fresh
        stats = handle.stats()
        assert (stats.status, stats.failures, stats.restarts) == ("running", 1, 1)
        assert stats.mailbox_depth == 0
        assert isinstance(handle.last_error, ValueError)
        assert kernel.agents.list() == ["w"]
        assert kernel.directory.get("w") is not None


async def test_events_published_during_the_backoff_reach_the_fresh_instance(
    autojump_clock: trio.testing.MockClock,
) -> None:
    journal = Journal()
    async with open_test_kernel() as kernel:
        handle = await kernel.spawn(Worker("w", journal), backoff_s=2, jitter=0)
        await publish(kernel, b"boom")
        await trio.sleep(1)
        assert handle.status == "restarting"
        assert handle.stats().status == "restarting"
        assert await kernel.bus.publish("work", Event("job", b"late")) == 1
        assert handle.stats().mailbox_depth == 1
        await trio.sleep(2)
        assert handle.status == "running"
        assert journal.trace()[-2:] == [("start", 1, None), ("event", 1, b"late")]


async def test_fresh_instance_is_rebuilt_from_the_constructor_arguments(
    autojump_clock: trio.testing.MockClock,
) -> None:
    journal = Journal()
    async with open_test_kernel() as kernel:
        original = Worker("w", journal, label="blue", stop_raises=False)
        handle = await kernel.spawn(original, backoff_s=0.1, jitter=0)
        await publish(kernel, b"x", b"y", b"boom", b"z")
        await trio.sleep(1)
        fresh = handle.agent
        assert isinstance(fresh, Worker)
        assert fresh is not original
        assert fresh.label == "blue"
        assert fresh.journal is journal
        assert original.handled_here == 3
        assert fresh.handled_here == 1  # instance state starts over: nothing carried across


async def test_function_agent_is_restarted_with_the_same_handler(
    autojump_clock: trio.testing.MockClock,
) -> None:
    seen: list[bytes] = []

    @loomk.agent("fn", topics=["work"])
    async def handler(ctx: Context, event: Event) -> None:
        seen.append(event.payload)
        if event.payload == b"boom":
            raise ValueError("boom")

    async with open_test_kernel() as kernel:
        handle = await kernel.spawn(handler, backoff_s=0.1, jitter=0)
        await publish(kernel, b"a", b"boom", b"b")
        await trio.sleep(1)
        assert seen == [b"a", b"boom", b"b"]
        assert handle.restarts == 1
        assert isinstance(handle.agent, FunctionAgent)
        assert handle.agent is not handler
        assert handle.agent.handler is handler.handler
        assert kernel.subscriptions("fn") == ["agent.fn.replies", "work"]


async def test_restart_is_announced_after_the_backoff(
    autojump_clock: trio.testing.MockClock,
) -> None:
    journal = Journal()
    seen: list[tuple[float, str, Event]] = []
    async with open_test_kernel() as kernel:
        kernel.start_soon(collect, kernel.bus.subscribe("system.agent.>"), seen)
        await kernel.spawn(Worker("w", journal), backoff_s=0.5, jitter=0)
        await trio.sleep(1)
        await publish(kernel, b"boom")
        await trio.sleep(2)

        (failed_at,) = journal.times("event", b"boom")
        (restarted_at,) = journal.times("start")[1:]
        assert restarted_at - failed_at == pytest.approx(0.5)
        ((announced_at, topic, event),) = seen
        assert topic == RESTARTED
        assert announced_at - failed_at == pytest.approx(0.5)
        assert event.type == "agent.restarted"
        assert event.source == "loomk.runtime"
        assert event.metadata["agent_id"] == "w"
        assert json.loads(event.payload) == {
            "agent_id": "w",
            "restarts": 1,
            "failures": 1,
            "error": "ValueError('boom')",
        }


# ---- restart kinds ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("restart", "trigger", "outcome"),
    [
        ("permanent", b"boom", "restarted"),
        ("permanent", b"stop", "restarted"),
        ("transient", b"boom", "restarted"),
        ("transient", b"stop", "stopped"),
        ("temporary", b"boom", "failed"),
        ("temporary", b"stop", "stopped"),
    ],
)
async def test_restart_kinds(
    autojump_clock: trio.testing.MockClock, restart: str, trigger: bytes, outcome: str
) -> None:
    journal = Journal()
    async with open_test_kernel() as kernel:
        watch = kernel.bus.subscribe("system.agent.>")
        handle = await kernel.spawn(Worker("w", journal), restart=restart, backoff_s=0.1, jitter=0)
        await publish(kernel, trigger, b"after")
        await trio.sleep(1)
        failed = 1 if trigger == b"boom" else 0
        error = "ValueError('boom')" if failed else None
        assert handle.failures == failed
        assert ("stop", 0, None) in journal.trace()  # on_stop ran for the ended instance
        details = {"agent_id": "w", "failures": failed, "error": error}

        if outcome == "restarted":
            assert announcements(watch) == [(RESTARTED, {**details, "restarts": 1})]
            assert journal.trace()[-2:] == [("start", 1, None), ("event", 1, b"after")]
            assert handle.status == "running"
            assert handle.restarts == 1
            assert "w" in kernel.agents
        else:
            expected = [(FAILED, {**details, "restarts": 0})] if outcome == "failed" else []
            assert announcements(watch) == expected
            assert journal.count("start") == 1
            assert b"after" not in journal.payloads()  # ctx.stop() drains nothing more
            assert handle.status == outcome
            assert handle.stats().status == outcome
            assert handle.restarts == 0
            assert_gone(kernel, "w", "work")


async def test_permanent_agent_is_restarted_after_every_normal_exit(
    autojump_clock: trio.testing.MockClock,
) -> None:
    journal = Journal()
    async with open_test_kernel() as kernel:
        watch = kernel.bus.subscribe("system.agent.>")
        handle = await kernel.spawn(Worker("w", journal), backoff_s=0.1, jitter=0, window_s=0.5)
        for _ in range(8):
            await publish(kernel, b"stop")
            await trio.sleep(1)
        assert handle.restarts == 8
        assert handle.failures == 0
        assert journal.count("start") == 9
        assert [d["restarts"] for _, d in announcements(watch)] == list(range(1, 9))


# ---- restart limit: giving up -----------------------------------------------------------------


async def test_gives_up_after_max_restarts_within_the_window(
    autojump_clock: trio.testing.MockClock,
) -> None:
    journal = Journal()
    async with open_test_kernel() as kernel:
        watch = kernel.bus.subscribe("system.agent.>")
        handle = await kernel.spawn(
            Worker("w", journal), max_restarts=3, window_s=10, backoff_s=0.1, jitter=0
        )
        await publish(kernel, b"boom", b"boom", b"boom", b"boom", b"never")
        await trio.sleep(5)

        assert announcements(watch) == [
            (
                RESTARTED,
                {"agent_id": "w", "restarts": 1, "failures": 1, "error": "ValueError('boom')"},
            ),
            (
                RESTARTED,
                {"agent_id": "w", "restarts": 2, "failures": 2, "error": "ValueError('boom')"},
            ),
            (
                RESTARTED,
                {"agent_id": "w", "restarts": 3, "failures": 3, "error": "ValueError('boom')"},
            ),
            (
                FAILED,
                {"agent_id": "w", "restarts": 3, "failures": 4, "error": "ValueError('boom')"},
            ),
        ]
        assert journal.count("start") == 4
        assert journal.count("stop") == 4
        assert b"never" not in journal.payloads()
        assert handle.status == "failed"
        stats = handle.stats()
        assert (stats.status, stats.failures, stats.restarts) == ("failed", 4, 3)
        assert_gone(kernel, "w", "work")
        assert await kernel.bus.publish("work", Event("job", b"x")) == 0
        with pytest.raises(AgentNotFound):
            await kernel.stop_agent("w")

        # the kernel is unharmed: other agents run, and the id can be used again
        seen: list[tuple[float, bytes]] = []
        await kernel.spawn(Recorder("rec", seen))
        await publish(kernel, b"1", topic="other")
        await trio.sleep(1)
        assert [p for _, p in seen] == [b"1"]
        again = await kernel.spawn(Worker("w", Journal()))
        assert again.status == "running"
        assert kernel.agents.list() == ["rec", "w"]


async def test_max_restarts_zero_gives_up_on_the_first_failure(
    autojump_clock: trio.testing.MockClock,
) -> None:
    journal = Journal()
    async with open_test_kernel() as kernel:
        watch = kernel.bus.subscribe("system.agent.>")
        handle = await kernel.spawn(Worker("w", journal), max_restarts=0)
        await publish(kernel, b"boom", b"never")
        await trio.sleep(1)
        assert [topic for topic, _ in announcements(watch)] == [FAILED]
        assert handle.status == "failed"
        assert journal.trace() == [("start", 0, None), ("event", 0, b"boom"), ("stop", 0, None)]
        assert_gone(kernel, "w", "work")


async def test_failures_spread_wider_than_the_window_keep_restarting(
    autojump_clock: trio.testing.MockClock,
) -> None:
    journal = Journal()
    async with open_test_kernel() as kernel:
        watch = kernel.bus.subscribe("system.agent.>")
        handle = await kernel.spawn(
            Worker("w", journal), max_restarts=1, window_s=1, backoff_s=0.1, jitter=0
        )
        for _ in range(12):
            await publish(kernel, b"boom")
            await trio.sleep(2)
        assert handle.status == "running"
        assert (handle.failures, handle.restarts) == (12, 12)
        topics = [topic for topic, _ in announcements(watch)]
        assert topics == [RESTARTED] * 12
        # each failure is the only one in its window: the backoff never grows
        starts = journal.times("start")[1:]
        fails = journal.times("event", b"boom")
        assert [s - f for f, s in zip(fails, starts, strict=True)] == pytest.approx([0.1] * 12)


async def test_the_window_slides_with_the_clock(autojump_clock: trio.testing.MockClock) -> None:
    journal = Journal()
    async with open_test_kernel() as kernel:
        handle = await kernel.spawn(
            Worker("w", journal), max_restarts=2, window_s=10, backoff_s=0.1, jitter=0
        )
        start = trio.current_time()
        for at in (0, 9, 11):
            await trio.sleep_until(start + at)
            await publish(kernel, b"boom")
        await trio.sleep_until(start + 11.9)
        # at 11 the failure of 0 had left the window; 9 and 11 are still in it
        assert (handle.status, handle.restarts) == ("running", 3)
        await publish(kernel, b"boom")  # at 11.9: a third failure within 10 s
        await trio.sleep(1)
        assert (handle.status, handle.restarts, handle.failures) == ("failed", 3, 4)
        assert_gone(kernel, "w", "work")


# ---- backoff ----------------------------------------------------------------------------------


async def test_backoff_doubles_within_the_window_and_is_capped(
    autojump_clock: trio.testing.MockClock,
) -> None:
    journal = Journal()
    async with open_test_kernel() as kernel:
        handle = await kernel.spawn(
            Worker("w", journal),
            max_restarts=10,
            window_s=100,
            backoff_s=0.1,
            backoff_max_s=0.5,
            jitter=0,
        )
        await publish(kernel, *[b"boom"] * 6, b"done")
        await trio.sleep(10)
        assert handle.restarts == 6
        gaps = journal.restart_gaps()
        assert gaps == pytest.approx([0.1, 0.2, 0.4, 0.5, 0.5, 0.5])
        assert journal.payloads()[-1] == b"done"


async def test_backoff_starts_over_once_the_window_has_passed(
    autojump_clock: trio.testing.MockClock,
) -> None:
    journal = Journal()
    async with open_test_kernel() as kernel:
        await kernel.spawn(Worker("w", journal), max_restarts=5, window_s=5, backoff_s=1, jitter=0)
        await publish(kernel, b"boom", b"boom")
        await trio.sleep(30)
        await publish(kernel, b"boom")
        await trio.sleep(30)
        gaps = journal.restart_gaps()
        assert gaps == pytest.approx([1, 2, 1])


async def test_backoff_jitter_stays_within_its_bounds(
    autojump_clock: trio.testing.MockClock,
) -> None:
    journal = Journal()
    async with open_test_kernel() as kernel:
        handle = await kernel.spawn(
            Worker("w", journal),
            max_restarts=20,
            window_s=10_000,
            backoff_s=1,
            backoff_max_s=8,
            jitter=0.5,
        )
        await publish(kernel, *[b"boom"] * 10)
        await trio.sleep(500)
        assert handle.restarts == 10
        gaps = journal.restart_gaps()
        bases = [1, 2, 4, 8, 8, 8, 8, 8, 8, 8]
        for gap, base in zip(gaps, bases, strict=True):
            assert 0.5 * base - 1e-9 <= gap <= 1.5 * base + 1e-9, (gap, base)
        assert any(abs(gap - base) > 1e-6 for gap, base in zip(gaps, bases, strict=True))


# ---- critical agents --------------------------------------------------------------------------


async def test_critical_agent_giving_up_stops_the_kernel_with_agent_failed(
    autojump_clock: trio.testing.MockClock,
) -> None:
    journal = Journal()
    bystander = Journal()
    kernels: list[Kernel] = []
    watches: list[Subscription] = []
    reached_end = []

    async def body() -> None:
        async with open_test_kernel() as kernel:
            kernels.append(kernel)
            watches.append(kernel.bus.subscribe("system.agent.>"))
            await kernel.spawn(Worker("by", bystander, topic="work2"))
            await kernel.spawn(
                Worker("w", journal), critical=True, max_restarts=1, backoff_s=0.1, jitter=0
            )
            await publish(kernel, b"boom", b"boom")
            await trio.sleep(3600)
            reached_end.append(True)

    start = trio.current_time()
    with pytest.raises(AgentFailed) as info:
        await body()
    # the body was cancelled as soon as the agent gave up (just after its one 0.1 s backoff)
    assert not reached_end
    assert trio.current_time() - start == pytest.approx(0.1)
    error = info.value
    assert error.agent_id == "w"
    assert isinstance(error.cause, ValueError)
    assert str(error.cause) == "boom"
    assert isinstance(error, AgentError)
    assert isinstance(error, LoomkError)
    assert error.code == "AGENT_FAILED"
    assert kernels[0].closed
    assert bystander.count("stop") == 1  # the other agents were stopped in order
    assert [topic for topic, _ in announcements(watches[0])] == [RESTARTED, FAILED]


def test_critical_agent_giving_up_makes_loomk_run_raise_agent_failed() -> None:
    journal = Journal()

    async def main(kernel: Kernel) -> str:
        await kernel.spawn(Worker("w", journal), critical=True, restart="temporary")
        await publish(kernel, b"boom")
        with trio.fail_after(10):  # a guard only: the kernel stops right away
            await trio.sleep_forever()
        return "not reached"

    with pytest.raises(AgentFailed) as info:
        loomk.run(main)
    assert info.value.agent_id == "w"
    assert isinstance(info.value.cause, ValueError)
    assert journal.count("stop") == 1


async def test_critical_agent_within_its_limits_does_not_stop_the_kernel(
    autojump_clock: trio.testing.MockClock,
) -> None:
    journal = Journal()
    async with open_test_kernel() as kernel:
        handle = await kernel.spawn(
            Worker("w", journal), critical=True, max_restarts=2, backoff_s=0.1, jitter=0
        )
        await publish(kernel, b"boom", b"boom", b"ok")
        await trio.sleep(10)
        assert not kernel.stopping
        assert handle.status == "running"
        assert journal.payloads()[-1] == b"ok"
        # a critical transient agent that just stops is not a failure either
        await kernel.spawn(
            Worker("t", Journal(), topic="work2"), critical=True, restart="transient"
        )
        await publish(kernel, b"stop", topic="work2")
        await trio.sleep(1)
        assert "t" not in kernel.agents
        assert not kernel.stopping
    assert kernel.closed


async def test_non_critical_give_up_leaves_the_kernel_running(
    autojump_clock: trio.testing.MockClock,
) -> None:
    journal = Journal()
    seen: list[tuple[float, bytes]] = []
    async with open_test_kernel() as kernel:
        await kernel.spawn(Recorder("rec", seen))
        await kernel.spawn(Worker("w", journal), restart="temporary")
        await publish(kernel, b"boom")
        await trio.sleep(1)
        assert "w" not in kernel.agents
        assert not kernel.stopping
        await publish(kernel, b"still", topic="other")
        await trio.sleep(1)
        assert [p for _, p in seen] == [b"still"]


# ---- isolation ----------------------------------------------------------------------------------


async def test_a_crash_looping_agent_never_delays_another_agent(
    autojump_clock: trio.testing.MockClock,
) -> None:
    journal = Journal()
    seen: list[tuple[float, bytes]] = []
    async with open_test_kernel() as kernel:
        await kernel.spawn(Recorder("rec", seen))
        crasher = await kernel.spawn(
            Worker("w", journal),
            max_restarts=1000,
            window_s=1,
            backoff_s=0.05,
            backoff_max_s=0.05,
            jitter=0,
        )
        await publish(kernel, *[b"boom"] * 40)
        sent = []
        for i in range(20):
            sent.append((trio.current_time(), str(i).encode()))
            await publish(kernel, str(i).encode(), topic="other")
            await trio.sleep(0.07)
        await trio.sleep(5)
        assert seen == sent  # each handled at the instant it was published, in order
        assert crasher.restarts == 40
        assert crasher.status == "running"
        rec = kernel.agents.get("rec").stats()
        assert (rec.failures, rec.restarts, rec.status) == (0, 0, "running")


async def test_a_hanging_agent_never_blocks_another_agent(
    autojump_clock: trio.testing.MockClock,
) -> None:
    journal = Journal()
    seen: list[tuple[float, bytes]] = []
    async with open_test_kernel(shutdown_timeout_s=2) as kernel:
        await kernel.spawn(Worker("h", journal))
        await kernel.spawn(Recorder("rec", seen))
        await publish(kernel, b"hang", b"queued")
        sent = []
        for i in range(10):
            await trio.sleep(30)
            sent.append((trio.current_time(), str(i).encode()))
            await publish(kernel, str(i).encode(), topic="other")
        await trio.sleep(1)
        assert seen == sent
        assert journal.payloads() == [b"hang"]
        # stopping the other agent is not held up by the hanging one either
        t0 = trio.current_time()
        with trio.fail_after(60):  # a regression fails here instead of hanging
            await kernel.stop_agent("rec")
        assert trio.current_time() == t0
        assert "h" in kernel.agents


async def test_stop_agent_cancels_a_hanging_agent_after_the_timeout(
    autojump_clock: trio.testing.MockClock,
) -> None:
    journal = Journal()
    seen: list[tuple[float, bytes]] = []
    async with open_test_kernel() as kernel:
        watch = kernel.bus.subscribe("system.agent.>")
        handle = await kernel.spawn(Worker("h", journal))
        await kernel.spawn(Recorder("rec", seen))
        await publish(kernel, b"hang")
        await trio.sleep(1)
        t0 = trio.current_time()
        with trio.fail_after(60):  # a regression fails here instead of hanging
            await kernel.stop_agent("h", timeout_s=1)
        assert trio.current_time() - t0 == pytest.approx(1)
        assert journal.trace() == [("start", 0, None), ("event", 0, b"hang"), ("stop", 0, None)]
        assert journal.times("stop") == [pytest.approx(t0 + 1)]
        assert handle.status == "stopped"
        assert handle.failures == 0  # cancelled by stop, not failed
        assert announcements(watch) == []  # neither restarted nor given up on
        assert_gone(kernel, "h", "work")
        await trio.sleep(30)
        assert journal.count("start") == 1
        await publish(kernel, b"alive", topic="other")
        await trio.sleep(1)
        assert [p for _, p in seen] == [b"alive"]


async def test_shutdown_with_a_hanging_agent_is_bounded_by_the_shutdown_timeout(
    autojump_clock: trio.testing.MockClock,
) -> None:
    hanging = Journal()
    other = Journal()
    async with open_test_kernel(shutdown_timeout_s=2) as kernel:
        await kernel.spawn(Worker("h", hanging))
        await kernel.spawn(Worker("o", other, topic="work2"), restart="temporary")
        await publish(kernel, b"hang")
        await trio.sleep(1)
        leaving = trio.current_time()
    elapsed = trio.current_time() - leaving
    assert 0 < elapsed <= 2 + 1e-9
    assert hanging.count("stop") == 1
    assert other.times("stop") == [leaving]  # stopped at once, concurrently
    assert kernel.closed


async def test_shutdown_with_a_hanging_handler_and_on_stop_is_bounded(
    autojump_clock: trio.testing.MockClock,
) -> None:
    journal = Journal()
    async with open_test_kernel(shutdown_timeout_s=2) as kernel:
        await kernel.spawn(Worker("h", journal, stop_hangs=True))
        await publish(kernel, b"hang")
        await trio.sleep(1)
        leaving = trio.current_time()
    assert trio.current_time() - leaving <= 4 + 1e-9
    assert journal.count("stop") == 1
    assert kernel.closed


# ---- bad handlers -----------------------------------------------------------------------------


async def test_handler_returning_a_value_is_a_contract_failure(
    autojump_clock: trio.testing.MockClock,
) -> None:
    journal = Journal()
    async with open_test_kernel() as kernel:
        watch = kernel.bus.subscribe("system.agent.>")
        handle = await kernel.spawn(Worker("w", journal), backoff_s=0.1, jitter=0)
        await publish(kernel, b"list", b"next")
        await trio.sleep(1)
        error = handle.last_error
        assert isinstance(error, AgentContractError)
        assert isinstance(error, TypeError)
        assert "return None" in str(error)
        assert "list" in str(error)
        assert handle.stats().failures == 1
        assert handle.restarts == 1
        ((topic, details),) = announcements(watch)
        assert topic == RESTARTED
        assert details["error"].startswith("AgentContractError(")
        assert journal.trace()[-2:] == [("start", 1, None), ("event", 1, b"next")]


async def test_handler_returning_an_unawaited_coroutine_is_a_contract_failure(
    autojump_clock: trio.testing.MockClock,
) -> None:
    journal = Journal()
    try:
        async with open_test_kernel() as kernel:
            handle = await kernel.spawn(Worker("w", journal), backoff_s=0.1, jitter=0)
            await publish(kernel, b"coro", b"next")
            await trio.sleep(1)
            assert isinstance(handle.last_error, AgentContractError)
            assert "coroutine" in str(handle.last_error)
            assert (handle.failures, handle.restarts) == (1, 1)
            assert journal.payloads() == [b"coro", b"next"]
    finally:
        for coroutine in journal.coroutines:
            coroutine.close()  # never awaited, on purpose: keep Python from warning


async def test_on_stop_raising_does_not_prevent_a_restart(
    autojump_clock: trio.testing.MockClock,
) -> None:
    journal = Journal()
    async with open_test_kernel() as kernel:
        handle = await kernel.spawn(Worker("w", journal, stop_raises=True), backoff_s=0.1, jitter=0)
        await publish(kernel, b"boom", b"next")
        await trio.sleep(1)
        assert journal.trace() == [
            ("start", 0, None),
            ("event", 0, b"boom"),
            ("stop", 0, None),
            ("start", 1, None),
            ("event", 1, b"next"),
        ]
        assert handle.failures == 1  # on_stop's error is not a second failure
        assert isinstance(handle.last_error, ValueError)
        assert handle.status == "running"


async def test_on_stop_raising_does_not_prevent_a_stop(
    autojump_clock: trio.testing.MockClock,
) -> None:
    journal = Journal()
    async with open_test_kernel() as kernel:
        handle = await kernel.spawn(Worker("w", journal, stop_raises=True))
        await publish(kernel, b"a")
        t0 = trio.current_time()
        await kernel.stop_agent("w")
        assert trio.current_time() == t0
        assert journal.trace() == [("start", 0, None), ("event", 0, b"a"), ("stop", 0, None)]
        assert handle.status == "stopped"
        assert_gone(kernel, "w", "work")
        await kernel.spawn(Worker("w2", Journal(), stop_raises=True))
    assert kernel.closed  # shutdown with a raising on_stop completes and raises nothing


async def test_a_first_on_start_that_raises_makes_spawn_raise_and_nothing_restarts(
    autojump_clock: trio.testing.MockClock,
) -> None:
    journal = Journal()
    async with open_test_kernel() as kernel:
        watch = kernel.bus.subscribe("system.agent.>")
        with pytest.raises(AgentStartError, match="'w' did not start: on_start raised") as info:
            await kernel.spawn(Worker("w", journal, start_failures=1), backoff_s=0.5, jitter=0)
        assert isinstance(info.value.cause, RuntimeError)
        assert info.value.agent_id == "w"
        assert journal.trace() == [("start", 0, None), ("stop", 0, None)]  # on_stop ran
        assert trio.current_time() == 0.0  # no backoff, no second start
        await trio.sleep(2)
        assert journal.count("start") == 1
        assert announcements(watch) == []
        assert_gone(kernel, "w", "work")


async def test_on_start_raising_after_a_restart_is_a_failure_and_is_restarted(
    autojump_clock: trio.testing.MockClock,
) -> None:
    journal = Journal()
    async with open_test_kernel() as kernel:
        watch = kernel.bus.subscribe("system.agent.>")
        handle = await kernel.spawn(
            Worker("w", journal, failing_starts=range(2, 3)), backoff_s=0.5, jitter=0
        )
        await publish(kernel, b"boom", b"a")
        await trio.sleep(3)
        assert journal.trace() == [
            ("start", 0, None),
            ("event", 0, b"boom"),
            ("stop", 0, None),
            ("start", 1, None),  # the second start fails: a failure like any other
            ("stop", 1, None),
            ("start", 2, None),
            ("event", 2, b"a"),
        ]
        assert (handle.status, handle.failures, handle.restarts) == ("running", 2, 2)
        assert [d["error"] for _, d in announcements(watch)] == [
            "ValueError('boom')",
            "RuntimeError('cannot start')",
        ]


async def test_on_start_failing_every_time_after_a_restart_gives_up(
    autojump_clock: trio.testing.MockClock,
) -> None:
    journal = Journal()
    async with open_test_kernel() as kernel:
        watch = kernel.bus.subscribe("system.agent.>")
        handle = await kernel.spawn(
            Worker("w", journal, failing_starts=range(2, 100)),
            max_restarts=2,
            backoff_s=0.1,
            jitter=0,
        )
        await publish(kernel, b"boom")
        await trio.sleep(5)
        assert journal.count("start") == 3
        assert (handle.status, handle.failures, handle.restarts) == ("failed", 3, 2)
        assert [topic for topic, _ in announcements(watch)] == [RESTARTED, RESTARTED, FAILED]
        assert_gone(kernel, "w", "work")


class SlowStart(Agent):
    """``on_start`` waits ``start_s`` (virtual) seconds, then records that it finished."""

    topics = ("work",)

    def __init__(self, agent_id: str, start_s: float, trace: list[str]) -> None:
        super().__init__(agent_id)
        self.start_s = start_s
        self.trace = trace

    async def on_start(self, ctx: Context) -> None:
        await trio.sleep(self.start_s)
        self.trace.append("started")

    async def on_stop(self, ctx: Context) -> None:
        self.trace.append("stopped")


@pytest.mark.parametrize(
    ("settings", "spawn_options", "gives_up_at"),
    [
        ({"agent_start_timeout_s": 3}, {}, 3.0),
        ({"agent_start_timeout_s": 3}, {"start_timeout_s": 1.5}, 1.5),
    ],
    ids=["the kernel's setting", "spawn's own"],
)
async def test_an_on_start_past_its_start_timeout_makes_spawn_raise(
    autojump_clock: trio.testing.MockClock,
    settings: dict[str, float],
    spawn_options: dict[str, float],
    gives_up_at: float,
) -> None:
    trace: list[str] = []
    async with open_test_kernel(**settings) as kernel:
        with pytest.raises(AgentStartError, match="on_start did not return within"):
            await kernel.spawn(SlowStart("slow", 3600, trace), **spawn_options)
        assert trio.current_time() == gives_up_at
        assert trace == ["stopped"]  # cut short; on_stop still ran
        assert_gone(kernel, "slow", "work")
        await kernel.spawn(SlowStart("quick", 1, trace))  # within the timeout: started
        assert trace == ["stopped", "started"]


async def test_spawn_many_starts_whole_or_not_at_all(
    autojump_clock: trio.testing.MockClock,
) -> None:
    trace: list[str] = []
    journal = Journal()
    async with open_test_kernel(agent_start_timeout_s=2) as kernel:
        batch = [
            SlowStart("fine", 0, trace),
            Worker("broken", journal, start_failures=1, topic="other"),
            SlowStart("hung", 3600, []),
        ]
        with pytest.raises(AgentStartError, match="1 more of the 3 agents did not start"):
            await kernel.spawn_many(batch)
        assert trace == ["started", "stopped"]  # the one that started was stopped again
        assert kernel.agents.list() == []
        assert await kernel.bus.publish("work", Event("x")) == 0


@pytest.mark.parametrize("bad", [0, -1, float("nan"), float("inf"), "5", True])
async def test_a_start_timeout_that_is_not_a_finite_positive_number_is_refused(
    bad: object,
) -> None:
    async with open_test_kernel() as kernel:
        with pytest.raises(AgentError, match="start_timeout_s must be a finite number > 0"):
            await kernel.spawn(Worker("w", Journal()), start_timeout_s=bad)
        assert kernel.agents.list() == []


# ---- stopping during the backoff --------------------------------------------------------------


async def test_stop_agent_during_the_backoff_stops_without_another_restart(
    autojump_clock: trio.testing.MockClock,
) -> None:
    journal = Journal()
    async with open_test_kernel() as kernel:
        watch = kernel.bus.subscribe("system.agent.>")
        handle = await kernel.spawn(Worker("w", journal), backoff_s=5, jitter=0)
        await publish(kernel, b"boom")
        await trio.sleep(1)
        assert handle.status == "restarting"
        await publish(kernel, b"queued")
        t0 = trio.current_time()
        with trio.fail_after(60):
            await kernel.stop_agent("w")
        assert trio.current_time() == t0  # the backoff is cut short at once
        assert handle.status == "stopped"
        assert handle.restarts == 0
        assert_gone(kernel, "w", "work")
        await trio.sleep(60)
        assert journal.count("start") == 1
        assert b"queued" not in journal.payloads()
        assert announcements(watch) == []


async def test_shutdown_during_the_backoff_does_not_restart(
    autojump_clock: trio.testing.MockClock,
) -> None:
    journal = Journal()
    async with open_test_kernel(shutdown_timeout_s=2) as kernel:
        watch = kernel.bus.subscribe("system.agent.>")
        handle = await kernel.spawn(Worker("w", journal), backoff_s=3, jitter=0)
        await publish(kernel, b"boom")
        await trio.sleep(1)
        assert handle.status == "restarting"
        leaving = trio.current_time()
    assert trio.current_time() == leaving  # no waiting out the backoff
    assert journal.count("start") == 1
    assert handle.status == "stopped"
    assert announcements(watch) == []


# ---- spawn's supervision options ----------------------------------------------------------------


@pytest.mark.parametrize(
    "options",
    [
        {"restart": "sometimes"},
        {"max_restarts": -1},
        {"window_s": -1},
        {"backoff_s": -0.5},
        {"backoff_max_s": -5},
        {"jitter": 1.5},
    ],
    ids=repr,
)
async def test_spawn_rejects_a_bad_policy_and_registers_nothing(
    autojump_clock: trio.testing.MockClock, options: dict[str, Any]
) -> None:
    journal = Journal()
    async with open_test_kernel() as kernel:
        kernel_own = kernel.bus.subscription_stats()  # the collaboration service's
        with pytest.raises(AgentError):
            await kernel.spawn(Worker("w", journal), **options)
        assert kernel.agents.list() == []
        assert len(kernel.directory) == 0
        assert kernel.bus.subscription_stats() == kernel_own
        assert journal.count("start") == 0
        await kernel.spawn(Worker("w", journal))  # the id is still free
        assert kernel.agents.list() == ["w"]


@pytest.mark.parametrize("stop_timeout_s", [-1.0, float("nan")])
async def test_spawn_rejects_a_bad_stop_timeout(
    autojump_clock: trio.testing.MockClock, stop_timeout_s: float
) -> None:
    # Accepted today, the value reaches trio.move_on_after when the agent stops or fails,
    # raises ValueError inside the agent's task and crashes the whole kernel.
    async with open_test_kernel() as kernel:
        with pytest.raises(AgentError):
            await kernel.spawn(Worker("w", Journal()), stop_timeout_s=stop_timeout_s)
        assert kernel.agents.list() == []


class StartReturnsValue(Agent):
    topics = ("work",)

    def __init__(self, agent_id: str, journal: Journal) -> None:
        super().__init__(agent_id)
        self.journal = journal

    async def on_start(self, ctx: Context) -> None:
        self.journal.entries.append(("start", 0, None, trio.current_time()))
        if len(self.journal.entries) == 1:
            return "ready"  # type: ignore[return-value]  # a contract violation, once


async def test_a_first_on_start_returning_a_value_is_a_start_error(
    autojump_clock: trio.testing.MockClock,
) -> None:
    journal = Journal()
    async with open_test_kernel() as kernel:
        with pytest.raises(AgentStartError) as info:
            await kernel.spawn(StartReturnsValue("s", journal), backoff_s=0.5, jitter=0)
        assert isinstance(info.value.cause, AgentContractError)
        assert "on_start must return None" in str(info.value)
        assert "s" not in kernel.agents


class BuiltOnce(Agent):
    """An agent whose constructor works once: a restart cannot rebuild it."""

    topics = ("work",)
    built = 0

    def __init__(self, agent_id: str) -> None:
        super().__init__(agent_id)
        BuiltOnce.built += 1
        if BuiltOnce.built > 1:
            raise RuntimeError("cannot be built twice")

    async def on_event(self, ctx: Context, event: Event) -> None:
        raise ValueError("boom")


async def test_a_failing_constructor_on_restart_gives_up_without_stopping_the_kernel(
    autojump_clock: trio.testing.MockClock,
) -> None:
    BuiltOnce.built = 0
    seen: list[tuple[float, bytes]] = []
    async with open_test_kernel() as kernel:
        watch = kernel.bus.subscribe("system.agent.failed")
        handle = await kernel.spawn(BuiltOnce("once"), backoff_s=0.1, jitter=0)
        await kernel.spawn(Recorder("other", seen))
        await kernel.bus.publish("work", Event("job"))
        with trio.fail_after(60):
            _, failed = await watch.receive()
        assert json.loads(failed.payload)["error"].startswith("RuntimeError(")
        assert handle.status == "failed"
        assert "once" not in kernel.agents.list()
        await kernel.bus.publish("other", Event("job", b"still here"))
        await trio.testing.wait_all_tasks_blocked()
        assert [payload for _, payload in seen] == [b"still here"]
