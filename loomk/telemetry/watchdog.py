"""The stall watchdog: notices when the kernel's thread stops coming back to the scheduler.

Everything in a kernel shares one thread, so a handler that blocks (``time.sleep``, a
synchronous HTTP call, a tight loop) freezes every agent, and nothing else can say so. A
thread of the watchdog's own asks the trio thread, every half threshold, to run a tiny
callback (``TrioToken.run_sync_soon``); when the answer takes longer than the threshold, it
logs one warning for that stall with the blocked thread's stack and counts it. Sampled twice,
half a threshold apart, the stall names its agent when the same agent held the thread both
times (a handler that does not yield); otherwise it is reported as an overloaded scheduler
round (many tasks, each yielding, but together longer than the threshold). An idle kernel answers at
once: the probe wakes it, nothing more. The probes use neither trio's clock nor a task, so
``MockClock`` and ``wait_all_tasks_blocked`` in tests do not see them.
"""

from __future__ import annotations

import sys
import threading
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from types import FrameType

import trio

from loomk.telemetry.logging import get_logger

__all__ = ["StallStats", "StallWatchdog"]

_log = get_logger("loomk.watchdog")

Locator = Callable[[FrameType], str | None]
"""Names what the blocked thread is running (an agent id), from its innermost frame."""


@dataclass(frozen=True, slots=True)
class StallStats:
    """A snapshot of what the watchdog saw."""

    threshold_ms: int
    stalls: int
    """Stalls seen (each counted once, however long it lasted)."""
    longest_ms: float
    """The longest stall that has ended."""
    last_agent: str | None
    """The agent that held the thread in the last stall (None: the thread was busy running
    many tasks, or outside any agent)."""
    stalled_now: bool
    """Whether the kernel's thread is stalled at this moment."""


class StallWatchdog:
    """Watches the trio thread it is started on; see the module docstring."""

    def __init__(self, threshold_ms: int, *, locate: Locator | None = None) -> None:
        if threshold_ms <= 0:
            raise ValueError(f"threshold_ms must be > 0, got {threshold_ms}")
        self.threshold_ms = threshold_ms
        self._locate = locate
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._stalls = 0
        self._longest_ms = 0.0
        self._last_agent: str | None = None
        self._stalled = False
        self._probe: _Probe | None = None  # the question in flight

    def stats(self) -> StallStats:
        """A snapshot of the counters."""
        with self._lock:
            return StallStats(
                self.threshold_ms, self._stalls, self._longest_ms, self._last_agent, self._stalled
            )

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Watch the calling trio thread until cancelled (then the watching thread ends)."""
        token = trio.lowlevel.current_trio_token()
        watched = threading.get_ident()
        thread = threading.Thread(
            target=self._watch, args=(token, watched), name="loomk-stall-watchdog", daemon=True
        )
        thread.start()
        task_status.started()
        try:
            await trio.sleep_forever()
        finally:
            self._stop.set()
            probe = self._probe
            if probe is not None:
                probe.answered.set()  # the thread waits on it: let it see the stop at once
            thread.join(timeout=1.0)

    # ---- the watching thread -------------------------------------------------------------

    def _watch(self, token: trio.lowlevel.TrioToken, watched: int) -> None:
        threshold_s = self.threshold_ms / 1000
        while not self._stop.is_set():
            probe = self._probe = _Probe()
            if self._stop.is_set():
                return
            try:
                token.run_sync_soon(probe.answer)
            except trio.RunFinishedError:
                return
            if probe.answered.wait(threshold_s):
                if self._stop.wait(threshold_s / 2):
                    return
                continue
            self._stalled_now(watched, probe, threshold_s)
            while not probe.answered.wait(threshold_s) and not self._stop.is_set():
                pass  # one warning per stall, however long it lasts
            self._ended(probe.latency())

    def _stalled_now(self, watched: int, probe: _Probe, threshold_s: float) -> None:
        """Count the stall and say where it is. The thread is sampled twice, half a
        threshold apart: the same agent both times is a handler that does not yield (it is
        named); different places are a scheduler round kept busy by many tasks, each of
        which yields (the kernel is overloaded rather than blocked, and nobody is named)."""
        first = self._sample(watched)
        with self._lock:
            self._stalls += 1
            self._last_agent = None
            self._stalled = True
        if probe.answered.wait(threshold_s / 2) or self._stop.is_set():
            second = None  # it came back meanwhile: a single long step of ``first``'s agent
            blocked = first[0] is not None
        else:
            second = self._sample(watched)
            blocked = first[0] is not None and second[0] == first[0]
        agent, stack = first if second is None else second
        if blocked:
            with self._lock:
                self._last_agent = agent
            _log.warning(
                "kernel stalled: a handler has not returned to the scheduler; every agent "
                "waits (move blocking work to trio.to_thread.run_sync)",
                threshold_ms=self.threshold_ms,
                agent_id=agent,
                stack=stack,
            )
        else:
            _log.warning(
                "kernel overloaded: one scheduler round took longer than the threshold "
                "(many tasks ran, each for a while); timers and I/O wait meanwhile",
                threshold_ms=self.threshold_ms,
                stack=stack,
            )

    def _sample(self, watched: int) -> tuple[str | None, str]:
        """The agent the watched thread runs (when the locator knows) and its stack."""
        frame = sys._current_frames().get(watched)
        if frame is None:
            return None, "(unknown)"
        agent = self._locate(frame) if self._locate else None
        return agent, "".join(traceback.format_stack(frame))

    def _ended(self, seconds: float) -> None:
        milliseconds = round(seconds * 1000, 1)
        with self._lock:
            self._stalled = False
            self._longest_ms = max(self._longest_ms, milliseconds)
        _log.info("kernel thread back after a stall", stalled_ms=milliseconds)


class _Probe:
    """One question to the trio thread, and when it was answered."""

    __slots__ = ("answered", "answered_at", "asked_at")

    def __init__(self) -> None:
        self.asked_at = time.monotonic()
        self.answered_at = 0.0
        self.answered = threading.Event()

    def answer(self) -> None:
        """Run on the trio thread when it is back at the scheduler."""
        self.answered_at = time.monotonic()
        self.answered.set()

    def latency(self) -> float:
        """Seconds from asking to the answer (to now, if none came: the kernel stopped)."""
        end = self.answered_at or time.monotonic()  # unanswered: woken by the stop
        return end - self.asked_at
