"""Models: the OpenAI-compatible client, the offline local model, and the router between them.

The client and its streaming are loaded on first use: a kernel without a model endpoint
never needs them, and they add tens of milliseconds to ``import loomk``.
"""

from typing import TYPE_CHECKING, Any

from loomk.llm.local import Intent, LocalAnswer, LocalModel, event_text, understand
from loomk.llm.prompt import PromptBundle, TokenBudget, to_messages_and_text
from loomk.llm.routing import (
    ROUTING_DECISION,
    ConfidenceEstimator,
    ModelAnswer,
    ModelRouter,
    ModelService,
    PrivacyLevel,
    Route,
    RouterStats,
    RoutingDecision,
    RoutingPolicy,
    routing_decision_event,
)

if TYPE_CHECKING:
    from loomk.llm.client import ChatStream, LLMClient, LLMReply, LLMSettings
    from loomk.llm.generate import client_generate

_LAZY = {
    "ChatStream": "loomk.llm.client",
    "LLMClient": "loomk.llm.client",
    "LLMReply": "loomk.llm.client",
    "LLMSettings": "loomk.llm.client",
    "client_generate": "loomk.llm.generate",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'loomk.llm' has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(module), name)


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
    "event_text",
    "routing_decision_event",
    "to_messages_and_text",
    "understand",
]
