"""The handler transaction: what an agent's handlers did that is not committed yet.

One :class:`Transaction` exists per running agent instance, owned by the runtime (it also
carries the instance's request to end, ``ctx.stop()``, which must not outlive it). While a
handler runs (``holding``), the events it emits wait in the outbox and its ``ctx.state``
writes in the state view. When it returns, the runtime *seals* its work into the commit
group; a group is committed as one atomic state write, after which its held events are
published in the order they were emitted (a transactional outbox: nothing outside the agent
sees an effect of a handler before its state is durable). A handler that raises loses only
its own part (:meth:`discard`); a group whose commit fails is lost whole (:meth:`abandon`).
"""

from __future__ import annotations

import math
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

import trio

from loomk.events import Event
from loomk.state.agent_state import AgentStateView

if TYPE_CHECKING:
    from loomk.agents.services import AgentStateStore

__all__ = ["COMMIT_GROUP_MAX", "Transaction"]

COMMIT_GROUP_MAX = 64
"""Most events whose handlers' commits are grouped into one while an agent has a backlog
(a batch handler's batches are each committed on their own).

Grouping saves a park per handler (the commit wait); the bound caps how long the first
handler's held events wait for the group's commit.
"""

Publish = Callable[[str, Event], Awaitable[int]]


class Transaction:
    """The uncommitted work of one agent instance: state writes, held events, handlers."""

    __slots__ = (
        "_mark",
        "_publish",
        "_store",
        "_view",
        "agent_id",
        "deadline",
        "grouped",
        "holding",
        "outbox",
        "settle",
        "stop_requested",
    )

    def __init__(self, agent_id: str, store: AgentStateStore, publish: Publish) -> None:
        self.agent_id = agent_id
        self._store = store
        self._publish = publish
        self.holding = False  # a handler runs: its emits wait for the commit
        self.outbox: list[tuple[str, Event]] = []  # held events, in emit order
        self._mark = 0  # held events before it belong to handlers that returned
        self.grouped = 0  # events handled by the handlers sealed since the last group commit
        self._view: AgentStateView | None = None  # loaded on first use
        self.stop_requested = False  # the instance called ctx.stop(): end after this handler
        self.deadline = math.inf  # trio time by which the running handler must be done
        # Called as a group commit begins, with every event taken so far handled: marks
        # them done for receipts (loomk.bus.receipts), in the same store write as the
        # group's state when a transport records what it acknowledges.
        self.settle: Callable[[], None] | None = None

    @property
    def state(self) -> AgentStateView:
        """The agent's state as its handlers see it (loaded from the store on first use)."""
        view = self._view
        if view is None:
            view = self._view = AgentStateView(self._store.load(self.agent_id), self.flush)
        return view

    @property
    def dirty(self) -> bool:
        """Whether state writes or held events await a commit."""
        view = self._view
        return bool(self.outbox) or (view is not None and view.dirty)

    def seal(self, events: int = 1) -> bool:
        """The running handler returned: its writes and held events join the commit group,
        with the ``events`` it handled (a batch handler's whole batch).

        Returns whether the group should be committed now: it is full, or it holds events
        (an answer must not wait for whatever the next queued handler does).
        """
        grouped = self.grouped = self.grouped + events
        view = self._view
        if view is not None:
            view.seal()
        outbox = self.outbox
        if outbox:
            self._mark = len(outbox)
            return True
        return grouped >= COMMIT_GROUP_MAX  # (an empty outbox has its mark at 0)

    async def flush(self) -> None:
        """Commit the state written so far, then publish the held events, in order.

        Shielded while a handler runs under a deadline: one cut short while this runs is
        cut after it, so its state is never durable without its events going out, nor half
        of them. (With no deadline running nothing can cut it but the agent being stopped,
        and the shield, a cancel scope per commit, is not paid.)
        """
        if self.deadline == math.inf:
            await self._write_and_publish()
        else:
            with trio.CancelScope(shield=True):
                await self._write_and_publish()

    async def _write_and_publish(self) -> None:
        view = self._view
        if view is not None and view.dirty:
            await self._store.commit(self.agent_id, view)
        outbox, self.outbox = self.outbox, []
        self._mark = 0
        publish = self._publish
        for topic, event in outbox:
            await publish(topic, event)

    async def commit_group(self) -> int:
        """Commit the group; returns how many events its handlers handled (0: none).

        A group with nothing to write or publish is committed without waiting.
        """
        if self.settle is not None:  # before the write: what it records joins this batch
            self.settle()
        if self.dirty:
            await self.flush()
        committed, self.grouped = self.grouped, 0
        return committed

    def settled(self) -> None:
        """Every event taken so far is handled and committed (the loop is about to park)."""
        if self.settle is not None:
            self.settle()

    def discard(self) -> None:
        """Drop the running handler's writes and held events (it failed or was cut short).

        What earlier handlers of the group did stays, to be committed.
        """
        if self._view is not None:
            self._view.discard()
        del self.outbox[self._mark :]

    def abandon(self) -> int:
        """Drop every uncommitted write and held event (their commit failed); returns how
        many handlers were lost."""
        if self._view is not None:
            self._view.abandon()
        self.outbox = []
        self._mark = 0
        lost, self.grouped = self.grouped, 0
        return lost
