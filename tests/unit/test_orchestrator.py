"""The tool orchestrator end to end: a real ActionBroker with real providers, and a model
that is a real HTTP endpoint on loopback speaking the OpenAI Chat Completions, OpenAI
Responses or Anthropic Messages wire format, answering with scripted responses per round.

Covers the request bodies of every round, parallel (and bounded) tool execution proved with
events rather than timing, result ordering, bad tool calls fed back as error results
(malformed arguments, unknown tools, raising and hanging providers), the round limit, stats,
and a failing model.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
import pytest
import trio
import trio.testing
from httpserver import Request, Response, Server, serve_http

from loomk import CapabilityError
from loomk.actions import (
    ActionBroker,
    ActionCall,
    ActionResult,
    ActionStatus,
    CapabilityDescriptor,
    ErrorCode,
    capability,
)
from loomk.actions.orchestrator import FinalAnswer, ModelCall, OrchestratorStats, ToolOrchestrator
from loomk.actions.tools import ToolStyle

PATHS = {"chat": "/v1/chat/completions", "responses": "/v1/responses", "anthropic": "/v1/messages"}


# --- the model: a scripted HTTP endpoint ----------------------------------------------------


@asynccontextmanager
async def scripted_model(
    style: ToolStyle, replies: list[dict[str, Any]], *, timeout: float | None = 10.0
) -> AsyncIterator[tuple[ModelCall, Server]]:
    """A model server answering each request with the next reply (404 on a wrong path, 500
    when the script is over), and a model callable POSTing to it with httpx.

    Tests on the autojump clock pass ``timeout=None``: the clock would jump to an httpx
    deadline whenever the loop waits on the socket.
    """
    path = PATHS[style]
    remaining = list(replies)

    async def handler(request: Request) -> Response:
        if request.method != "POST" or request.path != path:
            return Response.json_body({"error": f"no route {request.path}"}, status=404)
        if not remaining:
            return Response.json_body({"error": "script exhausted"}, status=500)
        return Response.json_body(remaining.pop(0))

    async with (
        serve_http(handler) as server,
        httpx.AsyncClient(base_url=server.url, timeout=timeout) as client,
    ):

        async def model(body: dict[str, Any]) -> dict[str, Any]:
            response = await client.post(path, json=body)
            response.raise_for_status()
            result: dict[str, Any] = response.json()
            return result

        yield model, server


def bodies(server: Server) -> list[dict[str, Any]]:
    """The request bodies the model received, in order."""
    return [request.json() for request in server.requests]


def chat_calls(*calls: tuple[str, str, Any]) -> dict[str, Any]:
    """A Chat Completions response asking for ``(id, tool name, arguments)`` calls."""
    tool_calls = [
        {
            "id": call_id,
            "type": "function",
            "function": {
                "name": name,
                "arguments": args if isinstance(args, str) else json.dumps(args),
            },
        }
        for call_id, name, args in calls
    ]
    message = {"role": "assistant", "content": None, "tool_calls": tool_calls}
    return {
        "id": "chatcmpl-1",
        "object": "chat.completion",
        "choices": [{"index": 0, "message": message, "finish_reason": "tool_calls"}],
    }


def chat_answer(text: str) -> dict[str, Any]:
    message = {"role": "assistant", "content": text}
    return {
        "id": "chatcmpl-2",
        "object": "chat.completion",
        "choices": [{"index": 0, "message": message, "finish_reason": "stop"}],
    }


def tool_messages(body: dict[str, Any]) -> list[dict[str, Any]]:
    """The ``role: tool`` messages of a Chat Completions request."""
    return [m for m in body["messages"] if m.get("role") == "tool"]


def tool_outputs(body: dict[str, Any]) -> dict[str, Any]:
    """tool_call_id -> decoded content of the tool messages of a chat request."""
    return {m["tool_call_id"]: json.loads(m["content"]) for m in tool_messages(body)}


# --- providers ------------------------------------------------------------------------------

WEATHER_SCHEMA = {
    "type": "object",
    "properties": {"city": {"type": "string"}},
    "required": ["city"],
}


def weather_broker() -> ActionBroker:
    broker = ActionBroker()

    @capability("weather.get", description="Current weather", schema=WEATHER_SCHEMA)
    async def weather(args: dict[str, Any]) -> Any:
        return {"city": args["city"], "temp_c": len(args["city"])}

    @capability("math.double")
    async def double(args: dict[str, Any]) -> Any:
        return {"value": args["x"] * 2}

    broker.register(weather)
    broker.register(double)
    return broker


class Recorder:
    """A provider that records every ActionCall it gets and answers with its payload."""

    def __init__(self, name: str) -> None:
        self.descriptor = CapabilityDescriptor(name)
        self.calls: list[ActionCall] = []

    async def invoke(self, call: ActionCall) -> ActionResult:
        self.calls.append(call)
        return ActionResult.success(call.id, {"echo": json.loads(call.payload)})


# --- the happy path in each wire format -----------------------------------------------------


async def test_chat_round_trip_runs_tools_and_feeds_results_back() -> None:
    broker = weather_broker()
    replies = [
        chat_calls(
            ("call_w", "weather__get", {"city": "Oslo"}),
            ("call_d", "math__double", {"x": 21}),
        ),
        chat_answer("Oslo is 4 C; double 21 is 42."),
    ]
    async with scripted_model("chat", replies) as (model, server):
        orchestrator = ToolOrchestrator(broker, model)
        answer = await orchestrator.run("Weather in Oslo? And double 21.")

    assert isinstance(answer, FinalAnswer)
    assert answer.text == "Oslo is 4 C; double 21 is 42."
    assert answer.rounds == 2
    assert not answer.exhausted
    assert answer.raw == replies[1]
    assert [(c.id, c.name, c.arguments) for c in answer.tool_calls] == [
        ("call_w", "weather__get", {"city": "Oslo"}),
        ("call_d", "math__double", {"x": 21}),
    ]
    assert [r.json() for r in answer.tool_results] == [{"city": "Oslo", "temp_c": 4}, {"value": 42}]

    first, second = bodies(server)
    assert first["messages"] == [{"role": "user", "content": "Weather in Oslo? And double 21."}]
    assert first["tool_choice"] == "auto"
    assert {t["function"]["name"]: t for t in first["tools"]} == {
        "math__double": {
            "type": "function",
            "function": {
                "name": "math__double",
                "description": "math.double",
                "parameters": {"type": "object", "properties": {}, "additionalProperties": True},
            },
        },
        "weather__get": {
            "type": "function",
            "function": {
                "name": "weather__get",
                "description": "Current weather",
                "parameters": WEATHER_SCHEMA,
            },
        },
    }
    # The refine turn: the conversation so far, the model's tool calls, then the results.
    assert second["messages"][0] == first["messages"][0]
    assistant = second["messages"][1]
    assert assistant["role"] == "assistant"
    assert [c["id"] for c in assistant["tool_calls"]] == ["call_w", "call_d"]
    assert [m["tool_call_id"] for m in tool_messages(second)] == ["call_w", "call_d"]
    assert tool_outputs(second) == {
        "call_w": {"city": "Oslo", "temp_c": 4},
        "call_d": {"value": 42},
    }
    assert second["tools"] == first["tools"]
    assert second["tool_choice"] == "auto"


async def test_responses_round_trip() -> None:
    broker = weather_broker()
    replies: list[dict[str, Any]] = [
        {
            "object": "response",
            "output": [
                {"type": "reasoning", "id": "rs_1", "summary": []},
                {
                    "type": "function_call",
                    "id": "fc_1",
                    "call_id": "call_1",
                    "name": "weather__get",
                    "arguments": '{"city": "Rome"}',
                },
                {
                    "type": "function_call",
                    "id": "fc_2",
                    "call_id": "call_2",
                    "name": "math__double",
                    "arguments": "{oops",
                },
            ],
        },
        {
            "object": "response",
            "output": [
                {
                    "type": "message",
                    "role": "assistant",
                    "content": [{"type": "output_text", "text": "Rome: 4 C.", "annotations": []}],
                }
            ],
        },
    ]
    async with scripted_model("responses", replies) as (model, server):
        answer = await ToolOrchestrator(broker, model, style="responses").run("Rome?")

    assert answer.text == "Rome: 4 C."
    assert answer.rounds == 2
    assert [r.code for r in answer.tool_results] == ["", ErrorCode.INVALID_PARAMS]
    first, second = bodies(server)
    assert first["input"] == [{"role": "user", "content": "Rome?"}]
    assert "messages" not in first
    assert first["tool_choice"] == "auto"
    assert sorted(t["name"] for t in first["tools"]) == ["math__double", "weather__get"]
    assert all(t["type"] == "function" and "parameters" in t for t in first["tools"])
    items = second["input"]
    assert items[0] == first["input"][0]
    assert [(i["type"], i["call_id"]) for i in items[1:]] == [
        ("function_call", "call_1"),
        ("function_call", "call_2"),
        ("function_call_output", "call_1"),
        ("function_call_output", "call_2"),
    ]
    assert json.loads(items[3]["output"]) == {"city": "Rome", "temp_c": 4}
    assert json.loads(items[4]["output"])["error"] == ErrorCode.INVALID_PARAMS


async def test_anthropic_round_trip() -> None:
    broker = weather_broker()

    @capability("tool.fail")
    async def fail(args: dict[str, Any]) -> Any:
        raise RuntimeError("simulated failure")

    broker.register(fail)
    replies: list[dict[str, Any]] = [
        {
            "type": "message",
            "role": "assistant",
            "stop_reason": "tool_use",
            "content": [
                {"type": "text", "text": "Checking."},
                {
                    "type": "tool_use",
                    "id": "tu_1",
                    "name": "weather__get",
                    "input": {"city": "Bonn"},
                },
                {"type": "tool_use", "id": "tu_2", "name": "tool__fail", "input": {}},
            ],
        },
        {
            "type": "message",
            "role": "assistant",
            "stop_reason": "end_turn",
            "content": [{"type": "text", "text": "Bonn: 4 C."}],
        },
    ]
    conversation = [{"role": "user", "content": "Bonn?"}]
    async with scripted_model("anthropic", replies) as (model, server):
        orchestrator = ToolOrchestrator(broker, model, style="anthropic", tool_choice="required")
        answer = await orchestrator.run(conversation)

    assert answer.text == "Bonn: 4 C."
    assert conversation == [{"role": "user", "content": "Bonn?"}]  # the caller's list is intact
    first, second = bodies(server)
    assert first["tool_choice"] == {"type": "any"}  # "required" in Anthropic's words
    assert second["tool_choice"] == {"type": "auto"}  # the refine turn may answer
    assert {t["name"] for t in first["tools"]} == {"math__double", "tool__fail", "weather__get"}
    assert all("input_schema" in t for t in first["tools"])
    user, assistant, results = second["messages"]
    assert user == conversation[0]
    assert assistant == {
        "role": "assistant",
        "content": [
            {"type": "tool_use", "id": "tu_1", "name": "weather__get", "input": {"city": "Bonn"}},
            {"type": "tool_use", "id": "tu_2", "name": "tool__fail", "input": {}},
        ],
    }
    assert results["role"] == "user"
    ok, failed = results["content"]
    assert (ok["tool_use_id"], ok["is_error"]) == ("tu_1", False)
    assert json.loads(ok["content"]) == {"city": "Bonn", "temp_c": 4}
    assert (failed["tool_use_id"], failed["is_error"]) == ("tu_2", True)
    assert json.loads(failed["content"]) == {
        "error": ErrorCode.CAPABILITY_ERROR,
        "message": "simulated failure",
    }


async def test_no_capabilities_sends_no_tools() -> None:
    async with scripted_model("chat", [chat_answer("Hello.")]) as (model, server):
        answer = await ToolOrchestrator(ActionBroker(), model).run("Hi")
    assert answer == FinalAnswer("Hello.", [], [], 1, chat_answer("Hello."))
    [body] = bodies(server)
    assert body == {"messages": [{"role": "user", "content": "Hi"}]}


# --- the action calls -----------------------------------------------------------------------


async def test_action_calls_carry_capability_payload_timeout_and_correlation() -> None:
    broker = ActionBroker()
    recorder = Recorder("web.search")
    broker.register(recorder)
    replies = [
        chat_calls(("c1", "web__search", {"q": "trio"}), ("c2", "web__search", {"q": "h11"})),
        chat_answer("done"),
        chat_calls(("c1", "web__search", {"q": "again"})),  # the same model id in a new run
        chat_answer("done again"),
    ]
    async with scripted_model("chat", replies) as (model, _):
        orchestrator = ToolOrchestrator(broker, model, per_tool_timeout_s=2.5)
        first = await orchestrator.run("search", correlation_id="corr-7")
        second = await orchestrator.run("search again")

    assert [call.capability for call in recorder.calls] == ["web.search"] * 3
    assert sorted(json.loads(call.payload)["q"] for call in recorder.calls[:2]) == ["h11", "trio"]
    assert json.loads(recorder.calls[2].payload) == {"q": "again"}
    assert all(call.timeout_ms == 2500 for call in recorder.calls)
    assert all(call.version == "" for call in recorder.calls)
    for call in recorder.calls[:2]:
        assert call.correlation_id == "corr-7"
        assert call.headers["correlation_id"] == "corr-7"
    # Unique ids: the broker caches results by id, so reusing the model's would answer the
    # second run's "c1" with the first run's result.
    assert len({call.id for call in recorder.calls}) == 3
    assert second.tool_results[0].json() == {"echo": {"q": "again"}}
    assert [r.id for r in first.tool_results] != [r.id for r in second.tool_results[:1]]


async def test_results_are_in_call_order_whatever_order_they_finish_in(
    autojump_clock: trio.testing.MockClock,
) -> None:
    broker = ActionBroker()
    done = {n: trio.Event() for n in range(4)}
    finished: list[int] = []

    @capability("step.run")
    async def step(args: dict[str, Any]) -> Any:
        n = args["n"]
        if n + 1 in done:  # each waits for the next one: they finish 3, 2, 1, 0
            await done[n + 1].wait()
        finished.append(n)
        done[n].set()
        return {"n": n}

    broker.register(step)
    calls = [(f"c{n}", "step__run", {"n": n}) for n in range(4)]
    script = [chat_calls(*calls), chat_answer("ok")]
    async with scripted_model("chat", script, timeout=None) as (model, server):
        answer = await ToolOrchestrator(broker, model, max_parallel=4).run("go")

    assert finished == [3, 2, 1, 0]
    assert [r.json() for r in answer.tool_results] == [{"n": 0}, {"n": 1}, {"n": 2}, {"n": 3}]
    assert [c.id for c in answer.tool_calls] == ["c0", "c1", "c2", "c3"]
    refine = bodies(server)[1]
    assert [m["tool_call_id"] for m in tool_messages(refine)] == ["c0", "c1", "c2", "c3"]
    assert [json.loads(m["content"]) for m in tool_messages(refine)] == [
        {"n": 0},
        {"n": 1},
        {"n": 2},
        {"n": 3},
    ]


# --- parallelism ----------------------------------------------------------------------------


def rendezvous_broker() -> ActionBroker:
    """Two capabilities that can only both finish when they run at the same time: each
    signals it has started, then waits for the other to start."""
    broker = ActionBroker()
    a_started, b_started = trio.Event(), trio.Event()

    @capability("sync.a")
    async def a(args: dict[str, Any]) -> Any:
        a_started.set()
        await b_started.wait()
        return "a"

    @capability("sync.b")
    async def b(args: dict[str, Any]) -> Any:
        b_started.set()
        await a_started.wait()
        return "b"

    broker.register(a)
    broker.register(b)
    return broker


RENDEZVOUS = [chat_calls(("ca", "sync__a", {}), ("cb", "sync__b", {})), chat_answer("met")]


async def test_tool_calls_run_in_parallel(autojump_clock: trio.testing.MockClock) -> None:
    async with scripted_model("chat", RENDEZVOUS, timeout=None) as (model, _):
        orchestrator = ToolOrchestrator(rendezvous_broker(), model, max_parallel=2)
        answer = await orchestrator.run("meet")
    # Run one after the other, the first would wait for the second until its timeout.
    assert [r.status for r in answer.tool_results] == [ActionStatus.ACTION_OK] * 2
    assert [r.json() for r in answer.tool_results] == ["a", "b"]
    assert trio.current_time() == 0  # nobody waited for a timeout


async def test_max_parallel_one_runs_them_one_at_a_time(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with scripted_model("chat", RENDEZVOUS, timeout=None) as (model, _):
        orchestrator = ToolOrchestrator(
            rendezvous_broker(), model, max_parallel=1, per_tool_timeout_s=5
        )
        answer = await orchestrator.run("meet")
    # Whichever ran first waited in vain for the other and timed out; the second found the
    # first's start signal and finished.
    codes = sorted(r.code for r in answer.tool_results)
    assert codes == ["", ErrorCode.ACTION_TIMEOUT]
    assert trio.current_time() == pytest.approx(5.0)


@pytest.mark.parametrize("max_parallel", [1, 2, 3])
async def test_max_parallel_bounds_the_calls_running_at_once(max_parallel: int) -> None:
    broker = ActionBroker()
    running = 0
    peak = 0

    @capability("busy.work")
    async def work(args: dict[str, Any]) -> Any:
        nonlocal running, peak
        running += 1
        peak = max(peak, running)
        await trio.testing.wait_all_tasks_blocked()  # let every other task get as far as it can
        running -= 1
        return args["n"]

    broker.register(work)
    calls = [(f"c{n}", "busy__work", {"n": n}) for n in range(5)]
    async with scripted_model("chat", [chat_calls(*calls), chat_answer("ok")]) as (model, _):
        orchestrator = ToolOrchestrator(broker, model, max_parallel=max_parallel)
        answer = await orchestrator.run("work")
    assert peak == max_parallel
    assert [r.json() for r in answer.tool_results] == [0, 1, 2, 3, 4]


# --- bad tool calls become results the model reads ------------------------------------------


async def test_malformed_arguments_give_invalid_params_without_the_broker() -> None:
    broker = ActionBroker()
    recorder = Recorder("web.search")
    broker.register(recorder)
    replies = [
        chat_calls(
            ("bad1", "web__search", "{not json"),
            ("bad2", "web__search", "[1, 2]"),
            ("good", "web__search", {"q": "fine"}),
        ),
        chat_answer("ok"),
    ]
    async with scripted_model("chat", replies) as (model, server):
        orchestrator = ToolOrchestrator(broker, model)
        answer = await orchestrator.run("search")

    assert [r.code for r in answer.tool_results] == [
        ErrorCode.INVALID_PARAMS,
        ErrorCode.INVALID_PARAMS,
        "",
    ]
    assert answer.tool_calls[0].arguments is None
    assert len(recorder.calls) == 1  # only the good call reached the provider
    assert broker.stats().capability("web.search").calls == 1
    outputs = tool_outputs(bodies(server)[1])
    assert outputs["bad1"]["error"] == ErrorCode.INVALID_PARAMS
    assert "not valid JSON" in outputs["bad1"]["message"]
    assert outputs["bad2"]["error"] == ErrorCode.INVALID_PARAMS
    assert "JSON object" in outputs["bad2"]["message"]
    assert outputs["good"] == {"echo": {"q": "fine"}}
    assert orchestrator.stats().tool_errors == 2
    assert orchestrator.stats().invoked == 1


async def test_arguments_failing_the_schema_give_invalid_params() -> None:
    replies = [chat_calls(("c1", "weather__get", {"town": "Oslo"})), chat_answer("ok")]
    async with scripted_model("chat", replies) as (model, server):
        answer = await ToolOrchestrator(weather_broker(), model).run("weather")
    assert answer.tool_results[0].code == ErrorCode.INVALID_PARAMS
    assert tool_outputs(bodies(server)[1])["c1"]["error"] == ErrorCode.INVALID_PARAMS


async def test_an_unknown_tool_gives_provider_unavailable() -> None:
    replies = [
        chat_calls(("c1", "made_up_tool", {}), ("c2", "weather__get", {"city": "Oslo"})),
        chat_answer("ok"),
    ]
    async with scripted_model("chat", replies) as (model, server):
        answer = await ToolOrchestrator(weather_broker(), model).run("weather")
    assert [r.code for r in answer.tool_results] == [ErrorCode.PROVIDER_UNAVAILABLE, ""]
    outputs = tool_outputs(bodies(server)[1])
    assert outputs["c1"]["error"] == ErrorCode.PROVIDER_UNAVAILABLE
    assert "made_up_tool" in outputs["c1"]["message"]
    assert outputs["c2"] == {"city": "Oslo", "temp_c": 4}


async def test_a_raising_provider_gives_capability_error() -> None:
    broker = weather_broker()

    @capability("tool.fail")
    async def fail(args: dict[str, Any]) -> Any:
        raise ValueError("the backend is down")

    broker.register(fail)
    replies = [
        chat_calls(("c1", "tool__fail", {}), ("c2", "weather__get", {"city": "Oslo"})),
        chat_answer("sorry"),
    ]
    async with scripted_model("chat", replies) as (model, server):
        answer = await ToolOrchestrator(broker, model).run("try")
    assert answer.text == "sorry"
    assert [r.code for r in answer.tool_results] == [ErrorCode.CAPABILITY_ERROR, ""]
    outputs = tool_outputs(bodies(server)[1])
    assert outputs["c1"] == {"error": ErrorCode.CAPABILITY_ERROR, "message": "the backend is down"}


async def test_a_hanging_provider_times_out(autojump_clock: trio.testing.MockClock) -> None:
    broker = weather_broker()

    @capability("tool.hang")
    async def hang(args: dict[str, Any]) -> Any:
        await trio.sleep_forever()

    broker.register(hang)
    replies = [
        chat_calls(("c1", "tool__hang", {}), ("c2", "weather__get", {"city": "Oslo"})),
        chat_answer("partial"),
    ]
    async with scripted_model("chat", replies, timeout=None) as (model, server):
        orchestrator = ToolOrchestrator(broker, model, per_tool_timeout_s=7)
        answer = await orchestrator.run("try")
    assert answer.text == "partial"
    timed_out, ok = answer.tool_results
    assert timed_out.status is ActionStatus.ACTION_TIMEOUT
    assert timed_out.code == ErrorCode.ACTION_TIMEOUT
    assert ok.ok
    assert trio.current_time() == pytest.approx(7.0)
    outputs = tool_outputs(bodies(server)[1])
    assert outputs["c1"]["error"] == ErrorCode.ACTION_TIMEOUT
    assert orchestrator.stats().latency_max_s == pytest.approx(7.0)


# --- rounds, stats, failures ----------------------------------------------------------------


async def test_max_rounds_stops_a_model_that_never_stops_calling_tools() -> None:
    broker = ActionBroker()
    recorder = Recorder("web.search")
    broker.register(recorder)
    replies = [chat_calls((f"c{n}", "web__search", {"n": n})) for n in range(5)]
    async with scripted_model("chat", replies) as (model, server):
        orchestrator = ToolOrchestrator(broker, model, max_rounds=3, tool_choice="required")
        answer = await orchestrator.run("loop")

    assert answer.exhausted
    assert answer.rounds == 3
    assert answer.text == ""
    assert answer.raw == replies[2]
    assert len(server.requests) == 3
    # Tools ran in the first two rounds only; the third round's calls were not run.
    assert [json.loads(call.payload) for call in recorder.calls] == [{"n": 0}, {"n": 1}]
    assert [c.id for c in answer.tool_calls] == ["c0", "c1"]
    assert len(answer.tool_results) == 2
    # Forced first, free in between, told to answer in the last round.
    assert [body["tool_choice"] for body in bodies(server)] == ["required", "auto", "none"]
    assert len(tool_messages(bodies(server)[2])) == 2
    assert orchestrator.stats().model_calls == 3


async def test_tool_choice_none_is_kept_in_every_round() -> None:
    replies = [chat_calls(("c1", "weather__get", {"city": "Oslo"})), chat_answer("ok")]
    async with scripted_model("chat", replies) as (model, server):
        await ToolOrchestrator(weather_broker(), model, tool_choice="none").run("x")
    assert [body["tool_choice"] for body in bodies(server)] == ["none", "none"]


async def test_stats(autojump_clock: trio.testing.MockClock) -> None:
    broker = ActionBroker()

    @capability("slow.op")
    async def slow(args: dict[str, Any]) -> Any:
        await trio.sleep(args["s"])
        return args["s"]

    broker.register(slow)
    replies = [
        chat_calls(
            ("c1", "slow__op", {"s": 2}),
            ("c2", "slow__op", {"s": 4}),
            ("c3", "slow__op", "{broken"),
            ("c4", "nothing__here", {}),
        ),
        chat_answer("first"),
        chat_calls(("c5", "slow__op", {"s": 6}), ("c6", "slow__op", {"s": 1})),
        chat_answer("second"),
        chat_answer("third"),
    ]
    async with scripted_model("chat", replies, timeout=None) as (model, _):
        orchestrator = ToolOrchestrator(broker, model)
        assert (await orchestrator.run("one")).text == "first"
        assert (await orchestrator.run("two")).text == "second"
        assert (await orchestrator.run("three")).text == "third"

    stats = orchestrator.stats()
    # every count differs from the others: each field shows its own counter
    assert stats.runs == 3
    assert stats.model_calls == 5
    assert stats.tool_calls == 6
    assert stats.tool_errors == 2  # malformed and unknown
    assert stats.invoked == 4  # neither the malformed nor the unknown call reached the broker
    assert stats.latency_max_s == pytest.approx(6.0)
    assert stats.latency_total_s == pytest.approx(2 + 4 + 6 + 1)
    assert stats.latency_mean_s == pytest.approx((2 + 4 + 6 + 1) / 4)


async def test_stats_are_a_frozen_snapshot() -> None:
    replies = [chat_calls(("c1", "weather__get", {"city": "Oslo"})), chat_answer("done")]
    async with scripted_model("chat", replies) as (model, _):
        orchestrator = ToolOrchestrator(weather_broker(), model)
        empty = orchestrator.stats()
        await orchestrator.run("x")
    assert empty == OrchestratorStats()  # taken before the run, left as it was
    stats = orchestrator.stats()
    assert (stats.runs, stats.model_calls, stats.tool_calls, stats.invoked) == (1, 2, 1, 1)
    with pytest.raises(dataclasses.FrozenInstanceError):
        stats.runs = 0  # type: ignore[misc]
    assert orchestrator.stats() == stats


async def test_a_failing_model_propagates_its_exception() -> None:
    broker = weather_broker()
    replies = [chat_calls(("c1", "weather__get", {"city": "Oslo"}))]  # then the script ends
    async with scripted_model("chat", replies) as (model, server):
        orchestrator = ToolOrchestrator(broker, model)
        with pytest.raises(httpx.HTTPStatusError) as caught:
            await orchestrator.run("x")
    assert caught.value.response.status_code == 500
    assert len(server.requests) == 2  # the tools ran, the refine turn failed
    assert orchestrator.stats().tool_calls == 1


async def test_a_model_raising_directly_propagates() -> None:
    class Boom(Exception):
        pass

    async def model(body: dict[str, Any]) -> dict[str, Any]:
        raise Boom("no model")

    with pytest.raises(Boom):
        await ToolOrchestrator(weather_broker(), model).run("x")


async def test_a_response_that_is_not_a_dict_gives_an_empty_answer() -> None:
    async def model(body: dict[str, Any]) -> Any:
        return ["not", "a", "response"]

    answer = await ToolOrchestrator(weather_broker(), model).run("x")
    assert answer.text == ""
    assert answer.rounds == 1
    assert answer.tool_calls == []


@pytest.mark.parametrize(
    "options",
    [
        {"style": "gemini"},
        {"max_parallel": 0},
        {"max_parallel": 1.5},
        {"max_rounds": 0},
        {"max_tools": -1},
        {"per_tool_timeout_s": 0},
        {"per_tool_timeout_s": float("inf")},
        {"tool_choice": "sometimes"},
    ],
)
def test_invalid_options_are_refused(options: dict[str, Any]) -> None:
    async def model(body: dict[str, Any]) -> dict[str, Any]:
        return {}

    with pytest.raises(CapabilityError):
        ToolOrchestrator(ActionBroker(), model, **options)
