"""Republishing a streamed model answer as events, for observers that are not reading it.

The client streams; it knows nothing of an event bus. :func:`republish_stream` wraps a
:class:`~loomk.llm.client.ChatStream` so that, while the task iterating it reads the text
deltas, each one is also published through ``publish(topic, event)``: any async callable
of that shape, such as ``kernel.bus.publish`` (what it returns is ignored)::

    stream = republish_stream(client.stream_chat(messages), kernel.bus.publish, "llm.stream")
    async with stream:
        async for delta in stream:
            ...
    stream.reply

Wrap the stream before entering it, so that a request that fails to open is published
too. The events have source ``loomk.llm`` and the stream's ``stream_id`` in their metadata;
their types are :data:`TOKEN_EVENT`, :data:`DONE_EVENT` and :data:`ERROR_EVENT`:

* ``llm.token`` for each delta: payload the delta in UTF-8, metadata ``index`` (from 0);
* ``llm.done`` once the stream has been read to its end: payload the whole text, metadata
  ``tokens`` (how many deltas there were) and ``finish_reason`` when the server gave one;
* ``llm.error`` when the stream fails, opening included: payload the message, metadata
  ``code``.

Like the stream, the wrapper runs nothing in the background: each event is published by
the task reading the stream, before that task gets the delta, so a full lossless
subscription holds the reader up as it would any publisher.
"""

from __future__ import annotations

from types import TracebackType
from typing import TYPE_CHECKING, Protocol

from loomk.errors import LLMError
from loomk.events import Event

if TYPE_CHECKING:  # the client package is loaded only by whoever made the stream
    from loomk.llm.client import ChatStream, LLMReply

__all__ = [
    "DONE_EVENT",
    "ERROR_EVENT",
    "TOKEN_EVENT",
    "Publish",
    "RepublishedStream",
    "republish_stream",
]

TOKEN_EVENT = "llm.token"
DONE_EVENT = "llm.done"
ERROR_EVENT = "llm.error"
_SOURCE = "loomk.llm"


class Publish(Protocol):
    """Publishes ``event`` on ``topic``: ``EventBus.publish`` is one, and so is any
    ``async def publish(topic, event) -> None``. The adapter ignores what it returns (the
    bus's count of subscribers, say), so it may return anything."""

    async def __call__(self, topic: str, event: Event, /) -> object: ...


def republish_stream(stream: ChatStream, publish: Publish, topic: str) -> RepublishedStream:
    """``stream``, publishing its deltas, end and failure on ``topic`` (see the module
    notes); use it in place of the stream."""
    return RepublishedStream(stream, publish, topic)


class RepublishedStream:
    """A :class:`~loomk.llm.client.ChatStream` read through, with every delta, its end and
    its failure published as events; made by :func:`republish_stream`."""

    def __init__(self, stream: ChatStream, publish: Publish, topic: str) -> None:
        self._stream = stream
        self._publish = publish
        self._topic = topic
        self._tokens = 0
        self._done_sent = False
        self._error_sent = False

    def __repr__(self) -> str:
        return f"RepublishedStream({self._stream!r}, topic={self._topic!r})"

    @property
    def stream_id(self) -> str:
        """The stream's id, in every event's ``stream_id`` metadata."""
        return self._stream.stream_id

    @property
    def reply(self) -> LLMReply | None:
        """The assembled reply, once the stream has been read to its end."""
        return self._stream.reply

    async def __aenter__(self) -> RepublishedStream:
        try:
            await self._stream.__aenter__()
        except LLMError as error:
            await self._error(error)
            raise
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self._stream.__aexit__(exc_type, exc, tb)

    def __aiter__(self) -> RepublishedStream:
        return self

    async def __anext__(self) -> str:
        try:
            delta = await self._stream.__anext__()
        except StopAsyncIteration:
            await self._done()
            raise
        except LLMError as error:
            await self._error(error)
            raise
        index = self._tokens
        self._tokens += 1
        await self._emit(TOKEN_EVENT, delta, {"index": str(index)})
        return delta

    async def collect(self) -> LLMReply:
        """Read (and publish) the rest of the stream; the assembled reply."""
        async for _ in self:
            pass
        reply = self.reply
        assert reply is not None
        return reply

    async def _done(self) -> None:
        reply = self.reply
        if self._done_sent or reply is None:
            return
        self._done_sent = True
        metadata = {"tokens": str(self._tokens)}
        if reply.finish_reason:
            metadata["finish_reason"] = reply.finish_reason
        await self._emit(DONE_EVENT, reply.text, metadata)

    async def _error(self, error: LLMError) -> None:
        """Publish the stream's failure once (a failed stream raises it on every read)."""
        if self._error_sent:
            return
        self._error_sent = True
        await self._emit(ERROR_EVENT, error.message, {"code": error.code})

    async def _emit(self, event_type: str, text: str, metadata: dict[str, str]) -> None:
        # a lone surrogate, which JSON text allows, becomes "?" in the payload
        payload = text.encode("utf-8", "replace")
        metadata = {"stream_id": self.stream_id, **metadata}
        await self._publish(
            self._topic, Event(event_type, payload, source=_SOURCE, metadata=metadata)
        )
