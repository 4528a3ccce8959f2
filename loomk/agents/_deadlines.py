"""One timer for every handler that serves a request within the request's deadline.

A trio cancel scope with a deadline per handler costs several microseconds to enter and
leave, which was a fifth of a request/reply round trip. Instead, each agent's mailbox loop
runs inside one long-lived cancel scope, and a handler serving a request only *arms* the
keeper: a heap entry saying "cancel this scope at this time, if the handler is still
running". The keeper's task sleeps until the earliest armed time; entries whose handler
returned in time are disarmed and simply skipped when their time comes. Arming and
disarming cost a heap push and a flag; entries of handlers long done are swept when they
outnumber the live ones, so far deadlines cannot grow the heap without bound.
"""

from __future__ import annotations

import heapq
import itertools
import math

import trio

__all__ = ["Armed", "DeadlineKeeper"]


class Armed:
    """One handler's deadline: cancels ``scope`` when due, unless disarmed first."""

    __slots__ = ("_keeper", "fired", "scope")

    def __init__(self, scope: trio.CancelScope, keeper: DeadlineKeeper) -> None:
        self.scope: trio.CancelScope | None = scope
        self.fired = False  # the deadline came while the handler was still running
        self._keeper = keeper

    def disarm(self) -> None:
        """The handler is done: its deadline no longer applies (idempotent)."""
        if self.scope is not None:
            self.scope = None
            self._keeper.disarmed += 1


class DeadlineKeeper:
    """Cancels the scopes of handlers still running at their deadlines (see the module)."""

    def __init__(self) -> None:
        self._heap: list[tuple[float, int, Armed]] = []
        self.disarmed = 0  # entries in the heap whose handler is done (counted by Armed)
        self._order = itertools.count()
        self._sleep: trio.CancelScope | None = None  # the keeper's sleep, while it runs

    @property
    def running(self) -> bool:
        """Whether the keeper's task runs (otherwise handlers take a scope of their own)."""
        return self._sleep is not None

    def arm(self, when: float, scope: trio.CancelScope) -> Armed:
        """Cancel ``scope`` at trio time ``when`` unless the returned entry is disarmed."""
        heap = self._heap
        if self.disarmed > len(heap) // 2 + 64:  # far deadlines of handlers long done
            heap[:] = [entry for entry in heap if entry[2].scope is not None]
            heapq.heapify(heap)
            self.disarmed = 0
        armed = Armed(scope, self)
        heapq.heappush(heap, (when, next(self._order), armed))
        sleep = self._sleep
        if sleep is not None and when < sleep.deadline:
            sleep.deadline = when
        return armed

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """The keeper's task: runs until cancelled."""
        heap = self._heap
        self._sleep = trio.CancelScope()  # a placeholder until the first sleep
        task_status.started()
        try:
            while True:
                now = trio.current_time()
                while heap and heap[0][0] <= now:
                    armed = heapq.heappop(heap)[2]
                    scope, armed.scope = armed.scope, None  # out of the heap either way
                    if scope is None:
                        self.disarmed -= 1
                    else:
                        armed.fired = True
                        scope.cancel()
                with trio.CancelScope(deadline=heap[0][0] if heap else math.inf) as sleep:
                    self._sleep = sleep
                    await trio.sleep_forever()
        finally:
            self._sleep = None
