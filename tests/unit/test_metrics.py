"""Metrics: histograms, the Prometheus exposition, and the kernel's families read from its
counters (parsed back with prometheus_client's own parser)."""

from __future__ import annotations

import math

import pytest
import trio
import trio.testing
from prometheus_client.parser import text_string_to_metric_families

from loomk import Context, Event, QoS
from loomk.agents import LATENCY_SAMPLE_EVERY
from loomk.telemetry.metrics import (
    Histogram,
    MetricFamily,
    MetricsRegistry,
    render_prometheus,
)
from loomk.testing import ScriptedAgent, capture_events, open_test_kernel


def parsed(text: str) -> dict[str, dict[tuple[tuple[str, str], ...], float]]:
    """Sample name -> sorted labels -> value, as Prometheus' own parser reads ``text``."""
    samples: dict[str, dict[tuple[tuple[str, str], ...], float]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            key = tuple(sorted(sample.labels.items()))
            samples.setdefault(sample.name, {})[key] = sample.value
    return samples


# --- histograms ------------------------------------------------------------------------


def test_a_histogram_counts_into_its_buckets_and_keeps_sum_and_max() -> None:
    histogram = Histogram((0.001, 0.01, 0.1))
    for value in (0.0005, 0.001, 0.005, 0.05, 0.5, -1.0):
        histogram.observe(value)
    snapshot = histogram.snapshot()
    assert snapshot.counts == (3, 1, 1, 1)  # a bound is inclusive; negative counts as 0
    assert snapshot.count == 6
    assert snapshot.sum == pytest.approx(0.5565)
    assert snapshot.max == 0.5
    assert snapshot.cumulative() == [(0.001, 3), (0.01, 4), (0.1, 5), (math.inf, 6)]
    histogram.observe(0.002)
    assert snapshot.count == 6  # a snapshot does not move


def test_quantiles_are_interpolated_inside_their_bucket_and_capped_by_the_max() -> None:
    histogram = Histogram((0.01, 0.02))
    for _ in range(100):
        histogram.observe(0.015)
    snapshot = histogram.snapshot()
    assert 0.01 < snapshot.quantile(0.5) <= 0.015
    assert snapshot.quantile(0.99) == pytest.approx(0.015)  # never above the largest seen
    assert Histogram().snapshot().quantile(0.99) == 0.0
    with pytest.raises(ValueError, match="between 0 and 1"):
        snapshot.quantile(1.5)


@pytest.mark.parametrize("bounds", [(), (0.1, 0.1), (0.2, 0.1), (0.1, math.inf)])
def test_bucket_bounds_must_be_finite_and_increasing(bounds: tuple[float, ...]) -> None:
    with pytest.raises(ValueError, match="strictly increasing"):
        Histogram(bounds)


# --- exposition ------------------------------------------------------------------------


def test_the_exposition_parses_with_prometheus_own_parser_and_escapes_labels() -> None:
    histogram = Histogram((0.1, 1.0))
    histogram.observe(0.05)
    histogram.observe(3.0)
    families = [
        MetricFamily("jobs_total", "counter", "Jobs\ndone.").add(3, queue='a"b\\c\nd'),
        MetricFamily("depth", "gauge", "Depth.").add(1.5),
        MetricFamily("wait_seconds", "histogram", "Waits.").add(histogram.snapshot(), who="x"),
    ]
    samples = parsed(render_prometheus(families))
    assert samples["jobs_total"] == {(("queue", 'a"b\\c\nd'),): 3.0}
    assert samples["depth"] == {(): 1.5}
    assert samples["wait_seconds_bucket"][(("le", "0.1"), ("who", "x"))] == 1.0
    assert samples["wait_seconds_bucket"][(("le", "+Inf"), ("who", "x"))] == 2.0
    assert samples["wait_seconds_count"] == {(("who", "x"),): 2.0}
    assert samples["wait_seconds_sum"] == {(("who", "x"),): pytest.approx(3.05)}


def test_a_broken_source_is_skipped_and_named_without_hiding_the_others() -> None:
    registry = MetricsRegistry()

    def broken() -> list[MetricFamily]:
        raise RuntimeError("counter gone")

    registry.register("broken", broken)
    remove = registry.register("jobs", lambda: [MetricFamily("jobs_total", "counter", "J.").add(1)])
    assert parsed(registry.render_prometheus())["jobs_total"] == {(): 1.0}
    assert registry.errors == {"broken": "RuntimeError: counter gone"}
    remove()
    assert registry.sources() == ["broken"]
    assert registry.render_prometheus() == ""


def test_families_of_one_name_from_two_sources_are_merged() -> None:
    registry = MetricsRegistry()
    registry.register("a", lambda: [MetricFamily("hits_total", "counter", "H.").add(1, src="a")])
    registry.register("b", lambda: [MetricFamily("hits_total", "counter", "H.").add(2, src="b")])
    assert parsed(registry.render_prometheus())["hits_total"] == {
        (("src", "a"),): 1.0,
        (("src", "b"),): 2.0,
    }


# --- the kernel's families -------------------------------------------------------------


async def test_bus_counters_in_the_exposition_match_bus_stats() -> None:
    async with open_test_kernel(bus_realtime_capacity=2) as kernel:
        slow = kernel.bus.subscribe("sensor.>", qos=QoS.REALTIME)  # never drained: drops
        for _ in range(5):
            await kernel.bus.publish("sensor.temp", Event("reading", b"21"))
        await kernel.bus.publish("sensor.door", Event("opened"))
        samples = parsed(kernel.metrics.render_prometheus())
        for topic in ("sensor.temp", "sensor.door"):
            stats = kernel.bus.stats(topic)
            key = (("topic", topic),)
            assert samples["published_events_total"][key] == stats.published
            assert samples["delivered_events_total"][key] == stats.delivered
            assert samples["topic_queue_depth"][key] == stats.depth
        temp = kernel.bus.stats("sensor.temp")
        assert temp.dropped == {"evicted": 4}
        dropped = samples["dropped_events_total"]
        assert dropped[(("reason", "evicted"), ("topic", "sensor.temp"))] == 4
        assert samples["bus_published_events_total"][()] == kernel.bus.totals().published
        slow.unsubscribe()


async def test_agent_handler_latency_is_sampled_and_mailbox_restarts_are_exported() -> None:
    handled = 3 * LATENCY_SAMPLE_EVERY + 1

    async def work(ctx: Context, event: Event) -> None:
        await ctx.emit("done", Event("done"))

    async with open_test_kernel() as kernel:
        with capture_events(kernel.bus, "done") as done:
            await kernel.spawn(ScriptedAgent("worker", {"job": work}, topics=["jobs"]))
            for _ in range(handled):
                await kernel.bus.publish("jobs", Event("job"))
            await done.wait_for(handled)
        await trio.testing.wait_all_tasks_blocked()
        stats = kernel.agents.get("worker").stats()
        assert stats.handled == handled
        # the first handler, then one in LATENCY_SAMPLE_EVERY
        assert stats.latency.count == 1 + handled // LATENCY_SAMPLE_EVERY
        samples = parsed(kernel.metrics.render_prometheus())
        agent = (("agent", "worker"),)
        assert samples["agent_handled_events_total"][agent] == handled
        assert samples["agent_mailbox_size"][agent] == 0
        assert samples["agent_restarts_total"][agent] == 0
        assert samples["agent_running"][agent] == 1
        assert 0 < samples["agent_uptime_seconds"][agent] <= kernel.uptime_s
        assert samples["agent_handler_latency_seconds_count"][agent] == stats.latency.count
        assert samples["agent_mailbox_high_water"][agent] == stats.mailbox_high_water


async def test_capability_calls_routing_and_state_commits_are_exported() -> None:
    async def ask(ctx: Context, event: Event) -> None:
        await ctx.invoke("time.now", {})
        await ctx.invoke("math.eval", {"expression": "1/"})  # an error
        ctx.state["asked"] = ctx.state.get("asked", 0) + 1
        await ctx.emit("done", Event("done"))

    async with open_test_kernel() as kernel:
        with capture_events(kernel.bus, "done") as done:
            await kernel.spawn(ScriptedAgent("asker", {"ask": ask}, topics=["ask"]))
            for _ in range(3):
                await kernel.bus.publish("ask", Event("ask"))
            await done.wait_for(3)
        await trio.testing.wait_all_tasks_blocked()
        broker = kernel.broker.stats()
        samples = parsed(kernel.metrics.render_prometheus())
        now = (("capability", "time.now"),)
        evaluate = (("capability", "math.eval"),)
        assert samples["action_invocations_total"][now] == broker.capability("time.now").calls == 3
        assert samples["action_errors_total"][evaluate] == broker.capability("math.eval").errors
        assert samples["action_errors_total"][evaluate] == 3
        assert samples["action_latency_seconds_count"][now] == 3
        store = kernel.state.store.stats()
        assert samples["state_commits_total"][()] == store.commits >= 3
        assert samples["state_commit_latency_seconds_count"][()] == store.commit_latency.count
        assert store.commit_latency.count == store.batches


async def test_routing_decisions_are_counted_by_route() -> None:
    async with open_test_kernel() as kernel:
        await kernel.router.route(Event("user.query", b"turn on the lights"))
        samples = parsed(kernel.metrics.render_prometheus())
        by_route = kernel.router.stats().by_route
        assert by_route  # the decision was counted
        for route, count in by_route.items():
            assert samples["routing_decisions_total"][(("route", route),)] == count


def test_help_and_type_lines_name_the_samples_as_prometheus_own_client_writes_them() -> None:
    from prometheus_client import CollectorRegistry, Counter, generate_latest

    registry = CollectorRegistry()
    Counter("jobs", "Jobs.", ["queue"], registry=registry).labels("a").inc(3)
    theirs = [
        line
        for line in generate_latest(registry).decode().splitlines()
        if line.startswith("#") and "_created" not in line
    ]
    ours = render_prometheus([MetricFamily("jobs_total", "counter", "Jobs.").add(3, queue="a")])
    assert [line for line in ours.splitlines() if line.startswith("#")] == theirs


def test_a_duplicate_series_or_a_kind_mismatch_is_left_out_and_named() -> None:
    registry = MetricsRegistry()
    registry.register("a", lambda: [MetricFamily("up", "gauge", "Up.").add(1, at="x")])
    registry.register("b", lambda: [MetricFamily("up", "gauge", "Up.").add(0, at="x")])
    registry.register("c", lambda: [MetricFamily("up", "counter", "Up.").add(5, at="y")])
    registry.register("d", lambda: [MetricFamily("up", "gauge", "Up.").add(1, at="z")])
    assert parsed(registry.render_prometheus())["up"] == {(("at", "x"),): 1.0, (("at", "z"),): 1.0}
    assert set(registry.errors) == {"b", "c"}
    assert "given by another source" in registry.errors["b"]
    assert "is a counter here but a gauge" in registry.errors["c"]
