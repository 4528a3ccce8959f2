"""The agent directory: its indices on their own (as Loom's directory has them), and kept
current by the runtime on spawn, subscribe, unsubscribe and stop (which Loom never did).
"""

from __future__ import annotations

from typing import ClassVar

import pytest
import trio
import trio.testing

import loomk
from loomk import Agent, AgentDirectory, AgentExists, AgentInfo, Context, Event, TopicError
from loomk.testing import open_test_kernel

settle = trio.testing.wait_all_tasks_blocked


def info(
    agent_id: str,
    topics: tuple[str, ...] = (),
    capabilities: tuple[str, ...] = (),
    **metadata: str,
) -> AgentInfo:
    return AgentInfo(agent_id, topics, capabilities, metadata)


# --- AgentDirectory alone -----------------------------------------------------------------


def test_empty_directory() -> None:
    directory = AgentDirectory()
    assert len(directory) == 0
    assert directory.all() == []
    assert directory.get("a") is None
    assert "a" not in directory
    assert directory.by_topic("any.topic") == []
    assert directory.by_capability("search") == []
    assert directory.by_metadata("role") == []


def test_register_then_get_and_all_in_registration_order() -> None:
    directory = AgentDirectory()
    b = info("b", ("news",), ("summarise",), role="writer")
    a = info("a", ("jobs",), ("search",))
    directory.register(b)
    directory.register(a)
    assert len(directory) == 2
    assert "a" in directory
    assert directory.get("a") == a
    assert directory.get("b") == b
    assert directory.all() == [b, a]


def test_register_is_an_upsert_that_leaves_the_old_indices() -> None:
    directory = AgentDirectory()
    directory.register(info("a", ("topic.old", "shared"), ("cap.old", "cap.both"), tier="1"))
    directory.register(info("other", ("shared",), ("cap.both",)))
    replacement = info("a", ("topic.new",), ("cap.new", "cap.both"), tier="2")
    directory.register(replacement)

    assert len(directory) == 2
    assert directory.get("a") == replacement
    assert directory.all() == [directory.get("other"), replacement]
    assert directory.by_topic("topic.old") == []
    assert directory.by_topic("shared") == ["other"]
    assert directory.by_topic("topic.new") == ["a"]
    assert directory.by_capability("cap.old") == []
    assert directory.by_capability("cap.new") == ["a"]
    assert directory.by_capability("cap.both") == ["a", "other"]
    assert directory.by_metadata("tier", "1") == []
    assert directory.by_metadata("tier", "2") == ["a"]


def test_unregister_removes_from_every_index() -> None:
    directory = AgentDirectory()
    directory.register(info("a", ("jobs.>",), ("search",), role="worker"))
    directory.register(info("b", ("jobs.>",), ("search",), role="worker"))
    assert directory.unregister("a") is True
    assert directory.get("a") is None
    assert "a" not in directory
    assert directory.by_topic("jobs.new") == ["b"]
    assert directory.by_capability("search") == ["b"]
    assert directory.by_metadata("role") == ["b"]
    assert [entry.agent_id for entry in directory.all()] == ["b"]
    assert directory.unregister("a") is False


def test_unregister_unknown_is_false_and_changes_nothing() -> None:
    directory = AgentDirectory()
    directory.register(info("a", ("jobs",), ("search",)))
    assert directory.unregister("ghost") is False
    assert directory.by_topic("jobs") == ["a"]
    assert len(directory) == 1


def test_by_topic_matches_wildcard_patterns_against_a_published_topic() -> None:
    directory = AgentDirectory()
    directory.register(info("exact", ("sensor.kitchen.temp",)))
    directory.register(info("star", ("sensor.*.temp",)))
    directory.register(info("tail", ("sensor.>",)))
    directory.register(info("everything", (">",)))
    directory.register(info("elsewhere", ("audio.>", "sensor.*.humidity")))

    assert directory.by_topic("sensor.kitchen.temp") == ["exact", "star", "tail", "everything"]
    assert directory.by_topic("sensor.garage.temp") == ["star", "tail", "everything"]
    assert directory.by_topic("sensor.garage.humidity") == ["tail", "everything", "elsewhere"]
    assert directory.by_topic("sensor.kitchen.temp.max") == ["tail", "everything"]
    assert directory.by_topic("sensor") == ["everything"]  # '>' needs one more token
    assert directory.by_topic("audio.mic") == ["everything", "elsewhere"]


def test_by_topic_lists_an_agent_once_when_several_patterns_match() -> None:
    directory = AgentDirectory()
    directory.register(info("greedy", ("a.b", "a.*", "a.>", ">")))
    assert directory.by_topic("a.b") == ["greedy"]


def test_by_topic_takes_a_concrete_topic() -> None:
    directory = AgentDirectory()
    directory.register(info("a", ("x.*",)))
    with pytest.raises(TopicError):
        directory.by_topic("x.*")
    with pytest.raises(TopicError):
        directory.by_topic("")


def test_register_refuses_an_invalid_pattern() -> None:
    directory = AgentDirectory()
    with pytest.raises(TopicError):
        directory.register(info("a", ("bad..pattern",)))


def test_by_capability_is_sorted_by_id() -> None:
    directory = AgentDirectory()
    directory.register(info("zed", (), ("search", "fetch")))
    directory.register(info("amy", (), ("search",)))
    directory.register(info("max", (), ("fetch",)))
    assert directory.by_capability("search") == ["amy", "zed"]
    assert directory.by_capability("fetch") == ["max", "zed"]
    assert directory.by_capability("fly") == []


def test_by_metadata_with_and_without_a_value() -> None:
    directory = AgentDirectory()
    directory.register(info("zed", role="critic", lang="en"))
    directory.register(info("amy", role="writer", lang="fr"))
    directory.register(info("max", role="writer"))
    directory.register(info("bob"))
    assert directory.by_metadata("role") == ["amy", "max", "zed"]
    assert directory.by_metadata("role", "writer") == ["amy", "max"]
    assert directory.by_metadata("role", "editor") == []
    assert directory.by_metadata("lang") == ["amy", "zed"]
    assert directory.by_metadata("missing") == []


def test_by_metadata_empty_value_is_a_value() -> None:
    directory = AgentDirectory()
    directory.register(info("a", flag=""))
    directory.register(info("b", flag="on"))
    assert directory.by_metadata("flag") == ["a", "b"]
    assert directory.by_metadata("flag", "") == ["a"]


def test_add_and_remove_topic_update_the_entry_and_the_index() -> None:
    directory = AgentDirectory()
    directory.register(info("a", ("one",), ("cap",), k="v"))
    directory.add_topic("a", "two.*")
    directory.add_topic("a", "two.*")  # idempotent
    entry = directory.get("a")
    assert entry is not None
    assert entry.topics == ("one", "two.*")
    assert (entry.capabilities, dict(entry.metadata)) == (("cap",), {"k": "v"})
    assert directory.by_topic("two.x") == ["a"]

    directory.remove_topic("a", "one")
    directory.remove_topic("a", "never")  # no-op
    entry = directory.get("a")
    assert entry is not None
    assert entry.topics == ("two.*",)
    assert directory.by_topic("one") == []
    assert directory.by_topic("two.y") == ["a"]


def test_unregister_after_add_topic_leaves_no_pattern_behind() -> None:
    directory = AgentDirectory()
    directory.register(info("a", ("one",)))
    directory.add_topic("a", "two")
    directory.unregister("a")
    assert directory.by_topic("one") == []
    assert directory.by_topic("two") == []


def test_a_repeated_pattern_in_an_entry_leaves_no_trace_after_unregister() -> None:
    directory = AgentDirectory()
    directory.register(info("a", ("jobs", "jobs")))
    assert directory.by_topic("jobs") == ["a"]
    directory.unregister("a")
    assert directory.by_topic("jobs") == []
    directory.register(info("b", ("jobs",)))
    assert directory.by_topic("jobs") == ["b"]


# --- kept current by the runtime ----------------------------------------------------------


class Searcher(Agent):
    topics = ("search.requests", "search.>")
    capabilities = ("web.search", "summarise")
    metadata: ClassVar[dict[str, str]] = {"role": "researcher", "model": "small"}

    async def on_event(self, ctx: Context, event: Event) -> None:
        return None


class Critic(Agent):
    topics = ("reviews.*",)
    capabilities = ("summarise",)
    metadata: ClassVar[dict[str, str]] = {"role": "critic"}


async def test_spawn_registers_topics_capabilities_and_metadata() -> None:
    async with open_test_kernel() as kernel:
        await kernel.spawn(Searcher("searcher"))
        await kernel.spawn(Critic("critic"))
        assert kernel.directory is kernel.agents.directory
        entry = kernel.directory.get("searcher")
        assert entry is not None
        assert entry.agent_id == "searcher"
        assert entry.topics == ("agent.searcher.replies", "search.requests", "search.>")
        assert entry.capabilities == ("web.search", "summarise")
        assert dict(entry.metadata) == {"role": "researcher", "model": "small"}

        assert [e.agent_id for e in kernel.directory.all()] == ["searcher", "critic"]
        assert kernel.directory.by_topic("search.requests") == ["searcher"]
        assert kernel.directory.by_topic("agent.searcher.replies") == ["searcher"]
        assert kernel.directory.by_topic("reviews.book") == ["critic"]
        assert kernel.directory.by_capability("summarise") == ["critic", "searcher"]
        assert kernel.directory.by_capability("web.search") == ["searcher"]
        assert kernel.directory.by_metadata("role") == ["critic", "searcher"]
        assert kernel.directory.by_metadata("role", "critic") == ["critic"]


async def test_function_agent_registers_what_the_decorator_declares() -> None:
    @loomk.agent("fn", topics=["hello.>"], capabilities=["greet"], metadata={"lang": "en"})
    async def fn(ctx: Context, event: Event) -> None:
        return None

    async with open_test_kernel() as kernel:
        await kernel.spawn(fn)
        assert kernel.directory.get("fn") == AgentInfo(
            "fn", ("agent.fn.replies", "hello.>"), ("greet",), {"lang": "en"}
        )
        assert kernel.directory.by_topic("hello.world") == ["fn"]
        assert kernel.directory.by_capability("greet") == ["fn"]
        assert kernel.directory.by_metadata("lang", "en") == ["fn"]


async def test_subscribe_and_unsubscribe_update_by_topic() -> None:
    async with open_test_kernel() as kernel:
        await kernel.spawn(Critic("critic"))
        assert kernel.directory.by_topic("news.world") == []

        await kernel.subscribe_agent("critic", "news.*")
        assert kernel.directory.by_topic("news.world") == ["critic"]
        entry = kernel.directory.get("critic")
        assert entry is not None
        assert entry.topics == ("agent.critic.replies", "reviews.*", "news.*")

        await kernel.unsubscribe_agent("critic", "reviews.*")
        await kernel.unsubscribe_agent("critic", "agent.critic.replies")
        assert kernel.directory.by_topic("reviews.book") == []
        assert kernel.directory.by_topic("agent.critic.replies") == []
        entry = kernel.directory.get("critic")
        assert entry is not None
        assert entry.topics == ("news.*",)
        assert entry.capabilities == ("summarise",)  # the rest of the entry is kept
        assert kernel.directory.by_capability("summarise") == ["critic"]


async def test_context_subscriptions_update_the_directory() -> None:
    class Joiner(Agent):
        async def on_start(self, ctx: Context) -> None:
            await ctx.subscribe("rooms.lobby")

        async def on_event(self, ctx: Context, event: Event) -> None:
            await ctx.unsubscribe("rooms.lobby")

    async with open_test_kernel() as kernel:
        await kernel.spawn(Joiner("joiner"))
        assert kernel.directory.by_topic("rooms.lobby") == ["joiner"]
        await kernel.bus.publish("agent.joiner.replies", Event("leave"))
        await settle()
        assert kernel.directory.by_topic("rooms.lobby") == []
        assert kernel.directory.by_topic("agent.joiner.replies") == ["joiner"]


async def test_failed_subscribe_leaves_the_directory_unchanged() -> None:
    async with open_test_kernel() as kernel:
        await kernel.spawn(Critic("critic"))
        before = kernel.directory.all()
        with pytest.raises(loomk.AlreadySubscribed):
            await kernel.subscribe_agent("critic", "reviews.*")
        with pytest.raises(TopicError):
            await kernel.subscribe_agent("critic", "bad..pattern")
        with pytest.raises(loomk.NotSubscribed):
            await kernel.unsubscribe_agent("critic", "never.subscribed")
        assert kernel.directory.all() == before


async def test_stop_removes_the_agent_from_the_directory() -> None:
    async with open_test_kernel() as kernel:
        await kernel.spawn(Searcher("searcher"))
        await kernel.spawn(Critic("critic"))
        await kernel.stop_agent("searcher")
        assert kernel.directory.get("searcher") is None
        assert "searcher" not in kernel.directory
        assert kernel.directory.by_topic("search.requests") == []
        assert kernel.directory.by_topic("agent.searcher.replies") == []
        assert kernel.directory.by_capability("summarise") == ["critic"]
        assert kernel.directory.by_capability("web.search") == []
        assert kernel.directory.by_metadata("role") == ["critic"]
        assert [e.agent_id for e in kernel.directory.all()] == ["critic"]


async def test_an_agent_that_stops_itself_leaves_the_directory() -> None:
    class OneShot(Agent):
        topics = ("once",)
        capabilities = ("once",)

        async def on_event(self, ctx: Context, event: Event) -> None:
            ctx.stop()

    async with open_test_kernel() as kernel:
        await kernel.spawn(OneShot("oneshot"), restart="transient")
        assert kernel.directory.by_capability("once") == ["oneshot"]
        await kernel.bus.publish("once", Event("go"))
        await settle()
        assert "oneshot" not in kernel.agents.list()
        assert kernel.directory.get("oneshot") is None
        assert kernel.directory.by_topic("once") == []
        assert kernel.directory.by_capability("once") == []


async def test_respawn_after_stop_registers_afresh() -> None:
    async with open_test_kernel() as kernel:
        await kernel.spawn(Critic("agent1"))
        await kernel.subscribe_agent("agent1", "extra")
        await kernel.stop_agent("agent1")
        await kernel.spawn(Searcher("agent1"))
        entry = kernel.directory.get("agent1")
        assert entry is not None
        assert entry.topics == ("agent.agent1.replies", "search.requests", "search.>")
        assert kernel.directory.by_topic("extra") == []
        assert kernel.directory.by_topic("reviews.book") == []
        assert kernel.directory.by_capability("web.search") == ["agent1"]


class Broken(Agent):
    topics = ("bad..pattern",)
    capabilities = ("broken",)


async def test_refused_spawn_does_not_touch_the_directory() -> None:
    async with open_test_kernel() as kernel:
        await kernel.spawn(Critic("critic"))
        before = kernel.directory.all()
        with pytest.raises(AgentExists):
            await kernel.spawn(Searcher("critic"))
        with pytest.raises(TopicError):
            await kernel.spawn(Broken("broken"))
        assert kernel.directory.all() == before
        assert kernel.directory.by_capability("web.search") == []
        assert kernel.directory.by_capability("broken") == []


async def test_kernel_shutdown_empties_the_directory() -> None:
    async with open_test_kernel() as kernel:
        await kernel.spawn(Searcher("searcher"))
        await kernel.spawn(Critic("critic"))
        assert len(kernel.directory) == 2
    assert len(kernel.directory) == 0
    assert kernel.directory.by_capability("summarise") == []
