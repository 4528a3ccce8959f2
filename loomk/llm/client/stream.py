"""A streamed Chat Completions answer, read as it arrives.

:class:`ChatStream` hands out the text deltas of a server-sent event stream as the task
iterating it asks for them, folds the chunks (text, tool-call fragments, model, usage,
finish reason) into the same :class:`~loomk.llm.client.LLMReply` a non-streamed request
would give. Nothing runs in the background, so leaving the ``async with`` early (or being
cancelled) closes the HTTP response at once rather than leaving a connection half read.
Publishing the deltas as events is not its business: :mod:`loomk.llm.republish` wraps a
stream for that.
"""

from __future__ import annotations

import json
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from types import TracebackType
from typing import TYPE_CHECKING, Any, NoReturn

import trio

from loomk.actions.tools import parse_tool_calls
from loomk.errors import LLMError
from loomk.llm.client._wire import (
    CHAT,
    LLM_TIMEOUT,
    SNIPPET_CHARS,
    LLMReply,
    bad_response,
    chat_reply,
    close_quietly,
    describe_error,
    is_json,
    json_array,
    json_object,
    transport_errors,
)
from loomk.llm.client.sse import SSEEvent, SSEParser
from loomk.telemetry.logging import get_logger

if TYPE_CHECKING:
    import httpx

__all__ = ["ChatStream"]

_CLOSE_GRACE_S = 1.0  # how long finishing or closing a stream may take, even when cancelled

_log = get_logger("loomk.llm")


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
    LLM_BAD_RESPONSE; ``timeout_s`` bounds the wait for each line.

    ``open_response`` sends the request (on entry) and returns its 2xx response with only
    the head read; ``redact`` masks the API key in any server text an error quotes.
    """

    def __init__(
        self,
        *,
        url: str,
        model: str,
        timeout_s: float,
        open_response: Callable[[], Awaitable[httpx.Response]],
        redact: Callable[[str], str],
        stream_id: str,
    ) -> None:
        self.stream_id = stream_id
        self.reply: LLMReply | None = None
        self._url = url
        self._asked = model
        self._timeout_s = timeout_s
        self._open_response = open_response
        self._redact = redact
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
        self._body_finished = False
        self._error: LLMError | None = None
        self._entered = False

    def __repr__(self) -> str:
        return f"ChatStream(id={self.stream_id!r}, url={self._url!r}, deltas={self._deltas})"

    async def __aenter__(self) -> ChatStream:
        if self._entered:
            raise RuntimeError("a ChatStream can be entered only once")
        self._entered = True
        try:
            response = await self._open_response()
            self._response = response
            if is_json(response):
                self._whole_answer(response)  # a server that ignored "stream": true
            else:
                self._lines = response.aiter_lines()
        except LLMError as error:
            await self._close()
            self._fail(error)
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
                self._deltas += 1
                return self._queued.popleft()
            if self._error is not None:
                raise self._error
            if self._ended:
                if not self._body_finished:
                    self._body_finished = True
                    await self._finish_body()
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
                self._fail(error)

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
            except transport_errors() as error:
                if self._finish is not None:
                    return None  # the answer was complete; only the goodbye was lost
                raise bad_response(
                    f"the stream from {self._url} was cut short: "
                    f"{self._redact(describe_error(error))}"
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
            raise bad_response(
                f"the stream from {self._url} sent malformed JSON: {error}"
            ) from None
        if not isinstance(chunk, dict):
            raise bad_response(f"the stream from {self._url} sent a chunk that is not an object")
        if event.event == "error" or "error" in chunk:
            message = str(json_object(chunk.get("error")).get("message") or chunk.get("error"))
            message = self._redact(message)[:SNIPPET_CHARS]  # redact first, then cut
            raise bad_response(
                self._redact(f"the stream from {self._url} reported an error: {message}")
            )
        if isinstance(chunk.get("model"), str):
            self._model = chunk["model"]
        if isinstance(chunk.get("usage"), dict):
            self._usage = chunk["usage"]
        for choice in json_array(chunk.get("choices")):
            choice = json_object(choice)
            if choice.get("index", 0) != 0:
                continue
            delta = json_object(choice.get("delta"))
            text = delta.get("content")
            if isinstance(text, str) and text:
                self._text.append(text)
                self._queued.append(text)
            for position, call in enumerate(json_array(delta.get("tool_calls"))):
                self._take_call(json_object(call), position)
            if isinstance(choice.get("finish_reason"), str):
                self._finish = choice["finish_reason"]

    def _take_call(self, call: dict[str, Any], position: int) -> None:
        index = call.get("index", position)
        slot = index if isinstance(index, int) else position
        ident = call.get("id")
        current = self._calls.get(slot)
        if (
            current is not None
            and isinstance(ident, str)
            and ident
            and current.id not in ("", ident)
        ):
            # a new call in a slot already taken (servers that send every call at index 0,
            # or none): it gets a slot of its own rather than being glued onto the last
            slot = max(self._calls) + 1
        partial = self._calls.setdefault(slot, _PartialCall())
        if isinstance(ident, str) and not partial.id:
            partial.id = ident
        function = json_object(call.get("function"))
        if isinstance(function.get("name"), str):
            partial.name += function["name"]
        if isinstance(function.get("arguments"), str):
            partial.arguments += function["arguments"]

    def _end_of_body(self, *, done: bool) -> None:
        """The answer is over: complete after [DONE] or a finish reason, else cut short."""
        self._parser.close()
        if not done and self._finish is None:
            raise bad_response(
                f"the stream from {self._url} ended before [DONE] or a finish reason"
            )
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
        raw: dict[str, Any] = {
            "object": "chat.completion",
            "model": self._model or self._asked,
            "choices": [{"index": 0, "message": message, "finish_reason": self._finish}],
        }
        if self._usage is not None:
            raw["usage"] = self._usage
        return LLMReply(
            text,
            parse_tool_calls(raw),
            self._model or self._asked,
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
            raise bad_response(f"{self._url} answered with malformed JSON: {error}") from None
        reply = chat_reply(raw, self._asked, self._url)
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
            except transport_errors():
                pass

    def _fail(self, error: LLMError) -> NoReturn:
        """Remember ``error`` (every later read raises it again), log it and raise it."""
        self._error = error
        self._ended = True
        _log.warning("llm stream failed", url=self._url, code=error.code, error=error.message)
        raise error

    # ---- closing ------------------------------------------------------------------------

    async def _close(self) -> None:
        """Close the response, then run httpx's line generators to their end (they fail at
        once on the closed connection) so none is left suspended for the garbage collector."""
        response, lines = self._response, self._lines
        self._response = self._lines = None
        if response is None:
            return
        with trio.CancelScope(shield=True):
            await close_quietly(response)
            if lines is not None:
                with trio.move_on_after(_CLOSE_GRACE_S):
                    try:
                        async for _ in lines:
                            pass
                    except Exception as error:
                        _log.debug("llm stream closed", error=type(error).__name__)
