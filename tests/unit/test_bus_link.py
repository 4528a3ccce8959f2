"""The local half of a bus link (loomk.links.BusLink), without a transport."""

from __future__ import annotations

import pytest
import trio
import trio.testing

from loomk import ActionBroker, Event, EventBus, LinkError, TopicError
from loomk.links import ORIGIN_KEY, BusLink
from loomk.testing import open_test_kernel


def _event(n: int) -> Event:
    return Event("reading", str(n).encode())


async def test_outgoing_batches_leave_out_what_came_in_through_the_link() -> None:
    async with open_test_kernel() as kernel:
        link = BusLink(kernel.bus, kernel.broker, "edge-1", batch_max=3)
        link.open()
        try:
            await kernel.bus.publish("a.one", _event(1))
            await link.incoming([("a.two", _event(2))])  # from the other side
            await kernel.bus.publish("a.three", _event(3))
            await kernel.bus.publish("a.four", _event(4))
            await kernel.bus.publish("a.five", _event(5))
            first = await link.outgoing()
            second = await link.outgoing()
        finally:
            link.close()
    assert [topic for topic, _ in first] == ["a.one", "a.three", "a.four"]
    assert [topic for topic, _ in second] == ["a.five"]
    stats = link.stats()
    assert (stats.sent, stats.received) == (4, 1)


async def test_incoming_events_are_stamped_and_bad_topics_counted_not_raised() -> None:
    async with open_test_kernel() as kernel:
        link = BusLink(kernel.bus, kernel.broker, "edge-1")
        async with kernel.bus.subscribe("in.>") as sub:
            await link.incoming(
                [("in.ok", _event(1)), ("in..bad", _event(2)), ("in.ok2", _event(3))]
            )
            topics = [sub.receive_nowait() for _ in range(2)]
    assert [topic for topic, _ in topics] == ["in.ok", "in.ok2"]
    assert all(event.metadata[ORIGIN_KEY] == "edge-1" for _, event in topics)
    assert (link.stats().received, link.stats().rejected) == (2, 1)


async def test_while_disconnected_the_backlog_keeps_the_newest_within_the_bound() -> None:
    async with open_test_kernel() as kernel:
        link = BusLink(kernel.bus, kernel.broker, "edge-1", buffer=5, batch_max=100)
        link.open()
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(link.hold)
                for n in range(8):
                    await kernel.bus.publish("held", _event(n))
                await trio.testing.wait_all_tasks_blocked()
                nursery.cancel_scope.cancel()
            stats = link.stats()
            batch = await link.outgoing()
            link.requeue(batch[3:])  # the transport failed to send the last two
            again = await link.outgoing()
        finally:
            link.close()
    assert (stats.dropped, stats.backlog) == (3, 5)
    assert [event.payload for _, event in batch] == [b"3", b"4", b"5", b"6", b"7"]
    assert [event.payload for _, event in again] == [b"6", b"7"]


async def test_interest_follows_local_subscriptions_and_wakes_the_transport() -> None:
    async with open_test_kernel() as kernel:
        link = BusLink(kernel.bus, kernel.broker, "edge-1", export=[">"])
        link.open()
        try:
            before = link.interest()
            assert ">" not in before  # the link's own binding is no interest
            assert {"thread.*.reply", "thread.*.barrier"} <= set(before)
            with trio.move_on_after(0) as nothing_yet:
                await link.wait_changed()
            sub = kernel.bus.subscribe("sensor.*.temp")
            await link.wait_changed()  # woken by the new pattern
            assert "sensor.*.temp" in link.interest()
            sub.unsubscribe()
            await link.wait_changed()
            assert "sensor.*.temp" not in link.interest()
        finally:
            link.close()
    assert nothing_yet.cancelled_caught


async def test_bad_settings_are_refused_at_once() -> None:
    async with open_test_kernel() as kernel:
        with pytest.raises(LinkError, match="origin"):
            BusLink(kernel.bus, kernel.broker, "")
        with pytest.raises(LinkError, match="buffer"):
            BusLink(kernel.bus, kernel.broker, "x", buffer=0)
        with pytest.raises(TopicError):
            BusLink(kernel.bus, kernel.broker, "x", export=["a..b"])


async def test_interest_is_still_answered_once_the_bus_is_closed() -> None:
    async with open_test_kernel() as kernel:
        link = BusLink(kernel.bus, kernel.broker, "edge-1")
        link.open()
        kernel.bus.close()
        assert link.interest() == ["thread.*.barrier", "thread.*.reply"]
        link.close()


async def test_up_and_down_are_counted_in_stats() -> None:
    async with open_test_kernel() as kernel:
        link = BusLink(kernel.bus, kernel.broker, "edge-1")
        link.up()
        link.down()
        link.up()
        assert (link.stats().connected, link.stats().connects) == (True, 2)
        link.down()
        assert (link.stats().connected, link.stats().connects) == (False, 2)


async def test_a_batch_put_back_wakes_a_waiting_outgoing() -> None:
    """A batch the transport could not send (its acknowledgement never came) goes out
    again at once, not only when something new is published."""
    async with open_test_kernel() as kernel:
        link = BusLink(kernel.bus, kernel.broker, "edge-1")
        link.open()
        try:
            await kernel.bus.publish("a.one", _event(1))
            first = await link.outgoing()
            batches: list[list[tuple[str, Event]]] = []

            async def send_next() -> None:
                batches.append(await link.outgoing())

            async with trio.open_nursery() as nursery:
                nursery.start_soon(send_next)
                await trio.testing.wait_all_tasks_blocked()
                assert batches == []  # nothing to send: it waits
                link.requeue(first)
        finally:
            link.close()
    assert [[topic for topic, _ in batch] for batch in batches] == [["a.one"]]


def test_a_pattern_another_covers_is_exported_once() -> None:
    bus = EventBus()
    link = BusLink(bus, ActionBroker(), "edge-1", export=(">", "a.*", "thread.*.reply"))
    assert link.export == (">",)
