"""Unit tests for EventBus.attach_handler (HandlerLane), detach, forget_topic and the stats.

A handler lane hands each event to a synchronous ``handler(topic, event)`` inside
``publish``; True claims it (delivered), False leaves it ``unclaimed`` (dropped), raising
counts ``handler_error`` (dropped) without disturbing the publisher or other subscribers.
"""

from __future__ import annotations

from typing import Any

import pytest
from support import drain, ev, indices

from loomk import Event, EventBus, EventError, TopicError
from loomk.testing import assert_conserved


class Recorder:
    """A handler that records what it gets and claims per ``claim``."""

    def __init__(self, claim: bool = True) -> None:
        self.claim = claim
        self.seen: list[tuple[str, Event]] = []

    def __call__(self, topic: str, event: Event) -> bool:
        self.seen.append((topic, event))
        return self.claim


# --- delivery -----------------------------------------------------------------------------


async def test_handler_runs_synchronously_inside_publish() -> None:
    bus = EventBus()
    publishing = False
    observed: list[tuple[str, Event, bool]] = []

    def handler(topic: str, event: Event) -> bool:
        observed.append((topic, event, publishing))
        return True

    bus.attach_handler("calls.reply", handler)
    event = ev(1)
    publishing = True
    delivered = await bus.publish("calls.reply", event)
    publishing = False
    assert delivered == 1
    assert len(observed) == 1
    topic, received, during = observed[0]
    assert topic == "calls.reply"
    assert received is event
    assert during  # it ran before publish returned, not in another task later


async def test_handler_sees_events_in_publish_order() -> None:
    bus = EventBus()
    recorder = Recorder()
    bus.attach_handler("t", recorder)
    for i in range(100):
        await bus.publish("t", ev(i))
    assert indices(recorder.seen) == list(range(100))


@pytest.mark.parametrize(
    ("pattern", "matching", "other"),
    [
        ("reply.*", ["reply.a", "reply.b"], ["reply.a.b", "reply", "other.a"]),
        ("reply.>", ["reply.a", "reply.a.b.c"], ["reply", "other.a"]),
        ("*.reply", ["x.reply", "y.reply"], ["x.y.reply", "reply"]),
        (">", ["a", "a.b", "z.y.x"], []),
    ],
)
async def test_handler_with_wildcard_patterns(
    pattern: str, matching: list[str], other: list[str]
) -> None:
    bus = EventBus()
    recorder = Recorder()
    bus.attach_handler(pattern, recorder)
    for i, topic in enumerate(matching + other):
        await bus.publish(topic, ev(i))
    assert [topic for topic, _ in recorder.seen] == matching
    assert indices(recorder.seen) == list(range(len(matching)))


async def test_several_handlers_and_subscriptions_on_one_topic() -> None:
    bus = EventBus()
    exact, wild = Recorder(), Recorder()
    sub = bus.subscribe("a.b")
    bus.attach_handler("a.b", exact)
    bus.attach_handler("a.*", wild)
    assert await bus.publish("a.b", ev(7)) == 3
    assert indices(exact.seen) == indices(wild.seen) == [7]
    assert indices(drain(sub)) == [7]


# --- stats: claimed, unclaimed, errors ----------------------------------------------------


async def test_claimed_events_count_as_delivered() -> None:
    bus = EventBus()
    bus.attach_handler("claim.me", Recorder(claim=True))
    for i in range(3):
        assert await bus.publish("claim.me", ev(i)) == 1
    stats = bus.stats("claim.me")
    assert stats.published == 3
    assert stats.delivered == 3
    assert stats.dropped == {}
    assert stats.subscriptions == 1
    assert bus.totals().delivered == 3
    (binding,) = bus.subscription_stats()
    assert binding.delivered == 3
    assert binding.dropped == {}


async def test_claimed_events_count_as_delivered_with_type_filters() -> None:
    bus = EventBus()
    bus.attach_handler("claim.me", Recorder(claim=True), event_types=["msg"])
    assert await bus.publish("claim.me", ev(1)) == 1
    stats = bus.stats("claim.me")
    assert stats.delivered == 1
    assert assert_conserved(bus, "claim.me").matched == 1


async def test_unclaimed_events_count_as_dropped() -> None:
    bus = EventBus()
    recorder = Recorder(claim=False)
    bus.attach_handler("not.mine", recorder)
    for i in range(4):
        assert await bus.publish("not.mine", ev(i)) == 0
    assert len(recorder.seen) == 4  # it was offered every event
    stats = bus.stats("not.mine")
    assert stats.published == 4
    assert stats.delivered == 0
    assert stats.dropped == {"unclaimed": 4}
    assert bus.totals().dropped == {"unclaimed": 4}
    (binding,) = bus.subscription_stats()
    assert binding.dropped == {"unclaimed": 4}
    assert binding.delivered == 0


async def test_handler_claims_selectively() -> None:
    bus = EventBus()
    claimed: list[int] = []

    def evens(topic: str, event: Event) -> bool:
        index = int(event.payload)
        if index % 2:
            return False
        claimed.append(index)
        return True

    bus.attach_handler("n", evens)
    results = [await bus.publish("n", ev(i)) for i in range(6)]
    assert results == [1, 0, 1, 0, 1, 0]
    assert claimed == [0, 2, 4]
    assert bus.stats("n").dropped == {"unclaimed": 3}
    (binding,) = bus.subscription_stats()
    assert (binding.delivered, binding.dropped) == (3, {"unclaimed": 3})


async def test_truthiness_decides_the_claim() -> None:
    bus = EventBus()
    answers: list[Any] = [1, 0, "yes", "", None]
    bus.attach_handler("t", lambda topic, event: answers.pop(0))
    results = [await bus.publish("t", ev(i)) for i in range(5)]
    assert results == [1, 0, 1, 0, 0]
    assert bus.stats("t").dropped == {"unclaimed": 3}
    (binding,) = bus.subscription_stats()
    assert binding.delivered == 2


async def test_raising_handler_counts_handler_error_and_harms_nobody() -> None:
    bus = EventBus()
    before = bus.subscribe("jobs.done")
    calls = 0

    def broken(topic: str, event: Event) -> bool:
        nonlocal calls
        calls += 1
        raise RuntimeError("handler bug")

    bus.attach_handler("jobs.*", broken)
    after_exact = Recorder()
    bus.attach_handler("jobs.done", after_exact)
    after = bus.subscribe("jobs.>")
    for i in range(3):
        # the publisher is unaffected: publish returns the other subscriptions' count
        assert await bus.publish("jobs.done", ev(i)) == 3
    assert calls == 3
    assert indices(drain(before)) == [0, 1, 2]
    assert indices(drain(after)) == [0, 1, 2]
    assert indices(after_exact.seen) == [0, 1, 2]
    stats = bus.stats("jobs.done")
    assert stats.dropped == {"handler_error": 3}
    assert stats.published == 3


async def test_handler_raising_a_non_runtime_error_is_contained() -> None:
    bus = EventBus()

    def broken(topic: str, event: Event) -> bool:
        raise KeyError(topic)

    bus.attach_handler("t", broken)
    sub = bus.subscribe("t")
    assert await bus.publish("t", ev(0)) == 1
    assert indices(drain(sub)) == [0]
    assert bus.stats("t").dropped == {"handler_error": 1}


# --- detach -------------------------------------------------------------------------------


async def test_detach_stops_the_handler() -> None:
    bus = EventBus()
    recorder = Recorder()
    binding = bus.attach_handler("t.x", recorder)
    await bus.publish("t.x", ev(0))
    bus.detach(binding)
    assert await bus.publish("t.x", ev(1)) == 0
    assert indices(recorder.seen) == [0]
    assert bus.stats("t.x").subscriptions == 0
    assert bus.subscription_stats() == []
    bus.detach(binding)  # idempotent
    assert await bus.publish("t.x", ev(2)) == 0
    assert indices(recorder.seen) == [0]


async def test_detach_a_wildcard_handler() -> None:
    bus = EventBus()
    recorder = Recorder()
    keep = Recorder()
    binding = bus.attach_handler("t.*", recorder)
    bus.attach_handler("t.*", keep)
    await bus.publish("t.x", ev(0))
    bus.detach(binding)
    await bus.publish("t.x", ev(1))
    await bus.publish("t.y", ev(2))
    assert indices(recorder.seen) == [0]
    assert indices(keep.seen) == [0, 1, 2]


async def test_detach_one_of_two_handlers_on_an_exact_topic() -> None:
    bus = EventBus()
    first, second = Recorder(), Recorder()
    b1 = bus.attach_handler("t", first)
    bus.attach_handler("t", second)
    await bus.publish("t", ev(0))  # the route is cached now
    bus.detach(b1)
    assert await bus.publish("t", ev(1)) == 1
    assert indices(first.seen) == [0]
    assert indices(second.seen) == [0, 1]


async def test_attach_after_the_route_is_cached() -> None:
    bus = EventBus()
    await bus.publish("t.x", ev(0))
    exact, wild = Recorder(), Recorder()
    bus.attach_handler("t.x", exact)
    bus.attach_handler("t.*", wild)
    assert await bus.publish("t.x", ev(1)) == 2
    assert indices(exact.seen) == indices(wild.seen) == [1]


# --- event type filtering -----------------------------------------------------------------


async def test_event_types_filter() -> None:
    bus = EventBus()
    recorder = Recorder()
    bus.attach_handler("t", recorder, event_types=["reply", "error"])
    await bus.publish("t", ev(0, "reply"))
    await bus.publish("t", ev(1, "progress"))
    await bus.publish("t", ev(2, "error"))
    await bus.publish("t", ev(3, "progress"))
    assert indices(recorder.seen) == [0, 2]
    stats = bus.stats("t")
    assert stats.filtered == 2
    assert stats.dropped == {}
    (binding,) = bus.subscription_stats()
    assert (binding.filtered, binding.delivered) == (2, 2)


def test_bad_arguments_raise() -> None:
    bus = EventBus()
    with pytest.raises(EventError):
        bus.attach_handler("t", "not callable")  # type: ignore[arg-type]
    with pytest.raises(EventError):
        bus.attach_handler("t", Recorder(), event_types="reply")
    with pytest.raises(TopicError):
        bus.attach_handler("a..b", Recorder())
    with pytest.raises(TopicError):
        bus.attach_handler("a.>.b", Recorder())
    assert bus.subscription_stats() == []


# --- conservation -------------------------------------------------------------------------


async def test_conservation_over_a_mix_of_handlers_and_a_subscription() -> None:
    bus = EventBus()
    counter = 0

    def sometimes(topic: str, event: Event) -> bool:
        nonlocal counter
        counter += 1
        if counter % 3 == 0:
            raise ValueError("every third")
        return counter % 3 == 1

    bus.attach_handler("mix.>", Recorder(claim=True))
    bus.attach_handler("mix.a", Recorder(claim=False))
    bus.attach_handler("mix.*", sometimes)
    bus.attach_handler("mix.a", Recorder(), event_types=["keep"])
    sub = bus.subscribe("mix.a", event_types=["keep"])
    published = 30
    for i in range(published):
        await bus.publish("mix.a", ev(i, "keep" if i % 2 else "skip"))
    assert len(drain(sub)) == published // 2
    stats = bus.stats("mix.a")
    assert stats.published == published
    matched = published * 5  # every event matches all five bindings
    assert stats.filtered == 2 * (published // 2)
    assert stats.dropped["unclaimed"] == published + published // 3
    assert stats.dropped["handler_error"] == published // 3
    assert stats.delivered == published + published // 3 + 2 * (published // 2)
    assert assert_conserved(bus, "mix.a").matched == matched
    assert assert_conserved(bus, ">").matched == matched


# --- forget_topic -------------------------------------------------------------------------


async def test_forget_topic_drops_a_route_without_exact_subscribers() -> None:
    bus = EventBus()
    recorder = Recorder(claim=False)
    bus.attach_handler("reply.*", recorder)
    await bus.publish("reply.c1", ev(0))
    await bus.publish("reply.c1", ev(1))
    await bus.publish("reply.c2", ev(2))
    assert set(bus.topics()) == {"reply.c1", "reply.c2"}
    bus.forget_topic("reply.c1")
    assert bus.topics() == ["reply.c2"]
    forgotten = bus.stats("reply.c1")
    assert forgotten.published == 0  # no route any more: zero counters
    assert forgotten.subscriptions == 1  # the wildcard still matches it
    totals = bus.totals()
    assert totals.published == 3  # the counts stay in the totals
    assert totals.dropped == {"unclaimed": 3}
    # the handler still gets later events on the forgotten topic
    await bus.publish("reply.c1", ev(3))
    assert indices(recorder.seen) == [0, 1, 2, 3]
    assert "reply.c1" in bus.topics()
    assert bus.stats("reply.c1").published == 1
    assert bus.totals().published == 4


async def test_forget_topic_without_subscribers_keeps_the_totals() -> None:
    bus = EventBus()
    for i in range(5):
        await bus.publish("lonely.topic", ev(i))
    assert bus.topics() == ["lonely.topic"]
    bus.forget_topic("lonely.topic")
    assert bus.topics() == []
    assert bus.totals().published == 5


async def test_forget_topic_keeps_its_counts_in_totals_for_dropped_too() -> None:
    bus = EventBus()
    bus.attach_handler("r.*", Recorder(claim=False))
    await bus.publish("r.x", ev(0))
    bus.forget_topic("r.x")
    assert bus.totals().dropped == {"unclaimed": 1}
    assert assert_conserved(bus, ">").matched == 1


async def test_forget_topic_keeps_a_topic_with_an_exact_subscription() -> None:
    bus = EventBus()
    sub = bus.subscribe("reply.c1")
    bus.attach_handler("reply.*", Recorder())
    await bus.publish("reply.c1", ev(0))
    bus.forget_topic("reply.c1")
    assert "reply.c1" in bus.topics()
    assert bus.stats("reply.c1").published == 1
    assert indices(drain(sub)) == [0]


async def test_forget_topic_keeps_a_topic_with_an_exact_handler() -> None:
    bus = EventBus()
    bus.attach_handler("reply.c1", Recorder())
    await bus.publish("reply.c1", ev(0))
    bus.forget_topic("reply.c1")
    assert bus.topics() == ["reply.c1"]
    assert bus.stats("reply.c1").published == 1


async def test_forget_topic_keeps_an_exact_subscription_made_after_a_wildcard() -> None:
    # The route of "reply.c1" was cached, then a wildcard subscription made every route
    # stale, then an exact subscription was added: the topic has an exact subscriber.
    bus = EventBus()
    await bus.publish("reply.c1", ev(0))
    bus.attach_handler("reply.*", Recorder())
    sub = bus.subscribe("reply.c1")
    bus.forget_topic("reply.c1")
    assert "reply.c1" in bus.topics()
    assert bus.stats("reply.c1").published == 1
    await bus.publish("reply.c1", ev(1))
    assert indices(drain(sub)) == [1]


async def test_forget_topic_after_the_exact_subscriber_left() -> None:
    bus = EventBus()
    sub = bus.subscribe("reply.c1")
    await bus.publish("reply.c1", ev(0))
    assert indices(drain(sub)) == [0]
    sub.unsubscribe()
    bus.forget_topic("reply.c1")
    assert bus.topics() == []
    totals = bus.totals()
    assert (totals.published, totals.delivered) == (1, 1)


async def test_forget_unknown_topic_is_a_no_op() -> None:
    bus = EventBus()
    await bus.publish("known", ev(0))
    bus.forget_topic("never.published")
    assert bus.topics() == ["known"]
    assert bus.totals().published == 1


async def test_events_queued_before_forget_still_count_in_totals() -> None:
    bus = EventBus()
    sub = bus.subscribe("q.*")
    await bus.publish("q.x", ev(0))
    await bus.publish("q.x", ev(1))
    bus.forget_topic("q.x")
    assert indices(drain(sub)) == [0, 1]  # taken after the route was forgotten
    totals = bus.totals()
    assert (totals.published, totals.delivered) == (2, 2)
    assert assert_conserved(bus, ">").matched == 2
