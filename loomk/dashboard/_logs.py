"""The dashboard's logger."""

from __future__ import annotations

from typing import TYPE_CHECKING

from loomk.telemetry.logging import get_logger

if TYPE_CHECKING:
    from structlog.typing import FilteringBoundLogger

__all__ = ["LOGGER", "dashboard_log"]

LOGGER = "loomk.dashboard"
"""The ``component`` of the dashboard's log records."""


def dashboard_log() -> FilteringBoundLogger:
    """The dashboard's logger, taken fresh for each record: what the dashboard logs is
    rare (a client comes, misbehaves, goes), and a fresh logger follows the logging set-up
    of the moment (a test that captures the logs sees them)."""
    return get_logger(LOGGER)
