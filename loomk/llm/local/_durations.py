"""Spans of time written in words, read into seconds, for timers and reminders.

People say durations many ways ("5 minutes", "an hour and a half", "half an hour",
"three quarters of an hour", "1h30"); all of them come out as one number of seconds.
"""

from __future__ import annotations

from fractions import Fraction

from loomk.llm.local._numbers import Items

__all__ = ["duration", "duration_term"]

_UNIT_SECONDS = {
    **dict.fromkeys(("second", "seconds", "sec", "secs", "s"), 1),
    **dict.fromkeys(("minute", "minutes", "min", "mins", "m"), 60),
    **dict.fromkeys(("hour", "hours", "hr", "hrs", "h"), 3600),
    **dict.fromkeys(("day", "days"), 86400),
}
_HALF = Fraction(1, 2)


def duration_term(items: Items, i: int) -> tuple[Fraction, int, int] | None:
    """One "5 minutes", "an hour and a half", "half an hour", "three quarters of an hour"
    at ``items[i]``: (seconds, index after it, seconds of its unit)."""

    def at(k: int) -> str | Fraction | None:
        return items[k] if k < len(items) else None

    word = at(i)
    j = i + 1
    if isinstance(word, Fraction):
        amount = word
    elif word in ("a", "an"):
        amount = Fraction(1)
    elif word in ("half", "quarter", "couple"):
        amount = {"half": _HALF, "quarter": Fraction(1, 4), "couple": Fraction(2)}[str(word)]
        j += at(j) == "of"
        j += at(j) in ("a", "an")
    else:
        return None
    if at(j) == "quarters":
        amount /= 4
        j += 1
        j += at(j) == "of"
        j += at(j) in ("a", "an")
    if [at(j), at(j + 1), at(j + 2)] == ["and", "a", "half"]:
        amount += _HALF
        j += 3
    unit = at(j)
    if not isinstance(unit, str) or unit not in _UNIT_SECONDS:
        return None
    j += 1
    if [at(j), at(j + 1), at(j + 2)] == ["and", "a", "half"]:
        amount += _HALF
        j += 3
    return amount * _UNIT_SECONDS[unit], j, _UNIT_SECONDS[unit]


def duration(items: Items) -> Fraction | None:
    """The seconds written in ``items``, parts added up ("1 hour 30 minutes", "1h30")."""
    total = Fraction(0)
    found = False
    i = 0
    while i < len(items):
        term = duration_term(items, i)
        if term is None:
            i += 1
            continue
        seconds, i, unit = term
        total += seconds
        found = True
        following = items[i] if i < len(items) else None
        after = items[i + 1] if i + 1 < len(items) else None
        if isinstance(following, Fraction) and unit in (60, 3600) and after not in _UNIT_SECONDS:
            total += following * unit / 60  # "1 hour 30": the minutes
            i += 1
    return total if found else None
