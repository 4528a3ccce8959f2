"""Barriers (documented by Loom, built by loomk): wait until ``n`` participants checked in.

Participants are tasks, agents (``ctx.barrier``) and "remote" publishers of ``collab.barrier``
on ``thread.{name}.barrier``. Covers the shared participant list, counting a participant
once, successive rounds, timeouts (the participant withdraws, ``collab.timeout``), withdrawal
on cancellation, and validation. Every timeout runs on a MockClock.
"""

from __future__ import annotations

from typing import Any

import pytest
import trio
import trio.testing
from collab_support import (
    Pending,
    assert_nothing_left,
    of_type,
    settle,
    start_call,
    subscriptions,
)

from loomk import CollabError, CollabTimeout, Context, Event, Kernel
from loomk.testing import ScriptedAgent, capture_events, open_test_kernel


def check_in(
    nursery: trio.Nursery,
    kernel: Kernel,
    who: str,
    n: int,
    *,
    name: str = "meet",
    timeout_s: float = 10,
) -> Pending[list[str]]:
    """Start ``who`` waiting at barrier ``name`` in the background."""
    collab = kernel.collaborator(who)
    return start_call(nursery, lambda: collab.barrier(name, n, timeout_s=timeout_s))


def remote_check_in(who: str, n: int) -> Event:
    """A check-in as a participant in another process publishes it."""
    return Event("collab.barrier", metadata={"participant": who, "barrier_n": str(n)})


async def test_tasks_and_agents_get_the_same_list(autojump_clock: trio.testing.MockClock) -> None:
    got: list[list[str]] = []

    async def sync(ctx: Context, event: Event) -> None:
        got.append(await ctx.barrier("meet", 3, timeout_s=10))

    async with open_test_kernel() as kernel:
        seen = capture_events(kernel.bus, "thread.*.barrier")
        await kernel.spawn(ScriptedAgent("worker", {"sync": sync}))
        before = subscriptions(kernel)
        async with trio.open_nursery() as nursery:
            first = check_in(nursery, kernel, "task.a", 3)
            await settle()
            second = check_in(nursery, kernel, "task.b", 3)
            await settle()
            assert not first.done.is_set()
            assert not second.done.is_set()
            await kernel.bus.publish("in.worker", Event("sync"))
        expected = ["task.a", "task.b", "agent.worker"]
        assert first.result() == second.result() == expected
        assert got == [expected]
        assert trio.current_time() == 0.0
        assert_nothing_left(kernel, before)
    check_ins = of_type(seen.items, "collab.barrier")
    assert [event.metadata["participant"] for _, event in check_ins] == expected
    for topic, event in check_ins:
        assert topic == "thread.meet.barrier"
        assert event.metadata["barrier_n"] == "3"
        assert event.tags == ("collab",)
        assert event.metadata["sender"] == event.metadata["participant"]


async def test_one_participant_is_enough_for_n_1(autojump_clock: trio.testing.MockClock) -> None:
    async with open_test_kernel() as kernel:
        assert await kernel.collaborator("solo").barrier("alone", 1, timeout_s=1) == ["solo"]
        assert trio.current_time() == 0.0


async def test_a_participant_counts_once(autojump_clock: trio.testing.MockClock) -> None:
    async with open_test_kernel() as kernel, trio.open_nursery() as nursery:
        twice = [check_in(nursery, kernel, "dup", 2) for _ in range(2)]
        await settle()
        assert not any(call.done.is_set() for call in twice)
        other = check_in(nursery, kernel, "other", 2)
        await settle()
        assert [call.result() for call in (*twice, other)] == [["dup", "other"]] * 3


async def test_a_second_round_starts_after_the_first(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with open_test_kernel() as kernel, trio.open_nursery() as nursery:
        a = check_in(nursery, kernel, "a", 2)
        await settle()
        b = check_in(nursery, kernel, "b", 2)
        await settle()
        assert a.result() == b.result() == ["a", "b"]
        c = check_in(nursery, kernel, "c", 2)
        await settle()
        assert not c.done.is_set()  # a new round: the first round's check-ins do not count
        a_again = check_in(nursery, kernel, "a", 2)
        await settle()
        assert c.result() == a_again.result() == ["c", "a"]


async def test_remote_check_ins_count(autojump_clock: trio.testing.MockClock) -> None:
    async with open_test_kernel() as kernel, trio.open_nursery() as nursery:
        local = check_in(nursery, kernel, "local", 3, name="sync")
        await settle()
        await kernel.bus.publish("thread.sync.barrier", remote_check_in("remote.1", 3))
        await settle()
        assert not local.done.is_set()
        await kernel.bus.publish("thread.sync.barrier", remote_check_in("remote.2", 3))
        await settle()
        assert local.result() == ["local", "remote.1", "remote.2"]
        # a remote check-in made while nobody waits is kept for the next local participant
        await kernel.bus.publish("thread.sync.barrier", remote_check_in("remote.3", 2))
        assert await kernel.collaborator("local").barrier("sync", 2, timeout_s=1) == [
            "remote.3",
            "local",
        ]
        assert trio.current_time() == 0.0


async def test_a_remote_check_in_before_any_local_barrier_counts(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """A remote participant may arrive first, even in a kernel where no barrier was used."""
    async with open_test_kernel() as kernel:
        await kernel.bus.publish("thread.sync.barrier", remote_check_in("remote.1", 2))
        try:
            participants = await kernel.collaborator("local").barrier("sync", 2, timeout_s=1)
        except CollabTimeout:
            pytest.fail("the check-in of remote.1 was lost")
        assert participants == ["remote.1", "local"]
        assert trio.current_time() == 0.0


# --- timeouts and cancellation ------------------------------------------------------------


async def test_timeout_raises_and_publishes_collab_timeout(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with open_test_kernel() as kernel:
        seen = capture_events(kernel.bus, "thread.*.barrier")
        before = subscriptions(kernel)
        with pytest.raises(CollabTimeout):
            await kernel.collaborator("late").barrier("meet", 2, timeout_s=2)
        assert trio.current_time() == 2.0
        await settle()
        assert_nothing_left(kernel, before)
    [(topic, timeout)] = of_type(seen.items, "collab.timeout")
    assert topic == "thread.meet.barrier"
    assert timeout.priority == 40
    assert timeout.tags == ("collab",)
    assert timeout.metadata["reason"] == "barrier_timeout"
    assert timeout.metadata["participant"] == "late"


async def test_a_participant_that_timed_out_is_not_counted_later(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with open_test_kernel() as kernel:
        with pytest.raises(CollabTimeout):
            await kernel.collaborator("gone").barrier("meet", 2, timeout_s=1)
        async with trio.open_nursery() as nursery:
            b = check_in(nursery, kernel, "b", 2)
            await settle()
            assert not b.done.is_set(), f"returned {b.value!r}: 'gone' withdrew at its timeout"
            c = check_in(nursery, kernel, "c", 2)
            await settle()
            assert b.result() == c.result() == ["b", "c"]


async def test_a_timed_out_participant_leaves_the_open_round(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """``gone`` gives up while ``b`` still waits for 3: the round then needs two more."""
    async with open_test_kernel() as kernel, trio.open_nursery() as nursery:
        gone = check_in(nursery, kernel, "gone", 3, timeout_s=1)
        await settle()
        b = check_in(nursery, kernel, "b", 3, timeout_s=10)
        await gone.done.wait()
        assert isinstance(gone.error, CollabTimeout)
        assert gone.ended_at == 1.0
        c = check_in(nursery, kernel, "c", 3, timeout_s=10)
        await settle()
        assert not b.done.is_set(), f"returned {b.value!r}: 'gone' withdrew at its timeout"
        d = check_in(nursery, kernel, "d", 3, timeout_s=10)
        await settle()
        assert b.result() == c.result() == d.result() == ["b", "c", "d"]
        assert trio.current_time() == 1.0


async def test_a_cancelled_participant_is_not_counted_later(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with open_test_kernel() as kernel:
        with trio.move_on_after(1) as scope:
            await kernel.collaborator("gone").barrier("meet", 2, timeout_s=10)
        assert scope.cancelled_caught
        async with trio.open_nursery() as nursery:
            b = check_in(nursery, kernel, "b", 2)
            await settle()
            assert not b.done.is_set(), f"returned {b.value!r}: 'gone' was cancelled"
            c = check_in(nursery, kernel, "c", 2)
            await settle()
            assert b.result() == c.result() == ["b", "c"]


# --- validation ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "n", "timeout_s"),
    [
        ("a.b", 2, 1),
        ("", 2, 1),
        ("meet", 0, 1),
        ("meet", -1, 1),
        ("meet", True, 1),
        ("meet", 2.0, 1),
        ("meet", 2, 0),
        ("meet", 2, -1),
    ],
)
async def test_invalid_arguments(
    autojump_clock: trio.testing.MockClock, name: str, n: Any, timeout_s: float
) -> None:
    async with open_test_kernel() as kernel:
        seen = capture_events(kernel.bus, "thread.>")
        with pytest.raises(CollabError):
            await kernel.collaborator("p").barrier(name, n, timeout_s=timeout_s)
        await settle()
        assert seen.items == []
        assert trio.current_time() == 0.0
