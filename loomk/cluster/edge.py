"""The ``cluster`` edge: joins the kernel to NATS when ``cluster_nats_url`` is set.

Announced through a ``loomk.edges`` entry point, so ``import loomk`` never imports nats-py.
``kernel.edge("cluster")`` is the :class:`~loomk.cluster.link.ClusterLink`.
"""

from __future__ import annotations

from contextlib import AbstractAsyncContextManager
from typing import Any

from loomk import Config, Kernel
from loomk.cluster.link import join

__all__ = ["EDGE", "ClusterEdge"]


class ClusterEdge:
    """Joins the kernel to the NATS server(s) of ``cluster_nats_url`` (it does not wait for
    the first connection: ``await kernel.edge("cluster").wait_connected()``)."""

    name = "cluster"

    def wanted(self, config: Config) -> bool:
        return bool(config.cluster_nats_url)

    def open(self, kernel: Kernel) -> AbstractAsyncContextManager[Any]:
        return join(kernel, kernel.config.cluster_nats_url)


EDGE = ClusterEdge()
