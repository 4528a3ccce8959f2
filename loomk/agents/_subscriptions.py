"""Agents' subscriptions: lanes in their mailboxes, kept on the bus and in the directory.

An agent's subscriptions outlive its instances, so a restart loses no queued event:

- those it is spawned with (its private ``agent.{id}.replies`` and its ``topics``) and those
  made from outside (``kernel.subscribe_agent``) last until the agent stops;
- those an instance makes itself (``ctx.subscribe``) are *carried* into the next instance,
  which keeps them, with whatever they queued meanwhile, by subscribing again in its
  ``on_start``; the ones it does not make again end when its ``on_start`` returns.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence

import trio

from loomk.agents._record import NO_PATTERNS, AgentRecord
from loomk.agents.agent import Agent, Topic
from loomk.agents.directory import AgentDirectory
from loomk.bus import EventBus
from loomk.bus.overflow import OverflowLike
from loomk.bus.topics import validate_pattern
from loomk.envelope import agent_reply_topic
from loomk.errors import AgentNotFound, AlreadySubscribed, NotSubscribed
from loomk.events import QoS

__all__ = ["AgentSubscriptions", "check_distinct", "topics_of"]


def topics_of(agent: Agent) -> list[Topic]:
    """What an agent is spawned subscribed to: its private reply topic, then its ``topics``."""
    return [Topic(agent_reply_topic(agent.agent_id)), *agent.declared_topics()]


def check_distinct(agent_id: str, topics: Sequence[Topic]) -> None:
    """Refuse an agent that declares one pattern twice."""
    seen: set[str] = set()
    for topic in topics:
        if topic.pattern in seen:
            raise AlreadySubscribed(f"Agent {agent_id} already subscribed to topic {topic.pattern}")
        seen.add(topic.pattern)


class AgentSubscriptions:
    """Attaches agents' lanes to the bus and keeps the directory's topics in step."""

    def __init__(self, bus: EventBus, directory: AgentDirectory) -> None:
        self._bus = bus
        self._directory = directory

    def attach_declared(self, record: AgentRecord, topics: Sequence[Topic]) -> None:
        """Subscribe a new agent to what it is spawned with (all or nothing)."""
        check_distinct(record.agent_id, topics)
        try:
            for topic in topics:
                self._attach(record, topic)
        except BaseException:
            self.detach_all(record)
            raise

    async def subscribe(
        self,
        record: AgentRecord,
        pattern: str,
        *,
        qos: QoS = QoS.BATCHED,
        event_types: Collection[str] | None = None,
        overflow: OverflowLike | None = None,
        capacity: int | None = None,
        by_instance: bool = False,
    ) -> None:
        """Add a subscription to a running agent; its events join the agent's mailbox.

        ``by_instance`` marks one the agent made itself (``ctx.subscribe``): it is carried
        over a restart as the module docstring says. A pattern the previous instance had is
        kept, with its queued events, rather than made again.
        """
        _check_live(record)
        validate_pattern(pattern)
        if by_instance and pattern in record.carried:
            record.carried = record.carried - {pattern}  # made again by the new instance
            record.own = record.own | {pattern}
            await trio.lowlevel.checkpoint()
            return
        if pattern in record.bindings:
            raise AlreadySubscribed(
                f"Agent {record.agent_id} already subscribed to topic {pattern}"
            )
        self._attach(record, Topic(pattern, QoS(qos), overflow, capacity, event_types))
        if by_instance:
            record.own = record.own | {pattern}
        self._directory.add_topic(record.agent_id, pattern)
        await trio.lowlevel.checkpoint()

    async def unsubscribe(self, record: AgentRecord, pattern: str) -> None:
        """Remove a subscription; the events it already queued are still handled."""
        _check_live(record)
        binding = record.bindings.pop(pattern, None)
        if binding is None:
            raise NotSubscribed(f"Agent {record.agent_id} not subscribed to topic {pattern}")
        if pattern in record.own:
            record.own = record.own - {pattern}
        if pattern in record.carried:
            record.carried = record.carried - {pattern}
        self._bus.detach(binding)
        self._directory.remove_topic(record.agent_id, pattern)
        await trio.lowlevel.checkpoint()

    @staticmethod
    def carry_over(record: AgentRecord) -> None:
        """A new instance takes over: what the old one subscribed itself is carried."""
        record.carried, record.own = record.own, NO_PATTERNS

    async def end_carried(self, record: AgentRecord) -> None:
        """After ``on_start``: end what the previous instance subscribed and this one did
        not make again."""
        for pattern in list(record.carried):
            if record.stopping:  # a stop came meanwhile: it takes the agent off the bus anyway
                break
            await self.unsubscribe(record, pattern)
        if record.stopping:
            record.carried = NO_PATTERNS

    def detach_all(self, record: AgentRecord) -> None:
        """Take the agent off the bus: nothing new reaches it; what is queued stays."""
        for binding in record.bindings.values():
            self._bus.detach(binding)
        record.mailbox.wake()  # even with no subscription left, a parked agent sees the stop

    def leave_directory(self, record: AgentRecord) -> None:
        """Forget the agent's patterns in the directory (it is stopping)."""
        for pattern in list(record.bindings):
            self._directory.remove_topic(record.agent_id, pattern)

    def _attach(self, record: AgentRecord, topic: Topic) -> None:
        record.bindings[topic.pattern] = self._bus.bind(
            record.mailbox,
            topic.pattern,
            qos=topic.qos,
            event_types=topic.event_types,
            overflow=topic.overflow,
            capacity=topic.capacity,
        )


def _check_live(record: AgentRecord) -> None:
    if record.stopping:
        raise AgentNotFound(f"Agent {record.agent_id} is stopping")
    if record.finished:
        raise AgentNotFound(f"Agent {record.agent_id} not found")
