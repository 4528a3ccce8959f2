"""OpenTelemetry spans of an event's path (loomk.telemetry.tracing, docs/tracing.md).

Real kernels, real opentelemetry-sdk: each test records into a TracerProvider of its own
(``open_test_kernel(tracer_provider=...)``), never the process's global one, which
OpenTelemetry lets a process set only once.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from loomk import Context, Event
from loomk.errors import ConfigError
from loomk.telemetry.tracing import PUBLISHED_NS, PUBLISHED_TOPIC, TRACEPARENT
from loomk.testing import RecordingProvider, ScriptedAgent, capture_events, open_test_kernel

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def spans() -> Iterator[tuple[TracerProvider, InMemorySpanExporter]]:
    """A provider of the test's own, exporting every ended span to memory at once."""
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    yield provider, exporter
    provider.shutdown()


def _named(finished: Sequence[ReadableSpan], name: str) -> list[ReadableSpan]:
    return [span for span in finished if span.name == name]


def _parent_of(span: ReadableSpan) -> int | None:
    return span.parent.span_id if span.parent is not None else None


def _span_id(span: ReadableSpan) -> int:
    assert span.context is not None
    return span.context.span_id


def _trace_id(span: ReadableSpan) -> int:
    assert span.context is not None
    return span.context.trace_id


def _emitter(topic: str, event_type: str) -> ScriptedAgent:
    """An agent that emits one event of ``event_type`` on ``topic`` when it starts."""

    async def start(ctx: Context) -> None:
        await ctx.emit(topic, Event(event_type, b"go"))

    return ScriptedAgent("source", on_start=start, topics=[])


async def test_an_event_handled_with_a_call_makes_one_trace_of_four_spans(
    spans: tuple[TracerProvider, InMemorySpanExporter],
) -> None:
    provider, exporter = spans
    lights = RecordingProvider("lights.set")
    seen: list[Event] = []

    async def switch(ctx: Context, event: Event) -> None:
        seen.append(event)
        await ctx.invoke("lights.set", {"room": "kitchen"})
        await ctx.emit("lights.done", Event("done"))

    async with open_test_kernel(tracing=True, tracer_provider=provider) as kernel:
        kernel.broker.register(lights)
        with capture_events(kernel.bus, "lights.done") as done:
            await kernel.spawn(ScriptedAgent("worker", {"switch": switch}))
            await kernel.spawn(_emitter("in.worker", "switch"))
            await done.wait_for(1)

    finished = exporter.get_finished_spans()
    [publish, _done] = _named(finished, "publish")  # the event, then the worker's own emit
    [deliver] = _named(finished, "deliver")
    [handle] = _named(finished, "handle")
    [invoke] = _named(finished, "invoke")

    # one trace, chained publish -> deliver -> handle -> invoke
    assert publish.parent is None
    assert _parent_of(deliver) == _span_id(publish)
    assert _parent_of(handle) == _span_id(deliver)
    assert _parent_of(invoke) == _span_id(handle)
    assert _parent_of(_done) == _span_id(handle)
    assert {_trace_id(s) for s in (publish, deliver, handle, invoke, _done)} == {_trace_id(publish)}

    [event] = seen
    assert publish.kind is SpanKind.PRODUCER
    assert publish.attributes is not None
    assert publish.attributes["messaging.destination.name"] == "in.worker"
    assert publish.attributes["messaging.message.id"] == event.id
    assert publish.attributes["loomk.event_type"] == "switch"
    assert publish.attributes["loomk.sender"] == "agent.source"
    assert publish.attributes["loomk.held"] is True  # on_start's emits wait for its commit
    assert handle.attributes == {
        "messaging.system": "loomk",
        "messaging.operation.type": "process",
        "messaging.destination.name": "in.worker",
        "messaging.message.id": event.id,
        "loomk.agent_id": "worker",
        "loomk.event_type": "switch",
    }
    assert deliver.attributes is not None
    assert deliver.attributes["loomk.agent_id"] == "worker"
    assert deliver.attributes["messaging.operation.type"] == "receive"
    # deliver runs from the emit to the handler's start
    assert deliver.start_time == publish.start_time
    assert deliver.end_time is not None
    assert handle.start_time is not None
    assert deliver.end_time <= handle.start_time
    assert invoke.attributes == {"loomk.capability": "lights.set", "loomk.action.status": "ok"}
    assert invoke.status.status_code is StatusCode.UNSET
    assert handle.status.status_code is StatusCode.UNSET

    # the trace rides on the event the handler saw, a copy of the one emitted
    assert event.metadata[TRACEPARENT].split("-")[2] == f"{_span_id(publish):016x}"
    assert event.metadata[PUBLISHED_TOPIC] == "in.worker"
    assert int(event.metadata[PUBLISHED_NS]) == publish.start_time


async def test_a_chain_of_agents_continues_one_trace(
    spans: tuple[TracerProvider, InMemorySpanExporter],
) -> None:
    provider, exporter = spans

    async def relay(ctx: Context, event: Event) -> None:
        await ctx.emit("in.b", Event("second", event.payload))

    async def finish(ctx: Context, event: Event) -> None:
        await ctx.emit("chain.end", Event("end"))

    async with open_test_kernel(tracing=True, tracer_provider=provider) as kernel:
        with capture_events(kernel.bus, "chain.end") as end:
            await kernel.spawn(ScriptedAgent("a", {"first": relay}))
            await kernel.spawn(ScriptedAgent("b", {"second": finish}))
            await kernel.spawn(_emitter("in.a", "first"))
            await end.wait_for(1)

    finished = exporter.get_finished_spans()
    handles = {
        s.attributes["loomk.agent_id"]: s for s in _named(finished, "handle") if s.attributes
    }
    delivers = {
        s.attributes["loomk.agent_id"]: s for s in _named(finished, "deliver") if s.attributes
    }
    publishes = {
        s.attributes["messaging.destination.name"]: s
        for s in _named(finished, "publish")
        if s.attributes
    }
    assert set(handles) == {"a", "b"}
    assert len({_trace_id(s) for s in finished}) == 1  # every span, one trace
    # a's handler emitted to b: b's publish is a child of a's handle
    assert _parent_of(publishes["in.b"]) == _span_id(handles["a"])
    assert _parent_of(delivers["b"]) == _span_id(publishes["in.b"])
    assert _parent_of(handles["b"]) == _span_id(delivers["b"])
    assert _parent_of(publishes["chain.end"]) == _span_id(handles["b"])


async def test_a_failing_handler_marks_its_span_as_an_error(
    spans: tuple[TracerProvider, InMemorySpanExporter],
) -> None:
    provider, exporter = spans

    async def fail(ctx: Context, event: Event) -> None:
        raise ValueError("the lamp exploded")

    async with open_test_kernel(tracing=True, tracer_provider=provider) as kernel:
        with capture_events(kernel.bus, "system.agent.failed") as failed:
            await kernel.spawn(ScriptedAgent("fragile", {"boom": fail}), restart="temporary")
            await kernel.spawn(_emitter("in.fragile", "boom"))
            await failed.wait_for(1)

    [handle] = _named(exporter.get_finished_spans(), "handle")
    assert handle.status.status_code is StatusCode.ERROR
    assert handle.status.description == "ValueError: the lamp exploded"
    [recorded] = [e for e in handle.events if e.name == "exception"]
    assert recorded.attributes is not None
    assert recorded.attributes["exception.type"] == "ValueError"


async def test_a_failed_call_is_an_error_on_its_invoke_span(
    spans: tuple[TracerProvider, InMemorySpanExporter],
) -> None:
    provider, exporter = spans
    async with open_test_kernel(tracing=True, tracer_provider=provider) as kernel:
        from loomk.actions.agent_actions import action_call

        result = await kernel.broker.invoke(action_call("kernel", "no.such.thing", None))
    assert not result.ok
    [invoke] = _named(exporter.get_finished_spans(), "invoke")
    assert invoke.parent is None  # called outside any handler: a trace of its own
    assert invoke.attributes == {
        "loomk.capability": "no.such.thing",
        "loomk.action.status": "error",
        "loomk.action.error_code": "PROVIDER_UNAVAILABLE",
    }
    assert invoke.status.status_code is StatusCode.ERROR


async def test_an_event_published_straight_on_the_bus_starts_its_trace_at_handle(
    spans: tuple[TracerProvider, InMemorySpanExporter],
) -> None:
    provider, exporter = spans

    async def note(ctx: Context, event: Event) -> None:
        await ctx.emit("noted", Event("noted"))

    async with open_test_kernel(tracing=True, tracer_provider=provider) as kernel:
        with capture_events(kernel.bus, "noted") as noted:
            await kernel.spawn(ScriptedAgent("listener", {"ping": note}))
            await kernel.bus.publish("in.listener", Event("ping"))
            await noted.wait_for(1)

    finished = exporter.get_finished_spans()
    assert _named(finished, "deliver") == []  # no publish span to deliver from
    [handle] = _named(finished, "handle")
    [publish] = _named(finished, "publish")
    assert handle.parent is None
    assert _parent_of(publish) == _span_id(handle)


async def test_a_batch_handler_links_its_span_to_each_event(
    spans: tuple[TracerProvider, InMemorySpanExporter],
) -> None:
    from loomk import Agent

    provider, exporter = spans
    batches: list[int] = []

    class Batcher(Agent):
        topics = ("in.batcher",)

        async def on_batch(self, ctx: Context, events: list[Event]) -> None:
            batches.append(len(events))
            await ctx.emit("batched", Event("batched"))

    async def start(ctx: Context) -> None:
        for _ in range(3):
            await ctx.emit("in.batcher", Event("item"))

    async with open_test_kernel(tracing=True, tracer_provider=provider) as kernel:
        with capture_events(kernel.bus, "batched") as batched:
            await kernel.spawn(Batcher("batcher"))
            await kernel.spawn(ScriptedAgent("source", on_start=start, topics=[]))
            await batched.wait_for(1)

    finished = exporter.get_finished_spans()
    assert batches == [3]  # held in on_start, the three arrive together
    [handle] = _named(finished, "handle")
    delivers = _named(finished, "deliver")
    assert len(delivers) == 3
    assert handle.attributes is not None
    assert handle.attributes["messaging.batch.message_count"] == 3
    assert {link.context.span_id for link in handle.links} == {_span_id(d) for d in delivers}


async def test_tracing_on_without_opentelemetry_fails_at_start_naming_the_setting(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for name in ("opentelemetry", "opentelemetry.trace"):
        monkeypatch.setitem(sys.modules, name, None)  # import fails, as when not installed
    with pytest.raises(ConfigError) as raised:
        async with open_test_kernel(tracing=True):
            pytest.fail("the kernel started")
    assert raised.value.key == "tracing"
    assert "pip install 'loomk[otel]'" in str(raised.value)


async def test_tracing_off_records_nothing_through_a_given_provider(
    spans: tuple[TracerProvider, InMemorySpanExporter],
) -> None:
    provider, exporter = spans

    async def echo(ctx: Context, event: Event) -> None:
        await ctx.invoke("time.now")
        await ctx.emit("echoed", Event("echo"))

    async with open_test_kernel(tracer_provider=provider) as kernel:
        assert kernel.tracing is None
        with capture_events(kernel.bus, "echoed") as echoed:
            await kernel.spawn(ScriptedAgent("echo", {"ping": echo}))
            await kernel.spawn(_emitter("in.echo", "ping"))
            [event] = await echoed.wait_for(1)
    assert exporter.get_finished_spans() == ()
    assert TRACEPARENT not in event.metadata


def test_tracing_off_never_imports_opentelemetry() -> None:
    """In a fresh interpreter: ``import loomk`` and a kernel run with tracing off (an agent
    emitting, handling and calling a capability) leave opentelemetry unloaded."""
    script = textwrap.dedent(
        """
        import sys

        import loomk
        from loomk import Context, Event
        from loomk.testing import ScriptedAgent, capture_events, run_test_kernel

        assert "opentelemetry" not in sys.modules, "import loomk loaded opentelemetry"

        async def echo(ctx: Context, event: Event) -> None:
            await ctx.invoke("time.now")
            await ctx.emit("echoed", Event("echo"))

        async def main(kernel: loomk.Kernel) -> None:
            with capture_events(kernel.bus, "echoed") as echoed:
                await kernel.spawn(ScriptedAgent("echo", {"ping": echo}))
                await kernel.bus.publish("in.echo", Event("ping"))
                await echoed.wait_for(1)

        run_test_kernel(main)
        loaded = sorted(name for name in sys.modules if name.startswith("opentelemetry"))
        assert not loaded, loaded
        print("clean")
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "clean"


def test_the_docs_export_example_runs_as_written() -> None:
    """docs/tracing.md's console-export example runs, offline, and prints the four spans."""
    page = (ROOT / "docs" / "tracing.md").read_text()
    [example] = [block for block in page.split("```python\n")[1:] if "ConsoleSpanExporter" in block]
    code = example.split("```")[0]
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    for name in ("publish", "deliver", "handle", "invoke"):
        assert f'"name": "{name}"' in done.stdout


async def test_an_agent_spawned_by_a_handler_starts_its_own_traces(
    spans: tuple[TracerProvider, InMemorySpanExporter],
) -> None:
    # the spawned agent's task inherits the spawning handler's context (its handle span)
    provider, exporter = spans

    async with open_test_kernel(tracing=True, tracer_provider=provider) as kernel:

        async def note(ctx: Context, event: Event) -> None:
            await ctx.emit("noted", Event("noted"))

        async def spawn(ctx: Context, event: Event) -> None:
            await kernel.spawn(ScriptedAgent("worker", {"ping": note}))
            await ctx.emit("spawned", Event("spawned"))

        with (
            capture_events(kernel.bus, "spawned") as spawned,
            capture_events(kernel.bus, "noted") as noted,
        ):
            await kernel.spawn(ScriptedAgent("manager", {"spawn": spawn}))
            await kernel.bus.publish("in.manager", Event("spawn"))
            await spawned.wait_for(1)
            await kernel.bus.publish("in.worker", Event("ping"))
            await noted.wait_for(1)

    finished = _named(exporter.get_finished_spans(), "handle")
    handles = {str((span.attributes or {})["loomk.agent_id"]): span for span in finished}
    assert handles["manager"].parent is None
    assert handles["worker"].parent is None  # not the manager's handle span
    assert _trace_id(handles["worker"]) != _trace_id(handles["manager"])


async def test_an_emit_time_from_long_ago_makes_no_deliver_span(
    spans: tuple[TracerProvider, InMemorySpanExporter],
) -> None:
    """A client may send any ``loomk.published_ns`` (or an old event be published again):
    the handle span still joins the carried trace, without a deliver span from 1970."""
    provider, exporter = spans
    trace_id, parent_id = 0x1234567890ABCDEF1234567890ABCDEF, 0x1122334455667788
    carried = {
        "traceparent": f"00-{trace_id:032x}-{parent_id:016x}-01",
        "loomk.published_ns": "1",
    }

    async def note(ctx: Context, event: Event) -> None:
        await ctx.emit("noted", Event("noted"))

    async with open_test_kernel(tracing=True, tracer_provider=provider) as kernel:
        with capture_events(kernel.bus, "noted") as noted:
            await kernel.spawn(ScriptedAgent("listener", {"ping": note}))
            await kernel.bus.publish("in.listener", Event("ping", metadata=carried))
            await noted.wait_for(1)

    finished = exporter.get_finished_spans()
    assert _named(finished, "deliver") == []
    [handle] = _named(finished, "handle")
    assert _trace_id(handle) == trace_id
    assert _parent_of(handle) == parent_id
