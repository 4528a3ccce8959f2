"""The agent runtime: spawns supervised agents, changes their subscriptions, stops them.

Every agent is one task in the layer the runtime is attached to (the kernel's agent layer).
The work is split in small rooms, each its own module:

- :mod:`~loomk.agents._record`: the record of an agent and the read-only handle users get;
- :mod:`~loomk.agents._subscriptions`: the subscriptions that survive restarts;
- :mod:`~loomk.agents._supervise`: instances, restarts, giving up;
- :mod:`~loomk.agents._serve`: the mailbox loop, with commits grouped;
- :mod:`~loomk.agents._commit`: the handler transaction (state writes and held events);
- :mod:`~loomk.agents._routing`: the routing policy of ``routed`` agents.

The runtime reaches the rest of the system only through :class:`AgentServices`.
"""

from __future__ import annotations

import builtins
import difflib
import gc
from collections.abc import Collection, Iterable, Iterator, Mapping
from contextlib import contextmanager
from types import MappingProxyType
from typing import Any

import trio

from loomk.agents._deadlines import DeadlineKeeper
from loomk.agents._record import AgentHandle, AgentRecord
from loomk.agents._subscriptions import AgentSubscriptions, check_distinct, topics_of
from loomk.agents._supervise import Supervisor
from loomk.agents.agent import Agent, validate_agent_id
from loomk.agents.directory import AgentDirectory, AgentInfo
from loomk.agents.services import AgentServices
from loomk.agents.supervisor import Restart, RestartPolicy
from loomk.bus.overflow import OverflowLike
from loomk.bus.topics import validate_pattern
from loomk.errors import (
    AgentContractError,
    AgentError,
    AgentExists,
    AgentNotFound,
    AgentStartError,
    KernelClosed,
)
from loomk.events import QoS
from loomk.telemetry.logging import get_logger

__all__ = ["AgentRuntime"]

_log = get_logger("loomk.runtime")
_NO_METADATA: Mapping[str, str] = MappingProxyType({})


@contextmanager
def _gc_paused() -> Iterator[None]:
    """Pause the cyclic garbage collector for a burst of allocations that are all kept."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def _check_timeout(name: str, value: object) -> None:
    if value is None:
        return
    if (
        not isinstance(value, int | float)
        or isinstance(value, bool)
        or not 0 <= value < float("inf")
        or (name == "start_timeout_s" and not value > 0)
    ):
        low = "> 0" if name == "start_timeout_s" else ">= 0"
        raise AgentError(f"{name} must be a finite number {low}, got {value!r}")


SPAWN_OPTIONS = frozenset(
    {
        "restart",
        "max_restarts",
        "window_s",
        "backoff_s",
        "backoff_max_s",
        "jitter",
        "critical",
        "stop_timeout_s",
        "start_timeout_s",
    }
)
"""The keyword options ``spawn`` and ``spawn_many`` take."""

SUBSCRIBE_OPTIONS = frozenset({"qos", "event_types", "overflow", "capacity"})
"""The keyword options a subscription of an agent takes."""


def check_options(what: str, given: Collection[str], known: frozenset[str]) -> None:
    """Refuse keyword options ``what`` does not take, naming the nearest known one."""
    unknown = sorted(set(given) - known)
    if unknown:
        name = unknown[0]
        close = difflib.get_close_matches(name, known, n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        raise AgentError(
            f"{what} takes no option {name!r}{hint} (it takes {', '.join(sorted(known))})"
        )


def _check_batches(agent: Agent) -> None:
    limit = agent.batch_max
    if limit.__class__ is not int or limit < 1:
        raise AgentContractError(
            f"{type(agent).__name__}.batch_max must be an int >= 1, got {limit!r}"
        )
    if agent.routed:
        raise AgentContractError(
            f"{type(agent).__name__} is routed and has on_batch: routed agents take their "
            "events one at a time (drop on_batch, or set routed = False)"
        )


class AgentRuntime:
    """Spawns, supervises, subscribes and stops agents on the given services."""

    def __init__(self, services: AgentServices) -> None:
        self._services = services
        self.directory = AgentDirectory()
        self._records: dict[str, AgentRecord] = {}
        self._subscriptions = AgentSubscriptions(services.bus, self.directory)
        self._keeper = DeadlineKeeper()
        self._keeper_scope = trio.CancelScope()
        self._supervisor = Supervisor(services, self._subscriptions, self._forget, self._keeper)
        self._nursery: trio.Nursery | None = None
        self._closing = False

    def attach(self, nursery: trio.Nursery) -> None:
        """Give the runtime the nursery its agents run in (the kernel's agent layer); the
        keeper of requests' deadlines runs there too, until :meth:`shutdown`."""
        self._nursery = nursery
        nursery.start_soon(self._keep_deadlines, name="loomk:deadlines")

    async def _keep_deadlines(self) -> None:
        with self._keeper_scope:
            await self._keeper.run()

    # ---- queries ------------------------------------------------------------------------

    def get(self, agent_id: str) -> AgentHandle:
        """The running agent with this id; raises :class:`AgentNotFound`."""
        return self._record(agent_id).handle

    def list(self) -> builtins.list[str]:
        """Ids of the running agents, in spawn order."""
        return list(self._records)

    def __len__(self) -> int:
        return len(self._records)

    def __contains__(self, agent_id: object) -> bool:
        return agent_id in self._records

    def subscriptions(self, agent_id: str) -> builtins.list[str]:
        """The agent's subscribed patterns, its private ``agent.{id}.replies`` first."""
        return list(self._record(agent_id).bindings)

    def _record(self, agent_id: str) -> AgentRecord:
        record = self._records.get(agent_id)
        if record is None:
            raise AgentNotFound(f"Agent {agent_id} not found")
        return record

    # ---- spawning -----------------------------------------------------------------------

    async def spawn(
        self,
        agent: Agent,
        *,
        restart: Restart = "permanent",
        max_restarts: int = 5,
        window_s: float = 10.0,
        backoff_s: float = 0.1,
        backoff_max_s: float = 5.0,
        jitter: float = 0.2,
        critical: bool = False,
        stop_timeout_s: float | None = None,
        start_timeout_s: float | None = None,
    ) -> AgentHandle:
        """Start ``agent`` under supervision; returns once its first ``on_start`` has run.

        Its subscriptions (``agent.{id}.replies`` and its ``topics``) are in place before
        ``on_start`` runs, so nothing published after ``spawn`` is called is missed.
        ``restart``, ``max_restarts``, ``window_s``, ``backoff_s``, ``backoff_max_s``,
        ``jitter`` and ``critical`` form its :class:`RestartPolicy`; ``stop_timeout_s``
        bounds its graceful stop (default: the services' ``agent_defaults``).

        As an Erlang supervisor's ``start_child``, the policy applies once the agent has
        started: if its first ``on_start`` raises, or runs past ``start_timeout_s`` (default:
        ``agent_start_timeout_s``), it is not restarted and ``spawn`` raises
        :class:`AgentStartError` once the agent is gone (``on_stop`` has run; the events
        queued meanwhile are dropped).
        """
        policy = RestartPolicy(
            restart, max_restarts, window_s, backoff_s, backoff_max_s, jitter, critical
        )
        _check_timeout("stop_timeout_s", stop_timeout_s)
        _check_timeout("start_timeout_s", start_timeout_s)
        record = self._start(self._check(agent), policy, stop_timeout_s, start_timeout_s)
        await self._until_started([record])
        if record.start_error is not None:
            raise record.start_error
        return record.handle

    async def spawn_many(
        self, agents: Iterable[Agent], **supervision: Any
    ) -> builtins.list[AgentHandle]:
        """Spawn many agents at once, with one supervision policy (see :meth:`spawn`).

        Every agent is checked before any starts, so a bad one starts none; and if one fails
        to start, those that did are stopped again (all at once) before
        :class:`AgentStartError` is raised, so none of the batch is left running. Much faster
        than one ``spawn`` after another for thousands of agents: the starts share one
        scheduler pass, and the garbage collector pauses until every agent has started (it
        would otherwise walk the growing heap again and again).
        """
        check_options("spawn_many", supervision, SPAWN_OPTIONS)
        stop_timeout_s = supervision.pop("stop_timeout_s", None)
        start_timeout_s = supervision.pop("start_timeout_s", None)
        _check_timeout("stop_timeout_s", stop_timeout_s)
        _check_timeout("start_timeout_s", start_timeout_s)
        policy = RestartPolicy(**supervision)
        batch = list(agents)
        ids: set[str] = set()
        for agent in batch:
            agent_id = self._check(agent).agent_id
            if agent_id in ids:
                raise AgentExists(f"Agent {agent_id} appears twice in spawn_many")
            ids.add(agent_id)
            topics = topics_of(agent)
            check_distinct(agent_id, topics)
            for topic in topics:
                validate_pattern(topic.pattern)
        with _gc_paused():  # the handles too: allocations past it would start a full pass
            records = [
                self._start(agent, policy, stop_timeout_s, start_timeout_s) for agent in batch
            ]
            await self._until_started(records)
            failed = [record.start_error for record in records if record.start_error]
            if not failed:
                return [record.handle for record in records]
        await self._stop_together([r for r in records if r.start_error is None])
        first = failed[0]
        if len(failed) == 1:
            raise first
        raise AgentStartError(
            first.agent_id,
            f"{first} (and {len(failed) - 1} more of the {len(records)} agents did not "
            "start; none of the batch was left running)",
            first.cause,
        )

    def _check(self, agent: Agent) -> Agent:
        if not isinstance(agent, Agent):
            raise AgentError(f"spawn takes an Agent instance, got {type(agent).__name__}")
        agent_id = validate_agent_id(getattr(agent, "agent_id", None))
        if agent.handles_batches:
            _check_batches(agent)
        if self._nursery is None or self._closing:
            raise KernelClosed(f"cannot spawn {agent_id!r}: the kernel is not running")
        if agent_id in self._records:
            raise AgentExists(f"Agent {agent_id} already exists")
        return agent

    def _start(
        self,
        agent: Agent,
        policy: RestartPolicy,
        stop_timeout_s: float | None,
        start_timeout_s: float | None,
    ) -> AgentRecord:
        """Subscribe, register and start the agent's task (does not wait for on_start)."""
        assert self._nursery is not None
        defaults = self._services.agent_defaults
        record = AgentRecord(
            agent,
            policy,
            defaults.stop_timeout_s if stop_timeout_s is None else stop_timeout_s,
            defaults.start_timeout_s if start_timeout_s is None else start_timeout_s,
            defaults,
        )
        self._subscriptions.attach_declared(record, topics_of(agent))
        self._records[agent.agent_id] = record
        metadata = agent.metadata
        self.directory.register(
            AgentInfo(
                agent.agent_id,
                tuple(record.bindings),
                tuple(agent.capabilities),
                dict(metadata) if metadata else _NO_METADATA,
            )
        )
        self._nursery.start_soon(self._supervisor.run, record)
        return record

    @staticmethod
    async def _until_started(records: builtins.list[AgentRecord]) -> None:
        for record in records:
            started = record.started
            if started is not None:
                if not started.is_set():  # waiting on a set Event would still reschedule
                    await started.wait()
                record.started = None
        await trio.lowlevel.checkpoint()

    # ---- subscriptions ------------------------------------------------------------------

    async def subscribe(
        self,
        agent_id: str,
        pattern: str,
        *,
        qos: QoS = QoS.BATCHED,
        event_types: Collection[str] | None = None,
        overflow: OverflowLike | None = None,
        capacity: int | None = None,
    ) -> None:
        """Subscribe a running agent to ``pattern``; the subscription survives restarts."""
        await self._subscriptions.subscribe(
            self._record(agent_id),
            pattern,
            qos=qos,
            event_types=event_types,
            overflow=overflow,
            capacity=capacity,
        )

    async def unsubscribe(self, agent_id: str, pattern: str) -> None:
        """Remove a subscription; events it already queued are still handled."""
        await self._subscriptions.unsubscribe(self._record(agent_id), pattern)

    # ---- stopping -----------------------------------------------------------------------

    async def stop(self, agent_id: str, timeout_s: float | None = None) -> None:
        """Stop an agent gracefully: no new events, drain the queued ones, run ``on_stop``.

        Past ``timeout_s`` (default: the agent's stop timeout) the agent is cancelled;
        ``on_stop`` still runs, bounded by the same timeout.
        """
        record = self._record(agent_id)
        self._begin_stop(record)
        if trio.lowlevel.current_task() is record.task:
            await trio.lowlevel.checkpoint()
            return  # an agent stopping itself: it ends once its handler returns
        timeout = record.stop_timeout_s if timeout_s is None else timeout_s
        with trio.move_on_after(timeout):
            await record.wait_finished()
        if not record.finished:
            _log.warning("agent did not stop in time; cancelling it", agent_id=agent_id)
            record.scope.cancel()
            await record.wait_finished()

    async def shutdown(self, timeout_s: float) -> None:
        """Stop every agent at once; past ``timeout_s`` cancel those still running.

        New spawns are refused from the start. ``on_stop`` runs for every agent, each
        bounded by its own stop timeout.
        """
        self._closing = True
        await self._stop_together(list(self._records.values()), timeout_s)
        self._keeper_scope.cancel()

    async def _stop_together(
        self, records: builtins.list[AgentRecord], timeout_s: float | None = None
    ) -> None:
        """Stop these agents at once (not one after another); past ``timeout_s`` (default:
        the longest of their stop timeouts) cancel those still running."""
        records = [record for record in records if not record.finished]
        if not records:
            return
        for record in records:
            self._begin_stop(record)
        if timeout_s is None:
            timeout_s = max(record.stop_timeout_s for record in records)
        with trio.move_on_after(timeout_s):
            await self._until_finished(records)
        late = [record for record in records if not record.finished]
        if late:
            _log.warning("agents did not stop in time; cancelling them", agents=len(late))
            for record in late:
                record.scope.cancel()
            await self._until_finished(late)

    def force(self) -> None:
        """Abandon graceful stopping: cut every running ``on_stop`` short, now and later."""
        self._supervisor.force()

    def _begin_stop(self, record: AgentRecord) -> None:
        """No restart, no new event: the agent leaves the directory, drains what is
        queued, then ends."""
        record.stopping = True
        record.status = "stopping"
        if record.backoff is not None:
            record.backoff.cancel()  # a stopping agent is not restarted: end the wait now
        self._subscriptions.detach_all(record)
        self._subscriptions.leave_directory(record)

    @staticmethod
    async def _until_finished(records: builtins.list[AgentRecord]) -> None:
        for record in records:
            if not record.finished:
                await record.wait_finished()

    def _forget(self, record: AgentRecord) -> None:
        """Remove an agent that ended: off the bus, out of the directory, mailbox dropped."""
        if self._records.get(record.agent_id) is record:
            del self._records[record.agent_id]
            self.directory.unregister(record.agent_id)
        self._subscriptions.detach_all(record)
        record.mailbox.discard()
        if record.status != "failed":
            record.status = "stopped"
