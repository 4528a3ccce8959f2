"""The ``routing_decision`` observability event, published on ``agent.{id}`` after each
routing decision as Loom's agent loop does."""

from __future__ import annotations

import trio

from loomk import Agent, Context, Event
from loomk.llm import Route, RoutingDecision, routing_decision_event
from loomk.testing import open_test_kernel

DECISION = RoutingDecision(Route.HYBRID, 0.75, "Hybrid: local quick + cloud refine", 300, 0.0012)


def test_the_event_carries_loom_fields_and_the_envelope() -> None:
    incoming = Event(
        "intent", b"x", metadata={"thread_id": "t-1", "correlation_id": "c-1", "ttl": "9"}
    )
    announced = routing_decision_event("router-agent", DECISION, incoming)
    assert announced.type == "routing_decision"
    assert announced.source == "agent.router-agent"
    assert announced.tags == ("router",)
    assert announced.priority == 50
    assert announced.confidence == 0.75
    meta = announced.metadata
    assert meta["route"] == "Hybrid"
    assert meta["reason"] == "Hybrid: local quick + cloud refine"
    assert meta["confidence"] == "0.750"
    assert meta["est_latency_ms"] == "300"
    assert meta["est_cost"] == "0.0012"
    assert meta["thread_id"] == "t-1"
    assert meta["correlation_id"] == "c-1"
    assert meta["ttl"] == "9"
    assert meta["sender"] == "agent.router-agent"  # empty sender filled with the agent's


def test_an_incoming_sender_is_kept_and_confidence_is_clamped() -> None:
    incoming = Event("intent", metadata={"sender": "agent.mic"})
    odd = RoutingDecision(Route.CLOUD, 1.5, "Default to cloud for quality", 500, 0.01)
    announced = routing_decision_event("a", odd, incoming)
    assert announced.metadata["sender"] == "agent.mic"
    assert announced.confidence == 1.0
    assert announced.metadata["route"] == "Cloud"


async def test_an_agent_announces_on_its_own_topic() -> None:
    class Router(Agent):
        topics = ("in.r",)

        async def on_event(self, ctx: Context, event: Event) -> None:
            await ctx.announce_routing(DECISION, event)

    async with open_test_kernel() as kernel:
        seen = kernel.bus.subscribe("agent.r")
        await kernel.spawn(Router("r"))
        await kernel.bus.publish("in.r", Event("intent"))
        with trio.fail_after(5):
            topic, announced = await seen.receive()
    assert topic == "agent.r"
    assert announced.type == "routing_decision"
    assert announced.metadata["route"] == "Hybrid"
