"""The kernel's own metrics: its counters read into metric families when asked.

Names follow the ones Loom's documentation recommends where they fit
(``published_events_total``, ``delivered_events_total``, ``agent_mailbox_size``,
``agent_handler_latency_seconds``, ``action_invocations_total``, ``action_errors_total``,
``action_latency_seconds``, ``routing_decisions_total``); the rest are named alike. Nothing
here runs per event: every value comes from counters the bus, the agents, the broker, the
router and the store keep anyway, read at collection time.
"""

from __future__ import annotations

from collections.abc import Callable

from loomk.actions import ActionBroker
from loomk.agents import AgentRuntime
from loomk.bus import EventBus
from loomk.collab import CollabService
from loomk.llm.routing import ModelRouter
from loomk.state import StoreStats
from loomk.telemetry.metrics import MetricFamily
from loomk.telemetry.watchdog import StallWatchdog

__all__ = ["KernelMetrics"]


class KernelMetrics:
    """A metric source (see :class:`~loomk.telemetry.metrics.MetricsRegistry`) reading a
    kernel's bus, agents, broker, router, collaboration service and store."""

    def __init__(
        self,
        *,
        bus: EventBus,
        agents: AgentRuntime,
        broker: ActionBroker,
        router: ModelRouter,
        collab: CollabService,
        store_stats: Callable[[], StoreStats | None],
        uptime_s: Callable[[], float],
        watchdog: StallWatchdog | None = None,
    ) -> None:
        self._bus = bus
        self._agents = agents
        self._broker = broker
        self._router = router
        self._collab = collab
        self._store_stats = store_stats
        self._watchdog = watchdog
        self._uptime_s = uptime_s

    def __call__(self) -> list[MetricFamily]:
        return [
            *self.bus_families(),
            *self.agent_families(),
            *self.action_families(),
            *self.routing_families(),
            *self.state_families(),
            *self.kernel_families(),
        ]

    def bus_families(self) -> list[MetricFamily]:
        """Per topic: published, delivered, dropped (by reason), filtered, queued."""
        published = MetricFamily(
            "published_events_total", "counter", "Events published, per topic."
        )
        delivered = MetricFamily(
            "delivered_events_total", "counter", "Events taken by subscribers, per topic."
        )
        dropped = MetricFamily(
            "dropped_events_total",
            "counter",
            "Deliveries dropped, per topic and reason (the overflow policy or cause).",
        )
        filtered = MetricFamily(
            "filtered_events_total",
            "counter",
            "Deliveries a subscription's event-type filter left out, per topic.",
        )
        depth = MetricFamily(
            "topic_queue_depth", "gauge", "Events of a topic queued in subscriptions now."
        )
        bus = self._bus
        for topic in bus.topics():
            stats = bus.stats(topic)
            published.add(stats.published, topic=topic)
            delivered.add(stats.delivered, topic=topic)
            filtered.add(stats.filtered, topic=topic)
            depth.add(stats.depth, topic=topic)
            for reason, count in sorted(stats.dropped.items()):
                dropped.add(count, topic=topic, reason=reason)
        totals = bus.totals()
        everything = MetricFamily(
            "bus_published_events_total",
            "counter",
            "Events published on every topic, pruned topics included.",
        ).add(totals.published)
        return [published, delivered, dropped, filtered, depth, everything]

    def agent_families(self) -> list[MetricFamily]:
        """Per agent: mailbox, handled, restarts, failures, handler latency."""
        mailbox = MetricFamily("agent_mailbox_size", "gauge", "Events queued for an agent now.")
        high_water = MetricFamily(
            "agent_mailbox_high_water", "gauge", "The most events an agent's mailbox held."
        )
        handled = MetricFamily(
            "agent_handled_events_total", "counter", "Events an agent handled (committed)."
        )
        restarts = MetricFamily("agent_restarts_total", "counter", "Restarts of an agent.")
        failures = MetricFamily(
            "agent_failures_total", "counter", "Handler or start failures of an agent."
        )
        expired = MetricFamily(
            "agent_expired_events_total", "counter", "Events dropped for an expired TTL."
        )
        timed_out = MetricFamily(
            "agent_timed_out_requests_total",
            "counter",
            "Requests whose deadline passed before their handler finished.",
        )
        running = MetricFamily("agent_running", "gauge", "1 while an agent is running.")
        uptime = MetricFamily(
            "agent_uptime_seconds", "gauge", "Seconds since the agent's running instance started."
        )
        latency = MetricFamily(
            "agent_handler_latency_seconds",
            "histogram",
            "Handler run time, sampled: the first handler and one in 32 after it are timed, "
            "every request and batch.",
        )
        runtime = self._agents
        for agent_id in runtime.list():
            stats = runtime.get(agent_id).stats()
            mailbox.add(stats.mailbox_depth, agent=agent_id)
            high_water.add(stats.mailbox_high_water, agent=agent_id)
            handled.add(stats.handled, agent=agent_id)
            restarts.add(stats.restarts, agent=agent_id)
            failures.add(stats.failures, agent=agent_id)
            expired.add(stats.expired, agent=agent_id)
            timed_out.add(stats.timed_out, agent=agent_id)
            running.add(1 if stats.status == "running" else 0, agent=agent_id)
            uptime.add(stats.uptime_s, agent=agent_id)
            latency.add(stats.latency, agent=agent_id)
        families = [mailbox, high_water, handled, restarts, failures, expired, timed_out]
        return [*families, running, uptime, latency]

    def action_families(self) -> list[MetricFamily]:
        """Per capability: calls, errors, timeouts, cache hits, latency."""
        calls = MetricFamily(
            "action_invocations_total", "counter", "Capability calls (cache hits included)."
        )
        errors = MetricFamily(
            "action_errors_total", "counter", "Capability calls that ended in an error."
        )
        timeouts = MetricFamily(
            "action_timeouts_total", "counter", "Capability calls that ran out of time."
        )
        cached = MetricFamily(
            "action_cache_hits_total", "counter", "Calls answered from the idempotency cache."
        )
        latency = MetricFamily(
            "action_latency_seconds", "histogram", "Run time of the capability calls that ran."
        )
        stats = self._broker.stats()
        for name, counts in stats.capabilities.items():
            calls.add(counts.calls, capability=name)
            errors.add(counts.errors, capability=name)
            timeouts.add(counts.timeouts, capability=name)
            cached.add(counts.cached, capability=name)
            latency.add(counts.latency, capability=name)
        unavailable = MetricFamily(
            "action_unavailable_total",
            "counter",
            "Calls that found no provider (unknown or unregistered capability).",
        ).add(stats.unavailable)
        return [calls, errors, timeouts, cached, latency, unavailable]

    def routing_families(self) -> list[MetricFamily]:
        """Routing decisions by route."""
        decisions = MetricFamily(
            "routing_decisions_total", "counter", "Model routing decisions, per route."
        )
        for route, count in sorted(self._router.stats().by_route.items()):
            decisions.add(count, route=route)
        return [decisions]

    def state_families(self) -> list[MetricFamily]:
        """State commits, batches and their latency (none before the store opens)."""
        stats = self._store_stats()
        if stats is None:
            return []
        return [
            MetricFamily("state_commits_total", "counter", "State commits acknowledged.").add(
                stats.commits
            ),
            MetricFamily("state_batches_total", "counter", "LevelDB write batches.").add(
                stats.batches
            ),
            MetricFamily("state_operations_total", "counter", "Puts and deletes written.").add(
                stats.operations
            ),
            MetricFamily(
                "state_commit_latency_seconds",
                "histogram",
                "Seconds from a batch's first commit to its acknowledgement.",
            ).add(stats.commit_latency),
        ]

    def kernel_families(self) -> list[MetricFamily]:
        """Uptime, collaboration waits and the event loop's stalls."""
        collab = self._collab.stats()
        families = [
            MetricFamily("kernel_uptime_seconds", "gauge", "Seconds since the kernel started.").add(
                self._uptime_s()
            ),
            MetricFamily(
                "collab_waiting_calls", "gauge", "Requests and fanouts waiting for answers."
            ).add(collab.waiting),
            MetricFamily(
                "collab_timeouts_total", "counter", "Requests and fanouts that timed out."
            ).add(collab.timeouts),
        ]
        if self._watchdog is not None:
            stalls = self._watchdog.stats()
            families.append(
                MetricFamily(
                    "kernel_stalls_total",
                    "counter",
                    "Times the kernel's thread did not come back to the scheduler in time.",
                ).add(stalls.stalls)
            )
        return families
