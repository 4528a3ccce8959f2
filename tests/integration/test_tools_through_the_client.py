"""The pieces together: a kernel's broker and built-in capabilities, the tool orchestrator,
and the LLM client talking to a real OpenAI-compatible endpoint on loopback."""

from __future__ import annotations

import json

from httpserver import Request, Response
from openai_server import chat_completion, serve_openai, tool_call

from loomk import ToolOrchestrator
from loomk.llm import LLMClient, LLMSettings
from loomk.testing import open_test_kernel


async def test_a_model_uses_math_eval_and_time_now_then_answers() -> None:
    def final(request: Request) -> Response:
        results = [m for m in request.json()["messages"] if m.get("role") == "tool"]
        values = {m["tool_call_id"]: json.loads(m["content"]) for m in results}
        answer = f"6*7 is {values['c1']['value']}; zone {values['c2']['timezone']}"
        return Response.json_body(chat_completion(answer))

    async with serve_openai() as fake:
        fake.script(
            "chat/completions",
            Response.json_body(
                chat_completion(
                    None,
                    tool_calls=[
                        tool_call("math__eval", {"expression": "6*7"}, "c1"),
                        tool_call("time__now", {"timezone": "Asia/Tokyo"}, "c2"),
                    ],
                )
            ),
            final,
        )
        async with (
            open_test_kernel() as kernel,
            LLMClient(LLMSettings(base_url=fake.base_url, model="m")) as client,
        ):
            orchestrator = ToolOrchestrator(kernel.broker, client.chat_call)
            answer = await orchestrator.run("What is 6*7, and what time is it in Tokyo?")
        assert answer.text == "6*7 is 42; zone Asia/Tokyo"
        assert [r.ok for r in answer.tool_results] == [True, True]
        assert orchestrator.stats().tool_calls == 2
        first = fake.requests[0].json()
        offered = {tool["function"]["name"] for tool in first["tools"]}
        assert {"math__eval", "time__now", "weather__get", "web__search"} <= offered
        assert "llm__generate" not in offered  # a model is not handed a tool that is a model
        assert first["model"] == "m"
        assert kernel.broker.stats().capability("math.eval").ok == 1


async def test_the_model_capabilities_can_be_offered_when_asked() -> None:
    async with serve_openai() as fake:
        async with (
            open_test_kernel() as kernel,
            LLMClient(LLMSettings(base_url=fake.base_url, model="m")) as client,
        ):
            await ToolOrchestrator(kernel.broker, client.chat_call, exclude=()).run("hi")
        offered = {tool["function"]["name"] for tool in fake.requests[0].json()["tools"]}
        assert "llm__generate" in offered


async def test_a_tool_that_was_not_offered_is_never_run() -> None:
    async with serve_openai() as fake:
        fake.script(
            "chat/completions",
            Response.json_body(
                chat_completion(None, tool_calls=[tool_call("llm__generate", {"input": "x"})])
            ),
        )
        async with (
            open_test_kernel() as kernel,
            LLMClient(LLMSettings(base_url=fake.base_url, model="m")) as client,
        ):
            answer = await ToolOrchestrator(kernel.broker, client.chat_call).run("hi")
            assert "llm.generate" not in kernel.broker.stats().capabilities  # never saw it
        assert [r.code for r in answer.tool_results] == ["PROVIDER_UNAVAILABLE"]
