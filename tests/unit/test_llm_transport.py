"""The client's transport on its own: a request in, a 2xx response or a coded LLMError out.

Against the real OpenAI-compatible server on loopback (tests/openai_server.py): retries
and ``Retry-After`` (on a MockClock), the overall deadline, the API key going only to the
configured origin and never showing in an error, and a streamed answer coming back with
only its head read. The same rules seen through the client are in test_llm_client.py.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest
import trio
import trio.testing
from httpserver import Request, Response
from openai_server import (
    FakeOpenAI,
    chat_chunks,
    rate_limited,
    serve_openai,
    server_error,
    sse_body,
    sse_response,
)

from loomk import LLMError
from loomk.llm.client import LLMSettings
from loomk.llm.client._transport import LLMTransport, ModelRequest

KEY = "sk-transport-SECRET-9e1d"
BODY = json.dumps({"model": "m", "messages": []}).encode()


@asynccontextmanager
async def transport(**settings: Any) -> AsyncIterator[tuple[FakeOpenAI, LLMTransport]]:
    async with serve_openai() as fake:
        options: dict[str, Any] = {"base_url": fake.base_url, "max_retries": 2, **settings}
        sender = LLMTransport(LLMSettings(**options))
        await sender.open()
        try:
            yield fake, sender
        finally:
            await sender.aclose()


def chat(fake: FakeOpenAI, **options: Any) -> ModelRequest:
    """A Chat Completions request to ``fake``."""
    return ModelRequest(f"{fake.base_url}/chat/completions", BODY, 10.0, **options)


async def test_a_request_is_sent_as_given_and_its_answer_comes_back_read() -> None:
    async with transport() as (fake, sender):
        response = await sender.send(chat(fake))
    assert response.status_code == 200
    assert response.json()["choices"][0]["message"]["content"] == "Hello!"
    (request,) = fake.requests
    assert request.body == BODY
    assert request.headers["content-type"] == "application/json"
    assert request.headers["accept"] == "application/json"
    assert "authorization" not in request.headers  # no key configured


async def test_server_errors_are_retried_waiting_at_least_what_retry_after_asks(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with transport(backoff_s=0.0) as (fake, sender):
        fake.script("chat/completions", server_error(503), rate_limited("7"))
        response = await sender.send(chat(fake))
    assert response.status_code == 200
    assert len(fake.requests) == 3
    assert fake.times[2] - fake.times[1] >= 7.0  # the backoff alone would not wait


async def test_the_last_failure_is_raised_when_retries_run_out(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with transport(max_retries=1) as (fake, sender):
        fake.script("chat/completions", server_error(500), server_error(502))
        with pytest.raises(LLMError) as caught:
            await sender.send(chat(fake))
    assert (caught.value.code, caught.value.status) == ("LLM_HTTP_ERROR", 502)
    assert len(fake.requests) == 2


async def test_a_retry_that_would_end_past_the_deadline_is_not_made(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with transport() as (fake, sender):
        fake.script("chat/completions", rate_limited("5"))
        deadline = trio.current_time() + 3.0
        with pytest.raises(LLMError) as caught:
            await sender.send(chat(fake, deadline=deadline))
    assert (caught.value.code, caught.value.retry_after_s) == ("LLM_RATE_LIMITED", 5.0)
    assert len(fake.requests) == 1


async def test_the_key_goes_only_to_the_configured_origin_and_never_into_errors() -> None:
    def echo_authorization(request: Request) -> Response:
        return Response.json_body({"error": request.headers.get("authorization")}, status=401)

    async with serve_openai() as other, transport(api_key=KEY, max_retries=0) as (fake, sender):
        await sender.send(chat(fake))
        await sender.send(chat(other))  # another origin: a per-call base URL
        fake.script("chat/completions", echo_authorization)
        with pytest.raises(LLMError) as caught:
            await sender.send(chat(fake))
    assert fake.requests[0].headers["authorization"] == f"Bearer {KEY}"
    assert "authorization" not in other.requests[0].headers
    assert caught.value.code == "LLM_HTTP_ERROR"
    assert "Bearer ********" in caught.value.message
    assert KEY not in str(caught.value)
    assert sender.redact(f"key={KEY}.") == "key=********."


async def test_a_streamed_answer_comes_back_with_only_its_head_read() -> None:
    async with transport() as (fake, sender):
        fake.script("chat/completions", sse_response(sse_body(chat_chunks(["A", "b"]))))
        response = await sender.send(chat(fake, stream=True))
        try:
            assert fake.requests[0].headers["accept"] == "text/event-stream"
            assert not response.is_stream_consumed  # the caller reads the events
            lines = [line async for line in response.aiter_lines() if line]
        finally:
            await response.aclose()
    assert lines[-1] == "data: [DONE]"
    assert len(lines) == 5  # the role chunk, two deltas, the finish chunk, [DONE]


async def test_it_sends_only_while_open() -> None:
    async with serve_openai() as fake:
        sender = LLMTransport(LLMSettings(base_url=fake.base_url))
        assert not sender.is_open
        with pytest.raises(RuntimeError, match="not open") as unopened:
            await sender.send(chat(fake))
        await sender.open()
        assert sender.is_open
        with pytest.raises(RuntimeError, match="already open") as twice:
            await sender.open()
        await sender.aclose()
        await sender.aclose()  # closing twice is harmless
        assert not sender.is_open
        with pytest.raises(RuntimeError, match="not open"):
            await sender.send(chat(fake))
    assert fake.requests == []
    # the transport speaks of itself: how to use the client is the client's to say
    assert "LLMClient" not in str(unopened.value) + str(twice.value)


def test_its_settings_are_read_only() -> None:
    settings = LLMSettings(base_url="http://127.0.0.1:9/v1", api_key=KEY)
    sender = LLMTransport(settings)
    assert sender.settings is settings
    with pytest.raises(AttributeError):
        sender.settings = LLMSettings()  # type: ignore[misc]
    assert sender.settings is settings
