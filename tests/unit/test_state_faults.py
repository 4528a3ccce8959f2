"""Faults of the store seen through real kernels: damaged data on a real LevelDB.

A fault of the store (damaged data, a failed write) is the environment's, not a handler's
bug: with ``state_fault = "stop"`` (the default) it stops the kernel and ``open_kernel``
raises the typed error; with ``"agent"`` only the handler that met it fails. Before this
change a damaged table raised plyvel's own ``CorruptionError`` into the handler and the
agents restarted until they gave up, while the kernel carried on.
"""

from __future__ import annotations

from contextlib import AbstractAsyncContextManager
from pathlib import Path
from typing import Any

import pytest
import trio
import trio.testing
from store_support import flip_bytes

from loomk import Context, Event, Kernel, StoreCorrupted
from loomk.state import Store
from loomk.testing import ScriptedAgent, open_test_kernel

settle = trio.testing.wait_all_tasks_blocked
KEYS = 2000


def kernel_on(data_dir: Path, **settings: Any) -> AbstractAsyncContextManager[Kernel]:
    """A test kernel whose state lives on in ``data_dir``."""
    return open_test_kernel(data_dir=data_dir, state_temporary=False, **settings)


async def damaged_state_of(data_dir: Path, agent_id: str) -> None:
    """``agent_id`` stored many keys; then bytes in the middle of their table were flipped."""

    async def fill(ctx: Context) -> None:
        for n in range(KEYS):
            ctx.state[f"k{n:04d}"] = f"value {n} " * 8

    async with kernel_on(data_dir) as kernel:
        await kernel.spawn(ScriptedAgent(agent_id, on_start=fill))
    Store.open(data_dir).close_now()  # LevelDB moves its log into a table on opening
    (table,) = data_dir.glob("*.ldb")
    flip_bytes(table, table.stat().st_size // 2)


async def read_state(ctx: Context) -> None:
    ctx.state.get("k0000")


async def read_on_event(ctx: Context, event: Event) -> None:
    await read_state(ctx)


async def test_a_damaged_state_stops_the_kernel_with_store_corrupted(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    await damaged_state_of(data_dir, "reader")
    kept_running: list[Kernel] = []

    async def body() -> None:
        async with kernel_on(data_dir) as kernel:
            await kernel.spawn(ScriptedAgent("reader", on_start=read_state))
            await settle()  # the kernel is stopping: the body is cancelled by now
            kept_running.append(kernel)

    with pytest.raises(StoreCorrupted) as caught:
        await body()
    assert kept_running == []
    message = str(caught.value)
    assert str(data_dir) in message
    assert "Corruption" in message


async def test_with_state_fault_agent_only_the_handler_fails_and_the_kernel_goes_on(
    tmp_path: Path,
) -> None:
    data_dir = tmp_path / "data"
    await damaged_state_of(data_dir, "reader")
    async with kernel_on(data_dir, state_fault="agent") as kernel:
        handle = await kernel.spawn(
            ScriptedAgent("reader", {"read": read_on_event}), restart="temporary"
        )
        await kernel.bus.publish("in.reader", Event("read"))
        await settle()
        assert handle.status == "failed"
        assert isinstance(handle.last_error, StoreCorrupted)
        assert str(data_dir) in str(handle.last_error)
        assert not kernel.stopping
        writer = await kernel.spawn(ScriptedAgent("other", on_start=write_one))
        await kernel.stop_agent("other")  # the rest of the store still works
        assert writer.failures == 0
        assert kernel.state.load("other") == {"one": 1}


async def write_one(ctx: Context) -> None:
    ctx.state["one"] = 1


async def test_agent_state_of_a_damaged_state_raises_store_corrupted_not_plyvels_error(
    tmp_path: Path,
) -> None:
    data_dir = tmp_path / "data"
    await damaged_state_of(data_dir, "reader")
    with pytest.raises(StoreCorrupted) as caught:
        async with kernel_on(data_dir) as kernel:
            kernel.agent_state("reader")
    assert str(data_dir) in str(caught.value)


async def test_a_kernel_on_a_log_cut_short_fails_to_open_before_its_body_runs(
    tmp_path: Path,
) -> None:
    data_dir = tmp_path / "data"

    async def count(ctx: Context, event: Event) -> None:
        ctx.state["n"] = ctx.state.get("n", 0) + 1
        await ctx.flush()  # one acknowledged commit per event
        await ctx.emit("acks", Event("ack"))

    async with kernel_on(data_dir, state_sync=True) as kernel:
        acks = kernel.bus.subscribe("acks")
        await kernel.spawn(ScriptedAgent("counter", {"tick": count}))
        for _ in range(100):
            await kernel.bus.publish("in.counter", Event("tick"))
        for _ in range(100):
            await acks.receive()
        assert kernel.state.load("counter") == {"n": 100}
    (log,) = data_dir.glob("*.log")
    log.write_bytes(log.read_bytes()[: log.stat().st_size // 2])
    body_ran = False
    with pytest.raises(StoreCorrupted, match="lost acknowledged commits"):
        async with kernel_on(data_dir):
            body_ran = True
    assert not body_ran
