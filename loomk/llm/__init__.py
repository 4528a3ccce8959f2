"""Models: routing decisions (and, with later modules, the LLM client and the router)."""

from loomk.llm.decision import ROUTING_DECISION, Route, RoutingDecision, routing_decision_event

__all__ = ["ROUTING_DECISION", "Route", "RoutingDecision", "routing_decision_event"]
