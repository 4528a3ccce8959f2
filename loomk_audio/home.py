"""A simulated home for the voice agent: lights by room and kitchen timers, as capabilities.

The local model answers "turn on the kitchen lights" with the action ``lights.set`` and "set a
timer for five minutes" with ``timer.set``; something must carry them out. In a real house
that is a home-automation bridge registered as those capabilities; offline, :class:`Home`
keeps the state in memory so the demo and the tests can see what the agent did. A timer
that runs out publishes ``timer.done`` on ``home.timers``, which the voice assistant speaks.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import Any

import trio

from loomk import CapabilityProvider, Event, Kernel, capability

__all__ = ["TIMERS_TOPIC", "TIMER_DONE", "Home", "TimerInfo"]

TIMERS_TOPIC = "home.timers"
TIMER_DONE = "timer.done"
_MAX_TIMERS = 100

_LIGHTS_SCHEMA = {
    "type": "object",
    "properties": {"room": {"type": "string", "maxLength": 100}, "on": {"type": "boolean"}},
    "required": ["on"],
}
_TIMER_SCHEMA = {
    "type": "object",
    "properties": {
        "seconds": {"type": "integer", "minimum": 1, "maximum": 7 * 86400},
        "label": {"type": "string", "maxLength": 200},
    },
    "required": ["seconds"],
}


@dataclass(frozen=True, slots=True)
class TimerInfo:
    """A timer that was set: its id, length, label and when (trio clock) it rings."""

    timer_id: str
    seconds: int
    label: str
    due_at: float


class Home:
    """Lights and timers of a pretend house (see the module notes). Timers run in the
    kernel's edge nursery, so they end with the kernel."""

    def __init__(self, kernel: Kernel) -> None:
        self._kernel = kernel
        self.lights: dict[str, bool] = {}
        self.timers: dict[str, TimerInfo] = {}
        self._ids = itertools.count(1)

    def providers(self) -> list[CapabilityProvider]:
        """``lights.set`` and ``timer.set``, to register with the broker."""

        @capability("lights.set", description="Switch the lights of a room", schema=_LIGHTS_SCHEMA)
        async def set_lights(args: dict[str, Any]) -> dict[str, Any]:
            room = str(args.get("room") or "house")
            self.lights[room] = bool(args["on"])
            return {"room": room, "on": self.lights[room]}

        @capability("timer.set", description="Start a timer", schema=_TIMER_SCHEMA)
        async def set_timer(args: dict[str, Any]) -> dict[str, Any]:
            if len(self.timers) >= _MAX_TIMERS:
                return {"error": f"at most {_MAX_TIMERS} timers run at once"}
            timer = TimerInfo(
                f"timer-{next(self._ids)}",
                int(args["seconds"]),
                str(args.get("label") or ""),
                trio.current_time() + int(args["seconds"]),
            )
            self.timers[timer.timer_id] = timer
            self._kernel.start_soon(self._ring, timer, name=f"home {timer.timer_id}")
            return {"timer_id": timer.timer_id, "seconds": timer.seconds, "label": timer.label}

        return [set_lights, set_timer]

    async def _ring(self, timer: TimerInfo) -> None:
        await trio.sleep_until(timer.due_at)
        self.timers.pop(timer.timer_id, None)
        metadata = {"timer_id": timer.timer_id, "label": timer.label, "seconds": str(timer.seconds)}
        await self._kernel.bus.publish(
            TIMERS_TOPIC, Event(TIMER_DONE, timer.label.encode(), source="home", metadata=metadata)
        )
