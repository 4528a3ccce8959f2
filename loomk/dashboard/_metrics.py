"""The dashboard's own metrics, registered with ``kernel.metrics`` while it runs."""

from __future__ import annotations

from collections.abc import Callable

from loomk.dashboard._hub import DashboardStats
from loomk.telemetry.metrics import MetricFamily, MetricSource

__all__ = ["dashboard_metrics"]


def dashboard_metrics(
    stats: Callable[[], DashboardStats], failed_connections: Callable[[], int]
) -> MetricSource:
    """A metric source reading the dashboard's counts (``dashboard_*``) when scraped."""

    def collect() -> list[MetricFamily]:
        now = stats()
        closed = MetricFamily(
            "dashboard_clients_closed_total",
            "counter",
            "Feed clients gone, by reason (client closed, not reading, bad messages, ...).",
        )
        for reason, count in sorted(now.closed.items()):
            closed.add(count, reason=reason)
        return [
            MetricFamily("dashboard_clients", "gauge", "Feed clients connected.").add(now.clients),
            MetricFamily(
                "dashboard_frames_sent_total", "counter", "Frames sent to feed clients."
            ).add(now.frames_sent),
            MetricFamily(
                "dashboard_events_sent_total", "counter", "Events sent to feed clients."
            ).add(now.events_sent),
            MetricFamily(
                "dashboard_events_missed_total",
                "counter",
                "Events feed clients were not sent (sampled out, or dropped for a slow client).",
            ).add(now.events_missed),
            MetricFamily(
                "dashboard_clients_refused_total",
                "counter",
                "Feed clients turned away: more than dashboard_max_clients (1013).",
            ).add(now.refused),
            closed,
            MetricFamily(
                "dashboard_connections_failed_total",
                "counter",
                "HTTP connections that broke the server's protocol handling and were closed.",
            ).add(failed_connections()),
        ]

    return collect
