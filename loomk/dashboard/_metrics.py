"""The dashboard's own metrics, registered with ``kernel.metrics`` while it runs, and the
cache of ``/metrics``' text."""

from __future__ import annotations

from collections.abc import Callable

from loomk.dashboard._hub import DashboardStats
from loomk.telemetry.metrics import MetricFamily, MetricSource

__all__ = ["RenderCache", "dashboard_metrics"]


class RenderCache:
    """The text ``render()`` returned, rendered again only once it is ``max_age_s`` old.

    ``/metrics`` renders the whole registry on the kernel's thread; scrapes arriving
    faster than ``max_age_s`` (however many scrapers, however often) share one rendering,
    as ``/api/snapshot`` shares the hub's latest snapshot. ``clock`` is trio's by default
    (a test passes its own, and moves it). ``max_age_s`` 0 renders on every call."""

    def __init__(
        self, render: Callable[[], str], max_age_s: float, clock: Callable[[], float]
    ) -> None:
        self._render = render
        self._max_age_s = max_age_s
        self._clock = clock
        self._text: str | None = None
        self._rendered_at = 0.0

    def get(self) -> str:
        """The cached text, or a new rendering when it is missing or ``max_age_s`` old."""
        now = self._clock()
        if self._text is None or now - self._rendered_at >= self._max_age_s:
            self._text = self._render()
            self._rendered_at = now
        return self._text


def dashboard_metrics(
    stats: Callable[[], DashboardStats],
    failed_connections: Callable[[], int],
    refused_connections: Callable[[], int],
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
            MetricFamily(
                "dashboard_connections_refused_total",
                "counter",
                "HTTP connections closed at once: over the connection cap, or speaking HTTP/2.",
            ).add(refused_connections()),
        ]

    return collect
