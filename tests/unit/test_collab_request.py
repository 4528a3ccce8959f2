"""Request/reply over the bus, on the wire conventions of Loom's ``request_reply``.

Responders are real agents and plain bus subscribers answering Loom-style. Covers the answer,
correlation, the request's envelope, timeouts (``collab.timeout`` on the reply topic),
validation, and that nothing outlives a call however it ends. Every timeout runs on a
MockClock, so durations are asserted exactly.
"""

from __future__ import annotations

import math

import pytest
import trio
import trio.testing
from collab_support import (
    Echo,
    assert_nothing_left,
    loom_reply,
    of_type,
    settle,
    start_call,
    start_responder,
    subscriptions,
)

from loomk import CollabError, CollabTimeout, Envelope, Event
from loomk.links import ORIGIN_KEY
from loomk.testing import capture_events, open_test_kernel

RESERVED = ("thread_id", "correlation_id", "sender", "reply_to", "ttl", "hop", "ts")


# --- the answer ---------------------------------------------------------------------------


async def test_agent_responder_answers(autojump_clock: trio.testing.MockClock) -> None:
    async with open_test_kernel() as kernel:
        echo = Echo("echo", "svc.echo")
        await kernel.spawn(echo)
        start = trio.current_time()
        reply = await kernel.collaborator("tester").request("svc.echo", b"hello", timeout_s=5)
        assert trio.current_time() == start  # answered at once, not at the timeout
        assert reply.type == "collab.reply"
        assert reply.payload == b"echo:hello"
        assert reply.metadata["sender"] == "agent.echo"
        [request] = echo.seen
        assert reply.metadata["correlation_id"] == request.metadata["correlation_id"]
        assert reply.metadata["thread_id"] == request.metadata["thread_id"]


@pytest.mark.parametrize("sender", [None, "bridge.client"])
async def test_loom_style_bus_responder_answers(
    autojump_clock: trio.testing.MockClock, sender: str | None
) -> None:
    """A plain subscriber replying with the request's envelope, as Loom responders and bridge
    clients do (with or without a sender of its own), is answered."""
    async with open_test_kernel() as kernel:
        await start_responder(kernel, "svc.loom", sender=sender)
        reply = await kernel.collaborator("tester").request("svc.loom", "hello", timeout_s=5)
        assert reply.type == "collab.reply"
        assert reply.payload == b"re:hello"
        assert reply.metadata["sender"] == (sender or "tester")


async def test_request_carries_a_fresh_envelope(autojump_clock: trio.testing.MockClock) -> None:
    async with open_test_kernel() as kernel:
        seen = await start_responder(kernel, "svc.loom")
        collab = kernel.collaborator("tester")
        await collab.request("svc.loom", b"one", timeout_s=5)
        await collab.request("svc.loom", b"two", timeout_s=5)
    first, second = seen
    for request, payload in ((first, b"one"), (second, b"two")):
        meta = request.metadata
        assert request.type == "collab.request"
        assert request.payload == payload
        assert request.source == "tester"
        assert request.tags == ("collab",)
        assert request.priority == 50
        assert set(RESERVED) <= meta.keys()
        assert meta["thread_id"]
        assert meta["correlation_id"] == meta["thread_id"]
        assert meta["sender"] == "tester"
        assert meta["reply_to"] == f"thread.{meta['thread_id']}.reply"
        assert (meta["ttl"], meta["hop"]) == ("16", "0")
    assert first.metadata["thread_id"] != second.metadata["thread_id"]


async def test_event_with_a_thread_keeps_it_with_a_fresh_correlation(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with open_test_kernel() as kernel:
        seen = await start_responder(kernel, "svc.loom")
        collab = kernel.collaborator("tester")
        message = Event(
            "plan.ask",
            b"q",
            metadata={"thread_id": "conv1", "correlation_id": "stale", "topic": "maps"},
        )
        first = await collab.request("svc.loom", message, timeout_s=5)
        second = await collab.request("svc.loom", message, timeout_s=5)
    correlations = []
    for request, reply in zip(seen, (first, second), strict=True):
        meta = request.metadata
        assert request.type == "plan.ask"  # an Event keeps its type, payload and metadata
        assert meta["topic"] == "maps"
        assert meta["thread_id"] == "conv1"
        assert meta["reply_to"] == "thread.conv1.reply"
        assert meta["sender"] == "tester"
        assert meta["correlation_id"] not in ("conv1", "stale")
        assert reply.metadata["correlation_id"] == meta["correlation_id"]
        correlations.append(meta["correlation_id"])
    assert correlations[0] != correlations[1]


# --- correlation --------------------------------------------------------------------------


async def test_reply_with_another_correlation_is_ignored(
    autojump_clock: trio.testing.MockClock,
) -> None:
    gate = trio.Event()
    requests: list[Event] = []

    async def decoy_then_answer(task_status: trio.TaskStatus[None]) -> None:
        async with kernel.bus.subscribe("svc.decoy") as subscription:
            task_status.started()
            async for _, request in subscription:
                requests.append(request)
                envelope = Envelope.from_event(request)
                envelope.correlation_id = "someone-else"
                envelope.sender = "decoy"
                decoy = envelope.attach_to_event(Event("collab.reply", b"decoy"))
                await kernel.bus.publish(envelope.reply_topic(), decoy)
                await gate.wait()
                topic, reply = loom_reply(request, b"right", sender="svc")
                await kernel.bus.publish(topic, reply)

    async with open_test_kernel() as kernel:
        await kernel.start(decoy_then_answer)
        async with trio.open_nursery() as nursery:
            call = start_call(
                nursery,
                lambda: kernel.collaborator("tester").request("svc.decoy", b"q", timeout_s=5),
            )
            await settle()
            assert not call.done.is_set()  # the decoy on the same reply topic did not end it
            reply_topic = f"thread.{requests[0].metadata['thread_id']}.reply"
            assert kernel.bus.stats(reply_topic).dropped == {"unclaimed": 1}
            gate.set()
        assert call.result().payload == b"right"
        assert call.ended_at == 0.0


async def test_concurrent_requests_on_one_thread_get_their_own_replies(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """Two requests share thread ``shared`` (so a reply topic); answered in reverse order,
    each still gets its own reply."""

    async def answer_in_reverse(task_status: trio.TaskStatus[None]) -> None:
        async with kernel.bus.subscribe("svc.rev") as subscription:
            task_status.started()
            held: list[Event] = []
            async for _, request in subscription:
                held.append(request)
                if len(held) == 2:
                    for pending in reversed(held):
                        topic, reply = loom_reply(pending, b"re:" + pending.payload, "svc")
                        assert topic == "thread.shared.reply"
                        await kernel.bus.publish(topic, reply)
                    held = []

    async with open_test_kernel() as kernel:
        await kernel.start(answer_in_reverse)
        collab = kernel.collaborator("tester")
        results: dict[bytes, Event] = {}

        async def ask(payload: bytes) -> None:
            message = Event("ask", payload, metadata={"thread_id": "shared"})
            results[payload] = await collab.request("svc.rev", message, timeout_s=5)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(ask, b"one")
            nursery.start_soon(ask, b"two")
        assert trio.current_time() == 0.0
    assert results[b"one"].payload == b"re:one"
    assert results[b"two"].payload == b"re:two"
    one, two = results[b"one"].metadata, results[b"two"].metadata
    assert one["correlation_id"] != two["correlation_id"]
    assert one["thread_id"] == two["thread_id"] == "shared"


# --- timeouts and validation --------------------------------------------------------------


async def test_timeout_raises_and_publishes_collab_timeout(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with open_test_kernel() as kernel:
        replies = capture_events(kernel.bus, "thread.*.reply")
        silent = capture_events(kernel.bus, "svc.silent")
        start = trio.current_time()
        with pytest.raises(CollabTimeout):
            await kernel.collaborator("tester").request("svc.silent", b"q", timeout_s=2)
        assert trio.current_time() - start == 2.0
        await settle()
    [(_, request)] = silent.items
    thread_id = request.metadata["thread_id"]
    [(topic, timeout)] = of_type(replies.items, "collab.timeout")
    assert topic == f"thread.{thread_id}.reply"
    assert timeout.priority == 40
    assert timeout.tags == ("collab",)
    assert timeout.source == "tester"
    assert timeout.metadata["reason"] == "request_reply_timeout"
    assert timeout.metadata["topic"] == "svc.silent"
    assert timeout.metadata["correlation_id"] == request.metadata["correlation_id"]
    assert timeout.metadata["sender"] == "tester"


async def test_concurrent_timeouts_end_at_their_own_deadlines(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """The service's timer keeps each call's deadline: calls started later with shorter
    timeouts end first, a call answered in between leaves no stale timeout behind, and the
    longest still waits its full time."""
    gate = trio.Event()
    async with open_test_kernel() as kernel:
        await start_responder(kernel, "svc.gated", sender="svc", gate=gate)
        collab = kernel.collaborator("tester")
        async with trio.open_nursery() as nursery:
            longest = start_call(nursery, lambda: collab.request("svc.none", b"", timeout_s=5))
            await settle()
            answered = start_call(nursery, lambda: collab.request("svc.gated", b"", timeout_s=3))
            await settle()
            short = start_call(nursery, lambda: collab.request("svc.none", b"", timeout_s=2))
            shortest = start_call(nursery, lambda: collab.request("svc.none", b"", timeout_s=1))
            await shortest.done.wait()
            gate.set()  # answers the 3 s call at t = 1
        assert answered.result().payload == b"re:"
        for call in (longest, short, shortest):
            assert isinstance(call.error, CollabTimeout)
        ended = (longest.ended_at, answered.ended_at, short.ended_at, shortest.ended_at)
        assert ended == (5.0, 1.0, 2.0, 1.0)
        assert kernel.collab_service.waiting == 0


@pytest.mark.parametrize("timeout_s", [0, 0.0, -1, math.nan])
async def test_timeout_must_be_positive(
    autojump_clock: trio.testing.MockClock, timeout_s: float
) -> None:
    async with open_test_kernel() as kernel:
        seen = capture_events(kernel.bus, "svc.x")
        with pytest.raises(CollabError):
            await kernel.collaborator("tester").request("svc.x", b"q", timeout_s=timeout_s)
        await settle()
        assert seen.items == []  # nothing was sent
        assert kernel.collab_service.waiting == 0


# --- nothing outlives a call --------------------------------------------------------------


@pytest.mark.parametrize("ending", ["reply", "timeout", "cancellation"])
async def test_nothing_left_after_the_call(
    autojump_clock: trio.testing.MockClock, ending: str
) -> None:
    gate = trio.Event()
    async with open_test_kernel() as kernel:
        seen = await start_responder(kernel, "svc.gated", gate=gate)
        before = subscriptions(kernel)
        collab = kernel.collaborator("tester")
        async with trio.open_nursery() as nursery:
            call = start_call(nursery, lambda: collab.request("svc.gated", b"q", timeout_s=5))
            await settle()
            assert kernel.collab_service.waiting == 1
            if ending == "reply":
                gate.set()
            elif ending == "cancellation":
                nursery.cancel_scope.cancel()
        reply_topic = f"thread.{seen[0].metadata['thread_id']}.reply"
        if ending == "reply":
            assert call.result().payload == b"re:q"
        elif ending == "timeout":
            assert isinstance(call.error, CollabTimeout)
            assert call.ended_at == 5.0
        else:
            assert (call.value, call.error) == (None, None)  # cancelled: no value, no error
            assert trio.current_time() == 0.0
        assert_nothing_left(kernel, before, reply_topic)
        if ending != "reply":  # an answer after the end finds nobody waiting: dropped
            gate.set()
            await settle()
            assert kernel.bus.stats(reply_topic).dropped == {"unclaimed": 1}


async def test_a_received_event_sent_on_as_a_request_leaves_its_link_stamp_behind(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """An event that came in through a link, forwarded as a request, is a new message: it
    must not carry the link's origin stamp, or that link would take it for an echo."""
    async with open_test_kernel() as kernel:
        received = Event("q", b"?", metadata={ORIGIN_KEY: "cluster:b", "note": "kept"})
        with capture_events(kernel.bus, "svc.>") as sent:
            with trio.move_on_after(1):
                await kernel.collaborator("tester").request("svc.x", received, timeout_s=1)
        (request,) = sent.events
    assert ORIGIN_KEY not in request.metadata
    assert request.metadata["note"] == "kept"
