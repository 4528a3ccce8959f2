"""The routing policy of ``routed`` agents: decide where each event goes, then handle it.

Loom's agent loop asks the model router about every event before the agent's behaviour runs
and hands the behaviour the event marked with the decision. An agent with ``routed = True``
gets the same: its ``on_event`` sees ``routing_decision``, ``routing_reason`` and
``routing_target`` metadata; a hybrid decision runs it twice (a quick local pass, then a
refine pass for the cloud); deferred and dropped events are not handled at all.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

from loomk.agents.agent import returned_a_value
from loomk.events import Event
from loomk.llm import Route

if TYPE_CHECKING:
    from loomk.agents.agent import Agent
    from loomk.agents.context import Context

__all__ = ["Handler", "event_handler"]

Handler = Callable[["Context", Event], Awaitable[None]]


def event_handler(instance: Agent) -> Handler:
    """What the runtime calls per event for ``instance``: its ``on_event``, routed first
    when the agent asks for it."""
    if not instance.routed:
        return instance.on_event

    async def routed_on_event(ctx: Context, event: Event) -> None:
        for one in await _passes(ctx, event):
            result: object = await instance.on_event(ctx, one)  # type: ignore[func-returns-value]
            if result is not None:
                raise returned_a_value(instance, "on_event", result)

    return routed_on_event


async def _passes(ctx: Context, event: Event) -> list[Event]:
    """The event as each pass of the handler sees it, by the router's decision."""
    decision = await ctx.route(event)
    routed = event.with_metadata(
        routing_decision=decision.route.value, routing_reason=decision.reason
    )
    if decision.route is Route.HYBRID:
        return [
            routed.with_metadata(routing_target="local", phase="quick"),
            routed.with_metadata(routing_target="cloud", phase="refine", refine="true"),
        ]
    if decision.route is Route.CLOUD:
        return [routed.with_metadata(routing_target="cloud")]
    if decision.route in (Route.LOCAL, Route.LOCAL_FALLBACK):
        return [routed.with_metadata(routing_target="local")]
    return []  # deferred or dropped: not handled
