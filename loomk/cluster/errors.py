"""The cluster's error: a link to NATS that cannot be made or used as asked."""

from __future__ import annotations

from loomk.errors import LinkError

__all__ = ["ClusterError"]


class ClusterError(LinkError):
    """The cluster link cannot work as configured (the message says why and what to do)."""
