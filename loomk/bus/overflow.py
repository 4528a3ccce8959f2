"""Overflow policies: what a subscription's queue does when events arrive faster than it drains.

A policy is a small immutable description; the bus turns it into a queue (a lane).

=================  =========================================================================
``block``          lossless: the publisher waits until there is room (batched, background)
``drop_oldest``    the oldest queued event makes room for the new one (realtime default)
``drop_newest``    the new event is discarded when the queue is full
``sample(n)``      while the queue is at or above its high-water mark, keep every n-th event
``latest(key)``    keep only the newest queued event per key (conflation)
``aggregate(fn)``  at the high-water mark, coalesce the new event into the newest queued one
=================  =========================================================================

Every event a policy discards is counted under a reason (``full``, ``evicted``, ``sampled``,
``replaced``, ``aggregated``, ...), so nothing is lost without a trace.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable
from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar, Literal, TypeAlias, get_args

from loomk.errors import OverflowPolicyError

if TYPE_CHECKING:
    from loomk.events import Event

__all__ = ["KeyFunction", "MergeFunction", "Overflow", "OverflowLike", "parse_overflow"]

KeyFunction: TypeAlias = "Callable[[str, Event], Hashable]"
"""Computes the conflation key of an event from its topic and the event."""

MergeFunction: TypeAlias = "Callable[[Event, Event], Event]"
"""Coalesces a queued event (first) with a newer one (second) into one event."""

_Kind = Literal["block", "drop_oldest", "drop_newest", "sample", "latest", "aggregate"]
_KINDS: tuple[_Kind, ...] = get_args(_Kind)


def _check_high_water(high_water: object) -> None:
    if high_water is not None and (type(high_water) is not int or high_water < 1):
        raise OverflowPolicyError(f"high_water must be an int >= 1, got {high_water!r}")


@dataclass(frozen=True, slots=True)
class Overflow:
    """An overflow policy. Use the constants and constructors rather than the fields."""

    kind: _Kind
    every: int = 1
    high_water: int | None = None
    key: KeyFunction | str | None = None
    merge: MergeFunction | None = None

    BLOCK: ClassVar[Overflow]
    DROP_OLDEST: ClassVar[Overflow]
    DROP_NEWEST: ClassVar[Overflow]

    def __post_init__(self) -> None:
        """Refuse a policy built by hand that no lane could apply (it would fail later,
        inside a publish): the constructors below check the same."""
        if self.kind not in _KINDS:
            raise OverflowPolicyError(
                f"unknown overflow kind {self.kind!r}: use one of {', '.join(_KINDS)}"
            )
        if self.every.__class__ is not int or self.every < 1:
            raise OverflowPolicyError(f"sample(every) needs an int >= 1, got {self.every!r}")
        _check_high_water(self.high_water)
        key = self.key
        if key is not None and not isinstance(key, str) and not callable(key):
            raise OverflowPolicyError(
                f"latest(key) takes None, a metadata key name or a function, got {key!r}"
            )
        if self.kind == "aggregate" and not callable(self.merge):
            raise OverflowPolicyError(f"aggregate(merge) needs a function, got {self.merge!r}")

    @property
    def lossless(self) -> bool:
        """Whether the policy never discards an event (only ``block``)."""
        return self.kind == "block"

    @staticmethod
    def sample(every: int, *, high_water: int | None = None) -> Overflow:
        """Keep every ``every``-th event while the queue is at or above ``high_water``.

        ``high_water`` defaults to three quarters of the capacity. Below it, nothing is
        dropped; at full capacity the newest event is dropped (reason ``full``).
        """
        return Overflow("sample", every=every, high_water=high_water)

    @staticmethod
    def latest(key: KeyFunction | str | None = None) -> Overflow:
        """Keep only the newest queued event per key; a newer one replaces it in place.

        ``key`` is ``None`` (one slot per topic), a metadata key name, or a function of
        ``(topic, event)``. When the queue is full of distinct keys the oldest is evicted. If
        the key function raises, the event is dropped (reason ``key_error``).
        """
        return Overflow("latest", key=key)

    @staticmethod
    def aggregate(merge: MergeFunction, *, high_water: int | None = None) -> Overflow:
        """At ``high_water`` (default: capacity), fold each new event into the newest queued.

        ``merge(queued, new)`` returns the combined event. If it raises or returns something
        that is not an Event, the new event is dropped (reason ``aggregate_error``).
        """
        return Overflow("aggregate", merge=merge, high_water=high_water)

    def __str__(self) -> str:
        if self.kind == "sample":
            return f"sample({self.every})"
        if self.kind in ("latest", "aggregate"):
            return f"{self.kind}(...)"
        return self.kind


Overflow.BLOCK = Overflow("block")
Overflow.DROP_OLDEST = Overflow("drop_oldest")
Overflow.DROP_NEWEST = Overflow("drop_newest")

OverflowLike: TypeAlias = "Overflow | Literal['block', 'drop_oldest', 'drop_newest']"

_BY_NAME = {"block": Overflow.BLOCK, "drop_oldest": Overflow.DROP_OLDEST}
_BY_NAME["drop_newest"] = Overflow.DROP_NEWEST


def parse_overflow(value: object) -> Overflow:
    """Accept an :class:`Overflow` or the name of a parameterless policy."""
    if isinstance(value, Overflow):
        return value
    if isinstance(value, str) and value in _BY_NAME:
        return _BY_NAME[value]
    raise OverflowPolicyError(
        f"unknown overflow policy {value!r}: use 'block', 'drop_oldest', 'drop_newest', "
        "Overflow.sample(n), Overflow.latest(key) or Overflow.aggregate(fn)"
    )
