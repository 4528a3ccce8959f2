"""loomk.testing, the kit users test their agents with: each helper does what it says."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import pytest
import trio
import trio.testing

import loomk
from loomk import ActionCall, ActionResult, CapabilityProvider, ConfigError, Context, Event, Kernel
from loomk.testing import (
    RecordingProvider,
    ScriptedAgent,
    assert_conserved,
    capture_events,
    open_test_kernel,
    run_test_kernel,
)

settle = trio.testing.wait_all_tasks_blocked


def hostile_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Variables and a loomk.toml in the working directory that break any kernel reading them."""
    workdir = tmp_path / "workdir"
    workdir.mkdir()
    (workdir / "loomk.toml").write_text("this is [not toml\n")
    monkeypatch.chdir(workdir)
    monkeypatch.setenv("LOOMK_BUS_REALTIME_CAPACITY", "many")
    monkeypatch.setenv("LOOMK_NAME", "from-the-environment")
    monkeypatch.setenv("VLLM_BASE_URL", "http://model.invalid/v1")


# --- open_test_kernel ---------------------------------------------------------------------


async def test_open_test_kernel_ignores_loomk_variables_and_the_working_directory_toml(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    hostile_environment(tmp_path, monkeypatch)
    with pytest.raises(ConfigError):  # a kernel that reads its environment cannot start here
        loomk.Config.load()
    async with open_test_kernel() as kernel:
        assert kernel.name == "loomk"
        assert kernel.config.bus_realtime_capacity == loomk.Config().bus_realtime_capacity
        assert kernel.config.llm_base_url == ""
        assert kernel.llm is None  # no endpoint from VLLM_BASE_URL either
        assert not kernel.config.handle_signals
        assert kernel.config.log_level == "critical"


async def test_open_test_kernel_reads_the_environment_and_directory_it_is_given(
    tmp_path: Path,
) -> None:
    (tmp_path / "loomk.toml").write_text('name = "from-file"\n[state]\nsync = true\n')
    env = {"LOOMK_BUS_BATCHED_CAPACITY": "7", "LOOMK_STATE_TEMPORARY": "false"}
    async with open_test_kernel(cwd=tmp_path, env=env) as kernel:
        assert kernel.name == "from-file"
        assert kernel.config.bus_batched_capacity == 7
        # the kit's own defaults sit below the file and the environment it was given
        assert kernel.config.state_sync is True
        assert kernel.config.state_temporary is False
        assert kernel.config.data_dir == tmp_path / "state"
    assert (tmp_path / "loomk.toml").exists()  # a directory the caller gave is left alone


async def test_open_test_kernel_state_is_temporary(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def write(ctx: Context) -> None:
        ctx.state["written"] = True

    temporary = tmp_path / "tmp"  # the kit's scratch directory and the state's go here
    temporary.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(temporary))
    async with open_test_kernel() as kernel:
        assert kernel.config.state_temporary
        assert not kernel.config.state_sync
        await kernel.spawn(ScriptedAgent("writer", on_start=write))
        assert kernel.state.load("writer") == {"written": True}
        state_dir = kernel.state.data_dir
        assert state_dir.is_dir()
        assert state_dir.parent == temporary
        assert kernel.config.data_dir == state_dir  # the config says where the state is
        assert len(list(temporary.iterdir())) == 2  # the kernel's working directory too
    assert not state_dir.exists()
    assert list(temporary.iterdir()) == []  # both removed


async def test_open_test_kernel_settings_override_its_defaults(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"

    async def count(ctx: Context) -> None:
        ctx.state["starts"] = ctx.state.get("starts", 0) + 1

    for expected in (1, 2):
        async with open_test_kernel(
            data_dir=data_dir, state_temporary=False, name="persistent"
        ) as kernel:
            assert kernel.name == "persistent"
            await kernel.spawn(ScriptedAgent("counter", on_start=count))
            assert kernel.state.load("counter") == {"starts": expected}
    assert data_dir.is_dir()


async def test_open_test_kernel_rejects_an_unknown_setting() -> None:
    with pytest.raises(ConfigError, match="shutdown_timeout"):
        async with open_test_kernel(shutdown_timeout=1.0):
            raise AssertionError("must not start")  # pragma: no cover


# --- run_test_kernel ----------------------------------------------------------------------


def test_run_test_kernel_returns_what_main_returns_from_a_test_kernel(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    hostile_environment(tmp_path, monkeypatch)

    async def main(kernel: Kernel) -> tuple[str, bool, int]:
        return kernel.name, kernel.config.state_temporary, kernel.config.bus_batched_capacity

    assert run_test_kernel(main, bus_batched_capacity=3) == ("loomk", True, 3)


def test_run_test_kernel_with_autojump_sleeps_in_virtual_time() -> None:
    async def main(kernel: Kernel) -> float:
        clock = trio.lowlevel.current_clock()
        assert isinstance(clock, trio.testing.MockClock)  # else the sleep below takes an hour
        before = trio.current_time()
        await trio.sleep(3600)
        return trio.current_time() - before

    assert run_test_kernel(main, autojump=True) == pytest.approx(3600)


def test_run_test_kernel_runs_under_the_clock_it_is_given() -> None:
    clock = trio.testing.MockClock(autojump_threshold=0)

    async def main(kernel: Kernel) -> bool:
        return trio.lowlevel.current_clock() is clock

    assert run_test_kernel(main, clock=clock)
    with pytest.raises(ValueError, match="not both"):
        run_test_kernel(main, autojump=True, clock=clock)


def test_run_test_kernel_raises_the_error_of_main_and_when_the_kernel_stopped_first() -> None:
    async def failing(kernel: Kernel) -> None:
        raise LookupError("main failed")

    async def stopping(kernel: Kernel) -> str:
        kernel.stop()
        await trio.sleep_forever()
        return "not reached"  # pragma: no cover

    with pytest.raises(LookupError, match="main failed"):
        run_test_kernel(failing)
    with pytest.raises(RuntimeError, match="stopped before main returned"):
        run_test_kernel(stopping)


# --- capture_events -----------------------------------------------------------------------


async def test_capture_records_matching_events_in_publish_order() -> None:
    bus = loomk.EventBus()
    with capture_events(bus, "sensors.>") as capture:
        await bus.publish("sensors.kitchen.temp", Event("temp", b"21"))
        await bus.publish("other.topic", Event("temp", b"nope"))
        await bus.publish("sensors.attic", Event("humidity", b"40"))
        await bus.publish("sensors.kitchen.temp", Event("temp", b"22"))
    assert len(capture) == 3
    assert capture.topics == ["sensors.kitchen.temp", "sensors.attic", "sensors.kitchen.temp"]
    assert [event.payload for event in capture.events] == [b"21", b"40", b"22"]
    assert capture.items == list(zip(capture.topics, capture.events, strict=True))
    assert [event.payload for event in capture.of_type("temp")] == [b"21", b"22"]
    assert capture.of_type("pressure") == []


async def test_capture_can_keep_only_some_event_types() -> None:
    bus = loomk.EventBus()
    with capture_events(bus, "t", event_types={"keep"}) as capture:
        for event_type in ("keep", "skip", "keep"):
            await bus.publish("t", Event(event_type))
    assert [event.type for event in capture.events] == ["keep", "keep"]
    assert bus.stats("t").filtered == 1


async def test_capture_never_queues_or_drops_even_a_burst() -> None:
    bus = loomk.EventBus(capacities={loomk.QoS.REALTIME: 1, loomk.QoS.BATCHED: 1})
    with capture_events(bus, "burst") as capture:
        for i in range(5000):
            await bus.publish("burst", Event("n", str(i).encode()))
    assert [int(event.payload) for event in capture.events] == list(range(5000))
    stats = assert_conserved(bus, "burst")
    assert (stats.delivered, stats.dropped, stats.depth) == (5000, {}, 0)


async def test_capture_stops_recording_when_left() -> None:
    bus = loomk.EventBus()
    with capture_events(bus, "t") as capture:
        assert capture.recording
        await bus.publish("t", Event("kept"))
        assert len(bus.subscription_stats()) == 1
    await bus.publish("t", Event("late"))
    assert not capture.recording
    assert [event.type for event in capture.events] == ["kept"]
    assert bus.subscription_stats() == []
    capture.detach()  # idempotent


async def test_wait_for_wakes_once_enough_events_have_arrived() -> None:
    bus = loomk.EventBus()
    capture = capture_events(bus, "t")
    woken: list[list[bytes]] = []

    async def waiter() -> None:
        events = await capture.wait_for(3)
        woken.append([event.payload for event in events])

    async with trio.open_nursery() as nursery:
        nursery.start_soon(waiter)
        await settle()
        for payload in (b"1", b"2"):
            await bus.publish("t", Event("n", payload))
        await settle()
        assert woken == []  # two of three: still waiting
        await bus.publish("t", Event("n", b"3"))
        await bus.publish("t", Event("n", b"4"))
    assert woken == [[b"1", b"2", b"3"]]
    assert len(await capture.wait_for(2)) == 2  # already there: returns at once
    capture.detach()
    with pytest.raises(RuntimeError, match="stopped recording with 4 of 5 events"):
        await capture.wait_for(5)  # could only hang


@pytest.mark.parametrize("stop", ["detach", "close the bus"])
async def test_a_wait_pending_when_recording_stops_raises_instead_of_hanging(stop: str) -> None:
    bus = loomk.EventBus()
    capture = capture_events(bus, "t")
    raised: list[str] = []

    async def waiter() -> None:
        with pytest.raises(RuntimeError) as info:
            await capture.wait_for(2)
        raised.append(str(info.value))

    async with trio.open_nursery() as nursery:
        nursery.start_soon(waiter)
        await settle()
        await bus.publish("t", Event("n"))
        if stop == "detach":
            capture.detach()
        else:
            bus.close()
    assert raised == [
        "the capture of 't' stopped recording (detached, or the bus closed) with 1 of 2 events"
    ]
    assert not capture.recording


async def test_capture_works_on_a_kernel_bus() -> None:
    async def echo(ctx: Context, event: Event) -> None:
        await ctx.emit("chat.out", Event("echo", event.payload))

    async with open_test_kernel() as kernel:
        with capture_events(kernel.bus, "chat.out") as out:
            await kernel.spawn(ScriptedAgent("echo", {"text": echo}))
            await kernel.bus.publish("in.echo", Event("text", b"hi"))
            [answer] = await out.wait_for(1)
    assert (answer.type, answer.payload) == ("echo", b"hi")


# --- ScriptedAgent ------------------------------------------------------------------------


async def test_scripted_agent_runs_the_step_of_each_event_type_and_its_lifecycle_steps() -> None:
    trace: list[str] = []

    async def start(ctx: Context) -> None:
        trace.append("start")

    async def greet(ctx: Context, event: Event) -> None:
        trace.append(f"greet {event.payload.decode()}")

    async def leave(ctx: Context, event: Event) -> None:
        trace.append("leave")

    async def stop(ctx: Context) -> None:
        trace.append("stop")

    agent = ScriptedAgent("host", {"greet": greet, "leave": leave}, on_start=start, on_stop=stop)
    async with open_test_kernel() as kernel:
        await kernel.spawn(agent)
        assert kernel.subscriptions("host") == ["agent.host.replies", "in.host"]  # inbox: in.host
        for event in (Event("greet", b"ann"), Event("leave"), Event("greet", b"bob")):
            await kernel.bus.publish("in.host", event)
        await settle()
        await kernel.stop_agent("host")
    assert trace == ["start", "greet ann", "leave", "greet bob", "stop"]


async def test_scripted_agent_takes_topics_and_metadata() -> None:
    seen: list[str] = []

    async def note(ctx: Context, event: Event) -> None:
        seen.append(event.payload.decode())

    agent = ScriptedAgent("lamp", {"set": note}, topics=["lights.>"], metadata={"room": "kitchen"})
    async with open_test_kernel() as kernel:
        await kernel.spawn(agent)
        await kernel.bus.publish("lights.kitchen", Event("set", b"on"))
        await kernel.bus.publish("in.lamp", Event("set", b"not subscribed"))
        await settle()
        info = kernel.directory.get("lamp")
        assert info is not None
        assert dict(info.metadata) == {"room": "kitchen"}
    assert seen == ["on"]


async def test_a_restarted_scripted_agent_keeps_its_steps_and_those_added_later(
    autojump_clock: trio.testing.MockClock,
) -> None:
    starts: list[int] = []

    async def start(ctx: Context) -> None:
        starts.append(len(starts))

    async def crash(ctx: Context, event: Event) -> None:
        raise ValueError("crash")

    steps = {"crash": crash}
    async with open_test_kernel() as kernel:
        handle = await kernel.spawn(ScriptedAgent("phoenix", steps, on_start=start))
        seen: list[bytes] = []

        async def record(ctx: Context, event: Event) -> None:
            seen.append(event.payload)

        steps["record"] = record  # added after the spawn
        await kernel.bus.publish("in.phoenix", Event("crash"))
        await trio.sleep(1)  # past the restart backoff (virtual time)
        await kernel.bus.publish("in.phoenix", Event("record", b"after the restart"))
        await settle()
        assert handle.stats().restarts == 1
    assert starts == [0, 1]
    assert seen == [b"after the restart"]


async def test_an_event_without_a_step_fails_the_handler_naming_its_type() -> None:
    async with open_test_kernel() as kernel:
        with capture_events(kernel.bus, "system.agent.failed") as failed:
            await kernel.spawn(ScriptedAgent("strict", {}), restart="temporary")
            await kernel.bus.publish("in.strict", Event("surprise"))
            [event] = await failed.wait_for(1)
    error = json.loads(event.payload)["error"]
    assert error.startswith("LookupError(")
    assert "no step for event type 'surprise'" in error


# --- RecordingProvider --------------------------------------------------------------------


async def test_recording_provider_records_calls_and_answers_ok_with_its_version() -> None:
    provider = RecordingProvider("lights.set", "2.1.0", metadata={"desc": "Switch a light"})
    assert isinstance(provider, CapabilityProvider)
    assert provider.descriptor.key == "lights.set:2.1.0"
    assert provider.descriptor.metadata == {"desc": "Switch a light"}
    async with open_test_kernel() as kernel:
        kernel.broker.register(provider)
        call = ActionCall.with_args("c1", "lights.set", {"room": "kitchen"})
        result = await kernel.broker.invoke(call)
    assert result.ok
    assert result.json() == {"version": "2.1.0"}
    assert provider.count == 1
    assert json.loads(provider.calls[0].payload) == {"room": "kitchen"}


async def test_recording_provider_answers_with_its_behaviour() -> None:
    async def refuse(call: ActionCall) -> ActionResult:
        return ActionResult.failure(call.id, "NOT_TODAY", "closed")

    provider = RecordingProvider(behaviour=refuse)
    broker = loomk.ActionBroker()
    broker.register(provider)
    result = await broker.invoke(ActionCall("c1", "test.cap"))
    assert result.code == "NOT_TODAY"
    assert [call.id for call in provider.calls] == ["c1"]


# --- assert_conserved ---------------------------------------------------------------------


async def test_assert_conserved_passes_when_every_offer_is_accounted_for() -> None:
    bus = loomk.EventBus()
    sub = bus.subscribe("t", overflow="drop_newest", capacity=1)
    typed = bus.subscribe("t", event_types={"other"})
    for i in range(3):
        await bus.publish("t", Event("n", str(i).encode()))
    sub.receive_nowait()
    stats = assert_conserved(sub, 3)
    assert (stats.delivered, stats.dropped_total) == (1, 2)
    assert assert_conserved(typed, 3).filtered == 3
    assert assert_conserved(bus, "t").matched == 6
    assert assert_conserved(bus, ">").published == 3


async def test_assert_conserved_fails_while_events_are_still_queued() -> None:
    bus = loomk.EventBus()
    sub = bus.subscribe("t")
    await bus.publish("t", Event("n"))
    await bus.publish("t", Event("n"))
    sub.receive_nowait()
    with pytest.raises(AssertionError, match="not drained: 1 events still queued"):
        assert_conserved(sub, 2)
    with pytest.raises(AssertionError, match=r"topic 't' is not conserved.*still sit in the"):
        assert_conserved(bus, "t")
    sub.receive_nowait()
    assert_conserved(sub, 2)
    assert_conserved(bus, "t")


async def test_assert_conserved_fails_on_a_count_that_does_not_add_up() -> None:
    bus = loomk.EventBus()
    sub = bus.subscribe("t", overflow="drop_newest", capacity=1)
    await bus.publish("t", Event("n"))
    await bus.publish("t", Event("n"))
    sub.receive_nowait()
    with pytest.raises(AssertionError, match=r"offered 3 != delivered 1 \+ dropped 1"):
        assert_conserved(sub, 3)  # the test offered it two, not three


async def test_assert_conserved_counts_discarded_events_as_dropped() -> None:
    bus = loomk.EventBus()
    sub = bus.subscribe("t")
    for _ in range(3):
        await bus.publish("t", Event("n"))
    assert sub.close() == 3  # unsubscribed, and what was queued is thrown away
    assert assert_conserved(sub, 3).dropped == {"discarded": 3}
    assert_conserved(bus, "t")


async def test_assert_conserved_holds_for_a_topic_beside_a_wildcard_subscriber_with_a_backlog() -> (
    None
):
    """A wildcard subscription's queue holds other topics' events too: that is no reason to
    fail a topic whose own offers are all accounted for."""
    bus = loomk.EventBus()
    sub = bus.subscribe("t.>")
    await bus.publish("t.a", Event("n"))
    await bus.publish("t.b", Event("n"))
    sub.receive_nowait()  # t.a's event; t.b's still queued
    assert assert_conserved(bus, "t.a").depth == 1
    with pytest.raises(AssertionError, match="still sit in the queues"):
        assert_conserved(bus, "t.b")


def test_assert_conserved_fails_on_a_topic_never_published() -> None:
    bus = loomk.EventBus()
    bus.subscribe("t")
    with pytest.raises(AssertionError, match="never published"):
        assert_conserved(bus, "t.typo")
    assert assert_conserved(bus, ">").published == 0  # an idle bus's totals are conserved


def test_assert_conserved_refuses_arguments_of_the_wrong_kind() -> None:
    bus = loomk.EventBus()
    sub = bus.subscribe("t")
    with pytest.raises(TypeError, match="int count"):
        assert_conserved(sub, "t")  # type: ignore[call-overload]
    with pytest.raises(TypeError, match="str topic"):
        assert_conserved(bus, 1)  # type: ignore[call-overload]
