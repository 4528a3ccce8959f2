"""``llm.generate`` through a real broker over a scripted ``generate`` function: the request
the model client receives (Loom's ``llm.generate`` payload, normalised), the output it
gives back, and the error codes for bad payloads and failing clients.
"""

from __future__ import annotations

import itertools
from typing import Any

import pytest

from loomk.actions import (
    ActionBroker,
    ActionCall,
    ActionFailure,
    ActionResult,
    ActionStatus,
    ErrorCode,
)
from loomk.actions.providers import LLMGenerateProvider
from loomk.errors import CapabilityError

_ids = itertools.count()
REPLY = {"text": "Hello!", "model": "tiny-1", "provider": "chat.completions", "usage": None}
EMPTY_BUNDLE: dict[str, Any] = {
    "system": "",
    "instructions": "",
    "tools_json_schema": None,
    "context_docs": [],
    "history": [],
}
DEFAULT_BUDGET = {"max_input_tokens": 2048, "max_output_tokens": 512}


class ScriptedModel:
    """A ``generate`` function that records requests and answers (or raises) as told."""

    def __init__(self, reply: Any = None, error: BaseException | None = None) -> None:
        self.reply = dict(REPLY) if reply is None else reply
        self.error = error
        self.requests: list[dict[str, Any]] = []

    async def __call__(self, request: dict[str, Any]) -> dict[str, Any]:
        self.requests.append(request)
        if self.error is not None:
            raise self.error
        reply: dict[str, Any] = self.reply
        return reply


class CodedError(Exception):
    def __init__(self, message: str, code: object) -> None:
        super().__init__(message)
        self.code = code


async def generate(
    model: ScriptedModel, payload: Any, headers: dict[str, str] | None = None
) -> ActionResult:
    broker = ActionBroker(max_retries=0)
    broker.register(LLMGenerateProvider(model))
    call = ActionCall.with_args(f"g{next(_ids)}", "llm.generate", payload, headers=headers or {})
    return await broker.invoke(call)


def assert_failed(result: ActionResult, code: str, fragment: str = "") -> None:
    assert result.status is ActionStatus.ACTION_ERROR, result
    assert result.code == code, result
    assert result.error is not None
    assert fragment in result.error.message, result.error.message


# --- requests and replies ----------------------------------------------------------------


async def test_input_alone_becomes_the_instructions_of_a_bundle() -> None:
    model = ScriptedModel()
    result = await generate(model, {"input": "Say hello"})
    assert result.ok, result
    assert result.json() == REPLY
    (request,) = model.requests
    assert request["bundle"] == {**EMPTY_BUNDLE, "instructions": "Say hello"}
    assert request["budget"] == DEFAULT_BUDGET
    assert request["stream"] is False


async def test_a_bundle_wins_over_input_and_its_missing_fields_get_defaults() -> None:
    model = ScriptedModel()
    bundle = {"system": "Be brief.", "instructions": "Summarise", "history": ["hi", "hello"]}
    result = await generate(model, {"input": "ignored", "bundle": bundle, "stream": True})
    assert result.ok, result
    (request,) = model.requests
    assert request["bundle"] == {**EMPTY_BUNDLE, **bundle}
    assert request["stream"] is True


async def test_a_full_bundle_and_budget_pass_through_unchanged() -> None:
    model = ScriptedModel()
    bundle = {
        "system": "S",
        "instructions": "I",
        "tools_json_schema": '{"type": "object"}',
        "context_docs": ["doc 1", "doc 2"],
        "history": ["h"],
    }
    budget = {"max_input_tokens": 64, "max_output_tokens": 16}
    await generate(model, {"bundle": bundle, "budget": budget})
    assert model.requests[0]["bundle"] == bundle
    assert model.requests[0]["budget"] == budget


async def test_a_partial_budget_is_completed_with_loom_defaults() -> None:
    model = ScriptedModel()
    await generate(model, {"input": "x", "budget": {"max_output_tokens": 100}})
    assert model.requests[0]["budget"] == {"max_input_tokens": 2048, "max_output_tokens": 100}


async def test_the_output_has_exactly_the_four_loom_fields() -> None:
    model = ScriptedModel(reply={"text": "ok", "usage": {"total_tokens": 3}, "raw": {"x": 1}})
    result = await generate(model, {"input": "x"})
    assert result.json() == {
        "text": "ok",
        "model": None,
        "provider": None,
        "usage": {"total_tokens": 3},
    }


async def test_header_overrides_reach_the_client_as_loom_reads_them() -> None:
    model = ScriptedModel()
    headers = {
        "model": "big-2",
        "base_url": "http://127.0.0.1:9/v1",
        "temperature": "0.25",
        "request_timeout_ms": "1500",
        "unrelated": "x",
    }
    await generate(model, {"input": "x"}, headers)
    assert model.requests[0]["overrides"] == {
        "model": "big-2",
        "base_url": "http://127.0.0.1:9/v1",
        "temperature": 0.25,
        "request_timeout_ms": 1500,
    }


async def test_unparsable_overrides_are_ignored() -> None:
    model = ScriptedModel()
    headers = {"model": "", "temperature": "warm", "request_timeout_ms": "-5"}
    await generate(model, {"input": "x"}, headers)
    assert model.requests[0]["overrides"] == {}


# --- bad payloads ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "payload",
    [
        b"{}",
        b'{"budget": {"max_input_tokens": 10}}',
        b'{"stream": true}',
        b'{"input": 5}',
        b'{"bundle": "hello"}',
        b'{"bundle": {"history": "not a list"}}',
        b'{"bundle": {"context_docs": [1]}}',
        b'{"input": "x", "budget": {"max_output_tokens": 0}}',
        b'{"input": "x", "budget": {"max_output_tokens": 1.5}}',
        b'{"input": "x", "stream": "yes"}',
        b"[]",
        b"not json",
        b"\xff",
    ],
)
async def test_a_bad_payload_is_invalid_params_and_the_model_is_not_called(
    payload: bytes,
) -> None:
    model = ScriptedModel()
    result = await generate(model, payload)
    assert_failed(result, ErrorCode.INVALID_PARAMS)
    assert model.requests == []


async def test_neither_input_nor_bundle_says_what_is_missing() -> None:
    result = await generate(ScriptedModel(), {"stream": False})
    assert_failed(result, ErrorCode.INVALID_PARAMS, "input")


# --- failing clients ---------------------------------------------------------------------


async def test_a_client_error_with_a_code_keeps_its_code() -> None:
    model = ScriptedModel(error=CodedError("slow down", "RATE_LIMITED"))
    result = await generate(model, {"input": "x"})
    assert_failed(result, "RATE_LIMITED", "slow down")


@pytest.mark.parametrize(
    "error",
    [
        RuntimeError("connection reset"),
        CodedError("connection reset", 429),
        CodedError("connection reset", ""),
    ],
)
async def test_other_client_errors_are_llm_error(error: Exception) -> None:
    result = await generate(ScriptedModel(error=error), {"input": "x"})
    assert_failed(result, "LLM_ERROR", "connection reset")


async def test_an_error_without_a_message_is_named_by_its_type() -> None:
    result = await generate(ScriptedModel(error=TimeoutError()), {"input": "x"})
    assert_failed(result, "LLM_ERROR", "TimeoutError")


async def test_an_action_failure_keeps_its_code_and_retryability() -> None:
    failure = ActionFailure("LLM_OVERLOADED", "busy", retryable=True)
    result = await generate(ScriptedModel(error=failure), {"input": "x"})
    assert result.status is ActionStatus.ACTION_RETRYABLE
    assert result.code == "LLM_OVERLOADED"


@pytest.mark.parametrize(
    "reply",
    [
        ["not", "a", "dict"],
        {"model": "m"},
        {"text": 5},
        {"text": "ok", "usage": {"bad": object()}},
    ],
)
async def test_a_malformed_reply_is_llm_error(reply: Any) -> None:
    result = await generate(ScriptedModel(reply=reply), {"input": "x"})
    assert_failed(result, "LLM_ERROR")


def test_the_descriptor_and_a_non_callable() -> None:
    descriptor = LLMGenerateProvider(ScriptedModel()).descriptor
    assert descriptor.key == "llm.generate:0.1.0"
    schema = descriptor.schema()
    assert schema is not None
    assert set(schema["properties"]) == {"input", "bundle", "budget", "stream"}
    with pytest.raises(CapabilityError):
        LLMGenerateProvider("not a function")  # type: ignore[arg-type]
