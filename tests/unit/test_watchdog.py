"""The stall watchdog: a handler that blocks the kernel's thread is noticed, named and counted.

These tests block the thread for real (``time.sleep``): a stall is a wall-clock event. The
margins are wide (a one second block against a 100 ms threshold), and what is asserted is
what was seen, not how fast.
"""

from __future__ import annotations

import sys
import time

import pytest
import trio
import trio.testing

from loomk import Context, Event
from loomk.agents import agent_on_stack
from loomk.telemetry.watchdog import StallStats, StallWatchdog
from loomk.testing import ScriptedAgent, open_test_kernel

BLOCK_S = 1.0
THRESHOLD_MS = 100


async def test_a_handler_that_blocks_the_thread_is_a_stall_naming_its_agent() -> None:
    async def block(ctx: Context, event: Event) -> None:
        time.sleep(BLOCK_S)  # the mistake the watchdog is for

    async with open_test_kernel(stall_warning_ms=THRESHOLD_MS) as kernel:
        assert kernel.watchdog is not None
        before = kernel.watchdog.stats()
        await kernel.spawn(ScriptedAgent("sleeper", {"block": block}))
        await kernel.bus.publish("in.sleeper", Event("block"))
        await trio.testing.wait_all_tasks_blocked()  # the handler ran, blocking, meanwhile
        during = kernel.watchdog.stats()
    after = kernel.watchdog.stats()  # the kernel has joined the watching thread
    assert before == StallStats(THRESHOLD_MS, 0, 0.0, None, False)
    assert (during.stalls, during.last_agent) == (1, "sleeper")  # counted once, named
    assert (after.stalls, after.stalled_now) == (1, False)
    assert after.longest_ms >= BLOCK_S * 1000 * 0.9  # how long the thread was away


async def test_a_stall_outside_any_agent_is_counted_without_a_name() -> None:
    async with open_test_kernel(stall_warning_ms=THRESHOLD_MS) as kernel:
        assert kernel.watchdog is not None
        time.sleep(BLOCK_S)  # main itself blocks
        await trio.lowlevel.checkpoint()
        stats = kernel.watchdog.stats()
    assert (stats.stalls, stats.last_agent) == (1, None)


async def test_zero_turns_the_watchdog_off() -> None:
    async with open_test_kernel(stall_warning_ms=0) as kernel:
        assert kernel.watchdog is None


def test_agent_on_stack_finds_nothing_outside_an_agent_task() -> None:
    assert agent_on_stack(sys._getframe()) is None
    assert agent_on_stack(None) is None


def test_a_threshold_of_zero_or_less_is_refused() -> None:
    with pytest.raises(ValueError, match="threshold_ms must be > 0"):
        StallWatchdog(0)


async def test_a_round_kept_busy_by_many_agents_names_none_of_them() -> None:
    """Twenty agents each take about 10 ms (10 events of 1 ms) and yield: together one
    scheduler round of about 200 ms. That is an overloaded kernel, not a handler that
    blocks it: the stall is counted, and no agent is blamed. (Each agent's share stays a
    tenth of the threshold, so a loaded machine that stretches the sleeps still blames
    none: an agent is named only when it holds the thread at two samples.)"""

    async def work(ctx: Context, event: Event) -> None:
        time.sleep(0.001)

    async with open_test_kernel(stall_warning_ms=THRESHOLD_MS) as kernel:
        assert kernel.watchdog is not None
        await kernel.spawn_many(
            [ScriptedAgent(f"w{i}", {"job": work}, topics=["jobs"]) for i in range(20)]
        )
        for _ in range(10):  # queued for all twenty before any of them runs
            await kernel.bus.publish("jobs", Event("job"))
        await trio.testing.wait_all_tasks_blocked()
    stats = kernel.watchdog.stats()
    assert stats.stalls >= 1
    assert stats.last_agent is None
