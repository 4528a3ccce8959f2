"""``CollabService.stats()``: a frozen snapshot of answers, unclaimed answers, timeouts, waiting
calls and barrier rounds, counted as calls run through a real kernel."""

from __future__ import annotations

import dataclasses

import pytest
import trio
import trio.testing
from collab_support import loom_reply, settle, start_call, start_responder

from loomk import CollabTimeout
from loomk.collab import CollabStats
from loomk.testing import open_test_kernel


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
