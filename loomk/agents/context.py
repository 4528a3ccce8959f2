"""What an agent's handlers see of the kernel: emit, reply, subscriptions, logging.

One :class:`Context` exists per running agent instance. It stamps what the agent sends with
its identity (``sender = agent.{id}``), so receivers know who spoke and where to reply.
Persistent state, memory and capability calls join it with their own modules.
"""

from __future__ import annotations

from collections.abc import Collection
from typing import TYPE_CHECKING, Any

from loomk._metakeys import CORRELATION_ID, SENDER, THREAD_ID
from loomk.bus.overflow import OverflowLike
from loomk.envelope import Envelope, agent_reply_topic
from loomk.errors import EventError
from loomk.events import Event, QoS
from loomk.telemetry.logging import get_logger

if TYPE_CHECKING:
    from loomk.agents.runtime import AgentRuntime
    from loomk.kernel import Kernel

__all__ = ["Context"]


class Context:
    """An agent instance's handle on the kernel."""

    __slots__ = ("_log", "_runtime", "_stop_requested", "agent_id", "kernel", "sender")

    def __init__(self, runtime: AgentRuntime, agent_id: str) -> None:
        self._runtime = runtime
        self.kernel: Kernel = runtime.kernel
        self.agent_id = agent_id
        self.sender = f"agent.{agent_id}"
        self._log: Any = None
        self._stop_requested = False

    @property
    def log(self) -> Any:
        """A structlog logger bound to this agent's id (made on first use)."""
        if self._log is None:
            self._log = get_logger("loomk.agent").bind(agent_id=self.agent_id)
        return self._log

    @property
    def reply_topic(self) -> str:
        """This agent's private topic, ``agent.{id}.replies``."""
        return agent_reply_topic(self.agent_id)

    async def emit(self, topic: str, event: Event) -> int:
        """Publish ``event`` on ``topic`` as this agent; returns the deliveries made.

        An event without a sender is stamped ``sender = agent.{id}`` (on a copy).
        """
        if event.__class__ is not Event:
            raise EventError(f"emit takes an Event, got {type(event).__name__}")
        if not event.metadata.get(SENDER):
            event = event.with_metadata(**{SENDER: self.sender})
        return await self.kernel.bus.publish(topic, event)

    async def reply(self, request: Event, event: Event) -> int:
        """Answer ``request``: publish ``event`` on the request's ``reply_to`` topic.

        The answer carries the request's ``thread_id`` and ``correlation_id`` and this agent
        as sender, so the requester can match it.
        """
        if request.__class__ is not Event or event.__class__ is not Event:
            raise EventError("reply takes the request Event and the reply Event")
        envelope = Envelope.from_event(request)
        answer = event.with_metadata(
            **{
                THREAD_ID: envelope.thread_id,
                CORRELATION_ID: envelope.correlation_id,
                SENDER: self.sender,
            }
        )
        return await self.kernel.bus.publish(envelope.reply_to, answer)

    async def subscribe(
        self,
        pattern: str,
        *,
        qos: QoS = QoS.BATCHED,
        event_types: Collection[str] | None = None,
        overflow: OverflowLike | None = None,
        capacity: int | None = None,
    ) -> None:
        """Start receiving events on ``pattern`` (see ``Kernel.subscribe_agent``).

        After a restart the new instance's ``on_start`` should subscribe again to what it
        needs: a pattern the previous instance had keeps its queued events.
        """
        await self._runtime.subscribe(
            self.agent_id,
            pattern,
            qos=qos,
            event_types=event_types,
            overflow=overflow,
            capacity=capacity,
            by_instance=True,
        )

    async def unsubscribe(self, pattern: str) -> None:
        """Stop receiving events on ``pattern``; what was already queued is still handled."""
        await self._runtime.unsubscribe(self.agent_id, pattern)

    def stop(self) -> None:
        """Finish normally after the current event: drain nothing more, run ``on_stop``.

        A ``permanent`` agent is started again; ``transient`` and ``temporary`` ones stay
        stopped.
        """
        self._stop_requested = True
        self._runtime.wake(self.agent_id)
