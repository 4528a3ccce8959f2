"""The Agent API: a class with ``on_start``/``on_event``/``on_stop``, or a decorated function.

An agent declares what it listens to in ``topics`` (patterns, or :class:`Topic` for a
non-default QoS or overflow policy) and reacts to one event at a time. The runtime may replace
a failed agent with a fresh instance, so an agent is built from its constructor arguments:
they are recorded when the instance is made and used again on restart.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable, Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

from loomk.bus.overflow import OverflowLike
from loomk.errors import AgentContractError, InvalidAgentId
from loomk.events import Event, QoS

if TYPE_CHECKING:
    from loomk.agents.context import Context

__all__ = ["Agent", "FunctionAgent", "Topic", "agent", "returned_a_value", "validate_agent_id"]

_AGENT_ID = re.compile(r"[A-Za-z0-9_\-:]+(\.[A-Za-z0-9_\-:]+)*")
MAX_AGENT_ID_LENGTH = 200


def validate_agent_id(agent_id: object) -> str:
    """Check that ``agent_id`` can name an agent and its topics (``agent.{id}.replies``).

    Letters, digits, ``_ - :``, and dots between non-empty parts; no whitespace or wildcards.
    """
    if not isinstance(agent_id, str) or not agent_id:
        raise InvalidAgentId(f"agent id must be a non-empty str, got {agent_id!r}")
    if len(agent_id) > MAX_AGENT_ID_LENGTH:
        raise InvalidAgentId(f"agent id longer than {MAX_AGENT_ID_LENGTH} characters")
    if _AGENT_ID.fullmatch(agent_id) is None:
        raise InvalidAgentId(
            f"invalid agent id {agent_id!r}: use letters, digits, '_', '-', ':' and dots "
            "between non-empty parts (no whitespace, no '*' or '>')"
        )
    return agent_id


@dataclass(frozen=True, slots=True)
class Topic:
    """A subscription an agent declares: a pattern plus how its events are queued."""

    pattern: str
    qos: QoS = QoS.BATCHED
    overflow: OverflowLike | None = None
    capacity: int | None = None
    event_types: Collection[str] | None = None


TopicLike = str | Topic
_NO_KWARGS: dict[str, Any] = {}  # shared by agents built without keyword arguments; never written

# Normalised ``topics`` per tuple object (kept alive by the entry, so its id stays unique):
# agents of one class share their ``topics``, and spawn runs this once per agent.
_NORMALISED: dict[int, tuple[Sequence[TopicLike], tuple[Topic, ...]]] = {}


class Agent:
    """Base class of agents. Override :meth:`on_event`; optionally ``on_start``/``on_stop``.

    Class attributes: ``topics`` (patterns or :class:`Topic`), ``capabilities`` and
    ``metadata`` (published in the agent directory; Loom's ``routing.*`` keys set the
    agent's routing policy). With ``routed = True`` the runtime routes each event before
    ``on_event``, as Loom's agent loop does: the event carries ``routing_decision`` and
    ``routing_target`` metadata, and a hybrid decision calls ``on_event`` twice,
    ``phase=quick`` (local) then ``phase=refine`` (cloud). The id is given to the
    constructor.

    An agent that overrides :meth:`on_batch` takes its events in batches instead of one at
    a time (up to ``batch_max`` per call); see there.
    """

    topics: ClassVar[Sequence[TopicLike]] = ()
    capabilities: ClassVar[Sequence[str]] = ()
    metadata: ClassVar[Mapping[str, str]] = {}
    routed: ClassVar[bool] = False
    batch_max: ClassVar[int] = 256

    agent_id: str
    _init_args: tuple[tuple[Any, ...], dict[str, Any]]

    def __new__(cls, *args: Any, **kwargs: Any) -> Agent:
        instance = super().__new__(cls)
        instance._init_args = (args, kwargs or _NO_KWARGS)
        return instance

    def __init__(self, agent_id: str) -> None:
        self.agent_id = validate_agent_id(agent_id)

    def fresh(self) -> Agent:
        """A new instance built from the same constructor arguments (used on restart)."""
        args, kwargs = self._init_args
        return type(self)(*args, **kwargs)

    def declared_topics(self) -> tuple[Topic, ...]:
        """``topics`` normalised to :class:`Topic` values (computed once per sequence)."""
        topics = self.topics
        cached = _NORMALISED.get(id(topics))
        if cached is not None and cached[0] is topics:
            return cached[1]
        normalised = tuple(t if isinstance(t, Topic) else Topic(t) for t in topics)
        if isinstance(topics, tuple) and len(_NORMALISED) < 4096:  # immutable: safe to keep
            _NORMALISED[id(topics)] = (topics, normalised)
        return normalised

    async def on_start(self, ctx: Context) -> None:
        """Called once per instance before its first event."""

    async def on_event(self, ctx: Context, event: Event) -> None:
        """Called for each delivered event, one at a time; must return None."""

    async def on_stop(self, ctx: Context) -> None:
        """Called when the instance stops: on ``stop_agent``, shutdown, or before a restart."""

    async def on_batch(self, ctx: Context, events: list[Event]) -> None:
        """Opt-in: called with every event queued for the agent, up to ``batch_max``, in the
        order ``on_event`` would have seen them; must return None.

        For high-rate streams (audio frames, sensor readings, camera events), where a
        scheduler round trip per event costs more than the work. A batch is one handler:
        what it writes to ``ctx.state`` and the events it emits are committed together when
        it returns; if it raises, none of it happens and the instance fails (the batch is not
        retried, as a failing event is not). Events whose TTL ran out are dropped before it
        (``expired``); a batch holding requests runs within the earliest of their deadlines.
        ``handled`` counts events. Not for ``routed`` agents, whose events are routed one by
        one. Overriding it is what turns batches on; ``on_event`` is then not called.
        """

    @property
    def handles_batches(self) -> bool:
        """Whether this agent takes its events through :meth:`on_batch`."""
        return type(self).on_batch is not Agent.on_batch

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {getattr(self, 'agent_id', '?')!r}>"


Handler = Callable[["Context", Event], Awaitable[None]]


def returned_a_value(instance: Agent, hook: str, result: object) -> AgentContractError:
    """The error for a hook (``on_start``, ``on_event``) that returned something: hooks
    return None, and a value usually means a forgotten ``await`` or a misplaced ``return``."""
    return AgentContractError(
        f"{type(instance).__name__}.{hook} must return None, got {type(result).__name__}"
    )


class FunctionAgent(Agent):
    """An agent whose ``on_event`` is a plain async function (see :func:`agent`)."""

    def __init__(
        self,
        agent_id: str,
        handler: Handler,
        topics: Sequence[TopicLike] = (),
        capabilities: Sequence[str] = (),
        metadata: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(agent_id)
        self.handler = handler
        self.topics = tuple(topics)  # type: ignore[misc]  # per-instance override
        self.capabilities = tuple(capabilities)  # type: ignore[misc]
        self.metadata = dict(metadata or {})  # type: ignore[misc]

    async def on_event(self, ctx: Context, event: Event) -> None:
        return await self.handler(ctx, event)


def agent(
    agent_id: str,
    *,
    topics: Sequence[TopicLike] = (),
    capabilities: Sequence[str] = (),
    metadata: Mapping[str, str] | None = None,
) -> Callable[[Handler], FunctionAgent]:
    """Build an agent from an ``async def handler(ctx, event)``; spawn the result.

    >>> @loomk.agent("greeter", topics=["hello.>"])
    ... async def greeter(ctx, event): ...
    >>> await kernel.spawn(greeter)
    """
    validate_agent_id(agent_id)

    def wrap(handler: Handler) -> FunctionAgent:
        return FunctionAgent(agent_id, handler, topics, capabilities, metadata)

    return wrap
