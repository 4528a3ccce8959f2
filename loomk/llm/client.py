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

This module holds the settings and the client itself; how answers are read, when a failure
is retried and how a stream is consumed live in their own modules, and the names they
define (:class:`LLMReply`, :class:`ChatStream`, the error codes) are importable from here.
"""

from __future__ import annotations

import itertools
import json
import math
import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from functools import cache, partial
from types import TracebackType
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import trio

from loomk.config import SECRET_MASK, Config
from loomk.errors import LLMError
from loomk.llm._retry import retry_after as _retry_after
from loomk.llm._retry import retry_delay
from loomk.llm._wire import CHAT as CHAT
from loomk.llm._wire import (
    LLM_BAD_RESPONSE,
    LLM_CONNECT_ERROR,
    LLM_HTTP_ERROR,
    LLM_INVALID_REQUEST,
    LLM_NOT_CONFIGURED,
    LLM_RATE_LIMITED,
    LLM_TIMEOUT,
    SNIPPET_CHARS,
    LLMReply,
    Provider,
    bad_response,
    chat_reply,
    chat_text_reply,
    close_quietly,
    describe_error,
    is_json,
    responses_reply,
    responses_text_reply,
    transport_errors,
)
from loomk.llm._wire import RESPONSES as RESPONSES
from loomk.llm.prompt import PromptBundle, TokenBudget, to_messages_and_text
from loomk.llm.stream import ChatStream
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

_USER_AGENT = "loomk/0.1"
# What makes ``generate`` try Chat Completions after the Responses API: an error status
# (404: no Responses API there). Not a rate limit or an unreachable host, which the same
# host would answer alike (and a rate limit asks the caller to wait).
_FALLBACK_CODES = frozenset({LLM_HTTP_ERROR})

_log = get_logger("loomk.llm")


# ---- settings -------------------------------------------------------------------------------


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


@cache
def _tls() -> ssl.SSLContext:
    """httpx's default TLS settings, built once (loading the CA bundle takes tens of ms)."""
    import httpx

    return httpx.create_ssl_context()


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
        return chat_reply(raw, body["model"], url)

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
        return responses_reply(raw, body["model"], url)

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
        timeout = self._timeout(timeout_s)
        return ChatStream(
            url=url,
            model=str(body.get("model", "")),
            timeout_s=timeout,
            open_response=partial(self._send, url, body, timeout, stream=True),
            redact=self._redact,
            publish=publish,
            stream_id=f"{self._stream_prefix}-{next(self._stream_ids)}",
        )

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
        deadline: float | None = None,
    ) -> LLMReply:
        """Loom's ``generate``: the Responses API, falling back to Chat Completions.

        The Responses answer is used when it is a 2xx with text; a 2xx that is not JSON
        fails (LLM_BAD_RESPONSE, no fallback), as do a timeout (a slow server is not asked
        twice), a rate limit (the caller should wait) and an unreachable host. An error
        status (404: no Responses API there) or an answer without text falls back to Chat
        Completions, whose answer must have ``choices[0].message.content``.
        ``stream=True`` uses a streamed Chat Completions request instead and returns the
        assembled reply. ``deadline`` (trio time) bounds all of it, retries and their waits
        included, with this client's own error codes (``llm.generate`` passes its call's).
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
            raw = await self._post_json(url, body, timeout_s, deadline)
        except LLMError as error:
            if error.code not in _FALLBACK_CODES:
                raise
            _log.info("llm responses api failed, using chat completions", url=url, code=error.code)
        else:
            reply = responses_text_reply(raw, asked)
            if reply is not None:
                return reply
            _log.info("llm responses api gave no text, using chat completions", url=url)
        url = self._url("chat/completions", base_url)
        body = {
            "model": asked,
            "messages": messages,
            "max_tokens": budget.max_output_tokens,
            "temperature": self._temperature(temperature),
        }
        raw = await self._post_json(url, body, timeout_s, deadline)
        return chat_text_reply(raw, asked, url)

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
        return self._redact(describe_error(error))

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
            raise bad_response(f"{url} answered with JSON that is not an object")
        return raw

    async def _post_json(
        self,
        url: str,
        body: Mapping[str, Any],
        timeout_s: float | None,
        deadline: float | None = None,
    ) -> Any:
        """POST ``body``; the decoded JSON of the 2xx answer (after retries)."""
        response = await self._send(
            url, body, self._timeout(timeout_s), stream=False, deadline=deadline
        )
        try:
            return json.loads(response.content)
        except (ValueError, RecursionError) as error:
            raise bad_response(
                f"{url} answered with malformed JSON: {self._redact(str(error))}"
            ) from None

    async def _send(
        self,
        url: str,
        body: Mapping[str, Any],
        timeout_s: float,
        *,
        stream: bool,
        deadline: float | None = None,
    ) -> httpx.Response:
        """POST with retries; a 2xx response (its body read unless ``stream``; the caller
        closes a streamed one), or the LLMError of the last attempt. ``deadline`` (trio
        time) caps each attempt and drops retries that would not finish before it."""
        content = self._encode(body)
        for attempt in itertools.count():
            attempt_s = timeout_s
            if deadline is not None:
                attempt_s = min(timeout_s, deadline - trio.current_time())
                if attempt_s <= 0:
                    raise LLMError(LLM_TIMEOUT, f"no time left to ask {url}")
            try:
                response = await self._attempt(url, content, attempt_s, stream=stream)
            except LLMError as error:
                failure = error
            else:
                if 200 <= response.status_code < 300:
                    return response
                failure = self._status_error(url, response)
            delay = retry_delay(failure, attempt, self.settings)
            if delay is None or (
                deadline is not None and trio.current_time() + delay >= deadline
            ):  # no retry (or none that fits): report this failure now
                raise failure
            reason = (
                {"error": failure.message} if failure.status is None else {"status": failure.status}
            )
            _log.warning(
                "llm request failed, retrying",
                url=url,
                **reason,
                attempt=attempt + 1,
                delay_s=round(delay, 3),
            )
            await trio.sleep(delay)
        raise AssertionError("unreachable")  # pragma: no cover

    async def _attempt(
        self, url: str, content: bytes, timeout_s: float, *, stream: bool
    ) -> httpx.Response:
        """One request within ``timeout_s``: a response with its body read (only the head
        for an event stream), or LLM_TIMEOUT / LLM_CONNECT_ERROR / LLM_BAD_RESPONSE."""
        http = self._client()
        errors = transport_errors()
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
                if not (stream and response.is_success and not is_json(response)):
                    await response.aread()
            except errors as error:
                await close_quietly(response)
                raise bad_response(
                    f"the answer from {url} was cut short: {self._describe(error)}"
                ) from None
            except BaseException:
                await close_quietly(response)
                raise
            return response
        raise LLMError(LLM_TIMEOUT, f"no complete answer from {url} within {timeout_s:g} s")

    def _status_error(self, url: str, response: httpx.Response) -> LLMError:
        status = response.status_code
        # redact before cutting: a key that straddles the cut would keep its first part
        snippet = " ".join(self._redact(response.text).split())[:SNIPPET_CHARS]
        detail = self._redact(f"{url} answered HTTP {status}" + (f": {snippet}" if snippet else ""))
        retry_after = _retry_after(response.headers.get("retry-after"))
        if status == 429:
            return LLMError(LLM_RATE_LIMITED, detail, status=status, retry_after_s=retry_after)
        return LLMError(LLM_HTTP_ERROR, detail, status=status, retry_after_s=retry_after)


def _same_origin(url: str, base_url: str) -> bool:
    """Whether ``url`` has the scheme, host and port of ``base_url``."""
    if not base_url:
        return False
    a, b = urlsplit(url), urlsplit(base_url.strip())
    return (a.scheme.lower(), a.hostname, a.port) == (b.scheme.lower(), b.hostname, b.port)
