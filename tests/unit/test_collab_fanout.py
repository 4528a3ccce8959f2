"""Fanout/fanin (Loom's ``fanout_fanin``, plus the strategies Loom only documented).

Each strategy's stopping rule is shown with responders that answer only when the test releases
them, so a call is seen not to return after ``needed - 1`` answers and to return exactly at
the ``needed``-th. Also: arrival order, one answer per responder, late answers dropped, the
``collab.summary`` event, partial results at the timeout, validation, and that nothing
outlives a call. Every timeout runs on a MockClock.
"""

from __future__ import annotations

from typing import Any

import pytest
import trio
import trio.testing
from collab_support import (
    Echo,
    assert_nothing_left,
    of_type,
    settle,
    start_call,
    start_responder,
    subscriptions,
)

from loomk import CollabError, Context, Event
from loomk.testing import ScriptedAgent, capture_events, open_test_kernel


async def test_no_topics_return_nothing_at_once_before_validation(
    autojump_clock: trio.testing.MockClock,
) -> None:
    bogus: Any = "bogus"
    async with open_test_kernel() as kernel:
        collab = kernel.collaborator("coord")
        assert await collab.fanout([], b"q", timeout_s=0, strategy=bogus) == []
        assert await collab.fanout((), b"q", timeout_s=-1, strategy="first_k", k=0) == []
        assert trio.current_time() == 0.0
        assert kernel.bus.totals().published == 0
        assert kernel.collab_service.waiting == 0


# --- stopping rules -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("strategy", "k", "targets", "needed"),
    [
        ("any", None, 3, 1),
        ("first_k", 2, 3, 2),
        ("first_k", 3, 3, 3),
        ("majority", None, 1, 1),
        ("majority", None, 4, 3),
        ("majority", None, 5, 3),
        ("all", None, 3, 3),
    ],
)
async def test_strategy_returns_exactly_at_its_count(
    autojump_clock: trio.testing.MockClock,
    strategy: Any,
    k: int | None,
    targets: int,
    needed: int,
) -> None:
    """Agents answer when released, last topic first: the call is still waiting after
    ``needed - 1`` answers, returns (at once, in arrival order) on the ``needed``-th, and
    the answers after it are dropped."""
    gates = [trio.Event() for _ in range(targets)]
    topics = [f"svc.r{i}" for i in range(targets)]
    order = list(reversed(range(targets)))  # arrival order differs from topic order
    async with open_test_kernel() as kernel:
        for i, gate in enumerate(gates):
            await kernel.spawn(Echo(f"r{i}", topics[i], gate=gate))
        seen = capture_events(kernel.bus, "thread.*.reply")
        collab = kernel.collaborator("coord")
        async with trio.open_nursery() as nursery:
            call = start_call(
                nursery,
                lambda: collab.fanout(topics, b"q", timeout_s=10, strategy=strategy, k=k),
            )
            for i in order[:needed]:
                await settle()
                assert not call.done.is_set()
                gates[i].set()
            await settle()
            assert call.done.is_set()
            assert call.ended_at == 0.0
            for i in order[needed:]:
                gates[i].set()
            await settle()
        replies = call.result()
        assert [reply.metadata["sender"] for reply in replies] == [
            f"agent.r{i}" for i in order[:needed]
        ]
        assert [reply.payload for reply in replies] == [f"r{i}:q".encode() for i in order[:needed]]
        assert len(of_type(seen.items, "collab.reply")) == targets  # every responder did answer
        reply_topic = f"thread.{replies[0].metadata['thread_id']}.reply"
        late = kernel.bus.stats(reply_topic).dropped.get("unclaimed", 0)
        assert late == targets - needed


async def test_one_answer_counts_per_responder(autojump_clock: trio.testing.MockClock) -> None:
    gate = trio.Event()
    async with open_test_kernel() as kernel:
        await start_responder(kernel, "svc.dup", sender="dup", times=3)
        await start_responder(kernel, "svc.other", sender="other", gate=gate)
        collab = kernel.collaborator("coord")
        async with trio.open_nursery() as nursery:
            call = start_call(
                nursery, lambda: collab.fanout(["svc.dup", "svc.other"], b"q", timeout_s=10)
            )
            await settle()
            assert not call.done.is_set()  # three answers from "dup" count as one
            gate.set()
        replies = call.result()
        assert call.ended_at == 0.0
        assert [reply.metadata["sender"] for reply in replies] == ["dup", "other"]


async def test_loom_style_responders_each_count(autojump_clock: trio.testing.MockClock) -> None:
    """Loom's fanout_first_k with Loom's responders: they answer with the request's envelope
    as it is, so every answer carries the requester's own sender. Three distinct responders
    answer; first_k=2 must return two answers at once."""
    async with open_test_kernel() as kernel:
        topics = ["svc.a", "svc.b", "svc.c"]
        for topic in topics:
            await start_responder(kernel, topic)  # no sender of its own
        replies = await kernel.collaborator("coord").fanout(
            topics, b"q", timeout_s=1, strategy="first_k", k=2
        )
        assert len(replies) == 2
        assert trio.current_time() == 0.0
        assert all(reply.payload == b"re:q" for reply in replies)


async def test_same_request_to_every_topic(autojump_clock: trio.testing.MockClock) -> None:
    async with open_test_kernel() as kernel:
        first = await start_responder(kernel, "svc.a", sender="a")
        second = await start_responder(kernel, "svc.b", sender="b")
        await kernel.collaborator("coord").fanout(["svc.a", "svc.b"], "q", timeout_s=1)
    [one], [two] = first, second
    assert one.metadata == two.metadata
    meta = one.metadata
    assert one.type == "collab.request"
    assert one.tags == ("collab",)
    assert meta["correlation_id"] == meta["thread_id"]
    assert meta["reply_to"] == f"thread.{meta['thread_id']}.reply"
    assert meta["sender"] == "coord"


# --- summary, timeout, validation ---------------------------------------------------------


@pytest.mark.parametrize("answering", [2, 1])
async def test_summary_and_partial_results(
    autojump_clock: trio.testing.MockClock, answering: int
) -> None:
    """Majority of 3 needs 2: with 2 answers it is met at once, with 1 the call returns that
    one answer at the timeout. The summary says which, on the reply topic."""
    async with open_test_kernel() as kernel:
        seen = capture_events(kernel.bus, "thread.*.reply")
        topics = ["svc.a", "svc.b", "svc.c"]
        for name in ("a", "b")[:answering]:
            await start_responder(kernel, f"svc.{name}", sender=name)
        replies = await kernel.collaborator("coord").fanout(
            topics, b"q", timeout_s=3, strategy="majority"
        )
        met = answering == 2
        assert trio.current_time() == (0.0 if met else 3.0)
        assert {reply.metadata["sender"] for reply in replies} == set(("a", "b")[:answering])
        await settle()
    [(topic, summary)] = of_type(seen.items, "collab.summary")
    thread_id = replies[0].metadata["thread_id"]
    assert topic == f"thread.{thread_id}.reply"
    assert summary.priority == 40
    assert summary.tags == ("collab",)
    assert summary.source == "coord"
    assert summary.metadata["correlation_id"] == replies[0].metadata["correlation_id"]
    assert summary.metadata["received"] == str(answering)
    assert summary.metadata["target_first_k"] == "2"
    assert summary.metadata["strategy"] == "majority"
    assert summary.metadata["met"] == ("true" if met else "false")


async def test_all_collects_until_the_timeout(autojump_clock: trio.testing.MockClock) -> None:
    gate = trio.Event()
    async with open_test_kernel() as kernel:
        await start_responder(kernel, "svc.a", sender="a")
        await start_responder(kernel, "svc.late", sender="late", gate=gate)
        await start_responder(kernel, "svc.b", sender="b")
        replies = await kernel.collaborator("coord").fanout(
            ["svc.a", "svc.late", "svc.b"], b"q", timeout_s=2, strategy="all"
        )
        assert trio.current_time() == 2.0
        assert {reply.metadata["sender"] for reply in replies} == {"a", "b"}
        gate.set()
        await settle()
        reply_topic = f"thread.{replies[0].metadata['thread_id']}.reply"
        assert kernel.bus.stats(reply_topic).dropped == {"unclaimed": 1}
        assert len(replies) == 2


@pytest.mark.parametrize(
    "options",
    [
        {"strategy": "first_k", "k": 0},
        {"strategy": "first_k", "k": -1},
        {"strategy": "first_k"},
        {"strategy": "first_k", "k": True},
        {"strategy": "bogus"},
        {"strategy": "timeout"},
        {"timeout_s": 0},
        {"timeout_s": -2.5},
    ],
)
async def test_invalid_arguments(
    autojump_clock: trio.testing.MockClock, options: dict[str, Any]
) -> None:
    arguments: dict[str, Any] = {"timeout_s": 1, **options}
    async with open_test_kernel() as kernel:
        seen = capture_events(kernel.bus, "svc.>")
        with pytest.raises(CollabError):
            await kernel.collaborator("coord").fanout(["svc.a", "svc.b"], b"q", **arguments)
        await settle()
        assert seen.items == []
        assert kernel.collab_service.waiting == 0


# --- from an agent, and nothing left behind -----------------------------------------------


async def test_agent_fans_out_with_ctx(autojump_clock: trio.testing.MockClock) -> None:
    got: list[list[Event]] = []

    async def go(ctx: Context, event: Event) -> None:
        got.append(
            await ctx.fanout(["svc.a", "svc.b", "svc.c"], b"q", timeout_s=5, strategy="majority")
        )

    async with open_test_kernel() as kernel:
        for name in ("a", "b", "c"):
            await kernel.spawn(Echo(name, f"svc.{name}"))
        await kernel.spawn(ScriptedAgent("boss", {"go": go}))
        await kernel.bus.publish("in.boss", Event("go"))
        await settle()
    [replies] = got
    assert len(replies) == 2
    assert {reply.metadata["sender"] for reply in replies} < {"agent.a", "agent.b", "agent.c"}
    assert all(
        reply.metadata["correlation_id"] == replies[0].metadata["thread_id"] for reply in replies
    )


@pytest.mark.parametrize("ending", ["met", "timeout", "cancellation"])
async def test_nothing_left_after_the_call(
    autojump_clock: trio.testing.MockClock, ending: str
) -> None:
    gate = trio.Event()
    async with open_test_kernel() as kernel:
        seen = await start_responder(kernel, "svc.a", sender="a")
        await start_responder(kernel, "svc.b", sender="b", gate=gate)
        before = subscriptions(kernel)
        collab = kernel.collaborator("coord")
        async with trio.open_nursery() as nursery:
            call = start_call(nursery, lambda: collab.fanout(["svc.a", "svc.b"], b"q", timeout_s=4))
            await settle()
            assert kernel.collab_service.waiting == 1
            if ending == "met":
                gate.set()
            elif ending == "cancellation":
                nursery.cancel_scope.cancel()
        reply_topic = f"thread.{seen[0].metadata['thread_id']}.reply"
        if ending == "cancellation":
            assert (call.value, call.error, trio.current_time()) == (None, None, 0.0)
        else:
            assert len(call.result()) == (2 if ending == "met" else 1)
            assert call.ended_at == (0.0 if ending == "met" else 4.0)
        assert_nothing_left(kernel, before, reply_topic)


async def test_the_calls_own_announcements_are_not_counted_as_drops() -> None:
    async with open_test_kernel() as kernel:
        await kernel.spawn(Echo("svc", "in.svc"))
        caller = kernel.collaborator("caller")
        for _ in range(5):
            await caller.fanout(["in.svc"], b"q", timeout_s=5, strategy="any")
        assert "unclaimed" not in kernel.bus.totals().dropped
