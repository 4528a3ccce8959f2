"""Models: the OpenAI-compatible client, the offline local model, and the routing between them.

Three subsystems, each a package of its own: :mod:`loomk.llm.client` (the client API over
its HTTP transport), :mod:`loomk.llm.local` (the local model and its parsers) and
:mod:`loomk.llm.routing` (the router, its decisions and the model service). Beside them,
:mod:`loomk.llm.republish` republishes a streamed answer as events through any
``publish(topic, event)`` callable (:func:`republish_stream`).

Importable from here: every class, function and type alias of those four, the client's
``LLM_*`` error codes and provider names (``CHAT``, ``RESPONSES``), and the types of the
events they publish (``ROUTING_DECISION``, ``TOKEN_EVENT``, ``DONE_EVENT``,
``ERROR_EVENT``). The subsystems' tuning constants are imported from their own package:
the local model's confidence levels and limits (``HIGH``, ``PARTIAL``, ``UNKNOWN``,
``INTENTS``, ``MAX_CHARS``, ``MAX_TIMER_SECONDS``, ``MODEL_NAME``, ``TEXT_EVENT_TYPES``,
``TEXT_TYPE_SUFFIXES``) from :mod:`loomk.llm.local`, the router's defaults (``CLOUD_COSTS``,
``DEFAULT_MASKED_FIELDS``, ``MASK``) from :mod:`loomk.llm.routing`.

The client's names are loaded on first use: a kernel without a model endpoint never needs
the client, and it adds tens of milliseconds to ``import loomk``.
"""

from typing import TYPE_CHECKING, Any

from loomk.llm.local import Intent, LocalAnswer, LocalModel, SlotValue, event_text, understand
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
    DescribesEventTypes,
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
        CHAT,
        LLM_BAD_RESPONSE,
        LLM_CONNECT_ERROR,
        LLM_HTTP_ERROR,
        LLM_INVALID_REQUEST,
        LLM_NOT_CONFIGURED,
        LLM_RATE_LIMITED,
        LLM_TIMEOUT,
        RESPONSES,
        ChatStream,
        LLMClient,
        LLMReply,
        LLMSettings,
        PromptBundle,
        Provider,
        TokenBudget,
        client_generate,
        to_messages_and_text,
    )

_LAZY = frozenset(
    {
        "CHAT",
        "LLM_BAD_RESPONSE",
        "LLM_CONNECT_ERROR",
        "LLM_HTTP_ERROR",
        "LLM_INVALID_REQUEST",
        "LLM_NOT_CONFIGURED",
        "LLM_RATE_LIMITED",
        "LLM_TIMEOUT",
        "RESPONSES",
        "ChatStream",
        "LLMClient",
        "LLMReply",
        "LLMSettings",
        "PromptBundle",
        "Provider",
        "TokenBudget",
        "client_generate",
        "to_messages_and_text",
    }
)
"""The names of :mod:`loomk.llm.client`, which is imported when one is first asked for."""


def __getattr__(name: str) -> Any:
    if name not in _LAZY:
        raise AttributeError(f"module 'loomk.llm' has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module("loomk.llm.client"), name)


def __dir__() -> list[str]:
    return sorted({*globals(), *_LAZY})


__all__ = [
    "CHAT",
    "DONE_EVENT",
    "ERROR_EVENT",
    "LLM_BAD_RESPONSE",
    "LLM_CONNECT_ERROR",
    "LLM_HTTP_ERROR",
    "LLM_INVALID_REQUEST",
    "LLM_NOT_CONFIGURED",
    "LLM_RATE_LIMITED",
    "LLM_TIMEOUT",
    "RESPONSES",
    "ROUTING_DECISION",
    "TOKEN_EVENT",
    "ChatStream",
    "ConfidenceEstimator",
    "DescribesEventTypes",
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
    "Provider",
    "Publish",
    "RepublishedStream",
    "Route",
    "RouterStats",
    "RoutingDecision",
    "RoutingPolicy",
    "SlotValue",
    "TokenBudget",
    "client_generate",
    "event_text",
    "republish_stream",
    "routing_decision_event",
    "to_messages_and_text",
    "understand",
]
