"""The agents layer on services that are not a kernel: ``AgentServices`` is all it needs.

A host that runs agents for a remote kernel provides the same interface, so here the runtime
runs on a plain object holding a real bus, an in-memory state store, an action broker, the
local model's router and collaboration, and nothing else. Also: the handle is read-only, and
a spawn that fails half way leaves nothing attached.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

import pytest
import trio
import trio.testing

from loomk import (
    ActionBroker,
    Agent,
    AgentFailed,
    Context,
    Event,
    EventBus,
    EventError,
    LocalModel,
    ModelRouter,
)
from loomk.agents import AgentDefaults, AgentRuntime, AgentServices
from loomk.collab import Collaborator, CollabService
from loomk.llm import ModelService
from loomk.state import AgentStateView
from loomk.testing import RecordingProvider, ScriptedAgent, capture_events

settle = trio.testing.wait_all_tasks_blocked


class MemoryStateStore:
    """State kept in a dict per agent, committed whole: what a remote host might keep."""

    def __init__(self) -> None:
        self.committed: dict[str, dict[str, bytes]] = {}
        self.commits = 0

    def load(self, agent_id: str) -> dict[str, Any]:
        return {key: json.loads(raw[1:]) for key, raw in self.committed.get(agent_id, {}).items()}

    async def commit(self, agent_id: str, view: AgentStateView) -> None:
        puts, deletes = view.pending_operations(b"")  # in the agent's own key space
        await trio.lowlevel.checkpoint()
        values = self.committed.setdefault(agent_id, {})
        values.update({key.decode(): raw for key, raw in puts.items()})
        for key in deletes:
            values.pop(key.decode(), None)
        self.commits += 1
        view.applied()


@dataclass
class Services:
    """Everything :class:`AgentServices` asks for, and not a kernel."""

    bus: EventBus = field(default_factory=EventBus)
    state: MemoryStateStore = field(default_factory=MemoryStateStore)
    broker: ActionBroker = field(default_factory=ActionBroker)
    agent_defaults: AgentDefaults = field(
        default_factory=lambda: AgentDefaults(
            stop_timeout_s=1.0, start_timeout_s=1.0, memory_max_items=8, memory_max_bytes=1024
        )
    )
    failures: list[AgentFailed] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.collab = CollabService(self.bus)
        local = LocalModel()
        self.router = ModelRouter(local, cloud_available=False)
        self.models = ModelService(self.router, local.generate, None)

    def collaborator(self, sender: str) -> Collaborator:
        return Collaborator(self.bus, self.collab, sender)

    def on_critical_failure(self, error: AgentFailed) -> None:
        self.failures.append(error)


def services_of(services: Services) -> AgentServices:
    """The type checker's view: the plain object satisfies the protocol."""
    return services


async def test_agents_run_on_services_that_are_not_a_kernel(
    autojump_clock: trio.testing.MockClock,
) -> None:
    services = Services()
    provider = RecordingProvider("lights.set")
    services.broker.register(provider)

    async def switch(ctx: Context, event: Event) -> None:
        ctx.state["switched"] = ctx.state.get("switched", 0) + 1
        result = await ctx.invoke("lights.set", {"room": "kitchen"})
        await ctx.emit("lights.done", Event("done", json.dumps(result.ok).encode()))
        ctx.memory.append("switched")

    async with trio.open_nursery() as nursery:
        nursery.start_soon(services.collab.run)
        runtime = AgentRuntime(services_of(services))
        runtime.attach(nursery)
        with capture_events(services.bus, "lights.done") as done:
            handle = await runtime.spawn(ScriptedAgent("switcher", {"go": switch}))
            await services.bus.publish("in.switcher", Event("go"))
            await services.bus.publish("in.switcher", Event("go"))
            await done.wait_for(2)
        await settle()
        assert handle.handled == 2
        assert services.state.load("switcher") == {"switched": 2}
        assert [json.loads(call.payload) for call in provider.calls] == [{"room": "kitchen"}] * 2
        assert handle.memory.items() == ["switched", "switched"]
        assert handle.stop_timeout_s == 1.0  # from the services' defaults
        await runtime.shutdown(1.0)
        nursery.cancel_scope.cancel()
    assert handle.status == "stopped"


async def test_a_critical_agent_that_gives_up_calls_the_services_hook(
    autojump_clock: trio.testing.MockClock,
) -> None:
    services = Services()

    async def fail(ctx: Context, event: Event) -> None:
        raise RuntimeError("broken")

    async with trio.open_nursery() as nursery:
        runtime = AgentRuntime(services)
        runtime.attach(nursery)
        handle = await runtime.spawn(
            ScriptedAgent("fragile", {"go": fail}), critical=True, max_restarts=0
        )
        await services.bus.publish("in.fragile", Event("go"))
        await handle.wait_finished()
        [failure] = services.failures
        assert failure.agent_id == "fragile"
        assert isinstance(failure.cause, RuntimeError)
        assert handle.status == "failed"
        await runtime.shutdown(1.0)


async def test_the_handle_is_a_read_only_view() -> None:
    services = Services()
    async with trio.open_nursery() as nursery:
        runtime = AgentRuntime(services)
        runtime.attach(nursery)
        handle = await runtime.spawn(ScriptedAgent("viewed"))
        for name, value in [("status", "failed"), ("handled", 5), ("restarts", 1)]:
            with pytest.raises(AttributeError):
                setattr(handle, name, value)
        assert (handle.status, handle.handled, handle.restarts) == ("running", 0, 0)
        assert runtime.get("viewed") is handle
        await runtime.shutdown(1.0)


class TwoTopics(Agent):
    """Declares a good topic and then one whose event-type filter is not a collection."""

    topics = ("first.topic",)

    def declared_topics(self) -> tuple[Any, ...]:
        from loomk import Topic

        return (Topic("first.topic"), Topic("second.topic", event_types=7))  # type: ignore[arg-type]


async def test_a_spawn_refused_half_way_through_its_topics_leaves_nothing_attached() -> None:
    services = Services()
    async with trio.open_nursery() as nursery:
        runtime = AgentRuntime(services)
        runtime.attach(nursery)
        with pytest.raises(EventError, match="event_types"):
            await runtime.spawn(TwoTopics("half"))
        assert runtime.list() == []
        assert "half" not in runtime.directory
        assert services.bus.subscription_stats() == []  # the first topic was taken back
        assert await services.bus.publish("first.topic", Event("x")) == 0
        await runtime.shutdown(1.0)


async def test_spawn_refuses_a_runtime_without_a_nursery() -> None:
    runtime = AgentRuntime(Services())
    with pytest.raises(Exception, match="not running"):
        await runtime.spawn(ScriptedAgent("early"))
