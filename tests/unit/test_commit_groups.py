"""Group commits: while an agent has a backlog, consecutive handlers share one commit.

The rules (docs/state.md): a group holds at most ``COMMIT_GROUP_MAX`` handlers and is
committed before the agent parks; its held events go out after the commit, in emit order;
a later handler reads earlier handlers' writes in their stored form; a handler that raises
loses only its own writes and events, and ``ctx.flush()`` commits the group so far.

Each test builds a backlog deterministically: the first event's handler waits on a gate
while the test publishes the rest, so they are all queued when the gate opens. The test
kernels run with ``state_sync`` off, so small batches are written on the trio thread and
``wait_all_tasks_blocked`` sees them through.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from typing import Any

import trio
import trio.testing
from support import drain

from loomk import Agent, Context, Event, Kernel
from loomk.agents import COMMIT_GROUP_MAX, AgentHandle
from loomk.testing import open_test_kernel

settle = trio.testing.wait_all_tasks_blocked

Handler = Callable[[Context, int], Awaitable[None]]


class Boom(Exception):
    """A handler failure the tests provoke."""


class Backlogged(Agent):
    """Runs ``handler(ctx, n)`` for event ``n`` on ``in.b``; event 0 first waits for ``gate``."""

    topics = ("in.b",)

    def __init__(self, gate: trio.Event, handler: Handler) -> None:
        super().__init__("b")
        self.gate = gate
        self.handler = handler

    async def on_event(self, ctx: Context, event: Event) -> None:
        n = int(event.payload)
        if n == 0:
            await self.gate.wait()
        await self.handler(ctx, n)


def stored(kernel: Kernel) -> dict[str, Any]:
    value: dict[str, Any] = json.loads(kernel.agent_state("b").persistent_state)
    return value


async def backlog(
    kernel: Kernel, handler: Handler, count: int, **spawn: Any
) -> tuple[AgentHandle, int]:
    """Spawn the agent, queue events 0..count-1 behind its gate, open it; returns the agent's
    handle and the store's commit count just before the gate opened."""
    gate = trio.Event()
    handle = await kernel.spawn(Backlogged(gate, handler), **spawn)
    await kernel.bus.publish("in.b", Event("n", b"0"))
    await settle()  # handler 0 waits at the gate
    for n in range(1, count):
        await kernel.bus.publish("in.b", Event("n", str(n).encode()))
    await settle()
    commits = kernel.state.store.stats().commits
    gate.set()
    await settle()
    return handle, commits


async def write_and_emit(ctx: Context, n: int) -> None:
    ctx.state[f"k{n}"] = n
    await ctx.emit("out.b", Event("done", str(n).encode()))


async def test_a_backlog_commits_in_groups_of_at_most_the_bound() -> None:
    count = 2 * COMMIT_GROUP_MAX + 3

    async def write(ctx: Context, n: int) -> None:
        ctx.state[f"k{n}"] = n

    async with open_test_kernel() as kernel:
        kernel.state.store  # noqa: B018 - opened before the clock of commits starts
        _, commits_before = await backlog(kernel, write, count)
        assert kernel.state.store.stats().commits - commits_before == 3  # 64 + 64 + 3
        assert kernel.agents.get("b").handled == count
        assert stored(kernel) == {f"k{n}": n for n in range(count)}


async def test_a_handler_with_held_events_ends_its_group_so_they_go_out_at_once() -> None:
    """An answer must not wait for the next queued handler: here that handler waits for
    the answer itself, so holding it back would never end."""
    seen_stored: list[dict[str, Any]] = []
    answered = trio.Event()

    async def handler(ctx: Context, n: int) -> None:
        if n == 2:
            with trio.fail_after(5):
                await answered.wait()
        await write_and_emit(ctx, n)

    async with open_test_kernel() as kernel:
        kernel.state.store  # noqa: B018
        out = kernel.bus.subscribe("out.b", capacity=16)

        async def watch() -> None:
            for _ in range(2):
                await out.receive()
                seen_stored.append(stored(kernel))  # committed before it went out
            answered.set()

        kernel.start_soon(watch)
        handle, _ = await backlog(kernel, handler, 4)
        assert handle.handled == 4
        assert [int(event.payload) for _, event in drain(out)] == [2, 3]
    first, second = seen_stored  # each event went out after its own handler's commit
    assert first.items() >= {"k0": 0}.items()
    assert second.items() >= {"k0": 0, "k1": 1}.items()


async def test_a_later_handler_reads_earlier_writes_in_stored_form() -> None:
    reads: list[Any] = []

    async def handler(ctx: Context, n: int) -> None:
        if n == 1:
            ctx.state["tuple"] = (1, "two")
            ctx.state["bytearray"] = bytearray(b"ba")
            ctx.state["list"] = mutable = [1]
            mutable.append(2)  # after the assignment: not stored, so not read back
        elif n == 2:
            reads.append((ctx.state["tuple"], ctx.state["bytearray"], ctx.state["list"]))

    async with open_test_kernel() as kernel:
        kernel.state.store  # noqa: B018
        _, commits_before = await backlog(kernel, handler, 3)
        assert kernel.state.store.stats().commits - commits_before == 1  # one group
        assert reads == [([1, "two"], b"ba", [1])]


async def test_a_failing_handler_loses_only_its_own_writes_and_events() -> None:
    async def handler(ctx: Context, n: int) -> None:
        await write_and_emit(ctx, n)
        if n == 3:
            raise Boom

    async with open_test_kernel() as kernel:
        kernel.state.store  # noqa: B018
        out = kernel.bus.subscribe("out.b", capacity=16)
        handle, _ = await backlog(kernel, handler, 6, restart="temporary")
        assert handle.status == "failed"
        assert stored(kernel) == {"k0": 0, "k1": 1, "k2": 2}
        assert [int(event.payload) for _, event in drain(out)] == [0, 1, 2]
        assert handle.handled == 3


async def test_flush_commits_the_group_so_far() -> None:
    seen_at_flush: list[dict[str, Any]] = []
    kernel_ref: list[Kernel] = []

    async def handler(ctx: Context, n: int) -> None:
        ctx.state[f"k{n}"] = n
        if n == 2:
            await ctx.flush()
            seen_at_flush.append(stored(kernel_ref[0]))
            ctx.state["after"] = True
            raise Boom

    async with open_test_kernel() as kernel:
        kernel_ref.append(kernel)
        kernel.state.store  # noqa: B018
        await backlog(kernel, handler, 4, restart="temporary")
        assert seen_at_flush == [{"k0": 0, "k1": 1, "k2": 2}]
        assert stored(kernel) == {"k0": 0, "k1": 1, "k2": 2}  # "after" went with the failure


async def test_a_handler_cut_short_by_a_stop_timeout_leaves_nothing(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """It never returned, so none of its writes or held events count; the handlers before
    it in its group still do."""

    async def handler(ctx: Context, n: int) -> None:
        await write_and_emit(ctx, n)
        if n == 2:
            await trio.sleep_forever()  # cut short by stop_agent's timeout

    async with open_test_kernel() as kernel:
        kernel.state.store  # noqa: B018
        out = kernel.bus.subscribe("out.b", capacity=16)
        handle, _ = await backlog(kernel, handler, 3)
        await kernel.stop_agent("b", timeout_s=1)
        assert stored(kernel) == {"k0": 0, "k1": 1}
        assert [int(event.payload) for _, event in drain(out)] == [0, 1]
        assert handle.handled == 2
