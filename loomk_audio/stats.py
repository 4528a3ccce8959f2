"""What the voice pipeline measured: turns, barge-ins and the latency of each stage.

Latencies are kept per stage in a bounded window (the last :data:`WINDOW` turns), so a
long-running agent reports its recent behaviour in constant memory.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field

__all__ = ["STAGES", "WINDOW", "StageLatency", "VoiceStats", "VoiceStatsSnapshot", "spread"]

WINDOW = 1000
STAGES = (
    "stt",  # end of utterance -> final transcript
    "route",  # routing decision and the model's answer
    "tools",  # the answer's actions through the broker
    "tts",  # synthesis of the spoken answer
    "first_audio",  # end of utterance -> first audio of the spoken answer
    "turn",  # query received -> answer spoken (or cut short)
)


@dataclass(frozen=True, slots=True)
class StageLatency:
    """One stage's latency over the window, in milliseconds."""

    count: int
    p50_ms: float
    p95_ms: float
    max_ms: float


@dataclass(frozen=True, slots=True)
class VoiceStatsSnapshot:
    """A copy of :class:`VoiceStats` at one moment."""

    turns: int
    interrupted: int
    barge_ins: int
    failed: int
    latency: dict[str, StageLatency]


def _percentile(ordered: list[float], fraction: float) -> float:
    if not ordered:
        return 0.0
    index = min(len(ordered) - 1, max(0, round(fraction * (len(ordered) - 1))))
    return ordered[index]


def spread(samples: Iterable[float]) -> StageLatency:
    """The count, p50, p95 and max of latencies in milliseconds."""
    ordered = sorted(samples)
    return StageLatency(
        len(ordered),
        _percentile(ordered, 0.5),
        _percentile(ordered, 0.95),
        ordered[-1] if ordered else 0.0,
    )


@dataclass
class VoiceStats:
    """Counters and latency windows, shared by the pipeline's agents (and kept across their
    restarts: agents get the same object back)."""

    turns: int = 0
    interrupted: int = 0
    barge_ins: int = 0
    failed: int = 0
    _samples: dict[str, deque[float]] = field(default_factory=dict)

    def record(self, stage: str, ms: float) -> None:
        """Add one measurement of ``stage`` (one of :data:`STAGES`, or another name)."""
        window = self._samples.get(stage)
        if window is None:
            window = self._samples[stage] = deque(maxlen=WINDOW)
        window.append(ms)

    def snapshot(self) -> VoiceStatsSnapshot:
        """The counters and each stage's p50/p95/max."""
        latency = {stage: spread(window) for stage, window in self._samples.items()}
        return VoiceStatsSnapshot(
            self.turns, self.interrupted, self.barge_ins, self.failed, latency
        )
