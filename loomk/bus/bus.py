"""The event bus: publish/subscribe over dot-separated topics with wildcards and QoS lanes.

Publishing is synchronous fan-out: the event is offered to every matching subscription's
lane without waiting; only a full lossless (``block``) lane makes the publisher wait. The
matching subscriptions of a topic are computed once through the topic trie and cached in a
*route*; subscribing to a literal topic updates that topic's route in place, and
subscribing to a wildcard pattern marks every route stale, to be recomputed on its next
publish.

``publish`` is a cancellation and scheduling point whenever it waits, and at least once
every :data:`CHECKPOINT_EVERY` calls, so a publishing loop can always be cancelled and never
starves other tasks, while a burst of publishes costs no scheduler round-trip per event.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Collection, Iterable, Mapping
from dataclasses import dataclass, field
from types import TracebackType

import trio

from loomk._watchers import Watchers
from loomk._wire import short_repr, text_problem
from loomk.bus._lanes import EMPTY, EventHandler, HandlerLane, Item, Lane, Mailbox, make_lane
from loomk.bus.overflow import Overflow, OverflowLike, parse_overflow
from loomk.bus.receipts import Receipt
from loomk.bus.tap import BusTap
from loomk.bus.topics import TopicTrie, is_wildcard, validate_pattern, validate_topic
from loomk.errors import ConfigError, EventError, KernelClosed, OverflowPolicyError
from loomk.events import Event, QoS

__all__ = [
    "CHECKPOINT_EVERY",
    "DEFAULT_CAPACITY",
    "EventBus",
    "Subscription",
    "SubscriptionStats",
    "TopicStats",
]

CHECKPOINT_EVERY = 64
"""``publish`` yields to the scheduler at least once per this many calls."""

DEFAULT_CAPACITY: dict[QoS, int] = {QoS.REALTIME: 64, QoS.BATCHED: 1024, QoS.BACKGROUND: 4096}
"""Loom's queue capacities per QoS."""

_CLOSED = "the event bus is closed (the kernel is not running)"

DEFAULT_OVERFLOW: dict[QoS, Overflow] = {
    QoS.REALTIME: Overflow.DROP_OLDEST,
    QoS.BATCHED: Overflow.BLOCK,
    QoS.BACKGROUND: Overflow.BLOCK,
}


class _TopicCounters:
    """Live counters of one topic, updated on the hot path."""

    __slots__ = ("delivered", "dropped", "filtered", "matched", "published")

    def __init__(self) -> None:
        self.published = 0
        self.matched = 0
        self.delivered = 0
        self.filtered = 0
        self.dropped: dict[str, int] = {}

    def add(self, other: _TopicCounters) -> None:
        self.published += other.published
        self.matched += other.matched
        self.delivered += other.delivered
        self.filtered += other.filtered
        for reason, count in other.dropped.items():
            self.dropped[reason] = self.dropped.get(reason, 0) + count


Target = tuple[Callable[[Item], "bool | None"], "Binding"]
"""A binding of a route, with its ``offer`` bound once for the publish loop."""


class Route:
    """A published topic, the subscriptions it currently reaches, and its counters."""

    __slots__ = ("bindings", "generation", "stats", "targets", "topic")

    def __init__(self, topic: str) -> None:
        self.topic = topic
        self.bindings: tuple[Binding, ...] = ()
        # Each binding with its ``offer`` bound once, for the publish loop.
        self.targets: tuple[Target, ...] = ()
        self.generation = -1
        self.stats = _TopicCounters()

    def set_bindings(self, bindings: tuple[Binding, ...]) -> None:
        """Route to ``bindings`` from now on."""
        self.bindings = bindings
        self.targets = tuple((binding.offer, binding) for binding in bindings)


class Binding:
    """A pattern attached to a lane: what the bus delivers into a subscriber's mailbox.

    The agent runtime attaches its own lanes; :meth:`EventBus.subscribe` wraps one in a
    :class:`Subscription`. ``offer`` is what a publish calls: the lane's own, or, with an
    event-type filter, one that counts a filtered event instead of queueing it.
    """

    __slots__ = ("attached", "event_types", "filtered", "id", "lane", "offer", "pattern")

    def __init__(
        self, ident: int, pattern: str, event_types: frozenset[str] | None, lane: Lane
    ) -> None:
        self.id = ident
        self.pattern = pattern
        self.event_types = event_types
        self.lane = lane
        self.offer: Callable[[Item], bool | None] = (
            lane.offer if event_types is None else self._offer_of_type
        )
        self.filtered = 0
        self.attached = True

    def accepts(self, event: Event) -> bool:
        """Whether the type filter lets ``event`` through."""
        types = self.event_types
        return types is None or event.type in types

    def _offer_of_type(self, item: Item) -> bool | None:
        if item[1].type in self.event_types:  # type: ignore[operator]  # set when used
            return self.lane.offer(item)
        self.filter_out(item)
        return False

    def filter_out(self, item: Item) -> None:
        """Count ``item`` as filtered by this binding (on the binding and its topic)."""
        self.filtered += 1
        item[0].stats.filtered += 1


@dataclass(frozen=True, slots=True)
class TopicStats:
    """Counters of one topic. ``delivered`` counts events taken by consumers.

    ``matched`` counts offers: each publish adds the number of subscriptions the topic
    matched. Every offer ends delivered, dropped or filtered, so once consumers have
    drained (``depth`` 0): ``matched == delivered + sum(dropped.values()) + filtered``.
    """

    topic: str
    published: int = 0
    matched: int = 0
    delivered: int = 0
    filtered: int = 0
    dropped: dict[str, int] = field(default_factory=dict)
    subscriptions: int = 0
    depth: int = 0
    high_water: int = 0

    @property
    def dropped_total(self) -> int:
        """All drops, whatever the reason."""
        return sum(self.dropped.values())


@dataclass(frozen=True, slots=True)
class SubscriptionStats:
    """Counters of one subscription (one lane)."""

    id: int
    pattern: str
    qos: QoS
    overflow: str
    capacity: int
    delivered: int
    filtered: int
    dropped: dict[str, int]
    depth: int
    high_water: int
    closed: bool

    @property
    def dropped_total(self) -> int:
        """All drops, whatever the reason."""
        return sum(self.dropped.values())


def binding_stats(binding: Binding) -> SubscriptionStats:
    """A snapshot of one binding's counters."""
    lane = binding.lane
    return SubscriptionStats(
        id=binding.id,
        pattern=binding.pattern,
        qos=lane.qos,
        overflow=str(lane.policy),
        capacity=lane.capacity,
        delivered=lane.delivered,
        filtered=binding.filtered,
        dropped=dict(lane.dropped),
        depth=len(lane),
        high_water=lane.high_water,
        closed=lane.closed,
    )


class EventBus:
    """Topic-based publish/subscribe with QoS lanes, overflow policies and statistics."""

    def __init__(
        self,
        *,
        capacities: dict[QoS, int] | None = None,
        max_topics: int = 10_000,
    ) -> None:
        self._capacity = dict(DEFAULT_CAPACITY)
        if capacities:
            self._capacity.update(_checked_capacities(capacities))
        if max_topics.__class__ is not int or max_topics < 1:
            raise ConfigError(
                "max_topics", f"must be an int >= 1 (topics kept in statistics), got {max_topics!r}"
            )
        self._max_topics = max_topics
        self._trie: TopicTrie[Binding] = TopicTrie()
        self._routes: dict[str, Route] = {}
        self._generation = 0
        self._ids = itertools.count(1)
        self._budget = CHECKPOINT_EVERY
        self._retired = _TopicCounters()
        self._closed = False
        self._patterns: dict[str, int] = {}  # pattern -> bindings with it
        self._interest_watchers = Watchers()
        self._settled_watchers = Watchers()
        self._taps: tuple[BusTap, ...] = ()
        self._tap: Callable[[Item], None] | None = None  # what publish hands each item to

    # ---- publishing -------------------------------------------------------------------

    async def publish(self, topic: str, event: Event) -> int:
        """Deliver ``event`` to every subscription whose pattern matches ``topic``.

        Returns how many subscriptions queued it (type-filtered and dropped ones excluded).
        Waits only while a lossless subscription is full. Raises :class:`TopicError` for an
        invalid topic, :class:`EventError` for a non-Event, :class:`KernelClosed` after
        :meth:`close`.
        """
        if self._closed:
            raise KernelClosed(f"cannot publish to {short_repr(topic)}: {_CLOSED}")
        try:
            route = self._routes.get(topic)
        except TypeError:  # unhashable, so certainly not a topic
            route = None
        if route is None or route.generation != self._generation:
            route = self._refresh(topic)
        if event.__class__ is not Event:
            raise EventError(f"publish takes an Event, got {type(event).__name__}")
        stats = route.stats
        stats.published += 1
        item = (route, event)
        tap = self._tap
        if tap is not None:
            tap(item)
        targets = route.targets  # this publish's fan-out, however subscriptions change meanwhile
        stats.matched += len(targets)
        delivered = 0
        for offer, binding in targets:
            accepted = offer(item)
            if accepted:
                delivered += 1
            elif accepted is None:  # a full lossless lane: wait for room
                try:
                    accepted = await binding.lane.put(item)
                except trio.Cancelled:
                    _count_unreached(targets, binding, item)
                    raise
                if accepted:
                    delivered += 1
        self._budget -= 1
        if not self._budget:
            self._budget = CHECKPOINT_EVERY
            await trio.lowlevel.checkpoint()
        return delivered

    def settle(self, mailbox: Mailbox) -> None:
        """``mailbox``'s consumer has handled (and is committing) all it took: receipts of
        those events may settle; :meth:`watch_settled` watchers are told at once."""
        mailbox.settle()
        if self._settled_watchers:
            self._settled_watchers.notify()

    def watch_settled(self, watcher: Callable[[], None]) -> Callable[[], None]:
        """Call ``watcher()`` whenever a consumer settles (see :meth:`settle`), synchronously:
        a state write it submits then joins the consumer's own commit. Returns the function
        that stops it."""
        return self._settled_watchers.add(watcher)

    async def publish_with_receipt(self, topic: str, event: Event) -> Receipt:
        """:meth:`publish`, and a :class:`~loomk.bus.receipts.Receipt` saying when every
        lossless subscriber that queued ``event`` has handled it (agents: committed).

        For transports that acknowledge to their source only what is safe here; it costs a
        little more than ``publish`` and nothing to anyone else. Raises as ``publish``.
        """
        if self._closed:
            raise KernelClosed(f"cannot publish to {short_repr(topic)}: {_CLOSED}")
        route = self._routes.get(topic) if topic.__class__ is str else None
        if route is None or route.generation != self._generation:
            route = self._refresh(topic)
        if event.__class__ is not Event:
            raise EventError(f"publish takes an Event, got {type(event).__name__}")
        stats = route.stats
        stats.published += 1
        item = (route, event)
        if self._tap is not None:
            self._tap(item)
        targets = route.targets
        stats.matched += len(targets)
        places: list[tuple[Lane, int]] = []
        for offer, binding in targets:
            lane = binding.lane
            accepted = offer(item)
            if accepted is None:
                try:
                    accepted = await lane.put(item)
                except trio.Cancelled:
                    _count_unreached(targets, binding, item)
                    raise
            if accepted and lane.policy is Overflow.BLOCK and lane._plain_take:
                # at most this far: later events may have joined it if the put waited
                places.append((lane, lane.delivered + len(lane)))
        self._budget -= 1
        if not self._budget:
            self._budget = CHECKPOINT_EVERY
            await trio.lowlevel.checkpoint()
        return Receipt(places)

    def _refresh(self, topic: str) -> Route:
        if topic.__class__ is not str:
            validate_topic(topic)  # raises the TopicError that explains it
        route = self._routes.get(topic)
        if route is None:
            validate_topic(topic)
            if len(self._routes) >= self._max_topics:
                self._prune()
            route = self._routes[topic] = Route(topic)
        route.set_bindings(tuple(binding for _, binding in self._trie.match(topic)))
        route.generation = self._generation
        return route

    def _prune(self) -> None:
        """Forget routes of idle topics (no subscribers first, then the oldest).

        Their counters move into the bus totals, so :meth:`totals` stays exact.
        """
        keep = self._max_topics // 2
        idle = [topic for topic in self._routes if not self._trie.match(topic)]
        for topic in idle:
            self._retire(self._routes.pop(topic))
        while len(self._routes) > keep:
            self._retire(self._routes.pop(next(iter(self._routes))))

    def _retire(self, route: Route) -> None:
        # Events of this route may still sit in lanes; their later counts must reach the
        # totals too, so the route keeps counting straight into the retired counters.
        self._retired.add(route.stats)
        route.stats = self._retired

    # ---- subscribing ------------------------------------------------------------------

    def subscribe(
        self,
        pattern: str,
        *,
        qos: QoS = QoS.BATCHED,
        event_types: Collection[str] | None = None,
        overflow: OverflowLike | None = None,
        capacity: int | None = None,
    ) -> Subscription:
        """Subscribe to ``pattern``; iterate the result to receive ``(topic, event)``.

        ``overflow`` defaults to ``drop_oldest`` for realtime and ``block`` otherwise;
        ``capacity`` defaults to the QoS's configured capacity.
        """
        mailbox = Mailbox()
        binding = self.bind(
            mailbox, pattern, qos=qos, event_types=event_types, overflow=overflow, capacity=capacity
        )
        return Subscription(self, binding, mailbox)

    def bind(
        self,
        mailbox: Mailbox,
        pattern: str,
        *,
        qos: QoS = QoS.BATCHED,
        event_types: Collection[str] | None = None,
        overflow: OverflowLike | None = None,
        capacity: int | None = None,
    ) -> Binding:
        """Deliver events matching ``pattern`` (and ``event_types``) into a new lane of
        ``mailbox``, with the bus defaults for ``qos`` filled in (see :meth:`subscribe`).

        Everything is checked before anything changes: a bad argument leaves the mailbox
        and the bus as they were. :meth:`detach` ends the binding.
        """
        types = self._check_binding(pattern, event_types)
        if qos.__class__ is not QoS:
            qos = QoS(qos)  # raises QoSError for what is no level
        policy = DEFAULT_OVERFLOW[qos] if overflow is None else parse_overflow(overflow)
        if capacity is None:
            capacity = self._capacity[qos]
        elif capacity.__class__ is not int or capacity < 1:
            raise OverflowPolicyError(f"capacity must be an int >= 1, got {short_repr(capacity)}")
        return self._attach(pattern, make_lane(qos, capacity, policy, mailbox), types)

    def _check_binding(
        self, pattern: str, event_types: Collection[str] | None
    ) -> frozenset[str] | None:
        """Refuse a new binding on a closed bus, or with a bad pattern or type filter;
        returns the filter as :class:`Binding` keeps it."""
        if self._closed:
            raise KernelClosed(f"cannot subscribe to {short_repr(pattern)}: {_CLOSED}")
        validate_pattern(pattern)
        return _event_types(event_types)

    def _attach(self, pattern: str, lane: Lane, types: frozenset[str] | None) -> Binding:
        binding = Binding(next(self._ids), pattern, types, lane)
        self._trie.insert(pattern, binding.id, binding)
        self._patterns[pattern] = self._patterns.get(pattern, 0) + 1
        self._interest_watchers.notify()
        if is_wildcard(pattern):
            self._generation += 1
        else:
            route = self._routes.get(pattern)
            if route is not None and route.generation == self._generation:
                route.set_bindings((*route.bindings, binding))
        return binding

    def attach_handler(
        self,
        pattern: str,
        handler: EventHandler,
        *,
        event_types: Collection[str] | None = None,
        on_detach: Callable[[], None] | None = None,
    ) -> Binding:
        """Hand events matching ``pattern`` to ``handler(topic, event)`` as they are published.

        The handler runs inside ``publish``: it must be quick, must not block, and returns
        whether it claimed the event (unclaimed ones count as dropped). :meth:`detach` ends it,
        as does closing the bus; ``on_detach`` is called once when either happens.
        """
        if not callable(handler):
            raise EventError(f"an event handler must be callable, got {short_repr(handler)}")
        if on_detach is not None and not callable(on_detach):
            raise EventError(f"on_detach must be callable or None, got {short_repr(on_detach)}")
        types = self._check_binding(pattern, event_types)
        lane = HandlerLane(handler, parse_overflow("drop_newest"), on_detach)
        return self._attach(pattern, lane, types)

    def forget_topic(self, topic: str) -> None:
        """Drop the cached route of a topic nothing subscribes to exactly (a finished call's
        reply topic, say), so short-lived topics do not crowd the table; its counts move into
        the totals."""
        route = self._routes.get(topic)
        if route is not None and not self._trie.has_exact(topic):
            self._retire(self._routes.pop(topic))

    def detach(self, binding: Binding) -> None:
        """Stop delivering into ``binding``'s lane and close it (idempotent); what is queued
        stays for the consumer, which is woken to drain it and see the end."""
        lane = binding.lane
        lane.close()
        lane.mailbox.wake()
        if not binding.attached:
            return
        binding.attached = False
        self._trie.remove(binding.pattern, binding.id)
        count = self._patterns[binding.pattern] - 1
        if count:
            self._patterns[binding.pattern] = count
        else:
            del self._patterns[binding.pattern]
        self._interest_watchers.notify()
        if is_wildcard(binding.pattern):
            self._generation += 1
        else:
            route = self._routes.get(binding.pattern)
            if route is not None and route.generation == self._generation:
                route.set_bindings(tuple(b for b in route.bindings if b is not binding))

    def unsubscribe(self, subscription: Subscription) -> None:
        """Same as ``subscription.unsubscribe()``."""
        subscription.unsubscribe()

    # ---- observing ----------------------------------------------------------------------

    def tap(self, capacity: int = 1024) -> BusTap:
        """Watch every publish without subscribing: a ring of the newest ``capacity``
        ``(topic, event)`` that :meth:`BusTap.take` empties. A tap changes no count and
        never makes a publisher wait; publishes it had no room for are counted as missed."""
        if capacity.__class__ is not int or capacity < 1:
            raise ConfigError("capacity", f"a tap's capacity is an int >= 1, got {capacity!r}")
        tap = BusTap(capacity, self.published_total, self._remove_tap)
        self._taps = (*self._taps, tap)
        self._set_tap()
        return tap

    def _remove_tap(self, tap: BusTap) -> None:
        self._taps = tuple(t for t in self._taps if t is not tap)
        self._set_tap()

    def _set_tap(self) -> None:
        taps = self._taps
        if not taps:
            self._tap = None
        elif len(taps) == 1:
            self._tap = taps[0].append
        else:
            appends = tuple(t.append for t in taps)

            def fan_out(item: Item) -> None:
                for append in appends:
                    append(item)

            self._tap = fan_out

    def published_total(self) -> int:
        """How many publishes this bus has seen (all topics, pruned ones included)."""
        total = self._retired.published
        for route in self._routes.values():
            if route.stats is not self._retired:
                total += route.stats.published
        return total

    # ---- interest -----------------------------------------------------------------------

    def patterns(self) -> dict[str, int]:
        """Every pattern subscribed to now, with how many subscriptions use it: what this
        bus is interested in, for a link that mirrors it to another bus."""
        return dict(self._patterns)

    def watch_interest(self, watcher: Callable[[], None]) -> Callable[[], None]:
        """Call ``watcher()`` whenever a subscription is made or ends (what
        :meth:`patterns` says changes); returns the function that stops watching. The
        watcher runs inside ``subscribe``/``detach``: it must be quick and must not raise."""
        if not callable(watcher):
            raise EventError(f"an interest watcher must be callable, got {short_repr(watcher)}")
        return self._interest_watchers.add(watcher)

    # ---- lifecycle --------------------------------------------------------------------

    @property
    def closed(self) -> bool:
        """Whether :meth:`close` has run."""
        return self._closed

    def close(self) -> None:
        """Refuse further publishes and subscriptions and drop every subscription.

        Consumers drain what was delivered, then see the end. Statistics are kept.
        """
        if self._closed:
            return
        self._closed = True
        for _, binding in list(self._trie):
            self.detach(binding)

    # ---- statistics -------------------------------------------------------------------

    def stats(self, topic: str) -> TopicStats:
        """Counters of ``topic`` (zeros for a topic never published)."""
        validate_topic(topic)
        route = self._routes.get(topic)
        counters = route.stats if route is not None else _TopicCounters()
        return _snapshot(topic, counters, [binding for _, binding in self._trie.match(topic)])

    def topics(self) -> list[str]:
        """Topics the bus currently keeps statistics for."""
        return list(self._routes)

    def totals(self) -> TopicStats:
        """Counters summed over every topic ever published (topic ``>``)."""
        total = _TopicCounters()
        total.add(self._retired)
        for route in self._routes.values():
            total.add(route.stats)
        return _snapshot(">", total, [binding for _, binding in self._trie])

    def subscription_stats(self) -> list[SubscriptionStats]:
        """Counters of every active subscription, oldest first."""
        return sorted((binding_stats(b) for _, b in self._trie), key=lambda s: s.id)


def _snapshot(topic: str, counters: _TopicCounters, bindings: list[Binding]) -> TopicStats:
    return TopicStats(
        topic=topic,
        published=counters.published,
        matched=counters.matched,
        delivered=counters.delivered,
        filtered=counters.filtered,
        dropped=dict(counters.dropped),
        subscriptions=len(bindings),
        depth=sum(len(binding.lane) for binding in bindings),
        high_water=max((binding.lane.high_water for binding in bindings), default=0),
    )


def _count_unreached(targets: tuple[Target, ...], waited_on: Binding, item: Item) -> None:
    """Account for the subscriptions after ``waited_on`` that a cancelled publish never
    reached (of the fan-out it started with): filtered, or dropped ``cancelled``."""
    position = next(i for i, (_, binding) in enumerate(targets) if binding is waited_on)
    for _, binding in targets[position + 1 :]:
        if binding.accepts(item[1]):
            binding.lane.drop(item, "cancelled")
        else:
            binding.filter_out(item)


def _event_types(event_types: Collection[str] | None) -> frozenset[str] | None:
    if event_types is None:
        return None
    if isinstance(event_types, str | bytes) or not isinstance(event_types, Iterable):
        raise EventError(f"event_types must be a collection of str, got {short_repr(event_types)}")
    members = list(event_types)
    for event_type in members:
        if event_type.__class__ is not str or not event_type:
            raise EventError(f"event_types must hold non-empty str, got {short_repr(event_type)}")
        problem = text_problem(event_type)
        if problem:
            raise EventError(f"event type {short_repr(event_type)} in event_types {problem}")
    return frozenset(members) or None


def _checked_capacities(capacities: object) -> dict[QoS, int]:
    """The per-QoS capacities given to the bus, checked: QoS levels to ints >= 1."""
    if not isinstance(capacities, Mapping):
        raise OverflowPolicyError(
            f"capacities must map QoS levels to ints >= 1, got {short_repr(capacities)}"
        )
    checked: dict[QoS, int] = {}
    for qos, capacity in capacities.items():
        level = QoS(qos)  # raises QoSError for what is no level
        if capacity.__class__ is not int or capacity < 1:
            raise OverflowPolicyError(
                f"the capacity of {level.name} must be an int >= 1, got {short_repr(capacity)}"
            )
        checked[level] = capacity
    return checked


class Subscription:
    """A subscriber's view of the bus: an async iterator of ``(topic, event)``.

    ``unsubscribe()`` stops new deliveries; what was already queued can still be received,
    then iteration ends. Leaving ``async with`` unsubscribes and discards what is left.
    Exactly one task may receive from a subscription at a time.
    """

    __slots__ = ("_binding", "_budget", "_bus", "_lane", "_mailbox")

    def __init__(self, bus: EventBus, binding: Binding, mailbox: Mailbox) -> None:
        self._bus = bus
        self._binding = binding
        self._lane = binding.lane
        self._mailbox = mailbox
        self._budget = CHECKPOINT_EVERY

    @property
    def id(self) -> int:
        """Bus-unique subscription id."""
        return self._binding.id

    @property
    def pattern(self) -> str:
        """The topic pattern subscribed to."""
        return self._binding.pattern

    @property
    def qos(self) -> QoS:
        """The QoS lane this subscription delivers into."""
        return self._lane.qos

    @property
    def closed(self) -> bool:
        """True once unsubscribed (or the bus closed); queued events may remain."""
        return self._lane.closed

    def stats(self) -> SubscriptionStats:
        """This subscription's counters."""
        return binding_stats(self._binding)

    def receive_nowait(self) -> tuple[str, Event]:
        """The next queued event; raises ``trio.WouldBlock`` if none, ``trio.EndOfChannel``
        once unsubscribed and drained."""
        item = self._lane.take_nowait()
        if item is EMPTY:
            if self._lane.closed:
                raise trio.EndOfChannel
            raise trio.WouldBlock
        route, event = item  # type: ignore[misc]
        return route.topic, event

    async def receive(self) -> tuple[str, Event]:
        """Wait for the next event; raises ``trio.EndOfChannel`` once unsubscribed and drained."""
        try:
            return await self.__anext__()
        except StopAsyncIteration:
            raise trio.EndOfChannel from None

    def __aiter__(self) -> Subscription:
        return self

    async def __anext__(self) -> tuple[str, Event]:
        self._budget -= 1
        if not self._budget:  # a long burst still lets others run and can be cancelled
            self._budget = CHECKPOINT_EVERY
            await trio.lowlevel.checkpoint()
        lane = self._lane
        item = lane.take_nowait()
        while item is EMPTY:
            if lane.closed:
                raise StopAsyncIteration
            self._budget = CHECKPOINT_EVERY
            await self._mailbox.wait()
            item = lane.take_nowait()
        route, event = item  # type: ignore[misc]
        return route.topic, event

    def unsubscribe(self) -> None:
        """Stop new deliveries; queued events can still be received (idempotent)."""
        self._bus.detach(self._binding)

    def close(self) -> int:
        """Unsubscribe and discard what is still queued; returns how many were discarded."""
        self.unsubscribe()
        return self._lane.discard()

    async def __aenter__(self) -> Subscription:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
