"""Models: the OpenAI-compatible client, the offline local model, and the routing between them.

Three subsystems, each a package of its own: :mod:`loomk.llm.client` (the client API over
its HTTP transport), :mod:`loomk.llm.local` (the local model and its parsers) and
:mod:`loomk.llm.routing` (the router, its decisions and the model service). Beside them,
:mod:`loomk.llm.republish` republishes a streamed answer as events through any
``publish(topic, event)`` callable (:func:`republish_stream`). Their public names are all
importable from here.

The client is loaded on first use: a kernel without a model endpoint never needs it, and it
adds tens of milliseconds to ``import loomk``.
"""

from typing import TYPE_CHECKING, Any

from loomk.llm.local import Intent, LocalAnswer, LocalModel, event_text, understand
from loomk.llm.republish import (
    DONE_EVENT,
    ERROR_EVENT,
    TOKEN_EVENT,
    Publish,
    RepublishedStream,
    republish_stream,
)
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
    from loomk.llm.client import (
        ChatStream,
        LLMClient,
        LLMReply,
        LLMSettings,
        PromptBundle,
        TokenBudget,
        client_generate,
        to_messages_and_text,
    )

_LAZY = frozenset(
    {
        "ChatStream",
        "LLMClient",
        "LLMReply",
        "LLMSettings",
        "PromptBundle",
        "TokenBudget",
        "client_generate",
        "to_messages_and_text",
    }
)


def __getattr__(name: str) -> Any:
    if name not in _LAZY:
        raise AttributeError(f"module 'loomk.llm' has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module("loomk.llm.client"), name)


__all__ = [
    "DONE_EVENT",
    "ERROR_EVENT",
    "ROUTING_DECISION",
    "TOKEN_EVENT",
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
    "Publish",
    "RepublishedStream",
    "Route",
    "RouterStats",
    "RoutingDecision",
    "RoutingPolicy",
    "TokenBudget",
    "client_generate",
    "event_text",
    "republish_stream",
    "routing_decision_event",
    "to_messages_and_text",
    "understand",
]
