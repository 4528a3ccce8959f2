"""The models inside a kernel: routed agents, ``ctx.answer`` and ``llm.generate``, offline and
against a real OpenAI-compatible endpoint on loopback (tests/openai_server.py).

Routing here uses the kernel's own local model as the confidence estimator, so the texts
are chosen for their intent confidence: a full command (lights in a room) is confident,
a weather question without a city is partial (hybrid), a story request is unknown (cloud).
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import trio
from openai_server import FakeOpenAI, chat_json, responses_json, serve_openai, server_error

import loomk
from loomk import Agent, Context, Event, Kernel
from loomk.llm import ModelAnswer, Route
from loomk.llm.routing import MASK
from loomk.testing import open_test_kernel

CONFIDENT = "turn on the kitchen lights"
PARTIAL = "what's the weather like"
UNKNOWN = "tell me a story about dragons"


@asynccontextmanager
async def kernel_with(fake: FakeOpenAI | None, **settings: Any) -> AsyncIterator[Kernel]:
    """A kernel whose model endpoint is ``fake`` (none: only the local model)."""
    if fake is not None:
        settings["llm_base_url"] = fake.base_url
        settings["llm_api_key"] = "sk-test-key"
    async with open_test_kernel(**settings) as kernel:
        yield kernel


class Assistant(Agent):
    """Routed: records each pass's metadata and what ``ctx.answer`` said in it."""

    topics = ("ask",)
    routed = True

    def __init__(self, agent_id: str, passes: list[tuple[dict[str, str], ModelAnswer]]) -> None:
        super().__init__(agent_id)
        self.passes = passes

    async def on_event(self, ctx: Context, event: Event) -> None:
        answer = await ctx.answer(event)
        self.passes.append((dict(event.metadata), answer))
        if event.metadata.get("phase") != "quick":
            await ctx.emit("answers", Event("answer", answer.text.encode()))


class PublicAssistant(Assistant):
    metadata = {"routing.privacy": "public"}  # noqa: RUF012 - Loom's routing parameters


async def ask(kernel: Kernel, payload: str, **metadata: str) -> Event:
    answers = kernel.bus.subscribe("answers")
    await kernel.bus.publish("ask", Event("user.query", payload.encode(), metadata=metadata))
    with trio.fail_after(5):
        _, answer = await answers.receive()
    answers.close()
    return answer


# --- offline: the local model answers everything ------------------------------------------------


async def test_offline_every_route_ends_at_the_local_model() -> None:
    passes: list[tuple[dict[str, str], ModelAnswer]] = []
    async with kernel_with(None) as kernel:
        decisions = kernel.bus.subscribe("agent.assistant")
        await kernel.spawn(PublicAssistant("assistant", passes))
        confident = await ask(kernel, CONFIDENT)
        unknown = await ask(kernel, UNKNOWN)
        routed = [decisions.receive_nowait()[1].metadata["route"] for _ in range(2)]
    assert confident.payload == b"Turning on the kitchen lights."
    assert unknown.payload.startswith(b"Sorry, I didn't understand")
    assert [meta["routing_decision"] for meta, _ in passes] == ["Local", "LocalFallback"]
    assert passes[1][1].decision.reason == "No cloud model configured"
    assert routed == ["Local", "LocalFallback"]  # one routing_decision per event
    assert [answer.output["provider"] for _, answer in passes] == ["local", "local"]


async def test_hybrid_context_never_carries_a_masked_value() -> None:
    """The quick local answer is made from the unmasked text; neither it nor the question
    may carry a masked field's value to the cloud."""
    passes: list[tuple[dict[str, str], ModelAnswer]] = []
    payload = json.dumps({"text": "what's the weather in Paris", "location": "Paris"})
    async with serve_openai() as fake:
        fake.script("responses", responses_json("Refined."))
        async with kernel_with(fake) as kernel:
            policy = {"routing.quality_threshold": "0.99"}  # confident, but not enough

            class Sensitive(Assistant):
                metadata = policy

            await kernel.spawn(Sensitive("assistant", passes))
            await ask(kernel, payload)
        assert passes[0][1].route is Route.HYBRID
        assert "Paris" in passes[0][1].text  # the quick answer names the city locally
        body = fake.requests[0].json()
        assert "Paris" not in json.dumps(body)
        assert MASK in json.dumps(body)


# --- with an endpoint ----------------------------------------------------------------------


async def test_llm_generate_goes_to_the_configured_endpoint_with_the_key() -> None:
    async with serve_openai() as fake:
        fake.script("responses", responses_json("From the cloud."))
        async with kernel_with(fake) as kernel:
            result = await kernel.broker.invoke(
                loomk.ActionCall.with_args("g1", "llm.generate", {"input": "hello"})
            )
            assert kernel.llm is not None
        assert result.ok, result.error
        assert result.json()["text"] == "From the cloud."
        assert result.json()["provider"] == "responses"
        (request,) = fake.requests
        assert request.headers["authorization"] == "Bearer sk-test-key"


async def test_a_hybrid_decision_runs_a_local_then_a_cloud_pass() -> None:
    passes: list[tuple[dict[str, str], ModelAnswer]] = []
    async with serve_openai() as fake:
        fake.script("responses", responses_json("Refined in the cloud."))
        async with kernel_with(fake) as kernel:
            await kernel.spawn(PublicAssistant("assistant", passes))
            final = await ask(kernel, PARTIAL)
            assert kernel.router.stats().hybrid_rate == 1.0
        assert final.payload == b"Refined in the cloud."
        (quick_meta, quick), (refine_meta, refined) = passes
        assert quick_meta["routing_decision"] == "Hybrid"
        assert (quick_meta["phase"], quick_meta["routing_target"]) == ("quick", "local")
        assert quick.output["provider"] == "local"
        assert (refine_meta["phase"], refine_meta["routing_target"]) == ("refine", "cloud")
        assert refine_meta["refine"] == "true"
        assert refined.output["provider"] == "responses"
        assert len(fake.requests) == 1  # the quick pass never left the machine
        assert PARTIAL in fake.requests[0].json()["input"]


async def test_a_sensitive_event_reaches_the_cloud_masked() -> None:
    passes: list[tuple[dict[str, str], ModelAnswer]] = []
    payload = json.dumps({"text": UNKNOWN, "email": "ada@example.com"})
    async with serve_openai() as fake:
        fake.script("responses", responses_json("Once upon a time."))
        async with kernel_with(fake) as kernel:
            await kernel.spawn(Assistant("assistant", passes))  # default policy: sensitive
            answer = await ask(kernel, payload)
        assert answer.payload == b"Once upon a time."
        assert passes[0][1].route is Route.CLOUD
        sent = fake.requests[0].json()["input"]
        assert "ada@example.com" not in sent
        assert UNKNOWN in sent  # the question (the payload's text) goes, the rest does not


async def test_private_events_never_reach_the_endpoint() -> None:
    passes: list[tuple[dict[str, str], ModelAnswer]] = []
    async with serve_openai() as fake:
        fake.script("chat/completions", chat_json("should not be asked"))
        async with kernel_with(fake) as kernel:
            await kernel.spawn(PublicAssistant("assistant", passes))
            for privacy in ("private", "local-only"):
                answer = await ask(kernel, UNKNOWN, privacy=privacy)
                assert answer.payload.startswith(b"Sorry")
        assert fake.requests == []
        assert [answer.route for _, answer in passes] == [Route.LOCAL_FALLBACK, Route.LOCAL]


async def test_when_the_cloud_fails_the_local_model_answers() -> None:
    passes: list[tuple[dict[str, str], ModelAnswer]] = []
    async with serve_openai() as fake:
        fake.script("responses", server_error(503))
        fake.script("chat/completions", server_error(503))
        async with kernel_with(fake, llm_max_retries=0) as kernel:
            await kernel.spawn(PublicAssistant("assistant", passes))
            answer = await ask(kernel, UNKNOWN)
            assert kernel.agents.get("assistant").failures == 0
        assert answer.payload.startswith(b"Sorry, I didn't understand")
        (_, model_answer), *_ = passes
        assert model_answer.route is Route.CLOUD
        assert model_answer.output["provider"] == "local"
        assert model_answer.cloud_error is not None
        assert model_answer.cloud_error.code == "LLM_HTTP_ERROR"


async def test_when_the_cloud_refine_fails_the_quick_answer_stands() -> None:
    passes: list[tuple[dict[str, str], ModelAnswer]] = []
    async with serve_openai() as fake:
        fake.script("responses", server_error(500))
        fake.script("chat/completions", server_error(500))
        async with kernel_with(fake, llm_max_retries=0) as kernel:
            await kernel.spawn(PublicAssistant("assistant", passes))
            final = await ask(kernel, PARTIAL)
        quick_answer = passes[0][1]
        refined = passes[1][1]
        assert refined.cloud_error is not None
        assert refined.output["provider"] == "local"
        assert final.payload == quick_answer.text.encode()


async def test_the_model_answers_the_text_the_router_read() -> None:
    """Loom's voice events carry their text in metadata; JSON payloads in a ``query``
    member: the answer reads the same text as the router's estimate."""
    passes: list[tuple[dict[str, str], ModelAnswer]] = []
    async with kernel_with(None) as kernel:
        await kernel.spawn(PublicAssistant("assistant", passes))
        spoken = await ask(kernel, "", text="what is 6 times 7")
        structured = await ask(kernel, json.dumps({"query": "what is 2 plus 3", "id": 17}))
    assert spoken.payload == b"6 times 7 is 42."
    assert structured.payload == b"2 plus 3 is 5."


async def test_an_agent_s_own_event_types_are_routed_on_their_text() -> None:
    """A type the local model does not read is routed with confidence 0 and a reason that
    says so; an agent that names the type in ``routing.event_types`` gets it scored."""

    class Notes(PublicAssistant):
        topics = ("notes",)

    class DeclaredNotes(Notes):
        metadata = {"routing.privacy": "public", "routing.event_types": "note.spoken"}  # noqa: RUF012

    note = Event("note.spoken", CONFIDENT.encode())
    unread: list[tuple[dict[str, str], ModelAnswer]] = []
    declared: list[tuple[dict[str, str], ModelAnswer]] = []
    async with kernel_with(None) as kernel:
        decisions = kernel.bus.subscribe("agent.>")
        answers = kernel.bus.subscribe("answers")
        await kernel.spawn(Notes("unread", unread))
        await kernel.spawn(DeclaredNotes("declared", declared))
        await kernel.bus.publish("notes", note)
        with trio.fail_after(5):
            announced = {}
            while len(announced) < 2:
                topic, event = await decisions.receive()
                if event.type == "routing_decision":
                    announced[topic] = event.metadata
            for _ in range(2):
                await answers.receive()
    assert announced["agent.unread"]["route"] == "LocalFallback"
    assert announced["agent.unread"]["confidence"] == "0.000"
    assert announced["agent.unread"]["reason"].startswith(
        "No cloud model configured; local confidence 0: the local model (loomk-local) does "
        "not read events of type 'note.spoken'; it reads chat.message,"
    )
    assert unread[0][0]["routing_reason"] == announced["agent.unread"]["reason"]
    assert announced["agent.declared"]["route"] == "Local"
    assert announced["agent.declared"]["reason"] == "Local model confidence exceeds threshold"
    assert float(announced["agent.declared"]["confidence"]) >= 0.85
    assert declared[0][1].text == "Turning on the kitchen lights."
