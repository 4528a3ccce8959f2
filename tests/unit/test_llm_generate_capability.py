"""``llm.generate`` end to end: a real ActionBroker, ``LLMGenerateProvider`` over
``client_generate(client)``, and the OpenAI-compatible fake on loopback. Loom's payloads
for the capability give Loom's output shape; per-call header overrides reach the wire;
every client failure becomes an ActionResult carrying the LLMError's code.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest
import trio
import trio.testing
from httpserver import Response
from openai_server import (
    MODEL,
    USAGE,
    FakeOpenAI,
    chat_chunks,
    hang,
    malformed_json,
    not_found,
    rate_limited,
    serve_openai,
    sse_body,
    sse_response,
)

from loomk.actions import ActionBroker, ActionCall, ActionResult, ActionStatus
from loomk.actions.providers import LLMGenerateProvider
from loomk.llm.client import LLMClient, LLMSettings, client_generate

KEY = "sk-capability-SECRET-77"
_ids = itertools.count()


@asynccontextmanager
async def generate_capability(
    **settings: Any,
) -> AsyncIterator[tuple[FakeOpenAI, ActionBroker]]:
    """A broker whose ``llm.generate`` asks a fake server through a real client."""
    async with serve_openai() as fake:
        options: dict[str, Any] = {"base_url": fake.base_url, "max_retries": 1, **settings}
        async with LLMClient(LLMSettings(**options)) as client:
            broker = ActionBroker(max_retries=0)
            broker.register(LLMGenerateProvider(client_generate(client)))
            yield fake, broker


async def invoke(
    broker: ActionBroker, payload: Any, headers: dict[str, str] | None = None
) -> ActionResult:
    call = ActionCall.with_args(f"gen{next(_ids)}", "llm.generate", payload, headers=headers or {})
    return await broker.invoke(call)


def output(result: ActionResult) -> Any:
    assert result.ok, result
    return json.loads(result.output)


def assert_failed(result: ActionResult, code: str) -> str:
    assert result.status is ActionStatus.ACTION_ERROR, result
    assert result.code == code, result
    assert result.error is not None
    return result.error.message


async def test_an_input_becomes_the_user_turn_and_loom_output_comes_back() -> None:
    async with generate_capability() as (fake, broker):
        result = await invoke(broker, {"input": "Say hello"})
    assert output(result) == {
        "text": "Hello!",
        "model": MODEL,
        "provider": "responses",
        "usage": USAGE,
    }
    assert fake.bodies() == [
        {
            "model": "qwen2.5-0.5b-instruct",
            "input": "User:\nSay hello\n",
            "max_output_tokens": 512,
            "temperature": 0.7,
        }
    ]


async def test_a_bundle_and_budget_shape_the_request() -> None:
    payload = {
        "bundle": {
            "system": "Be brief.",
            "instructions": "Why?",
            "context_docs": ["fact"],
            "history": ["before"],
        },
        "budget": {"max_input_tokens": 1000, "max_output_tokens": 40},
    }
    async with generate_capability() as (fake, broker):
        fake.script("responses", not_found())
        result = await invoke(broker, payload)
    assert output(result)["provider"] == "chat.completions"
    responses_body, chat_body = fake.bodies()
    assert responses_body["input"] == (
        "System:\nBe brief.\n\nContext:\n- fact\n\nHistory:\n- before\n\nUser:\nWhy?\n"
    )
    assert responses_body["max_output_tokens"] == 40
    assert chat_body["messages"] == [
        {"role": "system", "content": "Be brief."},
        {"role": "system", "content": "Context:\n- fact\n"},
        {"role": "user", "content": "before"},
        {"role": "user", "content": "Why?"},
    ]
    assert chat_body["max_tokens"] == 40


async def test_headers_override_model_temperature_and_timeout_per_call(
    autojump_clock: trio.testing.MockClock,
) -> None:
    headers = {"model": "big-model", "temperature": "0.1", "request_timeout_ms": "1500"}
    async with generate_capability(api_key=KEY) as (fake, broker):
        assert output(await invoke(broker, {"input": "x"}, headers))["text"] == "Hello!"
        fake.script("responses", hang())
        started = trio.current_time()
        result = await invoke(broker, {"input": "x"}, headers)
        assert trio.current_time() - started == pytest.approx(1.5, abs=1e-9)
        assert_failed(result, "LLM_TIMEOUT")
        plain = output(await invoke(broker, {"input": "x"}))
    first, _, third = fake.bodies()
    assert (first["model"], first["temperature"]) == ("big-model", 0.1)
    assert (third["model"], third["temperature"]) == ("qwen2.5-0.5b-instruct", 0.7)
    assert plain["text"] == "Hello!"


async def test_a_base_url_header_sends_the_call_elsewhere_without_the_key() -> None:
    async with serve_openai() as other, generate_capability(api_key=KEY) as (fake, broker):
        result = await invoke(broker, {"input": "x"}, {"base_url": other.base_url + "/"})
        assert output(result)["text"] == "Hello!"
    assert fake.requests == []
    (request,) = other.requests
    assert request.path == "/v1/responses"
    assert "authorization" not in request.headers  # another origin never sees the key


async def test_a_base_url_header_on_the_same_origin_keeps_the_key() -> None:
    async with generate_capability(api_key=KEY) as (fake, broker):
        same_origin = fake.base_url.removesuffix("/v1") + "/v1/"
        result = await invoke(broker, {"input": "x"}, {"base_url": same_origin})
        assert output(result)["text"] == "Hello!"
    assert fake.requests[0].headers["authorization"] == f"Bearer {KEY}"


async def test_unparsable_override_headers_are_ignored() -> None:
    headers = {"model": "", "temperature": "warm", "request_timeout_ms": "-5", "api_key": "x"}
    async with generate_capability(api_key=KEY) as (fake, broker):
        assert output(await invoke(broker, {"input": "x"}, headers))["text"] == "Hello!"
    body = fake.bodies()[0]
    assert (body["model"], body["temperature"]) == ("qwen2.5-0.5b-instruct", 0.7)
    assert fake.requests[0].headers["authorization"] == f"Bearer {KEY}"


async def test_stream_true_streams_chat_completions() -> None:
    async with generate_capability() as (fake, broker):
        fake.script("chat/completions", sse_response(sse_body(chat_chunks(["Str", "eamed"]))))
        result = await invoke(broker, {"input": "x", "stream": True})
    assert output(result) == {
        "text": "Streamed",
        "model": MODEL,
        "provider": "chat.completions",
        "usage": None,
    }
    assert fake.paths() == ["/v1/chat/completions"]
    assert fake.bodies()[0]["stream"] is True


async def test_rate_limits_fail_the_call_with_their_code(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with generate_capability(max_retries=1) as (fake, broker):
        fake.script("responses", rate_limited("2"), rate_limited("2"))
        fake.script("chat/completions", rate_limited("2"), rate_limited("2"))
        result = await invoke(broker, {"input": "x"})
    assert "429" in assert_failed(result, "LLM_RATE_LIMITED")
    assert fake.paths() == ["/v1/responses"] * 2  # a rate limit is not dodged via chat


@pytest.mark.parametrize(
    ("script", "code"),
    [
        ({"responses": [malformed_json()]}, "LLM_BAD_RESPONSE"),
        (
            {"responses": [not_found()], "chat/completions": [Response.json_body({}, 400)]},
            "LLM_HTTP_ERROR",
        ),
        (
            {"responses": [not_found()], "chat/completions": [Response.json_body({"choices": []})]},
            "LLM_BAD_RESPONSE",
        ),
        (
            {
                "chat/completions": [
                    sse_response(sse_body(chat_chunks(["a"], finish_reason=None), done=False))
                ]
            },
            "LLM_BAD_RESPONSE",
        ),
    ],
)
async def test_each_failure_is_a_result_with_the_llm_code(
    script: dict[str, list[Response]], code: str
) -> None:
    payload: dict[str, Any] = {"input": "x"}
    if "responses" not in script:
        payload["stream"] = True
    async with generate_capability(max_retries=0) as (fake, broker):
        for path, answers in script.items():
            fake.script(path, *answers)
        result = await invoke(broker, payload)
    assert_failed(result, code)


async def test_an_unconfigured_endpoint_fails_the_call() -> None:
    async with LLMClient(LLMSettings(base_url="")) as client:
        broker = ActionBroker(max_retries=0)
        broker.register(LLMGenerateProvider(client_generate(client)))
        result = await invoke(broker, {"input": "x"})
    assert "LOOMK_LLM_BASE_URL" in assert_failed(result, "LLM_NOT_CONFIGURED")


async def test_the_key_never_reaches_the_result() -> None:
    def echo(request: Any) -> Response:
        return Response.json_body({"error": request.headers["authorization"]}, status=401)

    async with generate_capability(api_key=KEY) as (fake, broker):
        fake.script("responses", echo)
        fake.script("chat/completions", echo)
        result = await invoke(broker, {"input": "x"})
    message = assert_failed(result, "LLM_HTTP_ERROR")
    assert "Bearer ********" in message
    assert KEY not in repr(result)


async def test_bad_payloads_never_reach_the_model() -> None:
    async with generate_capability() as (fake, broker):
        result = await invoke(broker, {"budget": {"max_input_tokens": 0}, "input": "x"})
    assert result.status is ActionStatus.ACTION_ERROR
    assert fake.requests == []


async def test_the_client_code_wins_over_the_brokers_timeout_when_it_hangs(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """Same timeout for the call and the client: the client gives up first, with its code."""
    async with generate_capability(timeout_s=1.0) as (fake, broker):
        fake.script("responses", hang())
        call = ActionCall.with_args("g-hang", "llm.generate", {"input": "x"}, timeout_ms=1000)
        started = trio.current_time()
        result = await broker.invoke(call)
    assert_failed(result, "LLM_TIMEOUT")
    assert trio.current_time() - started < 1.0


async def test_a_retry_after_longer_than_the_call_reports_the_rate_limit(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with generate_capability(max_retries=3) as (fake, broker):
        fake.script("responses", rate_limited("2"))
        call = ActionCall.with_args("g-429", "llm.generate", {"input": "x"}, timeout_ms=1000)
        result = await broker.invoke(call)
    assert "429" in assert_failed(result, "LLM_RATE_LIMITED")
    assert len(fake.requests) == 1  # a retry that cannot fit is not waited for
