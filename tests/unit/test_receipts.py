"""Receipts (``EventBus.publish_with_receipt``): an event is settled once every lossless lane
that queued it is past it, taken for a plain subscription, taken and committed for an agent;
lossy lanes never hold it, a closed lane no longer does, and consumers that settle tell the
bus's watchers as their commit begins (so a transport's record joins that commit)."""

from __future__ import annotations

import trio
import trio.testing

from loomk import Agent, Context, Event, EventBus
from loomk.testing import open_test_kernel


class Gated(Agent):
    """Handles ``work.*`` events one at a time, each waiting for ``gate``; writes state."""

    topics = ("work.*",)

    def __init__(self) -> None:
        super().__init__("gated")
        self.gate = trio.Event()
        self.handled: list[bytes] = []

    async def on_event(self, ctx: Context, event: Event) -> None:
        await self.gate.wait()
        ctx.state[event.id] = 1
        self.handled.append(event.payload)


async def test_an_agents_receipt_settles_when_its_handler_has_committed() -> None:
    async with open_test_kernel() as kernel:
        agent = Gated()
        await kernel.spawn(agent)
        settled_at_commit: list[bool] = []
        receipts = []

        def seen() -> None:  # called as the agent's commit begins
            settled_at_commit.append(all(r.settled for r in receipts))

        kernel.bus.watch_settled(seen)
        for i in range(3):
            receipts.append(await kernel.bus.publish_with_receipt("work.x", Event("w", b"%d" % i)))
        assert [r.lanes for r in receipts] == [1, 1, 1]
        await trio.testing.wait_all_tasks_blocked()
        assert not any(r.settled for r in receipts)  # taken, but not handled
        agent.gate.set()
        with trio.fail_after(5):
            while not settled_at_commit or not settled_at_commit[-1]:
                await trio.testing.wait_all_tasks_blocked()
        assert agent.handled == [b"0", b"1", b"2"]
        assert all(r.settled for r in receipts)


async def test_a_plain_subscription_settles_on_take_and_lossy_lanes_hold_nothing() -> None:
    bus = EventBus()
    async with (
        bus.subscribe("a.*", overflow="block") as lossless,
        bus.subscribe("a.*", overflow="drop_oldest") as lossy,
    ):
        receipt = await bus.publish_with_receipt("a.b", Event("e"))
        assert receipt.lanes == 1  # the drop_oldest lane promised nothing
        assert not receipt.settled
        lossy.receive_nowait()
        assert not receipt.settled
        lossless.receive_nowait()
        assert receipt.settled
        second = await bus.publish_with_receipt("a.b", Event("e"))
    assert second.settled  # its lane closed: the subscriber left


async def test_an_event_nobody_wants_is_settled_at_once() -> None:
    bus = EventBus()
    receipt = await bus.publish_with_receipt("nobody.here", Event("e"))
    assert receipt.lanes == 0
    assert receipt.settled
    assert bus.stats("nobody.here").published == 1


async def test_an_unwatch_stops_the_settle_calls() -> None:
    async with open_test_kernel() as kernel:
        agent = Gated()
        agent.gate.set()
        await kernel.spawn(agent)
        calls: list[int] = []
        unwatch = kernel.bus.watch_settled(lambda: calls.append(1))
        await kernel.bus.publish("work.x", Event("w"))
        with trio.fail_after(5):
            while not calls:
                await trio.testing.wait_all_tasks_blocked()
        unwatch()
        before = len(calls)
        await kernel.bus.publish("work.x", Event("w"))
        with trio.fail_after(5):
            while len(agent.handled) < 2:
                await trio.testing.wait_all_tasks_blocked()
        assert len(calls) == before
