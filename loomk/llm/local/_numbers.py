"""Numbers written in words or numerals, read into exact values and written back as text.

Intents need quantities from speech-like text ("twenty-five", "two thousand and twenty
four", "three point one four", "a hundred"). Values are :class:`~fractions.Fraction` so
"0.1" stays exactly a tenth all the way into a math expression.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from fractions import Fraction

__all__ = ["Items", "as_phrase", "number_text", "read_numbers"]

Items = list[str | Fraction]  # tokens, with numbers read into values

_NUMERAL = re.compile(r"[0-9]+(?:\.[0-9]+)?")
_SMALL_WORDS = (
    "zero one two three four five six seven eight nine ten eleven twelve thirteen "
    "fourteen fifteen sixteen seventeen eighteen nineteen"
)
_TENS_WORDS = "twenty thirty forty fifty sixty seventy eighty ninety"
_SMALL = {w: n for n, w in enumerate(_SMALL_WORDS.split())}
_TENS = {w: 10 * n for n, w in enumerate(_TENS_WORDS.split(), 2)}
_SCALES = {"thousand": 10**3, "million": 10**6, "billion": 10**9, "trillion": 10**12}
_DIGIT_WORDS = {w: n for w, n in _SMALL.items() if n < 10}


def read_numbers(tokens: Sequence[str]) -> Items:
    """``tokens`` with every written number replaced by its value."""
    items: Items = []
    i = 0
    while i < len(tokens):
        read = _read_number(tokens, i)
        if read is None:
            items.append(tokens[i])
            i += 1
        else:
            items.append(read[0])
            i = read[1]
    return items


def number_text(value: Fraction) -> str:
    """``value`` as a decimal numeral ("2", "0.25", "-3.5")."""
    if value.denominator == 1:
        return str(value.numerator)
    denominator, places = value.denominator, 0
    while denominator % 10 == 0 or denominator % 2 == 0 or denominator % 5 == 0:
        denominator //= 10 if denominator % 10 == 0 else 2 if denominator % 2 == 0 else 5
        places += 1
    if denominator != 1:
        return f"({value.numerator} / {value.denominator})"
    scaled = abs(value.numerator) * 10**places // value.denominator
    digits = str(scaled).rjust(places + 1, "0")
    sign = "-" if value < 0 else ""
    return f"{sign}{digits[:-places]}.{digits[-places:]}"


def as_phrase(items: Sequence[str | Fraction]) -> str:
    """Tokens back into a phrase: "(4 + 5) * 2", "15% of 200", "root of -4"."""
    parts: list[str] = []
    for item in items:
        text = number_text(item) if isinstance(item, Fraction) else item
        unary = parts[-1:] == ["-"] and (len(parts) == 1 or not parts[-2][-1:].isdigit())
        if unary and parts[-2:-1] != [")"]:
            parts[-1] = f"-{text}"
        else:
            parts.append(text)
    return " ".join(parts).replace("( ", "(").replace(" )", ")").replace(" %", "%")


def _read_number(words: Sequence[str], i: int) -> tuple[Fraction, int] | None:
    """The number written from ``words[i]`` on ("3.5", "two thousand and twenty four",
    "three point one four", "a hundred") and the index after it; None if there is none."""
    total = current = Fraction(0)
    state = ""  # what was read last: "", digits, small, tens, hundred, scale, decimal
    j, n = i, len(words)
    while j < n:
        word = words[j]
        following = words[j + 1] if j + 1 < n else ""
        if state == "" and _NUMERAL.fullmatch(word):
            current, state = Fraction(word), "digits"
        elif (
            state == "" and word in ("a", "an") and (following == "hundred" or following in _SCALES)
        ):
            current, state = Fraction(1), "small"
        elif word in _SMALL and (
            state in ("", "hundred", "scale") or (state == "tens" and 0 < _SMALL[word] < 10)
        ):
            current, state = current + _SMALL[word], "small"
        elif word in _TENS and state in ("", "hundred", "scale"):
            current, state = current + _TENS[word], "tens"
        elif word == "hundred" and state in ("small", "tens", "digits") and 0 < current < 100:
            current, state = current * 100, "hundred"
        elif word in _SCALES and state in ("small", "tens", "digits", "hundred", "decimal"):
            total, current, state = total + current * _SCALES[word], Fraction(0), "scale"
        elif (
            word == "and"
            and state in ("hundred", "scale")
            and (following in _SMALL or following in _TENS)
        ):
            pass  # "one hundred and five"
        elif word == "point" and state in ("small", "tens", "digits") and current.denominator == 1:
            k = j + 1
            while k < n and words[k] in _DIGIT_WORDS:
                k += 1
            digits = "".join(str(_DIGIT_WORDS[w]) for w in words[j + 1 : k])
            if not digits and following.isdigit():
                digits, k = following, k + 1
            if not digits:
                break
            current, state, j = current + Fraction(int(digits), 10 ** len(digits)), "decimal", k
            continue
        else:
            break
        j += 1
    if state == "":
        return None
    return total + current, j
