"""Scale-out: kernels on many machines share one bus through NATS (loomk[cluster]).

``join(kernel, "nats://host:4222")`` (or the ``cluster_nats_url`` setting) mirrors the
topics of ``cluster_share`` onto NATS subjects: realtime patterns over core NATS, batched and
background ones over JetStream, acknowledged once handled here. Every kernel's agents and
capabilities are listed in each kernel's directory, and ``ctx.invoke`` reaches a capability
of another kernel. See docs/cluster.md.

nats-py is imported with the link, on first use of ``join``, ``ClusterLink`` or
``ClusterStats``: ``loomk.cluster.nats_server`` and the benchmark's scenario need neither.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from loomk.cluster.errors import ClusterError

if TYPE_CHECKING:
    from loomk.cluster.link import ClusterLink, ClusterStats, join

__all__ = ["ClusterError", "ClusterLink", "ClusterStats", "join"]

_LAZY = frozenset({"ClusterLink", "ClusterStats", "join"})


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        from loomk.cluster import link

        return getattr(link, name)
    raise AttributeError(f"module 'loomk.cluster' has no attribute {name!r}")
