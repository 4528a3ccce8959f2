"""The snapshot: a kernel's state as one JSON-able dict (docs/dashboard.md, ``snapshot``).

Built once a second by the hub and shared by every client (and ``/api/snapshot``). It
reads only the kernel's public counters; rates are the change of a counter since the
previous snapshot divided by the time between the two, so the first snapshot shows 0.
"""

from __future__ import annotations

import dataclasses
import heapq
import math
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import trio

from loomk.dashboard._logs import dashboard_log as _log

if TYPE_CHECKING:
    from loomk import Kernel

__all__ = ["MAX_TOPICS", "SnapshotBuilder"]

MAX_TOPICS = 100
"""A snapshot lists the busiest topics by published count, this many at most."""


_Scalar = int | float | str | bool | None


class SnapshotBuilder:
    """Builds snapshots of one kernel, keeping the previous counts for the rates."""

    def __init__(self, kernel: Kernel) -> None:
        self.kernel = kernel
        self._previous_at: float | None = None
        self._previous_totals: tuple[int, int] = (0, 0)  # published, delivered
        self._previous_handled: dict[str, int] = {}
        self._previous_published: dict[str, int] = {}
        self._broken_edges: set[str] = set()  # edges whose stats() failed: warned once

    def build(self) -> dict[str, Any]:
        """The kernel's state now, as the ``snapshot`` frame."""
        now = trio.current_time()
        elapsed = 0.0 if self._previous_at is None else now - self._previous_at
        self._previous_at = now
        kernel = self.kernel
        totals = kernel.bus.totals()
        published_per_s = _rate(totals.published, self._previous_totals[0], elapsed)
        delivered_per_s = _rate(totals.delivered, self._previous_totals[1], elapsed)
        self._previous_totals = (totals.published, totals.delivered)
        return {
            "type": "snapshot",
            "t_ms": int(time.time() * 1000),
            "kernel": kernel.name,
            "uptime_s": round(kernel.uptime_s, 3),
            "totals": {
                "published": totals.published,
                "delivered": totals.delivered,
                "dropped": totals.dropped_total,
                "published_per_s": published_per_s,
                "delivered_per_s": delivered_per_s,
            },
            "agents": self._agents(elapsed),
            "topics": self._topics(elapsed),
            "edges": self._edges(),
            "capabilities": self._capabilities(),
            "routes": dict(kernel.router.stats().by_route),
        }

    def _agents(self, elapsed: float) -> list[dict[str, Any]]:
        kernel = self.kernel
        agents: list[dict[str, Any]] = []
        handled_now: dict[str, int] = {}
        for agent_id in kernel.agents.list():
            try:
                stats = kernel.agents.get(agent_id).stats()
                subscriptions = kernel.subscriptions(agent_id)
            except LookupError:  # it stopped between list() and get()
                continue
            latency = stats.latency
            handled_now[agent_id] = stats.handled
            previous = self._previous_handled.get(agent_id, stats.handled)
            agents.append(
                {
                    "id": agent_id,
                    "status": stats.status,
                    "mailbox": stats.mailbox_depth,
                    "mailbox_high_water": stats.mailbox_high_water,
                    "handled": stats.handled,
                    "failures": stats.failures,
                    "restarts": stats.restarts,
                    "expired": stats.expired,
                    "handled_per_s": _rate(stats.handled, previous, elapsed),
                    "subscriptions": subscriptions,
                    "latency_ms": {
                        "p50": _ms(latency.quantile(0.5)),
                        "p99": _ms(latency.quantile(0.99)),
                        "max": _ms(latency.max),
                        "count": latency.count,
                    },
                }
            )
        self._previous_handled = handled_now
        return agents

    def _topics(self, elapsed: float) -> list[dict[str, Any]]:
        bus = self.kernel.bus
        every = [bus.stats(topic) for topic in bus.topics()]
        busiest = heapq.nlargest(MAX_TOPICS, every, key=lambda stats: stats.published)
        published_now = {stats.topic: stats.published for stats in every}
        topics = [
            {
                "topic": stats.topic,
                "published": stats.published,
                "delivered": stats.delivered,
                "dropped": stats.dropped_total,
                "subscriptions": stats.subscriptions,
                "depth": stats.depth,
                "published_per_s": _rate(
                    stats.published,
                    self._previous_published.get(stats.topic, stats.published),
                    elapsed,
                ),
            }
            for stats in busiest
        ]
        self._previous_published = published_now
        return topics

    def _edges(self) -> dict[str, dict[str, Any]]:
        edges = self._edge_stats()
        edges.update(self._other_sources(set(edges)))
        return edges

    def _other_sources(self, shown: set[str]) -> dict[str, dict[str, Any]]:
        """What registered metric sources that are not a running edge (the voice pipeline,
        a user's) count, as ``{source: {"family{labels}": value}}``; histograms left out."""
        registry = self.kernel.metrics
        panels: dict[str, dict[str, Any]] = {}
        for name in registry.sources():
            if name == "kernel" or name.split(":")[0] in shown:
                continue
            counters: dict[str, Any] = {}
            for family in registry.collect_source(name):
                for sample in family.samples:
                    if isinstance(sample.value, int | float) and math.isfinite(sample.value):
                        labels = ",".join(f"{k}={v}" for k, v in sample.labels.items())
                        key = f"{family.name}{{{labels}}}" if labels else family.name
                        counters[key] = sample.value
            if counters:
                panels[name] = counters
        return panels

    def _edge_stats(self) -> dict[str, dict[str, Any]]:
        edges: dict[str, dict[str, Any]] = {}
        for name, edge in self.kernel.edges.items():
            stats = getattr(edge, "stats", None)
            if not callable(stats):
                continue
            try:
                edges[name] = _counters(stats())
            except Exception as error:  # one edge's broken stats must not hide the rest
                if name not in self._broken_edges:
                    self._broken_edges.add(name)
                    _log().warning(
                        "dashboard: an edge's stats() failed", edge=name, error=repr(error)
                    )
        return edges

    def _capabilities(self) -> list[dict[str, Any]]:
        capabilities = self.kernel.broker.stats().capabilities
        return [
            {
                "name": name,
                "calls": stats.calls,
                "errors": stats.errors + stats.timeouts,
                "p50_ms": _ms(stats.latency.quantile(0.5)),
                "p99_ms": _ms(stats.latency.quantile(0.99)),
            }
            for name, stats in capabilities.items()
        ]


def _rate(now: int, before: int, elapsed: float) -> float:
    if elapsed <= 0.0:
        return 0.0
    return round(max(0, now - before) / elapsed, 3)


def _ms(seconds: float) -> float:
    return round(seconds * 1000.0, 3) if math.isfinite(seconds) else 0.0


def _counters(value: object) -> dict[str, Any]:
    """An edge's ``stats()`` as a dict of JSON-able counters (a dataclass or a mapping;
    nested mappings kept, anything else left out)."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        value = {f.name: getattr(value, f.name) for f in dataclasses.fields(value)}
    if not isinstance(value, Mapping):
        return {}
    counters: dict[str, Any] = {}
    for key, item in value.items():
        if isinstance(item, float) and not math.isfinite(item):
            continue
        if isinstance(item, _Scalar):
            counters[str(key)] = item
        elif isinstance(item, Mapping):
            counters[str(key)] = _counters(item)
    return counters
