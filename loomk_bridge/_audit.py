"""The bridge's audit log: one structured record per refused call or denied action.

Records go to the structlog logger ``loomk.bridge.audit`` at warning level, as
``"bridge access denied"`` with ``agent`` (None when the call names none), ``peer``,
``action`` (``authenticate``, ``publish``, ``subscribe``, ``call``, ``offer``), ``target``
(the RPC, topic, pattern or capability), ``decision`` (``"denied"``), ``reason`` and
``suppressed``.

A client that repeats a refused action must not flood the log, so records are rate-limited
by token buckets: one per ``(agent, action)`` and one for the whole log. What a bucket holds
back is counted, and the next record written for that ``(agent, action)`` carries the count
in ``suppressed``; counts of keys evicted to bound memory (a client cycling agent ids) come
with the next record of any key as ``suppressed_other``. Counting every denial, written or
not, is the job of the bridge's stats.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import trio

from loomk.telemetry.logging import get_logger

__all__ = ["AUDIT_LOGGER", "AuditLog"]

AUDIT_LOGGER = "loomk.bridge.audit"
"""The logger (structlog ``component``) audit records are written to."""

_EVENT = "bridge access denied"


@dataclass
class _Bucket:
    tokens: float
    at: float
    suppressed: int = 0

    def take(self, now: float, burst: int, refill_s: float) -> bool:
        """Refill for the time passed, then take one token if there is one."""
        self.tokens = min(float(burst), self.tokens + (now - self.at) / refill_s)
        self.at = now
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return True
        return False


class AuditLog:
    """Rate-limited audit records of the bridge (see the module).

    Each ``(agent, action)`` may write ``burst`` records at once, then one per ``refill_s``
    seconds; the whole log ``total_burst``, then one per ``total_refill_s``. At most
    ``max_keys`` buckets are kept (least recently used go first). ``clock`` gives seconds
    (trio's clock by default, so a test's mock clock drives it).
    """

    def __init__(
        self,
        *,
        burst: int = 5,
        refill_s: float = 5.0,
        total_burst: int = 50,
        total_refill_s: float = 0.1,
        max_keys: int = 4096,
        clock: Callable[[], float] = trio.current_time,
    ) -> None:
        self._burst, self._refill_s = burst, refill_s
        self._total_burst, self._total_refill_s = total_burst, total_refill_s
        self._max_keys = max_keys
        self._clock = clock
        self._buckets: dict[tuple[str | None, str], _Bucket] = {}
        self._total: _Bucket | None = None
        self._orphaned = 0  # held back for keys since evicted
        self.written = 0
        self.suppressed = 0

    def denied(
        self, *, agent: str | None, peer: str, action: str, target: str, reason: str
    ) -> bool:
        """Record a denial, unless its rate limit holds it back; whether it was written."""
        now = self._clock()
        bucket = self._bucket((agent, action), now)
        if self._total is None:
            self._total = _Bucket(float(self._total_burst), now)
        if not (
            bucket.take(now, self._burst, self._refill_s)
            and self._total.take(now, self._total_burst, self._total_refill_s)
        ):
            bucket.suppressed += 1
            self.suppressed += 1
            return False
        extra: dict[str, int] = {}
        if self._orphaned:
            extra["suppressed_other"], self._orphaned = self._orphaned, 0
        # A fresh logger per record (records are few): it follows the logging set-up of the
        # moment, as structlog.testing.capture_logs and a host program's re-configuration do.
        get_logger(AUDIT_LOGGER).warning(
            _EVENT,
            agent=agent,
            peer=peer,
            action=action,
            target=target,
            decision="denied",
            reason=reason,
            suppressed=bucket.suppressed,
            **extra,
        )
        bucket.suppressed = 0
        self.written += 1
        return True

    def _bucket(self, key: tuple[str | None, str], now: float) -> _Bucket:
        bucket = self._buckets.pop(key, None)  # re-inserted last: most recently used
        if bucket is None:
            bucket = _Bucket(float(self._burst), now)
            while len(self._buckets) >= self._max_keys:
                oldest = next(iter(self._buckets))
                self._orphaned += self._buckets.pop(oldest).suppressed
        self._buckets[key] = bucket
        return bucket
