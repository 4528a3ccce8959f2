"""The client API of the OpenAI-compatible model client: building requests, reading replies.

:class:`LLMClient` speaks Chat Completions and the Responses API, with tools in their
standard shapes, and streams Chat Completions over server-sent events
(:meth:`~LLMClient.stream_chat`). :meth:`LLMClient.generate` keeps Loom's ``generate``: it
asks the Responses API first and falls back to Chat Completions.

This module turns each call into a request (URL, JSON body, timeout) and each answer into
an :class:`~loomk.llm.client.LLMReply`. Sending is the transport's job
(:class:`~loomk.llm.client._transport.LLMTransport`): the connection pool and TLS, the API
key and its redaction, retries with backoff and ``Retry-After``, and the timeouts, so every
call here fails only with an :class:`~loomk.errors.LLMError` that has a code and never
shows the key. A request that gets no complete answer within ``timeout_s`` fails with
LLM_TIMEOUT; for a stream, ``timeout_s`` bounds the wait for the response head and then
each wait for a further line, so a long generation is not cut while tokens keep coming.

Nothing runs in the background: a stream is read by the task iterating it, and leaving the
``async with`` (or being cancelled) closes its HTTP response and connection at once.
"""

from __future__ import annotations

import itertools
import json
import random
from collections.abc import Mapping, Sequence
from functools import partial
from types import TracebackType
from typing import TYPE_CHECKING, Any

from loomk.errors import LLMError
from loomk.llm.client._settings import LLMSettings, check_number
from loomk.llm.client._transport import LLMTransport, ModelRequest
from loomk.llm.client._wire import (
    LLM_HTTP_ERROR,
    LLM_INVALID_REQUEST,
    LLM_NOT_CONFIGURED,
    LLMReply,
    bad_response,
    chat_reply,
    chat_text_reply,
    responses_reply,
    responses_text_reply,
)
from loomk.llm.client.prompt import PromptBundle, TokenBudget, to_messages_and_text
from loomk.llm.client.stream import ChatStream
from loomk.telemetry.logging import get_logger

if TYPE_CHECKING:  # httpx is imported on first use: it adds ~90 ms to ``import loomk``
    import httpx

__all__ = ["LLMClient"]

# What makes ``generate`` try Chat Completions after the Responses API: an error status
# (404: no Responses API there). Not a rate limit or an unreachable host, which the same
# host would answer alike (and a rate limit asks the caller to wait).
_FALLBACK_CODES = frozenset({LLM_HTTP_ERROR})

_log = get_logger("loomk.llm")


# ---- the client ----------------------------------------------------------------------------


class LLMClient:
    """An OpenAI-compatible client; use as ``async with LLMClient(settings) as client``.

    Its transport owns one ``httpx.AsyncClient`` (connection pool), opened on entry and
    closed on exit. ``transport`` replaces httpx's network transport (tests, proxies, mocks).
    """

    def __init__(
        self, settings: LLMSettings, *, transport: httpx.AsyncBaseTransport | None = None
    ) -> None:
        if not isinstance(settings, LLMSettings):
            raise LLMError(  # not its repr: a dict of settings could hold the key
                LLM_INVALID_REQUEST, f"expected LLMSettings, got {type(settings).__name__}"
            )
        self._transport = LLMTransport(settings, http_transport=transport)
        self._stream_ids = itertools.count(1)
        self._stream_prefix = f"s{random.getrandbits(32):08x}"

    @property
    def settings(self) -> LLMSettings:
        """The settings every call uses: the transport's, the one copy (read-only, so the
        endpoint URLs are built for and the one the API key may go to cannot drift apart;
        for other settings, make another client)."""
        return self._transport.settings

    def __repr__(self) -> str:
        s = self.settings
        return f"LLMClient(base_url={s.base_url!r}, model={s.model!r})"

    async def __aenter__(self) -> LLMClient:
        if self._transport.is_open:
            raise RuntimeError("this LLMClient is already open")
        await self._transport.open()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self._transport.aclose()

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
    ) -> ChatStream:
        """A streamed Chat Completions request, as an async context manager::

            async with client.stream_chat(messages) as stream:
                async for delta in stream:   # text deltas (str)
                    ...
            stream.reply                     # the whole LLMReply, once read to the end

        To republish the deltas as events, wrap the stream with
        :func:`loomk.llm.republish_stream`.
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
            open_response=partial(self._open_stream, url, body, timeout),
            redact=self._transport.redact,
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
                f"the model endpoint must be an http(s) URL, got {self._transport.redact(base)!r}",
            )
        return f"{base}/{path}"

    def _temperature(self, temperature: float | None) -> float:
        return self.settings.temperature if temperature is None else temperature

    def _timeout(self, timeout_s: float | None) -> float:
        timeout = self.settings.timeout_s if timeout_s is None else timeout_s
        check_number("timeout_s", timeout, low=0.0, strict=True)
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

    def _request(
        self,
        url: str,
        body: Mapping[str, Any],
        timeout_s: float | None,
        *,
        stream: bool = False,
        deadline: float | None = None,
    ) -> ModelRequest:
        """``body`` as a request to ``url`` for the transport; LLM_INVALID_REQUEST when the
        timeout is not a positive number or the body is not JSON."""
        timeout = self._timeout(timeout_s)
        try:
            # ASCII escapes: text with lone surrogates (valid in JSON input) still encodes
            content = json.dumps(body, allow_nan=False).encode("ascii")
        except (TypeError, ValueError, RecursionError) as error:
            raise LLMError(
                LLM_INVALID_REQUEST,
                f"the request body is not JSON: {self._transport.redact(str(error))}",
            ) from None
        return ModelRequest(url, content, timeout, stream, deadline)

    # ---- sending and reading replies ----------------------------------------------------

    async def _open_stream(
        self, url: str, body: Mapping[str, Any], timeout_s: float
    ) -> httpx.Response:
        """Send a streamed request (as its ChatStream is entered, so that a body that is
        not JSON fails there too); the response, with only its head read."""
        return await self._send(self._request(url, body, timeout_s, stream=True))

    async def _send(self, request: ModelRequest) -> httpx.Response:
        if not self._transport.is_open:
            raise RuntimeError("use the LLMClient as `async with LLMClient(...) as client:`")
        return await self._transport.send(request)

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
        response = await self._send(self._request(url, body, timeout_s, deadline=deadline))
        try:
            return json.loads(response.content)
        except (ValueError, RecursionError) as error:
            raise bad_response(
                f"{url} answered with malformed JSON: {self._transport.redact(str(error))}"
            ) from None
