"""The OpenAI-compatible client against a real server on loopback (tests/openai_server.py).

Covers the request bodies and headers, Chat Completions and Responses parsing with tool
calls in the standard shapes, Loom's generate fallback rules, SSE streaming as an iterator,
closing streams early or on cancellation, retries with backoff and Retry-After on a
MockClock, timeouts, every failure's code, that the API key never shows,
and that nothing is left running or connected (proved with trio's task tree, not sleeps).
"""

from __future__ import annotations

import email.utils
import gc
import io
import logging
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
import structlog
import trio
import trio.testing
from httpserver import Request, Response
from openai_server import (
    MODEL,
    USAGE,
    FakeOpenAI,
    chat_chunks,
    chat_completion,
    chat_json,
    hang,
    live_tasks,
    malformed_json,
    not_found,
    rate_limited,
    responses_json,
    serve_openai,
    server_error,
    serving_connections,
    sse_body,
    sse_response,
    tool_call,
)

from loomk.actions import ActionBroker, capability
from loomk.actions.orchestrator import ToolOrchestrator
from loomk.config import Config
from loomk.errors import LLMError
from loomk.llm.client import LLMClient, LLMReply, LLMSettings, PromptBundle, TokenBudget
from loomk.llm.client import _transport as transport_module
from loomk.llm.client._retry import retry_after

MESSAGES = [{"role": "user", "content": "Say hello"}]
KEY = "sk-test-SECRET-4f9a2b"


@asynccontextmanager
async def llm(
    *, transport: httpx.AsyncBaseTransport | None = None, **settings: Any
) -> AsyncIterator[tuple[FakeOpenAI, LLMClient]]:
    """A fake server and a client of it (two retries unless a test says otherwise)."""
    async with serve_openai() as fake:
        options: dict[str, Any] = {"base_url": fake.base_url, "max_retries": 2, **settings}
        async with LLMClient(LLMSettings(**options), transport=transport) as client:
            yield fake, client


async def fails(code: str, call: Any) -> LLMError:
    """Await ``call`` and return the LLMError it raises, checking its code."""
    with pytest.raises(LLMError) as caught:
        await call
    assert caught.value.code == code, caught.value
    return caught.value


def json_answer(value: Any, status: int = 200) -> Response:
    """Any JSON body as the answer."""
    return Response.json_body(value, status=status)


async def settle() -> None:
    """Let every task (the servers' connection tasks too) run until it blocks."""
    await trio.testing.wait_all_tasks_blocked()


# --- requests -------------------------------------------------------------------------------


async def test_chat_posts_the_standard_body_and_reads_the_reply() -> None:
    async with llm(temperature=0.3) as (fake, client):
        reply = await client.chat(MESSAGES, max_tokens=20)
    assert reply == LLMReply(
        "Hello!", [], MODEL, USAGE, "chat.completions", reply.raw, finish_reason="stop"
    )
    (request,) = fake.requests
    assert request.method == "POST"
    assert request.path == "/v1/chat/completions"
    assert request.headers["content-type"] == "application/json"
    assert request.json() == {
        "model": "qwen2.5-0.5b-instruct",
        "messages": MESSAGES,
        "temperature": 0.3,
        "max_tokens": 20,
    }


async def test_per_call_settings_tools_and_extra_fields_go_in_the_body() -> None:
    tools = [{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}]
    async with llm() as (fake, client):
        await client.chat(
            MESSAGES,
            tools=tools,
            tool_choice="required",
            model="other",
            temperature=0.0,
            extra={"seed": 7, "temperature": 0.1},
        )
    assert fake.bodies()[0] == {
        "model": "other",
        "messages": MESSAGES,
        "temperature": 0.1,
        "tools": tools,
        "tool_choice": "required",
        "seed": 7,
    }


@pytest.mark.parametrize("key", ["", KEY])
async def test_the_bearer_token_is_sent_only_when_a_key_is_set(key: str) -> None:
    async with llm(api_key=key) as (fake, client):
        await client.chat(MESSAGES)
        await client.responses("hi")
        await client.generate(PromptBundle(instructions="hi"))
        async with client.stream_chat(MESSAGES) as stream:
            await stream.collect()
    for request in fake.requests:
        if key:
            assert request.headers["authorization"] == f"Bearer {key}"
        else:
            assert "authorization" not in request.headers


async def test_trailing_slashes_of_the_base_url_are_trimmed() -> None:
    async with serve_openai() as fake:
        settings = LLMSettings(base_url=fake.base_url + "///")
        async with LLMClient(settings) as client:
            await client.chat(MESSAGES)
    assert fake.paths() == ["/v1/chat/completions"]


@pytest.mark.parametrize("base_url", ["", "   ", "localhost:8000/v1", "ftp://x/v1"])
async def test_no_usable_base_url_is_not_configured(base_url: str) -> None:
    async with LLMClient(LLMSettings(base_url=base_url)) as client:
        await fails("LLM_NOT_CONFIGURED", client.chat(MESSAGES))
        await fails("LLM_NOT_CONFIGURED", client.generate(PromptBundle(instructions="x")))
        with pytest.raises(LLMError) as caught:
            client.stream_chat(MESSAGES)
        assert caught.value.code == "LLM_NOT_CONFIGURED"


async def test_a_base_url_httpx_cannot_parse_is_not_configured() -> None:
    async with LLMClient(LLMSettings(base_url="http://\x00host/v1")) as client:
        error = await fails("LLM_NOT_CONFIGURED", client.chat(MESSAGES))
    assert "not a valid URL" in error.message


async def test_a_body_that_is_not_json_is_an_invalid_request() -> None:
    async with llm() as (fake, client):
        await fails("LLM_INVALID_REQUEST", client.chat(MESSAGES, extra={"x": {1, 2}}))
        await fails("LLM_INVALID_REQUEST", client.chat(MESSAGES, temperature=float("nan")))
        await fails("LLM_INVALID_REQUEST", client.chat(MESSAGES, timeout_s=0))
    assert fake.requests == []


async def test_text_with_lone_surrogates_still_goes_out() -> None:
    async with llm() as (fake, client):
        await client.chat([{"role": "user", "content": "a\ud800b"}])
    assert fake.bodies()[0]["messages"][0]["content"] == "a\ud800b"


async def test_a_client_must_be_opened() -> None:
    client = LLMClient(LLMSettings(base_url="http://127.0.0.1:9/v1"))
    with pytest.raises(RuntimeError, match="async with LLMClient"):
        await client.chat(MESSAGES)
    with pytest.raises(RuntimeError, match="async with LLMClient"):
        async with client.stream_chat(MESSAGES):
            pass
    async with client:
        with pytest.raises(RuntimeError, match="this LLMClient is already open"):
            await client.__aenter__()
    with pytest.raises(RuntimeError, match="async with LLMClient"):
        await client.chat(MESSAGES)  # closed again


async def test_the_settings_are_one_copy_that_cannot_be_swapped() -> None:
    """The client builds URLs from the same settings the transport takes the key, the
    origin it may go to and the retry limits from; replacing them is refused, so the two
    cannot drift apart (a key sent to a new endpoint, say)."""
    async with serve_openai() as fake, serve_openai() as other:
        settings = LLMSettings(base_url=fake.base_url, api_key=KEY, max_retries=0)
        async with LLMClient(settings) as client:
            assert client.settings is settings
            with pytest.raises(AttributeError):
                client.settings = LLMSettings(  # type: ignore[misc]
                    base_url=other.base_url, api_key="sk-other"
                )
            assert client.settings is settings
            await client.chat(MESSAGES)
    assert other.requests == []
    (request,) = fake.requests
    assert request.headers["authorization"] == f"Bearer {KEY}"


# --- settings -------------------------------------------------------------------------------


async def test_the_reply_says_which_api_answered_in_the_packages_provider_names() -> None:
    from loomk.llm.client import CHAT, RESPONSES

    async with llm() as (_, client):
        by_chat = await client.chat(MESSAGES)
        by_responses = await client.responses("Hi")
    assert (by_chat.provider, by_responses.provider) == (CHAT, RESPONSES)
    assert (CHAT, RESPONSES) == ("chat.completions", "responses")


def test_settings_come_from_the_kernel_config_and_loom_variables() -> None:
    env = {
        "VLLM_BASE_URL": "http://vllm:8000/v1",
        "VLLM_MODEL": "m",
        "LOOMK_LLM_API_KEY": KEY,
        "REQUEST_TIMEOUT_MS": "2500",
        "VLLM_TEMPERATURE": "0.2",
        "LOOMK_LLM_MAX_RETRIES": "5",
    }
    settings = LLMSettings.from_config(Config.load(env=env, cwd=Path("/nonexistent")))
    assert settings == LLMSettings("http://vllm:8000/v1", "m", KEY, 2.5, 0.2, 5)
    assert KEY not in repr(settings)
    assert KEY not in str(settings)


@pytest.mark.parametrize(
    "change",
    [
        {"timeout_s": 0},
        {"timeout_s": float("inf")},
        {"temperature": -1},
        {"max_retries": -1},
        {"max_retries": True},
        {"backoff_s": float("nan")},
        {"api_key": "two words"},
        {"api_key": "line\nbreak"},
        {"model": None},
    ],
)
def test_bad_settings_are_invalid_requests(change: dict[str, Any]) -> None:
    with pytest.raises(LLMError) as caught:
        LLMSettings(**change)
    assert caught.value.code == "LLM_INVALID_REQUEST"
    assert "break" not in str(caught.value)


# --- parsing --------------------------------------------------------------------------------


async def test_chat_tool_calls_in_the_standard_shape() -> None:
    calls = [
        tool_call("weather__get", {"location": "Paris"}, "call_a"),
        tool_call("math__eval", "{not json", "call_b"),
    ]
    async with llm() as (fake, client):
        fake.script("chat/completions", chat_json(None, tool_calls=calls))
        reply = await client.chat(MESSAGES, tools=[], tool_choice="auto")
    assert reply.text == ""
    assert reply.finish_reason == "tool_calls"
    first, second = reply.tool_calls
    assert (first.id, first.name, first.arguments) == (
        "call_a",
        "weather__get",
        {"location": "Paris"},
    )
    assert (second.id, second.name, second.arguments) == ("call_b", "math__eval", None)
    assert second.error is not None


async def test_content_parts_are_joined() -> None:
    body = chat_completion(None)
    body["choices"][0]["message"]["content"] = [
        {"type": "text", "text": "Hel"},
        {"type": "text", "text": "lo"},
    ]
    async with llm() as (fake, client):
        fake.script("chat/completions", json_answer(body))
        assert (await client.chat(MESSAGES)).text == "Hello"


@pytest.mark.parametrize(
    "body",
    [
        [],
        {"choices": []},
        {"choices": [{"index": 0}]},
        {"choices": [{"message": {"role": "assistant"}}]},
        {"error": "nope"},
    ],
)
async def test_a_chat_answer_without_a_message_is_a_bad_response(body: Any) -> None:
    async with llm() as (fake, client):
        fake.script("chat/completions", json_answer(body))
        await fails("LLM_BAD_RESPONSE", client.chat(MESSAGES))


async def test_responses_posts_its_body_and_reads_text_and_function_calls() -> None:
    tools = [{"type": "function", "name": "f", "parameters": {"type": "object"}}]
    async with llm() as (fake, client):
        fake.script(
            "responses",
            responses_json("Sure.", function_calls=[("f", {"x": 1}), ("g", "{}")]),
        )
        reply = await client.responses("Do it", tools=tools, tool_choice="auto", max_tokens=9)
    assert fake.bodies() == [
        {
            "model": "qwen2.5-0.5b-instruct",
            "input": "Do it",
            "temperature": 0.7,
            "max_output_tokens": 9,
            "tools": tools,
            "tool_choice": "auto",
        }
    ]
    assert fake.paths() == ["/v1/responses"]
    assert reply.provider == "responses"
    assert reply.text == "Sure."
    assert [(c.id, c.name, c.arguments) for c in reply.tool_calls] == [
        ("call_0", "f", {"x": 1}),
        ("call_1", "g", {}),
    ]
    assert reply.usage == USAGE
    assert reply.model == MODEL


async def test_responses_without_output_is_a_bad_response() -> None:
    async with llm() as (fake, client):
        fake.script("responses", json_answer({"id": "resp_1"}))
        await fails("LLM_BAD_RESPONSE", client.responses("x"))


async def test_model_calls_fill_in_model_and_temperature_for_the_orchestrator() -> None:
    @capability("math.double", schema={"type": "object", "required": ["x"]})
    async def double(args: dict[str, Any]) -> dict[str, Any]:
        return {"value": args["x"] * 2}

    broker = ActionBroker()
    broker.register(double)
    async with llm() as (fake, client):
        fake.script(
            "chat/completions",
            chat_json(None, tool_calls=[tool_call("math__double", {"x": 21})]),
            chat_json("It is 42."),
        )
        answer = await ToolOrchestrator(broker, client.chat_call).run("Double 21")
        raw = await client.responses_call({"input": "x", "model": "chosen"})
    assert answer.text == "It is 42."
    assert [r.ok for r in answer.tool_results] == [True]
    first, second, third = fake.bodies()
    assert first["model"] == "qwen2.5-0.5b-instruct"
    assert first["temperature"] == 0.7
    assert first["tools"][0]["function"]["name"] == "math__double"
    assert second["messages"][-1] == {
        "role": "tool",
        "tool_call_id": "call_1",
        "content": '{"value": 42}',
    }
    assert third == {"input": "x", "model": "chosen", "temperature": 0.7}
    assert raw["object"] == "response"


async def test_model_calls_fail_like_every_other_request() -> None:
    async with llm(max_retries=0) as (fake, client):
        fake.script("chat/completions", json_answer(["not", "an", "object"]), server_error())
        await fails("LLM_BAD_RESPONSE", client.chat_call({"messages": MESSAGES}))
        error = await fails("LLM_HTTP_ERROR", client.chat_call({"messages": MESSAGES}))
    assert error.status == 500


# --- generate: Loom's fallback rules ---------------------------------------------------------

BUNDLE = PromptBundle(system="Be brief.", instructions="Say hi")
FUSED = "System:\nBe brief.\n\nUser:\nSay hi\n"
CHAT_MESSAGES = [
    {"role": "system", "content": "Be brief."},
    {"role": "user", "content": "Say hi"},
]


async def test_generate_uses_the_responses_api_first() -> None:
    async with llm() as (fake, client):
        reply = await client.generate(BUNDLE, TokenBudget(100, 50))
    assert fake.bodies() == [
        {
            "model": "qwen2.5-0.5b-instruct",
            "input": FUSED,
            "max_output_tokens": 50,
            "temperature": 0.7,
        }
    ]
    assert fake.paths() == ["/v1/responses"]
    assert reply.as_output() == {
        "text": "Hello!",
        "model": MODEL,
        "provider": "responses",
        "usage": USAGE,
    }


@pytest.mark.parametrize(
    ("body", "text"),
    [
        ({"output_text": "direct"}, "direct"),
        ({"output": [{"content": [{"text": {"value": "val"}}]}]}, "val"),
        ({"output": [{"content": [{"content": "c1"}, {"text": "t2"}]}]}, "c1t2"),
        ({"choices": [{"message": {"content": "chat-shaped"}}]}, "chat-shaped"),
        (
            {
                "output": [
                    {"type": "reasoning", "content": [{"type": "reasoning_text", "text": "hmm"}]},
                    {"type": "message", "content": [{"type": "output_text", "text": "ok"}]},
                ]
            },
            "ok",
        ),
    ],
)
async def test_generate_extracts_text_from_every_responses_shape(body: Any, text: str) -> None:
    async with llm() as (fake, client):
        fake.script("responses", json_answer(body))
        reply = await client.generate(BUNDLE)
    assert reply.text == text
    assert reply.provider == "responses"
    assert len(fake.requests) == 1


@pytest.mark.parametrize(
    "failure",
    [
        not_found(),
        json_answer({"error": "bad"}, status=400),
        server_error(503),
        json_answer({"output": []}),  # no text
        json_answer({"output_text": ""}),
        json_answer(["a list"]),
    ],
)
async def test_generate_falls_back_to_chat_completions(failure: Any) -> None:
    async with llm(max_retries=0) as (fake, client):
        fake.script("responses", failure)
        reply = await client.generate(BUNDLE, TokenBudget(100, 50))
    assert fake.paths() == ["/v1/responses", "/v1/chat/completions"]
    assert fake.bodies()[1] == {
        "model": "qwen2.5-0.5b-instruct",
        "messages": CHAT_MESSAGES,
        "max_tokens": 50,
        "temperature": 0.7,
    }
    assert reply.provider == "chat.completions"
    assert reply.text == "Hello!"


async def test_generate_does_not_fall_back_from_malformed_json() -> None:
    async with llm() as (fake, client):
        fake.script("responses", malformed_json())
        await fails("LLM_BAD_RESPONSE", client.generate(BUNDLE))
    assert fake.paths() == ["/v1/responses"]


async def test_generate_needs_the_chat_message_content() -> None:
    async with llm(max_retries=0) as (fake, client):
        fake.script("responses", not_found())
        fake.script("chat/completions", chat_json(None, tool_calls=[tool_call("f", {})]))
        await fails("LLM_BAD_RESPONSE", client.generate(BUNDLE))
        fake.script("responses", not_found())
        fake.script("chat/completions", chat_json(""))
        assert (await client.generate(BUNDLE)).text == ""


async def test_generate_with_overrides_and_both_endpoints_failing() -> None:
    async with llm(max_retries=0) as (fake, client):
        fake.script("responses", server_error(500))
        fake.script("chat/completions", server_error(502))
        error = await fails("LLM_HTTP_ERROR", client.generate(BUNDLE, model="m2", temperature=0))
    assert error.status == 502
    assert [body["model"] for body in fake.bodies()] == ["m2", "m2"]
    assert [body["temperature"] for body in fake.bodies()] == [0, 0]


async def test_generate_can_stream() -> None:
    async with llm() as (fake, client):
        reply = await client.generate(BUNDLE, TokenBudget(100, 50), stream=True)
    assert reply.text == "Hello!"
    assert reply.provider == "chat.completions"
    assert fake.bodies() == [
        {
            "model": "qwen2.5-0.5b-instruct",
            "messages": CHAT_MESSAGES,
            "temperature": 0.7,
            "max_tokens": 50,
            "stream": True,
        }
    ]


# --- streaming ------------------------------------------------------------------------------


async def test_a_stream_yields_deltas_and_assembles_the_reply() -> None:
    chunks = chat_chunks(["Hel", "lo", " there"], usage=USAGE, finish_reason="length")
    async with llm() as (fake, client):
        fake.script("chat/completions", sse_response(sse_body(chunks)))
        async with client.stream_chat(MESSAGES, max_tokens=3) as stream:
            deltas = [delta async for delta in stream]
            assert stream.reply is not None
    assert deltas == ["Hel", "lo", " there"]
    reply = stream.reply
    assert (reply.text, reply.model, reply.usage) == ("Hello there", MODEL, USAGE)
    assert reply.finish_reason == "length"
    assert reply.provider == "chat.completions"
    assert reply.raw["choices"][0]["message"] == {"role": "assistant", "content": "Hello there"}
    assert fake.bodies()[0]["stream"] is True
    assert fake.requests[0].headers["accept"] == "text/event-stream"


async def test_tool_call_deltas_are_accumulated() -> None:
    deltas = [
        {"index": 0, "id": "call_w", "type": "function",
         "function": {"name": "weather__get", "arguments": ""}},
        {"index": 1, "id": "call_t", "type": "function",
         "function": {"name": "time__now", "arguments": "{}"}},
        {"index": 0, "function": {"arguments": '{"locat'}},
        {"index": 0, "function": {"arguments": 'ion": "Oslo"}'}},
    ]  # fmt: skip
    chunks = chat_chunks([], tool_calls=deltas, finish_reason="tool_calls")
    async with llm() as (fake, client):
        fake.script("chat/completions", sse_response(sse_body(chunks)))
        async with client.stream_chat(MESSAGES, tools=[{"type": "function"}]) as stream:
            assert [delta async for delta in stream] == []
    assert stream.reply is not None
    assert [(c.id, c.name, c.arguments) for c in stream.reply.tool_calls] == [
        ("call_w", "weather__get", {"location": "Oslo"}),
        ("call_t", "time__now", {}),
    ]


@pytest.mark.parametrize("index", [0, None])
async def test_whole_calls_sent_at_one_index_stay_separate(index: int | None) -> None:
    """Some servers (Ollama) send each complete call at index 0, or with no index."""
    deltas = [
        {"id": "call_a", "type": "function",
         "function": {"name": "time__now", "arguments": "{}"}},
        {"id": "call_b", "type": "function",
         "function": {"name": "math__eval", "arguments": '{"expression": "1+1"}'}},
    ]  # fmt: skip
    if index is not None:
        for delta in deltas:
            delta["index"] = index
    chunks = chat_chunks([], tool_calls=deltas, finish_reason="tool_calls")
    async with llm() as (fake, client):
        fake.script("chat/completions", sse_response(sse_body(chunks)))
        async with client.stream_chat(MESSAGES) as stream:
            assert [delta async for delta in stream] == []
    assert stream.reply is not None
    assert [(c.id, c.name, c.arguments) for c in stream.reply.tool_calls] == [
        ("call_a", "time__now", {}),
        ("call_b", "math__eval", {"expression": "1+1"}),
    ]


async def test_a_complete_stream_leaves_its_connection_for_reuse() -> None:
    async with llm() as (_, client):
        async with client.stream_chat(MESSAGES) as stream:
            await stream.collect()
        await settle()
        assert serving_connections() == 1  # kept alive in the pool
    await settle()
    assert serving_connections() == 0


async def test_leaving_a_stream_early_closes_its_connection() -> None:
    async with llm() as (fake, client):
        fake.script("chat/completions", sse_response(sse_body(chat_chunks(["a", "b", "c"]))))
        async with client.stream_chat(MESSAGES) as stream:
            async for delta in stream:
                assert delta == "a"
                break
        assert stream.reply is None
        await settle()
        assert serving_connections() == 0  # the server saw the connection close
        assert (await client.chat(MESSAGES)).text == "Hello!"  # the client goes on
    gc.collect()  # no httpx generator is left for the collector (that would warn)


async def test_cancelling_a_stream_closes_its_connection() -> None:
    async with llm() as (fake, client):
        fake.script("chat/completions", sse_response(sse_body(chat_chunks(["a", "b", "c"]))))
        with trio.CancelScope() as scope:
            async with client.stream_chat(MESSAGES) as stream:
                async for _ in stream:
                    scope.cancel()
                    await trio.lowlevel.checkpoint()
        assert scope.cancelled_caught
        await settle()
        assert serving_connections() == 0
    gc.collect()


async def test_a_stream_cut_in_the_middle_is_a_bad_response() -> None:
    chunks = sse_body(chat_chunks(["a", "b"], finish_reason=None), done=False)
    async with llm() as (fake, client):
        fake.script("chat/completions", sse_response(chunks, cut=True))
        deltas: list[str] = []

        async def read() -> None:
            async with client.stream_chat(MESSAGES) as stream:
                async for delta in stream:
                    deltas.append(delta)

        with pytest.raises(LLMError) as caught:
            await read()
        await settle()
        assert serving_connections() == 0
    assert caught.value.code == "LLM_BAD_RESPONSE"
    assert "cut short" in caught.value.message
    assert deltas == ["a", "b"]


async def test_a_stream_cut_inside_an_event_is_a_bad_response() -> None:
    chunks = [*sse_body(chat_chunks(["a"], finish_reason=None), done=False), b'data: {"ch']
    async with llm() as (fake, client):
        fake.script("chat/completions", sse_response(chunks, cut=True))
        async with client.stream_chat(MESSAGES) as stream:
            await fails("LLM_BAD_RESPONSE", stream.collect())


async def test_a_stream_ending_without_done_or_finish_is_a_bad_response() -> None:
    chunks = sse_body(chat_chunks(["a"], finish_reason=None), done=False)
    async with llm() as (fake, client):
        fake.script("chat/completions", sse_response(chunks))
        async with client.stream_chat(MESSAGES) as stream:
            error = await fails("LLM_BAD_RESPONSE", stream.collect())
            # the failure sticks
            await fails("LLM_BAD_RESPONSE", stream.__anext__())
    assert "before [DONE]" in error.message


async def test_a_finish_reason_without_done_completes_the_stream() -> None:
    async with llm() as (fake, client):
        fake.script("chat/completions", sse_response(sse_body(chat_chunks(["ok"]), done=False)))
        async with client.stream_chat(MESSAGES) as stream:
            assert (await stream.collect()).text == "ok"


@pytest.mark.parametrize(
    "event",
    ["{not json", '"a string"', '{"error": {"message": "overloaded"}}'],
)
async def test_a_bad_stream_event_is_a_bad_response(event: str) -> None:
    async with llm() as (fake, client):
        fake.script("chat/completions", sse_response(sse_body([event])))
        async with client.stream_chat(MESSAGES) as stream:
            await fails("LLM_BAD_RESPONSE", stream.collect())


async def test_a_json_answer_to_a_stream_request_is_one_delta() -> None:
    async with llm() as (fake, client):
        fake.script("chat/completions", chat_json("whole"))
        async with client.stream_chat(MESSAGES) as stream:
            assert [delta async for delta in stream] == ["whole"]
    assert stream.reply is not None
    assert stream.reply.text == "whole"


async def test_a_stream_request_is_retried_and_fails_like_the_others(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with llm() as (fake, client):
        fake.script(
            "chat/completions", server_error(500), sse_response(sse_body(chat_chunks(["x"])))
        )
        async with client.stream_chat(MESSAGES) as stream:
            assert (await stream.collect()).text == "x"
        fake.script("chat/completions", json_answer({"error": "bad"}, status=400))
        with pytest.raises(LLMError) as caught:
            async with client.stream_chat(MESSAGES):
                pass
    assert caught.value.code == "LLM_HTTP_ERROR"
    assert caught.value.status == 400
    assert len(fake.requests) == 3


async def test_a_stream_waits_timeout_s_for_its_head(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with llm(timeout_s=4.0) as (fake, client):
        fake.script("chat/completions", hang())
        started = trio.current_time()
        with pytest.raises(LLMError) as caught:
            async with client.stream_chat(MESSAGES):
                pass
        assert trio.current_time() - started == pytest.approx(4.0, abs=1e-9)
    assert caught.value.code == "LLM_TIMEOUT"


async def test_a_stream_must_be_used_inside_its_block() -> None:
    async with llm() as (_, client):
        stream = client.stream_chat(MESSAGES)
        with pytest.raises(RuntimeError):
            await stream.__anext__()
        async with stream:
            pass
        with pytest.raises(RuntimeError):
            await stream.__aenter__()
        with pytest.raises(RuntimeError, match="closed"):
            await stream.__anext__()


# --- retries --------------------------------------------------------------------------------


async def test_5xx_is_retried_with_growing_jittered_backoff(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with llm(max_retries=3, backoff_s=0.5) as (fake, client):
        fake.script("chat/completions", server_error(500), server_error(503))
        reply = await client.chat(MESSAGES)
    assert reply.text == "Hello!"
    assert len(fake.requests) == 3
    first, second = (b - a for a, b in zip(fake.times, fake.times[1:], strict=False))
    assert 0 <= first <= 0.5
    assert 0 <= second <= 1.0


async def test_backoff_is_capped(autojump_clock: trio.testing.MockClock) -> None:
    async with llm(max_retries=4, backoff_s=10.0, backoff_max_s=2.0) as (fake, client):
        fake.script("chat/completions", *[server_error()] * 4)
        await client.chat(MESSAGES)
    gaps = [b - a for a, b in zip(fake.times, fake.times[1:], strict=False)]
    assert len(gaps) == 4
    assert all(0 <= gap <= 2.0 for gap in gaps)


async def test_retry_after_in_seconds_is_honoured(autojump_clock: trio.testing.MockClock) -> None:
    async with llm() as (fake, client):
        fake.script("chat/completions", rate_limited("3"))
        assert (await client.chat(MESSAGES)).text == "Hello!"
    assert len(fake.requests) == 2
    assert fake.times[1] - fake.times[0] >= 3.0


async def test_retry_after_as_an_http_date_is_honoured(
    autojump_clock: trio.testing.MockClock,
) -> None:
    when = email.utils.format_datetime(datetime.now(UTC) + timedelta(seconds=20), usegmt=True)
    async with llm() as (fake, client):
        fake.script("chat/completions", rate_limited(when))
        await client.chat(MESSAGES)
    assert fake.times[1] - fake.times[0] >= 18.0


async def test_exhausted_rate_limits_fail_with_the_server_advice(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with llm(max_retries=2) as (fake, client):
        fake.script("chat/completions", *[rate_limited("1")] * 3)
        error = await fails("LLM_RATE_LIMITED", client.chat(MESSAGES))
    assert len(fake.requests) == 3
    assert error.status == 429
    assert error.retry_after_s == 1.0
    assert "Rate limit reached" in error.message


async def test_a_retry_after_beyond_the_cap_is_not_waited_for() -> None:
    async with llm(retry_after_max_s=60.0) as (fake, client):
        fake.script("chat/completions", rate_limited("3600"))
        error = await fails("LLM_RATE_LIMITED", client.chat(MESSAGES))
    assert len(fake.requests) == 1
    assert error.retry_after_s == 3600.0


async def test_exhausted_server_errors_fail_with_the_status(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with llm(max_retries=1) as (fake, client):
        fake.script("chat/completions", server_error(503), server_error(503))
        error = await fails("LLM_HTTP_ERROR", client.chat(MESSAGES))
    assert error.status == 503
    assert len(fake.requests) == 2


@pytest.mark.parametrize("status", [400, 401, 403, 404, 422])
async def test_other_client_errors_fail_at_once(status: int) -> None:
    async with llm(max_retries=3) as (fake, client):
        fake.script("chat/completions", json_answer({"error": "no good"}, status=status))
        error = await fails("LLM_HTTP_ERROR", client.chat(MESSAGES))
    assert len(fake.requests) == 1
    assert error.status == status
    assert f"HTTP {status}" in error.message
    assert "no good" in error.message


class CountingTransport(httpx.AsyncBaseTransport):
    """httpx's own transport, counting the requests it is given."""

    def __init__(self) -> None:
        self.inner = httpx.AsyncHTTPTransport()
        self.requests = 0

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        self.requests += 1
        return await self.inner.handle_async_request(request)

    async def aclose(self) -> None:
        await self.inner.aclose()


def closed_port_url() -> str:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}/v1"


async def test_connect_errors_are_retried_then_reported(
    autojump_clock: trio.testing.MockClock,
) -> None:
    transport = CountingTransport()
    settings = LLMSettings(base_url=closed_port_url(), max_retries=2)
    async with LLMClient(settings, transport=transport) as client:
        error = await fails("LLM_CONNECT_ERROR", client.chat(MESSAGES))
        assert transport.requests == 3
        # an unreachable host is not asked again through Chat Completions
        await fails("LLM_CONNECT_ERROR", client.generate(BUNDLE))
        assert transport.requests == 6
    assert "127.0.0.1" in error.message


# --- timeouts and malformed answers ------------------------------------------------------------


async def test_a_hang_times_out_after_exactly_timeout_s_without_retry(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with llm(timeout_s=7.5, max_retries=3) as (fake, client):
        fake.script("chat/completions", hang(), hang())
        started = trio.current_time()
        error = await fails("LLM_TIMEOUT", client.chat(MESSAGES))
        assert trio.current_time() - started == pytest.approx(7.5, abs=1e-9)
        assert len(fake.requests) == 1
        started = trio.current_time()
        await fails("LLM_TIMEOUT", client.chat(MESSAGES, timeout_s=0.25))
        assert trio.current_time() - started == pytest.approx(0.25, abs=1e-9)
    assert "7.5 s" in error.message


async def test_generate_does_not_ask_twice_after_a_timeout(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with llm(timeout_s=2.0) as (fake, client):
        fake.script("responses", hang())
        await fails("LLM_TIMEOUT", client.generate(BUNDLE))
    assert fake.paths() == ["/v1/responses"]


async def test_malformed_json_is_a_bad_response() -> None:
    async with llm() as (fake, client):
        fake.script("chat/completions", malformed_json())
        await fails("LLM_BAD_RESPONSE", client.chat(MESSAGES))
        fake.script("responses", malformed_json())
        await fails("LLM_BAD_RESPONSE", client.responses("x"))
    assert len(fake.requests) == 2


async def test_a_body_cut_short_is_a_bad_response() -> None:
    cut = Response(200, b"", {"content-type": "application/json"}, chunks=[b'{"cho'], cut=True)
    async with llm() as (fake, client):
        fake.script("chat/completions", cut)
        error = await fails("LLM_BAD_RESPONSE", client.chat(MESSAGES))
    assert "cut short" in error.message


# --- the API key never shows ------------------------------------------------------------------


def echo_authorization(status: int) -> Any:
    def answer(request: Request) -> Response:
        return json_answer(
            {"error": f"invalid credentials: {request.headers.get('authorization')}"},
            status=status,
        )

    return answer


async def test_the_key_never_appears_in_errors_reprs_or_logs(
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    autojump_clock: trio.testing.MockClock,
) -> None:
    lines = io.StringIO()
    logger = structlog.wrap_logger(
        structlog.PrintLogger(lines),
        processors=[structlog.processors.add_log_level, structlog.processors.JSONRenderer()],
        wrapper_class=structlog.make_filtering_bound_logger(logging.DEBUG),
    )
    monkeypatch.setattr(transport_module, "_log", logger)
    caplog.set_level(logging.DEBUG)
    errors: list[LLMError] = []
    async with llm(api_key=KEY, max_retries=1) as (fake, client):
        fake.script("chat/completions", echo_authorization(401))
        fake.script("chat/completions", echo_authorization(500), echo_authorization(500))
        fake.script("responses", echo_authorization(403))
        fake.script("chat/completions", echo_authorization(429), echo_authorization(429))
        for _ in range(2):
            with pytest.raises(LLMError) as caught:
                await client.chat(MESSAGES)
            errors.append(caught.value)
        with pytest.raises(LLMError) as caught:
            await client.generate(BUNDLE)
        errors.append(caught.value)
        texts = [repr(client), repr(client.settings), str(client.settings)]
    assert [e.code for e in errors] == ["LLM_HTTP_ERROR", "LLM_HTTP_ERROR", "LLM_RATE_LIMITED"]
    assert all("invalid credentials: Bearer ********" in e.message for e in errors)
    texts += [str(e) for e in errors] + [repr(e) for e in errors] + [repr(e.args) for e in errors]
    logged = lines.getvalue()
    assert "llm request failed, retrying" in logged  # the retries were logged ...
    for text in [*texts, logged, caplog.text]:
        assert KEY not in text  # ... and nothing shows the key
    assert all(r.headers["authorization"] == f"Bearer {KEY}" for r in fake.requests)


# --- nothing leaks --------------------------------------------------------------------------


async def test_failures_and_cancellations_leave_no_task_or_connection(
    autojump_clock: trio.testing.MockClock,
) -> None:
    await settle()
    before = len(live_tasks())
    async with llm(timeout_s=5.0, max_retries=0) as (fake, client):

        async def chat() -> None:
            with pytest.raises(LLMError):
                await client.chat(MESSAGES)

        async def stream(early: bool) -> None:
            async with client.stream_chat(MESSAGES) as chat_stream:
                async for _ in chat_stream:
                    if early:
                        break

        fake.script("chat/completions", malformed_json(), server_error(500), rate_limited("1"))
        async with trio.open_nursery() as nursery:  # every call has ended when this does
            for _ in range(3):
                nursery.start_soon(chat)
        fake.script(
            "chat/completions",
            sse_response(sse_body(chat_chunks(["a"], finish_reason=None), done=False), cut=True),
            sse_response(sse_body(chat_chunks(["a", "b"]))),
            hang(),
        )
        with pytest.raises(LLMError):
            await stream(early=False)
        await stream(early=True)
        with trio.move_on_after(1.0) as scope:  # cancelled while waiting for the head
            await stream(early=False)
        assert scope.cancelled_caught
        assert len(fake.requests) == 6
    await settle()
    assert serving_connections() == 0
    assert len(live_tasks()) == before
    gc.collect()


async def test_a_hung_request_cancelled_from_outside_frees_its_connection(
    autojump_clock: trio.testing.MockClock,
) -> None:
    transport = httpx.AsyncHTTPTransport()
    async with llm(transport=transport, timeout_s=60.0) as (fake, client):
        fake.script("chat/completions", hang())
        with trio.move_on_after(2.0) as scope:
            await client.chat(MESSAGES)
        assert scope.cancelled_caught
        # the pool holds no connection: the cancelled one was closed, not kept
        assert transport._pool.connections == []


# --- more edges -----------------------------------------------------------------------------


class _StallingStream(httpx.AsyncByteStream):
    """The real body from the socket, then silence instead of its end."""

    def __init__(self, inner: httpx.AsyncByteStream) -> None:
        self.inner = inner

    async def __aiter__(self) -> AsyncIterator[bytes]:
        async for chunk in self.inner:
            yield chunk
        await trio.sleep_forever()

    async def aclose(self) -> None:
        await self.inner.aclose()


class StallingTransport(httpx.AsyncBaseTransport):
    """httpx's transport, but every body stalls after its last byte (a server that sends
    part of an answer and then goes quiet)."""

    def __init__(self) -> None:
        self.inner = httpx.AsyncHTTPTransport()

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        response = await self.inner.handle_async_request(request)
        assert isinstance(response.stream, httpx.AsyncByteStream)
        return httpx.Response(
            response.status_code,
            headers=response.headers,
            stream=_StallingStream(response.stream),
            extensions=response.extensions,
        )

    async def aclose(self) -> None:
        await self.inner.aclose()


async def test_a_stream_that_goes_quiet_times_out_after_timeout_s(
    autojump_clock: trio.testing.MockClock,
) -> None:
    chunks = sse_body(chat_chunks(["a", "b"], finish_reason=None), done=False)
    async with llm(transport=StallingTransport(), timeout_s=3.0) as (fake, client):
        fake.script("chat/completions", sse_response(chunks))
        deltas: list[str] = []

        async def read() -> None:
            async with client.stream_chat(MESSAGES) as stream:
                async for delta in stream:
                    deltas.append(delta)

        started = trio.current_time()
        error = await fails("LLM_TIMEOUT", read())
        assert trio.current_time() - started == pytest.approx(3.0, abs=1e-9)
    assert deltas == ["a", "b"]
    assert "sent nothing for 3 s" in error.message
    gc.collect()


async def test_a_body_that_goes_quiet_times_out(autojump_clock: trio.testing.MockClock) -> None:
    async with llm(transport=StallingTransport(), timeout_s=2.0) as (_, client):
        await fails("LLM_TIMEOUT", client.chat(MESSAGES))
        async with client.stream_chat(MESSAGES) as stream:  # SSE: [DONE] ends it anyway
            assert (await stream.collect()).text == "Hello!"
    gc.collect()


async def test_a_stream_cut_after_its_finish_reason_is_complete() -> None:
    chunks = sse_body(chat_chunks(["fine"]), done=False)
    async with llm() as (fake, client):
        fake.script("chat/completions", sse_response(chunks, cut=True))
        fake.script("chat/completions", sse_response(sse_body(chat_chunks(["too"])), cut=True))
        for text in ("fine", "too"):
            async with client.stream_chat(MESSAGES) as stream:
                assert (await stream.collect()).text == text
                assert stream.stream_id in repr(stream)


async def test_only_the_first_choice_is_streamed() -> None:
    other = {"choices": [{"index": 1, "delta": {"content": "ignored"}, "finish_reason": None}]}
    chunks = [chat_chunks(["x"])[0], other, *chat_chunks(["y"])[1:]]
    async with llm() as (fake, client):
        fake.script("chat/completions", sse_response(sse_body(chunks)))
        async with client.stream_chat(MESSAGES) as stream:
            assert [delta async for delta in stream] == ["y"]


@pytest.mark.parametrize(
    ("answer", "code"),
    [
        (malformed_json(), "LLM_BAD_RESPONSE"),
        (json_answer({"choices": []}), "LLM_BAD_RESPONSE"),
        (
            Response(200, b"", {"content-type": "application/json"}, chunks=[b"{"], cut=True),
            "LLM_BAD_RESPONSE",
        ),
    ],
)
async def test_a_bad_json_answer_to_a_stream_request_fails_on_entry(
    answer: Response, code: str
) -> None:
    async with llm() as (fake, client):
        fake.script("chat/completions", answer)
        with pytest.raises(LLMError) as caught:
            async with client.stream_chat(MESSAGES):
                pass
    assert caught.value.code == code


@pytest.mark.parametrize(
    ("header", "seconds"),
    [
        ("soon", None),
        ("nan", None),
        ("-5", 0.0),
        ("1.5", 1.5),
        ("Wed, 21 Oct 2015 07:28:00 GMT", 0.0),  # in the past
        ("Wed, 21 Oct 2015 07:28:00 -0000", 0.0),  # a date without a zone
    ],
)
def test_retry_after_values(header: str, seconds: float | None) -> None:
    assert retry_after(header) == seconds


async def test_a_retry_after_that_does_not_parse_falls_back_to_backoff(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with llm(max_retries=1, backoff_s=0.25) as (fake, client):
        fake.script("chat/completions", rate_limited("soon"), rate_limited(None))
        error = await fails("LLM_RATE_LIMITED", client.chat(MESSAGES))
    assert error.retry_after_s is None
    assert 0 <= fake.times[1] - fake.times[0] <= 0.25


@pytest.mark.parametrize(
    "body",
    [
        ["a list"],
        {"output": [{"type": "message", "content": [{"type": "reasoning_text", "text": "hm"}]}]},
    ],
)
async def test_responses_shapes_without_an_answer(body: Any) -> None:
    async with llm() as (fake, client):
        fake.script("responses", json_answer(body))
        if isinstance(body, list):
            await fails("LLM_BAD_RESPONSE", client.responses("x"))
        else:
            assert (await client.responses("x")).text == ""


def test_a_client_needs_settings() -> None:
    with pytest.raises(LLMError) as caught:
        LLMClient({"base_url": "http://x"})  # type: ignore[arg-type]
    assert caught.value.code == "LLM_INVALID_REQUEST"
