"""Republishing a streamed answer as ``llm.token`` / ``llm.done`` / ``llm.error`` events.

The stream comes from the real client talking to the loopback OpenAI-compatible server
(tests/openai_server.py); the events go through a real :class:`~loomk.EventBus`, whose
``publish`` is all the adapter is given.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from types import ModuleType
from typing import Any

import pytest
from openai_server import (
    FakeOpenAI,
    chat_chunks,
    chat_json,
    serve_openai,
    server_error,
    sse_body,
    sse_response,
)

from loomk import EventBus, LLMError
from loomk.bus import Subscription
from loomk.events import Event
from loomk.llm import (
    DONE_EVENT,
    ERROR_EVENT,
    TOKEN_EVENT,
    RepublishedStream,
    republish_stream,
)
from loomk.llm.client import LLMClient, LLMReply, LLMSettings

MESSAGES = [{"role": "user", "content": "Say hello"}]
KEY = "sk-republish-SECRET-51c0"


@asynccontextmanager
async def llm(**settings: Any) -> AsyncIterator[tuple[FakeOpenAI, LLMClient]]:
    async with serve_openai() as fake:
        options: dict[str, Any] = {"base_url": fake.base_url, "max_retries": 0, **settings}
        async with LLMClient(LLMSettings(**options)) as client:
            yield fake, client


async def read_all(stream: RepublishedStream) -> LLMReply:
    """Enter ``stream`` and read it to the end."""
    async with stream:
        return await stream.collect()


def published(events: Subscription) -> list[Event]:
    """What has been published on the subscription so far (nothing is left queued)."""
    received = []
    while events.stats().depth:
        received.append(events.receive_nowait()[1])
    return received


async def test_each_delta_is_published_before_the_reader_gets_it_then_the_end() -> None:
    bus = EventBus()
    events = bus.subscribe("llm.out")
    async with llm() as (fake, client):
        fake.script("chat/completions", sse_response(sse_body(chat_chunks(["A", "b", "c"]))))
        stream = republish_stream(client.stream_chat(MESSAGES), bus.publish, "llm.out")
        tokens: list[Event] = []
        async with stream:
            async for delta in stream:
                (token,) = published(events)  # published already, one per delta
                assert token.payload == delta.encode()
                tokens.append(token)
            (done,) = published(events)
    assert [e.type for e in tokens] == ["llm.token"] * 3
    assert [e.payload for e in tokens] == [b"A", b"b", b"c"]
    assert [e.metadata for e in tokens] == [
        {"stream_id": stream.stream_id, "index": str(i)} for i in range(3)
    ]
    assert {e.source for e in [*tokens, done]} == {"loomk.llm"}
    assert done.type == "llm.done"
    assert stream.reply is not None
    assert done.payload == b"Abc" == stream.reply.text.encode()
    assert done.metadata == {"stream_id": stream.stream_id, "tokens": "3", "finish_reason": "stop"}


async def test_collect_publishes_everything_and_returns_the_reply() -> None:
    bus = EventBus()
    events = bus.subscribe("llm.*")
    async with (
        llm() as (_, client),  # the server streams "Hel", "lo!" by default
        republish_stream(client.stream_chat(MESSAGES), bus.publish, "llm.a") as stream,
    ):
        reply = await stream.collect()
        assert await stream.collect() is reply  # read to the end: nothing more to publish
    received = published(events)
    assert [(e.type, e.payload) for e in received] == [
        ("llm.token", b"Hel"),
        ("llm.token", b"lo!"),
        ("llm.done", b"Hello!"),
    ]
    assert reply.text == "Hello!"


async def test_an_end_without_a_finish_reason_has_none_in_the_done_event() -> None:
    bus = EventBus()
    events = bus.subscribe("out")
    async with llm() as (fake, client):
        fake.script(
            "chat/completions",
            sse_response(sse_body(chat_chunks(["x"], finish_reason=None))),  # [DONE] only
        )
        async with republish_stream(client.stream_chat(MESSAGES), bus.publish, "out") as stream:
            await stream.collect()
    done = published(events)[-1]
    assert done.type == "llm.done"
    assert done.metadata == {"stream_id": stream.stream_id, "tokens": "1"}


async def test_a_whole_json_answer_to_a_stream_request_is_one_token_and_the_end() -> None:
    bus = EventBus()
    events = bus.subscribe("out")
    async with llm() as (fake, client):
        fake.script("chat/completions", chat_json("All at once"))
        async with republish_stream(client.stream_chat(MESSAGES), bus.publish, "out") as stream:
            await stream.collect()
    assert [(e.type, e.payload) for e in published(events)] == [
        ("llm.token", b"All at once"),
        ("llm.done", b"All at once"),
    ]


async def test_a_stream_left_early_publishes_no_end() -> None:
    bus = EventBus()
    events = bus.subscribe("out")
    async with llm() as (fake, client):
        fake.script("chat/completions", sse_response(sse_body(chat_chunks(["1", "2", "3"]))))
        async with republish_stream(client.stream_chat(MESSAGES), bus.publish, "out") as stream:
            async for _ in stream:
                break
    assert [e.type for e in published(events)] == ["llm.token"]
    assert stream.reply is None


async def test_failures_are_published_once_whether_cut_or_refused_at_opening() -> None:
    bus = EventBus()
    events = bus.subscribe("out")
    async with llm(api_key=KEY) as (fake, client):
        fake.script(
            "chat/completions",
            sse_response(sse_body(chat_chunks(["A"], finish_reason=None), done=False)),
            server_error(500),
        )
        stream = republish_stream(client.stream_chat(MESSAGES), bus.publish, "out")
        with pytest.raises(LLMError) as cut:
            await read_all(stream)
        with pytest.raises(LLMError):  # read again: the same failure, not published again
            await stream.__anext__()
        with pytest.raises(LLMError) as refused:  # the stream never opens
            await read_all(republish_stream(client.stream_chat(MESSAGES), bus.publish, "out"))
    received = published(events)
    assert [(e.type, e.metadata.get("code")) for e in received] == [
        ("llm.token", None),
        ("llm.error", "LLM_BAD_RESPONSE"),
        ("llm.error", "LLM_HTTP_ERROR"),
    ]
    assert received[1].payload == cut.value.message.encode()
    assert received[2].payload == refused.value.message.encode()
    assert all(KEY.encode() not in e.payload for e in received)
    assert received[1].metadata["stream_id"] != received[2].metadata["stream_id"]


async def test_the_bus_counts_what_the_adapter_published() -> None:
    bus = EventBus()
    events = bus.subscribe("out")
    async with llm() as (_, client):
        await read_all(republish_stream(client.stream_chat(MESSAGES), bus.publish, "out"))
    assert bus.stats("out").published == 3  # two tokens and the end
    assert len(published(events)) == 3


async def test_a_request_that_cannot_be_sent_is_published_as_an_error() -> None:
    bus = EventBus()
    events = bus.subscribe("out")
    async with llm() as (fake, client):
        stream = client.stream_chat(MESSAGES, extra={"seed": {1, 2}})  # a set is not JSON
        with pytest.raises(LLMError) as caught:
            await read_all(republish_stream(stream, bus.publish, "out"))
    assert caught.value.code == "LLM_INVALID_REQUEST"
    assert fake.requests == []
    (error,) = published(events)
    assert (error.type, error.metadata["code"]) == ("llm.error", "LLM_INVALID_REQUEST")


async def test_a_publisher_that_returns_nothing_will_do() -> None:
    """Any ``async def publish(topic, event) -> None`` is a ``Publish``: the adapter
    ignores what the callable returns."""
    seen: list[tuple[str, Event]] = []

    async def publish(topic: str, event: Event) -> None:
        seen.append((topic, event))

    async with llm() as (_, client):
        reply = await read_all(republish_stream(client.stream_chat(MESSAGES), publish, "out"))
    assert reply.text == "Hello!"
    assert [(topic, e.type, e.payload) for topic, e in seen] == [
        ("out", TOKEN_EVENT, b"Hel"),
        ("out", TOKEN_EVENT, b"lo!"),
        ("out", DONE_EVENT, b"Hello!"),
    ]


def test_the_module_and_its_names_are_reachable_from_loomk_llm() -> None:
    """``loomk.llm.republish`` is the module (no function of the package hides it), and
    what it defines is importable from ``loomk.llm`` as well."""
    import loomk.llm
    from loomk.llm import republish as module

    assert isinstance(loomk.llm.republish, ModuleType)
    assert module is loomk.llm.republish
    assert loomk.llm.republish.republish_stream is republish_stream
    for name in module.__all__:
        assert getattr(loomk.llm, name) is getattr(module, name), name
        assert name in loomk.llm.__all__, name
    assert (TOKEN_EVENT, DONE_EVENT, ERROR_EVENT) == ("llm.token", "llm.done", "llm.error")
