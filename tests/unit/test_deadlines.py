"""Deadlines across hops: a request's timeout bounds the whole work it causes.

The request carries its deadline (metadata ``deadline_ms``); the handler that serves it runs
within it, and the requests, fanouts and capability calls it makes inherit the time left. A
handler cut by its deadline commits nothing (no state, no reply), and the caller gets its
own timeout. All on a MockClock; a deadline travels as wall-clock milliseconds, so the
virtual time of a cut can differ from the timeout by the real time the test took (the
tolerances allow a quarter second of it).
"""

from __future__ import annotations

import contextlib
import math

import pytest
import trio
import trio.testing
from collab_support import start_call

from loomk import ActionCall, ActionResult, CollabTimeout, Context, Event
from loomk.testing import RecordingProvider, ScriptedAgent, capture_events, open_test_kernel

settle = trio.testing.wait_all_tasks_blocked


async def test_a_request_carries_its_deadline(autojump_clock: trio.testing.MockClock) -> None:
    async with open_test_kernel() as kernel:
        with capture_events(kernel.bus, "svc.x") as seen, pytest.raises(CollabTimeout):
            await kernel.collaborator("caller").request("svc.x", b"q", timeout_s=2.5)
        [request] = seen.events
        assert request.deadline_ms is not None
        assert request.deadline_ms - request.timestamp_ms in range(2400, 2600)
        assert request.metadata["deadline_ms"] == str(request.deadline_ms)


async def test_a_handler_past_its_request_deadline_is_cut_and_commits_nothing(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async def slow(ctx: Context, event: Event) -> None:
        ctx.state["answered"] = True
        await trio.sleep(10)  # longer than the caller waits
        await ctx.reply(event, Event("answer"))

    async with open_test_kernel() as kernel:
        handle = await kernel.spawn(ScriptedAgent("slow", {"collab.request": slow}))
        with capture_events(kernel.bus, "thread.*.reply") as replies:
            with pytest.raises(CollabTimeout):
                await kernel.collaborator("caller").request("in.slow", b"q", timeout_s=2)
            assert trio.current_time() == 2.0
            await settle()
        assert trio.current_time() == pytest.approx(2.0, abs=0.25)  # cut then, not at 10
        assert handle.timed_out == 1
        assert handle.stats().timed_out == 1
        assert handle.failures == 0  # not a failure: nothing restarts
        assert [event.type for event in replies.events] == ["collab.timeout"]  # no answer
        assert kernel.agent_state("slow").persistent_state == b"{}"
        await kernel.bus.publish("in.slow", Event("collab.request"))  # no deadline: runs on
        await trio.sleep(11)
        assert kernel.agent_state("slow").persistent_state == b'{"answered": true}'


async def test_the_calls_a_request_causes_inherit_the_time_it_has_left(
    autojump_clock: trio.testing.MockClock,
) -> None:
    cut_at: list[float] = []

    async def front(ctx: Context, event: Event) -> None:
        await trio.sleep(1)
        reply = await ctx.request("in.back", b"sub", timeout_s=60)  # asks for more than it has
        await ctx.reply(event, reply)

    async def back(ctx: Context, event: Event) -> None:
        try:
            await trio.sleep_forever()
        finally:
            cut_at.append(trio.current_time())

    async with open_test_kernel() as kernel:
        front_handle = await kernel.spawn(ScriptedAgent("front", {"collab.request": front}))
        back_handle = await kernel.spawn(ScriptedAgent("back", {"collab.request": back}))
        with pytest.raises(CollabTimeout):
            await kernel.collaborator("caller").request("in.front", b"q", timeout_s=5)
        await settle()
    assert cut_at == [pytest.approx(5.0, abs=0.25)]  # the first request's deadline, not 61
    assert (front_handle.timed_out, back_handle.timed_out) == (1, 1)
    assert front_handle.failures == 0  # cut by its deadline, not failed by its inner call


async def test_a_capability_call_inherits_the_time_left(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async def hang(call: ActionCall) -> ActionResult:
        await trio.sleep_forever()
        raise AssertionError("not reached")  # pragma: no cover

    async def worker(ctx: Context, event: Event) -> None:
        await ctx.invoke("slow.cap", {})  # no timeout of its own: the broker's 30 s

    provider = RecordingProvider("slow.cap", behaviour=hang)
    async with open_test_kernel() as kernel:
        kernel.broker.register(provider)
        await kernel.spawn(ScriptedAgent("worker", {"collab.request": worker}))
        with pytest.raises(CollabTimeout):
            await kernel.collaborator("caller").request("in.worker", b"q", timeout_s=3)
        await settle()
    [call] = provider.calls
    assert 0 < call.timeout_ms <= 3000


async def test_a_request_already_late_when_it_arrives_is_not_handled(
    autojump_clock: trio.testing.MockClock,
) -> None:
    ran: list[str] = []

    async def note(ctx: Context, event: Event) -> None:
        ran.append(event.type)

    async with open_test_kernel() as kernel:
        handle = await kernel.spawn(ScriptedAgent("late", {"job": note}))
        await kernel.bus.publish("in.late", Event("job", metadata={"deadline_ms": "1"}))
        await kernel.bus.publish("in.late", Event("job", metadata={"deadline_ms": "soon"}))
        await settle()
    assert ran == ["job"]  # the one in 1970 never ran; a malformed deadline binds nothing
    assert handle.timed_out == 1


async def test_a_handler_that_finishes_in_time_commits_as_usual(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async def quick(ctx: Context, event: Event) -> None:
        await trio.sleep(1)
        ctx.state["n"] = ctx.state.get("n", 0) + 1
        await ctx.reply(event, Event("answer", b"ok"))

    async with open_test_kernel() as kernel:
        handle = await kernel.spawn(ScriptedAgent("quick", {"collab.request": quick}))
        reply = await kernel.collaborator("caller").request("in.quick", b"q", timeout_s=5)
        assert reply.payload == b"ok"
        assert trio.current_time() == 1.0
        await settle()
        assert handle.timed_out == 0
        assert kernel.agent_state("quick").persistent_state == b'{"n": 1}'


async def test_a_request_done_early_leaves_no_deadline_for_what_follows(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """The keeper's entry of a finished request is disarmed: a plain handler running past
    that request's old deadline is not cut."""
    finished: list[str] = []

    async def quick(ctx: Context, event: Event) -> None:
        await ctx.reply(event, Event("answer"))

    async def long(ctx: Context, event: Event) -> None:
        await trio.sleep(10)  # well past the request's deadline
        finished.append("long")

    async with open_test_kernel() as kernel:
        handle = await kernel.spawn(ScriptedAgent("a", {"collab.request": quick, "work": long}))
        await kernel.collaborator("caller").request("in.a", b"q", timeout_s=2)
        await kernel.bus.publish("in.a", Event("work"))
        await trio.sleep(20)
        assert finished == ["long"]
        assert (handle.timed_out, handle.handled) == (0, 2)


async def test_a_handler_that_catches_the_cut_still_commits_nothing(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async def stubborn(ctx: Context, event: Event) -> None:
        ctx.state["wrote"] = True
        with contextlib.suppress(trio.Cancelled):  # swallowed: it returns, after its deadline
            await trio.sleep(10)
        await ctx.emit("out", Event("late"))

    async with open_test_kernel() as kernel:
        handle = await kernel.spawn(ScriptedAgent("s", {"collab.request": stubborn}))
        with capture_events(kernel.bus, "out") as out, pytest.raises(CollabTimeout):
            await kernel.collaborator("caller").request("in.s", b"q", timeout_s=2)
        await settle()
        assert (handle.timed_out, handle.handled, handle.failures) == (1, 0, 0)
        assert out.events == []
        assert kernel.agent_state("s").persistent_state == b"{}"


async def test_what_a_cut_handler_flushed_stays_whole_and_the_rest_goes(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """A flush (or an interactive call) commits and publishes what was held, whole, even if
    the deadline comes while it writes; what the handler does after it is dropped."""

    flushed, ended = trio.Event(), trio.Event()

    async def flushes(ctx: Context, event: Event) -> None:
        try:
            ctx.state["before"] = 1
            await ctx.emit("out", Event("before"))
            await ctx.flush()
            flushed.set()
            ctx.state["after"] = 1
            await ctx.emit("out", Event("after"))
            await trio.sleep(10)
        finally:
            ended.set()

    # With sync on, the flush waits for fsync in a thread; the autojump clock moves on
    # meanwhile, so the deadline comes while the flush writes: the case the shield is for.
    async with open_test_kernel(state_sync=True) as kernel:
        handle = await kernel.spawn(ScriptedAgent("f", {"collab.request": flushes}))
        with capture_events(kernel.bus, "out") as out:
            with pytest.raises(CollabTimeout):
                await kernel.collaborator("caller").request("in.f", b"q", timeout_s=2)
            await ended.wait()  # the fsync thread is back (the deadline passed meanwhile)
            await settle()
        assert flushed.is_set()  # the flush was not cut in the middle
        assert handle.timed_out == 1
        assert [event.type for event in out.events] == ["before"]
        assert kernel.agent_state("f").persistent_state == b'{"before": 1}'


async def test_a_failed_request_leaves_no_deadline_on_the_instance(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """on_stop after a request's handler failed is not bound by that request's deadline."""
    outcomes: list[str] = []

    async def fails(ctx: Context, event: Event) -> None:
        raise RuntimeError("broken")

    async def slow_answer(ctx: Context, event: Event) -> None:
        await trio.sleep(3)
        await ctx.reply(event, Event("answer", b"late but fine"))

    async def on_stop(ctx: Context) -> None:
        reply = await ctx.request("in.helper", b"q", timeout_s=5)  # after the dead 1 s one
        outcomes.append(reply.payload.decode())

    async with open_test_kernel() as kernel:
        await kernel.spawn(ScriptedAgent("helper", {"collab.request": slow_answer}))
        await kernel.spawn(
            ScriptedAgent("f", {"collab.request": fails}, on_stop=on_stop), restart="temporary"
        )
        with pytest.raises(CollabTimeout):
            await kernel.collaborator("caller").request("in.f", b"q", timeout_s=1)
        await trio.sleep(10)
    assert outcomes == ["late but fine"]


async def test_a_call_without_a_timeout_gets_the_default_not_a_long_request_deadline(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async def hang(call: ActionCall) -> ActionResult:
        await trio.sleep_forever()
        raise AssertionError("not reached")  # pragma: no cover

    async def worker(ctx: Context, event: Event) -> None:
        await ctx.invoke("slow.cap", {})

    provider = RecordingProvider("slow.cap", behaviour=hang)
    async with open_test_kernel(action_timeout_s=30) as kernel:
        kernel.broker.register(provider)
        await kernel.spawn(ScriptedAgent("worker", {"collab.request": worker}))
        with pytest.raises(CollabTimeout):
            await kernel.collaborator("caller").request("in.worker", b"q", timeout_s=3600)
    [call] = provider.calls
    assert call.timeout_ms == 30_000  # the broker's default, not the hour the request had


async def test_a_request_that_waits_for_ever_carries_no_deadline(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with open_test_kernel() as kernel, trio.open_nursery() as nursery:
        with capture_events(kernel.bus, "svc.forever") as seen:
            nursery.start_soon(
                lambda: kernel.collaborator("c").request("svc.forever", b"q", timeout_s=math.inf)
            )
            await settle()
            nursery.cancel_scope.cancel()
        [request] = seen.events
        assert request.deadline_ms is None
        assert "deadline_ms" not in request.metadata


async def test_after_a_cut_the_next_event_is_handled_in_a_fresh_scope(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """A handler that swallowed its cut leaves the loop's scope cancelled; the next handler
    must not inherit that cancellation."""

    async def stubborn(ctx: Context, event: Event) -> None:
        with contextlib.suppress(trio.Cancelled):
            await trio.sleep(10)

    async def plain(ctx: Context, event: Event) -> None:
        await trio.sleep(1)  # a suspension: it would be cancelled in a spent scope
        ctx.state["plain"] = True

    async with open_test_kernel() as kernel:
        handle = await kernel.spawn(ScriptedAgent("s", {"collab.request": stubborn, "go": plain}))
        async with trio.open_nursery() as nursery:
            call = start_call(
                nursery, lambda: kernel.collaborator("caller").request("in.s", b"q", timeout_s=2)
            )
            await settle()  # the request's handler is running
            await kernel.bus.publish("in.s", Event("go"))  # queued right behind it
        assert isinstance(call.error, CollabTimeout)
        await trio.sleep(5)
        assert (handle.timed_out, handle.handled, handle.failures) == (1, 1, 0)
        assert kernel.agent_state("s").persistent_state == b'{"plain": true}'
