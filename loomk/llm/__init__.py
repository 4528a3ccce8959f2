"""Models: the OpenAI-compatible client, the offline local model, and the router between them."""

from loomk.llm.client import ChatStream, LLMClient, LLMReply, LLMSettings
from loomk.llm.decision import ROUTING_DECISION, Route, RoutingDecision, routing_decision_event
from loomk.llm.generate import client_generate
from loomk.llm.intents import Intent, understand
from loomk.llm.local import LocalAnswer, LocalModel
from loomk.llm.prompt import PromptBundle, TokenBudget, to_messages_and_text
from loomk.llm.router import (
    ConfidenceEstimator,
    ModelRouter,
    PrivacyLevel,
    RouterStats,
    RoutingPolicy,
)
from loomk.llm.service import ModelAnswer, ModelService

__all__ = [
    "ROUTING_DECISION",
    "ChatStream",
    "ConfidenceEstimator",
    "Intent",
    "LLMClient",
    "LLMReply",
    "LLMSettings",
    "LocalAnswer",
    "LocalModel",
    "ModelAnswer",
    "ModelRouter",
    "ModelService",
    "PrivacyLevel",
    "PromptBundle",
    "Route",
    "RouterStats",
    "RoutingDecision",
    "RoutingPolicy",
    "TokenBudget",
    "client_generate",
    "routing_decision_event",
    "to_messages_and_text",
    "understand",
]
