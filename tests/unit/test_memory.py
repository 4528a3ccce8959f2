"""``ctx.memory``: the bounded, in-memory window of ``EphemeralMemory``.

Bounded by count and by bytes (the oldest go first), checked items, ``items``/``clear``/
``size_bytes``/``as_json``; through a real kernel: sized by the config, surviving an agent
restart (the same handle), not transactional, shown in ``kernel.agent_state``.
"""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest
import trio
import trio.testing

import loomk
from loomk import Context, Event
from loomk.errors import StateError
from loomk.state import EphemeralMemory, MemoryStats
from loomk.testing import EventStep, ScriptedAgent, open_test_kernel

WAIT_LIMIT_S = 5.0


# --- EphemeralMemory --------------------------------------------------------------------


def test_items_are_kept_oldest_first_with_their_sizes() -> None:
    memory = EphemeralMemory(max_items=10, max_bytes=1000)
    assert memory.items() == []
    assert len(memory) == 0
    assert memory.size_bytes == 0
    memory.append("héllo")  # str: its UTF-8 length
    memory.append(b"\x00\x01\x02")  # bytes: their length
    memory.append({"k": [1, 2]})  # JSON: its compact encoding
    memory.extend([7, None])
    assert memory.items() == ["héllo", b"\x00\x01\x02", {"k": [1, 2]}, 7, None]
    assert list(memory) == memory.items()
    assert len(memory) == 5
    assert memory.size_bytes == 6 + 3 + len('{"k":[1,2]}') + 1 + 4


def test_the_oldest_items_go_first_past_max_items() -> None:
    memory = EphemeralMemory(max_items=3, max_bytes=1000)
    for i in range(7):
        memory.append(f"item{i}")
        assert len(memory) == min(i + 1, 3)
    assert memory.items() == ["item4", "item5", "item6"]
    assert memory.size_bytes == 3 * 5


def test_the_oldest_items_go_first_past_max_bytes() -> None:
    memory = EphemeralMemory(max_items=100, max_bytes=10)
    memory.append("aaaa")  # 4
    memory.append("bbbb")  # 8
    assert memory.items() == ["aaaa", "bbbb"]
    memory.append("cc")  # 10: exactly at the bound, nothing goes
    assert memory.items() == ["aaaa", "bbbb", "cc"]
    assert memory.size_bytes == 10
    memory.append("d")  # 11: the oldest goes
    assert memory.items() == ["bbbb", "cc", "d"]
    assert memory.size_bytes == 7
    memory.append("eeeeeeeeee")  # 10 on its own: everything else goes
    assert memory.items() == ["eeeeeeeeee"]
    assert memory.size_bytes == 10


def test_an_item_bigger_than_max_bytes_alone_is_refused_and_changes_nothing() -> None:
    memory = EphemeralMemory(max_items=10, max_bytes=8)
    memory.append("keep")
    for item in ("x" * 9, b"y" * 9, ["z" * 7]):
        with pytest.raises(StateError, match="max_bytes"):
            memory.append(item)
    assert memory.items() == ["keep"]
    assert memory.size_bytes == 4


@pytest.mark.parametrize(
    "item",
    [object(), {1, 2}, float("nan"), float("inf"), {"nested": object()}, [b"bytes-in-a-list"]],
    ids=["object", "set", "nan", "inf", "nested-object", "nested-bytes"],
)
def test_an_item_that_is_not_json_is_refused_with_state_error(item: Any) -> None:
    memory = EphemeralMemory()
    memory.append("keep")
    with pytest.raises(StateError):
        memory.append(item)
    assert memory.items() == ["keep"]
    assert memory.size_bytes == 4


def test_a_str_with_a_lone_surrogate_is_stored_or_refused_with_state_error() -> None:
    """Such a str is valid JSON (``json.dumps`` escapes it): appending it must either work or
    be refused as a StateError, never leak an encoding error."""
    memory = EphemeralMemory()
    try:
        memory.append("\ud800")
    except StateError:
        assert memory.items() == []
    else:
        assert memory.items() == ["\ud800"]
        assert json.loads(memory.as_json()) == ["\ud800"]


def test_stats_count_what_was_appended_and_evicted_in_a_frozen_snapshot() -> None:
    memory = EphemeralMemory(max_items=2, max_bytes=10)
    assert memory.stats() == MemoryStats(0, 0, 2, 10, 0, 0)
    memory.extend(["aaaa", "bbbb", "cc"])  # the third pushes the first out (count)
    snapshot = memory.stats()
    memory.append("dddddddddd")  # 10 bytes: everything else goes (bytes)
    assert snapshot == MemoryStats(2, 6, 2, 10, 3, 1)
    assert memory.stats() == MemoryStats(1, 10, 2, 10, 4, 3)
    memory.clear()
    assert memory.stats() == MemoryStats(0, 0, 2, 10, 4, 3)  # cleared, not evicted


def test_clear_forgets_everything() -> None:
    memory = EphemeralMemory(max_items=3, max_bytes=100)
    memory.extend(["a", "b", "c"])
    memory.clear()
    assert memory.items() == []
    assert len(memory) == 0
    assert memory.size_bytes == 0
    memory.extend(["d", "e", "f", "g"])  # bounds still hold after a clear
    assert memory.items() == ["e", "f", "g"]
    assert memory.size_bytes == 3


def test_as_json_is_a_json_list_with_bytes_in_base64() -> None:
    memory = EphemeralMemory()
    assert json.loads(memory.as_json()) == []
    memory.extend(["text", b"\xff\x00raw", {"a": 1}, [1, "two"], 3.5, True, None])
    assert json.loads(memory.as_json()) == [
        "text",
        {"$bytes": base64.b64encode(b"\xff\x00raw").decode()},
        {"a": 1},
        [1, "two"],
        3.5,
        True,
        None,
    ]


@pytest.mark.parametrize(("max_items", "max_bytes"), [(0, 10), (10, 0), (-1, 10)])
def test_bounds_below_one_are_refused(max_items: int, max_bytes: int) -> None:
    with pytest.raises(StateError):
        EphemeralMemory(max_items=max_items, max_bytes=max_bytes)


# --- ctx.memory through a kernel --------------------------------------------------------


class Boom(Exception):
    """A handler failure the tests provoke."""


async def send(kernel: loomk.Kernel, agent_id: str, step: str) -> None:
    assert await kernel.bus.publish(f"in.{agent_id}", Event(step)) == 1


async def test_ctx_memory_is_sized_by_the_config_and_stays_off_the_disk() -> None:
    seen: list[EphemeralMemory] = []

    async def start(ctx: Context) -> None:
        ctx.memory.extend(["a", "b", "c", "d"])
        seen.append(ctx.memory)

    async with open_test_kernel(memory_max_items=3, memory_max_bytes=64) as kernel:
        await kernel.spawn(ScriptedAgent("m", on_start=start))
        (memory,) = seen
        assert not kernel.state.opened  # memory lives in memory only
        assert (memory.max_items, memory.max_bytes) == (3, 64)
        assert memory.items() == ["b", "c", "d"]
        assert json.loads(kernel.agent_state("m").ephemeral_context) == ["b", "c", "d"]
        assert kernel.agents.get("m").memory is memory


async def test_memory_survives_an_agent_restart_and_is_not_transactional(
    autojump_clock: trio.testing.MockClock,
) -> None:
    memories: list[tuple[int, list[Any]]] = []
    restarted = trio.Event()

    async def start(ctx: Context) -> None:
        memories.append((id(ctx.memory), ctx.memory.items()))
        if len(memories) == 2:
            restarted.set()

    async def remember(ctx: Context, event: Event) -> None:
        ctx.memory.append("kept")

    async def fail(ctx: Context, event: Event) -> None:
        ctx.memory.append("appended by a failing handler")
        ctx.state["x"] = 1  # the state write is discarded, the memory append is not
        raise Boom

    steps: dict[str, EventStep] = {"remember": remember, "fail": fail}
    async with open_test_kernel() as kernel:
        handle = await kernel.spawn(ScriptedAgent("m", steps, on_start=start))
        await send(kernel, "m", "remember")
        await send(kernel, "m", "fail")
        with trio.fail_after(WAIT_LIMIT_S):
            await restarted.wait()  # the backoff passes on the mock clock
        assert handle.restarts == 1
        assert isinstance(handle.last_error, Boom)
        (first_id, first_items), (second_id, second_items) = memories
        assert first_items == []
        assert second_items == ["kept", "appended by a failing handler"]
        assert second_id == first_id  # the same window, held by the handle
        state = kernel.agent_state("m")
        assert json.loads(state.ephemeral_context) == second_items
        assert json.loads(state.persistent_state) == {}


async def test_memory_does_not_outlive_the_agent() -> None:
    seen: list[list[Any]] = []

    async def start(ctx: Context) -> None:
        seen.append(ctx.memory.items())
        ctx.memory.append("first life")

    async with open_test_kernel() as kernel:
        await kernel.spawn(ScriptedAgent("m", on_start=start))
        await kernel.stop_agent("m")
        assert kernel.agent_state("m").ephemeral_context == b"[]"  # stopped: no window
        await kernel.spawn(ScriptedAgent("m", on_start=start))  # a new agent, a new window
        assert seen == [[], []]
