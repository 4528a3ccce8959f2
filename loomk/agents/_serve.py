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
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import trio

from loomk.agents.agent import returned_a_value
from loomk.bus import EMPTY
from loomk.events import delivered_event

if TYPE_CHECKING:
    from loomk.agents._commit import Transaction
    from loomk.agents._record import AgentRecord
    from loomk.agents._routing import Handler
    from loomk.agents.context import Context

__all__ = ["serve"]

_CHECKPOINT_EVERY = 64  # events an agent handles before letting other tasks run


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
        event = delivered_event(item[1], sender)  # type: ignore[index]
        if event is None:
            record.expired += 1
            continue
        result: object = await handler(ctx, event)  # type: ignore[func-returns-value]
        if result is not None:
            raise returned_a_value(record.agent, "on_event", result)
        if transaction.seal():  # the group is full, or holds events to release
            record.handled += await transaction.commit_group()
        budget -= 1
        if not budget:
            budget = _CHECKPOINT_EVERY
            await trio.lowlevel.checkpoint()
