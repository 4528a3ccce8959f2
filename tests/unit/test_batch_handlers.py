"""Batch handlers: an agent with ``on_batch`` takes what is queued, up to ``batch_max``, in one
call, committed as one transaction, with the supervision, TTL, deadline and stats rules of
one event at a time."""

from __future__ import annotations

import pytest
import trio
import trio.testing

from loomk import Agent, AgentContractError, Context, Event, QoS, Topic
from loomk.testing import capture_events, open_test_kernel

settle = trio.testing.wait_all_tasks_blocked


class Batcher(Agent):
    """Records each batch's payloads; payload ``boom`` makes the batch raise, ``stop`` ends
    the instance after the batch. Writes the count of events it saw to its state and emits
    one ``seen`` event per batch."""

    topics = ("feed", Topic("urgent", qos=QoS.REALTIME))

    def __init__(self, agent_id: str, batches: list[list[bytes]], batch_max: int = 256) -> None:
        super().__init__(agent_id)
        self.batches = batches
        self.batch_max = batch_max  # type: ignore[misc]  # per-instance bound

    async def on_batch(self, ctx: Context, events: list[Event]) -> None:
        payloads = [event.payload for event in events]
        self.batches.append(payloads)
        ctx.state["seen"] = ctx.state.get("seen", 0) + len(events)
        await ctx.emit("seen", Event("seen", str(len(events)).encode()))
        if b"boom" in payloads:
            raise RuntimeError("bad batch")
        if b"stop" in payloads:
            ctx.stop()


async def publish(kernel: object, topic: str, *payloads: bytes, **metadata: str) -> None:
    for payload in payloads:
        await kernel.bus.publish(topic, Event("reading", payload, metadata=metadata))  # type: ignore[attr-defined]


async def test_what_is_queued_comes_in_one_call_in_order_and_counts_as_events() -> None:
    batches: list[list[bytes]] = []
    async with open_test_kernel() as kernel:
        handle = await kernel.spawn(Batcher("b", batches))
        with capture_events(kernel.bus, "seen") as seen:
            await publish(kernel, "feed", *(str(i).encode() for i in range(10)))
            await settle()
            await publish(kernel, "feed", b"10")
            await settle()
        assert batches == [[str(i).encode() for i in range(10)], [b"10"]]
        assert handle.handled == 11
        assert [event.payload for event in seen.events] == [b"10", b"1"]  # one per batch
        assert kernel.agent_state("b").persistent_state == b'{"seen": 11}'


async def test_a_batch_is_at_most_batch_max_and_taken_by_priority() -> None:
    batches: list[list[bytes]] = []
    async with open_test_kernel() as kernel:
        await kernel.spawn(Batcher("b", batches, batch_max=4))
        async with trio.open_nursery() as nursery:  # all queued before the agent runs
            nursery.start_soon(publish, kernel, "feed", b"f1", b"f2", b"f3")
            nursery.start_soon(publish, kernel, "urgent", b"u1", b"u2", b"u3")
        await settle()
    assert batches == [[b"u1", b"u2", b"u3", b"f1"], [b"f2", b"f3"]]


async def test_a_batch_that_raises_applies_nothing_and_the_agent_restarts(
    autojump_clock: trio.testing.MockClock,
) -> None:
    batches: list[list[bytes]] = []
    async with open_test_kernel() as kernel:
        handle = await kernel.spawn(Batcher("b", batches), backoff_s=0)
        with capture_events(kernel.bus, "seen") as seen:
            await publish(kernel, "feed", b"ok", b"boom")
            await settle()
            await publish(kernel, "feed", b"after")
            await settle()
        assert batches == [[b"ok", b"boom"], [b"after"]]  # the failed batch is not retried
        assert (handle.failures, handle.restarts, handle.handled) == (1, 1, 1)
        assert [event.payload for event in seen.events] == [b"1"]  # the failed one held its
        assert kernel.agent_state("b").persistent_state == b'{"seen": 1}'


async def test_expired_events_are_dropped_before_the_batch() -> None:
    batches: list[list[bytes]] = []
    async with open_test_kernel() as kernel:
        handle = await kernel.spawn(Batcher("b", batches))
        await publish(kernel, "feed", b"spent", ttl="1")
        await publish(kernel, "feed", b"fresh")
        await settle()
    assert batches == [[b"fresh"]]
    assert (handle.expired, handle.handled) == (1, 1)


async def test_a_batch_of_requests_past_its_earliest_deadline_commits_nothing(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """Requests and other events never share a batch: the requests' batch is cut at the
    earliest deadline, the plain event after it is handled in a batch of its own."""
    sizes: list[int] = []

    class Slow(Agent):
        topics = ("feed",)

        async def on_batch(self, ctx: Context, events: list[Event]) -> None:
            sizes.append(len(events))
            ctx.state["handled"] = ctx.state.get("handled", 0) + len(events)
            await trio.sleep(10)

    async with open_test_kernel() as kernel:
        handle = await kernel.spawn(Slow("slow"))
        # three publishes without a checkpoint between them: all queued before it runs
        await kernel.bus.publish("feed", Event("req", metadata=_due_in(3)))
        await kernel.bus.publish("feed", Event("req", metadata=_due_in(2)))
        await kernel.bus.publish("feed", Event("reading", b"plain"))
        await trio.sleep(5)  # virtual: past the earliest deadline (2 s), within the sleep
        assert (handle.timed_out, handle.handled) == (2, 0)
        await trio.sleep(20)
        assert sizes == [2, 1]
        assert (handle.timed_out, handle.handled) == (2, 1)
        assert kernel.agent_state("slow").persistent_state == b'{"handled": 1}'


async def test_late_requests_are_dropped_from_a_batch_one_by_one() -> None:
    batches: list[list[bytes]] = []
    async with open_test_kernel() as kernel:
        handle = await kernel.spawn(Batcher("b", batches))
        await publish(kernel, "feed", b"p1")  # (no checkpoint: all queued before it runs)
        await kernel.bus.publish("feed", Event("req", b"late", metadata={"deadline_ms": "1"}))
        await publish(kernel, "feed", b"p2")
        await settle()
    assert batches == [[b"p1", b"p2"]]  # the late request went; the others were handled
    assert (handle.timed_out, handle.handled) == (1, 2)


def _due_in(seconds: float) -> dict[str, str]:
    from loomk.events import now_ms

    return {"deadline_ms": str(now_ms() + int(seconds * 1000))}


async def test_ctx_stop_in_a_batch_ends_the_instance_after_it() -> None:
    batches: list[list[bytes]] = []
    async with open_test_kernel() as kernel:
        handle = await kernel.spawn(Batcher("b", batches), restart="temporary")
        await publish(kernel, "feed", b"stop")
        await settle()
        assert handle.status == "stopped"
        assert handle.handled == 1
        assert kernel.agents.list() == []


@pytest.mark.parametrize("batch_max", [0, -1, 2.5, "8"])
async def test_a_bad_batch_max_is_refused_at_spawn(batch_max: object) -> None:
    async with open_test_kernel() as kernel:
        with pytest.raises(AgentContractError, match="batch_max must be an int >= 1"):
            await kernel.spawn(Batcher("b", [], batch_max=batch_max))  # type: ignore[arg-type]


async def test_a_routed_agent_cannot_take_batches() -> None:
    class RoutedBatcher(Batcher):
        routed = True

    async with open_test_kernel() as kernel:
        with pytest.raises(AgentContractError, match="routed agents take their events one"):
            await kernel.spawn(RoutedBatcher("b", []))


async def test_an_agent_without_on_batch_is_served_one_event_at_a_time() -> None:
    seen: list[bytes] = []

    class OneByOne(Agent):
        topics = ("feed",)

        async def on_event(self, ctx: Context, event: Event) -> None:
            seen.append(event.payload)

    assert not OneByOne("x").handles_batches
    assert Batcher("y", []).handles_batches
    async with open_test_kernel() as kernel:
        await kernel.spawn(OneByOne("x"))
        await publish(kernel, "feed", b"1", b"2")
        await settle()
    assert seen == [b"1", b"2"]
