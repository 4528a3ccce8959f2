"""The agent runtime: spawns supervised agents, feeds their mailboxes, stops them in order.

Every agent is one task in the kernel's agent layer. The task supervises instances of the
agent: it runs ``on_start``, then drains the agent's mailbox one event at a time (realtime
lanes first, then batched, then background), applies the envelope's hop/TTL step to each
event, and calls ``on_event``. When a handler raises, the instance ends (``on_stop`` still
runs) and, as the restart policy allows, a fresh instance takes over the same mailbox, so no
event queued for the agent is lost. ``stop`` detaches the agent from the bus, lets it drain
what was already queued, runs ``on_stop`` and, past the stop timeout, cancels it.

Cancellation: ``on_stop`` runs shielded but bounded by the stop timeout, so a hanging agent
can delay a stop or a shutdown by at most twice its timeout and never blocks another agent.
"""

from __future__ import annotations

import builtins
import functools
import gc
import json
from collections.abc import Collection, Iterable, Iterator, Mapping
from collections.abc import Set as AbstractSet
from contextlib import contextmanager
from dataclasses import dataclass
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

import trio

from loomk.agents.agent import Agent, Topic, validate_agent_id
from loomk.agents.context import Context
from loomk.agents.directory import AgentDirectory, AgentInfo
from loomk.agents.supervisor import Restart, RestartPolicy, RestartTracker
from loomk.bus.bus import Binding, SubscriptionStats, binding_stats
from loomk.bus.lanes import Mailbox
from loomk.bus.overflow import OverflowLike
from loomk.bus.topics import validate_pattern
from loomk.envelope import agent_reply_topic, delivered_event
from loomk.errors import (
    AgentContractError,
    AgentError,
    AgentExists,
    AgentFailed,
    AgentNotFound,
    AlreadySubscribed,
    KernelClosed,
    NotSubscribed,
)
from loomk.events import Event, QoS
from loomk.llm import Route
from loomk.state.memory import EphemeralMemory
from loomk.telemetry.logging import get_logger

if TYPE_CHECKING:
    from loomk.config import Config
    from loomk.kernel import Kernel

__all__ = ["COMMIT_GROUP_MAX", "AgentHandle", "AgentRuntime", "AgentStats"]

_log = get_logger("loomk.runtime")
_CHECKPOINT_EVERY = 64  # events an agent handles before letting other tasks run
COMMIT_GROUP_MAX = 64
"""Most handlers of one agent whose commits are grouped into one batch while it has a backlog.

Grouping saves a park per handler (the commit wait); the bound caps how long the first
handler's held events wait for the group's commit.
"""

RESTARTED_TOPIC = "system.agent.restarted"
FAILED_TOPIC = "system.agent.failed"


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


_NO_METADATA: Mapping[str, str] = MappingProxyType({})
_NO_PATTERNS: AbstractSet[str] = frozenset()


def _check_stop_timeout(value: object) -> None:
    if value is None:
        return
    if not isinstance(value, int | float) or isinstance(value, bool) or not value >= 0:
        raise AgentError(f"stop_timeout_s must be a number >= 0, got {value!r}")


@dataclass(frozen=True, slots=True)
class AgentStats:
    """Counters of one agent."""

    agent_id: str
    status: str
    handled: int
    expired: int
    failures: int
    restarts: int
    mailbox_depth: int
    mailbox_high_water: int
    lanes: list[SubscriptionStats]


class AgentHandle:
    """The runtime's record of one agent: its mailbox, subscriptions and supervision."""

    __slots__ = (
        "_done",
        "_memory",
        "agent",
        "agent_id",
        "backoff",
        "bindings",
        "carried",
        "context",
        "expired",
        "failures",
        "finished",
        "handled",
        "last_error",
        "mailbox",
        "own",
        "policy",
        "restarts",
        "scope",
        "started",
        "status",
        "stop_timeout_s",
        "stopping",
        "task",
    )

    def __init__(self, agent: Agent, policy: RestartPolicy, stop_timeout_s: float) -> None:
        self.agent_id = agent.agent_id
        self.agent = agent
        self.policy = policy
        self.stop_timeout_s = stop_timeout_s
        self.mailbox = Mailbox()
        self.bindings: dict[str, Binding] = {}
        # Patterns the current instance subscribed itself, and the previous instance's until
        # on_start makes them again; a shared empty set until used (most agents never do).
        self.own: AbstractSet[str] = _NO_PATTERNS
        self.carried: AbstractSet[str] = _NO_PATTERNS
        self.status = "starting"
        self.stopping = False
        self.handled = 0
        self.expired = 0
        self.failures = 0
        self.restarts = 0
        self.last_error: BaseException | None = None
        self._memory: EphemeralMemory | None = None
        self.context: Context | None = None
        self.scope = trio.CancelScope()
        self.backoff: trio.CancelScope | None = None
        self.task: trio.lowlevel.Task | None = None
        self.started: trio.Event | None = trio.Event()  # dropped once spawn has seen it
        self.finished = False
        self._done: trio.Event | None = None  # made only when someone waits for the end

    async def wait_finished(self) -> None:
        """Wait until the agent's task has ended (a checkpoint if it already has)."""
        if self.finished:
            await trio.lowlevel.checkpoint()
            return
        if self._done is None:
            self._done = trio.Event()
        await self._done.wait()

    def _mark_started(self) -> None:
        if self.started is not None:
            self.started.set()

    def _mark_finished(self) -> None:
        self.finished = True
        self._mark_started()
        if self._done is not None:
            self._done.set()

    def memory(self, config: Config) -> EphemeralMemory:
        """The agent's ephemeral memory (made on first use, kept across restarts)."""
        if self._memory is None:
            self._memory = EphemeralMemory(config.memory_max_items, config.memory_max_bytes)
        return self._memory

    def subscriptions(self) -> list[str]:
        """The patterns the agent is subscribed to, in subscription order."""
        return list(self.bindings)

    def stats(self) -> AgentStats:
        """A snapshot of the agent's counters and mailbox."""
        lanes = [binding_stats(binding) for binding in self.bindings.values()]
        return AgentStats(
            agent_id=self.agent_id,
            status=self.status,
            handled=self.handled,
            expired=self.expired,
            failures=self.failures,
            restarts=self.restarts,
            mailbox_depth=len(self.mailbox),
            mailbox_high_water=self.mailbox.high_water,
            lanes=lanes,
        )

    def __repr__(self) -> str:
        return f"<AgentHandle {self.agent_id!r} {self.status}>"


class AgentRuntime:
    """Spawns, supervises, subscribes and stops the kernel's agents."""

    def __init__(self, kernel: Kernel) -> None:
        self.kernel = kernel
        self.bus = kernel.bus
        self.directory = AgentDirectory()
        self._agents: dict[str, AgentHandle] = {}
        self._nursery: trio.Nursery | None = None
        self._closing = False
        self._forced = False
        self._on_stop_scopes: set[trio.CancelScope] = set()

    def attach(self, nursery: trio.Nursery) -> None:
        """Give the runtime the nursery its agents run in (the kernel's agent layer)."""
        self._nursery = nursery

    # ---- queries ------------------------------------------------------------------------

    def get(self, agent_id: str) -> AgentHandle:
        """The running agent with this id; raises :class:`AgentNotFound`."""
        handle = self._agents.get(agent_id)
        if handle is None:
            raise AgentNotFound(f"Agent {agent_id} not found")
        return handle

    def list(self) -> builtins.list[str]:
        """Ids of the running agents, in spawn order."""
        return list(self._agents)

    def __len__(self) -> int:
        return len(self._agents)

    def __contains__(self, agent_id: object) -> bool:
        return agent_id in self._agents

    def subscriptions(self, agent_id: str) -> builtins.list[str]:
        """The agent's subscribed patterns, its private ``agent.{id}.replies`` first."""
        return self.get(agent_id).subscriptions()

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
    ) -> AgentHandle:
        """Start ``agent`` under supervision; returns once its first ``on_start`` has run.

        Its subscriptions (``agent.{id}.replies`` and its ``topics``) are in place before
        ``on_start`` runs, so nothing published after ``spawn`` is called is missed.
        ``restart``, ``max_restarts``, ``window_s``, ``backoff_s``, ``backoff_max_s``,
        ``jitter`` and ``critical`` form its :class:`RestartPolicy`; ``stop_timeout_s``
        bounds its graceful stop (default: the kernel's ``shutdown_timeout_s``).
        """
        policy = RestartPolicy(
            restart, max_restarts, window_s, backoff_s, backoff_max_s, jitter, critical
        )
        _check_stop_timeout(stop_timeout_s)
        handle = self._start(self._check(agent), policy, stop_timeout_s)
        await self._until_started([handle])
        return handle

    async def spawn_many(
        self, agents: Iterable[Agent], **supervision: Any
    ) -> builtins.list[AgentHandle]:
        """Spawn many agents at once, with one supervision policy (see :meth:`spawn`).

        Every agent is checked before any starts, so a bad one starts none. Much faster
        than one ``spawn`` after another for thousands of agents: the starts share one
        scheduler pass, and the garbage collector pauses until every agent has started
        (it would otherwise walk the growing heap again and again).
        """
        stop_timeout_s = supervision.pop("stop_timeout_s", None)
        _check_stop_timeout(stop_timeout_s)
        policy = RestartPolicy(**supervision)
        batch = list(agents)
        ids: set[str] = set()
        for agent in batch:
            agent_id = self._check(agent).agent_id
            if agent_id in ids:
                raise AgentExists(f"Agent {agent_id} appears twice in spawn_many")
            ids.add(agent_id)
            for topic in self._topics_of(agent):
                validate_pattern(topic.pattern)
        with _gc_paused():
            handles = [self._start(agent, policy, stop_timeout_s) for agent in batch]
            await self._until_started(handles)
        return handles

    def _check(self, agent: Agent) -> Agent:
        if not isinstance(agent, Agent):
            raise AgentError(f"spawn takes an Agent instance, got {type(agent).__name__}")
        agent_id = validate_agent_id(getattr(agent, "agent_id", None))
        if self._nursery is None or self._closing:
            raise KernelClosed(f"cannot spawn {agent_id!r}: the kernel is not running")
        if agent_id in self._agents:
            raise AgentExists(f"Agent {agent_id} already exists")
        return agent

    @staticmethod
    def _topics_of(agent: Agent) -> builtins.list[Topic]:
        return [Topic(agent_reply_topic(agent.agent_id)), *agent.declared_topics()]

    def _start(
        self, agent: Agent, policy: RestartPolicy, stop_timeout_s: float | None
    ) -> AgentHandle:
        """Subscribe, register and start the agent's task (does not wait for on_start)."""
        assert self._nursery is not None
        if stop_timeout_s is None:
            stop_timeout_s = self.kernel.config.shutdown_timeout_s
        handle = AgentHandle(agent, policy, stop_timeout_s)
        topics = self._topics_of(agent)
        self._check_topics(agent.agent_id, topics)
        try:
            for topic in topics:
                self._attach(handle, topic)
        except BaseException:
            self._detach_all(handle)
            raise
        self._agents[agent.agent_id] = handle
        metadata = agent.metadata
        self.directory._register(
            AgentInfo(
                agent.agent_id,
                tuple(handle.bindings),
                tuple(agent.capabilities),
                dict(metadata) if metadata else _NO_METADATA,
            )
        )
        self._nursery.start_soon(self._run, handle)
        return handle

    @staticmethod
    async def _until_started(handles: builtins.list[AgentHandle]) -> None:
        for handle in handles:
            started = handle.started
            if started is not None:
                if not started.is_set():  # waiting on a set Event would still reschedule
                    await started.wait()
                handle.started = None
        await trio.lowlevel.checkpoint()

    @staticmethod
    def _check_topics(agent_id: str, topics: builtins.list[Topic]) -> None:
        seen: set[str] = set()
        for topic in topics:
            if topic.pattern in seen:
                raise AlreadySubscribed(
                    f"Agent {agent_id} already subscribed to topic {topic.pattern}"
                )
            seen.add(topic.pattern)

    def _attach(self, handle: AgentHandle, topic: Topic) -> Binding:
        lane = self.bus.new_lane(
            handle.mailbox, qos=topic.qos, overflow=topic.overflow, capacity=topic.capacity
        )
        try:
            binding = self.bus.attach(topic.pattern, lane, event_types=topic.event_types)
        except BaseException:
            handle.mailbox.remove_lane(lane)
            raise
        handle.bindings[topic.pattern] = binding
        return binding

    def _detach_all(self, handle: AgentHandle) -> None:
        if handle.backoff is not None:
            handle.backoff.cancel()  # a stopping agent is not restarted: end the wait now
        for binding in handle.bindings.values():
            self.bus.detach(binding)
            binding.lane.close()
        handle.mailbox.wake()

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
        by_instance: bool = False,
    ) -> None:
        """Add a subscription to a running agent; its events join the agent's mailbox.

        ``by_instance`` marks a subscription the agent made itself (``ctx.subscribe``): a
        restarted instance must make it again in ``on_start``, which then keeps the events
        queued meanwhile; one it does not make again ends once ``on_start`` returns.
        Subscriptions made from outside (``kernel.subscribe_agent``) survive restarts.
        """
        handle = self._live(agent_id)
        validate_pattern(pattern)
        if by_instance and pattern in handle.carried:
            handle.carried = handle.carried - {pattern}  # re-made by the new instance: kept
            handle.own = handle.own | {pattern}
            await trio.lowlevel.checkpoint()
            return
        if pattern in handle.bindings:
            raise AlreadySubscribed(f"Agent {agent_id} already subscribed to topic {pattern}")
        self._attach(handle, Topic(pattern, QoS(qos), overflow, capacity, event_types))
        if by_instance:
            handle.own = handle.own | {pattern}
        self.directory.add_topic(agent_id, pattern)
        await trio.lowlevel.checkpoint()

    async def unsubscribe(self, agent_id: str, pattern: str) -> None:
        """Remove a subscription; events it already queued are still handled."""
        handle = self._live(agent_id)
        binding = handle.bindings.pop(pattern, None)
        if binding is None:
            raise NotSubscribed(f"Agent {agent_id} not subscribed to topic {pattern}")
        if pattern in handle.own:
            handle.own = handle.own - {pattern}
        if pattern in handle.carried:
            handle.carried = handle.carried - {pattern}
        self.bus.detach(binding)
        binding.lane.close()
        handle.mailbox.wake()
        self.directory.remove_topic(agent_id, pattern)
        await trio.lowlevel.checkpoint()

    async def _end_carried(self, handle: AgentHandle) -> None:
        """Unsubscribe what the previous instance subscribed and this one did not again."""
        if handle.stopping:
            handle.carried = _NO_PATTERNS
            return
        for pattern in list(handle.carried):
            await self.unsubscribe(handle.agent_id, pattern)

    def _live(self, agent_id: str) -> AgentHandle:
        handle = self.get(agent_id)
        if handle.stopping:
            raise AgentNotFound(f"Agent {agent_id} is stopping")
        return handle

    def wake(self, agent_id: str) -> None:
        """Wake an agent parked on its mailbox (after ``ctx.stop()``)."""
        handle = self._agents.get(agent_id)
        if handle is not None:
            handle.mailbox.wake()

    # ---- stopping -----------------------------------------------------------------------

    async def stop(self, agent_id: str, timeout_s: float | None = None) -> None:
        """Stop an agent gracefully: no new events, drain the queued ones, run ``on_stop``.

        Past ``timeout_s`` (default: the agent's stop timeout) the agent is cancelled;
        ``on_stop`` still runs, bounded by the same timeout.
        """
        handle = self.get(agent_id)
        handle.stopping = True
        handle.status = "stopping"
        self._detach_all(handle)
        for pattern in list(handle.bindings):
            self.directory.remove_topic(agent_id, pattern)
        if trio.lowlevel.current_task() is handle.task:
            await trio.lowlevel.checkpoint()
            return  # an agent stopping itself: it ends once its handler returns
        timeout = handle.stop_timeout_s if timeout_s is None else timeout_s
        with trio.move_on_after(timeout):
            await handle.wait_finished()
        if not handle.finished:
            _log.warning("agent did not stop in time; cancelling it", agent_id=agent_id)
            handle.scope.cancel()
            await handle.wait_finished()

    async def shutdown(self, timeout_s: float) -> None:
        """Stop every agent at once; past ``timeout_s`` cancel those still running.

        New spawns are refused from the start. ``on_stop`` runs for every agent, each
        bounded by its own stop timeout.
        """
        self._closing = True
        handles = list(self._agents.values())
        for handle in handles:
            handle.stopping = True
            handle.status = "stopping"
            self._detach_all(handle)
        with trio.move_on_after(timeout_s):
            await self._until_finished(handles)
        late = [handle for handle in handles if not handle.finished]
        if late:
            _log.warning("agents did not stop in time; cancelling them", agents=len(late))
            for handle in late:
                handle.scope.cancel()
            await self._until_finished(late)

    @staticmethod
    async def _until_finished(handles: builtins.list[AgentHandle]) -> None:
        for handle in handles:
            if not handle.finished:
                await handle.wait_finished()

    # ---- the agent task -----------------------------------------------------------------

    async def _run(self, handle: AgentHandle) -> None:
        handle.task = trio.lowlevel.current_task()
        try:
            with handle.scope:
                await self._supervise(handle)
        finally:
            self._forget(handle)
            handle._mark_finished()

    async def _supervise(self, handle: AgentHandle) -> None:
        """Run instances of the agent one after another, as its restart policy allows."""
        policy = handle.policy
        tracker: RestartTracker | None = None  # made at the first restart
        instance = handle.agent
        while True:
            failure = await self._run_instance(handle, instance)
            if handle.stopping:
                return
            if not policy.restarts_after(failed=failure is not None):
                if failure is not None:
                    await self._give_up(handle, failure)
                return
            if tracker is None:
                tracker = RestartTracker(policy)
            if not tracker.allow(trio.current_time()):
                await self._give_up(handle, failure)
                return
            handle.status = "restarting"
            with trio.CancelScope() as handle.backoff:  # stop() cuts the backoff short
                await trio.sleep(tracker.backoff())
            handle.backoff = None
            if handle.stopping:
                return
            try:
                instance = instance.fresh()
            except Exception as error:  # the agent's constructor failed: nothing to restart
                handle.failures += 1
                handle.last_error = error
                await self._give_up(handle, error)
                return
            handle.agent = instance
            handle.restarts += 1
            handle.carried, handle.own = handle.own, _NO_PATTERNS
            await self._announce(RESTARTED_TOPIC, "agent.restarted", handle, failure)

    async def _run_instance(self, handle: AgentHandle, instance: Agent) -> Exception | None:
        """Run one instance until it stops; returns the exception that ended it, if any."""
        ctx = Context(self, handle)
        handle.context = ctx
        failure: Exception | None = None
        try:
            handle.status = "starting"
            ctx._holding = True
            started: object = await instance.on_start(ctx)  # type: ignore[func-returns-value]
            if started is not None:
                raise AgentContractError(
                    f"{type(instance).__name__}.on_start must return None, "
                    f"got {type(started).__name__}"
                )
            if ctx.dirty:
                await ctx.flush()
            ctx._holding = False
            await self._end_carried(handle)
            handle.status = "running"
            handle._mark_started()
            await self._serve(handle, instance, ctx)
        except Exception as error:
            failure = error
            ctx.discard()  # the failed handler's writes and held events never happened
            handle.failures += 1
            handle.last_error = error
            _log.error("agent failed", agent_id=handle.agent_id, error=repr(error), exc_info=error)
        finally:
            handle._mark_started()  # spawn returns after the first on_start, however it went
            await self._stop_instance(handle, instance, ctx)
        return failure

    async def _serve(self, handle: AgentHandle, instance: Agent, ctx: Context) -> None:
        """Drain the mailbox: take until empty, commit, park, repeat; one handler at a time.

        Handlers that run back to back share one commit (at most ``COMMIT_GROUP_MAX``), made
        before the agent parks, or as soon as a handler has held events to release;
        ``handle.handled`` counts a handler once it is committed.
        """
        mailbox = handle.mailbox
        on_event = instance.on_event
        if instance.routed:
            on_event = functools.partial(_routed_on_event, instance)
        sender = ctx.sender
        budget = _CHECKPOINT_EVERY
        grouped = 0  # handlers returned since the last commit
        ctx._holding = True  # while handlers run (all of this loop but parking)
        try:
            while not ctx._stop_requested:
                for lane in mailbox._lanes:  # Mailbox.take_nowait, inlined: this runs per event
                    if lane._buf:
                        item = lane.take_nowait()
                        break
                else:
                    if grouped:
                        if ctx.dirty:
                            await ctx.flush()  # the group's state, then its held events
                        handle.handled += grouped
                        grouped = 0
                        continue  # events may have come while the commit was written
                    if handle.stopping:
                        return
                    mailbox.prune()
                    ctx._holding = False  # parked: no handler runs, emits go out at once
                    await mailbox.wait()
                    ctx._holding = True
                    budget = _CHECKPOINT_EVERY
                    continue
                event = item[1]._delivered  # type: ignore[index]
                if event.__class__ is not Event:  # not yet hopped for receivers, or expired
                    event = delivered_event(item[1], sender)  # type: ignore[index]
                    if event is None:
                        handle.expired += 1
                        continue
                result: object = await on_event(ctx, event)  # type: ignore[func-returns-value]
                if result is not None:
                    raise AgentContractError(
                        f"{type(instance).__name__}.on_event must return None, "
                        f"got {type(result).__name__}"
                    )
                ctx.seal()
                grouped += 1
                # a group ends when full, or when it holds events: an answer must not wait
                # for whatever the next queued handler does
                if grouped == COMMIT_GROUP_MAX or ctx._outbox:
                    if ctx.dirty:
                        await ctx.flush()
                    handle.handled += grouped
                    grouped = 0
                budget -= 1
                if not budget:
                    budget = _CHECKPOINT_EVERY
                    await trio.lowlevel.checkpoint()
        finally:  # a stop or a failure: _stop_instance commits the group
            ctx._grouped = grouped

    async def _stop_instance(self, handle: AgentHandle, instance: Agent, ctx: Context) -> None:
        with trio.CancelScope(shield=True) as scope:
            scope.deadline = trio.current_time() + handle.stop_timeout_s
            if self._forced:
                scope.cancel()
            self._on_stop_scopes.add(scope)
            try:
                ctx._holding = True
                await self._commit_group(handle, ctx)
                await instance.on_stop(ctx)
                if ctx.dirty:
                    await ctx.flush()
            except Exception as error:
                ctx.discard()
                _log.error(
                    "on_stop failed", agent_id=handle.agent_id, error=repr(error), exc_info=error
                )
            finally:
                self._on_stop_scopes.discard(scope)
        if scope.cancelled_caught:
            _log.warning("on_stop cut short", agent_id=handle.agent_id, forced=self._forced)

    async def _commit_group(self, handle: AgentHandle, ctx: Context) -> None:
        """Commit what the handlers that returned before a stop or a failure wrote."""
        grouped, ctx._grouped = ctx._grouped, 0
        ctx.discard()  # a handler cut short (cancelled) never returned: none of it counts
        try:
            if ctx.dirty:
                await ctx.flush()
        except Exception as error:  # e.g. the store failed: those handlers are lost
            ctx.abandon()
            _log.error("commit failed", agent_id=handle.agent_id, error=repr(error), exc_info=error)
        else:
            handle.handled += grouped

    def force(self) -> None:
        """Abandon graceful stopping: cut every running ``on_stop`` short, now and later."""
        self._forced = True
        for scope in list(self._on_stop_scopes):
            scope.cancel()

    async def _give_up(self, handle: AgentHandle, failure: Exception | None) -> None:
        handle.status = "failed"
        _log.error(
            "agent failed past its restart limit",
            agent_id=handle.agent_id,
            restarts=handle.restarts,
            error=repr(failure),
        )
        await self._announce(FAILED_TOPIC, "agent.failed", handle, failure)
        if handle.policy.critical:
            self.kernel.stop(AgentFailed(handle.agent_id, failure))

    async def _announce(
        self, topic: str, event_type: str, handle: AgentHandle, error: BaseException | None
    ) -> None:
        details: dict[str, Any] = {
            "agent_id": handle.agent_id,
            "restarts": handle.restarts,
            "failures": handle.failures,
            "error": repr(error) if error is not None else None,
        }
        event = Event(
            event_type,
            json.dumps(details).encode(),
            source="loomk.runtime",
            metadata={"agent_id": handle.agent_id},
        )
        if not self.bus.closed:
            await self.bus.publish(topic, event)

    def _forget(self, handle: AgentHandle) -> None:
        """Remove an agent that ended: off the bus, out of the directory, mailbox dropped."""
        if self._agents.get(handle.agent_id) is handle:
            del self._agents[handle.agent_id]
            self.directory.unregister(handle.agent_id)
        self._detach_all(handle)
        for lane in handle.mailbox.lanes:
            lane.discard()
        if handle.status != "failed":
            handle.status = "stopped"


async def _routed_on_event(instance: Agent, ctx: Context, event: Event) -> None:
    """Route ``event``, then hand it to ``on_event`` as Loom's agent loop does (§6).

    The event carries ``routing_decision``, ``routing_reason`` and ``routing_target``; a
    hybrid decision runs a quick local pass, then a refine pass for the cloud; Defer and
    Drop run nothing.
    """
    decision = await ctx.route(event)
    routed = event.with_metadata(
        routing_decision=decision.route.value, routing_reason=decision.reason
    )
    if decision.route is Route.HYBRID:
        passes = [
            routed.with_metadata(routing_target="local", phase="quick"),
            routed.with_metadata(routing_target="cloud", phase="refine", refine="true"),
        ]
    elif decision.route is Route.CLOUD:
        passes = [routed.with_metadata(routing_target="cloud")]
    elif decision.route in (Route.LOCAL, Route.LOCAL_FALLBACK):
        passes = [routed.with_metadata(routing_target="local")]
    else:
        passes = []
    for one in passes:
        result: object = await instance.on_event(ctx, one)  # type: ignore[func-returns-value]
        if result is not None:
            raise AgentContractError(
                f"{type(instance).__name__}.on_event must return None, got {type(result).__name__}"
            )
