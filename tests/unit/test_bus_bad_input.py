"""Bad input to the event bus raises a typed error and leaves the bus fully working."""

from __future__ import annotations

import pytest
import trio
from support import drain

from loomk import (
    Event,
    EventBus,
    EventError,
    LoomkError,
    Overflow,
    OverflowPolicyError,
    QoS,
    TopicError,
)
from loomk.bus import Subscription

# --- helpers ------------------------------------------------------------------------------


async def make_bus() -> tuple[EventBus, list[Subscription]]:
    """A bus with a few healthy subscriptions, already carrying one event each."""
    bus = EventBus()
    subs = [
        bus.subscribe("good.topic"),
        bus.subscribe("good.*", qos=QoS.REALTIME),
        bus.subscribe(">", overflow=Overflow.latest(), capacity=4),
    ]
    assert await bus.publish("good.topic", Event("before")) == 3
    return bus, subs


async def assert_still_working(bus: EventBus, subs: list[Subscription]) -> None:
    """Every healthy subscription received the earlier event and receives a new one."""
    assert not bus.closed
    event = Event("after", b"still here")
    assert await bus.publish("good.topic", event) == len(subs)
    for sub in subs:
        got = drain(sub)
        assert got[-1] == ("good.topic", event)
        assert got[-1][1] is event
    fresh = bus.subscribe("fresh")
    assert await bus.publish("fresh", Event("x")) == 2  # ``fresh`` and ``>``
    assert [e.type for _, e in drain(fresh)] == ["x"]


BAD_TOPICS = [
    "",
    ".",
    ".a",
    "a.",
    "a..b",
    "a.*",
    "*",
    "a.>",
    ">",
    "a*",
    "a b",
    "a\tb",
    "a\nb",
    "a\x00b",
    "x" * 1025,
    5,
    None,
    b"a.b",
    ["a"],
    ("a", "b"),
]


@pytest.mark.parametrize("topic", BAD_TOPICS, ids=repr)
async def test_publish_to_invalid_topic_raises_topic_error(topic: object) -> None:
    bus, subs = await make_bus()
    with pytest.raises(TopicError) as info:
        await bus.publish(topic, Event("x"))  # type: ignore[arg-type]
    assert info.value.code == "TOPIC_INVALID"
    assert isinstance(info.value, ValueError)
    assert isinstance(info.value, LoomkError)
    await assert_still_working(bus, subs)
    assert bus.totals().published == 3  # the failed publish is not counted


@pytest.mark.parametrize("topic", BAD_TOPICS, ids=repr)
async def test_stats_of_invalid_topic_raises_topic_error(topic: object) -> None:
    bus, subs = await make_bus()
    with pytest.raises(TopicError):
        bus.stats(topic)  # type: ignore[arg-type]
    await assert_still_working(bus, subs)


def test_longest_valid_topic_is_accepted() -> None:
    async def main() -> None:
        bus = EventBus()
        topic = "x" * 1024
        sub = bus.subscribe(topic)
        assert await bus.publish(topic, Event("x")) == 1
        assert drain(sub)[0][0] == topic

    trio.run(main)


BAD_PATTERNS = [
    "",
    ".",
    "a.",
    ".a",
    "a..b",
    "a.>.b",
    ">.a",
    "a*",
    "a.b*",
    "*a",
    ">a",
    "a>",
    "a.**",
    "a b",
    "a\x00",
    "y" * 1025,
    5,
    None,
    ["a"],
]


@pytest.mark.parametrize("pattern", BAD_PATTERNS, ids=repr)
async def test_subscribe_to_invalid_pattern_raises_topic_error(pattern: object) -> None:
    bus, subs = await make_bus()
    with pytest.raises(TopicError):
        bus.subscribe(pattern)  # type: ignore[arg-type]
    assert len(bus.subscription_stats()) == len(subs)
    await assert_still_working(bus, subs)


@pytest.mark.parametrize("pattern", ["a", "a.b", "*", ">", "a.*", "*.b", "a.>", "*.*.>", "a.*.c"])
async def test_valid_patterns_are_accepted(pattern: str) -> None:
    bus = EventBus()
    assert bus.subscribe(pattern).pattern == pattern


@pytest.mark.parametrize(
    "event",
    ["not an event", b"bytes", None, 42, {"type": "x", "payload": b""}, ("x", b"")],
    ids=repr,
)
async def test_publish_non_event_raises_event_error(event: object) -> None:
    bus, subs = await make_bus()
    with pytest.raises(EventError) as info:
        await bus.publish("good.topic", event)  # type: ignore[arg-type]
    assert info.value.code == "EVENT_INVALID"
    for sub in subs:
        assert sub.stats().depth == 1  # nothing was queued
    assert bus.stats("good.topic").published == 1  # the failed publish is not counted
    await assert_still_working(bus, subs)


@pytest.mark.parametrize(
    "event_types",
    [
        "type_a",  # a plain str is a collection of characters: refused
        [1],
        [None],
        [""],
        ["ok", b"bytes"],
        [["nested"]],  # an unhashable member is still a non-str member
        5,
    ],
    ids=repr,
)
async def test_bad_event_types_raise_event_error(event_types: object) -> None:
    bus, subs = await make_bus()
    with pytest.raises(EventError):
        bus.subscribe("good.topic", event_types=event_types)  # type: ignore[arg-type]
    assert len(bus.subscription_stats()) == len(subs)
    await assert_still_working(bus, subs)


@pytest.mark.parametrize(
    "overflow",
    ["sample", "latest", "aggregate", "drop", "BLOCK", "", 5, object(), QoS.REALTIME],
    ids=repr,
)
async def test_unknown_overflow_raises_overflow_policy_error(overflow: object) -> None:
    bus, subs = await make_bus()
    with pytest.raises(OverflowPolicyError) as info:
        bus.subscribe("good.topic", overflow=overflow)  # type: ignore[arg-type]
    assert info.value.code == "OVERFLOW_POLICY_INVALID"
    assert len(bus.subscription_stats()) == len(subs)
    await assert_still_working(bus, subs)


@pytest.mark.parametrize(
    "make",
    [
        lambda: Overflow.sample(0),
        lambda: Overflow.sample(-1),
        lambda: Overflow.sample(1.5),
        lambda: Overflow.sample(True),
        lambda: Overflow.sample("2"),
        lambda: Overflow.sample(2, high_water=0),
        lambda: Overflow.sample(2, high_water=-3),
        lambda: Overflow.sample(2, high_water=2.5),
        lambda: Overflow.latest(5),
        lambda: Overflow.latest(b"key"),
        lambda: Overflow.aggregate(None),
        lambda: Overflow.aggregate("merge"),
        lambda: Overflow.aggregate(lambda a, b: b, high_water=0),
    ],
)
def test_invalid_policy_parameters_raise_overflow_policy_error(make) -> None:
    with pytest.raises(OverflowPolicyError):
        make()


@pytest.mark.parametrize("capacity", [0, -1, 1.5, "8", True, 2**0.5])
async def test_invalid_capacity_raises_overflow_policy_error(capacity: object) -> None:
    bus, subs = await make_bus()
    with pytest.raises(OverflowPolicyError):
        bus.subscribe("good.topic", capacity=capacity)  # type: ignore[arg-type]
    assert len(bus.subscription_stats()) == len(subs)
    await assert_still_working(bus, subs)


async def test_failing_merge_function_does_not_disturb_others() -> None:
    bus, subs = await make_bus()

    def merge(queued: Event, new: Event) -> Event:
        raise RuntimeError("user bug")

    broken = bus.subscribe("good.topic", overflow=Overflow.aggregate(merge), capacity=1)
    assert await bus.publish("good.topic", Event("one")) == 4
    assert await bus.publish("good.topic", Event("two")) == 3
    assert broken.stats().dropped == {"aggregate_error": 1}
    drain(broken)
    await assert_still_working(bus, [*subs, broken])


async def test_errors_in_a_row_leave_the_counters_exact() -> None:
    bus, subs = await make_bus()
    for bad in ("", "a..b", "a.*"):
        with pytest.raises(TopicError):
            await bus.publish(bad, Event("x"))
    with pytest.raises(EventError):
        await bus.publish("good.topic", "x")  # type: ignore[arg-type]
    with pytest.raises(EventError):
        bus.subscribe("good.topic", event_types="x")
    with pytest.raises(OverflowPolicyError):
        bus.subscribe("good.topic", capacity=0)
    with pytest.raises(TopicError):
        bus.subscribe("a.>.b")
    await assert_still_working(bus, subs)
    totals = bus.totals()
    assert totals.published == 3
    assert totals.subscriptions == len(subs) + 1
    # ``>`` keeps the latest event per topic: "after" replaced the undrained "before"
    assert totals.dropped == {"replaced": 1}
    # good.topic 2, good.* 2, ``>`` 1 (its "x" is still queued), fresh 1
    assert totals.delivered == 2 + 2 + 1 + 1
    assert totals.depth == 1
