"""An agent instance's main loop: drain the mailbox, one handler at a time, commits grouped.

The loop takes events without waiting while any are queued (realtime lanes first, then
batched, then background), applies the envelope's hop/TTL step to each (an expired event is
counted and skipped), and runs the handler. Handlers that run back to back share one commit
(at most :data:`~loomk.agents.COMMIT_GROUP_MAX`), made before the agent parks, or as
soon as a handler has held events to release, so an answer never waits on the next queued
handler. ``handled`` counts a handler once its group is committed.

Cancellation: the loop is cancelled only through the agent's scope (a stop past its timeout,
a forced shutdown); a handler cut short that way never returned, so its work is discarded by
whoever commits the group afterwards.

An agent with ``on_batch`` is served by :func:`serve_batches` instead: the same loop, but
each call takes what is queued (up to its ``batch_max``) as one handler.
"""

from __future__ import annotations

import math
from collections.abc import Awaitable, Callable, Coroutine
from time import perf_counter
from typing import TYPE_CHECKING, Any

import trio

from loomk.agents._deadlines import DeadlineKeeper
from loomk.agents.agent import returned_a_value
from loomk.bus import EMPTY
from loomk.events import Event, delivered_event, now_ms

if TYPE_CHECKING:
    from loomk.agents._commit import Transaction
    from loomk.agents._record import AgentRecord
    from loomk.agents._routing import Handler
    from loomk.agents.context import Context

BatchHandler = Callable[["Context", list[Event]], Awaitable[None]]

__all__ = ["LATENCY_SAMPLE_EVERY", "serve", "serve_batches"]

LATENCY_SAMPLE_EVERY = 32
"""One handler in this many is timed into the agent's latency histogram (timing every one
would cost the runtime's delivery rate a tenth); requests and batches are always timed."""

_CHECKPOINT_EVERY = 64  # events an agent handles before letting other tasks run
_CUT: object = object()  # what a request's handler that was already late "returned"
# A request's handler is cut this long before its deadline, so that it is cut short rather
# than failed by a call whose timeout it inherited, which ends at the deadline itself.
_CUT_EARLY_S = 0.001


def serve(
    record: AgentRecord,
    handler: Handler,
    ctx: Context,
    transaction: Transaction,
    keeper: DeadlineKeeper,
) -> Coroutine[Any, Any, None]:
    """Handle the agent's events until its instance stops (``ctx.stop()``) or, once the
    agent is stopping, its mailbox is empty. A handler's exception ends the loop.

    (A plain function returning the loop's coroutine: an idle agent is parked in one
    coroutine frame, not a chain of them.)"""
    return _Loop(record, ctx, transaction, keeper).one_at_a_time(handler)


def serve_batches(
    record: AgentRecord,
    on_batch: BatchHandler,
    ctx: Context,
    transaction: Transaction,
    keeper: DeadlineKeeper,
) -> Coroutine[Any, Any, None]:
    """:func:`serve` for an agent with ``on_batch``: each call takes what is queued (up to
    the agent's ``batch_max``, by priority as one at a time would), and each batch is one
    handler, committed on its own."""
    return _Loop(record, ctx, transaction, keeper).in_batches(on_batch)


class _Unscoped:
    """The loop's scope while it has none (see :class:`_Loop`): nothing can cancel it."""

    __slots__ = ()
    cancel_called = False
    cancelled_caught = False

    def __enter__(self) -> _Unscoped:
        return self

    def __exit__(self, *exc_info: object) -> None:
        return None


_UNSCOPED = _Unscoped()


class _Loop:
    """The mailbox loop of one instance.

    Once the agent has served a request, the loop runs in stretches, each inside a cancel
    scope its requests' deadlines can cancel (armed with the keeper); a handler cut short
    there ends the stretch, and the next one takes a new scope. Until then (an agent that
    never serves requests) it runs without one: a scope kept for the life of every idle
    agent costs memory, and its first request runs in a scope of its own instead.
    """

    __slots__ = (
        "carried",
        "ctx",
        "keeper",
        "record",
        "running",
        "scope",
        "serves_requests",
        "transaction",
    )

    def __init__(
        self,
        record: AgentRecord,
        ctx: Context,
        transaction: Transaction,
        keeper: DeadlineKeeper,
    ) -> None:
        self.record = record
        self.ctx = ctx
        self.transaction = transaction
        self.keeper = keeper
        self.scope: trio.CancelScope | None = None  # the stretch's, once it serves requests
        self.serves_requests = False
        self.running = 0  # events of the handler running under a deadline
        self.carried: Event | None = None  # taken, but for the next batch

    def _stretch(self) -> trio.CancelScope | _Unscoped:
        """The scope of the loop's next stretch."""
        if not self.serves_requests:
            return _UNSCOPED
        scope = self.scope = trio.CancelScope()
        return scope

    async def _between_stretches(self, scope: trio.CancelScope | _Unscoped) -> None:
        """A stretch ended early (a deadline cut its handler, or the first request was
        served): drop the cut handler's work, commit what its group holds."""
        if scope.cancelled_caught:  # a handler ran past its deadline: none of it happened
            self._cut()
        transaction = self.transaction
        if transaction.grouped:  # the group so far, written outside the spent scope
            self.record.handled += await transaction.commit_group()

    def _cut(self) -> None:
        """The running handler is cut short: what it did since its last commit is dropped."""
        self.transaction.discard()
        self.transaction.deadline = math.inf
        self.record.timed_out += self.running
        self.running = 0

    async def within_deadline(
        self,
        handler: Callable[[Context, Any], Awaitable[None]],
        arrived: Any,
        events: int,
        deadline_ms: int,
    ) -> object:
        """Run the handler of a request (an event, or a batch of requests) within the
        deadline; its calls inherit what is left of it. ``_CUT`` when it does not count:
        already late (not run), or still running when the deadline came, even if it then
        returned (it caught the cancellation, or returned in the same tick). Cut while
        waiting, ``Cancelled`` leaves the loop's scope, which renews it."""
        remaining_s = (deadline_ms - now_ms()) / 1000
        if remaining_s <= 0:
            self.record.timed_out += events
            return _CUT
        started = perf_counter()
        try:
            return await self._within_deadline(handler, arrived, events, remaining_s)
        finally:
            self.record.latency.observe(perf_counter() - started)

    async def _within_deadline(
        self,
        handler: Callable[[Context, Any], Awaitable[None]],
        arrived: Any,
        events: int,
        remaining_s: float,
    ) -> object:
        when = trio.current_time() + remaining_s
        transaction = self.transaction
        transaction.deadline = when  # what its calls inherit
        self.running = events
        cut = when - _CUT_EARLY_S  # before the timeouts of the calls it inherited that time
        if self.scope is None or not self.keeper.running:  # a scope of its own
            self.serves_requests = True  # from now on the loop keeps a scope
            with trio.CancelScope(deadline=cut) as own:
                try:
                    result: object = await handler(self.ctx, arrived)  # type: ignore[func-returns-value]
                finally:
                    transaction.deadline = math.inf
            fired = own.cancel_called
        else:
            armed = self.keeper.arm(cut, self.scope)
            try:
                result = await handler(self.ctx, arrived)  # type: ignore[func-returns-value]
            finally:
                armed.disarm()
                transaction.deadline = math.inf
            fired = armed.fired
        if fired:
            self._cut()
            return _CUT
        self.running = 0
        return result

    async def one_at_a_time(self, handler: Handler) -> None:
        """The loop of an agent with ``on_event`` (see :func:`serve`)."""
        record, transaction, ctx = self.record, self.transaction, self.ctx
        mailbox = record.mailbox
        take = mailbox.take_nowait
        sender = ctx.sender
        transaction.holding = True  # while handlers run (all of the loop but parking)
        untimed = 1  # handlers until the next one timed: the first, then one in 32
        while not transaction.stop_requested:
            with self._stretch() as scope:
                budget = _CHECKPOINT_EVERY
                while not transaction.stop_requested:
                    item = take()
                    if item is EMPTY:
                        if transaction.grouped:
                            record.handled += await transaction.commit_group()
                            continue  # events may have come while the commit was written
                        if record.stopping:
                            return
                        mailbox.prune()
                        transaction.holding = False  # parked: emits go out at once
                        record.current_event = None
                        transaction.settled()  # all it took is committed (receipts)
                        await mailbox.wait()
                        transaction.holding = True
                        budget = _CHECKPOINT_EVERY
                        continue
                    source = item[1]  # type: ignore[index]
                    event = delivered_event(source, sender)
                    if event is None:
                        record.expired += 1
                        continue
                    record.current_event = event
                    deadline_ms = source.deadline_ms
                    if deadline_ms is None:
                        untimed -= 1
                        if untimed:
                            result: object = await handler(ctx, event)  # type: ignore[func-returns-value]
                        else:  # the first handler, then one in LATENCY_SAMPLE_EVERY
                            untimed = LATENCY_SAMPLE_EVERY
                            started = perf_counter()
                            try:
                                result = await handler(ctx, event)  # type: ignore[func-returns-value]
                            finally:  # a handler that raises took its time too
                                record.latency.observe(perf_counter() - started)
                    else:
                        result = await self.within_deadline(handler, event, 1, deadline_ms)
                        if scope is _UNSCOPED:  # the first request: scoped stretches from now
                            if result is not _CUT:
                                _returned(record, "on_event", result)
                                transaction.seal()
                            break
                    if result is not _CUT:  # (late requests are skipped, but count too)
                        if result is not None:
                            raise returned_a_value(record.agent, "on_event", result)
                        if transaction.seal():  # the group is full, or holds events to release
                            record.handled += await transaction.commit_group()
                    elif scope.cancel_called:  # the deadline came as it returned
                        break
                    budget -= 1
                    if not budget:
                        budget = _CHECKPOINT_EVERY
                        await trio.lowlevel.checkpoint()
                else:
                    return  # the instance asked to stop
            await self._between_stretches(scope)

    async def in_batches(self, on_batch: BatchHandler) -> None:
        """The loop of an agent with ``on_batch`` (see :func:`serve_batches`)."""
        record, transaction, ctx = self.record, self.transaction, self.ctx
        settle = transaction.settle
        if settle is not None:  # an event taken for the next batch is not handled yet
            transaction.settle = lambda: None if self.carried is not None else settle()
        mailbox = record.mailbox
        transaction.holding = True
        while not transaction.stop_requested:
            with self._stretch() as scope:
                while not transaction.stop_requested:
                    batch, deadline_ms = _take_batch(self)
                    if not batch:
                        if record.stopping:
                            return
                        mailbox.prune()
                        transaction.holding = False
                        record.current_event = None
                        transaction.settled()
                        await mailbox.wait()
                        transaction.holding = True
                        continue
                    record.current_event = batch[-1]
                    if deadline_ms is None:
                        started = perf_counter()
                        try:
                            result: object = await on_batch(ctx, batch)  # type: ignore[func-returns-value]
                        finally:
                            record.latency.observe(perf_counter() - started)
                    else:
                        result = await self.within_deadline(
                            on_batch, batch, len(batch), deadline_ms
                        )
                        if scope is _UNSCOPED:  # the first request: scoped stretches from now
                            if result is not _CUT:
                                _returned(record, "on_batch", result)
                                transaction.seal(len(batch))
                            break
                    if result is _CUT:
                        if scope.cancel_called:
                            break
                        await trio.lowlevel.checkpoint()  # late batches in a row still yield
                        continue
                    if result is not None:
                        raise returned_a_value(record.agent, "on_batch", result)
                    transaction.seal(len(batch))
                    record.handled += await transaction.commit_group()
                    await trio.lowlevel.checkpoint()  # one per batch: others run between
                else:
                    return  # the instance asked to stop
            await self._between_stretches(scope)


def _take_batch(loop: _Loop) -> tuple[list[Event], int | None]:
    """What is queued, up to ``batch_max``, as one batch, and the earliest deadline in it.

    Requests (events with a deadline) and other events never share a batch, so a request
    cut short takes no other event with it: a batch ends where the kind changes, and the
    event that ended it opens the next one. Requests already late are dropped here, one
    by one (``timed_out``).
    """
    record = loop.record
    take = record.mailbox.take_nowait
    sender = loop.ctx.sender
    limit = record.agent.batch_max
    batch: list[Event] = []
    earliest: int | None = None
    carried, loop.carried = loop.carried, None
    while len(batch) < limit:
        if carried is not None:
            source, carried = carried, None
        else:
            item = take()
            if item is EMPTY:
                break
            source = item[1]  # type: ignore[index]
        due = source.deadline_ms
        if due is not None and due <= now_ms():
            record.timed_out += 1  # late already: not handled, as one at a time
            continue
        if batch and (due is None) != (earliest is None):
            loop.carried = source  # the other kind: it opens the next batch
            break
        event = delivered_event(source, sender)
        if event is None:
            record.expired += 1
            continue
        batch.append(event)
        if due is not None and (earliest is None or due < earliest):
            earliest = due
    return batch, earliest


def _returned(record: AgentRecord, method: str, result: object) -> None:
    """Raise unless the handler returned None (a returned value is a contract bug)."""
    if result is not None:
        raise returned_a_value(record.agent, method, result)
