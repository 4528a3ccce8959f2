"""``ctx.state`` through real kernels on a real LevelDB in ``tmp_path``.

Covers the rules of docs/state.md: JSON and bytes values, read-your-writes, one atomic commit
per handler (``on_start``, ``on_event``, ``on_stop``), the transactional outbox, ``flush``,
restarts of the agent and of the kernel, ``kernel.agent_state``, ``kernel.forget_agent``,
``DataDirInUse`` when the kernel opens, a kernel that keeps no state writing nothing, and
``state_temporary`` kernels opening no database until one is used.

Synchronisation: with ``state_sync`` on (as in production, and ``kernel_on``'s default) a commit
crosses to a worker thread, which ``wait_all_tasks_blocked`` does not wait for; those tests
wait for something that happens after the commit (an event the outbox releases, the agent's
next handler, ``stop_agent``).
Tests that need supervisor restarts use the autojump clock and ``state_sync=False``, so no
thread runs while the clock may jump.
"""

from __future__ import annotations

import base64
import json
import time
from contextlib import AbstractAsyncContextManager
from pathlib import Path
from typing import Any

import pytest
import trio
import trio.testing
from support import drain

from loomk import (
    AgentError,
    Config,
    ConfigSource,
    Context,
    Event,
    Kernel,
    KernelClosed,
    open_kernel,
)
from loomk.errors import DataDirInUse, StateError
from loomk.state import AgentState
from loomk.testing import EventStep, ScriptedAgent, open_test_kernel

settle = trio.testing.wait_all_tasks_blocked
WAIT_LIMIT_S = 5.0


class Boom(Exception):
    """A handler failure the tests provoke."""


def kernel_on(data_dir: Path, **settings: Any) -> AbstractAsyncContextManager[Kernel]:
    """A test kernel whose state lives on in ``data_dir``, fsynced unless told otherwise."""
    settings.setdefault("state_temporary", False)
    settings.setdefault("state_sync", True)
    return open_test_kernel(data_dir=data_dir, **settings)


async def send(kernel: Kernel, agent_id: str, step: str) -> None:
    """Make ``agent_id`` run ``step``."""
    assert await kernel.bus.publish(f"in.{agent_id}", Event(step)) == 1


async def handled(kernel: Kernel, agent_id: str, steps: dict[str, EventStep]) -> None:
    """Wait until the agent has handled, and committed, everything sent to it before:
    it handles one event at a time, and ``flush`` commits the group of handlers so far."""
    reached = trio.Event()

    async def mark(ctx: Context, event: Event) -> None:
        await ctx.flush()
        reached.set()

    steps["mark"] = mark
    await send(kernel, agent_id, "mark")
    with trio.fail_after(WAIT_LIMIT_S):
        await reached.wait()


def stored(kernel: Kernel, agent_id: str) -> dict[str, Any]:
    """The committed state of an agent, as ``kernel.agent_state`` shows it."""
    value: dict[str, Any] = json.loads(kernel.agent_state(agent_id).persistent_state)
    return value


async def receive(subscription: Any, count: int) -> list[Event]:
    """The next ``count`` events of a bus subscription (failing, not hanging, if missing)."""
    events: list[Event] = []
    with trio.fail_after(WAIT_LIMIT_S):
        while len(events) < count:
            _, event = await subscription.receive()
            events.append(event)
    return events


def out(text: str) -> Event:
    return Event("out", text.encode())


def texts(events: list[Event]) -> list[str]:
    return [event.payload.decode() for event in events]


def now_ms() -> int:
    return time.time_ns() // 1_000_000


# --- values -----------------------------------------------------------------------------

VALUES: dict[str, Any] = {
    "int": 7,
    "big": 2**70,
    "float": 1.5,
    "str": 'héllo ✓ \u0000 "quoted"',
    "none": None,
    "true": True,
    "list": [1, "a", None, [2.5]],
    "dict": {"n": {"m": [1, 2]}, "é": False},
    "bytes": b"\x00\xff raw \x01",
    "empty-bytes": b"",
    "bytearray": bytearray(b"ba"),
    "memoryview": memoryview(b"mv"),
    "tuple": (1, "two"),
    "key/with/slashes": "fine",
    "": "empty key",
}
AFTER_RESTART: dict[str, Any] = {
    **VALUES,
    "bytearray": b"ba",
    "memoryview": b"mv",
    "tuple": [1, "two"],
}


async def test_values_round_trip_within_the_kernel_and_after_a_kernel_restart(
    tmp_path: Path,
) -> None:
    data_dir = tmp_path / "data"
    own_writes: list[bool] = []
    read_later: list[dict[str, Any]] = []
    read_after_restart: list[dict[str, Any]] = []

    async def write(ctx: Context, event: Event) -> None:
        for key, value in VALUES.items():
            ctx.state[key] = value
            own_writes.append(ctx.state[key] is value)  # read-your-writes, at once

    async def read(ctx: Context, event: Event) -> None:
        read_later.append(dict(ctx.state))

    steps: dict[str, EventStep] = {"write": write, "read": read}
    async with kernel_on(data_dir) as kernel:
        await kernel.spawn(ScriptedAgent("keeper", steps))
        await send(kernel, "keeper", "write")
        await send(kernel, "keeper", "read")
        await handled(kernel, "keeper", steps)
    assert own_writes == [True] * len(VALUES)
    # once committed, values read back as stored: exactly what a restarted agent reads
    assert read_later == [AFTER_RESTART]

    async def start(ctx: Context) -> None:
        read_after_restart.append(dict(ctx.state))

    async with kernel_on(data_dir) as kernel:  # a restarted kernel on the same directory
        assert stored(kernel, "keeper") == json.loads(
            json.dumps(
                {
                    key: {"$bytes": base64.b64encode(value).decode()}
                    if isinstance(value, bytes)
                    else value
                    for key, value in AFTER_RESTART.items()
                }
            )
        )
        await kernel.spawn(ScriptedAgent("keeper", on_start=start))
    (state,) = read_after_restart
    assert state == AFTER_RESTART
    for key in ("bytes", "empty-bytes", "bytearray", "memoryview"):
        assert type(state[key]) is bytes, key
    assert type(state["tuple"]) is list


async def test_reads_iteration_len_and_del_reflect_pending_writes(tmp_path: Path) -> None:
    views: list[dict[str, Any]] = []

    async def seed(ctx: Context, event: Event) -> None:
        ctx.state.update({"a": 1, "b": 2, "c": 3})

    async def change(ctx: Context, event: Event) -> None:
        state = ctx.state
        del state["b"]
        state["a"] = 10
        state["d"] = 4
        state["e"] = 5
        del state["e"]  # written and deleted in the same handler
        missing: list[str] = []
        for key in ("b", "e", "never"):
            try:
                del state[key]
            except KeyError:
                missing.append(key)
        views.append(
            {
                "contains": {key: key in state for key in "abcde"},
                "len": len(state),
                "keys": sorted(state),
                "a": state["a"],
                "get-b": state.get("b", "default"),
                "dict": dict(state),
                "missing": missing,
                "non-str in": 1 in state,  # type: ignore[comparison-overlap]
            }
        )

    steps: dict[str, EventStep] = {"seed": seed, "change": change}
    async with kernel_on(tmp_path / "data", state_sync=False) as kernel:
        await kernel.spawn(ScriptedAgent("v", steps))
        await send(kernel, "v", "seed")
        await send(kernel, "v", "change")
        await handled(kernel, "v", steps)
        assert views == [
            {
                "contains": {"a": True, "b": False, "c": True, "d": True, "e": False},
                "len": 3,
                "keys": ["a", "c", "d"],
                "a": 10,
                "get-b": "default",
                "dict": {"a": 10, "c": 3, "d": 4},
                "missing": ["b", "e", "never"],
                "non-str in": False,
            }
        ]
        assert stored(kernel, "v") == {"a": 10, "c": 3, "d": 4}


async def test_pop_and_clear_work_on_the_view_and_commit(tmp_path: Path) -> None:
    seen: list[Any] = []

    async def seed(ctx: Context, event: Event) -> None:
        ctx.state.update({"a": 1, "b": 2, "c": 3})

    async def pop(ctx: Context, event: Event) -> None:
        seen.append(ctx.state.pop("a"))
        seen.append(ctx.state.pop("zz", "default"))

    async def clear(ctx: Context, event: Event) -> None:
        ctx.state["new"] = 1
        ctx.state.clear()
        seen.append(len(ctx.state))

    steps: dict[str, EventStep] = {"seed": seed, "pop": pop, "clear": clear}
    async with kernel_on(tmp_path / "data", state_sync=False) as kernel:
        await kernel.spawn(ScriptedAgent("v", steps))
        await send(kernel, "v", "seed")
        await send(kernel, "v", "pop")
        await handled(kernel, "v", steps)
        assert stored(kernel, "v") == {"b": 2, "c": 3}
        await send(kernel, "v", "clear")
        await handled(kernel, "v", steps)
        assert stored(kernel, "v") == {}
        assert seen == [1, "default", 0]


async def test_keys_must_be_str(tmp_path: Path) -> None:
    refused: list[Any] = []
    bad_keys: list[Any] = [1, b"k", None, ("t",), 1.5]

    async def write(ctx: Context, event: Event) -> None:
        for key in bad_keys:
            try:
                ctx.state[key] = "value"
            except StateError:
                refused.append(key)
        ctx.state["ok"] = True

    steps: dict[str, EventStep] = {"write": write}
    async with kernel_on(tmp_path / "data", state_sync=False) as kernel:
        handle = await kernel.spawn(ScriptedAgent("k", steps))
        await send(kernel, "k", "write")
        await handled(kernel, "k", steps)
        assert refused == bad_keys
        assert handle.failures == 0  # refused at the assignment, the handler went on
        assert stored(kernel, "k") == {"ok": True}


@pytest.mark.parametrize("where", ["key", "value"])
async def test_a_str_with_a_lone_surrogate_is_stored_or_refused_at_the_assignment(
    tmp_path: Path, where: str
) -> None:
    """It cannot be UTF-8 encoded: the assignment must raise StateError (which the handler
    may catch) or the value must be stored; it must not fail the handler some other way."""
    outcome: list[str] = []

    async def write(ctx: Context, event: Event) -> None:
        try:
            if where == "key":
                ctx.state["\ud800"] = "lone"
            else:
                ctx.state["lone"] = "\ud800"
        except StateError:
            outcome.append("refused")
        else:
            outcome.append("accepted")
        ctx.state["ok"] = True

    steps: dict[str, EventStep] = {"write": write}
    async with kernel_on(tmp_path / "data", state_sync=False) as kernel:
        handle = await kernel.spawn(ScriptedAgent("s", steps), restart="temporary")
        await send(kernel, "s", "write")
        await settle()
        assert handle.last_error is None, repr(handle.last_error)
        assert handle.failures == 0
        state = stored(kernel, "s")
        assert state["ok"] is True
        assert outcome == ["refused"] or len(state) == 2


# --- failures: nothing of a failed handler applies ------------------------------------------

UNSERIALISABLE = [
    pytest.param(object(), id="object"),
    pytest.param(float("nan"), id="nan"),
    pytest.param(float("-inf"), id="inf"),
    pytest.param({1, 2}, id="set"),
    pytest.param({"nested": [object()]}, id="nested"),
    pytest.param(lambda: None, id="function"),
]


@pytest.mark.parametrize("value", UNSERIALISABLE)
async def test_an_unserialisable_value_fails_its_handler_and_nothing_of_that_handler_applies(
    tmp_path: Path, autojump_clock: trio.testing.MockClock, value: Any
) -> None:
    errors: list[BaseException] = []

    async def good(ctx: Context, event: Event) -> None:
        ctx.state["before"] = "kept"
        await ctx.emit("out", out("a: before"))

    async def bad(ctx: Context, event: Event) -> None:
        ctx.state["before"] = "overwritten?"
        ctx.state["x"] = 1
        await ctx.emit("out", out("a: from the failed handler"))
        try:
            ctx.state["y"] = value
        except StateError as error:
            errors.append(error)
            raise
        ctx.state["z"] = "after the bad assignment"

    async def after(ctx: Context, event: Event) -> None:
        ctx.state["after"] = "kept"
        await ctx.emit("out", out("a: after"))

    async def other(ctx: Context, event: Event) -> None:
        ctx.state["mine"] = 1
        await ctx.emit("out", out("b: other agent"))

    a_steps: dict[str, EventStep] = {"good": good, "bad": bad, "after": after}
    async with kernel_on(tmp_path / "data", state_sync=False) as kernel:
        sub = kernel.bus.subscribe("out")
        handle = await kernel.spawn(ScriptedAgent("a", a_steps))
        await kernel.spawn(ScriptedAgent("b", {"other": other}))
        for step in ("good", "bad", "after"):
            await send(kernel, "a", step)
        await send(kernel, "b", "other")
        events = await receive(sub, 3)  # the agent restarts (mock clock) and goes on
        await settle()
        events += [event for _, event in drain(sub)]
        assert len(errors) == 1  # refused at the assignment, as a StateError
        assert handle.failures == 1
        assert handle.restarts == 1
        assert handle.last_error is errors[0]
        a_events = [text for text in texts(events) if text.startswith("a:")]
        assert a_events == ["a: before", "a: after"]
        assert "b: other agent" in texts(events)
        assert len(events) == 3
        assert stored(kernel, "a") == {"before": "kept", "after": "kept"}
        assert stored(kernel, "b") == {"mine": 1}


async def test_a_handler_that_raises_after_writing_and_emitting_applies_nothing(
    tmp_path: Path,
) -> None:
    on_stop_saw: list[dict[str, Any]] = []

    async def start(ctx: Context) -> None:
        ctx.state["keep"] = 1
        ctx.state["drop-me"] = 1

    async def fail(ctx: Context, event: Event) -> None:
        ctx.state["keep"] = 2
        del ctx.state["drop-me"]
        ctx.state["new"] = 3
        await ctx.emit("out", out("one"))
        await ctx.reply(Event("request", metadata={"reply_to": "out.replies"}), out("two"))
        raise Boom

    async def stop(ctx: Context) -> None:
        on_stop_saw.append(dict(ctx.state))

    async with kernel_on(tmp_path / "data") as kernel:
        sub = kernel.bus.subscribe("out.>")
        sub_plain = kernel.bus.subscribe("out")
        handle = await kernel.spawn(
            ScriptedAgent("f", {"fail": fail}, on_start=start, on_stop=stop), restart="temporary"
        )
        await send(kernel, "f", "fail")
        with trio.fail_after(WAIT_LIMIT_S):
            await handle.wait_finished()
        assert isinstance(handle.last_error, Boom)
        assert on_stop_saw == [{"keep": 1, "drop-me": 1}]  # on_stop sees the committed state
        assert stored(kernel, "f") == {"keep": 1, "drop-me": 1}
        await settle()
        assert drain(sub) == []
        assert drain(sub_plain) == []


# --- the outbox -------------------------------------------------------------------------


async def test_emit_in_a_handler_is_held_then_published_in_order_after_the_commit(
    tmp_path: Path,
) -> None:
    entered, release = trio.Event(), trio.Event()
    returned: list[int] = []

    async def work(ctx: Context, event: Event) -> None:
        ctx.state["n"] = 1
        returned.append(await ctx.emit("out", out("1")))
        returned.append(await ctx.emit("out", out("2")))
        entered.set()
        await release.wait()
        ctx.state["m"] = 2
        returned.append(await ctx.emit("out", out("3")))

    async with kernel_on(tmp_path / "data") as kernel:  # state_sync on: commits use a thread
        sub = kernel.bus.subscribe("out")
        await kernel.spawn(ScriptedAgent("e", {"work": work}))
        await send(kernel, "e", "work")
        with trio.fail_after(WAIT_LIMIT_S):
            await entered.wait()
        await settle()
        assert returned == [0, 0]  # held: nothing delivered yet
        assert drain(sub) == []  # nothing published while the handler runs
        assert stored(kernel, "e") == {}  # nor committed
        release.set()
        first = await receive(sub, 1)
        # the outbox opens only after the commit: the state is on disk when the event is seen
        assert stored(kernel, "e") == {"n": 1, "m": 2}
        events = first + await receive(sub, 2)
        assert texts(events) == ["1", "2", "3"]
        assert returned == [0, 0, 0]
        assert all(event.metadata["sender"] == "agent.e" for event in events)
        await settle()
        assert drain(sub) == []


async def test_emit_outside_a_handler_goes_out_at_once(tmp_path: Path) -> None:
    contexts: list[Context] = []

    async def start(ctx: Context) -> None:
        contexts.append(ctx)

    async with kernel_on(tmp_path / "data") as kernel:
        sub = kernel.bus.subscribe("out")
        await kernel.spawn(ScriptedAgent("e", on_start=start))
        await settle()
        (ctx,) = contexts
        assert await ctx.emit("out", out("direct")) == 1  # no handler running: not held
        assert texts([event for _, event in drain(sub)]) == ["direct"]
        assert kernel.state.store.stats().commits == 0  # nothing was held, so nothing committed


async def test_flush_commits_and_publishes_what_is_held_even_if_the_handler_then_raises(
    tmp_path: Path,
) -> None:
    flushed, release = trio.Event(), trio.Event()

    async def work(ctx: Context, event: Event) -> None:
        ctx.state["a"] = 1
        await ctx.emit("out", out("before flush"))
        await ctx.state.flush()
        flushed.set()
        await release.wait()
        ctx.state["b"] = 2
        ctx.state["a"] = "changed after the flush"
        await ctx.emit("out", out("after flush"))
        raise Boom

    async with kernel_on(tmp_path / "data") as kernel:
        sub = kernel.bus.subscribe("out")
        handle = await kernel.spawn(ScriptedAgent("fl", {"work": work}), restart="temporary")
        await send(kernel, "fl", "work")
        # published and committed while the handler is still running
        assert texts(await receive(sub, 1)) == ["before flush"]
        assert flushed.is_set()
        assert not handle.finished
        assert stored(kernel, "fl") == {"a": 1}
        release.set()
        with trio.fail_after(WAIT_LIMIT_S):
            await handle.wait_finished()
        assert isinstance(handle.last_error, Boom)
        assert stored(kernel, "fl") == {"a": 1}
        await settle()
        assert drain(sub) == []


async def test_writes_and_events_of_on_start_and_on_stop_are_committed(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"

    async def start(ctx: Context) -> None:
        ctx.state["started"] = ctx.state.get("started", 0) + 1
        await ctx.emit("out", out("hello"))

    async def stop(ctx: Context) -> None:
        ctx.state["stopped"] = ctx.state.get("stopped", 0) + 1
        await ctx.emit("out", out("bye"))

    async with kernel_on(data_dir) as kernel:
        sub = kernel.bus.subscribe("out")
        await kernel.spawn(ScriptedAgent("life", on_start=start, on_stop=stop))
        assert stored(kernel, "life") == {"started": 1}  # spawn returns after the commit
        await kernel.stop_agent("life")
        assert stored(kernel, "life") == {"started": 1, "stopped": 1}
        assert texts(await receive(sub, 2)) == ["hello", "bye"]
        # stopped by the kernel's shutdown this time
        await kernel.spawn(ScriptedAgent("life", on_start=start, on_stop=stop))
    async with kernel_on(data_dir) as kernel:
        assert stored(kernel, "life") == {"started": 2, "stopped": 2}


# --- restarts -----------------------------------------------------------------------------


async def test_a_restarted_agent_sees_the_last_committed_state(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    seen_at_start: list[dict[str, Any]] = []
    started = trio.Event()

    async def start(ctx: Context) -> None:
        seen_at_start.append(dict(ctx.state))
        if len(seen_at_start) == 2:
            started.set()

    async def count(ctx: Context, event: Event) -> None:
        ctx.state["n"] = ctx.state.get("n", 0) + 1

    async def crash(ctx: Context, event: Event) -> None:
        ctx.state["n"] = 999
        ctx.state["junk"] = True
        raise Boom

    steps: dict[str, EventStep] = {"count": count, "crash": crash}
    async with kernel_on(tmp_path / "data", state_sync=False) as kernel:
        handle = await kernel.spawn(ScriptedAgent("r", steps, on_start=start))
        for step in ("count", "count", "crash"):
            await send(kernel, "r", step)
        with trio.fail_after(WAIT_LIMIT_S):
            await started.wait()
        assert handle.restarts == 1
        assert seen_at_start == [{}, {"n": 2}]
        await send(kernel, "r", "count")
        await handled(kernel, "r", steps)
        assert stored(kernel, "r") == {"n": 3}


async def test_a_second_kernel_on_a_held_directory_fails_to_open_with_data_dir_in_use(
    tmp_path: Path,
) -> None:
    """The lock is taken when the kernel opens: a second kernel never runs its body (before,
    it ran, and each of its handlers failed with DataDirInUse)."""
    data_dir = tmp_path / "data"

    async def start(ctx: Context) -> None:
        ctx.state["x"] = 1

    body_ran = False
    async with kernel_on(data_dir) as first:
        await first.spawn(ScriptedAgent("holder", on_start=start))
        with pytest.raises(DataDirInUse) as caught:
            async with kernel_on(data_dir):
                body_ran = True
        message = str(caught.value)
        assert "data directory in use" in message
        assert str(data_dir) in message
        assert "another data_dir" in message  # what to do about it
        assert stored(first, "holder") == {"x": 1}  # the first kernel is unaffected
    assert not body_ran
    async with kernel_on(data_dir) as third:  # the first kernel released it on closing
        assert stored(third, "holder") == {"x": 1}


# --- kernel.agent_state -------------------------------------------------------------------


async def test_agent_state_of_a_running_then_stopped_agent(tmp_path: Path) -> None:
    async def write(ctx: Context, event: Event) -> None:
        ctx.state["name"] = "ada"
        ctx.state["blob"] = b"\x00\x01\xfe"
        ctx.memory.extend(["note", b"\xff", {"k": 1}])

    async def read_only(ctx: Context, event: Event) -> None:
        ctx.state.get("name")
        await ctx.emit("out", out("no state written"))

    steps: dict[str, EventStep] = {"write": write, "read": read_only}
    metadata = {"role": "scripted", "team": "tests"}
    async with kernel_on(tmp_path / "data") as kernel:
        await kernel.spawn(ScriptedAgent("ag", steps, metadata=metadata))
        never = kernel.agent_state("ag")
        assert never == AgentState(
            "ag", b"{}", b"[]", 0, metadata
        )  # running, nothing committed yet
        before = now_ms()
        await send(kernel, "ag", "write")
        await handled(kernel, "ag", steps)
        after = now_ms()
        running = kernel.agent_state("ag")
        assert running.agent_id == "ag"
        assert json.loads(running.persistent_state) == {
            "name": "ada",
            "blob": {"$bytes": base64.b64encode(b"\x00\x01\xfe").decode()},
        }
        assert json.loads(running.ephemeral_context) == [
            "note",
            {"$bytes": base64.b64encode(b"\xff").decode()},
            {"k": 1},
        ]
        assert before <= running.last_update_ms <= after
        assert running.metadata == metadata

        commits = kernel.state.store.stats().commits
        await send(kernel, "ag", "read")  # reads and emits only: no commit
        await handled(kernel, "ag", steps)
        assert kernel.state.store.stats().commits == commits
        assert kernel.agent_state("ag").last_update_ms == running.last_update_ms

        await kernel.stop_agent("ag")
        stopped = kernel.agent_state("ag")  # from disk
        assert stopped.agent_id == "ag"
        assert stopped.persistent_state == running.persistent_state
        assert stopped.last_update_ms == running.last_update_ms
        assert stopped.ephemeral_context == b"[]"
    with pytest.raises(KernelClosed):
        kernel.agent_state("ag")


async def test_last_update_ms_moves_with_each_commit(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    async def write(ctx: Context, event: Event) -> None:
        ctx.state["v"] = ctx.state.get("v", 0) + 1

    steps: dict[str, EventStep] = {"write": write}
    async with kernel_on(tmp_path / "data", state_sync=False) as kernel:
        await kernel.spawn(ScriptedAgent("t", steps))
        stamps = []
        for _ in range(3):
            before = now_ms()
            await send(kernel, "t", "write")
            await handled(kernel, "t", steps)
            stamp = kernel.agent_state("t").last_update_ms
            assert before <= stamp <= now_ms()
            stamps.append(stamp)
        assert stamps == sorted(stamps)
        assert stored(kernel, "t") == {"v": 3}


async def test_agent_state_of_an_unknown_agent_is_empty(tmp_path: Path) -> None:
    async with kernel_on(tmp_path / "data") as kernel:
        assert kernel.agent_state("nobody") == AgentState("nobody", b"{}", b"[]", 0, {})


# --- kernel.forget_agent ------------------------------------------------------------------


async def test_forget_agent_deletes_that_agent_only_and_returns_the_count(
    tmp_path: Path,
) -> None:
    data_dir = tmp_path / "data"
    starts: list[dict[str, Any]] = []

    async def write(ctx: Context) -> None:
        starts.append(dict(ctx.state))
        ctx.state.update({"a": 1, "b": b"2", "c": [3]})

    async with kernel_on(data_dir) as kernel:
        for agent_id in ("bot", "bot.2", "bo", "other"):  # ids sharing a textual prefix
            await kernel.spawn(ScriptedAgent(agent_id, on_start=write))
        kept = {agent_id: kernel.agent_state(agent_id) for agent_id in ("bot.2", "bo", "other")}

        with pytest.raises(AgentError):  # a running agent would write its state back
            await kernel.forget_agent("bot")
        assert stored(kernel, "bot") == {"a": 1, "b": {"$bytes": "Mg=="}, "c": [3]}

        await kernel.stop_agent("bot")
        assert await kernel.forget_agent("bot") == 3 + 1  # three values and the metadata key
        assert kernel.agent_state("bot") == AgentState("bot", b"{}", b"[]", 0, {})
        assert await kernel.forget_agent("bot") == 0
        for agent_id, state in kept.items():
            assert kernel.agent_state(agent_id) == state

        starts.clear()
        await kernel.spawn(ScriptedAgent("bot", on_start=write))  # starts from empty state
        assert starts == [{}]
    async with kernel_on(data_dir) as kernel:  # the deletion is durable too
        assert await kernel.forget_agent("never-existed") == 0
        assert stored(kernel, "other") == {"a": 1, "b": {"$bytes": "Mg=="}, "c": [3]}


async def test_a_respawned_agent_without_forget_keeps_its_state(tmp_path: Path) -> None:
    starts: list[dict[str, Any]] = []

    async def start(ctx: Context) -> None:
        starts.append(dict(ctx.state))
        ctx.state["lives"] = ctx.state.get("lives", 0) + 1

    async with kernel_on(tmp_path / "data") as kernel:
        await kernel.spawn(ScriptedAgent("p", on_start=start))
        await kernel.stop_agent("p")
        await kernel.spawn(ScriptedAgent("p", on_start=start))
        assert starts == [{}, {"lives": 1}]


# --- where the state lives ----------------------------------------------------------------


async def test_the_data_directory_is_opened_with_the_kernel_and_stateless_agents_write_nothing(
    tmp_path: Path,
) -> None:
    data_dir = tmp_path / "data"

    async def chat(ctx: Context, event: Event | None = None) -> None:
        await ctx.emit("out", out("hi"))
        ctx.memory.append("memory is not state")

    async with kernel_on(data_dir) as kernel:
        assert kernel.state.opened  # before anything ran: a held directory fails here
        assert kernel.state.data_dir == data_dir
        assert (data_dir / "CURRENT").is_file()
        sub = kernel.bus.subscribe("out")
        await kernel.spawn(ScriptedAgent("quiet", {"chat": chat}, on_start=chat, on_stop=chat))
        await send(kernel, "quiet", "chat")
        assert texts(await receive(sub, 2)) == ["hi", "hi"]
        await kernel.stop_agent("quiet")
        assert texts(await receive(sub, 1)) == ["hi"]
        assert kernel.state.store.stats().commits == 0


async def test_a_state_temporary_kernel_opens_no_database_until_state_is_used(
    tmp_path: Path,
) -> None:
    async def chat(ctx: Context, event: Event | None = None) -> None:
        await ctx.emit("out", out("hi"))

    async def keep(ctx: Context, event: Event) -> None:
        ctx.state["kept"] = True

    async with kernel_on(tmp_path / "data", state_temporary=True) as kernel:
        temporary = kernel.state.data_dir  # made when the kernel opened, empty until used
        assert temporary.is_dir()
        assert list(temporary.iterdir()) == []
        sub = kernel.bus.subscribe("out")
        await kernel.spawn(ScriptedAgent("quiet", {"keep": keep}, on_start=chat))
        assert texts(await receive(sub, 1)) == ["hi"]
        assert not kernel.state.opened
        await send(kernel, "quiet", "keep")
        await kernel.stop_agent("quiet")
        assert kernel.state.opened
        assert stored(kernel, "quiet") == {"kept": True}
    assert not temporary.exists()
    assert not (tmp_path / "data").exists()


async def test_state_temporary_uses_a_directory_removed_when_the_kernel_closes(
    tmp_path: Path,
) -> None:
    data_dir = tmp_path / "data"

    async def start(ctx: Context) -> None:
        ctx.state["x"] = 1

    async with kernel_on(data_dir, state_temporary=True) as kernel:
        await kernel.spawn(ScriptedAgent("tmp", on_start=start))
        assert kernel.state.opened
        temporary = kernel.state.data_dir
        assert temporary != data_dir
        assert (temporary / "CURRENT").is_file()
        assert stored(kernel, "tmp") == {"x": 1}
    assert not temporary.exists()
    assert not data_dir.exists()


async def test_with_state_temporary_the_kernels_config_names_the_temporary_directory(
    tmp_path: Path,
) -> None:
    async with kernel_on(tmp_path / "data", state_temporary=True) as kernel:
        assert kernel.config.data_dir == kernel.state.data_dir  # not the unused data_dir
        assert kernel.config.data_dir != tmp_path / "data"
        assert kernel.config.data_dir.is_dir()
        assert kernel.config.source("data_dir") == ConfigSource("kernel", "state_temporary")
        assert str(kernel.config.source("data_dir")) == "the kernel (state_temporary)"


async def test_a_relative_data_dir_in_a_given_config_is_taken_from_the_working_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    config = Config(data_dir=Path("relative"), log_level="critical", state_sync=False)
    async with open_kernel(config) as kernel:
        assert kernel.state.data_dir == tmp_path / "relative"
        assert kernel.config.data_dir == tmp_path / "relative"
        assert kernel.config.source("data_dir").kind == "keyword"
    assert (tmp_path / "relative" / "CURRENT").is_file()


async def test_mutating_an_assigned_value_after_the_commit_does_not_change_the_state(
    tmp_path: Path,
) -> None:
    kept: list[list[int]] = []
    seen: list[Any] = []

    async def write(ctx: Context, event: Event) -> None:
        value = [1]
        ctx.state["k"] = value
        kept.append(value)

    async def mutate_and_read(ctx: Context, event: Event) -> None:
        kept[0].append(2)  # the handler's own list, after it was committed
        seen.append(ctx.state["k"])

    steps: dict[str, EventStep] = {"write": write, "read": mutate_and_read}
    async with kernel_on(tmp_path / "data") as kernel:
        await kernel.spawn(ScriptedAgent("keeper", steps))
        await send(kernel, "keeper", "write")
        await send(kernel, "keeper", "read")
        await handled(kernel, "keeper", steps)
    assert seen == [[1]]
