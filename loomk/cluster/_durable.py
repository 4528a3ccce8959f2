"""The JetStream half of a cluster link: streams, this kernel's consumers, and their acks.

Each batched (or background) pattern of ``cluster_share`` has one stream, named after the
pattern, holding its subject with *interest* retention: a message stays until every
kernel's consumer has acknowledged it. Each kernel has one durable push consumer per stream,
named after its node, with ack policy *all*. A message is acknowledged only once the event
is safe here: published locally, and handled and committed by every agent that queued it
(:class:`~loomk.bus.receipts.Receipt`). A kernel killed before that gets the message again
when it comes back (after ``ack_wait``).

Before acknowledging, the link records the sequences it has settled in the kernel's own
store, in the same write as the agent commit that settled them; a message it recorded comes
back only as a redelivery of an acknowledgement that was lost, and is acknowledged again,
not published twice. Acknowledgements are explicit, one per message: after a restart the
server delivers what it never sent before it sends again what was not acknowledged, so an
acknowledgement of "everything up to here" would take unsettled messages with it. Publishers
set ``Nats-Msg-Id`` to the event id, so a batch sent again after a lost acknowledgement is
stored once (JetStream's duplicate window, two minutes).
"""

from __future__ import annotations

import bisect
import hashlib
import json
import re
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from loomk.bus.receipts import Receipt
from loomk.state.store import Store
from loomk.telemetry.logging import get_logger

__all__ = ["DurableStream", "delivery", "stream_name"]

_log = get_logger("loomk.cluster")

MAX_ACK_PENDING = 8192
"""Messages a consumer has in flight, unacknowledged, at most (JetStream holds back more)."""
INACTIVE_THRESHOLD_S = 86_400.0
"""A consumer whose kernel stays away longer is removed by the server (its interest ends)."""
DUPLICATE_WINDOW_S = 120.0


def delivery(reply: str) -> tuple[str, int, int]:
    """The stream, stream sequence and delivery count a JetStream delivery's reply subject
    names (``$JS.ACK.<stream>.<consumer>.<delivered>.<stream seq>...``, or the longer form
    with a domain and an account hash); ``ValueError`` when it is not one."""
    tokens = reply.split(".")
    if len(tokens) == 9 and tokens[0] == "$JS" and tokens[1] == "ACK":
        return tokens[2], int(tokens[5]), int(tokens[4])
    if len(tokens) >= 12 and tokens[0] == "$JS" and tokens[1] == "ACK":
        return tokens[4], int(tokens[7]), int(tokens[6])
    raise ValueError(f"not a JetStream delivery (reply subject {reply!r})")


def stream_name(prefix: str, pattern: str) -> str:
    """The stream of one shared pattern: readable, and unique per pattern."""
    readable = re.sub(r"[^A-Za-z0-9_-]", "_", pattern.replace("*", "ANY").replace(">", "ALL"))
    digest = hashlib.sha1(pattern.encode()).hexdigest()[:8]
    return f"{prefix.upper()}_{readable[:40]}_{digest}"


MAX_RANGES = 256
"""Settled ranges of sequences kept at most (gaps between them are messages not yet
delivered here; they close as delivery catches up)."""


class SettledSequences:
    """A set of stream sequences as sorted, disjoint, inclusive ranges."""

    __slots__ = ("ranges",)

    def __init__(self, ranges: list[list[int]] | None = None) -> None:
        self.ranges: list[list[int]] = ranges or []

    def __contains__(self, sequence: int) -> bool:
        ranges = self.ranges
        index = bisect.bisect_right(ranges, [sequence, _BIG]) - 1
        return index >= 0 and ranges[index][0] <= sequence <= ranges[index][1]

    def add(self, sequence: int) -> None:
        ranges = self.ranges
        index = bisect.bisect_right(ranges, [sequence, _BIG])
        if index and ranges[index - 1][1] >= sequence - 1:  # joins the range before
            before = ranges[index - 1]
            before[1] = max(before[1], sequence)
            if index < len(ranges) and ranges[index][0] <= before[1] + 1:
                before[1] = max(before[1], ranges.pop(index)[1])
        elif index < len(ranges) and ranges[index][0] == sequence + 1:
            ranges[index][0] = sequence
        else:
            ranges.insert(index, [sequence, sequence])
        if len(ranges) > MAX_RANGES:  # the oldest go: their messages are long acknowledged
            del ranges[: len(ranges) - MAX_RANGES]


_BIG = 1 << 62


@dataclass
class _Pending:
    sequence: int
    msg: Any
    receipt: Receipt | None


@dataclass
class DurableStream:
    """One shared pattern's stream, as this kernel consumes it.

    Sequences are *settled* once every local consumer has handled their event; the set of
    settled sequences is recorded in the kernel's store (in the same batch as the commit
    that settled them) before they are acknowledged one by one. A message comes back only if
    its acknowledgement was lost, or it was not settled when the kernel stopped; the first is
    acknowledged again without being published, the second is published (it was never
    handled). A redelivery of a message still pending here (its acknowledgement wait ran
    out) is left to the acknowledgement that comes with it.
    """

    pattern: str
    subject: str
    name: str
    mark_key: bytes
    created: str = ""
    settled: SettledSequences = field(default_factory=SettledSequences)
    taken: set[int] = field(default_factory=set)  # in this process, not settled yet
    pending: deque[_Pending] = field(default_factory=deque)
    redelivered: int = 0
    subscription: Any = None

    def load_mark(self, store: Store, created: str) -> None:
        """Read what this kernel settled before (in an earlier run), if the stream is the
        same one (a stream made again starts its sequences over)."""
        if created != self.created:  # another stream (or the first look at it)
            self.settled = SettledSequences()
            self.taken.clear()
        self.created = created
        raw = store.get(self.mark_key)
        if raw is None:
            return
        try:
            saved = json.loads(raw)
            if saved.get("created") == created:
                ranges = [[int(a), int(b)] for a, b in saved["settled"]]
                if all(a <= b for a, b in ranges) and ranges == sorted(ranges):
                    self.settled = SettledSequences(ranges)
                    return
            raise ValueError("another stream's, or not in order")
        except (ValueError, KeyError, TypeError) as error:
            _log.warning(
                "cluster stream record not used: starting over", stream=self.name, reason=str(error)
            )

    def mark_value(self) -> bytes:
        """What :meth:`load_mark` reads back."""
        return json.dumps({"created": self.created, "settled": self.settled.ranges}).encode()

    def admit(self, sequence: int, redelivered: bool) -> str:
        """What to do with the message of ``sequence``: ``new`` (publish it), ``again`` (a
        redelivery of one settled: acknowledge it again), ``held`` (a redelivery of one
        still pending here: it is acknowledged once it settles)."""
        if redelivered:
            self.redelivered += 1
        if sequence in self.settled:
            return "again"
        if sequence in self.taken:
            return "held"
        self.taken.add(sequence)
        return "new"

    def hold(self, sequence: int, msg: Any, receipt: Receipt | None) -> None:
        """A message taken in, to acknowledge once ``receipt`` settles (None: at once)."""
        self.pending.append(_Pending(sequence, msg, receipt))

    def ready(self) -> list[Any]:
        """The messages of the settled run at the front of ``pending``, taken out of it
        and counted settled (none when the front is not settled)."""
        pending, settled, taken, run = self.pending, self.settled, self.taken, []
        while pending:
            head = pending[0]
            if head.receipt is not None and not head.receipt.settled:
                break
            pending.popleft()
            settled.add(head.sequence)
            taken.discard(head.sequence)
            run.append(head.msg)
        return run
