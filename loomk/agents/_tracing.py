"""The agents layer's part of tracing (see :mod:`loomk.telemetry.tracing`): a context whose
``emit`` records the ``publish`` span, chosen once per agent instance.

Only an instance of a traced kernel gets a :class:`TracedContext`; every other one gets a
plain :class:`~loomk.agents.Context`, whose ``emit`` has no tracing in it at all, not even a
check: tracing off costs the hot path nothing.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from loomk.agents.context import Context
from loomk.events import Event

if TYPE_CHECKING:
    from loomk.agents._commit import Transaction
    from loomk.agents._record import AgentRecord
    from loomk.agents._subscriptions import AgentSubscriptions
    from loomk.agents.services import AgentServices
    from loomk.telemetry.tracing import Tracing

__all__ = ["TracedContext"]


class TracedContext(Context):
    """A :class:`~loomk.agents.Context` that records a ``publish`` span per emit.

    The span is made where the agent emits, not where the held event is finally published
    at commit: only here is the handler's ``handle`` span current, which makes ``publish``
    its child and keeps a chain of agents in one trace. The event goes out as a copy
    carrying the span (``traceparent``), the emit time and the topic.
    """

    __slots__ = ("_tracing",)

    def __init__(
        self,
        tracing: Tracing,
        services: AgentServices,
        record: AgentRecord,
        transaction: Transaction,
        subscriptions: AgentSubscriptions,
    ) -> None:
        super().__init__(services, record, transaction, subscriptions)
        self._tracing = tracing

    async def emit(self, topic: str, event: Event) -> int:
        """:meth:`Context.emit <loomk.agents.Context.emit>`, in a ``publish`` span."""
        if event.__class__ is not Event:  # refused by emit itself, untraced
            return await super().emit(topic, event)
        held = self._transaction.holding
        with self._tracing.publishing(topic, event, sender=self.sender, held=held) as entries:
            return await super().emit(topic, event.with_metadata(**entries))
