"""What an agent's handlers see of the system: emit, reply, state, calls, subscriptions.

One :class:`Context` exists per running agent instance. It stamps what the agent sends with
its identity (``sender = agent.{id}``), so receivers know who spoke and where to reply. It
is the user's API only: the handler's uncommitted work is the runtime's transaction, and
the rest of the system is reached through the :class:`~loomk.agents.AgentServices` the agent
runs on.
"""

from __future__ import annotations

import math
from collections.abc import Collection
from typing import TYPE_CHECKING, Any

import trio

from loomk._metakeys import CORRELATION_ID, ORIGIN, SENDER, THREAD_ID, without_origin
from loomk.actions.agent_actions import action_call, action_result_event
from loomk.actions.types import ActionResult
from loomk.bus.overflow import OverflowLike
from loomk.bus.topics import validate_topic
from loomk.collab.collaborator import Collaborator, ContractNetResult, Strategy, collab_types
from loomk.envelope import agent_reply_topic
from loomk.errors import EventError, KernelClosed
from loomk.events import Event, QoS
from loomk.llm import ModelAnswer, RoutingDecision, routing_decision_event
from loomk.state.agent_state import AgentStateView
from loomk.state.memory import EphemeralMemory
from loomk.telemetry.logging import get_logger

if TYPE_CHECKING:
    from loomk.agents._commit import Transaction
    from loomk.agents._record import AgentRecord
    from loomk.agents._subscriptions import AgentSubscriptions
    from loomk.agents.services import AgentServices

__all__ = ["Context"]

_LEAST_TIMEOUT_S = 0.001  # what a call gets when its request's deadline has passed

# Held emits are not checkpoints each (a handler's end comes soon and commits them), but a
# handler that holds many still lets other tasks run, and can be cancelled, every so often.
_CHECKPOINT_EVERY_HELD = 16


class Context:
    """An agent instance's handle on the system it runs in.

    ``ctx.kernel`` is the :class:`~loomk.agents.AgentServices` the agent runs on (``bus``,
    ``broker``, ``models`` ...): the :class:`~loomk.Kernel` itself for an agent in this
    process.
    """

    __slots__ = (
        "_collaborator",
        "_decided",
        "_log",
        "_record",
        "_subscriptions",
        "_transaction",
        "agent_id",
        "kernel",
        "sender",
    )

    def __init__(
        self,
        services: AgentServices,
        record: AgentRecord,
        transaction: Transaction,
        subscriptions: AgentSubscriptions,
    ) -> None:
        self.kernel = services
        self.agent_id = record.agent_id
        self.sender = f"agent.{record.agent_id}"
        self._record = record
        self._transaction = transaction
        self._subscriptions = subscriptions
        self._log: Any = None
        self._collaborator: Collaborator | None = None
        self._decided: tuple[str, RoutingDecision] | None = None  # the last route() made

    # ---- state and memory ---------------------------------------------------------------

    @property
    def state(self) -> AgentStateView:
        """The agent's persistent state (see :mod:`loomk.state.agent_state` for the rules)."""
        return self._transaction.state

    @property
    def memory(self) -> EphemeralMemory:
        """The agent's ephemeral context window (in memory, bounded; survives restarts)."""
        return self._record.memory

    async def flush(self) -> None:
        """Commit the state written so far, then publish the held events, in order."""
        await self._transaction.flush()

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
        """Publish ``event`` on ``topic`` as this agent.

        Inside a handler the event is held and published when the handler's state commits
        (a transactional outbox; returns 0). Outside one it goes out at once and the
        deliveries made are returned. An event without a sender is stamped
        ``sender = agent.{id}`` (on a copy). A link's origin stamp (metadata
        ``loomk.origin``, on an event that came in through a link) is dropped, on a copy:
        what an agent emits is its own, and must reach every link, the one the event came
        in through too.
        """
        if event.__class__ is not Event:
            raise EventError(f"emit takes an Event, got {type(event).__name__}")
        validate_topic(topic)
        metadata = event.metadata
        if ORIGIN in metadata:  # rare: a relayed event (one lookup on the hot path)
            metadata = without_origin(metadata)
            event = event.replace(metadata=metadata)
        if not metadata.get(SENDER):
            event = event.with_metadata(**{SENDER: self.sender})
        transaction = self._transaction
        if transaction.holding:
            outbox = transaction.outbox
            outbox.append((topic, event))
            if not len(outbox) % _CHECKPOINT_EVERY_HELD:  # a long emitting loop still yields
                await trio.lowlevel.checkpoint()
            return 0
        return await self.kernel.bus.publish(topic, event)

    async def reply(self, request: Event, event: Event) -> int:
        """Answer ``request``: emit ``event`` on the request's ``reply_to`` topic.

        Like :meth:`emit`, held until the handler commits. The answer carries the request's
        ``thread_id`` and ``correlation_id`` and this agent as sender, so the requester can
        match it.
        """
        if request.__class__ is not Event or event.__class__ is not Event:
            raise EventError("reply takes the request Event and the reply Event")
        thread_id, correlation_id, reply_to = request.conversation()
        answer = event.with_metadata(
            **{THREAD_ID: thread_id, CORRELATION_ID: correlation_id, SENDER: self.sender}
        )
        return await self.emit(reply_to, answer)

    # ---- interactive calls: each commits what the handler holds first -----------------

    @property
    def _collab(self) -> Collaborator:
        """The collaboration calls, made as this agent (see :mod:`loomk.collab`); reached
        only through the methods below, which commit what the handler holds first."""
        if self._collaborator is None:
            self._collaborator = self.kernel.collaborator(self.sender)
        return self._collaborator

    async def _before_interaction(self) -> None:
        """An interactive call acts outside the agent: commit and release what is held."""
        if self._transaction.dirty:
            await self._transaction.flush()

    def _bounded(self, timeout_s: float) -> float:
        """``timeout_s``, or less when the handler serves a request whose deadline comes
        first: the calls a request causes inherit the time it has left."""
        deadline = self._transaction.deadline
        if deadline == math.inf or timeout_s.__class__ not in (int, float):
            return timeout_s  # no deadline; or a bad timeout, which the call itself refuses
        left = deadline - trio.current_time()
        if left < timeout_s:
            return max(left, _LEAST_TIMEOUT_S)  # past it: the handler's scope is cancelled
        return timeout_s

    async def request(self, topic: str, message: Event | bytes | str, *, timeout_s: float) -> Event:
        """Send a request on ``topic`` and return the first correlated reply.

        Raises :class:`~loomk.errors.CollabTimeout` after ``timeout_s``. The agent handles
        nothing else meanwhile, so it must not wait for a reply from itself.
        """
        await self._before_interaction()
        return await self._collab.request(topic, message, timeout_s=self._bounded(timeout_s))

    async def fanout(
        self,
        topics: list[str],
        message: Event | bytes | str,
        *,
        timeout_s: float,
        strategy: Strategy = "all",
        k: int | None = None,
    ) -> list[Event]:
        """Send to several topics and gather replies (see :meth:`Collaborator.fanout`)."""
        await self._before_interaction()
        return await self._collab.fanout(
            topics, message, timeout_s=self._bounded(timeout_s), strategy=strategy, k=k
        )

    async def barrier(self, name: str, n: int, *, timeout_s: float) -> list[str]:
        """Check in at barrier ``name``; returns once ``n`` participants have."""
        await self._before_interaction()
        return await self._collab.barrier(name, n, timeout_s=self._bounded(timeout_s))

    async def contract_net(
        self,
        thread_id: str,
        cfp: Event | bytes | str,
        *,
        window_s: float,
        max_awards: int = 1,
        execute_timeout_s: float = 30.0,
    ) -> ContractNetResult:
        """Run a contract-net round as its manager (see :meth:`Collaborator.contract_net`)."""
        await self._before_interaction()
        return await self._collab.contract_net(
            thread_id,
            cfp,
            window_s=self._bounded(window_s),
            max_awards=max_awards,
            execute_timeout_s=self._bounded(execute_timeout_s),
        )

    async def propose(self, cfp: Event, score: float, event: Event | None = None) -> int:
        """Answer a call for proposals with ``score`` (held like :meth:`reply`)."""
        proposal = (event or Event(collab_types.PROPOSAL)).replace(type=collab_types.PROPOSAL)
        return await self.reply(cfp, proposal.with_metadata(score=repr(float(score))))

    async def report(self, award: Event, event: Event | None = None) -> int:
        """Report the result of an awarded task (``collab.result``, held like :meth:`reply`)."""
        result = (event or Event(collab_types.RESULT)).replace(type=collab_types.RESULT)
        return await self.reply(award, result)

    async def invoke(
        self,
        capability: str,
        args: Any = None,
        *,
        version: str = "",
        timeout_s: float | None = None,
        priority: int = 50,
        call_id: str | None = None,
    ) -> ActionResult:
        """Call a capability through the broker; always returns an :class:`ActionResult`.

        ``args`` is sent as JSON (bytes as they are); ``priority`` picks the call's QoS.
        The outcome is also published as ``action_result`` on ``agent.{id}``.
        """
        if self.kernel.bus.closed:
            raise KernelClosed(
                f"cannot invoke {capability!r}: the kernel is not running (it has shut down)"
            )
        await self._before_interaction()
        if self._transaction.deadline != math.inf:
            default = self._record.defaults.action_timeout_s
            timeout_s = self._bounded(default if timeout_s is None else timeout_s)
        call = action_call(
            self.sender,
            capability,
            args,
            version=version,
            timeout_s=timeout_s,
            priority=priority,
            call_id=call_id,
        )
        result = await self.kernel.broker.invoke(call)
        event = action_result_event(self.sender, call, result, priority)
        await self.kernel.bus.publish(f"agent.{self.agent_id}", event)
        return result

    async def route(self, event: Event) -> RoutingDecision:
        """Where ``event`` should be handled, by the kernel's router under this agent's
        policy (its ``routing.*`` metadata, made stricter by the event's ``privacy``); the
        decision is announced as ``routing_decision`` on ``agent.{id}``."""
        decision = await self.kernel.router.route(event, parameters=self._record.agent.metadata)
        await self.announce_routing(decision, event)
        self._decided = (event.id, decision)
        return decision

    async def answer(self, event: Event) -> ModelAnswer:
        """Answer the text in ``event``'s payload with the model(s) the router picks: the
        local model, the cloud (sensitive fields masked), or both (hybrid: a quick local
        answer, then the cloud's refined one). Commits what the handler holds first."""
        await self._before_interaction()
        decided = self._decided
        if decided is not None and decided[0] == event.id:
            decision = decided[1]  # a routed agent's event: routed once, before on_event
        else:
            decision = await self.route(event)
        return await self.kernel.models.answer(
            event, parameters=self._record.agent.metadata, decision=decision
        )

    async def announce_routing(self, decision: RoutingDecision, event: Event) -> int:
        """Publish ``decision`` about ``event`` as ``routing_decision`` on ``agent.{id}``
        (at once: it is an observation, not an effect of the handler)."""
        announcement = routing_decision_event(self.agent_id, decision, event)
        return await self.kernel.bus.publish(f"agent.{self.agent_id}", announcement)

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
        await self._subscriptions.subscribe(
            self._record,
            pattern,
            qos=qos,
            event_types=event_types,
            overflow=overflow,
            capacity=capacity,
            by_instance=True,
        )

    async def unsubscribe(self, pattern: str) -> None:
        """Stop receiving events on ``pattern``; what was already queued is still handled."""
        await self._subscriptions.unsubscribe(self._record, pattern)

    def stop(self) -> None:
        """Finish normally after the current event: drain nothing more, run ``on_stop``.

        A ``permanent`` agent is started again; ``transient`` and ``temporary`` ones stay
        stopped.
        """
        self._transaction.stop_requested = True  # this instance's: a later one is not touched
        self._record.mailbox.wake()
