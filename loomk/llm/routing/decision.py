"""Routing decisions and how they are announced.

The model router (:class:`~loomk.llm.routing.router.ModelRouter`) decides, per event,
whether the local model, the cloud, or both handle it. The route names and decision fields
are Loom's, and so is the announcement: each decision an agent makes is published as a
``routing_decision`` event on ``agent.{id}``, so dashboards and tests see why an event went
where it went."""

from __future__ import annotations

import enum
from dataclasses import dataclass

from loomk.envelope import Envelope
from loomk.events import Event

__all__ = ["ROUTING_DECISION", "Route", "RoutingDecision", "routing_decision_event"]

ROUTING_DECISION = "routing_decision"


class Route(enum.Enum):
    """Where an event is handled; the values are Loom's variant names (on the wire)."""

    LOCAL = "Local"
    CLOUD = "Cloud"
    HYBRID = "Hybrid"
    LOCAL_FALLBACK = "LocalFallback"
    DEFER = "Defer"
    DROP = "Drop"


@dataclass(frozen=True, slots=True)
class RoutingDecision:
    """One decision, with Loom's fields."""

    route: Route
    confidence: float
    reason: str
    estimated_latency_ms: int = 0
    estimated_cost: float = 0.0


def routing_decision_event(agent_id: str, decision: RoutingDecision, event: Event) -> Event:
    """The ``routing_decision`` event announcing ``decision`` about ``event``.

    As in Loom: source ``agent.{id}``, confidence = the decision's, tags ``["router"]``,
    priority 50, metadata ``route``, ``reason``, ``confidence`` (3 decimals),
    ``est_latency_ms``, ``est_cost`` (4 decimals), plus the event's envelope keys.
    """
    sender = f"agent.{agent_id}"
    metadata = {
        "route": decision.route.value,
        "reason": decision.reason,
        "confidence": f"{decision.confidence:.3f}",
        "est_latency_ms": str(decision.estimated_latency_ms),
        "est_cost": f"{decision.estimated_cost:.4f}",
    }
    envelope = Envelope.from_event(event)
    if not envelope.sender:
        envelope.sender = sender
    envelope.apply_to_metadata(metadata)
    return Event(
        ROUTING_DECISION,
        source=sender,
        metadata=metadata,
        confidence=min(1.0, max(0.0, decision.confidence)),
        tags=("router",),
        priority=50,
    )
