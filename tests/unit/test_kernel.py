"""The kernel: run/open_kernel lifecycle, ordered shutdown, configuration and typed errors.

``loomk.run`` and the configuration tests use the real entry points as a program does; the
lifecycle tests run in ``open_test_kernel`` (``open_kernel`` without the environment).
"""

from __future__ import annotations

from pathlib import Path

import pytest
import trio
import trio.testing

import loomk
from loomk import ConfigError, Event, Kernel, KernelClosed, QoS
from loomk.testing import open_test_kernel


def test_run_returns_what_main_returns() -> None:
    async def main(kernel: Kernel) -> int:
        sub = kernel.bus.subscribe("greetings.>")
        delivered = await kernel.bus.publish("greetings.world", Event("hello", b"hi"))
        topic, event = sub.receive_nowait()
        assert (topic, event.payload) == ("greetings.world", b"hi")
        return delivered * 21

    assert loomk.run(main) == 21


def test_run_reraises_the_error_of_main_unwrapped() -> None:
    async def main(kernel: Kernel) -> None:
        raise LookupError("main failed")

    with pytest.raises(LookupError, match="main failed"):
        loomk.run(main)


def test_run_applies_keyword_config() -> None:
    async def main(kernel: Kernel) -> tuple[str, int]:
        sub = kernel.bus.subscribe("x", qos=QoS.REALTIME)
        return kernel.name, sub.stats().capacity

    assert loomk.run(main, name="k1", bus_realtime_capacity=7) == ("k1", 7)


def test_run_rejects_an_unknown_setting_naming_it() -> None:
    async def main(kernel: Kernel) -> None:
        raise AssertionError("must not start")

    with pytest.raises(ConfigError, match="bus_realtime_capacty") as info:
        loomk.run(main, bus_realtime_capacty=7)
    assert info.value.key == "bus_realtime_capacty"
    assert "bus_realtime_capacity" in str(info.value)  # the suggestion


def test_run_rejects_a_bad_value_naming_the_key() -> None:
    async def main(kernel: Kernel) -> None:
        raise AssertionError("must not start")

    with pytest.raises(ConfigError) as info:
        loomk.run(main, bus_batched_capacity=0)
    assert info.value.key == "bus_batched_capacity"


def test_configuration_from_environment_and_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "loomk.toml").write_text('name = "from-file"\n[bus]\nbatched_capacity = 5\n')
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("LOOMK_BUS_BACKGROUND_CAPACITY", "9")

    async def main(kernel: Kernel) -> tuple[str, int, int]:
        batched = kernel.bus.subscribe("a", qos=QoS.BATCHED).stats().capacity
        background = kernel.bus.subscribe("a", qos=QoS.BACKGROUND).stats().capacity
        return kernel.name, batched, background

    assert loomk.run(main) == ("from-file", 5, 9)
    assert loomk.run(main, name="from-kwargs")[0] == "from-kwargs"  # type: ignore[index]


async def test_open_kernel_closes_the_bus_when_the_body_ends() -> None:
    async with open_test_kernel() as kernel:
        sub = kernel.bus.subscribe("t")
        await kernel.bus.publish("t", Event("e"))
        assert not kernel.closed
    assert kernel.closed
    assert kernel.bus.closed
    with pytest.raises(KernelClosed):
        await kernel.bus.publish("t", Event("e"))
    # What was delivered before shutdown can still be drained, then the stream ends.
    assert [topic async for topic, _ in sub] == ["t"]


async def test_stop_ends_the_body_without_an_error() -> None:
    reached_end = False
    async with open_test_kernel() as kernel:
        kernel.stop()
        assert kernel.stopping
        await trio.sleep_forever()
        reached_end = True  # pragma: no cover - stop() cancels the body
    assert not reached_end
    assert kernel.closed


async def test_stop_with_an_error_raises_it_after_shutdown() -> None:
    kernels: list[Kernel] = []

    async def body() -> None:
        async with open_test_kernel() as kernel:
            kernels.append(kernel)
            kernel.stop(RuntimeError("critical agent failed"))
            await trio.sleep_forever()

    with pytest.raises(RuntimeError, match="critical agent failed"):
        await body()
    assert kernels[0].closed


async def test_background_tasks_are_cancelled_first_and_the_bus_closes_last() -> None:
    order: list[str] = []

    async def edge_task(kernel: Kernel) -> None:
        try:
            await trio.sleep_forever()
        finally:
            order.append(f"edge cancelled, bus closed={kernel.bus.closed}")

    async with open_test_kernel() as kernel:
        kernel.start_soon(edge_task, kernel)
        await trio.testing.wait_all_tasks_blocked()
    order.append(f"after shutdown, bus closed={kernel.bus.closed}")
    assert order == ["edge cancelled, bus closed=False", "after shutdown, bus closed=True"]


async def test_start_returns_the_started_value() -> None:
    async def service(task_status: trio.TaskStatus[str] = trio.TASK_STATUS_IGNORED) -> None:
        task_status.started("listening")
        await trio.sleep_forever()

    async with open_test_kernel() as kernel:
        assert await kernel.start(service) == "listening"


async def test_starting_a_task_on_a_closed_kernel_is_a_typed_error() -> None:
    async with open_test_kernel() as kernel:
        pass

    async def nothing() -> None:
        raise AssertionError("must not run")

    with pytest.raises(KernelClosed):
        kernel.start_soon(nothing)


async def test_a_failing_background_task_stops_the_kernel_with_its_error() -> None:
    async def broken() -> None:
        raise ValueError("edge broke")

    kernels: list[Kernel] = []

    async def body() -> None:
        async with open_test_kernel() as kernel:
            kernels.append(kernel)
            kernel.start_soon(broken)
            await trio.sleep_forever()

    with pytest.raises(ValueError, match="edge broke"):
        await body()
    assert kernels[0].closed


async def test_open_kernel_accepts_a_ready_config() -> None:
    config = loomk.Config.load(name="ready")
    async with loomk.open_kernel(config, bus_realtime_capacity=3) as kernel:
        assert kernel.name == "ready"
        assert kernel.config.bus_realtime_capacity == 3
