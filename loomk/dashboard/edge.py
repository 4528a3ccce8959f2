"""The ``dashboard`` edge: the kernel serves its dashboard when ``dashboard_address`` is set.

Announced through the ``loomk.edges`` entry point ``dashboard``, so a kernel without
``dashboard_address`` never imports this package (nor hypercorn).
``kernel.edge("dashboard")`` is the :class:`~loomk.dashboard.Dashboard`.
"""

from __future__ import annotations

from contextlib import AbstractAsyncContextManager
from typing import TYPE_CHECKING

from loomk.config import Config
from loomk.dashboard import Dashboard, open_dashboard

if TYPE_CHECKING:
    from loomk import Kernel

__all__ = ["EDGE", "DashboardEdge"]


class DashboardEdge:
    """Opens the dashboard on ``dashboard_address`` when it is set."""

    name = "dashboard"

    def wanted(self, config: Config) -> bool:
        return bool(config.dashboard_address)

    def open(self, kernel: Kernel) -> AbstractAsyncContextManager[Dashboard]:
        return open_dashboard(kernel)


EDGE = DashboardEdge()
