"""The bus's conservation law as an assertion: no event offered to a subscriber goes missing."""

from __future__ import annotations

from typing import overload

from loomk.bus.bus import EventBus, Subscription, SubscriptionStats, TopicStats

__all__ = ["assert_conserved"]


@overload
def assert_conserved(bus: EventBus, topic: str, /) -> TopicStats: ...


@overload
def assert_conserved(subscription: Subscription, offered: int, /) -> SubscriptionStats: ...


def assert_conserved(
    source: EventBus | Subscription, which: str | int, /
) -> TopicStats | SubscriptionStats:
    """Fail unless every event offered was delivered, dropped (for a counted reason) or
    filtered; returns the statistics checked.

    ``assert_conserved(bus, topic)`` checks a topic (``">"``: the bus's totals) against its
    own count of offers: ``matched == delivered + dropped + filtered``. A topic that was never
    published fails (a misspelt topic would otherwise pass with every count at zero); the
    totals of a bus that saw nothing pass.
    ``assert_conserved(subscription, offered)`` checks one subscription against the number
    of events the test offered it (published on topics it matches while subscribed)::

        sub = bus.subscribe("t", overflow="drop_newest", capacity=1)
        for i in range(3):
            await bus.publish("t", Event("n", str(i).encode()))
        sub.receive_nowait()
        assert_conserved(sub, 3)  # 1 delivered + 2 dropped
        assert_conserved(bus, "t")

    Events still queued make it fail too, they are neither delivered nor dropped yet: receive
    them first. The message says so when it is why the counts do not add up.
    """
    if isinstance(source, EventBus):
        if not isinstance(which, str):
            raise TypeError(f"assert_conserved(bus, topic) takes a str topic, got {which!r}")
        topic_stats = source.totals() if which == ">" else source.stats(which)
        if not topic_stats.published and which != ">":
            raise AssertionError(
                f"topic {which!r} was never published (or the bus forgot it): "
                f"nothing to check ({topic_stats})"
            )
        _check(f"topic {which!r}", topic_stats.matched, "matched", topic_stats)
        return topic_stats
    if not isinstance(which, int) or isinstance(which, bool):
        raise TypeError(
            f"assert_conserved(subscription, offered) takes an int count, got {which!r}"
        )
    sub_stats = source.stats()
    name = f"subscription {sub_stats.id} on {sub_stats.pattern!r}"
    _check(name, which, "offered", sub_stats)
    return sub_stats


def _check(name: str, offered: int, label: str, stats: TopicStats | SubscriptionStats) -> None:
    accounted = stats.delivered + stats.dropped_total + stats.filtered
    if offered == accounted:
        return
    if stats.depth and isinstance(stats, SubscriptionStats):
        raise AssertionError(
            f"{name} is not drained: {stats.depth} events still queued; "
            f"receive them before checking conservation ({stats})"
        )
    queued = (
        f"; {stats.depth} events still sit in the queues of its subscriptions (some may be of "
        "other topics, or of subscriptions that ended): receive them first"
        if stats.depth
        else ""
    )
    raise AssertionError(
        f"{name} is not conserved: {label} {offered} != delivered {stats.delivered} "
        f"+ dropped {stats.dropped_total} {stats.dropped} + filtered {stats.filtered}"
        f"{queued} ({stats})"
    )
