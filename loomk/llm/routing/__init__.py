"""Routing: per event, whether the local model, the cloud model, or both answer it.

:class:`ModelRouter` applies the decision table to an event and a :class:`RoutingPolicy`;
:class:`ModelService` asks the model(s) the decision names, masking what a ``sensitive``
event may not show the cloud. Each decision an agent makes is announced as a
``routing_decision`` event (:func:`routing_decision_event`).
"""

from loomk.llm.routing.decision import (
    ROUTING_DECISION,
    Route,
    RoutingDecision,
    routing_decision_event,
)
from loomk.llm.routing.router import (
    CLOUD_COSTS,
    DEFAULT_MASKED_FIELDS,
    MASK,
    ConfidenceEstimator,
    DescribesEventTypes,
    ModelRouter,
    PrivacyLevel,
    RouterStats,
    RoutingPolicy,
)
from loomk.llm.routing.service import ModelAnswer, ModelService

__all__ = [
    "CLOUD_COSTS",
    "DEFAULT_MASKED_FIELDS",
    "MASK",
    "ROUTING_DECISION",
    "ConfidenceEstimator",
    "DescribesEventTypes",
    "ModelAnswer",
    "ModelRouter",
    "ModelService",
    "PrivacyLevel",
    "Route",
    "RouterStats",
    "RoutingDecision",
    "RoutingPolicy",
    "routing_decision_event",
]
