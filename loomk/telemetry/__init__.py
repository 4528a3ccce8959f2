"""Observability: structured logging now; metrics and exporters as they arrive."""

from loomk.telemetry.logging import configure_logging, get_logger

__all__ = ["configure_logging", "get_logger"]
