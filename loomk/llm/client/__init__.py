"""The OpenAI-compatible model client, on httpx (which runs natively on trio).

:class:`LLMClient` is the client API: Chat Completions, the Responses API, Loom's
``generate`` and streamed Chat Completions (:class:`ChatStream`), each call built into a
request and its answer read into an :class:`LLMReply`. Sending belongs to a private
transport beneath it (connection pool and TLS, the API key and its redaction, retries with
backoff and ``Retry-After``, timeouts), as httpx's ``Client`` sits on a transport.
:func:`client_generate` plugs the client into the ``llm.generate`` capability, and
:class:`PromptBundle` / :class:`TokenBudget` / :func:`to_messages_and_text` are what
``generate`` is asked and how it becomes a prompt. The ``LLM_*`` error codes are those of
every :class:`~loomk.errors.LLMError` it raises; :data:`CHAT` and :data:`RESPONSES` are the
values of :attr:`LLMReply.provider` (a :data:`Provider`).

``import loomk`` does not load this package (nor httpx): a kernel without a model endpoint
never needs it.
"""

from loomk.llm.client._client import LLMClient
from loomk.llm.client._settings import LLMSettings
from loomk.llm.client._wire import (
    CHAT,
    LLM_BAD_RESPONSE,
    LLM_CONNECT_ERROR,
    LLM_HTTP_ERROR,
    LLM_INVALID_REQUEST,
    LLM_NOT_CONFIGURED,
    LLM_RATE_LIMITED,
    LLM_TIMEOUT,
    RESPONSES,
    LLMReply,
    Provider,
)
from loomk.llm.client.generate import client_generate
from loomk.llm.client.prompt import PromptBundle, TokenBudget, to_messages_and_text
from loomk.llm.client.stream import ChatStream

__all__ = [
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
]
