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
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

import trio

from loomk.agents.agent import returned_a_value
from loomk.bus import EMPTY
from loomk.events import Event, delivered_event, now_ms

if TYPE_CHECKING:
    from loomk.agents._commit import Transaction
    from loomk.agents._record import AgentRecord
    from loomk.agents._routing import Handler
    from loomk.agents.context import Context

BatchHandler = Callable[["Context", list[Event]], Awaitable[None]]

__all__ = ["serve", "serve_batches"]

_CHECKPOINT_EVERY = 64  # events an agent handles before letting other tasks run
_CUT: object = object()  # what a handler cut short by its event's deadline "returned"


async def serve(
    record: AgentRecord, handler: Handler, ctx: Context, transaction: Transaction
) -> None:
    """Handle the agent's events until its instance stops (``ctx.stop()``) or, once the
    agent is stopping, its mailbox is empty. A handler's exception ends the loop."""
    mailbox = record.mailbox
    take = mailbox.take_nowait
    sender = ctx.sender
    budget = _CHECKPOINT_EVERY
    transaction.holding = True  # while handlers run (all of this loop but parking)
    while not transaction.stop_requested:
        item = take()
        if item is EMPTY:
            if transaction.grouped:
                record.handled += await transaction.commit_group()
                continue  # events may have come while the commit was written
            if record.stopping:
                return
            mailbox.prune()
            transaction.holding = False  # parked: no handler runs, emits go out at once
            await mailbox.wait()
            transaction.holding = True
            budget = _CHECKPOINT_EVERY
            continue
        source = item[1]  # type: ignore[index]
        event = delivered_event(source, sender)
        if event is None:
            record.expired += 1
            continue
        deadline_ms = source.deadline_ms
        if deadline_ms is None:
            result: object = await handler(ctx, event)  # type: ignore[func-returns-value]
        else:
            result = await _within_deadline(record, handler, ctx, event, transaction, deadline_ms)
            if result is _CUT:
                continue
        if result is not None:
            raise returned_a_value(record.agent, "on_event", result)
        if transaction.seal():  # the group is full, or holds events to release
            record.handled += await transaction.commit_group()
        budget -= 1
        if not budget:
            budget = _CHECKPOINT_EVERY
            await trio.lowlevel.checkpoint()


async def serve_batches(
    record: AgentRecord, on_batch: BatchHandler, ctx: Context, transaction: Transaction
) -> None:
    """:func:`serve` for an agent with ``on_batch``: each call takes what is queued (up to
    the agent's ``batch_max``, by priority as one at a time would), and each batch is one
    handler, committed on its own."""
    mailbox = record.mailbox
    take = mailbox.take_nowait
    sender = ctx.sender
    limit = record.agent.batch_max
    transaction.holding = True
    while not transaction.stop_requested:
        batch: list[Event] = []
        deadline_ms: int | None = None
        while len(batch) < limit:
            item = take()
            if item is EMPTY:
                break
            source = item[1]  # type: ignore[index]
            event = delivered_event(source, sender)
            if event is None:
                record.expired += 1
                continue
            batch.append(event)
            due = source.deadline_ms
            if due is not None and (deadline_ms is None or due < deadline_ms):
                deadline_ms = due
        if not batch:
            if record.stopping:
                return
            mailbox.prune()
            transaction.holding = False
            await mailbox.wait()
            transaction.holding = True
            continue
        if deadline_ms is None:
            result: object = await on_batch(ctx, batch)  # type: ignore[func-returns-value]
        else:
            result = await _within_deadline(record, on_batch, ctx, batch, transaction, deadline_ms)
            if result is _CUT:
                continue
        if result is not None:
            raise returned_a_value(record.agent, "on_batch", result)
        transaction.seal(len(batch))
        record.handled += await transaction.commit_group()
        await trio.lowlevel.checkpoint()  # one per batch: others run between batches


async def _within_deadline(
    record: AgentRecord,
    handler: Callable[[Context, Any], Awaitable[None]],
    ctx: Context,
    arrived: Any,
    transaction: Transaction,
    deadline_ms: int,
) -> object:
    """Run the handler of a request (an event, or a batch holding requests) within the
    deadline (its calls inherit what is left of it). Cut short, or already late, it commits
    nothing: the caller has its timeout."""
    handled = len(arrived) if isinstance(arrived, list) else 1
    remaining_s = (deadline_ms - now_ms()) / 1000
    if remaining_s <= 0:
        record.timed_out += handled
        await trio.lowlevel.checkpoint()
        return _CUT
    with trio.CancelScope(deadline=trio.current_time() + remaining_s) as scope:
        transaction.deadline = scope.deadline
        try:
            result: object = await handler(ctx, arrived)  # type: ignore[func-returns-value]
        finally:
            transaction.deadline = math.inf
    if scope.cancelled_caught:
        transaction.discard()  # it never returned: none of it happened
        record.timed_out += handled
        return _CUT
    return result
