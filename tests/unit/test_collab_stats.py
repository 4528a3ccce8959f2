"""``CollabService.stats()``: a frozen snapshot of answers, unclaimed answers, timeouts, waiting
calls and barrier rounds, counted as calls run through a real kernel."""

from __future__ import annotations

import dataclasses

import pytest
import trio
import trio.testing
from collab_support import loom_reply, settle, start_call, start_responder

from loomk import CollabTimeout, Context, Event
from loomk.collab import CollabStats
from loomk.testing import ScriptedAgent, open_test_kernel


async def test_answers_unclaimed_answers_timeouts_and_waiting_calls_are_counted(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with open_test_kernel() as kernel:
        service = kernel.collab_service
        assert service.stats() == CollabStats(0, 0, 0, 0, 0, 0, 0)
        gate = trio.Event()
        seen = await start_responder(kernel, "svc.echo", sender="svc", gate=gate)
        caller = kernel.collaborator("tester")
        async with trio.open_nursery() as nursery:
            call = start_call(nursery, lambda: caller.request("svc.echo", b"q", timeout_s=5))
            await settle()
            assert service.stats().waiting == 1
            before = service.stats()
            gate.set()
        assert call.result().payload == b"re:q"
        after = service.stats()
        assert (after.waiting, after.answers, after.unclaimed) == (0, 1, 0)
        assert before.answers == 0  # a snapshot does not follow later calls
        topic, late = loom_reply(seen[0], b"late", sender="svc")
        await kernel.bus.publish(topic, late)  # the call has ended: nobody wants it
        with pytest.raises(CollabTimeout):
            await caller.request("svc.nobody", b"q", timeout_s=1)
        stats = service.stats()
        assert (stats.answers, stats.unclaimed, stats.timeouts, stats.waiting) == (1, 1, 1, 0)
        with pytest.raises(dataclasses.FrozenInstanceError):
            stats.answers = 5  # type: ignore[misc]


async def test_barrier_check_ins_and_rounds_are_counted(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with open_test_kernel() as kernel, trio.open_nursery() as nursery:
        service = kernel.collab_service
        first = start_call(nursery, lambda: kernel.collaborator("a").barrier("b1", 2, timeout_s=5))
        await settle()
        stats = service.stats()
        assert (stats.check_ins, stats.barriers_open, stats.barriers_completed) == (1, 1, 0)
        second = start_call(nursery, lambda: kernel.collaborator("b").barrier("b1", 2, timeout_s=5))
        await settle()
        assert first.result() == second.result() == ["a", "b"]
        stats = service.stats()
        assert (stats.check_ins, stats.barriers_open, stats.barriers_completed) == (2, 0, 1)


def bidder(agent_id: str, score: float, *, reports: bool) -> ScriptedAgent:
    """Proposes ``score`` on a call for proposals and, when awarded, reports if told to."""

    async def on_cfp(ctx: Context, event: Event) -> None:
        await ctx.propose(event, score)

    async def on_award(ctx: Context, event: Event) -> None:
        if reports and event.metadata["award_to"] == ctx.sender:
            await ctx.report(event)

    steps = {"collab.cfp": on_cfp, "collab.award": on_award, "collab.summary": ignore}
    return ScriptedAgent(agent_id, steps, topics=["thread.*.broadcast"])


async def ignore(ctx: Context, event: Event) -> None:
    """Nothing to do with this event."""


@pytest.mark.parametrize("reports", [True, False])
async def test_a_contract_net_window_is_not_a_timeout_but_a_missing_report_is(
    autojump_clock: trio.testing.MockClock, reports: bool
) -> None:
    async with open_test_kernel() as kernel:
        await kernel.spawn_many([bidder("a", 0.5, reports=reports), bidder("b", 0.9, reports=True)])
        result = await kernel.collaborator("mgr").contract_net(
            "job", b"task", window_s=1, max_awards=2, execute_timeout_s=5
        )
        assert result.complete is reports
        stats = kernel.collab_service.stats()
        assert stats.timeouts == (0 if reports else 1)  # the proposal window never counts
        assert stats.answers == 2 + (2 if reports else 1)  # proposals, then reports
        assert stats.waiting == 0


async def test_a_fanout_short_of_its_strategy_is_a_timeout(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with open_test_kernel() as kernel:
        await start_responder(kernel, "svc.a", sender="a")
        await start_responder(kernel, "svc.b", sender="b")
        caller = kernel.collaborator("tester")
        replies = await caller.fanout(["svc.a", "svc.b"], b"q", timeout_s=1, strategy="all")
        assert len(replies) == 2
        assert kernel.collab_service.stats().timeouts == 0
        replies = await caller.fanout(["svc.a", "svc.none"], b"q", timeout_s=1, strategy="all")
        assert len(replies) == 1
        stats = kernel.collab_service.stats()
        assert (stats.timeouts, stats.answers) == (1, 3)
