"""Restart policy of a supervised agent, in the Erlang/Akka vocabulary.

``permanent`` agents are restarted whenever they end, ``transient`` ones only when they fail,
``temporary`` ones never. At most ``max_restarts`` restarts may happen within ``window_s``
seconds; one more failure and the agent is given up on. Restarts wait an exponential
backoff with jitter, so a crash loop cannot spin the CPU.

This module is pure decision logic over trio's clock; the runtime acts on its answers.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Literal

from loomk.errors import AgentError

__all__ = ["Restart", "RestartPolicy", "RestartTracker"]

Restart = Literal["permanent", "transient", "temporary"]
_SHARED_RNG = random.Random()  # jitter needs no per-agent generator (seeding one costs)
_RESTARTS = ("permanent", "transient", "temporary")


@dataclass(frozen=True, slots=True)
class RestartPolicy:
    """How an agent is supervised."""

    restart: Restart = "permanent"
    max_restarts: int = 5
    window_s: float = 10.0
    backoff_s: float = 0.1
    backoff_max_s: float = 5.0
    jitter: float = 0.2
    critical: bool = False

    def __post_init__(self) -> None:
        if self.restart not in _RESTARTS:
            raise AgentError(f"restart must be one of {_RESTARTS}, got {self.restart!r}")
        if type(self.max_restarts) is not int or self.max_restarts < 0:
            raise AgentError(f"max_restarts must be an int >= 0, got {self.max_restarts!r}")
        for name in ("window_s", "backoff_s", "backoff_max_s"):
            value = getattr(self, name)
            if not isinstance(value, int | float) or isinstance(value, bool) or not value >= 0:
                raise AgentError(f"{name} must be a number >= 0, got {value!r}")
        jitter = self.jitter
        if not isinstance(jitter, int | float) or isinstance(jitter, bool) or not 0 <= jitter <= 1:
            raise AgentError(f"jitter must be a number from 0 to 1, got {self.jitter!r}")

    def restarts_after(self, failed: bool) -> bool:
        """Whether an instance that ended (``failed`` or normally) is replaced."""
        if self.restart == "permanent":
            return True
        return self.restart == "transient" and failed


@dataclass(slots=True)
class RestartTracker:
    """Counts restarts in the sliding window and computes the next backoff."""

    policy: RestartPolicy
    rng: random.Random = _SHARED_RNG
    _times: list[float] = field(default_factory=list)

    def allow(self, now: float) -> bool:
        """Record a restart at ``now`` if the window allows one more; False if it does not."""
        times = self._times
        while times and now - times[0] > self.policy.window_s:
            del times[0]
        if len(times) >= self.policy.max_restarts:
            return False
        times.append(now)
        return True

    @property
    def recent(self) -> int:
        """Restarts counted in the current window."""
        return len(self._times)

    def backoff(self) -> float:
        """Seconds to wait before the restart just allowed: doubling, capped, jittered."""
        policy = self.policy
        doublings = min(max(0, len(self._times) - 1), 64)  # 2**64 outgrows any sane cap
        base = min(policy.backoff_max_s, policy.backoff_s * 2**doublings)
        if policy.jitter:
            base *= 1 + self.rng.uniform(-policy.jitter, policy.jitter)
        return max(0.0, float(base))
