"""Numbers written in words or numerals, read into exact values and written back as text.

Intents need quantities from speech-like text ("twenty-five", "two thousand and twenty
four", "three point one four", "a hundred"). Number words are read by text2num (imported on
first use); values are :class:`~fractions.Fraction` so "0.1" stays exactly a tenth all the
way into a math expression.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from fractions import Fraction

from loomk.llm.local._text import word_set

__all__ = ["Items", "as_phrase", "number_text", "read_numbers"]

Items = list[str | Fraction]  # tokens, with numbers read into values

_NUMERAL = re.compile(r"[0-9]+(?:\.[0-9]+)?")
_DIGIT_WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
_SCALES = word_set("hundred thousand million billion trillion")
_CARDINALS = _SCALES | word_set(
    "zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen "
    "fifteen sixteen seventeen eighteen nineteen twenty thirty forty fifty sixty seventy "
    "eighty ninety"
)


def read_numbers(tokens: Sequence[str]) -> Items:
    """``tokens`` with every written number replaced by its value: numerals ("3.5"), words
    read by text2num ("two thousand and twenty four", "three point one four"), "a hundred",
    and a numeral with a spoken decimal part ("3 point 14")."""
    items: Items = []
    i = 0
    while i < len(tokens):
        end = _words_end(tokens, i)
        if end > i:
            items.extend(_spelled(tokens[i:end]))
            i = end
        elif _NUMERAL.fullmatch(tokens[i]):
            value, i = _numeral(tokens, i)
            items.append(value)
        else:
            items.append(tokens[i])
            i += 1
    return items


def _words_end(tokens: Sequence[str], i: int) -> int:
    """Where the number written in words from ``tokens[i]`` ends (``i`` if none starts
    there): cardinals, with "and" and "point" between them, after an optional "a"/"an"
    before a scale ("a hundred")."""
    n = len(tokens)
    j = i + 1 if tokens[i] in ("a", "an") and i + 1 < n and tokens[i + 1] in _SCALES else i
    if j >= n or tokens[j] not in _CARDINALS:
        return i
    j += 1
    while j < n and (
        tokens[j] in _CARDINALS
        or (tokens[j] in ("and", "point") and j + 1 < n and tokens[j + 1] in _CARDINALS)
    ):
        j += 1
    return j


def _spelled(words: Sequence[str]) -> Items:
    """A run of number words as text2num reads it ("twenty five" gives 25, "four five"
    gives 4 and 5, "one and" gives 1 and "and")."""
    from text_to_num import alpha2digit

    text = " ".join(["one", *words[1:]] if words[0] in ("a", "an") else words)
    try:
        read: str = alpha2digit(text, "en", threshold=0)
    except Exception:  # the reader is native code: on any failure the words stay words
        read = text
    return [Fraction(part) if _NUMERAL.fullmatch(part) else part for part in read.split()]


def _numeral(tokens: Sequence[str], i: int) -> tuple[Fraction, int]:
    """The numeral at ``tokens[i]``, with a spoken decimal part ("3 point 14", "3 point one
    four"), and the index after it."""
    value = Fraction(tokens[i])
    if tokens[i + 1 : i + 2] != ["point"] or value.denominator != 1:
        return value, i + 1
    k = i + 2
    while k < len(tokens) and tokens[k] in _DIGIT_WORDS:
        k += 1
    digits = "".join(str(_DIGIT_WORDS.index(w)) for w in tokens[i + 2 : k])
    if not digits and k < len(tokens) and tokens[k].isdigit():
        digits, k = tokens[k], k + 1
    if not digits:
        return value, i + 1
    return value + Fraction(int(digits), 10 ** len(digits)), k


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
