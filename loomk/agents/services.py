"""What the agents layer needs from whoever runs it: the kernel, seen through a narrow door.

The agent runtime and every agent's :class:`~loomk.agents.Context` reach the rest of the
system only through :class:`AgentServices`: the event bus, the state store, the capability
broker, the models, collaboration calls, the hook for a critical agent that gave up, and the
defaults agents start with. :class:`loomk.Kernel` implements it; a process that runs agents
on behalf of a remote kernel (through the bridge) implements it too, which is what lets the
same :class:`~loomk.Agent` class run in either place. Nothing in this layer imports the
kernel.

Services that trace (a kernel with ``tracing`` on) also have a ``tracing`` attribute, a
:class:`~loomk.telemetry.tracing.Tracing`; it is optional, read once per agent instance with
:func:`tracing_of`, so services without it (written before tracing existed) run untraced.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from loomk.telemetry.tracing import Tracing

if TYPE_CHECKING:  # names for annotations only; the agents layer imports them elsewhere
    from loomk.actions.types import ActionCall, ActionResult
    from loomk.bus import EventBus
    from loomk.collab.collaborator import Collaborator
    from loomk.errors import AgentFailed
    from loomk.llm import ModelRouter, ModelService
    from loomk.state.agent_state import AgentStateView

__all__ = [
    "AgentDefaults",
    "AgentServices",
    "AgentStateStore",
    "CapabilityInvoker",
    "tracing_of",
]


@dataclass(frozen=True, slots=True)
class AgentDefaults:
    """Settings every agent starts with unless its spawn says otherwise (the kernel takes
    them from its :class:`~loomk.Config`, which checks them)."""

    stop_timeout_s: float
    """How long a graceful stop waits for the agent (and, separately, for its ``on_stop``)."""
    memory_max_items: int
    """Items kept in an agent's ephemeral memory (``ctx.memory``)."""
    memory_max_bytes: int
    """Bytes kept in an agent's ephemeral memory."""
    start_timeout_s: float = 30.0
    """How long an agent's first ``on_start`` may take before ``spawn`` gives up on it."""
    action_timeout_s: float = 30.0
    """The timeout of ``ctx.invoke`` without one of its own (the broker's default): a call
    a request's handler makes gets the lesser of it and the time the request has left."""


class AgentStateStore(Protocol):
    """Where agents' persistent state (``ctx.state``) is read and committed."""

    def load(self, agent_id: str) -> dict[str, Any]:
        """The committed state of ``agent_id`` (empty for an agent that never wrote)."""
        ...

    async def commit(self, agent_id: str, view: AgentStateView) -> None:
        """Make what ``view`` holds uncommitted durable, atomically, then fold it into the
        view's committed values; raises if it could not be written."""
        ...


class CapabilityInvoker(Protocol):
    """What invokes capabilities for ``ctx.invoke`` (the kernel's action broker)."""

    async def invoke(self, call: ActionCall) -> ActionResult:
        """Run ``call``; every outcome, failures included, is an ``ActionResult``."""
        ...


class AgentServices(Protocol):
    """The kernel as the agents layer sees it."""

    @property
    def bus(self) -> EventBus:
        """The event bus agents subscribe to and publish on."""
        ...

    @property
    def state(self) -> AgentStateStore:
        """Persistent agent state."""
        ...

    @property
    def broker(self) -> CapabilityInvoker:
        """Capability calls."""
        ...

    @property
    def router(self) -> ModelRouter:
        """Decides per event whether the local model, the cloud, or both handle it."""
        ...

    @property
    def models(self) -> ModelService:
        """Answers questions with the model(s) the router picks."""
        ...

    @property
    def agent_defaults(self) -> AgentDefaults:
        """What agents start with (stop timeout, memory bounds)."""
        ...

    def collaborator(self, sender: str) -> Collaborator:
        """Collaboration calls (request, fanout, barrier, contract-net) made as ``sender``."""
        ...

    def on_critical_failure(self, error: AgentFailed) -> None:
        """A ``critical`` agent gave up past its restart limit: stop what depends on it
        (the kernel shuts down and raises ``error``)."""
        ...


def tracing_of(services: AgentServices) -> Tracing | None:
    """The spans ``services`` record for their agents: their ``tracing`` attribute when it
    is a :class:`~loomk.telemetry.tracing.Tracing`, else None (tracing off, or services
    without the attribute). The runtime asks once per agent instance, never per event."""
    tracing = getattr(services, "tracing", None)
    return tracing if isinstance(tracing, Tracing) else None
