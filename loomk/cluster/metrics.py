"""A cluster link's counters as metric families (``/metrics``, the dashboard)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from loomk.telemetry.metrics import MetricFamily

if TYPE_CHECKING:
    from loomk.cluster.link import ClusterLink

__all__ = ["cluster_families"]


def cluster_families(link: ClusterLink) -> list[MetricFamily]:
    """The link's events each way, drops, refusals, peers and calls, labelled by node."""
    stats = link.stats()
    node = stats.node
    counts = stats.link
    return [
        MetricFamily("cluster_connected", "gauge", "1 while the link is connected to NATS.").add(
            int(counts.connected), node=node
        ),
        MetricFamily("cluster_peers", "gauge", "Other kernels heard from.").add(
            stats.peers, node=node
        ),
        MetricFamily("cluster_events_total", "counter", "Events through NATS, by direction.")
        .add(counts.sent, node=node, direction="out")
        .add(counts.received, node=node, direction="in"),
        MetricFamily("cluster_backlog", "gauge", "Local events waiting to be sent.").add(
            counts.backlog, node=node
        ),
        MetricFamily("cluster_dropped_total", "counter", "Events dropped, by reason.")
        .add(counts.dropped, node=node, reason="backlog_full")
        .add(stats.oversized, node=node, reason="oversized")
        .add(stats.lagged, node=node, reason="lagged")
        .add(counts.rejected, node=node, reason="refused")
        .add(stats.not_events, node=node, reason="not_an_event"),
        MetricFamily(
            "cluster_redelivered_total", "counter", "JetStream messages delivered again."
        ).add(stats.redelivered, node=node),
        MetricFamily("cluster_calls_total", "counter", "Capability calls between kernels.")
        .add(stats.calls_out, node=node, direction="out")
        .add(stats.calls_in, node=node, direction="in"),
    ]
