"""Unit tests for the overflow policies of bus subscriptions, with exact counts and survivors."""

from __future__ import annotations

import pytest
import trio
import trio.testing
from support import drain, ev, indices, parked_publish, payloads

from loomk import Event, EventBus, Overflow, OverflowPolicyError, QoS
from loomk.testing import assert_conserved

# --- helpers ------------------------------------------------------------------------------


# --- names --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("overflow", "name"),
    [
        ("block", "block"),
        (Overflow.BLOCK, "block"),
        ("drop_oldest", "drop_oldest"),
        (Overflow.DROP_OLDEST, "drop_oldest"),
        ("drop_newest", "drop_newest"),
        (Overflow.DROP_NEWEST, "drop_newest"),
        (Overflow.sample(4), "sample(4)"),
        (Overflow.latest(), "latest(...)"),
        (Overflow.aggregate(lambda a, b: b), "aggregate(...)"),
    ],
)
async def test_policy_names(overflow: object, name: str) -> None:
    bus = EventBus()
    sub = bus.subscribe("a", overflow=overflow)  # type: ignore[arg-type]
    assert sub.stats().overflow == name


def test_only_block_is_lossless() -> None:
    assert Overflow.BLOCK.lossless
    assert not Overflow.DROP_OLDEST.lossless
    assert not Overflow.DROP_NEWEST.lossless
    assert not Overflow.sample(2).lossless
    assert not Overflow.latest().lossless
    assert not Overflow.aggregate(lambda a, b: b).lossless


# --- drop_newest / drop_oldest ------------------------------------------------------------


async def test_drop_newest_discards_new_events_when_full() -> None:
    bus = EventBus()
    sub = bus.subscribe("a", overflow="drop_newest", capacity=3)
    results = [await bus.publish("a", ev(i)) for i in range(5)]
    assert results == [1, 1, 1, 0, 0]
    assert sub.stats().dropped == {"full": 2}
    assert bus.stats("a").dropped == {"full": 2}
    assert indices(drain(sub)) == [0, 1, 2]
    # room again: the next event is queued
    assert await bus.publish("a", ev(5)) == 1
    assert indices(drain(sub)) == [5]
    assert_conserved(sub, 6)


async def test_drop_oldest_evicts_the_oldest_queued_event() -> None:
    bus = EventBus()
    sub = bus.subscribe("a", overflow="drop_oldest", capacity=3)
    results = [await bus.publish("a", ev(i)) for i in range(5)]
    assert results == [1, 1, 1, 1, 1]  # the new event is always queued
    assert sub.stats().dropped == {"evicted": 2}
    assert bus.stats("a").dropped == {"evicted": 2}
    assert sub.stats().depth == 3
    assert indices(drain(sub)) == [2, 3, 4]
    assert_conserved(sub, 5)


async def test_drop_oldest_is_the_realtime_default() -> None:
    bus = EventBus()
    sub = bus.subscribe("a", qos=QoS.REALTIME, capacity=2)
    for i in range(4):
        await bus.publish("a", ev(i))
    assert indices(drain(sub)) == [2, 3]
    assert sub.stats().dropped == {"evicted": 2}


# --- sample -------------------------------------------------------------------------------


async def test_sample_keeps_every_nth_at_high_water_and_drops_full() -> None:
    bus = EventBus()
    # capacity 8: default high water is 3/4 of it = 6
    sub = bus.subscribe("a", overflow=Overflow.sample(3), capacity=8)
    results = [await bus.publish("a", ev(i)) for i in range(20)]
    # 0..5 fill to the mark; from then on every 3rd arrival (8, 11, 14, 17) is kept, but
    # 14 and 17 find the queue full
    assert [i for i, r in enumerate(results) if r] == [0, 1, 2, 3, 4, 5, 8, 11]
    assert sub.stats().dropped == {"sampled": 10, "full": 2}
    assert sub.stats().depth == 8
    # take three: below the mark again, so the counter restarts
    assert indices([sub.receive_nowait() for _ in range(3)]) == [0, 1, 2]
    results = [await bus.publish("a", ev(i)) for i in range(20, 24)]
    assert results == [1, 0, 0, 1]
    assert indices(drain(sub)) == [3, 4, 5, 8, 11, 20, 23]
    assert sub.stats().dropped == {"sampled": 12, "full": 2}
    assert bus.stats("a").dropped == {"sampled": 12, "full": 2}
    assert_conserved(sub, 24)


async def test_sample_with_explicit_high_water() -> None:
    bus = EventBus()
    sub = bus.subscribe("a", overflow=Overflow.sample(2, high_water=2), capacity=10)
    for i in range(10):
        await bus.publish("a", ev(i))
    assert indices(drain(sub)) == [0, 1, 3, 5, 7, 9]
    assert sub.stats().dropped == {"sampled": 4}
    assert_conserved(sub, 10)


async def test_sample_drops_nothing_below_high_water() -> None:
    bus = EventBus()
    sub = bus.subscribe("a", overflow=Overflow.sample(5), capacity=8)
    got: list[int] = []
    for i in range(50):
        await bus.publish("a", ev(i))
        if i % 3 == 2:  # keep the depth below 6
            got += indices(drain(sub))
    got += indices(drain(sub))
    assert got == list(range(50))
    assert sub.stats().dropped == {}


async def test_sample_one_keeps_everything_until_full() -> None:
    bus = EventBus()
    sub = bus.subscribe("a", overflow=Overflow.sample(1), capacity=4)
    for i in range(6):
        await bus.publish("a", ev(i))
    assert indices(drain(sub)) == [0, 1, 2, 3]
    assert sub.stats().dropped == {"full": 2}


# --- latest -------------------------------------------------------------------------------


async def test_latest_by_topic_replaces_in_place() -> None:
    bus = EventBus()
    sub = bus.subscribe("s.*", overflow=Overflow.latest(), capacity=4)
    sent = [("s.a", 0), ("s.b", 1), ("s.a", 2), ("s.c", 3), ("s.a", 4), ("s.b", 5)]
    results = [await bus.publish(topic, ev(i)) for topic, i in sent]
    assert results == [1] * 6
    assert sub.stats().depth == 3
    assert sub.stats().dropped == {"replaced": 3}
    assert bus.stats("s.a").dropped == {"replaced": 2}
    assert bus.stats("s.b").dropped == {"replaced": 1}
    got = drain(sub)
    # each key keeps the position of its first queued event, with the newest value
    assert [(topic, int(e.payload)) for topic, e in got] == [("s.a", 4), ("s.b", 5), ("s.c", 3)]
    # once taken, a key starts a new slot at the back
    await bus.publish("s.b", ev(6))
    await bus.publish("s.a", ev(7))
    assert [(t, int(e.payload)) for t, e in drain(sub)] == [("s.b", 6), ("s.a", 7)]
    assert_conserved(sub, 8)


async def test_latest_evicts_the_oldest_key_when_full_of_distinct_keys() -> None:
    bus = EventBus()
    sub = bus.subscribe(">", overflow=Overflow.latest(), capacity=3)
    for i, topic in enumerate(["a", "b", "a", "c", "d", "b"]):
        await bus.publish(topic, ev(i))
    # a(0) replaced by a(2); d evicts the oldest key a; b(5) replaces b(1)
    assert [(t, int(e.payload)) for t, e in drain(sub)] == [("b", 5), ("c", 3), ("d", 4)]
    assert sub.stats().dropped == {"replaced": 2, "evicted": 1}
    assert bus.stats("a").dropped == {"replaced": 1, "evicted": 1}
    assert sub.stats().high_water == 3
    assert_conserved(sub, 6)


async def test_latest_by_metadata_key() -> None:
    bus = EventBus()
    sub = bus.subscribe("sensor", overflow=Overflow.latest("device"), capacity=8)
    sent = [("x", 0), ("y", 1), ("x", 2), ("z", 3), ("y", 4), ("x", 5)]
    for device, i in sent:
        await bus.publish("sensor", ev(i, device=device))
    got = drain(sub)
    assert [(e.metadata["device"], int(e.payload)) for _, e in got] == [
        ("x", 5),
        ("y", 4),
        ("z", 3),
    ]
    assert sub.stats().dropped == {"replaced": 3}


async def test_latest_by_key_function() -> None:
    bus = EventBus()
    calls: list[tuple[str, int]] = []

    def key(topic: str, event: Event) -> str:
        calls.append((topic, int(event.payload)))
        return event.type

    sub = bus.subscribe("k.>", overflow=Overflow.latest(key), capacity=8)
    await bus.publish("k.1", ev(0, "a"))
    await bus.publish("k.2", ev(1, "b"))
    await bus.publish("k.3", ev(2, "a"))
    assert calls == [("k.1", 0), ("k.2", 1), ("k.3", 2)]
    assert [(t, int(e.payload)) for t, e in drain(sub)] == [("k.3", 2), ("k.2", 1)]
    assert sub.stats().dropped == {"replaced": 1}
    assert bus.stats("k.1").dropped == {"replaced": 1}
    assert bus.stats("k.3").delivered == 1


# --- aggregate ----------------------------------------------------------------------------


def concat(queued: Event, new: Event) -> Event:
    return Event("sum", queued.payload + b"+" + new.payload)


async def test_aggregate_merges_into_the_newest_at_capacity() -> None:
    bus = EventBus()
    sub = bus.subscribe("a", overflow=Overflow.aggregate(concat), capacity=3)
    results = [await bus.publish("a", ev(i)) for i in range(6)]
    assert results == [1] * 6
    assert sub.stats().depth == 3
    assert sub.stats().dropped == {"aggregated": 3}
    assert bus.stats("a").dropped == {"aggregated": 3}
    assert payloads(drain(sub)) == [b"0", b"1", b"2+3+4+5"]
    assert bus.stats("a").delivered == 3
    assert_conserved(sub, 6)


async def test_aggregate_calls_merge_with_queued_then_new() -> None:
    bus = EventBus()
    seen: list[tuple[bytes, bytes]] = []

    def merge(queued: Event, new: Event) -> Event:
        seen.append((queued.payload, new.payload))
        return new

    sub = bus.subscribe("a", overflow=Overflow.aggregate(merge), capacity=1)
    first, second, third = ev(0), ev(1), ev(2)
    for event in (first, second, third):
        await bus.publish("a", event)
    assert seen == [(b"0", b"1"), (b"1", b"2")]
    [(_, got)] = drain(sub)
    assert got is third


async def test_aggregate_with_explicit_high_water() -> None:
    bus = EventBus()
    sub = bus.subscribe("a", overflow=Overflow.aggregate(concat, high_water=2), capacity=5)
    for i in range(4):
        await bus.publish("a", ev(i))
    assert sub.stats().depth == 2
    assert payloads([sub.receive_nowait()]) == [b"0"]
    # below the mark again: the next event is queued, then merging resumes
    for i in range(4, 6):
        await bus.publish("a", ev(i))
    assert payloads(drain(sub)) == [b"1+2+3", b"4+5"]
    assert sub.stats().dropped == {"aggregated": 3}
    assert_conserved(sub, 6)


async def test_aggregate_error_drops_the_new_event_and_spares_the_publisher() -> None:
    bus = EventBus()

    def merge(queued: Event, new: Event) -> Event:
        if new.payload == b"boom":
            raise ValueError("cannot merge")
        if new.payload == b"odd":
            return "not an event"  # type: ignore[return-value]
        return concat(queued, new)

    sub = bus.subscribe("a", overflow=Overflow.aggregate(merge), capacity=1)
    witness = bus.subscribe("a", qos=QoS.REALTIME)
    assert await bus.publish("a", Event("m", b"0")) == 2
    assert await bus.publish("a", Event("m", b"boom")) == 1
    assert await bus.publish("a", Event("m", b"odd")) == 1
    assert await bus.publish("a", Event("m", b"1")) == 2
    assert sub.stats().dropped == {"aggregate_error": 2, "aggregated": 1}
    assert bus.stats("a").dropped == {"aggregate_error": 2, "aggregated": 1}
    assert payloads(drain(sub)) == [b"0+1"]
    assert payloads(drain(witness)) == [b"0", b"boom", b"odd", b"1"]
    assert_conserved(sub, 4)


# --- block --------------------------------------------------------------------------------


async def test_block_parks_publisher_when_full_and_releases_it_on_take() -> None:
    bus = EventBus()
    sub = bus.subscribe("a", overflow="block", capacity=2)
    assert await bus.publish("a", ev(0)) == 1
    assert await bus.publish("a", ev(1)) == 1
    async with parked_publish(bus, "a", ev(2)) as results:
        assert sub.stats().depth == 2
        await trio.testing.wait_all_tasks_blocked()
        assert results == []  # still parked: nothing was taken
        assert indices([sub.receive_nowait()]) == [0]
        assert sub.stats().depth == 2  # the parked event took the freed slot
        await trio.testing.wait_all_tasks_blocked()
        assert results == [1]
    assert indices(drain(sub)) == [1, 2]
    assert sub.stats().dropped == {}
    assert_conserved(sub, 3)


async def test_block_releases_publisher_when_a_waiting_consumer_takes() -> None:
    bus = EventBus()
    sub = bus.subscribe("a", capacity=1)  # batched default: block
    got: list[tuple[str, Event]] = []
    progress: list[int] = []

    async def publisher() -> None:
        for i in range(5):
            await bus.publish("a", ev(i))
            progress.append(i)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(publisher)
        await trio.testing.wait_all_tasks_blocked()
        assert progress == [0]  # event 1 waits for room
        for expected in range(4):
            got.append(await sub.receive())
            await trio.testing.wait_all_tasks_blocked()
            assert progress == list(range(expected + 2))
        got.append(await sub.receive())
    assert indices(got) == list(range(5))


async def test_block_parked_publishers_are_served_fifo() -> None:
    bus = EventBus()
    sub = bus.subscribe("a", overflow=Overflow.BLOCK, capacity=1)
    await bus.publish("a", ev(0))
    done: list[int] = []

    async def publisher(i: int) -> None:
        await bus.publish("a", ev(i))
        done.append(i)

    async with trio.open_nursery() as nursery:
        for i in (1, 2, 3):
            nursery.start_soon(publisher, i)
            await trio.testing.wait_all_tasks_blocked()  # fixes the parking order
        assert done == []
        for expected_done, expected_taken in [([1], 0), ([1, 2], 1), ([1, 2, 3], 2)]:
            assert indices([sub.receive_nowait()]) == [expected_taken]
            await trio.testing.wait_all_tasks_blocked()
            assert done == expected_done
    assert indices(drain(sub)) == [3]


async def test_block_keeps_each_publishers_order() -> None:
    bus = EventBus()
    sub = bus.subscribe("a", overflow="block", capacity=2)
    got: list[tuple[str, Event]] = []

    async def publisher(base: int) -> None:
        for i in range(50):
            await bus.publish("a", ev(base + i))

    async def consumer() -> None:
        async for item in sub:
            got.append(item)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(consumer)
        async with trio.open_nursery() as publishers:
            for base in (0, 1000, 2000):
                publishers.start_soon(publisher, base)
        await trio.testing.wait_all_tasks_blocked()
        sub.unsubscribe()
    received = indices(got)
    assert sorted(received) == [b + i for b in (0, 1000, 2000) for i in range(50)]
    for base in (0, 1000, 2000):
        assert [i for i in received if base <= i < base + 1000] == list(range(base, base + 50))
    assert sub.stats().dropped == {}


async def test_block_cancelled_parked_publisher_counts_cancelled() -> None:
    bus = EventBus()
    sub = bus.subscribe("a", overflow="block", capacity=1)
    await bus.publish("a", ev(0))
    outcome: dict[int, object] = {}
    scopes: dict[int, trio.CancelScope] = {}

    async def publisher(i: int) -> None:
        with trio.CancelScope() as scope:
            scopes[i] = scope
            outcome[i] = await bus.publish("a", ev(i))
            return
        outcome[i] = "cancelled"

    async with trio.open_nursery() as nursery:
        for i in (1, 2, 3):
            nursery.start_soon(publisher, i)
            await trio.testing.wait_all_tasks_blocked()
        scopes[2].cancel()
        await trio.testing.wait_all_tasks_blocked()
        assert outcome == {2: "cancelled"}
        assert sub.stats().dropped == {"cancelled": 1}
        assert bus.stats("a").dropped == {"cancelled": 1}
        assert sub.stats().depth == 1
        assert indices([sub.receive_nowait()]) == [0]
        assert indices([sub.receive_nowait()]) == [1]
        assert indices([sub.receive_nowait()]) == [3]
        await trio.testing.wait_all_tasks_blocked()
    assert outcome == {1: 1, 2: "cancelled", 3: 1}
    assert_conserved(sub, 4)
    stats = bus.stats("a")
    assert (stats.published, stats.delivered, stats.dropped) == (4, 3, {"cancelled": 1})


async def test_block_unsubscribe_releases_parked_publisher() -> None:
    bus = EventBus()
    sub = bus.subscribe("a", overflow="block", capacity=1)
    other = bus.subscribe("a", qos=QoS.REALTIME)
    await bus.publish("a", ev(0))
    async with parked_publish(bus, "a", ev(1)) as results:
        sub.unsubscribe()
    assert results == [1]  # ``other`` still got it
    assert sub.stats().dropped == {"closed": 1}
    assert indices(drain(sub)) == [0]
    assert indices(drain(other)) == [0, 1]
    assert_conserved(sub, 2)


async def test_block_fan_out_waits_in_subscription_order() -> None:
    bus = EventBus()
    before = bus.subscribe("a", qos=QoS.REALTIME)
    blocking = bus.subscribe("a", overflow="block", capacity=1)
    after = bus.subscribe("a", qos=QoS.REALTIME)
    await bus.publish("a", ev(0))
    async with parked_publish(bus, "a", ev(1)) as results:
        assert before.stats().depth == 2  # offered before the blocking subscription
        assert after.stats().depth == 1  # not yet
        blocking.receive_nowait()
        await trio.testing.wait_all_tasks_blocked()
        assert after.stats().depth == 2
    assert results == [3]
    assert indices(drain(after)) == [0, 1]


async def test_block_on_realtime_qos_is_lossless() -> None:
    bus = EventBus()
    sub = bus.subscribe("a", qos=QoS.REALTIME, overflow="block", capacity=2)
    got: list[tuple[str, Event]] = []
    async with trio.open_nursery() as nursery:

        async def consumer() -> None:
            async for item in sub:
                got.append(item)

        nursery.start_soon(consumer)
        for i in range(200):
            await bus.publish("a", ev(i))
        await trio.testing.wait_all_tasks_blocked()
        sub.unsubscribe()
    assert indices(got) == list(range(200))
    assert sub.stats().dropped == {}
    assert sub.stats().high_water == 2


async def test_cancelled_parked_publisher_keeps_conservation_for_later_subscriptions() -> None:
    """Subscriptions after the one the publisher was parked on matched the event too.

    Conservation (matched == delivered + dropped + filtered) must hold for them and for the
    topic, even though the fan-out stopped at the cancelled wait.
    """
    bus = EventBus()
    blocking = bus.subscribe("t", overflow="block", capacity=1)
    later = bus.subscribe("t", qos=QoS.REALTIME)
    other_type = bus.subscribe("t", event_types={"other"})
    await bus.publish("t", ev(0))
    async with trio.open_nursery() as nursery:
        nursery.start_soon(bus.publish, "t", ev(1))
        await trio.testing.wait_all_tasks_blocked()
        nursery.cancel_scope.cancel()
    assert indices(drain(blocking)) == [0]
    assert indices(drain(later)) == [0]
    assert drain(other_type) == []
    assert blocking.stats().dropped == {"cancelled": 1}
    assert later.stats().dropped == {"cancelled": 1}
    assert other_type.stats().filtered == 2  # filtered, not dropped, though never reached
    assert_conserved(blocking, 2)
    assert_conserved(later, 2)
    assert_conserved(other_type, 2)
    stats = bus.stats("t")
    assert (stats.published, stats.matched) == (2, 2 * 3)
    assert_conserved(bus, "t")


async def test_a_cancelled_publisher_accounts_for_the_fan_out_it_started_with() -> None:
    """Subscriptions change while a cancelled publisher waits to run: it still accounts for
    exactly the subscriptions its publish matched, and ends cancelled, nothing else."""
    bus = EventBus()
    blocking = bus.subscribe("t", overflow="block", capacity=1)
    later = bus.subscribe("t", qos=QoS.REALTIME)
    await bus.publish("t", ev(0))
    newcomer = None
    async with trio.open_nursery() as nursery:
        nursery.start_soon(bus.publish, "t", ev(1))
        await trio.testing.wait_all_tasks_blocked()
        nursery.cancel_scope.cancel()
        blocking.unsubscribe()  # before the publisher has run again
        newcomer = bus.subscribe("t")
    assert indices(drain(blocking)) == [0]
    assert indices(drain(later)) == [0]
    assert drain(newcomer) == []  # subscribed after that publish: not part of it
    assert later.stats().dropped == {"cancelled": 1}
    assert_conserved(later, 2)
    assert_conserved(newcomer, 0)
    assert_conserved(bus, "t")


async def test_latest_key_function_that_raises_drops_only_that_event() -> None:
    bus = EventBus()

    def room(topic: str, event: Event) -> str:
        return event.metadata["room"]  # KeyError when absent

    sub = bus.subscribe("t", overflow=Overflow.latest(room))
    other = bus.subscribe("t")
    assert await bus.publish("t", ev(1, room="a")) == 2
    assert await bus.publish("t", ev(2)) == 1  # the key function fails: only `other` queues it
    assert await bus.publish("t", ev(3, room="a")) == 2
    assert indices(drain(sub)) == [3]
    assert indices(drain(other)) == [1, 2, 3]
    assert sub.stats().dropped == {"key_error": 1, "replaced": 1}
    assert_conserved(sub, 3)


@pytest.mark.parametrize("high_water", [True, 0, -1, 1.5])
def test_bad_high_water_is_rejected(high_water: object) -> None:
    with pytest.raises(OverflowPolicyError):
        Overflow.sample(2, high_water=high_water)  # type: ignore[arg-type]
    with pytest.raises(OverflowPolicyError):
        Overflow.aggregate(lambda a, b: b, high_water=high_water)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "overflow",
    [
        "block",
        "drop_oldest",
        "drop_newest",
        Overflow.sample(3, high_water=2),
        Overflow.latest("k"),
        Overflow.aggregate(lambda queued, new: new, high_water=3),
    ],
    ids=str,
)
async def test_mailbox_depth_and_high_water_track_every_policy(overflow: object) -> None:
    bus = EventBus()
    sub = bus.subscribe("t", overflow=overflow, capacity=4)  # type: ignore[arg-type]
    mailbox = sub._mailbox
    seen_high = 0
    for i in range(40):
        if i % 7 == 6:
            drain(sub)
        elif i % 5 == 4 and sub.stats().depth:
            sub.receive_nowait()
        else:
            with trio.move_on_after(0):  # a full `block` lane: skip this publish
                await bus.publish("t", ev(i, k=str(i % 3)))
        depth = sub.stats().depth
        seen_high = max(seen_high, depth)
        assert len(mailbox) == depth
        assert mailbox.high_water == sub.stats().high_water == seen_high
    sub.close()
    assert len(mailbox) == 0
