"""What a model server sends back, and how to read it.

Holds the vocabulary every part of the client shares (the error codes, the two APIs,
:class:`LLMReply`) and the readers that turn a decoded Chat Completions or Responses body
into a reply. Servers differ in what they fill in, so the readers accept any JSON and take
what is usable; a body with nothing usable fails with LLM_BAD_RESPONSE. The few helpers on
raw HTTP responses (is it JSON, which errors mean the transport failed, closing one that
may be broken) are here too, as the transport and the stream both need them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

import trio

from loomk.actions.tools import ToolCall, parse_tool_calls
from loomk.errors import LLMError
from loomk.telemetry.logging import get_logger

if TYPE_CHECKING:  # httpx is imported on first use: it adds ~90 ms to ``import loomk``
    import httpx

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
    "SNIPPET_CHARS",
    "LLMReply",
    "Provider",
    "bad_response",
    "chat_reply",
    "chat_text_reply",
    "close_quietly",
    "describe_error",
    "is_json",
    "json_array",
    "json_object",
    "responses_reply",
    "responses_text_reply",
    "transport_errors",
]

LLM_TIMEOUT = "LLM_TIMEOUT"
LLM_RATE_LIMITED = "LLM_RATE_LIMITED"
LLM_CONNECT_ERROR = "LLM_CONNECT_ERROR"
LLM_HTTP_ERROR = "LLM_HTTP_ERROR"
LLM_BAD_RESPONSE = "LLM_BAD_RESPONSE"
LLM_NOT_CONFIGURED = "LLM_NOT_CONFIGURED"
LLM_INVALID_REQUEST = "LLM_INVALID_REQUEST"

Provider = Literal["chat.completions", "responses"]
CHAT: Provider = "chat.completions"
RESPONSES: Provider = "responses"

SNIPPET_CHARS = 300  # how much of a server's error text an error message quotes

_log = get_logger("loomk.llm")


@dataclass(frozen=True, slots=True)
class LLMReply:
    """What a model answered: its text (empty when it only called tools), tool calls,
    the model that answered, token usage if reported, which API answered, and the raw
    decoded response (for a stream: the assembled equivalent of a non-streamed one)."""

    text: str
    tool_calls: list[ToolCall] = field(default_factory=list)
    model: str | None = None
    usage: dict[str, Any] | None = None
    provider: Provider = CHAT
    raw: Any = field(default=None, repr=False)
    finish_reason: str | None = None

    def as_output(self) -> dict[str, Any]:
        """The ``llm.generate`` output, in the shape Loom's capability gives it:
        ``{text, model, provider, usage}``."""
        return {
            "text": self.text,
            "model": self.model,
            "provider": self.provider,
            "usage": self.usage,
        }


# ---- failures -----------------------------------------------------------------------------


def bad_response(message: str) -> LLMError:
    """The error for an answer that cannot be used (LLM_BAD_RESPONSE)."""
    return LLMError(LLM_BAD_RESPONSE, message)


def describe_error(error: BaseException) -> str:
    """``Type: message`` of an exception (just the type when it has no message); not
    redacted, so the client masks its key in it before quoting it."""
    message = str(error)
    name = type(error).__name__
    return f"{name}: {message}" if message else name


# ---- JSON bodies --------------------------------------------------------------------------


def json_object(value: object) -> dict[str, Any]:
    """``value`` if it is a JSON object, else an empty one."""
    return value if isinstance(value, dict) else {}


def json_array(value: object) -> list[Any]:
    """``value`` if it is a JSON array, else an empty one."""
    return value if isinstance(value, list) else []


def chat_reply(raw: object, asked: str, url: str) -> LLMReply:
    """A Chat Completions response as a reply; LLM_BAD_RESPONSE without a message that has
    content or tool calls."""
    if not isinstance(raw, dict):
        raise bad_response(f"{url} answered with JSON that is not an object")
    choice = _first_choice(raw)
    message = choice.get("message") if choice is not None else None
    if not isinstance(message, dict):
        raise bad_response(f"{url} answered without choices[0].message")
    text = _content_text(message.get("content"))
    calls = parse_tool_calls(raw)
    if text is None and not calls:
        raise bad_response(f"{url} answered without choices[0].message.content or tool calls")
    finish = choice.get("finish_reason") if choice is not None else None
    return LLMReply(
        text or "",
        calls,
        _model_of(raw, asked),
        _usage_of(raw),
        CHAT,
        raw,
        finish if isinstance(finish, str) else None,
    )


def responses_reply(raw: object, asked: str, url: str) -> LLMReply:
    """A Responses API response as a reply; LLM_BAD_RESPONSE when it has no output."""
    if not isinstance(raw, dict):
        raise bad_response(f"{url} answered with JSON that is not an object")
    text = _responses_text(raw)
    calls = parse_tool_calls(raw)
    if text is None and not calls and not isinstance(raw.get("output"), list):
        raise bad_response(f"{url} answered without output")
    status = raw.get("status")
    return LLMReply(
        text or "",
        calls,
        _model_of(raw, asked),
        _usage_of(raw),
        RESPONSES,
        raw,
        status if isinstance(status, str) else None,
    )


def responses_text_reply(raw: object, asked: str) -> LLMReply | None:
    """``generate``'s reading of a Responses answer: a text-only reply, or None when the
    answer has no text (``generate`` then falls back to Chat Completions)."""
    if not isinstance(raw, dict):
        return None
    text = _responses_text(raw)
    if not text:
        return None
    return LLMReply(text, [], _model_of(raw, asked), _usage_of(raw), RESPONSES, raw, None)


def chat_text_reply(raw: object, asked: str, url: str) -> LLMReply:
    """``generate``'s reading of a Chat Completions answer: a text-only reply;
    LLM_BAD_RESPONSE without ``choices[0].message.content``."""
    choice = _first_choice(raw) if isinstance(raw, dict) else None
    content = json_object(choice.get("message")).get("content") if choice is not None else None
    text = _content_text(content)
    if not isinstance(raw, dict) or choice is None or text is None:
        raise bad_response(f"{url} answered without choices[0].message.content")
    finish = choice.get("finish_reason")
    return LLMReply(
        text,
        [],
        _model_of(raw, asked),
        _usage_of(raw),
        CHAT,
        raw,
        finish if isinstance(finish, str) else None,
    )


def _content_text(content: object) -> str | None:
    """A chat message's content as text: a string, or the text of its parts."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        parts = [json_object(p).get("text") for p in content]
        return "".join(p for p in parts if isinstance(p, str))
    return None


def _first_choice(raw: dict[str, Any]) -> dict[str, Any] | None:
    choices = raw.get("choices")
    if isinstance(choices, list) and choices and isinstance(choices[0], dict):
        return choices[0]
    return None


def _responses_text(raw: dict[str, Any]) -> str | None:
    """Loom's extraction: ``output_text``, else the text pieces of the output items'
    content (``text.value``, a string ``text`` or a string ``content``; reasoning left
    out), else ``choices[0].message.content``. None when nothing non-empty is found."""
    output_text = raw.get("output_text")
    if isinstance(output_text, str) and output_text:
        return output_text
    pieces: list[str] = []
    for item in json_array(raw.get("output")):
        item = json_object(item)
        if item.get("type") == "reasoning":
            continue
        for part in json_array(item.get("content")):
            part = json_object(part)
            text = part.get("text")
            value = json_object(text).get("value")
            if part.get("type") == "reasoning_text":
                continue
            if isinstance(value, str):
                pieces.append(value)
            elif isinstance(text, str):
                pieces.append(text)
            elif isinstance(part.get("content"), str):
                pieces.append(part["content"])
    if "".join(pieces):
        return "".join(pieces)
    choice = _first_choice(raw)
    if choice is not None:
        text = _content_text(json_object(choice.get("message")).get("content"))
        if text:
            return text
    return None


def _model_of(raw: dict[str, Any], asked: str) -> str:
    model = raw.get("model")
    return model if isinstance(model, str) and model else asked


def _usage_of(raw: dict[str, Any]) -> dict[str, Any] | None:
    usage = raw.get("usage")
    return usage if isinstance(usage, dict) else None


# ---- HTTP responses -----------------------------------------------------------------------


def is_json(response: httpx.Response) -> bool:
    """Whether the response says its body is JSON (rather than an event stream)."""
    content_type: str = response.headers.get("content-type", "")
    return content_type.startswith("application/json")


def transport_errors() -> tuple[type[BaseException], ...]:
    """The exceptions that mean the connection failed, as opposed to a bug."""
    import httpx

    return (httpx.HTTPError, httpx.StreamError, httpx.InvalidURL, OSError)


async def close_quietly(response: httpx.Response) -> None:
    """Close ``response`` even when cancelled; a connection that fails to close is gone
    anyway, so that is only logged."""
    with trio.CancelScope(shield=True):
        try:
            await response.aclose()
        except Exception as error:
            _log.debug("llm response close failed", error=type(error).__name__)
