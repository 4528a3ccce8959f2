"""The broker's idempotency: a repeat of a call gets the outcome of the first, never the
outcome of another call.

A repeat is the *same call*: the same id, capability, version, payload and headers, but
the envelope's per-hop ``ts``, ``ttl`` and ``hop`` (a retry carries a new timestamp). The
headers carry the caller (``sender``, and whatever a caller adds), and a provider may
answer differently per caller, so a call id reused by another caller, for another
capability or with other arguments is a call of its own. Loom keyed its cache on the id
alone: the second caller was handed the first one's output.

Outcomes are filed by call id, so a call with a fresh id (nearly every call) costs a dict
lookup; the comparison runs only when an id comes again, and compares exactly (no digest
to collide). The cache keeps each call it answers for beside its result, payload
included, ``size`` calls at most, least recently used first out.
"""

from __future__ import annotations

from collections import OrderedDict

import trio

from loomk._metakeys import HOP, TS, TTL
from loomk.actions.types import ActionCall, ActionResult

__all__ = ["InFlight", "Repeats", "same_call"]

_PER_HOP = frozenset({TS, TTL, HOP})


def same_call(first: ActionCall, second: ActionCall) -> bool:
    """Whether ``second`` repeats ``first``: equal in everything but per-hop headers."""
    if (
        first.id != second.id
        or first.capability != second.capability
        or first.version != second.version
        or first.payload != second.payload
    ):
        return False
    return _identity_headers(first) == _identity_headers(second)


def _identity_headers(call: ActionCall) -> dict[str, str]:
    return {key: value for key, value in call.headers.items() if key not in _PER_HOP}


class InFlight:
    """A call being run: its repeats wait for its result instead of running again."""

    __slots__ = ("done", "result")

    def __init__(self) -> None:
        self.done: trio.Event | None = None  # made by the first repeat that waits
        self.result: ActionResult | None = None

    async def wait(self) -> ActionResult | None:
        """The shared result, or None if the call running it was cancelled."""
        if self.result is None:
            if self.done is None:
                self.done = trio.Event()
            await self.done.wait()
        return self.result

    def finish(self, result: ActionResult) -> None:
        """The call ended with ``result``: hand it to the repeats waiting."""
        self.result = result
        if self.done is not None:
            self.done.set()

    def abandon(self) -> None:
        """The call was cancelled: wake the repeats waiting, to run on their own."""
        if self.done is not None:
            self.done.set()


class Repeats:
    """The outcomes of calls with an id (at most ``size``), and the calls running now.

    Calls without an id are never filed: every one runs.
    """

    def __init__(self, size: int) -> None:
        self.size = size
        self._results: OrderedDict[str, list[tuple[ActionCall, ActionResult]]] = OrderedDict()
        self._count = 0  # calls kept in _results, over all ids
        self._running: dict[str, list[tuple[ActionCall, InFlight]]] = {}

    def __len__(self) -> int:
        return self._count

    def result_of(self, call: ActionCall) -> ActionResult | None:
        """The outcome of an earlier run of this same call, if kept (it is then kept the
        longest); None otherwise."""
        earlier = self._results.get(call.id)
        if earlier is None:
            return None
        for first, result in earlier:
            if same_call(first, call):
                self._results.move_to_end(call.id)
                return result
        return None

    def running(self, call: ActionCall) -> InFlight | None:
        """The run of this same call going on now, if any."""
        for first, flight in self._running.get(call.id, ()):
            if same_call(first, call):
                return flight
        return None

    def start(self, call: ActionCall) -> InFlight:
        """``call`` starts running: its repeats from now on wait for it (see :meth:`end`)."""
        flight = InFlight()
        if call.id:
            self._running.setdefault(call.id, []).append((call, flight))
        return flight

    def end(self, call: ActionCall, flight: InFlight) -> None:
        """``call``'s run (``flight``) is over, however it ended."""
        flights = self._running.get(call.id)
        if flights is None:
            return
        flights[:] = [entry for entry in flights if entry[1] is not flight]
        if not flights:
            del self._running[call.id]

    def keep(self, call: ActionCall, result: ActionResult) -> None:
        """Keep ``result`` as the outcome of ``call``, forgetting the least recently used
        outcomes beyond ``size``."""
        if not call.id or not self.size:
            return
        earlier = self._results.get(call.id)
        if earlier is None:
            self._results[call.id] = [(call, result)]
        else:
            earlier.append((call, result))
            self._results.move_to_end(call.id)
        self._count += 1
        while self._count > self.size:
            oldest = next(iter(self._results))
            kept = self._results[oldest]
            del kept[0]
            self._count -= 1
            if not kept:
                del self._results[oldest]
