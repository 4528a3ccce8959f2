"""The local model: an offline intent engine that answers simple requests in plain English.

:class:`LocalModel` needs no network and no model file. It reads an utterance into an
:class:`Intent` (:func:`understand`), answers it, and estimates how sure it is, which makes it
the model router's confidence estimator. :func:`event_text` is how it (and the model service)
read the question an event carries.
"""

from loomk.llm.local.intents import (
    HIGH,
    INTENTS,
    MAX_CHARS,
    PARTIAL,
    UNKNOWN,
    Intent,
    SlotValue,
    understand,
)
from loomk.llm.local.model import (
    MAX_TIMER_SECONDS,
    MODEL_NAME,
    TEXT_EVENT_TYPES,
    TEXT_TYPE_SUFFIXES,
    LocalAnswer,
    LocalModel,
    event_text,
)

__all__ = [
    "HIGH",
    "INTENTS",
    "MAX_CHARS",
    "MAX_TIMER_SECONDS",
    "MODEL_NAME",
    "PARTIAL",
    "TEXT_EVENT_TYPES",
    "TEXT_TYPE_SUFFIXES",
    "UNKNOWN",
    "Intent",
    "LocalAnswer",
    "LocalModel",
    "SlotValue",
    "event_text",
    "understand",
]
