"""An OpenAI-compatible model client on httpx (which runs natively on trio).

:class:`LLMClient` speaks Chat Completions and the Responses API, with tools in their
standard shapes, and streams Chat Completions over server-sent events (:meth:`stream_chat`,
optionally republishing the tokens on the event bus). :meth:`LLMClient.generate` keeps
Loom's ``generate`` (LOOM-REFERENCE §9): the Responses API first, Chat Completions as the
fallback.

Every request gets the same treatment:

* connect errors, 429 and 5xx are retried up to ``max_retries`` times, waiting
  ``backoff_s * 2**attempt`` (capped at ``backoff_max_s``) with full jitter, and at least
  what a ``Retry-After`` header asks (seconds or an HTTP date). A ``Retry-After`` beyond
  ``retry_after_max_s`` is not waited for: the call fails at once with LLM_RATE_LIMITED and
  ``retry_after_s`` set, so the caller decides;
* a request that gets no complete answer within ``timeout_s`` fails with LLM_TIMEOUT (not
  retried). For a stream, ``timeout_s`` bounds the wait for the response head and then the
  wait for each further line, so a long generation is not cut while tokens keep coming;
* every failure is an :class:`~loomk.errors.LLMError` with a code; the API key is sent as
  ``Authorization: Bearer`` when set and never appears in an error, a ``repr`` or a log line
  (server text quoted in errors is scrubbed of it).

Nothing runs in the background: a stream is read by the task iterating it, and leaving the
``async with`` (or being cancelled) closes its HTTP response and connection at once.
"""

from __future__ import annotations

import email.utils
import itertools
import json
import math
import random
import time
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC
from functools import cache
from types import TracebackType
from typing import TYPE_CHECKING, Any, Literal
from urllib.parse import urlsplit

import trio

from loomk.actions.tools import ToolCall, parse_tool_calls
from loomk.config import SECRET_MASK, Config
from loomk.errors import LLMError
from loomk.events import Event
from loomk.llm.prompt import PromptBundle, TokenBudget, to_messages_and_text
from loomk.llm.sse import SSEEvent, SSEParser
from loomk.telemetry.logging import get_logger

if TYPE_CHECKING:  # httpx is imported on first use: it adds ~90 ms to ``import loomk``
    import ssl

    import httpx

    from loomk.bus import EventBus

__all__ = [
    "LLM_BAD_RESPONSE",
    "LLM_CONNECT_ERROR",
    "LLM_HTTP_ERROR",
    "LLM_INVALID_REQUEST",
    "LLM_NOT_CONFIGURED",
    "LLM_RATE_LIMITED",
    "LLM_TIMEOUT",
    "ChatStream",
    "LLMClient",
    "LLMReply",
    "LLMSettings",
    "Provider",
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

_USER_AGENT = "loomk/0.1"
_SNIPPET_CHARS = 300  # how much of a server's error body an error message quotes
_CLOSE_GRACE_S = 1.0  # how long finishing or closing a stream may take, even when cancelled
_FALLBACK_CODES = frozenset({LLM_HTTP_ERROR, LLM_RATE_LIMITED, LLM_CONNECT_ERROR})

_log = get_logger("loomk.llm")


# ---- settings and replies -------------------------------------------------------------------


def _number(name: str, value: object, *, low: float, strict: bool = False) -> None:
    ok = isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
    if ok:
        ok = value > low if strict else value >= low  # type: ignore[operator]
    if not ok:
        sign = ">" if strict else ">="
        raise LLMError(LLM_INVALID_REQUEST, f"{name} must be a finite number {sign} {low:g}")


@dataclass(frozen=True, slots=True)
class LLMSettings:
    """Where and how to reach the model. ``api_key`` never shows in the ``repr``.

    An empty ``base_url`` is allowed here (a call may bring its own); a request without any
    fails with LLM_NOT_CONFIGURED.
    """

    base_url: str = ""
    model: str = "qwen2.5-0.5b-instruct"
    api_key: str = field(default="", repr=False)
    timeout_s: float = 30.0
    temperature: float = 0.7
    max_retries: int = 3
    backoff_s: float = 0.5
    backoff_max_s: float = 8.0
    retry_after_max_s: float = 60.0

    def __post_init__(self) -> None:
        for name in ("base_url", "model", "api_key"):
            if not isinstance(getattr(self, name), str):
                raise LLMError(LLM_INVALID_REQUEST, f"{name} must be a string")
        if self.api_key and not all(" " < ch < "\x7f" for ch in self.api_key):
            raise LLMError(
                LLM_INVALID_REQUEST,
                "the API key must be printable ASCII without spaces (it goes in a header)",
            )
        _number("timeout_s", self.timeout_s, low=0.0, strict=True)
        _number("temperature", self.temperature, low=0.0)
        _number("backoff_s", self.backoff_s, low=0.0)
        _number("backoff_max_s", self.backoff_max_s, low=0.0)
        _number("retry_after_max_s", self.retry_after_max_s, low=0.0)
        retries = self.max_retries
        if isinstance(retries, bool) or not isinstance(retries, int) or retries < 0:
            raise LLMError(LLM_INVALID_REQUEST, "max_retries must be an integer >= 0")

    @classmethod
    def from_config(cls, config: Config) -> LLMSettings:
        """The settings of a kernel :class:`~loomk.config.Config` (``llm_*`` keys)."""
        return cls(
            base_url=config.llm_base_url,
            model=config.llm_model,
            api_key=config.llm_api_key,
            timeout_s=config.llm_timeout_s,
            temperature=config.llm_temperature,
            max_retries=config.llm_max_retries,
        )


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
        """The ``llm.generate`` output: ``{text, model, provider, usage}`` (Loom §8.2)."""
        return {
            "text": self.text,
            "model": self.model,
            "provider": self.provider,
            "usage": self.usage,
        }


# ---- reading responses ---------------------------------------------------------------------


def _dict(value: object) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _list(value: object) -> list[Any]:
    return value if isinstance(value, list) else []


def _content_text(content: object) -> str | None:
    """A chat message's content as text: a string, or the text of its parts."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        parts = [_dict(p).get("text") for p in content]
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
    for item in _list(raw.get("output")):
        item = _dict(item)
        if item.get("type") == "reasoning":
            continue
        for part in _list(item.get("content")):
            part = _dict(part)
            text = part.get("text")
            value = _dict(text).get("value")
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
        text = _content_text(_dict(choice.get("message")).get("content"))
        if text:
            return text
    return None


def _model_of(raw: dict[str, Any], asked: str) -> str:
    model = raw.get("model")
    return model if isinstance(model, str) and model else asked


def _usage_of(raw: dict[str, Any]) -> dict[str, Any] | None:
    usage = raw.get("usage")
    return usage if isinstance(usage, dict) else None


def _bad(message: str) -> LLMError:
    return LLMError(LLM_BAD_RESPONSE, message)


def _chat_reply(raw: object, asked: str, url: str) -> LLMReply:
    """A Chat Completions response as a reply; LLM_BAD_RESPONSE without a message that has
    content or tool calls."""
    if not isinstance(raw, dict):
        raise _bad(f"{url} answered with JSON that is not an object")
    choice = _first_choice(raw)
    message = choice.get("message") if choice is not None else None
    if not isinstance(message, dict):
        raise _bad(f"{url} answered without choices[0].message")
    text = _content_text(message.get("content"))
    calls = parse_tool_calls(raw)
    if text is None and not calls:
        raise _bad(f"{url} answered without choices[0].message.content or tool calls")
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


def _responses_reply(raw: object, asked: str, url: str) -> LLMReply:
    """A Responses API response as a reply; LLM_BAD_RESPONSE when it has no output."""
    if not isinstance(raw, dict):
        raise _bad(f"{url} answered with JSON that is not an object")
    text = _responses_text(raw)
    calls = parse_tool_calls(raw)
    if text is None and not calls and not isinstance(raw.get("output"), list):
        raise _bad(f"{url} answered without output")
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


def _retry_after(value: str | None) -> float | None:
    """A ``Retry-After`` header in seconds from now (delta-seconds or an HTTP date)."""
    if not value:
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError, IndexError):
            return None
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
        seconds = when.timestamp() - time.time()
    if not math.isfinite(seconds):
        return None
    return max(0.0, seconds)


@cache
def _tls() -> ssl.SSLContext:
    """httpx's default TLS settings, built once (loading the CA bundle takes tens of ms)."""
    import httpx

    return httpx.create_ssl_context()


def _transport_errors() -> tuple[type[BaseException], ...]:
    import httpx

    return (httpx.HTTPError, httpx.StreamError, httpx.InvalidURL, OSError)


# ---- the client ----------------------------------------------------------------------------


class LLMClient:
    """An OpenAI-compatible client; use as ``async with LLMClient(settings) as client``.

    It owns one ``httpx.AsyncClient`` (connection pool), opened on entry and closed on exit.
    ``transport`` replaces httpx's network transport (tests, proxies, mocks).
    """

    def __init__(
        self, settings: LLMSettings, *, transport: httpx.AsyncBaseTransport | None = None
    ) -> None:
        if not isinstance(settings, LLMSettings):
            raise LLMError(  # not its repr: a dict of settings could hold the key
                LLM_INVALID_REQUEST, f"expected LLMSettings, got {type(settings).__name__}"
            )
        self.settings = settings
        self._transport = transport
        self._http: httpx.AsyncClient | None = None
        self._stream_ids = itertools.count(1)
        self._stream_prefix = f"s{random.getrandbits(32):08x}"

    def __repr__(self) -> str:
        s = self.settings
        return f"LLMClient(base_url={s.base_url!r}, model={s.model!r})"

    async def __aenter__(self) -> LLMClient:
        import httpx

        if self._http is not None:
            raise RuntimeError("this LLMClient is already open")
        self._http = httpx.AsyncClient(
            transport=self._transport,
            timeout=None,  # trio deadlines bound each request (see _attempt)
            headers={"User-Agent": _USER_AGENT},
            verify=_tls() if self._transport is None else True,
        )
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        http, self._http = self._http, None
        if http is not None:
            with trio.CancelScope(shield=True):
                await http.aclose()

    # ---- public calls -----------------------------------------------------------------

    async def chat(
        self,
        messages: Sequence[Mapping[str, Any]],
        *,
        tools: Sequence[Mapping[str, Any]] | None = None,
        tool_choice: str | Mapping[str, Any] | None = None,
        model: str | None = None,
        temperature: float | None = None,
        max_tokens: int | None = None,
        timeout_s: float | None = None,
        extra: Mapping[str, Any] | None = None,
        base_url: str | None = None,
    ) -> LLMReply:
        """POST ``{base}/chat/completions``; the reply with its text and tool calls.

        ``extra`` adds (or overrides) body fields; ``base_url`` overrides the endpoint for
        this call (the API key stays the configured one).
        """
        url = self._url("chat/completions", base_url)
        body = self._chat_body(messages, tools, tool_choice, model, temperature, max_tokens)
        body.update(extra or {})
        raw = await self._post_json(url, body, timeout_s)
        return _chat_reply(raw, body["model"], url)

    async def responses(
        self,
        input: str | Sequence[Mapping[str, Any]],  # noqa: A002 - the API's field name
        *,
        tools: Sequence[Mapping[str, Any]] | None = None,
        tool_choice: str | Mapping[str, Any] | None = None,
        model: str | None = None,
        temperature: float | None = None,
        max_tokens: int | None = None,
        timeout_s: float | None = None,
        extra: Mapping[str, Any] | None = None,
        base_url: str | None = None,
    ) -> LLMReply:
        """POST ``{base}/responses``; ``max_tokens`` is sent as ``max_output_tokens``."""
        url = self._url("responses", base_url)
        body: dict[str, Any] = {
            "model": model or self.settings.model,
            "input": input if isinstance(input, str) else list(input),
            "temperature": self._temperature(temperature),
        }
        if max_tokens is not None:
            body["max_output_tokens"] = max_tokens
        if tools is not None:
            body["tools"] = list(tools)
        if tool_choice is not None:
            body["tool_choice"] = tool_choice
        body.update(extra or {})
        raw = await self._post_json(url, body, timeout_s)
        return _responses_reply(raw, body["model"], url)

    async def chat_call(self, body: dict[str, Any]) -> dict[str, Any]:
        """A ``ModelCall`` for Chat Completions bodies (the tool orchestrator's "chat")."""
        return await self._model_call("chat/completions", body)

    async def responses_call(self, body: dict[str, Any]) -> dict[str, Any]:
        """A ``ModelCall`` for Responses API bodies (the orchestrator's "responses")."""
        return await self._model_call("responses", body)

    def stream_chat(
        self,
        messages: Sequence[Mapping[str, Any]],
        *,
        tools: Sequence[Mapping[str, Any]] | None = None,
        tool_choice: str | Mapping[str, Any] | None = None,
        model: str | None = None,
        temperature: float | None = None,
        max_tokens: int | None = None,
        timeout_s: float | None = None,
        extra: Mapping[str, Any] | None = None,
        base_url: str | None = None,
        publish: tuple[EventBus, str] | None = None,
    ) -> ChatStream:
        """A streamed Chat Completions request, as an async context manager::

            async with client.stream_chat(messages) as stream:
                async for delta in stream:   # text deltas (str)
                    ...
            stream.reply                     # the whole LLMReply, once read to the end

        With ``publish=(bus, topic)`` each delta is also published on ``topic`` as an
        ``llm.token`` event (payload: the delta in UTF-8; metadata ``stream_id`` and
        ``index``), the end as ``llm.done`` (payload: the full text; metadata ``stream_id``,
        ``tokens`` and ``finish_reason``) once the stream has been read to its end, and a
        failure as ``llm.error`` (payload: the message; metadata ``stream_id`` and ``code``).
        """
        url = self._url("chat/completions", base_url)
        body = self._chat_body(messages, tools, tool_choice, model, temperature, max_tokens)
        body.update(extra or {})
        body["stream"] = True
        stream_id = f"{self._stream_prefix}-{next(self._stream_ids)}"
        return ChatStream(self, url, body, self._timeout(timeout_s), publish, stream_id)

    async def generate(
        self,
        bundle: PromptBundle,
        budget: TokenBudget | None = None,
        *,
        stream: bool = False,
        model: str | None = None,
        base_url: str | None = None,
        temperature: float | None = None,
        timeout_s: float | None = None,
    ) -> LLMReply:
        """Loom's ``generate``: the Responses API, falling back to Chat Completions.

        The Responses answer is used when it is a 2xx with text; a 2xx that is not JSON
        fails (LLM_BAD_RESPONSE, no fallback), as does a timeout (LLM_TIMEOUT: a slow
        server is not asked twice). Any other failure (404, another status, no
        connection) or an answer without text falls back to Chat Completions, whose
        answer must have ``choices[0].message.content``. ``stream=True`` uses a streamed
        Chat Completions request instead and returns the assembled reply.
        """
        budget = budget or TokenBudget()
        messages, fused = to_messages_and_text(bundle, budget)
        asked = model or self.settings.model
        if stream:
            async with self.stream_chat(
                messages,
                model=asked,
                temperature=temperature,
                max_tokens=budget.max_output_tokens,
                timeout_s=timeout_s,
                base_url=base_url,
            ) as chat_stream:
                return await chat_stream.collect()
        url = self._url("responses", base_url)
        body = {
            "model": asked,
            "input": fused,
            "max_output_tokens": budget.max_output_tokens,
            "temperature": self._temperature(temperature),
        }
        try:
            raw = await self._post_json(url, body, timeout_s)
        except LLMError as error:
            if error.code not in _FALLBACK_CODES:
                raise
            _log.info("llm responses api failed, using chat completions", url=url, code=error.code)
        else:
            text = _responses_text(raw) if isinstance(raw, dict) else None
            if text:
                return LLMReply(
                    text, [], _model_of(raw, asked), _usage_of(raw), RESPONSES, raw, None
                )
            _log.info("llm responses api gave no text, using chat completions", url=url)
        url = self._url("chat/completions", base_url)
        body = {
            "model": asked,
            "messages": messages,
            "max_tokens": budget.max_output_tokens,
            "temperature": self._temperature(temperature),
        }
        raw = await self._post_json(url, body, timeout_s)
        choice = _first_choice(raw) if isinstance(raw, dict) else None
        content = _dict(choice.get("message")).get("content") if choice is not None else None
        text = _content_text(content)
        if text is None:
            raise _bad(f"{url} answered without choices[0].message.content")
        finish = choice.get("finish_reason") if choice is not None else None
        return LLMReply(
            text,
            [],
            _model_of(raw, asked),
            _usage_of(raw),
            CHAT,
            raw,
            finish if isinstance(finish, str) else None,
        )

    # ---- building requests --------------------------------------------------------------

    def _url(self, path: str, base_url: str | None) -> str:
        base = (self.settings.base_url if base_url is None else base_url).strip().rstrip("/")
        if not base:
            raise LLMError(
                LLM_NOT_CONFIGURED, "no model endpoint is configured (set LOOMK_LLM_BASE_URL)"
            )
        if not base.lower().startswith(("http://", "https://")):
            raise LLMError(
                LLM_NOT_CONFIGURED,
                f"the model endpoint must be an http(s) URL, got {self._redact(base)!r}",
            )
        return f"{base}/{path}"

    def _temperature(self, temperature: float | None) -> float:
        return self.settings.temperature if temperature is None else temperature

    def _timeout(self, timeout_s: float | None) -> float:
        timeout = self.settings.timeout_s if timeout_s is None else timeout_s
        _number("timeout_s", timeout, low=0.0, strict=True)
        return timeout

    def _chat_body(
        self,
        messages: Sequence[Mapping[str, Any]],
        tools: Sequence[Mapping[str, Any]] | None,
        tool_choice: str | Mapping[str, Any] | None,
        model: str | None,
        temperature: float | None,
        max_tokens: int | None,
    ) -> dict[str, Any]:
        body: dict[str, Any] = {
            "model": model or self.settings.model,
            "messages": list(messages),
            "temperature": self._temperature(temperature),
        }
        if max_tokens is not None:
            body["max_tokens"] = max_tokens
        if tools is not None:
            body["tools"] = list(tools)
        if tool_choice is not None:
            body["tool_choice"] = tool_choice
        return body

    def _headers(self, *, stream: bool, url: str) -> dict[str, str]:
        headers = {
            "Content-Type": "application/json",
            "Accept": "text/event-stream" if stream else "application/json",
        }
        # The key goes only to the configured endpoint's origin: a call that overrides the
        # base URL (Loom's ``base_url`` header) must not carry it to another host.
        if self.settings.api_key and _same_origin(url, self.settings.base_url):
            headers["Authorization"] = f"Bearer {self.settings.api_key}"
        return headers

    def _encode(self, body: Mapping[str, Any]) -> bytes:
        try:
            # ASCII escapes: text with lone surrogates (valid in JSON input) still encodes
            return json.dumps(body, allow_nan=False).encode("ascii")
        except (TypeError, ValueError, RecursionError) as error:
            raise LLMError(
                LLM_INVALID_REQUEST, f"the request body is not JSON: {self._redact(str(error))}"
            ) from None

    def _redact(self, text: str) -> str:
        """``text`` with the API key masked wherever it appears."""
        key = self.settings.api_key
        return text.replace(key, SECRET_MASK) if key else text

    def _describe(self, error: BaseException) -> str:
        message = str(error)
        name = type(error).__name__
        return self._redact(f"{name}: {message}" if message else name)

    # ---- sending ------------------------------------------------------------------------

    def _client(self) -> httpx.AsyncClient:
        if self._http is None:
            raise RuntimeError("use the LLMClient as `async with LLMClient(...) as client:`")
        return self._http

    async def _model_call(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        url = self._url(path, None)
        full = dict(body)
        full.setdefault("model", self.settings.model)
        full.setdefault("temperature", self.settings.temperature)
        raw = await self._post_json(url, full, None)
        if not isinstance(raw, dict):
            raise _bad(f"{url} answered with JSON that is not an object")
        return raw

    async def _post_json(self, url: str, body: Mapping[str, Any], timeout_s: float | None) -> Any:
        """POST ``body``; the decoded JSON of the 2xx answer (after retries)."""
        response = await self._send(url, body, self._timeout(timeout_s), stream=False)
        try:
            return json.loads(response.content)
        except (ValueError, RecursionError) as error:
            raise _bad(f"{url} answered with malformed JSON: {self._redact(str(error))}") from None

    async def _send(
        self, url: str, body: Mapping[str, Any], timeout_s: float, *, stream: bool
    ) -> httpx.Response:
        """POST with retries; a 2xx response (its body read unless ``stream``; the caller
        closes a streamed one), or the LLMError of the last attempt."""
        content = self._encode(body)
        settings = self.settings
        for attempt in itertools.count():
            try:
                response = await self._attempt(url, content, timeout_s, stream=stream)
            except LLMError as error:
                if error.code != LLM_CONNECT_ERROR or attempt >= settings.max_retries:
                    raise
                delay = self._backoff(attempt)
                _log.warning(
                    "llm request failed, retrying",
                    url=url,
                    error=error.message,
                    attempt=attempt + 1,
                    delay_s=round(delay, 3),
                )
                await trio.sleep(delay)
                continue
            status = response.status_code
            if 200 <= status < 300:
                return response
            failure = self._status_error(url, response)
            if (status != 429 and status < 500) or attempt >= settings.max_retries:
                raise failure
            delay = self._backoff(attempt)
            if failure.retry_after_s is not None:
                if failure.retry_after_s > settings.retry_after_max_s:
                    raise failure
                delay = max(delay, failure.retry_after_s)
            _log.warning(
                "llm request failed, retrying",
                url=url,
                status=status,
                attempt=attempt + 1,
                delay_s=round(delay, 3),
            )
            await trio.sleep(delay)
        raise AssertionError("unreachable")  # pragma: no cover

    def _backoff(self, attempt: int) -> float:
        """Exponential backoff with full jitter."""
        s = self.settings
        ceiling = min(s.backoff_max_s, s.backoff_s * 2 ** min(attempt, 62))
        return random.uniform(0.0, ceiling)

    async def _attempt(
        self, url: str, content: bytes, timeout_s: float, *, stream: bool
    ) -> httpx.Response:
        """One request within ``timeout_s``: a response with its body read (only the head
        for an event stream), or LLM_TIMEOUT / LLM_CONNECT_ERROR / LLM_BAD_RESPONSE."""
        http = self._client()
        errors = _transport_errors()
        url_errors: tuple[type[BaseException], ...] = (ValueError, *errors)  # InvalidURL & co
        try:
            request = http.build_request(
                "POST", url, content=content, headers=self._headers(stream=stream, url=url)
            )
        except url_errors as error:
            raise LLMError(
                LLM_NOT_CONFIGURED,
                f"the model endpoint is not a valid URL: {self._describe(error)}",
            ) from None
        _log.debug("llm request", url=url, stream=stream)
        with trio.move_on_after(timeout_s):
            try:
                response = await http.send(request, stream=True)
            except errors as error:
                raise LLMError(
                    LLM_CONNECT_ERROR, f"no answer from {url}: {self._describe(error)}"
                ) from None
            try:
                if not (stream and response.is_success and not _is_json(response)):
                    await response.aread()
            except errors as error:
                await _close_quietly(response)
                raise _bad(
                    f"the answer from {url} was cut short: {self._describe(error)}"
                ) from None
            except BaseException:
                await _close_quietly(response)
                raise
            return response
        raise LLMError(LLM_TIMEOUT, f"no complete answer from {url} within {timeout_s:g} s")

    def _status_error(self, url: str, response: httpx.Response) -> LLMError:
        status = response.status_code
        snippet = " ".join(response.text.split())[:_SNIPPET_CHARS]
        detail = f"{url} answered HTTP {status}" + (f": {snippet}" if snippet else "")
        detail = self._redact(detail)
        retry_after = _retry_after(response.headers.get("retry-after"))
        if status == 429:
            return LLMError(LLM_RATE_LIMITED, detail, status=status, retry_after_s=retry_after)
        return LLMError(LLM_HTTP_ERROR, detail, status=status, retry_after_s=retry_after)


def _utf8(text: str) -> bytes:
    """``text`` as an event payload (a lone surrogate, which JSON allows, becomes "?")."""
    return text.encode("utf-8", "replace")


def _is_json(response: httpx.Response) -> bool:
    content_type: str = response.headers.get("content-type", "")
    return content_type.startswith("application/json")


async def _close_quietly(response: httpx.Response) -> None:
    with trio.CancelScope(shield=True):
        try:
            await response.aclose()
        except Exception as error:  # closing a broken connection may fail; it is gone anyway
            _log.debug("llm response close failed", error=type(error).__name__)


# ---- streaming -----------------------------------------------------------------------------


@dataclass
class _PartialCall:
    id: str = ""
    name: str = ""
    arguments: str = ""


class ChatStream:
    """One streamed Chat Completions answer (see :meth:`LLMClient.stream_chat`).

    Iterate it for text deltas; afterwards :attr:`reply` holds the assembled reply (None
    until the stream has been read to its end). :meth:`collect` reads the rest and returns
    the reply. A stream that ends before ``[DONE]`` or a finish reason fails with
    LLM_BAD_RESPONSE; ``timeout_s`` bounds the wait for each line. Tokens are published as
    they are handed out, ``llm.done`` once the stream has been read to its end.
    """

    def __init__(
        self,
        client: LLMClient,
        url: str,
        body: dict[str, Any],
        timeout_s: float,
        publish: tuple[EventBus, str] | None,
        stream_id: str,
    ) -> None:
        self.stream_id = stream_id
        self.reply: LLMReply | None = None
        self._client = client
        self._url = url
        self._body = body
        self._timeout_s = timeout_s
        self._publish = publish
        self._response: httpx.Response | None = None
        self._lines: Any = None  # the response's aiter_lines() generator
        self._parser = SSEParser()
        self._queued: deque[str] = deque()
        self._text: list[str] = []
        self._calls: dict[int, _PartialCall] = {}
        self._deltas = 0
        self._model: str | None = None
        self._usage: dict[str, Any] | None = None
        self._finish: str | None = None
        self._ended = False
        self._done_sent = False
        self._error: LLMError | None = None
        self._entered = False

    def __repr__(self) -> str:
        return f"ChatStream(id={self.stream_id!r}, url={self._url!r}, deltas={self._deltas})"

    async def __aenter__(self) -> ChatStream:
        if self._entered:
            raise RuntimeError("a ChatStream can be entered only once")
        self._entered = True
        try:
            response = await self._client._send(self._url, self._body, self._timeout_s, stream=True)
            self._response = response
            if _is_json(response):
                self._whole_answer(response)  # a server that ignored "stream": true
            else:
                self._lines = response.aiter_lines()
        except LLMError as error:
            await self._close()
            await self._fail(error)
        except BaseException:
            await self._close()
            raise
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self._close()

    def __aiter__(self) -> ChatStream:
        return self

    async def __anext__(self) -> str:
        if not self._entered:
            raise RuntimeError("iterate a ChatStream inside its `async with` block")
        while True:
            if self._queued:
                delta = self._queued.popleft()
                await self._emit_token(delta)
                return delta
            if self._error is not None:
                raise self._error
            if self._ended:
                if not self._done_sent:
                    self._done_sent = True
                    await self._finish_body()
                    await self._emit_done()
                raise StopAsyncIteration
            if self._lines is None:
                raise RuntimeError("this ChatStream is closed")
            try:
                line = await self._next_line()
                if line is None:
                    self._end_of_body(done=False)
                else:
                    event = self._parser.feed(line)
                    if event is not None:
                        self._take(event)
            except LLMError as error:
                await self._fail(error)

    async def collect(self) -> LLMReply:
        """Read the rest of the stream; the assembled reply."""
        async for _ in self:
            pass
        assert self.reply is not None
        return self.reply

    # ---- reading --------------------------------------------------------------------------

    async def _next_line(self) -> str | None:
        """The next line, None at the end of the body; LLM_TIMEOUT after ``timeout_s``
        without one, LLM_BAD_RESPONSE (or the end, after a finish reason) when cut."""
        with trio.move_on_after(self._timeout_s):
            try:
                line: str = await self._lines.__anext__()
            except StopAsyncIteration:
                return None
            except _transport_errors() as error:
                if self._finish is not None:
                    return None  # the answer was complete; only the goodbye was lost
                raise _bad(
                    f"the stream from {self._url} was cut short: {self._client._describe(error)}"
                ) from None
            return line
        raise LLMError(
            LLM_TIMEOUT, f"the stream from {self._url} sent nothing for {self._timeout_s:g} s"
        )

    def _take(self, event: SSEEvent) -> None:
        """Fold one SSE event into the reply; queue its text delta."""
        if event.done:
            self._end_of_body(done=True)
            return
        try:
            chunk = json.loads(event.data)
        except (ValueError, RecursionError) as error:
            raise _bad(f"the stream from {self._url} sent malformed JSON: {error}") from None
        if not isinstance(chunk, dict):
            raise _bad(f"the stream from {self._url} sent a chunk that is not an object")
        if event.event == "error" or "error" in chunk:
            message = str(_dict(chunk.get("error")).get("message") or chunk.get("error"))
            raise _bad(
                self._client._redact(
                    f"the stream from {self._url} reported an error: {message[:_SNIPPET_CHARS]}"
                )
            )
        if isinstance(chunk.get("model"), str):
            self._model = chunk["model"]
        if isinstance(chunk.get("usage"), dict):
            self._usage = chunk["usage"]
        for choice in _list(chunk.get("choices")):
            choice = _dict(choice)
            if choice.get("index", 0) != 0:
                continue
            delta = _dict(choice.get("delta"))
            text = delta.get("content")
            if isinstance(text, str) and text:
                self._text.append(text)
                self._queued.append(text)
            for position, call in enumerate(_list(delta.get("tool_calls"))):
                self._take_call(_dict(call), position)
            if isinstance(choice.get("finish_reason"), str):
                self._finish = choice["finish_reason"]

    def _take_call(self, call: dict[str, Any], position: int) -> None:
        index = call.get("index", position)
        partial = self._calls.setdefault(
            index if isinstance(index, int) else position, _PartialCall()
        )
        if isinstance(call.get("id"), str) and not partial.id:
            partial.id = call["id"]
        function = _dict(call.get("function"))
        if isinstance(function.get("name"), str):
            partial.name += function["name"]
        if isinstance(function.get("arguments"), str):
            partial.arguments += function["arguments"]

    def _end_of_body(self, *, done: bool) -> None:
        """The answer is over: complete after [DONE] or a finish reason, else cut short."""
        self._parser.close()
        if not done and self._finish is None:
            raise _bad(f"the stream from {self._url} ended before [DONE] or a finish reason")
        self._ended = True
        self.reply = self._assemble()

    def _assemble(self) -> LLMReply:
        text = "".join(self._text)
        message: dict[str, Any] = {"role": "assistant", "content": text}
        if self._calls:
            message["tool_calls"] = [
                {
                    "id": call.id,
                    "type": "function",
                    "function": {"name": call.name, "arguments": call.arguments},
                }
                for _, call in sorted(self._calls.items())
            ]
        asked = str(self._body.get("model", ""))
        raw: dict[str, Any] = {
            "object": "chat.completion",
            "model": self._model or asked,
            "choices": [{"index": 0, "message": message, "finish_reason": self._finish}],
        }
        if self._usage is not None:
            raw["usage"] = self._usage
        return LLMReply(
            text,
            parse_tool_calls(raw),
            self._model or asked,
            self._usage,
            CHAT,
            raw,
            self._finish,
        )

    def _whole_answer(self, response: httpx.Response) -> None:
        """A JSON answer (already read) to a streamed request: one delta, then the end."""
        try:
            raw = json.loads(response.content)
        except (ValueError, RecursionError) as error:
            raise _bad(f"{self._url} answered with malformed JSON: {error}") from None
        reply = _chat_reply(raw, str(self._body.get("model", "")), self._url)
        self.reply = reply
        self._text = [reply.text]
        self._ended = True
        if reply.text:
            self._queued.append(reply.text)

    async def _finish_body(self) -> None:
        """After the end of the answer, read what is left of the body (nothing, normally)
        so the connection goes back to the pool; a server that keeps it open is not waited
        for long (the connection is closed instead)."""
        if self._lines is None:
            return
        with trio.move_on_after(min(self._timeout_s, _CLOSE_GRACE_S)):
            try:
                async for _ in self._lines:
                    pass
            except _transport_errors():
                pass

    async def _fail(self, error: LLMError) -> None:
        self._error = error
        self._ended = True
        _log.warning("llm stream failed", url=self._url, code=error.code, error=error.message)
        if self._publish is not None:
            bus, topic = self._publish
            metadata = {"stream_id": self.stream_id, "code": error.code}
            await bus.publish(
                topic,
                Event("llm.error", _utf8(error.message), source="loomk.llm", metadata=metadata),
            )
        raise error

    # ---- publishing ---------------------------------------------------------------------

    async def _emit_token(self, delta: str) -> None:
        index = self._deltas
        self._deltas += 1
        if self._publish is not None:
            bus, topic = self._publish
            metadata = {"stream_id": self.stream_id, "index": str(index)}
            await bus.publish(
                topic, Event("llm.token", _utf8(delta), source="loomk.llm", metadata=metadata)
            )

    async def _emit_done(self) -> None:
        if self._publish is None or self.reply is None:
            return
        bus, topic = self._publish
        metadata = {"stream_id": self.stream_id, "tokens": str(self._deltas)}
        if self.reply.finish_reason:
            metadata["finish_reason"] = self.reply.finish_reason
        await bus.publish(
            topic,
            Event("llm.done", _utf8(self.reply.text), source="loomk.llm", metadata=metadata),
        )

    # ---- closing ------------------------------------------------------------------------

    async def _close(self) -> None:
        """Close the response, then run httpx's line generators to their end (they fail at
        once on the closed connection) so none is left suspended for the garbage collector."""
        response, lines = self._response, self._lines
        self._response = self._lines = None
        if response is None:
            return
        with trio.CancelScope(shield=True):
            await _close_quietly(response)
            if lines is not None:
                with trio.move_on_after(_CLOSE_GRACE_S):
                    try:
                        async for _ in lines:
                            pass
                    except Exception as error:
                        _log.debug("llm stream closed", error=type(error).__name__)


def _same_origin(url: str, base_url: str) -> bool:
    """Whether ``url`` has the scheme, host and port of ``base_url``."""
    if not base_url:
        return False
    a, b = urlsplit(url), urlsplit(base_url.strip())
    return (a.scheme.lower(), a.hostname, a.port) == (b.scheme.lower(), b.hostname, b.port)
