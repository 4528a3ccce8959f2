"""Observability: structured logging, metrics (read on demand, Prometheus text) and, with
``loomk[otel]``, OpenTelemetry spans."""

from loomk.telemetry.logging import configure_logging, get_logger
from loomk.telemetry.metrics import (
    LATENCY_BUCKETS_S,
    Histogram,
    HistogramSnapshot,
    MetricFamily,
    MetricSource,
    MetricsRegistry,
    Sample,
    render_prometheus,
)
from loomk.telemetry.processors import (
    add_agent_context,
    configure_processors,
    filter_by_logger_level,
    mask_secrets,
)

__all__ = [
    "LATENCY_BUCKETS_S",
    "Histogram",
    "HistogramSnapshot",
    "MetricFamily",
    "MetricSource",
    "MetricsRegistry",
    "Sample",
    "add_agent_context",
    "configure_logging",
    "configure_processors",
    "filter_by_logger_level",
    "get_logger",
    "mask_secrets",
    "render_prometheus",
]
