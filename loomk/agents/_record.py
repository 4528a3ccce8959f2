"""The runtime's record of one agent, and the read-only handle users get of it.

:class:`AgentRecord` holds every mutable slot the runtime keeps per agent (mailbox,
subscriptions, supervision state, counters); only the runtime's own modules write it.
:class:`AgentHandle` is what ``spawn`` and ``kernel.agents.get`` return: a view that reads
the record and cannot change it.
"""

from __future__ import annotations

import time
from collections.abc import Set as AbstractSet
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import trio

from loomk.bus import Binding, Mailbox, SubscriptionStats, binding_stats
from loomk.errors import AgentStartError
from loomk.events import Event
from loomk.state.memory import EphemeralMemory
from loomk.telemetry.metrics import Histogram, HistogramSnapshot

if TYPE_CHECKING:
    from loomk.agents.agent import Agent
    from loomk.agents.services import AgentDefaults
    from loomk.agents.supervisor import RestartPolicy

__all__ = ["NO_PATTERNS", "AgentHandle", "AgentRecord", "AgentStats"]

NO_PATTERNS: AbstractSet[str] = frozenset()
"""The shared empty pattern set of records whose instances never subscribed themselves."""


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
    timed_out: int = 0
    """Requests whose deadline passed before their handler finished (nothing committed)."""
    latency: HistogramSnapshot = field(default_factory=lambda: Histogram().snapshot())
    """Handler run time in seconds: one handler in ``LATENCY_SAMPLE_EVERY`` is timed, every
    request and every batch."""
    uptime_s: float = 0.0
    """Seconds since the running instance started (0 when not running)."""


_NO_LATENCY = Histogram().snapshot()


class AgentRecord:
    """Everything the runtime keeps about one agent, across restarts of its instances."""

    __slots__ = (
        "_done",
        "_handle",
        "_latency",
        "_memory",
        "agent",
        "agent_id",
        "backoff",
        "bindings",
        "carried",
        "current_event",
        "defaults",
        "expired",
        "failures",
        "finished",
        "handled",
        "has_started",
        "last_error",
        "mailbox",
        "own",
        "policy",
        "restarts",
        "running_since",
        "scope",
        "start_error",
        "start_timeout_s",
        "started",
        "status",
        "stop_timeout_s",
        "stopping",
        "task",
        "timed_out",
    )

    def __init__(
        self,
        agent: Agent,
        policy: RestartPolicy,
        stop_timeout_s: float,
        start_timeout_s: float,
        defaults: AgentDefaults,
    ) -> None:
        self.agent_id = agent.agent_id
        self.agent = agent  # the running instance (a fresh one after each restart)
        self.policy = policy
        self.stop_timeout_s = stop_timeout_s
        self.start_timeout_s = start_timeout_s
        self.has_started = False  # the first on_start returned: restarts apply from now on
        self.start_error: AgentStartError | None = None  # why the first start failed
        self.defaults = defaults
        self.mailbox = Mailbox()
        self.mailbox.commits = True  # its events are done once committed (receipts)
        self.bindings: dict[str, Binding] = {}  # pattern -> its lane's binding, in order
        # Patterns the current instance subscribed itself, and the previous instance's until
        # on_start makes them again; a shared empty set until used (most agents never do).
        self.own: AbstractSet[str] = NO_PATTERNS
        self.carried: AbstractSet[str] = NO_PATTERNS
        self.status = "starting"
        self.stopping = False  # the agent is being stopped: no restart, no new subscription
        self.handled = 0
        self.expired = 0
        self.timed_out = 0  # handlers cut short (or not run) past their request's deadline
        self.failures = 0
        self.restarts = 0
        self.running_since: float | None = None  # time.monotonic() of the instance's start
        self.last_error: BaseException | None = None
        self._memory: EphemeralMemory | None = None
        self._latency: Histogram | None = None  # made when the first handler is timed
        self.current_event: Event | None = None  # the event being handled (for log context)
        self.scope = trio.CancelScope()  # the agent's task: cancelled past a stop timeout
        self.backoff: trio.CancelScope | None = None  # the wait before a restart, if any
        self.task: trio.lowlevel.Task | None = None
        self.started: trio.Event | None = trio.Event()  # dropped once spawn has seen it
        self.finished = False
        self._done: trio.Event | None = None  # made only when someone waits for the end
        self._handle: AgentHandle | None = None

    @property
    def handle(self) -> AgentHandle:
        """The one read-only handle of this agent (made on first use)."""
        if self._handle is None:
            self._handle = AgentHandle(self)
        return self._handle

    @property
    def memory(self) -> EphemeralMemory:
        """The agent's ephemeral memory (made on first use, kept across restarts)."""
        if self._memory is None:
            defaults = self.defaults
            self._memory = EphemeralMemory(defaults.memory_max_items, defaults.memory_max_bytes)
        return self._memory

    def mark_started(self) -> None:
        """The first instance got past ``on_start``, or the agent ended: ``spawn`` returns."""
        if self.started is not None:
            self.started.set()

    def mark_finished(self) -> None:
        """The agent's task has ended."""
        self.finished = True
        self.mark_started()
        if self._done is not None:
            self._done.set()

    async def wait_finished(self) -> None:
        """Wait until the agent's task has ended (a checkpoint if it already has)."""
        if self.finished:
            await trio.lowlevel.checkpoint()
            return
        if self._done is None:
            self._done = trio.Event()
        await self._done.wait()

    @property
    def latency(self) -> Histogram:
        """The handlers' run times (seconds), made on first use."""
        latency = self._latency
        if latency is None:
            latency = self._latency = Histogram()
        return latency

    def stats(self) -> AgentStats:
        """A snapshot of the agent's counters and mailbox."""
        latency = self._latency
        return AgentStats(
            agent_id=self.agent_id,
            status=self.status,
            handled=self.handled,
            expired=self.expired,
            failures=self.failures,
            restarts=self.restarts,
            mailbox_depth=len(self.mailbox),
            mailbox_high_water=self.mailbox.high_water,
            lanes=[binding_stats(binding) for binding in self.bindings.values()],
            timed_out=self.timed_out,
            latency=_NO_LATENCY if latency is None else latency.snapshot(),
            uptime_s=(
                time.monotonic() - self.running_since
                if self.running_since is not None and self.status == "running"
                else 0.0
            ),
        )


class AgentHandle:
    """A read-only view of one agent: its instance, status, counters and subscriptions.

    There is one handle per agent (``spawn`` and ``kernel.agents.get`` return the same
    object); it stays valid after the agent ends, with its final status and counters.
    """

    __slots__ = ("_record",)

    def __init__(self, record: AgentRecord) -> None:
        self._record = record

    @property
    def agent_id(self) -> str:
        """The agent's id."""
        return self._record.agent_id

    @property
    def agent(self) -> Agent:
        """The running instance (a fresh one after each restart)."""
        return self._record.agent

    @property
    def policy(self) -> RestartPolicy:
        """How the agent is supervised."""
        return self._record.policy

    @property
    def stop_timeout_s(self) -> float:
        """How long a graceful stop waits for the agent."""
        return self._record.stop_timeout_s

    @property
    def status(self) -> str:
        """``starting``, ``running``, ``restarting``, ``stopping``, ``stopped`` or ``failed``."""
        return self._record.status

    @property
    def handled(self) -> int:
        """Events handled and committed."""
        return self._record.handled

    @property
    def expired(self) -> int:
        """Events dropped before the handler because their TTL was spent."""
        return self._record.expired

    @property
    def timed_out(self) -> int:
        """Requests whose deadline passed before their handler finished."""
        return self._record.timed_out

    @property
    def failures(self) -> int:
        """Instances that ended with an exception."""
        return self._record.failures

    @property
    def restarts(self) -> int:
        """Restarts so far."""
        return self._record.restarts

    @property
    def last_error(self) -> BaseException | None:
        """The exception that ended the last failed instance, if any."""
        return self._record.last_error

    @property
    def finished(self) -> bool:
        """Whether the agent's task has ended (stopped or given up on)."""
        return self._record.finished

    @property
    def memory(self) -> EphemeralMemory:
        """The agent's ephemeral memory (``ctx.memory``)."""
        return self._record.memory

    async def wait_finished(self) -> None:
        """Wait until the agent's task has ended (a checkpoint if it already has)."""
        await self._record.wait_finished()

    def subscriptions(self) -> list[str]:
        """The patterns the agent is subscribed to, in subscription order."""
        return list(self._record.bindings)

    def stats(self) -> AgentStats:
        """A snapshot of the agent's counters and mailbox."""
        return self._record.stats()

    def __repr__(self) -> str:
        return f"<AgentHandle {self.agent_id!r} {self.status}>"
