"""The agent runtime: Agent API, spawn/stop lifecycle, subscriptions, mailbox, envelope, Context.

Covers what Loom's agent runtime tests expect, adapted to loomk, plus what loomk does unlike
Loom (graceful stop, typed errors, QoS-ordered mailbox). Every test runs a real kernel and
synchronises with trio Events and ``wait_all_tasks_blocked``, never with sleeps. Restart
policies, backoff and critical agents are tested with the supervisor, not here.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import pytest
import trio
import trio.testing
from support import drain, ev

import loomk
from loomk import (
    Agent,
    AgentContractError,
    AgentError,
    AgentExists,
    AgentNotFound,
    AlreadySubscribed,
    Context,
    Event,
    InvalidAgentId,
    KernelClosed,
    NotSubscribed,
    QoS,
    Topic,
    TopicError,
)
from loomk._metakeys import ORIGIN
from loomk.links import BusLink
from loomk.testing import open_test_kernel

settle = trio.testing.wait_all_tasks_blocked
WAIT_LIMIT_S = 5.0  # a bound that turns a regression into a failure instead of a hang


async def until(event: trio.Event) -> None:
    """Wait for ``event``, failing (not hanging) if it never comes."""
    with trio.fail_after(WAIT_LIMIT_S):
        await event.wait()


# --- helper agents ------------------------------------------------------------------------


class Recorder(Agent):
    """Records its lifecycle in ``trace`` and every event it handles in ``seen``."""

    def __init__(
        self,
        agent_id: str,
        *topics: str | Topic,
        seen: list[Event] | None = None,
    ) -> None:
        super().__init__(agent_id)
        self.topics = topics  # type: ignore[misc]  # per-instance topics
        self.seen: list[Event] = [] if seen is None else seen
        self.trace: list[str] = []
        self._progress = trio.Event()

    async def on_start(self, ctx: Context) -> None:
        self.trace.append("start")

    async def on_event(self, ctx: Context, event: Event) -> None:
        await self.record(event)

    async def record(self, event: Event) -> None:
        self.seen.append(event)
        self.trace.append(f"event {event.payload.decode()}")
        self._progress.set()
        self._progress = trio.Event()

    async def on_stop(self, ctx: Context) -> None:
        self.trace.append("stop")

    async def wait_for(self, count: int) -> None:
        """Wait until at least ``count`` events were handled."""
        with trio.fail_after(WAIT_LIMIT_S):
            while len(self.seen) < count:
                await self._progress.wait()

    @property
    def payloads(self) -> list[int]:
        return [int(event.payload) for event in self.seen]


class Gated(Recorder):
    """Blocks inside the handler of an event of type ``gate`` until ``release`` is set."""

    def __init__(self, agent_id: str, *topics: str | Topic) -> None:
        super().__init__(agent_id, *topics)
        self.entered = trio.Event()
        self.release = trio.Event()

    async def on_event(self, ctx: Context, event: Event) -> None:
        if event.type == "gate":
            self.entered.set()
            await self.release.wait()
        await self.record(event)


class Hanging(Recorder):
    """Never finishes handling an event; notes when it is cancelled."""

    def __init__(self, agent_id: str, *topics: str | Topic) -> None:
        super().__init__(agent_id, *topics)
        self.entered = trio.Event()

    async def on_event(self, ctx: Context, event: Event) -> None:
        self.entered.set()
        try:
            await trio.sleep_forever()
        finally:
            self.trace.append("cancelled")


def gate(i: int = 0) -> Event:
    return Event("gate", str(i).encode())


# --- spawning and basic delivery (what Loom's runtime tests expect) -----------------------


async def test_agent_receives_five_events_in_order() -> None:
    async with open_test_kernel() as kernel:
        worker = Recorder("worker", "work.items")
        handle = await kernel.spawn(worker)
        for i in range(5):
            assert await kernel.bus.publish("work.items", ev(i)) == 1
        await settle()
        assert worker.payloads == [0, 1, 2, 3, 4]
        stats = handle.stats()
        assert stats.agent_id == "worker"
        assert stats.status == "running"
        assert stats.handled == 5
        assert stats.expired == 0
        assert stats.failures == 0
        assert stats.mailbox_depth == 0


async def test_spawn_returns_the_handle_once_on_start_finished() -> None:
    class SlowStart(Recorder):
        async def on_start(self, ctx: Context) -> None:
            self.trace.append("start")
            for _ in range(5):
                await trio.lowlevel.checkpoint()
            self.trace.append("started")

    async with open_test_kernel() as kernel:
        agent = SlowStart("slow", "work")
        handle = await kernel.spawn(agent)
        assert agent.trace == ["start", "started"]
        assert handle.agent_id == "slow"
        assert handle.stats().status == "running"
        assert kernel.agents.get("slow") is handle


async def test_events_published_during_on_start_are_handled_after_it() -> None:
    class EarlyBird(Recorder):
        deliveries: list[int]

        async def on_start(self, ctx: Context) -> None:
            self.trace.append("start")
            self.deliveries = [
                await ctx.emit("jobs", ev(0)),
                await ctx.emit(ctx.reply_topic, ev(1)),
            ]
            self.trace.append("started")

    async with open_test_kernel() as kernel:
        agent = EarlyBird("early", "jobs")
        await kernel.spawn(agent)
        assert agent.deliveries == [0, 0]  # held until on_start commits (the outbox)
        await settle()
        assert agent.trace[:2] == ["start", "started"]
        assert sorted(agent.trace[2:]) == ["event 0", "event 1"]


async def test_subscriptions_list_the_private_topic_first_then_declared_topics() -> None:
    async with open_test_kernel() as kernel:
        await kernel.spawn(Recorder("a", "t.one", Topic("t.two", qos=QoS.REALTIME)))
        assert kernel.subscriptions("a") == ["agent.a.replies", "t.one", "t.two"]


async def test_agents_list_in_spawn_order_and_get_returns_the_handle() -> None:
    async with open_test_kernel() as kernel:
        handles = {name: await kernel.spawn(Recorder(name)) for name in ("b", "a", "c")}
        assert kernel.agents.list() == ["b", "a", "c"]
        for name, handle in handles.items():
            assert kernel.agents.get(name) is handle
        await kernel.stop_agent("a")
        assert kernel.agents.list() == ["b", "c"]


async def test_stop_agent_stops_delivery() -> None:
    async with open_test_kernel() as kernel:
        worker = Recorder("worker", "work")
        handle = await kernel.spawn(worker)
        assert await kernel.bus.publish("work", ev(1)) == 1
        await settle()
        assert worker.payloads == [1]

        await kernel.stop_agent("worker")
        assert worker.trace == ["start", "event 1", "stop"]
        assert await kernel.bus.publish("work", ev(2)) == 0
        assert await kernel.bus.publish("agent.worker.replies", ev(3)) == 0
        await settle()
        assert worker.payloads == [1]
        assert handle.stats().status == "stopped"
        assert "worker" not in kernel.agents.list()
        with pytest.raises(AgentNotFound, match="not found"):
            kernel.agents.get("worker")


async def test_stop_unknown_agent_raises_not_found_and_others_keep_working() -> None:
    async with open_test_kernel() as kernel:
        worker = Recorder("worker", "work")
        await kernel.spawn(worker)
        with pytest.raises(AgentNotFound, match="not found"):
            await kernel.stop_agent("ghost")
        assert await kernel.bus.publish("work", ev(1)) == 1
        await settle()
        assert worker.payloads == [1]


async def test_two_agents_on_the_same_topic_each_get_the_event() -> None:
    async with open_test_kernel() as kernel:
        first, second = Recorder("first", "news"), Recorder("second", "news")
        await kernel.spawn(first)
        await kernel.spawn(second)
        assert await kernel.bus.publish("news", ev(7)) == 2
        await settle()
        assert first.payloads == [7]
        assert second.payloads == [7]


async def test_one_agent_on_two_topics_gets_both() -> None:
    async with open_test_kernel() as kernel:
        agent = Recorder("multi", "topic.a", "topic.b")
        await kernel.spawn(agent)
        assert await kernel.bus.publish("topic.a", ev(1)) == 1
        assert await kernel.bus.publish("topic.b", ev(2)) == 1
        assert await kernel.bus.publish("topic.c", ev(3)) == 0
        await settle()
        assert sorted(agent.payloads) == [1, 2]


async def test_wildcard_topics_deliver_matching_events() -> None:
    async with open_test_kernel() as kernel:
        agent = Recorder("wild", "sensor.*.temp", "alerts.>")
        await kernel.spawn(agent)
        assert await kernel.bus.publish("sensor.kitchen.temp", ev(1)) == 1
        assert await kernel.bus.publish("alerts.fire.kitchen", ev(2)) == 1
        assert await kernel.bus.publish("sensor.kitchen.humidity", ev(3)) == 0
        await settle()
        assert sorted(agent.payloads) == [1, 2]


async def test_kernel_shutdown_stops_processing() -> None:
    async with open_test_kernel() as kernel:
        worker = Recorder("worker", "work")
        handle = await kernel.spawn(worker)
        await kernel.bus.publish("work", ev(1))
        await settle()
    assert worker.trace == ["start", "event 1", "stop"]
    assert handle.stats().status == "stopped"
    assert kernel.agents.list() == []
    with pytest.raises(KernelClosed):
        await kernel.bus.publish("work", ev(2))
    with pytest.raises(KernelClosed):
        await kernel.spawn(Recorder("late", "work"))
    assert worker.payloads == [1]


async def test_kernel_shutdown_drains_what_agents_had_queued() -> None:
    agent = Gated("worker", "work")
    async with trio.open_nursery() as outer, open_test_kernel() as kernel:
        await kernel.spawn(agent)
        await kernel.bus.publish("work", gate(0))
        await until(agent.entered)
        for i in (1, 2, 3):
            assert await kernel.bus.publish("work", ev(i)) == 1

        async def release_during_shutdown() -> None:
            await settle()  # the body has left and shutdown waits for the agent
            assert kernel.stopping
            assert agent.trace == ["start"]
            agent.release.set()

        outer.start_soon(release_during_shutdown)
    assert agent.payloads == [0, 1, 2, 3]
    assert agent.trace[-1] == "stop"


async def test_kernel_shutdown_cancels_an_agent_that_hangs_past_the_timeout(
    autojump_clock: trio.testing.MockClock,
) -> None:
    agent = Hanging("stuck", "work")
    async with open_test_kernel(shutdown_timeout_s=3.0) as kernel:
        await kernel.spawn(agent)
        await kernel.bus.publish("work", ev(1))
        await until(agent.entered)
        started = trio.current_time()
    assert trio.current_time() - started >= 3.0
    assert agent.trace == ["start", "cancelled", "stop"]


async def test_stop_then_respawn_same_id_only_the_new_agent_counts() -> None:
    async with open_test_kernel() as kernel:
        old = Recorder("dup", "work")
        await kernel.spawn(old)
        await kernel.bus.publish("work", ev(1))
        await settle()
        await kernel.stop_agent("dup")

        new = Recorder("dup", "work")
        handle = await kernel.spawn(new)
        assert kernel.subscriptions("dup") == ["agent.dup.replies", "work"]
        assert await kernel.bus.publish("work", ev(2)) == 1
        assert await kernel.bus.publish("agent.dup.replies", ev(3)) == 1
        await settle()
        assert old.payloads == [1]
        assert sorted(new.payloads) == [2, 3]
        assert handle.stats().handled == 2


# --- private topics and threads -----------------------------------------------------------


async def test_private_topic_is_auto_subscribed_and_delivers() -> None:
    async with open_test_kernel() as kernel:
        solo = Recorder("solo")
        await kernel.spawn(solo)
        assert kernel.subscriptions("solo") == ["agent.solo.replies"]
        assert await kernel.bus.publish(loomk.agent_reply_topic("solo"), ev(1)) == 1
        await settle()
        assert solo.payloads == [1]


async def test_point_to_point_reaches_only_the_receiver() -> None:
    async with open_test_kernel() as kernel:
        receiver, bystander = Recorder("receiver", "chat"), Recorder("bystander", "chat")
        await kernel.spawn(receiver)
        await kernel.spawn(bystander)
        assert await kernel.bus.publish("agent.receiver.replies", ev(1)) == 1
        await settle()
        assert receiver.payloads == [1]
        assert bystander.payloads == []


async def test_private_topics_are_isolated_across_three_agents() -> None:
    async with open_test_kernel() as kernel:
        agents = [Recorder(name) for name in ("a", "b", "c")]
        for agent in agents:
            await kernel.spawn(agent)
        for i, agent in enumerate(agents):
            assert await kernel.bus.publish(f"agent.{agent.agent_id}.replies", ev(i)) == 1
        await settle()
        assert [agent.payloads for agent in agents] == [[0], [1], [2]]


async def test_agent_on_thread_reply_topic_has_two_subscriptions_and_receives_both() -> None:
    async with open_test_kernel() as kernel:
        thread_topic = loomk.ThreadTopicKind.REPLY.topic("t-42")
        agent = Recorder("participant", thread_topic)
        await kernel.spawn(agent)
        assert kernel.subscriptions("participant") == [
            "agent.participant.replies",
            "thread.t-42.reply",
        ]
        assert await kernel.bus.publish("thread.t-42.reply", ev(1)) == 1
        assert await kernel.bus.publish("agent.participant.replies", ev(2)) == 1
        await settle()
        assert sorted(agent.payloads) == [1, 2]


# --- dynamic subscriptions ----------------------------------------------------------------


async def test_dynamic_join_receives_only_events_after_joining() -> None:
    async with open_test_kernel() as kernel:
        agent = Recorder("joiner")
        await kernel.spawn(agent)
        assert await kernel.bus.publish("room.lobby", ev(0)) == 0
        await kernel.subscribe_agent("joiner", "room.lobby")
        assert kernel.subscriptions("joiner") == ["agent.joiner.replies", "room.lobby"]
        assert await kernel.bus.publish("room.lobby", ev(1)) == 1
        await settle()
        assert agent.payloads == [1]


async def test_dynamic_leave_stops_further_delivery() -> None:
    async with open_test_kernel() as kernel:
        agent = Recorder("leaver", "room.lobby")
        await kernel.spawn(agent)
        await kernel.bus.publish("room.lobby", ev(0))
        await settle()
        await kernel.unsubscribe_agent("leaver", "room.lobby")
        assert kernel.subscriptions("leaver") == ["agent.leaver.replies"]
        assert await kernel.bus.publish("room.lobby", ev(1)) == 0
        await settle()
        assert agent.payloads == [0]


async def test_multiple_dynamic_subscriptions() -> None:
    async with open_test_kernel() as kernel:
        agent = Recorder("hub")
        await kernel.spawn(agent)
        for pattern in ("x.one", "x.two", "x.three"):
            await kernel.subscribe_agent("hub", pattern)
        assert len(kernel.subscriptions("hub")) == 4
        for i, topic in enumerate(("x.one", "x.two", "x.three")):
            assert await kernel.bus.publish(topic, ev(i)) == 1
        await settle()
        assert sorted(agent.payloads) == [0, 1, 2]
        await kernel.unsubscribe_agent("hub", "x.two")
        assert kernel.subscriptions("hub") == ["agent.hub.replies", "x.one", "x.three"]


async def test_subscribe_agent_applies_qos_and_event_types() -> None:
    async with open_test_kernel() as kernel:
        agent = Recorder("picky")
        handle = await kernel.spawn(agent)
        await kernel.subscribe_agent(
            "picky", "feed", qos=QoS.BACKGROUND, event_types=["msg"], capacity=8
        )
        (lane,) = [lane for lane in handle.stats().lanes if lane.pattern == "feed"]
        assert (lane.qos, lane.capacity) == (QoS.BACKGROUND, 8)
        assert await kernel.bus.publish("feed", ev(1, etype="noise")) == 0
        assert await kernel.bus.publish("feed", ev(2)) == 1
        await settle()
        assert agent.payloads == [2]


async def test_declared_topic_options_are_applied() -> None:
    reading = Topic(
        "sensor.temp",
        qos=QoS.REALTIME,
        overflow="drop_newest",
        capacity=2,
        event_types=["reading", "gate"],
    )
    async with open_test_kernel() as kernel:
        agent = Gated("thermo", reading)
        handle = await kernel.spawn(agent)
        (lane,) = [lane for lane in handle.stats().lanes if lane.pattern == "sensor.temp"]
        assert (lane.qos, lane.capacity, lane.overflow) == (QoS.REALTIME, 2, "drop_newest")
        assert await kernel.bus.publish("sensor.temp", ev(9, etype="noise")) == 0
        await kernel.bus.publish("sensor.temp", gate(0))
        await until(agent.entered)
        assert await kernel.bus.publish("sensor.temp", ev(1, etype="reading")) == 1
        assert await kernel.bus.publish("sensor.temp", ev(2, etype="reading")) == 1
        assert await kernel.bus.publish("sensor.temp", ev(3, etype="reading")) == 0  # full
        agent.release.set()
        await settle()
        assert agent.payloads == [0, 1, 2]


# --- envelope: TTL, hop, sender, thread ---------------------------------------------------


@pytest.mark.parametrize("ttl", ["1", "0", "-3"])
async def test_event_whose_ttl_runs_out_is_dropped_before_the_handler(ttl: str) -> None:
    async with open_test_kernel() as kernel:
        agent = Recorder("rcv", "work")
        handle = await kernel.spawn(agent)
        assert await kernel.bus.publish("work", ev(1, ttl=ttl)) == 1  # the bus never drops
        assert await kernel.bus.publish("work", ev(2)) == 1
        await settle()
        assert agent.payloads == [2]
        stats = handle.stats()
        assert (stats.expired, stats.handled) == (1, 1)


async def test_ttl_two_is_seen_with_hop_one_and_ttl_one() -> None:
    async with open_test_kernel() as kernel:
        agent = Recorder("rcv", "work")
        await kernel.spawn(agent)
        sent = ev(1, ttl="2")
        await kernel.bus.publish("work", sent)
        await settle()
        (seen,) = agent.seen
        assert (seen.metadata["hop"], seen.metadata["ttl"]) == ("1", "1")
        assert sent.metadata == {"ttl": "2"}  # the publisher's event is left untouched


async def test_hop_counts_on_from_the_incoming_value() -> None:
    async with open_test_kernel() as kernel:
        agent = Recorder("rcv", "work")
        await kernel.spawn(agent)
        await kernel.bus.publish("work", ev(1, ttl="5", hop="3"))
        await settle()
        (seen,) = agent.seen
        assert (seen.metadata["hop"], seen.metadata["ttl"]) == ("4", "4")


async def test_delivered_event_carries_a_full_default_envelope() -> None:
    async with open_test_kernel() as kernel:
        agent = Recorder("rcv", "work")
        await kernel.spawn(agent)
        await kernel.bus.publish("work", Event("msg", b"1", id="evt-abc"))
        await settle()
        (seen,) = agent.seen
        assert seen.id == "evt-abc"
        meta = seen.metadata
        assert meta["thread_id"] == "evt-abc"
        assert meta["correlation_id"] == "evt-abc"
        assert meta["reply_to"] == "thread.evt-abc.reply"
        assert meta["sender"] == "agent.rcv"
        assert (meta["ttl"], meta["hop"]) == ("15", "1")
        assert int(meta["ts"]) > 0


async def test_missing_sender_is_filled_with_each_receivers_own_id() -> None:
    async with open_test_kernel() as kernel:
        first, second = Recorder("first", "work"), Recorder("second", "work")
        await kernel.spawn(first)
        await kernel.spawn(second)
        await kernel.bus.publish("work", ev(1))
        await kernel.bus.publish("work", ev(2, sender=""))
        await settle()
        assert [e.metadata["sender"] for e in first.seen] == ["agent.first"] * 2
        assert [e.metadata["sender"] for e in second.seen] == ["agent.second"] * 2


async def test_sender_set_by_the_publisher_is_kept() -> None:
    async with open_test_kernel() as kernel:
        first, second = Recorder("first", "work"), Recorder("second", "work")
        await kernel.spawn(first)
        await kernel.spawn(second)
        await kernel.bus.publish("work", ev(1, sender="agent.origin", thread_id="t-1"))
        await settle()
        for agent in (first, second):
            (seen,) = agent.seen
            assert seen.metadata["sender"] == "agent.origin"
            assert seen.metadata["thread_id"] == "t-1"
            assert seen.metadata["correlation_id"] == "t-1"


# --- errors -------------------------------------------------------------------------------


async def test_spawning_an_existing_id_raises_agent_exists() -> None:
    async with open_test_kernel() as kernel:
        original = Recorder("same", "work")
        handle = await kernel.spawn(original)
        impostor = Recorder("same", "work", "other")
        with pytest.raises(AgentExists):
            await kernel.spawn(impostor)
        assert kernel.agents.get("same") is handle
        assert kernel.subscriptions("same") == ["agent.same.replies", "work"]
        assert await kernel.bus.publish("work", ev(1)) == 1
        assert await kernel.bus.publish("other", ev(2)) == 0
        await settle()
        assert original.payloads == [1]
        assert impostor.trace == []


async def test_unknown_agent_id_raises_not_found_everywhere() -> None:
    async with open_test_kernel() as kernel:
        worker = Recorder("worker", "work")
        await kernel.spawn(worker)
        with pytest.raises(AgentNotFound, match="not found"):
            kernel.agents.get("ghost")
        with pytest.raises(AgentNotFound, match="not found"):
            kernel.subscriptions("ghost")
        with pytest.raises(AgentNotFound, match="not found"):
            await kernel.subscribe_agent("ghost", "work")
        with pytest.raises(AgentNotFound, match="not found"):
            await kernel.unsubscribe_agent("ghost", "work")
        with pytest.raises(AgentNotFound, match="not found") as info:
            await kernel.stop_agent("ghost")
        assert isinstance(info.value, AgentError)
        assert kernel.agents.list() == ["worker"]
        assert await kernel.bus.publish("work", ev(1)) == 1
        await settle()
        assert worker.payloads == [1]


async def test_spawn_many_starts_every_agent_and_returns_their_handles_in_order() -> None:
    async with open_test_kernel() as kernel:
        agents = [Recorder(f"w{i}", "work") for i in range(5)]
        handles = await kernel.spawn_many(agents, restart="transient", max_restarts=2)
        assert [handle.agent_id for handle in handles] == ["w0", "w1", "w2", "w3", "w4"]
        assert all(kernel.agents.get(h.agent_id) is h for h in handles)
        assert all(h.status == "running" for h in handles)
        assert {h.policy.restart for h in handles} == {"transient"}
        assert {h.policy.max_restarts for h in handles} == {2}
        assert all(agent.trace == ["start"] for agent in agents)  # every on_start has run
        assert await kernel.bus.publish("work", ev(1)) == 5


@pytest.mark.parametrize(
    ("bad", "error"),
    [
        (lambda: Recorder("ok-0", "work"), AgentExists),  # the same id twice in the batch
        (lambda: Recorder("twice", "w", "w"), AlreadySubscribed),  # a pattern twice
        (lambda: Recorder("wild", "a.>.b"), TopicError),  # a bad pattern
        (lambda: "not an agent", AgentError),
    ],
    ids=["duplicate-id", "duplicate-topic", "bad-pattern", "not-an-agent"],
)
async def test_spawn_many_with_one_bad_agent_starts_none(
    bad: Callable[[], Any], error: type[Exception]
) -> None:
    async with open_test_kernel() as kernel:
        batch = [Recorder("ok-0", "work"), Recorder("ok-1", "work"), bad()]
        with pytest.raises(error):
            await kernel.spawn_many(batch)
        assert kernel.agents.list() == []
        assert await kernel.bus.publish("work", ev(1)) == 0  # nothing was left attached
        assert [agent.trace for agent in batch[:2]] == [[], []]


@pytest.mark.parametrize("pattern", ["room.lobby", "agent.dup.replies"])
async def test_subscribing_twice_raises_already_subscribed(pattern: str) -> None:
    async with open_test_kernel() as kernel:
        agent = Recorder("dup", "room.lobby")
        await kernel.spawn(agent)
        with pytest.raises(AlreadySubscribed, match="already subscribed"):
            await kernel.subscribe_agent("dup", pattern)
        assert kernel.subscriptions("dup") == ["agent.dup.replies", "room.lobby"]
        assert await kernel.bus.publish(pattern, ev(1)) == 1  # still one delivery, not two
        await settle()
        assert agent.payloads == [1]


@pytest.mark.parametrize(
    "topics", [("work", "work"), ("work", "agent.twice.replies")], ids=["repeated", "private"]
)
async def test_declaring_a_topic_twice_is_refused_at_spawn(topics: tuple[str, ...]) -> None:
    async with open_test_kernel() as kernel:
        with pytest.raises(AlreadySubscribed, match="already subscribed"):
            await kernel.spawn(Recorder("twice", *topics))
        assert "twice" not in kernel.agents.list()
        assert await kernel.bus.publish("work", ev(1)) == 0  # nothing was left attached
        assert await kernel.bus.publish("agent.twice.replies", ev(2)) == 0
        fixed = Recorder("twice", "work")
        await kernel.spawn(fixed)
        assert await kernel.bus.publish("work", ev(3)) == 1
        await settle()
        assert fixed.payloads == [3]


async def test_unsubscribing_a_pattern_not_subscribed_raises_not_subscribed() -> None:
    async with open_test_kernel() as kernel:
        agent = Recorder("agent1", "room.lobby")
        await kernel.spawn(agent)
        with pytest.raises(NotSubscribed, match="not subscribed"):
            await kernel.unsubscribe_agent("agent1", "room.other")
        with pytest.raises(NotSubscribed, match="not subscribed"):
            await kernel.unsubscribe_agent("agent1", "room.*")  # a pattern, not a match
        assert kernel.subscriptions("agent1") == ["agent.agent1.replies", "room.lobby"]
        await kernel.unsubscribe_agent("agent1", "room.lobby")
        with pytest.raises(NotSubscribed, match="not subscribed"):
            await kernel.unsubscribe_agent("agent1", "room.lobby")
        assert await kernel.bus.publish("agent.agent1.replies", ev(1)) == 1
        await settle()
        assert agent.payloads == [1]


BAD_IDS = ["a b", " a", "a\tb", "a*", "*", "a.*", "a.>", ">", "", "a..b", ".a", "a.", "a/b"]


@pytest.mark.parametrize("agent_id", BAD_IDS)
def test_invalid_agent_ids_are_refused_at_construction(agent_id: str) -> None:
    with pytest.raises(InvalidAgentId):
        Agent(agent_id)
    with pytest.raises(InvalidAgentId):
        Recorder(agent_id)
    with pytest.raises(InvalidAgentId):
        loomk.agent(agent_id)


@pytest.mark.parametrize("agent_id", [None, 7, b"abc"])
def test_non_string_agent_ids_are_refused(agent_id: Any) -> None:
    with pytest.raises(InvalidAgentId):
        Agent(agent_id)


def test_invalid_agent_id_is_a_value_error_and_an_agent_error() -> None:
    with pytest.raises(InvalidAgentId) as info:
        Agent("has space")
    assert isinstance(info.value, ValueError)
    assert isinstance(info.value, AgentError)


@pytest.mark.parametrize("agent_id", ["a", "a.b.c", "team-1:worker_2", "A9"])
async def test_valid_agent_ids_get_a_working_private_topic(agent_id: str) -> None:
    async with open_test_kernel() as kernel:
        agent = Recorder(agent_id)
        await kernel.spawn(agent)
        assert await kernel.bus.publish(f"agent.{agent_id}.replies", ev(1)) == 1
        await settle()
        assert agent.payloads == [1]


@pytest.mark.parametrize("pattern", ["", "a..b", "a.>.b", "a b", "a*", ".a"])
async def test_subscribing_to_an_invalid_pattern_raises_topic_error(pattern: str) -> None:
    async with open_test_kernel() as kernel:
        agent = Recorder("agent1", "work")
        await kernel.spawn(agent)
        with pytest.raises(TopicError):
            await kernel.subscribe_agent("agent1", pattern)
        assert kernel.subscriptions("agent1") == ["agent.agent1.replies", "work"]
        assert await kernel.bus.publish("work", ev(1)) == 1
        await settle()
        assert agent.payloads == [1]


async def test_declaring_an_invalid_pattern_is_refused_at_spawn() -> None:
    async with open_test_kernel() as kernel:
        with pytest.raises(TopicError):
            await kernel.spawn(Recorder("broken", "work", "bad..pattern"))
        assert "broken" not in kernel.agents.list()
        assert await kernel.bus.publish("work", ev(1)) == 0
        assert await kernel.bus.publish("agent.broken.replies", ev(1)) == 0
        worker = Recorder("worker", "work")
        await kernel.spawn(worker)
        assert await kernel.bus.publish("work", ev(2)) == 1
        await settle()
        assert worker.payloads == [2]


async def _plain_handler(ctx: Context, event: Event) -> None:
    return None


@pytest.mark.parametrize(
    "thing",
    [object(), Recorder, "worker", _plain_handler, None],
    ids=["object", "agent-class", "str", "function", "none"],
)
async def test_spawning_something_that_is_not_an_agent_raises_agent_error(thing: Any) -> None:
    async with open_test_kernel() as kernel:
        worker = Recorder("worker", "work")
        await kernel.spawn(worker)
        with pytest.raises(AgentError):
            await kernel.spawn(thing)
        assert kernel.agents.list() == ["worker"]
        assert await kernel.bus.publish("work", ev(1)) == 1
        await settle()
        assert worker.payloads == [1]


# --- graceful stop (unlike Loom) ----------------------------------------------------------


async def test_stop_handles_what_was_queued_then_runs_on_stop() -> None:
    async with open_test_kernel() as kernel:
        agent = Gated("graceful", "work")
        handle = await kernel.spawn(agent)
        await kernel.bus.publish("work", gate(0))
        await until(agent.entered)
        for i in (1, 2, 3):
            assert await kernel.bus.publish("work", ev(i)) == 1
        async with trio.open_nursery() as nursery:
            nursery.start_soon(kernel.stop_agent, "graceful")
            await settle()
            assert handle.stats().status == "stopping"
            assert await kernel.bus.publish("work", ev(9)) == 0  # no new deliveries
            assert await kernel.bus.publish("agent.graceful.replies", ev(9)) == 0
            assert agent.trace == ["start"]
            agent.release.set()
        assert agent.payloads == [0, 1, 2, 3]
        assert agent.trace == ["start", "event 0", "event 1", "event 2", "event 3", "stop"]
        assert handle.stats().handled == 4
        assert "graceful" not in kernel.agents.list()


async def test_stop_runs_on_stop_of_an_idle_agent_exactly_once() -> None:
    async with open_test_kernel() as kernel:
        agent = Recorder("idle", "work")
        await kernel.spawn(agent)
        await kernel.stop_agent("idle")
        assert agent.trace == ["start", "stop"]
    assert agent.trace == ["start", "stop"]  # shutdown does not stop it again


async def test_stop_cancels_a_handler_that_hangs_past_the_timeout(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with open_test_kernel() as kernel:
        stuck = Hanging("stuck", "work")
        bystander = Recorder("bystander", "work")
        handle = await kernel.spawn(stuck)
        await kernel.spawn(bystander)
        assert await kernel.bus.publish("work", ev(1)) == 2
        await until(stuck.entered)
        await bystander.wait_for(1)

        started = trio.current_time()
        await kernel.stop_agent("stuck", timeout_s=2.0)
        assert trio.current_time() - started >= 2.0
        assert stuck.trace == ["start", "cancelled", "stop"]
        assert handle.stats().status == "stopped"
        assert kernel.agents.list() == ["bystander"]

        assert await kernel.bus.publish("work", ev(2)) == 1
        await bystander.wait_for(2)
        assert bystander.payloads == [1, 2]
        assert bystander.trace[-1] != "stop"


async def test_stopping_one_agent_does_not_hold_up_another() -> None:
    async with open_test_kernel() as kernel:
        slow = Gated("slow", "work")
        other = Recorder("other", "work")
        await kernel.spawn(slow)
        await kernel.spawn(other)
        await kernel.bus.publish("work", gate(0))
        await until(slow.entered)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(kernel.stop_agent, "slow")
            await settle()
            assert "slow" in kernel.agents.list()  # still stopping
            assert await kernel.bus.publish("work", ev(1)) == 1  # only "other" now
            await kernel.subscribe_agent("other", "more")
            assert await kernel.bus.publish("more", ev(2)) == 1
            await other.wait_for(3)
            assert other.payloads == [0, 1, 2]
            assert other.trace[-1] != "stop"
            slow.release.set()
        assert slow.trace[-1] == "stop"
        assert kernel.agents.list() == ["other"]


async def test_the_private_reply_topic_can_be_unsubscribed() -> None:
    async with open_test_kernel() as kernel:
        agent = Recorder("quiet", "work")
        await kernel.spawn(agent)
        await kernel.unsubscribe_agent("quiet", "agent.quiet.replies")
        assert kernel.subscriptions("quiet") == ["work"]
        assert await kernel.bus.publish("agent.quiet.replies", ev(1)) == 0
        assert await kernel.bus.publish("work", ev(2)) == 1
        await settle()
        assert agent.payloads == [2]
        await kernel.subscribe_agent("quiet", "agent.quiet.replies")
        assert await kernel.bus.publish("agent.quiet.replies", ev(3)) == 1
        await settle()
        assert agent.payloads == [2, 3]


async def test_events_queued_before_unsubscribe_are_still_handled() -> None:
    async with open_test_kernel() as kernel:
        agent = Gated("busy", "work")
        handle = await kernel.spawn(agent)
        await kernel.bus.publish("work", gate(0))
        await until(agent.entered)
        for i in (1, 2):
            await kernel.bus.publish("work", ev(i))
        await kernel.unsubscribe_agent("busy", "work")
        assert await kernel.bus.publish("work", ev(3)) == 0
        assert handle.stats().mailbox_depth == 2
        agent.release.set()
        await settle()
        assert agent.payloads == [0, 1, 2]
        assert handle.stats().mailbox_depth == 0


# --- the mailbox --------------------------------------------------------------------------


async def test_one_handler_call_at_a_time() -> None:
    class Counter(Agent):
        topics = (Topic("fast", qos=QoS.REALTIME), "normal", Topic("slow", qos=QoS.BACKGROUND))

        def __init__(self, agent_id: str) -> None:
            super().__init__(agent_id)
            self.active = 0
            self.max_active = 0
            self.count = 0

        async def on_event(self, ctx: Context, event: Event) -> None:
            self.active += 1
            self.max_active = max(self.max_active, self.active)
            for _ in range(3):
                await trio.lowlevel.checkpoint()
            self.active -= 1
            self.count += 1

    async def publish_many(kernel: loomk.Kernel, topic: str) -> None:
        for i in range(10):
            await kernel.bus.publish(topic, ev(i))
            await trio.lowlevel.checkpoint()

    async with open_test_kernel() as kernel:
        agent = Counter("serial")
        await kernel.spawn(agent)
        async with trio.open_nursery() as nursery:
            for topic in ("fast", "normal", "slow"):
                nursery.start_soon(publish_many, kernel, topic)
        await settle()
        assert agent.count == 30
        assert agent.max_active == 1


async def test_realtime_lanes_drain_before_batched_before_background() -> None:
    async with open_test_kernel() as kernel:
        agent = Gated(
            "prio",
            Topic("p.bg", qos=QoS.BACKGROUND),
            Topic("p.bt", qos=QoS.BATCHED),
            Topic("p.rt", qos=QoS.REALTIME),
        )
        handle = await kernel.spawn(agent)
        await kernel.bus.publish("p.bg", gate(0))
        await until(agent.entered)
        for topic, i in [
            ("p.bg", 1),
            ("p.bt", 2),
            ("p.rt", 3),
            ("p.bg", 4),
            ("p.rt", 5),
            ("p.bt", 6),
            ("p.rt", 7),
        ]:
            assert await kernel.bus.publish(topic, ev(i)) == 1
        stats = handle.stats()
        assert stats.mailbox_depth == 7
        assert {lane.pattern: lane.depth for lane in stats.lanes} == {
            "agent.prio.replies": 0,
            "p.bg": 2,
            "p.bt": 2,
            "p.rt": 3,
        }
        agent.release.set()
        await settle()
        assert agent.payloads == [0, 3, 5, 7, 2, 6, 1, 4]
        assert handle.stats().mailbox_depth == 0


async def test_mailbox_high_water_counts_the_whole_mailbox() -> None:
    async with open_test_kernel() as kernel:
        agent = Gated("deep", "a", "b", "c")
        handle = await kernel.spawn(agent)
        await kernel.bus.publish("a", gate(0))
        await until(agent.entered)
        for i, topic in enumerate(["a", "b", "c", "a", "b", "c"], start=1):
            await kernel.bus.publish(topic, ev(i))
        piled = handle.stats()
        agent.release.set()
        await settle()
        drained = handle.stats()
    assert piled.mailbox_depth == 6
    assert piled.mailbox_high_water >= piled.mailbox_depth
    assert piled.mailbox_high_water == 6
    assert drained.mailbox_depth == 0
    assert drained.mailbox_high_water == 6


# --- the Context --------------------------------------------------------------------------


class Forwarder(Agent):
    """Forwards each ``in`` event to ``out``, once without and once with a sender."""

    topics = ("in",)

    def __init__(self, agent_id: str) -> None:
        super().__init__(agent_id)
        self.results: list[int] = []

    async def on_event(self, ctx: Context, event: Event) -> None:
        self.results.append(await ctx.emit("out", Event("fwd", event.payload)))
        boss = Event("fwd", b"boss", metadata={"sender": "agent.boss"})
        self.results.append(await ctx.emit("out", boss))
        self.results.append(await ctx.emit("nowhere", Event("fwd", b"lost")))


async def test_emit_stamps_the_sender_and_is_held_until_the_handler_returns() -> None:
    async with open_test_kernel() as kernel:
        agent = Forwarder("emitter")
        await kernel.spawn(agent)
        watch, watch2 = kernel.bus.subscribe("out"), kernel.bus.subscribe("out")
        await kernel.bus.publish("in", ev(1))
        await settle()
        assert agent.results == [0, 0, 0]  # held in the outbox while the handler ran
        received = drain(watch)
        assert [event.payload for _, event in received] == [b"1", b"boss"]
        assert [event.metadata["sender"] for _, event in received] == [
            "agent.emitter",
            "agent.boss",
        ]
        assert len(drain(watch2)) == 2


class Relay(Agent):
    """Passes each ``in`` event on to ``out`` as a new type (a relay, as agents write one)."""

    topics = ("in",)

    async def on_event(self, ctx: Context, event: Event) -> None:
        await ctx.emit("out", event.replace(type="relayed"))


async def test_a_relayed_event_leaves_without_the_link_origin_it_came_in_with() -> None:
    # An event that came in through a link carries the link's origin, so the link does not
    # send it back out; an agent passing it on speaks for itself, and the link must take it.
    async with open_test_kernel() as kernel:
        link = BusLink(kernel.bus, kernel.broker, "far", export=["out"])
        link.open()
        try:
            await kernel.spawn(Relay("relay"))
            watch = kernel.bus.subscribe("out")
            incoming = Event("news", b"hi", metadata={"sender": "agent.far", "thread_id": "t1"})
            await link.incoming([("in", incoming)])
            with trio.fail_after(WAIT_LIMIT_S):
                (sent_topic, sent), *_ = await link.outgoing()
            ((topic, relayed),) = drain(watch)
        finally:
            link.close()
    assert (topic, relayed.type, relayed.payload) == ("out", "relayed", b"hi")
    assert ORIGIN not in relayed.metadata
    assert relayed.metadata["sender"] == "agent.far"  # the rest of the envelope is kept
    assert relayed.metadata["thread_id"] == "t1"
    assert (sent_topic, sent.type) == ("out", "relayed")  # the link sends it on


class Replier(Agent):
    topics = ("requests",)

    async def on_event(self, ctx: Context, event: Event) -> None:
        await ctx.reply(event, Event("answer", b"ok:" + event.payload))


async def test_reply_goes_to_the_thread_reply_topic_by_default() -> None:
    async with open_test_kernel() as kernel:
        await kernel.spawn(Replier("replier"))
        watch = kernel.bus.subscribe("thread.>")
        request = Event(
            "ask",
            b"1",
            metadata={"thread_id": "t-7", "correlation_id": "c-9", "sender": "agent.asker"},
        )
        await kernel.bus.publish("requests", request)
        await settle()
        ((topic, answer),) = drain(watch)
        assert topic == "thread.t-7.reply"
        assert (answer.type, answer.payload) == ("answer", b"ok:1")
        assert answer.metadata["thread_id"] == "t-7"
        assert answer.metadata["correlation_id"] == "c-9"
        assert answer.metadata["sender"] == "agent.replier"


async def test_reply_to_a_request_without_envelope_uses_the_request_id() -> None:
    async with open_test_kernel() as kernel:
        await kernel.spawn(Replier("replier"))
        watch = kernel.bus.subscribe("thread.>")
        await kernel.bus.publish("requests", Event("ask", b"2", id="req-1"))
        await settle()
        ((topic, answer),) = drain(watch)
        assert topic == "thread.req-1.reply"
        assert answer.metadata["thread_id"] == "req-1"
        assert answer.metadata["correlation_id"] == "req-1"
        assert answer.metadata["sender"] == "agent.replier"


async def test_reply_honours_an_explicit_reply_to() -> None:
    async with open_test_kernel() as kernel:
        asker = Recorder("asker")
        await kernel.spawn(asker)
        await kernel.spawn(Replier("replier"))
        watch = kernel.bus.subscribe("thread.>")
        envelope = loomk.Envelope.with_agent_reply("t-1", "agent.asker", "asker")
        request = envelope.attach_to_event(Event("ask", b"3"))
        await kernel.bus.publish("requests", request)
        await settle()
        (answer,) = asker.seen
        assert answer.payload == b"ok:3"
        assert answer.metadata["thread_id"] == "t-1"
        assert answer.metadata["correlation_id"] == "t-1"
        assert answer.metadata["sender"] == "agent.replier"
        assert drain(watch) == []


async def test_context_identity_and_own_subscriptions() -> None:
    class SelfManaged(Recorder):
        contexts: list[Context]

        async def on_start(self, ctx: Context) -> None:
            self.contexts = [ctx]
            ctx.log.info("starting", agent=ctx.agent_id)
            await ctx.subscribe("news.sports", qos=QoS.REALTIME)

        async def on_event(self, ctx: Context, event: Event) -> None:
            self.contexts.append(ctx)
            await self.record(event)
            if event.type == "leave":
                await ctx.unsubscribe("news.sports")

    async with open_test_kernel() as kernel:
        agent = SelfManaged("self")
        handle = await kernel.spawn(agent)
        ctx = agent.contexts[0]
        assert ctx.agent_id == "self"
        assert ctx.kernel is kernel
        assert ctx.reply_topic == "agent.self.replies"
        assert kernel.subscriptions("self") == ["agent.self.replies", "news.sports"]
        (lane,) = [lane for lane in handle.stats().lanes if lane.pattern == "news.sports"]
        assert lane.qos == QoS.REALTIME

        assert await kernel.bus.publish("news.sports", ev(1)) == 1
        assert await kernel.bus.publish("news.sports", ev(2, etype="leave")) == 1
        await settle()
        assert kernel.subscriptions("self") == ["agent.self.replies"]
        assert await kernel.bus.publish("news.sports", ev(3)) == 0
        await settle()
        assert agent.payloads == [1, 2]
        assert all(seen is ctx for seen in agent.contexts)


@pytest.mark.parametrize("restart", ["transient", "temporary"])
async def test_ctx_stop_ends_the_agent_for_good(restart: Any) -> None:
    class Quitter(Recorder):
        async def on_event(self, ctx: Context, event: Event) -> None:
            await self.record(event)
            if event.type == "quit":
                ctx.stop()

    async with open_test_kernel() as kernel:
        agent = Quitter("quitter", "work")
        handle = await kernel.spawn(agent, restart=restart)
        await kernel.bus.publish("work", ev(1))
        await kernel.bus.publish("work", ev(2, etype="quit"))
        await kernel.bus.publish("work", ev(3))
        await settle()
        assert agent.payloads == [1, 2]  # nothing is handled after the current event
        assert agent.trace == ["start", "event 1", "event 2", "stop"]
        assert kernel.agents.list() == []
        stats = handle.stats()
        assert (stats.status, stats.failures, stats.restarts) == ("stopped", 0, 0)
        assert await kernel.bus.publish("work", ev(4)) == 0
        with pytest.raises(AgentNotFound, match="not found"):
            await kernel.stop_agent("quitter")


class KeepsContexts(Recorder):
    """Keeps the context of each of its instances (shared through the constructor)."""

    def __init__(self, agent_id: str, *topics: str, contexts: list[Context]) -> None:
        super().__init__(agent_id, *topics)
        self.contexts = contexts

    async def on_start(self, ctx: Context) -> None:
        await super().on_start(ctx)
        self.contexts.append(ctx)


async def test_ctx_stop_of_an_idle_agent_from_outside_the_handler() -> None:
    async with open_test_kernel() as kernel:
        contexts: list[Context] = []
        agent = KeepsContexts("idle", "work", contexts=contexts)
        await kernel.spawn(agent, restart="temporary")
        await settle()
        contexts[0].stop()
        await settle()
        assert kernel.agents.list() == []
        assert agent.trace == ["start", "stop"]


class KeepsContextsReused(KeepsContexts):
    """Restarted as the same instance (``fresh`` may be overridden so)."""

    def fresh(self) -> Agent:
        return self


@pytest.mark.parametrize("kind", [KeepsContexts, KeepsContextsReused])
async def test_a_stale_context_cannot_stop_the_next_instance(kind: type[KeepsContexts]) -> None:
    async with open_test_kernel() as kernel:
        contexts: list[Context] = []
        handle = await kernel.spawn(
            kind("phoenix", "work", contexts=contexts), restart="permanent", backoff_s=0
        )
        contexts[0].stop()  # the first instance ends normally; a permanent agent restarts
        await settle()
        assert (handle.restarts, handle.status, len(contexts)) == (1, "running", 2)
        contexts[0].stop()  # the first instance's context: no effect on the second
        await kernel.bus.publish("work", ev(1))
        await settle()
        assert (handle.restarts, handle.status) == (1, "running")
        assert handle.handled == 1


# --- the handler contract -----------------------------------------------------------------


@pytest.mark.parametrize("returned", ["oops", 0, False, []], ids=repr)
async def test_handler_returning_a_value_breaks_the_contract(returned: object) -> None:
    class Sloppy(Agent):
        topics = ("work",)

        def __init__(self, agent_id: str, seen: list[int]) -> None:
            super().__init__(agent_id)
            self.seen = seen

        async def on_event(self, ctx: Context, event: Event) -> None:
            self.seen.append(int(event.payload))
            if event.type == "bad":
                return returned  # type: ignore[return-value]
            return None

    async with open_test_kernel() as kernel:
        seen: list[int] = []
        first = Sloppy("sloppy", seen)
        handle = await kernel.spawn(first, backoff_s=0)
        for i, etype in [(1, "ok"), (2, "bad"), (3, "ok"), (4, "ok")]:
            await kernel.bus.publish("work", ev(i, etype=etype))
        await settle()
        assert seen == [1, 2, 3, 4]  # the fresh instance picks up the queued events
        stats = handle.stats()
        assert stats.failures == 1
        assert stats.restarts == 1
        assert stats.status == "running"
        assert isinstance(handle.last_error, AgentContractError)
        assert handle.agent is not first
        assert await kernel.bus.publish("work", ev(5)) == 1
        await settle()
        assert seen == [1, 2, 3, 4, 5]


async def test_agent_that_subscribes_in_on_start_keeps_working_after_a_failure() -> None:
    class Subscriber(Agent):
        def __init__(self, agent_id: str, seen: list[int]) -> None:
            super().__init__(agent_id)
            self.seen = seen

        async def on_start(self, ctx: Context) -> None:
            await ctx.subscribe("news")

        async def on_event(self, ctx: Context, event: Event) -> None:
            self.seen.append(int(event.payload))
            if event.type == "bad":
                raise RuntimeError("handler failed")

    async with open_test_kernel() as kernel:
        seen: list[int] = []
        handle = await kernel.spawn(Subscriber("subscriber", seen), backoff_s=0)
        await kernel.bus.publish("news", ev(1, etype="bad"))
        await settle()
        stats = handle.stats()
        assert (stats.status, stats.failures, stats.restarts) == ("running", 1, 1)
        assert kernel.agents.list() == ["subscriber"]
        assert await kernel.bus.publish("news", ev(2)) == 1
        await settle()
        assert seen == [1, 2]


async def test_a_stop_while_a_new_instance_ends_carried_subscriptions_is_not_a_failure() -> None:
    """The first instance subscribed itself to many patterns; the next one makes none again,
    so they end after its on_start, one checkpoint each. A stop landing meanwhile is a stop."""
    patterns = [f"news.{i}" for i in range(10)]

    class Reader(Agent):
        def __init__(self, agent_id: str, instances: list[int]) -> None:
            super().__init__(agent_id)
            self.instances = instances

        async def on_start(self, ctx: Context) -> None:
            self.instances.append(len(self.instances))
            if len(self.instances) == 1:
                for pattern in patterns:
                    await ctx.subscribe(pattern)
            else:  # the stop runs at the runtime's next checkpoint: ending what was carried
                ctx.kernel.start_soon(ctx.kernel.stop_agent, ctx.agent_id)  # type: ignore[attr-defined]

        async def on_event(self, ctx: Context, event: Event) -> None:
            raise RuntimeError("the first instance fails")

    async with open_test_kernel() as kernel:
        instances: list[int] = []
        handle = await kernel.spawn(Reader("reader", instances), backoff_s=0)
        await kernel.bus.publish("news.0", ev(1))
        await settle()
        assert instances == [0, 1]
        assert (handle.status, handle.failures, handle.restarts) == ("stopped", 1, 1)
        assert isinstance(handle.last_error, RuntimeError)
        assert kernel.agents.list() == []


async def test_on_stop_that_raises_does_not_break_stop() -> None:
    class BadStop(Recorder):
        async def on_stop(self, ctx: Context) -> None:
            self.trace.append("stop")
            raise RuntimeError("on_stop failed")

    async with open_test_kernel() as kernel:
        agent = BadStop("bad", "work")
        other = Recorder("other", "work")
        await kernel.spawn(agent)
        await kernel.spawn(other)
        await kernel.stop_agent("bad")
        assert agent.trace == ["start", "stop"]
        assert kernel.agents.list() == ["other"]
        assert await kernel.bus.publish("work", ev(1)) == 1
        await settle()
        assert other.payloads == [1]


async def test_handler_returning_none_explicitly_is_fine() -> None:
    @loomk.agent("explicit", topics=["work"])
    async def explicit(ctx: Context, event: Event) -> None:
        return None

    async with open_test_kernel() as kernel:
        handle = await kernel.spawn(explicit)
        await kernel.bus.publish("work", ev(1))
        await settle()
        stats = handle.stats()
        assert (stats.handled, stats.failures, stats.restarts) == (1, 0, 0)


# --- function agents ----------------------------------------------------------------------


async def test_decorated_function_is_a_spawnable_agent() -> None:
    seen: list[tuple[str, str]] = []

    @loomk.agent("greeter", topics=["hello.>"], capabilities=["greet"], metadata={"lang": "en"})
    async def greeter(ctx: Context, event: Event) -> None:
        seen.append((ctx.agent_id, event.type))
        await ctx.emit("greetings", Event("greeting", b"hi " + event.payload))

    assert isinstance(greeter, Agent)
    assert greeter.agent_id == "greeter"
    async with open_test_kernel() as kernel:
        watch = kernel.bus.subscribe("greetings")
        await kernel.spawn(greeter)
        assert kernel.subscriptions("greeter") == ["agent.greeter.replies", "hello.>"]
        assert await kernel.bus.publish("hello.world", Event("hello", b"world")) == 1
        await settle()
        assert seen == [("greeter", "hello")]
        ((_, greeting),) = drain(watch)
        assert greeting.payload == b"hi world"
        assert greeting.metadata["sender"] == "agent.greeter"


async def test_two_function_agents_keep_their_own_topics() -> None:
    calls: list[str] = []

    def make(agent_id: str, topics: Sequence[str]) -> Agent:
        @loomk.agent(agent_id, topics=topics)
        async def handler(ctx: Context, event: Event) -> None:
            calls.append(ctx.agent_id)

        return handler

    async with open_test_kernel() as kernel:
        await kernel.spawn(make("left", ["side.left"]))
        await kernel.spawn(make("right", ["side.right"]))
        assert kernel.subscriptions("left") == ["agent.left.replies", "side.left"]
        assert kernel.subscriptions("right") == ["agent.right.replies", "side.right"]
        await kernel.bus.publish("side.right", ev(1))
        await settle()
        assert calls == ["right"]


class SelfStopper(Recorder):
    """Stops itself through the kernel from inside its handler, on an event of type 'quit'."""

    async def on_event(self, ctx: Context, event: Event) -> None:
        if event.type == "quit":
            await ctx.kernel.stop_agent(ctx.agent_id)
            self.trace.append("stop_agent returned")
        await self.record(event)


async def test_an_agent_stopping_itself_through_the_kernel_does_not_wait_for_itself(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with open_test_kernel(shutdown_timeout_s=30) as kernel:
        agent = SelfStopper("quitter", "jobs")
        await kernel.spawn(agent)
        before = trio.current_time()
        await kernel.bus.publish("jobs", Event("quit", b"1"))
        await kernel.bus.publish("jobs", ev(2))  # queued before the stop: still handled
        await agent.wait_for(2)
        await trio.testing.wait_all_tasks_blocked()
        assert trio.current_time() == before  # no stop timeout elapsed
        assert agent.trace == ["start", "stop_agent returned", "event 1", "event 2", "stop"]
        assert "quitter" not in kernel.agents.list()
        assert await kernel.bus.publish("jobs", ev(3)) == 0
