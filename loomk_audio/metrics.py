"""The voice pipeline's metrics: turns, barge-ins and each stage's latency, registered with
``kernel.metrics`` while a pipeline runs."""

from __future__ import annotations

from loomk.telemetry.metrics import MetricFamily
from loomk_audio.stats import VoiceStatsSnapshot

__all__ = ["voice_families"]


def voice_families(stats: VoiceStatsSnapshot, pipeline: str) -> list[MetricFamily]:
    """A pipeline's counters, and per stage the p50/p95/max latency of its recent turns."""
    p50 = MetricFamily(
        "voice_stage_latency_p50_seconds", "gauge", "Median latency of a stage, recent turns."
    )
    p95 = MetricFamily(
        "voice_stage_latency_p95_seconds", "gauge", "95th percentile latency of a stage."
    )
    most = MetricFamily("voice_stage_latency_max_seconds", "gauge", "Largest stage latency.")
    for stage, spread in sorted(stats.latency.items()):
        p50.add(spread.p50_ms / 1000, pipeline=pipeline, stage=stage)
        p95.add(spread.p95_ms / 1000, pipeline=pipeline, stage=stage)
        most.add(spread.max_ms / 1000, pipeline=pipeline, stage=stage)
    return [
        MetricFamily("voice_turns_total", "counter", "Spoken queries answered.").add(
            stats.turns, pipeline=pipeline
        ),
        MetricFamily("voice_interrupted_total", "counter", "Answers cut short.").add(
            stats.interrupted, pipeline=pipeline
        ),
        MetricFamily("voice_barge_ins_total", "counter", "Barge-ins that stopped speech.").add(
            stats.barge_ins, pipeline=pipeline
        ),
        MetricFamily("voice_failed_total", "counter", "Turns that failed.").add(
            stats.failed, pipeline=pipeline
        ),
        p50,
        p95,
        most,
    ]
