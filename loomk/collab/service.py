"""The kernel's collaboration service: matches answers to the calls waiting for them.

Rather than one temporary bus subscription per call (Loom subscribed per call and never
unsubscribed), the service holds two handler bindings for the kernel's lifetime:

- ``thread.*.reply``: an event whose ``correlation_id`` belongs to a waiting call is handed
  to that call's collector at publish time, with no queue and no extra task in between;
- ``thread.*.barrier``: barrier check-ins, counted per barrier name whoever sent them (an
  agent here, a bridge client, another kernel).

A call registers its collector before it publishes anything and removes it when it ends,
however it ends (answer, timeout, cancellation), so nothing outlives the call.

Timeouts are kept by one timer task (:meth:`CollabService.run`, in the kernel's core layer)
rather than a cancel scope per call: most calls share one timeout, so their deadlines arrive
in order and a call costs a heap push instead of a scope on trio's deadline heap. Without
the timer running (a service used outside a kernel) each wait falls back to a cancel scope.
"""

from __future__ import annotations

import heapq
import itertools
import math
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import trio

from loomk._metakeys import CORRELATION_ID, SENDER
from loomk.bus import Binding, EventBus
from loomk.errors import KernelClosed
from loomk.events import Event

__all__ = ["WHOLE_WINDOW", "BarrierRound", "CollabService", "CollabStats", "Collector"]

REPLY_PATTERN = "thread.*.reply"
BARRIER_PATTERN = "thread.*.barrier"
BARRIER_CHECK_IN = "collab.barrier"  # only these count (not collab.timeout on the topic)
_ANNOUNCEMENTS = frozenset({"collab.summary", "collab.timeout"})
_MAX_BARRIERS = 10_000  # barrier names remembered while nobody waits on them (oldest go)

WHOLE_WINDOW = 1 << 62
"""``Collector.needed`` of a collection that lasts its whole window (contract-net
proposals): its end is not a timeout."""


@dataclass(frozen=True, slots=True)
class CollabStats:
    """A snapshot of the collaboration service's counters."""

    waiting: int
    """Calls waiting for answers now."""
    answers: int
    """Answers handed to a waiting call."""
    unclaimed: int
    """Answers no waiting call wanted (late, foreign, or a duplicate from one responder)."""
    timeouts: int
    """Requests and fanouts whose wait for answers ran out of time, and contract-net rounds
    whose awardees did not all report in time (barriers not included)."""
    check_ins: int
    """Barrier check-ins counted."""
    barriers_open: int
    """Barrier rounds waiting for more participants now."""
    barriers_completed: int
    """Barrier rounds that reached their participant count."""


class Collector:
    """What one waiting call accepts, and the answers it got (in arrival order)."""

    __slots__ = ("accept", "caller", "done", "events", "needed", "senders", "task")

    def __init__(self, needed: int, accept: Callable[[Event], bool], caller: str = "") -> None:
        self.needed = needed  # how many answers end the wait (WHOLE_WINDOW: none do)
        self.accept = accept
        self.caller = caller  # the calling sender: Loom responders echo it back
        self.events: list[Event] = []
        self.senders: set[str] = set()  # one answer per responder
        self.done = False
        self.task: Any = None  # the task parked in CollabService.wait, if any

    def offer(self, event: Event) -> bool:
        """Keep ``event`` if the call wants it; True if it did."""
        if self.done or not self.accept(event):
            return False
        sender = event.metadata.get(SENDER, "")
        if sender and sender != self.caller:  # a sender that names the responder
            if sender in self.senders:
                return False
            self.senders.add(sender)
        self.events.append(event)
        if len(self.events) >= self.needed:
            self.done = True
            self.wake()
        return True

    def wake(self) -> None:
        """Resume the waiting call, if it is parked."""
        task = self.task
        if task is not None:
            self.task = None
            trio.lowlevel.reschedule(task)


class _Deadline:
    """A heap entry: the collector to wake at ``at`` (cleared when the call ends first)."""

    __slots__ = ("collector",)

    def __init__(self, collector: Collector) -> None:
        self.collector: Collector | None = collector


class BarrierRound:
    """One round of a named barrier: who has checked in, and the event that ends it."""

    __slots__ = ("done", "n", "participants", "waiters")

    def __init__(self) -> None:
        self.participants: dict[str, None] = {}  # arrival order, no duplicates
        self.n = 0  # the largest participant count asked for so far
        self.waiters = 0
        self.done = trio.Event()


class CollabService:
    """Routes correlated answers and barrier check-ins to the calls waiting for them."""

    def __init__(self, bus: EventBus) -> None:
        self._bus = bus
        self._collectors: dict[str, list[Collector]] = {}
        self._barriers: OrderedDict[str, BarrierRound] = OrderedDict()
        self._bindings: list[Binding] = []
        self._deadlines: list[tuple[float, int, _Deadline]] = []
        self._order = itertools.count()
        self._timer: trio.CancelScope | None = None  # the timer's sleep, while it runs
        self._answers = 0
        self._unclaimed = 0
        self._timeouts = 0
        self._check_ins = 0
        self._barriers_completed = 0
        self._closed = False

    @property
    def closed(self) -> bool:
        """True once :meth:`close` has run: the service takes no more calls."""
        return self._closed

    def stats(self) -> CollabStats:
        """A snapshot of the counters (see :class:`CollabStats`)."""
        return CollabStats(
            waiting=self.waiting,
            answers=self._answers,
            unclaimed=self._unclaimed,
            timeouts=self._timeouts,
            check_ins=self._check_ins,
            barriers_open=len(self._barriers),
            barriers_completed=self._barriers_completed,
        )

    # ---- timeouts -----------------------------------------------------------------------

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """The timer: wakes calls whose deadline passed. Runs until cancelled.

        Starting it also attaches the service to the bus, so answers and check-ins sent
        before the first local call are seen too.
        """
        self._ensure_attached()
        task_status.started()
        deadlines = self._deadlines
        try:
            while True:
                now = trio.current_time()
                while deadlines and deadlines[0][0] <= now:
                    entry = heapq.heappop(deadlines)[2]
                    if entry.collector is not None:
                        entry.collector.wake()  # the call sees it is not done: a timeout
                with trio.CancelScope(deadline=deadlines[0][0] if deadlines else math.inf) as s:
                    self._timer = s
                    await trio.sleep_forever()
        finally:
            self._timer = None

    async def wait(self, collector: Collector, timeout_s: float) -> bool:
        """Park until ``collector`` has enough answers or ``timeout_s`` passes; True if it
        has. Cancellation is honoured as usual."""
        if collector.done:
            await trio.lowlevel.checkpoint()
            return True
        timer = self._timer
        if timer is None:  # no timer task: a cancel scope per wait
            with trio.move_on_after(timeout_s):
                while not collector.done:
                    await self._park(collector)
        else:
            deadline = trio.current_time() + timeout_s
            entry = _Deadline(collector)
            heapq.heappush(self._deadlines, (deadline, next(self._order), entry))
            if deadline < timer.deadline:
                timer.deadline = deadline
            try:
                await self._park(collector)
            finally:
                entry.collector = None
        if not collector.done and collector.needed != WHOLE_WINDOW:
            self._timeouts += 1
        return collector.done

    @staticmethod
    async def _park(collector: Collector) -> None:
        def abort(_: object) -> trio.lowlevel.Abort:
            collector.task = None
            return trio.lowlevel.Abort.SUCCEEDED

        collector.task = trio.lowlevel.current_task()
        await trio.lowlevel.wait_task_rescheduled(abort)

    def _ensure_attached(self) -> None:
        if self._closed:
            raise KernelClosed(
                "the collaboration service is closed: the kernel is not running (it has shut down)"
            )
        if not self._bindings:
            self._bindings = [
                self._bus.attach_handler(REPLY_PATTERN, self._on_reply),
                self._bus.attach_handler(
                    BARRIER_PATTERN, self._on_check_in, event_types=[BARRIER_CHECK_IN]
                ),
            ]

    # ---- correlated answers -------------------------------------------------------------

    def watch(self, correlation_id: str, collector: Collector) -> None:
        """Hand answers correlated with ``correlation_id`` to ``collector`` until
        :meth:`unwatch`."""
        self._ensure_attached()
        self._collectors.setdefault(correlation_id, []).append(collector)

    def unwatch(self, correlation_id: str, collector: Collector) -> None:
        """Stop handing answers to ``collector`` (idempotent)."""
        collectors = self._collectors.get(correlation_id)
        if collectors is None:
            return
        if collector in collectors:
            collectors.remove(collector)
        if not collectors:
            del self._collectors[correlation_id]

    @property
    def waiting(self) -> int:
        """How many calls are waiting for answers now."""
        return sum(len(c) for c in self._collectors.values())

    def _on_reply(self, _topic: str, event: Event) -> bool:
        collectors = self._collectors.get(event.metadata.get(CORRELATION_ID, ""))
        if not collectors:
            # a late or foreign answer is unclaimed (a drop); the calls' own announcements
            # (summary, timeout) are not answers at all
            if event.type in _ANNOUNCEMENTS:
                return True
            self._unclaimed += 1
            return False
        claimed = False
        for collector in collectors:
            claimed = collector.offer(event) or claimed
        if claimed:
            self._answers += 1
        else:
            self._unclaimed += 1
        return claimed

    # ---- barriers -----------------------------------------------------------------------

    def barrier_round(self, name: str) -> BarrierRound:
        """The open round of barrier ``name`` (made if needed)."""
        self._ensure_attached()
        round_ = self._barriers.get(name)
        if round_ is None:
            round_ = self._barriers[name] = BarrierRound()
            while len(self._barriers) > _MAX_BARRIERS:
                oldest, stale = next(iter(self._barriers.items()))
                if stale.waiters:
                    break
                del self._barriers[oldest]
        else:
            self._barriers.move_to_end(name)
        return round_

    def withdraw(self, name: str, round_: BarrierRound, participant: str) -> None:
        """Take a participant that gave up out of an unfinished round."""
        if not round_.done.is_set():
            round_.participants.pop(participant, None)
        if not round_.waiters and not round_.participants and self._barriers.get(name) is round_:
            del self._barriers[name]

    def _on_check_in(self, topic: str, event: Event) -> bool:
        name = topic[len("thread.") : -len(".barrier")]
        participant = event.metadata.get("participant") or event.metadata.get(SENDER, "")
        if not participant:
            return False
        round_ = self.barrier_round(name)
        try:
            wanted = int(event.metadata.get("barrier_n", "0"))
        except ValueError:
            wanted = 0
        round_.n = max(round_.n, wanted)
        round_.participants[participant] = None
        self._check_ins += 1
        if round_.n and len(round_.participants) >= round_.n:
            round_.done.set()
            del self._barriers[name]  # the next check-in opens a new round
            self._barriers_completed += 1
        return True

    def close(self) -> None:
        """Detach from the bus (the kernel is shutting down); later calls raise
        :class:`KernelClosed`."""
        self._closed = True
        for binding in self._bindings:
            self._bus.detach(binding)
        self._bindings = []
