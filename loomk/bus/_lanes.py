"""Bounded queues ("lanes") that apply an overflow policy, and the mailbox that drains them.

A :class:`Mailbox` has one consumer task and one lane per subscription, drained in priority
order realtime -> batched -> background. Publishers call :meth:`Lane.offer`, which never
yields: it enqueues, applies the overflow policy, or (``block`` policy, queue full) answers
that the publisher must ``await`` :meth:`Lane.put`. The consumer takes with
:meth:`Mailbox.take_nowait` in a loop and parks in :meth:`Mailbox.wait` only when every
lane is empty, so a burst is drained without a scheduler round-trip per event.

These are purpose-built rather than ``trio`` memory channels because the policies
(drop-oldest, conflation, coalescing) must reach into the queue; the parking is the same
``wait_task_rescheduled`` protocol trio's channels use.

Lanes hold ``(route, event)`` items; a route carries the published topic and its counters.
"""

from __future__ import annotations

from collections import OrderedDict, deque
from collections.abc import Callable, Hashable
from typing import TYPE_CHECKING, Any, Final

import trio
from outcome import Value

from loomk.bus.overflow import KeyFunction, Overflow
from loomk.events import Event, QoS
from loomk.telemetry.logging import get_logger

if TYPE_CHECKING:
    from loomk.bus.bus import Route

__all__ = ["EMPTY", "EventHandler", "HandlerLane", "Lane", "Mailbox", "make_lane"]

_log = get_logger("loomk.bus")

Item = tuple["Route", Event]


class _Empty:
    __slots__ = ()

    def __repr__(self) -> str:
        return "EMPTY"


_NO_DROPS: dict[str, int] = {}  # shared by lanes that never dropped; never written
_UNALLOCATED: Any = ()  # the queue of a lane that never received an event

EMPTY: Final = _Empty()
"""Returned by ``take_nowait`` when there is nothing to take."""

_reschedule = trio.lowlevel.reschedule
_current_task = trio.lowlevel.current_task
_wait_task_rescheduled = trio.lowlevel.wait_task_rescheduled
_ABORT_SUCCEEDED = trio.lowlevel.Abort.SUCCEEDED


class Lane:
    """A FIFO lane with a fixed capacity; the base class implements ``drop_newest``.

    Counters (read by the bus's stats): ``delivered`` (taken by the consumer),
    ``dropped`` by reason, ``high_water`` (largest depth seen).
    """

    __slots__ = (
        "_buf",
        "_plain_take",
        "_room",
        "_senders",
        "capacity",
        "closed",
        "delivered",
        "dropped",
        "high_water",
        "mailbox",
        "policy",
        "qos",
        "settled",
    )

    def __init__(self, qos: QoS, capacity: int, policy: Overflow, mailbox: Mailbox) -> None:
        self.qos = qos
        # Events taken whose handling is committed (see Mailbox.settle); kept only by the
        # mailboxes of consumers that commit (agents), read by receipts (loomk.bus.receipts).
        self.settled = 0
        self.capacity = capacity
        self.policy = policy
        self.mailbox = mailbox
        self.closed = False
        self.delivered = 0
        self.dropped: dict[str, int] = _NO_DROPS  # a lane's own dict from its first drop
        self.high_water = 0
        # The queue is made on the first event: most lanes of idle agents never get one, and
        # an empty deque costs 600 bytes. Until then ``_room`` is 0 to take the slow path.
        self._buf: deque[Item] = _UNALLOCATED
        # How many items the fast path of offer() may hold: the capacity, or 0 while the
        # lane is closed, unallocated or (block policy) publishers are waiting.
        self._room = 0
        # Publishers parked on a full ``block`` lane, with their items (None: never blocks).
        self._senders: OrderedDict[Any, Item] | None = None
        # Whether taking is the base FIFO take, which the mailbox may do in place.
        self._plain_take = type(self).take_nowait is Lane.take_nowait

    def __len__(self) -> int:
        return len(self._buf)

    # ---- producer side ----------------------------------------------------------------

    def offer(self, item: Item) -> bool | None:
        """Enqueue without waiting: True if queued, False if dropped (counted).

        None means the publisher must ``await put(item)`` (only the ``block`` policy).
        """
        buf = self._buf
        depth = len(buf)
        if depth < self._room:
            buf.append(item)
            if depth >= self.high_water:
                self.high_water = depth + 1
            mailbox = self.mailbox  # Mailbox.added(), inlined: this runs per delivery
            total = mailbox.depth + 1
            mailbox.depth = total
            if total > mailbox.high_water:
                mailbox.high_water = total
            if mailbox.waiter is not None:
                mailbox.wake()
            return True
        if self.closed:
            self.drop(item, "closed")
            return False
        if buf is _UNALLOCATED:
            self._buf = deque()
            if not self._senders:
                self._room = self.capacity
            return self.offer(item)
        return self._overflow(item)

    def _overflow(self, item: Item) -> bool | None:
        self.drop(item, "full")
        return False

    async def put(self, item: Item) -> bool:
        """Wait for room (``block`` policy only); the base lanes never ask for it."""
        raise AssertionError("put() is only used by blocking lanes")

    def drop(self, item: Item, reason: str) -> None:
        """Count one lost event on this lane and on its topic."""
        if self.dropped is _NO_DROPS:
            self.dropped = {}
        self.dropped[reason] = self.dropped.get(reason, 0) + 1
        stats = item[0].stats
        stats.dropped[reason] = stats.dropped.get(reason, 0) + 1

    # ---- consumer side ----------------------------------------------------------------

    def take_nowait(self) -> Item | _Empty:
        """The oldest item, or EMPTY; hands the freed slot to the first parked publisher."""
        buf = self._buf
        if not buf:
            return EMPTY
        item = buf.popleft()
        self.delivered += 1
        item[0].stats.delivered += 1
        senders = self._senders
        if senders:  # the freed slot goes to the first parked publisher: depth unchanged
            task, waiting = senders.popitem(last=False)
            buf.append(waiting)
            _reschedule(task, Value(True))
            if not senders and not self.closed:
                self._room = self.capacity
        else:
            self.mailbox.depth -= 1
        return item

    def close(self) -> None:
        """Refuse further events; what is queued stays for the consumer to drain."""
        self.closed = True
        self._room = 0

    def discard(self) -> int:
        """Drop everything still queued (reason ``discarded``); returns how many."""
        count = 0
        while True:
            item = self._pop_for_discard()
            if item is EMPTY:
                return count
            assert not isinstance(item, _Empty)
            self.mailbox.depth -= 1
            self.drop(item, "discarded")
            count += 1

    def _pop_for_discard(self) -> Item | _Empty:
        return self._buf.popleft() if self._buf else EMPTY


class _BlockingLane(Lane):
    """``block``: lossless; a publisher that finds the lane full parks until there is room.

    Parked publishers are served in arrival order and, while any wait, new offers wait
    too, so per-publisher order is kept and no publisher starves.
    """

    __slots__ = ()
    # ``_senders`` stays None until a publisher first has to wait (most lanes never fill).

    def _overflow(self, item: Item) -> bool | None:
        return None  # full, or publishers already waiting: the caller must await put()

    async def put(self, item: Item) -> bool:
        if self.closed or (len(self._buf) < self.capacity and not self._senders):
            await trio.lowlevel.checkpoint()
            offered = self.offer(item)
            if offered is not None:
                return offered
        task = _current_task()
        if self._senders is None:
            self._senders = OrderedDict()
        senders = self._senders
        senders[task] = item
        self._room = 0

        def abort(_: object) -> trio.lowlevel.Abort:
            del senders[task]
            if not senders and not self.closed:
                self._room = self.capacity
            self.drop(item, "cancelled")
            return _ABORT_SUCCEEDED

        accepted: bool = await _wait_task_rescheduled(abort)
        return accepted

    def close(self) -> None:
        self.closed = True
        self._room = 0
        while self._senders:
            task, waiting = self._senders.popitem(last=False)
            self.drop(waiting, "closed")
            _reschedule(task, Value(False))


class _DropOldestLane(Lane):
    """``drop_oldest``: the oldest queued event is evicted to make room."""

    __slots__ = ()

    def _overflow(self, item: Item) -> bool | None:
        buf = self._buf
        self.drop(buf.popleft(), "evicted")
        buf.append(item)
        return True


class _SampleLane(Lane):
    """``sample(n)``: at or above the high-water mark keep only every n-th event."""

    __slots__ = ("_every", "_mark", "_seen")

    def __init__(self, qos: QoS, capacity: int, policy: Overflow, mailbox: Mailbox) -> None:
        super().__init__(qos, capacity, policy, mailbox)
        self._every = policy.every
        mark = policy.high_water if policy.high_water is not None else max(1, capacity * 3 // 4)
        self._mark = min(mark, capacity)
        self._seen = 0

    def offer(self, item: Item) -> bool | None:
        if not self.closed and len(self._buf) >= self._mark:
            self._seen += 1
            if self._seen % self._every:
                self.drop(item, "sampled")
                return False
        else:
            self._seen = 0
        return Lane.offer(self, item)


class _AggregateLane(Lane):
    """``aggregate(fn)``: at the high-water mark, merge each new event into the newest one."""

    __slots__ = ("_mark", "_merge")

    def __init__(self, qos: QoS, capacity: int, policy: Overflow, mailbox: Mailbox) -> None:
        super().__init__(qos, capacity, policy, mailbox)
        assert policy.merge is not None
        self._merge = policy.merge
        mark = policy.high_water if policy.high_water is not None else capacity
        self._mark = min(mark, capacity)

    def offer(self, item: Item) -> bool | None:
        buf = self._buf
        if self.closed or len(buf) < self._mark:
            return Lane.offer(self, item)
        queued_route, queued = buf[-1]
        route, event = item
        try:
            merged = self._merge(queued, event)
        except Exception as exc:  # a user function must not break the publisher
            _log.warning(
                "aggregate function raised; event dropped",
                topic=route.topic,
                error=repr(exc),
            )
            self.drop(item, "aggregate_error")
            return False
        if not isinstance(merged, Event):
            _log.warning(
                "aggregate function returned a non-Event; event dropped",
                topic=route.topic,
                returned=type(merged).__name__,
            )
            self.drop(item, "aggregate_error")
            return False
        buf[-1] = (route, merged)
        self.drop((queued_route, queued), "aggregated")
        return True


class _LatestLane(Lane):
    """``latest(key)``: one queued event per key; newer ones replace it in place."""

    __slots__ = ("_key", "_slots")

    def __init__(self, qos: QoS, capacity: int, policy: Overflow, mailbox: Mailbox) -> None:
        super().__init__(qos, capacity, policy, mailbox)
        self._slots: OrderedDict[Hashable, Item] = OrderedDict()
        self._buf = self._slots  # type: ignore[assignment]  # what Mailbox checks for items
        self._key: KeyFunction
        key = policy.key
        if key is None:
            self._key = _topic_key
        elif isinstance(key, str):
            self._key = _metadata_key(key)
        else:
            self._key = key

    def __len__(self) -> int:
        return len(self._slots)

    def offer(self, item: Item) -> bool | None:
        if self.closed:
            self.drop(item, "closed")
            return False
        slots = self._slots
        try:
            key = self._key(item[0].topic, item[1])
            previous = slots.get(key)
        except Exception as exc:  # a user function must not break the publisher
            _log.warning(
                "latest key function raised; event dropped", topic=item[0].topic, error=repr(exc)
            )
            self.drop(item, "key_error")
            return False
        if previous is not None:
            slots[key] = item
            self.drop(previous, "replaced")
            return True
        if len(slots) >= self.capacity:
            _, oldest = slots.popitem(last=False)
            self.drop(oldest, "evicted")
            self.mailbox.depth -= 1
        slots[key] = item
        if len(slots) > self.high_water:
            self.high_water = len(slots)
        self.mailbox.added()
        return True

    def take_nowait(self) -> Item | _Empty:
        if not self._slots:
            return EMPTY
        _, item = self._slots.popitem(last=False)
        self.delivered += 1
        item[0].stats.delivered += 1
        self.mailbox.depth -= 1
        return item

    def _pop_for_discard(self) -> Item | _Empty:
        return self._slots.popitem(last=False)[1] if self._slots else EMPTY


def _topic_key(topic: str, event: Event) -> Hashable:
    return topic


def _metadata_key(name: str) -> KeyFunction:
    def key(topic: str, event: Event) -> Hashable:
        return event.metadata.get(name)

    return key


_LANES: dict[str, type[Lane]] = {
    "block": _BlockingLane,
    "drop_oldest": _DropOldestLane,
    "drop_newest": Lane,
    "sample": _SampleLane,
    "latest": _LatestLane,
    "aggregate": _AggregateLane,
}


EventHandler = Callable[[str, Event], bool]
"""Takes ``(topic, event)`` at publish time; True if it claimed the event."""


class HandlerLane(Lane):
    """A lane without a queue: the publisher hands each event to a synchronous handler.

    For kernel services that only route events onward without waiting (the collaboration
    service matching replies to the calls that wait for them). An event the handler does not
    claim, or that makes it raise, is counted as dropped (``unclaimed``, ``handler_error``).
    """

    __slots__ = ("handler", "on_close")

    def __init__(
        self, handler: EventHandler, policy: Overflow, on_close: Callable[[], None] | None = None
    ) -> None:
        super().__init__(QoS.REALTIME, 1, policy, Mailbox())
        self.handler = handler
        self.on_close = on_close  # told once, when the lane closes (detached, bus closed)

    def close(self) -> None:
        """No more events; tell whoever asked, once."""
        super().close()
        on_close, self.on_close = self.on_close, None
        if on_close is not None:
            on_close()

    def offer(self, item: Item) -> bool:
        """Hand the event over at once; never queues, never waits."""
        if self.closed:
            self.drop(item, "closed")
            return False
        try:
            claimed = self.handler(item[0].topic, item[1])
        except Exception as error:  # a broken handler must not break the publisher
            _log.error("event handler failed", error=repr(error), exc_info=error)
            self.drop(item, "handler_error")
            return False
        if claimed:
            self.delivered += 1
            item[0].stats.delivered += 1
            return True
        self.drop(item, "unclaimed")
        return False


def make_lane(qos: QoS, capacity: int, policy: Overflow, mailbox: Mailbox) -> Lane:
    """A lane applying ``policy``, attached to ``mailbox``."""
    lane = _LANES[policy.kind](qos, capacity, policy, mailbox)
    mailbox.add_lane(lane)
    return lane


class Mailbox:
    """The lanes of one consumer, drained realtime first, then batched, then background.

    Exactly one task consumes a mailbox. It takes with :meth:`take_nowait` until EMPTY and
    then awaits :meth:`wait`, which returns as soon as any lane has an item or the mailbox is
    closed.
    """

    __slots__ = ("_lanes", "closed", "commits", "depth", "high_water", "waiter")

    def __init__(self) -> None:
        self.waiter: Any = None
        self.closed = False
        # Whether the consumer commits what it takes (an agent): an event it took is then
        # done only once settle() has been called after it; otherwise taking is enough.
        self.commits = False
        self._lanes: list[Lane] = []
        self.depth = 0  # events queued in all lanes, kept by the lanes
        self.high_water = 0  # the largest depth seen

    @property
    def lanes(self) -> tuple[Lane, ...]:
        """The lanes in drain order."""
        return tuple(self._lanes)

    def add_lane(self, lane: Lane) -> None:
        """Attach a lane, keeping drain order by QoS (stable among equal QoS)."""
        self._lanes.append(lane)
        self._lanes.sort(key=_lane_order)

    def __len__(self) -> int:
        return self.depth

    def discard(self) -> int:
        """Drop everything queued in every lane (counted ``discarded``); returns how many."""
        return sum(lane.discard() for lane in self._lanes)

    def settle(self) -> None:
        """Everything taken so far is handled and committed (the agent runtime calls this
        after each commit, and before it parks): receipts of those events may complete."""
        for lane in self._lanes:
            lane.settled = lane.delivered

    def prune(self) -> None:
        """Detach lanes that are closed and drained (their subscription ended)."""
        self._lanes = [lane for lane in self._lanes if not lane.closed or len(lane)]

    def take_nowait(self) -> Item | _Empty:
        """The next item by priority, or EMPTY.

        The consumer's hot path: a plain FIFO lane without parked publishers is taken from
        here directly (what ``Lane.take_nowait`` does in that case), any other through its
        own ``take_nowait``.
        """
        for lane in self._lanes:
            buf = lane._buf
            if buf:
                if lane._plain_take and not lane._senders:
                    item = buf.popleft()
                    lane.delivered += 1
                    item[0].stats.delivered += 1
                    self.depth -= 1
                    return item
                return lane.take_nowait()
        return EMPTY

    async def wait(self) -> None:
        """Park until some lane has an item or the mailbox is closed (a checkpoint)."""
        lanes = self._lanes
        if self.closed or any(map(len, lanes)) or (lanes and all(lane.closed for lane in lanes)):
            await trio.lowlevel.checkpoint()
            return
        if self.waiter is not None:
            raise trio.BusyResourceError("another task is already waiting on this mailbox")
        self.waiter = _current_task()
        await _wait_task_rescheduled(self._abort_wait)

    def _abort_wait(self, _: object) -> trio.lowlevel.Abort:
        self.waiter = None
        return _ABORT_SUCCEEDED

    def added(self) -> None:
        """Count one more queued event and wake the consumer if it is parked."""
        self.depth += 1
        if self.depth > self.high_water:
            self.high_water = self.depth
        if self.waiter is not None:
            self.wake()

    def wake(self) -> None:
        """Reschedule the parked consumer, if any."""
        task = self.waiter
        if task is not None:
            self.waiter = None
            _reschedule(task)

    def close(self) -> None:
        """Wake the consumer for the last time: it drains what is left, then sees the end."""
        self.closed = True
        for lane in self._lanes:
            lane.close()
        self.wake()


def _lane_order(lane: Lane) -> int:
    return int(lane.qos)
