"""A feed client's outbox: the frames waiting for its websocket, bounded, never blocking.

The hub puts frames in every tick for every client; a client's writer task takes them out
and sends them. A client that reads slowly (or not at all) must cost the hub nothing: no
put ever waits, and what a full outbox cannot hold is dropped and *counted*:

- control frames (``hello``, ``error``, ``pong``) queue in order, up to a bound (beyond it
  they are dropped: only a client that ignores its own errors gets there);
- at most one ``snapshot`` waits: a newer one replaces it (a snapshot is a whole state);
- ``events`` frames queue up to a bound; when full, the oldest is dropped and its events
  (and the ``missed`` it carried) are added to the ``missed`` of the next frame sent.

An events frame is kept as its shared JSON list of events and serialised with its
``missed`` when the writer takes it, so one encoding serves every client of a filter.

The outbox also says whether the client makes progress: :meth:`Outbox.stalled_for` is how
long frames have waited without the writer taking any (the hub closes clients past a limit).
"""

from __future__ import annotations

import json
from collections import deque
from dataclasses import dataclass

import trio

__all__ = ["EventsFrame", "Outbox", "frame_json"]


def frame_json(frame: object) -> str:
    """A frame's text: compact JSON (every byte counts on the feed), non-ASCII escaped (a
    stray surrogate in a string cannot break the UTF-8 of the websocket)."""
    return json.dumps(frame, separators=(",", ":"))


@dataclass(frozen=True, slots=True)
class EventsFrame:
    """An ``events`` frame before its ``missed`` is known: ``events_json`` is the JSON array
    of its events (shared by the clients of one filter), ``count`` their number and
    ``missed`` what this client already missed when the hub built it."""

    events_json: str
    count: int
    missed: int


class Outbox:
    """The frames waiting for one client (see the module)."""

    __slots__ = (
        "_control",
        "_events",
        "_missed_carry",
        "_pending_since",
        "_ready",
        "_snapshot",
        "control_dropped",
        "events_taken",
        "max_control",
        "max_events_frames",
        "missed",
    )

    def __init__(self, *, max_events_frames: int = 4, max_control: int = 32) -> None:
        if max_events_frames < 1 or max_control < 1:
            raise ValueError("an outbox holds at least one frame of each kind")
        self.max_events_frames = max_events_frames
        self.max_control = max_control
        self._control: deque[str] = deque()
        self._snapshot: str | None = None
        self._events: deque[EventsFrame] = deque()
        self._missed_carry = 0  # events of dropped frames, owed to the next frame sent
        self._pending_since: float | None = None  # when frames began waiting untaken
        self._ready = trio.Event()
        self.missed = 0
        """Every event this client was not sent (sampled out or dropped), all told."""
        self.control_dropped = 0
        """Control frames dropped because the control queue was full."""
        self.events_taken = 0
        """Events in the ``events`` frames the writer took."""

    def __len__(self) -> int:
        return len(self._control) + (self._snapshot is not None) + len(self._events)

    # ---- the hub's side: never waits ----------------------------------------------------

    def put_control(self, frame: str) -> bool:
        """Queue a control frame; False (and counted) if the control queue is full."""
        if len(self._control) >= self.max_control:
            self.control_dropped += 1
            return False
        self._control.append(frame)
        self._arrived()
        return True

    def put_snapshot(self, frame: str) -> None:
        """Queue a snapshot, replacing one still waiting."""
        self._snapshot = frame
        self._arrived()

    def put_events(self, frame: EventsFrame) -> int:
        """Queue an events frame; when the queue is full its oldest frame is dropped and
        counted as missed. Returns how many events were dropped (0 or the old frame's)."""
        self.missed += frame.missed
        dropped = 0
        if len(self._events) >= self.max_events_frames:
            old = self._events.popleft()
            dropped = old.count
            self._missed_carry += old.count + old.missed
            self.missed += old.count
        self._events.append(frame)
        self._arrived()
        return dropped

    def owe_missed(self, count: int) -> None:
        """Count ``count`` events missed without a frame to carry them: the next ``events``
        frame sent reports them."""
        self.missed += count
        self._missed_carry += count

    def stalled_for(self, now: float) -> float:
        """Seconds frames have waited with none taken meanwhile (0.0 when none waits)."""
        since = self._pending_since
        return 0.0 if since is None else max(0.0, now - since)

    # ---- the writer's side ----------------------------------------------------------------

    def take_nowait(self) -> str | None:
        """The next frame to send (control, then snapshot, then events), or None."""
        frame: str | None
        if self._control:
            frame = self._control.popleft()
        elif self._snapshot is not None:
            frame, self._snapshot = self._snapshot, None
        elif self._events:
            events = self._events.popleft()
            missed, self._missed_carry = events.missed + self._missed_carry, 0
            self.events_taken += events.count
            frame = f'{{"type":"events","missed":{missed},"events":{events.events_json}}}'
        else:
            return None
        self._pending_since = trio.current_time() if len(self) else None
        if not len(self):
            self._ready = trio.Event()
        return frame

    def drain_control(self) -> list[str]:
        """Take every control frame waiting (what goes out before a close frame)."""
        frames = list(self._control)
        self._control.clear()
        if not len(self):
            self._pending_since = None
            self._ready = trio.Event()
        return frames

    async def take(self) -> str | None:
        """Wait for the next frame and take it; None if :meth:`wake` woke the wait with
        nothing to take."""
        frame = self.take_nowait()
        if frame is None:
            await self._ready.wait()
            frame = self.take_nowait()
            if frame is None:
                self._ready = trio.Event()
        return frame

    def wake(self) -> None:
        """End a :meth:`take` waiting on an empty outbox (it returns None)."""
        self._ready.set()

    def _arrived(self) -> None:
        if self._pending_since is None:
            self._pending_since = trio.current_time()
        self._ready.set()
