"""A model uses an MCP server's tool through the tool orchestrator: the tool is offered with
the server's input schema, the model's call runs on the server, the answer goes back."""

from __future__ import annotations

import json

from httpserver import Request, Response
from mcp_support import toolbox
from openai_server import chat_completion, serve_openai, tool_call

from loomk import Context, Event, ToolOrchestrator
from loomk.llm import LLMClient, LLMSettings
from loomk.mcp import open_mcp
from loomk.testing import ScriptedAgent, capture_events, open_test_kernel


async def test_a_model_calls_an_mcp_tool_through_the_orchestrator() -> None:
    def final(request: Request) -> Response:
        [result] = [m for m in request.json()["messages"] if m.get("role") == "tool"]
        answer = json.loads(result["content"])["result"]
        return Response.json_body(chat_completion(f"the server said: {answer}"))

    async with serve_openai() as fake:
        fake.script(
            "chat/completions",
            Response.json_body(
                chat_completion(
                    None, tool_calls=[tool_call("box--echo", {"text": "ho", "times": 3}, "c1")]
                )
            ),
            final,
        )
        async with (
            open_test_kernel() as kernel,
            open_mcp(kernel, [toolbox()]) as mcp,
            LLMClient(LLMSettings(base_url=fake.base_url, model="m")) as client,
        ):
            orchestrator = ToolOrchestrator(kernel.broker, client.chat_call, max_tools=128)
            answer = await orchestrator.run("Echo ho three times")
            assert mcp.stats().servers["box"].ok == 1
        assert answer.text == "the server said: ho ho ho"
        assert [r.ok for r in answer.tool_results] == [True]
        offered = {t["function"]["name"]: t["function"] for t in fake.requests[0].json()["tools"]}
        echo = offered["box--echo"]
        assert echo["description"] == "Echo the text back."
        assert echo["parameters"]["required"] == ["text"]
        assert set(echo["parameters"]["properties"]) == {"text", "times"}


async def test_an_agent_s_model_calls_an_mcp_tool_and_the_agent_answers_with_it() -> None:
    """The issue's case whole: an agent handles a user's query by asking its model (the
    OpenAI-compatible test server), which calls the MCP server's tool; the agent emits the
    answer the model wrote from the tool's result."""

    def final(request: Request) -> Response:
        [result] = [m for m in request.json()["messages"] if m.get("role") == "tool"]
        return Response.json_body(chat_completion(json.loads(result["content"])["result"]))

    async with serve_openai() as fake:
        fake.script(
            "chat/completions",
            Response.json_body(
                chat_completion(None, tool_calls=[tool_call("box--echo", {"text": "hi"}, "c1")])
            ),
            final,
        )
        async with (
            open_test_kernel() as kernel,
            open_mcp(kernel, [toolbox()]),
            LLMClient(LLMSettings(base_url=fake.base_url, model="m")) as client,
        ):
            orchestrator = ToolOrchestrator(kernel.broker, client.chat_call, max_tools=128)

            async def ask(ctx: Context, event: Event) -> None:
                answer = await orchestrator.run(event.payload.decode())
                await ctx.emit("chat.answer", Event("answer", answer.text.encode()))

            with capture_events(kernel.bus, "chat.answer") as answers:
                await kernel.spawn(ScriptedAgent("assistant", {"user.query": ask}))
                await kernel.bus.publish("in.assistant", Event("user.query", b"echo hi"))
                [answer] = await answers.wait_for(1)
    assert answer.payload == b"hi"
    assert answer.metadata["sender"] == "agent.assistant"
