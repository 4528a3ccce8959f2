"""The bridge's metrics: its server's and its link's counters as metric families.

Registered with ``kernel.metrics`` while a server or a link runs, so ``/metrics`` and the
dashboard show bridge connections and frames beside the kernel's own families.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from loomk.telemetry.metrics import MetricFamily

if TYPE_CHECKING:
    from loomk.links import LinkStats
    from loomk_bridge.server import BridgeStats

__all__ = ["link_families", "server_families"]


def server_families(stats: BridgeStats) -> list[MetricFamily]:
    """A bridge server's counters: its remote agents, open streams and frames each way."""
    frames = MetricFamily(
        "bridge_frames_total",
        "counter",
        "Events through the bridge: in (published by remote agents), out (delivered to them).",
    )
    frames.add(stats.events_in, direction="in").add(stats.events_out, direction="out")
    denied = MetricFamily(
        "bridge_denied_total", "counter", "Actions the bridge's access control refused, by kind."
    )
    for kind, count in sorted(stats.denials.items()):
        denied.add(count, kind=kind)
    return [
        MetricFamily("bridge_agents", "gauge", "Remote agents registered.").add(stats.agents),
        MetricFamily("bridge_connections", "gauge", "Open event streams.").add(stats.streams),
        frames,
        MetricFamily("bridge_errors_total", "counter", "Error frames sent to clients.").add(
            stats.errors
        ),
        MetricFamily(
            "bridge_calls_total", "counter", "Capability calls pushed to remote agents."
        ).add(stats.calls),
        MetricFamily(
            "bridge_heartbeat_drops_total", "counter", "Agents dropped for missed heartbeats."
        ).add(stats.dropped),
        MetricFamily(
            "bridge_refused_total", "counter", "Calls refused for a missing or wrong token."
        ).add(stats.refused),
        MetricFamily(
            "bridge_too_large_total", "counter", "Events refused for an oversized payload."
        ).add(stats.too_large),
        denied,
    ]


def link_families(stats: LinkStats, origin: str) -> list[MetricFamily]:
    """A bus link's counters (this kernel joined to another's bridge), labelled by link."""
    return [
        MetricFamily("link_connected", "gauge", "1 while the link's transport is up.").add(
            int(stats.connected), link=origin
        ),
        MetricFamily("link_connects_total", "counter", "Connections the link made.").add(
            stats.connects, link=origin
        ),
        MetricFamily("link_frames_total", "counter", "Events the link carried, by direction.")
        .add(stats.sent, link=origin, direction="out")
        .add(stats.received, link=origin, direction="in"),
        MetricFamily(
            "link_dropped_total", "counter", "Local events dropped from a full backlog."
        ).add(stats.dropped, link=origin),
        MetricFamily("link_backlog", "gauge", "Local events waiting to be sent.").add(
            stats.backlog, link=origin
        ),
        MetricFamily(
            "link_rejected_total", "counter", "Events from the link that could not be published."
        ).add(stats.rejected, link=origin),
    ]
