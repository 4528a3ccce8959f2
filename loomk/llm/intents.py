"""Intents: what a short command or question asks for, understood without a network or a model.

:func:`understand` reads one utterance ("what time is it in Tokyo", "set a timer for five
minutes", "what is 15% of 200") and names its :class:`Intent` with the details it needs
(slots) and a confidence the router can compare with its quality threshold:

* ``time`` (slots ``timezone``, ``place``), ``date`` (``day_offset``, ``timezone``, ``place``),
* ``math`` (``expression`` for :func:`loomk.actions.providers.math_eval.evaluate`, ``phrase``),
* ``weather`` (``city``, ``day``, ``units``), ``lights`` (``state`` on/off, ``room``),
* ``timer`` (``seconds``, ``label``), ``greeting`` (``kind``), ``help``, and ``unknown``.

Confidence bands: :data:`HIGH` for a clear request with every slot it needs, :data:`PARTIAL`
(or another value from 0.5 to 0.8) when something is missing (weather without a city, a
timer without a duration), :data:`UNKNOWN` below 0.3 otherwise (0.0 for blank text).

It is rules, not statistics: case, punctuation, accents and filler ("please", "hey loom",
"can you") are ignored, number words are read ("twenty-five", "an hour and a half"), and the
same text always gives the same intent. Only the first :data:`MAX_CHARS` characters are read.
"""

from __future__ import annotations

import re
import unicodedata
import zoneinfo
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from fractions import Fraction

__all__ = [
    "HIGH",
    "INTENTS",
    "MAX_CHARS",
    "PARTIAL",
    "UNKNOWN",
    "Intent",
    "SlotValue",
    "understand",
]

SlotValue = str | float | int

HIGH = 0.95
PARTIAL = 0.6
UNKNOWN = 0.1
MAX_CHARS = 1000
INTENTS = (
    "time",
    "date",
    "math",
    "weather",
    "lights",
    "timer",
    "greeting",
    "help",
    "unknown",
)


@dataclass(frozen=True, slots=True)
class Intent:
    """What an utterance asks for: ``name`` (one of :data:`INTENTS`), ``confidence`` from 0
    to 1, the details it names (``slots``) and the ``text`` it was read from."""

    name: str
    confidence: float
    slots: dict[str, SlotValue] = field(default_factory=dict)
    text: str = ""


Items = list[str | Fraction]  # tokens, with numbers read into values


def _split(text: str) -> list[str]:
    return text.split()


def _words(text: str) -> frozenset[str]:
    return frozenset(text.split())


# ---- normalising ------------------------------------------------------------------------

_CHARS = str.maketrans(
    {
        "\u2019": "'",  # right single quotation mark
        "\u2018": "'",
        "`": "'",
        "\u00b4": "'",  # acute accent
        "\u00d7": "*",  # multiplication sign
        "\u00f7": "/",  # division sign
        "\u2212": "-",  # minus sign
        "\u2013": "-",  # en dash
        "\u2044": "/",  # fraction slash
    }
)
_CONTRACTIONS: list[tuple[re.Pattern[str], str]] = [
    (re.compile(p), r)
    for p, r in (
        (r"\b(what|that|it|how|where|who|there|here|when|why)'s\b", r"\1 is"),
        (r"\bwhats\b", "what is"),
        (r"\blet's\b", "let us"),
        (r"\bi'm\b", "i am"),
        (r"\bwon't\b", "will not"),
        (r"\bcan't\b", "can not"),
        (r"n't\b", " not"),
        (r"'re\b", " are"),
        (r"'ll\b", " will"),
        (r"'d\b", " would"),
        (r"'ve\b", " have"),
        (r"'s\b", ""),  # possessive: tomorrow's date
    )
]
_THOUSANDS = re.compile(r"(?<=[0-9]),(?=[0-9]{3}(?![0-9]))")
_WORD_HYPHEN = re.compile(r"(?<=[^\W\d_])-(?=[^\W\d_])")
_TOKEN = re.compile(r"[0-9]+(?:\.[0-9]+)?|\*\*|[-+*/^()%=]|[^\W\d_]+")
_NUMERAL = re.compile(r"[0-9]+(?:\.[0-9]+)?")
_IANA = re.compile(r"(?<![\w/])[A-Za-z][A-Za-z_+\-]*(?:/[A-Za-z0-9_+\-]+)+")


def _tokens(text: str) -> list[str]:
    """Lower-case words, numerals and arithmetic symbols of ``text``, accents removed."""
    text = unicodedata.normalize("NFKD", text.casefold())
    text = "".join(c for c in text if not unicodedata.combining(c)).translate(_CHARS)
    text = _THOUSANDS.sub("", text)
    for pattern, replacement in _CONTRACTIONS:
        text = pattern.sub(replacement, text)
    return _TOKEN.findall(_WORD_HYPHEN.sub(" ", text))


def _remove(tokens: Sequence[str], phrases: Sequence[tuple[str, ...]]) -> list[str]:
    """``tokens`` without any of ``phrases`` (longest first, wherever they occur)."""
    ordered = sorted(phrases, key=len, reverse=True)
    kept: list[str] = []
    i = 0
    while i < len(tokens):
        for phrase in ordered:
            if tuple(tokens[i : i + len(phrase)]) == phrase:
                i += len(phrase)
                break
        else:
            kept.append(tokens[i])
            i += 1
    return kept


def _has(text: str, *phrases: str) -> bool:
    """Whether the space-joined ``text`` contains one of ``phrases`` as whole words."""
    padded = f" {text} "
    return any(f" {phrase} " in padded for phrase in phrases)


def _join(items: Sequence[str | Fraction]) -> str:
    """Tokens back into a phrase: "(4 + 5) * 2", "15% of 200", "root of -4"."""
    parts: list[str] = []
    for item in items:
        text = _number_text(item) if isinstance(item, Fraction) else item
        unary = parts[-1:] == ["-"] and (len(parts) == 1 or not parts[-2][-1:].isdigit())
        if unary and parts[-2:-1] != [")"]:
            parts[-1] = f"-{text}"
        else:
            parts.append(text)
    return " ".join(parts).replace("( ", "(").replace(" )", ")").replace(" %", "%")


_FILLER: list[tuple[str, ...]] = [
    tuple(p.split())
    for p in (
        "please",
        "pls",
        "kindly",
        "hey loom",
        "hi loom",
        "ok loom",
        "okay loom",
        "hello loom",
        "loom",
        "hey",
        "ok",
        "okay",
        "um",
        "uh",
        "can you",
        "could you",
        "would you",
        "will you",
        "can i",
        "could i",
        "do you know",
        "tell me",
        "let me know",
        "i want to know",
        "i would like to know",
        "i wonder",
        "just",
        "quickly",
        "thanks",
        "thank you",
        "for me",
    )
]

# ---- numbers ----------------------------------------------------------------------------

_SMALL = {
    w: n
    for n, w in enumerate(
        _split(
            "zero one two three four five six seven eight nine ten eleven twelve thirteen "
            "fourteen fifteen sixteen seventeen eighteen nineteen"
        )
    )
}
_TENS = {
    w: 10 * n
    for n, w in enumerate(_split("twenty thirty forty fifty sixty seventy eighty ninety"), 2)
}
_SCALES = {"thousand": 10**3, "million": 10**6, "billion": 10**9, "trillion": 10**12}
_DIGIT_WORDS = {w: n for w, n in _SMALL.items() if n < 10}


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


def _numbers(tokens: Sequence[str]) -> Items:
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


def _number_text(value: Fraction) -> str:
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


# ---- places and time zones --------------------------------------------------------------

_CITIES: dict[str, tuple[str, str]] = {
    key: (key.title() if display == "" else display, zone)
    for key, display, zone in (
        ("tokyo", "", "Asia/Tokyo"),
        ("osaka", "", "Asia/Tokyo"),
        ("japan", "", "Asia/Tokyo"),
        ("seoul", "", "Asia/Seoul"),
        ("korea", "", "Asia/Seoul"),
        ("beijing", "", "Asia/Shanghai"),
        ("shanghai", "", "Asia/Shanghai"),
        ("china", "", "Asia/Shanghai"),
        ("hong kong", "", "Asia/Hong_Kong"),
        ("taipei", "", "Asia/Taipei"),
        ("singapore", "", "Asia/Singapore"),
        ("bangkok", "", "Asia/Bangkok"),
        ("jakarta", "", "Asia/Jakarta"),
        ("manila", "", "Asia/Manila"),
        ("kuala lumpur", "", "Asia/Kuala_Lumpur"),
        ("mumbai", "", "Asia/Kolkata"),
        ("delhi", "", "Asia/Kolkata"),
        ("new delhi", "", "Asia/Kolkata"),
        ("bangalore", "", "Asia/Kolkata"),
        ("kolkata", "", "Asia/Kolkata"),
        ("india", "", "Asia/Kolkata"),
        ("karachi", "", "Asia/Karachi"),
        ("dhaka", "", "Asia/Dhaka"),
        ("dubai", "", "Asia/Dubai"),
        ("tehran", "", "Asia/Tehran"),
        ("istanbul", "", "Europe/Istanbul"),
        ("moscow", "", "Europe/Moscow"),
        ("kyiv", "", "Europe/Kyiv"),
        ("athens", "", "Europe/Athens"),
        ("helsinki", "", "Europe/Helsinki"),
        ("cairo", "", "Africa/Cairo"),
        ("johannesburg", "", "Africa/Johannesburg"),
        ("cape town", "", "Africa/Johannesburg"),
        ("nairobi", "", "Africa/Nairobi"),
        ("lagos", "", "Africa/Lagos"),
        ("london", "", "Europe/London"),
        ("manchester", "", "Europe/London"),
        ("edinburgh", "", "Europe/London"),
        ("uk", "the UK", "Europe/London"),
        ("england", "", "Europe/London"),
        ("dublin", "", "Europe/Dublin"),
        ("lisbon", "", "Europe/Lisbon"),
        ("madrid", "", "Europe/Madrid"),
        ("barcelona", "", "Europe/Madrid"),
        ("spain", "", "Europe/Madrid"),
        ("paris", "", "Europe/Paris"),
        ("france", "", "Europe/Paris"),
        ("brussels", "", "Europe/Brussels"),
        ("amsterdam", "", "Europe/Amsterdam"),
        ("berlin", "", "Europe/Berlin"),
        ("munich", "", "Europe/Berlin"),
        ("germany", "", "Europe/Berlin"),
        ("zurich", "", "Europe/Zurich"),
        ("geneva", "", "Europe/Zurich"),
        ("vienna", "", "Europe/Vienna"),
        ("prague", "", "Europe/Prague"),
        ("warsaw", "", "Europe/Warsaw"),
        ("budapest", "", "Europe/Budapest"),
        ("rome", "", "Europe/Rome"),
        ("milan", "", "Europe/Rome"),
        ("italy", "", "Europe/Rome"),
        ("stockholm", "", "Europe/Stockholm"),
        ("oslo", "", "Europe/Oslo"),
        ("copenhagen", "", "Europe/Copenhagen"),
        ("reykjavik", "", "Atlantic/Reykjavik"),
        ("new york", "", "America/New_York"),
        ("new york city", "New York City", "America/New_York"),
        ("nyc", "New York City", "America/New_York"),
        ("boston", "", "America/New_York"),
        ("washington", "", "America/New_York"),
        ("miami", "", "America/New_York"),
        ("atlanta", "", "America/New_York"),
        ("toronto", "", "America/Toronto"),
        ("montreal", "", "America/Toronto"),
        ("chicago", "", "America/Chicago"),
        ("houston", "", "America/Chicago"),
        ("dallas", "", "America/Chicago"),
        ("mexico city", "", "America/Mexico_City"),
        ("denver", "", "America/Denver"),
        ("phoenix", "", "America/Phoenix"),
        ("los angeles", "", "America/Los_Angeles"),
        ("san francisco", "", "America/Los_Angeles"),
        ("seattle", "", "America/Los_Angeles"),
        ("las vegas", "", "America/Los_Angeles"),
        ("vancouver", "", "America/Vancouver"),
        ("anchorage", "", "America/Anchorage"),
        ("honolulu", "", "Pacific/Honolulu"),
        ("sao paulo", "São Paulo", "America/Sao_Paulo"),
        ("rio de janeiro", "", "America/Sao_Paulo"),
        ("buenos aires", "", "America/Argentina/Buenos_Aires"),
        ("santiago", "", "America/Santiago"),
        ("lima", "", "America/Lima"),
        ("bogota", "Bogotá", "America/Bogota"),
        ("sydney", "", "Australia/Sydney"),
        ("melbourne", "", "Australia/Melbourne"),
        ("brisbane", "", "Australia/Brisbane"),
        ("perth", "", "Australia/Perth"),
        ("auckland", "", "Pacific/Auckland"),
        ("new zealand", "", "Pacific/Auckland"),
    )
}
_ZONE_WORDS: dict[str, tuple[str, str]] = {  # names of zones that are not places
    "utc": ("UTC", "UTC"),
    "gmt": ("GMT", "GMT"),
    "est": ("Eastern Time", "America/New_York"),
    "eastern": ("Eastern Time", "America/New_York"),
    "cst": ("Central Time", "America/Chicago"),
    "central": ("Central Time", "America/Chicago"),
    "mst": ("Mountain Time", "America/Denver"),
    "mountain": ("Mountain Time", "America/Denver"),
    "pst": ("Pacific Time", "America/Los_Angeles"),
    "pacific": ("Pacific Time", "America/Los_Angeles"),
    "cet": ("Central European Time", "Europe/Berlin"),
    "ist": ("India", "Asia/Kolkata"),
    "jst": ("Japan", "Asia/Tokyo"),
}
_NOT_PLACE = _words(
    "the a an it is what how will be like here there home my area town outside inside now "
    "today tonight tomorrow yesterday weather forecast time date day please this that you me us "
    "moment right currently later week weekend morning afternoon evening night "
    "fahrenheit celsius centigrade degrees metric imperial units"
)
_PLACE_END = _words(
    "now right currently today tonight tomorrow yesterday please like at this on and or "
    "for during outside moment later is will going to be"
)


def _lookup(words: Sequence[str], table: dict[str, tuple[str, str]]) -> tuple[str, str] | None:
    """The longest entry of ``table`` named by consecutive ``words``, first one first."""
    for size in (3, 2, 1):
        for i in range(len(words) - size + 1):
            found = table.get(" ".join(words[i : i + size]))
            if found is not None:
                return found
    return None


def _place_after(tokens: Sequence[str], prepositions: Sequence[str]) -> list[str]:
    """The place named after the last of ``prepositions`` that names one ("in New York
    right now" gives new york), or []."""
    for i in range(len(tokens) - 1, -1, -1):
        if tokens[i] not in prepositions:
            continue
        words: list[str] = []
        for word in tokens[i + 1 :]:
            if word in _PLACE_END:
                break
            words.append(word)
        while words and words[0] in ("the", "my"):
            words.pop(0)
        if _is_place(words):
            return words
    return []


def _is_place(words: Sequence[str]) -> bool:
    return (
        0 < len(words) <= 4
        and all(w.isalpha() for w in words)
        and not all(w in _NOT_PLACE for w in words)
        and words[-1] not in _NOT_PLACE
    )


def _title(words: Sequence[str]) -> str:
    """A place's words as a name: "new york" gives "New York"."""
    return " ".join(w[:1].upper() + w[1:] for w in words)


def _iana_zone(text: str) -> str | None:
    """An IANA zone name written in ``text`` ("Europe/Paris", "america/new_york")."""
    candidates: list[str] = _IANA.findall(text[:MAX_CHARS])
    for candidate in candidates[:5]:
        if len(candidate) > 64:
            continue
        fixed = "/".join(
            "_".join(w[:1].upper() + w[1:] for w in part.split("_")) if part.islower() else part
            for part in candidate.split("/")
        )
        for name in dict.fromkeys((candidate, fixed)):
            try:
                zoneinfo.ZoneInfo(name)
            except (ValueError, KeyError, OSError):
                continue
            return name
    return None


def _zone_slots(text: str, tokens: Sequence[str]) -> tuple[dict[str, SlotValue], bool]:
    """The ``timezone`` and ``place`` slots a time or date question names, and whether a
    place was named that has no zone known here."""
    zone = _iana_zone(text)
    if zone is not None:
        return {"timezone": zone, "place": zone}, False
    words = _place_after(tokens, ("in", "at", "for"))
    if words:
        known = _lookup(words, _CITIES) or _lookup(words, _ZONE_WORDS)
        if known is None:
            return {"place": _title(words)}, True
        return {"timezone": known[1], "place": known[0]}, False
    known = _lookup(tokens, _CITIES) or _lookup(tokens, _ZONE_WORDS)
    if known is not None:
        return {"timezone": known[1], "place": known[0]}, False
    return {}, False


# ---- the intents ------------------------------------------------------------------------

_Matcher = Callable[[str, list[str]], Intent | None]


def _time(text: str, tokens: list[str]) -> Intent | None:
    joined = " ".join(tokens)
    if "time" not in tokens and not _has(joined, "what hour", "which hour"):
        return None
    clear = tokens in (["time"], ["the", "time"]) or _has(
        joined,
        "what time",
        "the time",
        "time is it",
        "time in",
        "time at",
        "time now",
        "current time",
        "local time",
        "what hour",
        "which hour",
        "time right now",
    )
    slots, unknown_place = _zone_slots(text, tokens)
    if not clear:
        clear = "timezone" in slots and len(tokens) <= 4  # "tokyo time"
    confidence = 0.7 if unknown_place else HIGH if clear else PARTIAL
    return Intent("time", confidence, slots, text)


def _day_offset(tokens: list[str], joined: str) -> int:
    if _has(joined, "day after tomorrow"):
        return 2
    if _has(joined, "day before yesterday"):
        return -2
    items = _numbers(tokens)
    for i, item in enumerate(items):
        if not isinstance(item, Fraction) or item.denominator != 1 or not 0 < item <= 3660:
            continue
        after = items[i + 1 : i + 4]
        if after[:1] in (["day"], ["days"]):
            if (i > 0 and items[i - 1] == "in") or after[1:3] == ["from", "now"]:
                return int(item)
            if after[1:2] == ["ago"]:
                return -int(item)
    if "tomorrow" in tokens:
        return 1
    if "yesterday" in tokens:
        return -1
    return 0


def _date(text: str, tokens: list[str]) -> Intent | None:
    joined = " ".join(tokens)
    if "date" not in tokens and not _has(
        joined,
        "what day",
        "which day",
        "day is it",
        "day of the week",
        "day today",
        "day is today",
        "day is tomorrow",
        "day was yesterday",
        "what is today",
        "what is tomorrow",
        "what month",
        "which month",
        "what year",
        "which year",
    ):
        return None
    slots, unknown_place = _zone_slots(text, tokens)
    slots["day_offset"] = _day_offset(tokens, joined)
    return Intent("date", 0.7 if unknown_place else HIGH, slots, text)


# math: trigger words stripped from the front, and phrases read as operators
_MATH_TRIGGERS: list[tuple[str, ...]] = [
    tuple(p.split())
    for p in (
        "what is",
        "what are",
        "how much is",
        "how much are",
        "calculate",
        "compute",
        "evaluate",
        "solve",
        "work out",
        "figure out",
        "what do you get if you",
        "what do you get when you",
        "what does",
        "do the math",
        "math",
    )
]
_STRONG_TRIGGERS = {"calculate", "compute", "evaluate", "solve", "work", "figure", "do", "math"}
_MATH_PHRASES: list[tuple[tuple[str, ...], tuple[str, ...]]] = [
    (tuple(words.split()), tuple(symbols.split()))
    for words, symbols in (
        ("multiplied by", "*"),
        ("times", "*"),
        ("x", "*"),
        ("divided by", "/"),
        ("over", "/"),
        ("plus", "+"),
        ("minus", "-"),
        ("negative", "-"),
        ("take away", "-"),
        ("to the power of", "**"),
        ("to the power", "**"),
        ("raised to the power of", "**"),
        ("raised to the", "**"),
        ("raised to", "**"),
        ("^", "**"),
        ("square root of", "sqrt"),
        ("square root", "sqrt"),
        ("sqrt of", "sqrt"),
        ("root of", "sqrt"),
        ("cube root of", "cbrt"),
        ("cube root", "cbrt"),
        ("percent of", "%of"),
        ("per cent of", "%of"),
        ("% of", "%of"),
        ("percent", "%"),
        ("per cent", "%"),
        ("modulo", "mod"),
        ("modulus", "mod"),
        ("the", ""),
        ("sum of", "sum"),
        ("product of", "product"),
        ("average of", "average"),
        ("mean of", "average"),
        ("half of", "half"),
        ("difference between", "difference"),
        ("difference of", "difference"),
    )
]
_FUNCTION_WORDS = {
    "sqrt",
    "cbrt",
    "sum",
    "product",
    "average",
    "difference",
    "half",
    "double",
    "twice",
    "add",
    "subtract",
    "multiply",
    "divide",
}
_OPERATORS = {"+", "-", "*", "/", "**", "%", "%of", "mod", "squared", "cubed"} | _FUNCTION_WORDS


class _NoParse(Exception):
    """The words are not an arithmetic expression."""


def _balanced_group(text: str) -> bool:
    """Whether ``text`` is one parenthesised group: "(...)" or "name(...)"."""
    start = text.find("(")
    if start < 0 or not text.endswith(")") or (not text[:start].isalpha() and start != 0):
        return False
    depth = 0
    for position, char in enumerate(text[start:], start):
        depth += char == "("
        depth -= char == ")"
        if depth == 0:
            return position == len(text) - 1
    return False


def _wrap(expression: str) -> str:
    """``expression`` in parentheses unless it is already a single operand."""
    if re.fullmatch(r"[0-9.]+|pi", expression) or _balanced_group(expression):
        return expression
    return f"({expression})"


class _MathParser:
    """Recursive descent over tokens whose numbers are read, with Python's precedence, into
    an expression :func:`evaluate` accepts; :class:`_NoParse` when the words are not one."""

    MAX_DEPTH = 40

    def __init__(self, items: Items) -> None:
        self.items = items
        self.position = 0
        self.depth = 0

    def parse(self) -> str:
        expression = self.expression()
        if self.position != len(self.items):
            raise _NoParse
        return expression

    def peek(self, ahead: int = 0) -> str | Fraction | None:
        index = self.position + ahead
        return self.items[index] if index < len(self.items) else None

    def take(self, *words: str) -> bool:
        if self.peek() in words:
            self.position += 1
            return True
        return False

    def starts_operand(self, item: str | Fraction | None) -> bool:
        return isinstance(item, Fraction) or item in ("(", "-", "pi") or item in _FUNCTION_WORDS

    def expression(self) -> str:
        self.depth += 1
        if self.depth > self.MAX_DEPTH:
            raise _NoParse
        left = self.term()
        while self.peek() in ("+", "-"):
            operator = str(self.peek())
            self.position += 1
            left = f"{left} {operator} {self.term()}"
        self.depth -= 1
        return left

    def term(self) -> str:
        left = self.unary()
        while True:
            item = self.peek()
            if item in ("*", "/", "mod") or (item == "%" and self.starts_operand(self.peek(1))):
                self.position += 1
                operator = "%" if item == "mod" else str(item)
                left = f"{left} {operator} {self.unary()}"
            else:
                return left

    def unary(self) -> str:
        if self.take("-"):
            self.depth += 1
            if self.depth > self.MAX_DEPTH:
                raise _NoParse
            operand = self.unary()
            self.depth -= 1
            return f"-{operand}"
        self.take("+")
        base = self.postfix()
        if self.take("**"):
            return f"{_wrap(base)} ** {self.unary()}"
        return base

    def postfix(self) -> str:
        value = self.primary()
        while True:
            if self.take("squared"):
                value = f"{_wrap(value)} ** 2"
            elif self.take("cubed"):
                value = f"{_wrap(value)} ** 3"
            elif self.take("%of"):
                value = f"({_wrap(value)} * {_wrap(self.unary())} / 100)"
            elif self.peek() == "%" and not self.starts_operand(self.peek(1)):
                self.position += 1
                value = f"({_wrap(value)} / 100)"
            else:
                return value

    def operands(self, minimum: int) -> list[str]:
        self.take("of", "between")
        found = [self.expression()]
        while self.take("and", "by", "with") or self.starts_operand(self.peek()):
            found.append(self.expression())  # "2, 4 and 9": commas are not tokens
        if len(found) < minimum:
            raise _NoParse
        return found

    def primary(self) -> str:
        item = self.peek()
        self.position += 1
        if isinstance(item, Fraction):
            return _number_text(item)
        if item == "(":
            inner = self.expression()
            if not self.take(")"):
                raise _NoParse
            return f"({inner})"
        if item == "pi":
            return "pi"
        if item == "sqrt":
            self.take("of")
            return f"sqrt({self.unary()})"
        if item == "cbrt":
            self.take("of")
            return f"({_wrap(self.unary())} ** (1 / 3))"
        if item in ("half", "double", "twice"):
            operand = _wrap(self.unary())
            return f"({operand} / 2)" if item == "half" else f"(2 * {operand})"
        if item in ("sum", "add"):
            if item == "add":
                first = self.expression()
                if not self.take("and", "to"):
                    raise _NoParse
                return f"({first} + {self.expression()})"
            return f"({' + '.join(self.operands(2))})"
        if item == "product":
            return f"({' * '.join(self.operands(2))})"
        if item == "average":
            values = self.operands(2)
            return f"(({' + '.join(values)}) / {len(values)})"
        if item == "difference":
            first, second = self.operands(2)[:2]
            return f"({first} - {second})"
        if item in ("subtract", "multiply", "divide"):
            first = self.expression()
            separators = {
                "subtract": ("from",),
                "multiply": ("by", "and", "with"),
                "divide": ("by",),
            }
            if not self.take(*separators[str(item)]):
                raise _NoParse
            second = self.expression()
            if item == "subtract":
                return f"({second} - {first})"
            return f"({first} {'*' if item == 'multiply' else '/'} {second})"
        raise _NoParse


def _math(text: str, tokens: list[str]) -> Intent | None:
    words = list(tokens)
    strong = False
    stripped = True
    while stripped and words:
        stripped = False
        for trigger in _MATH_TRIGGERS:
            if tuple(words[: len(trigger)]) == trigger:
                strong = strong or trigger[0] in _STRONG_TRIGGERS
                words = words[len(trigger) :]
                stripped = True
                break
    while words and words[-1] in ("equal", "equals", "=", "is", "make", "makes"):
        words.pop()
    if words[-2:] == ["equal", "to"]:
        words = words[:-2]
    items = _numbers(words)
    symbols: Items = []
    i = 0
    while i < len(items):
        for phrase, replacement in _MATH_PHRASES:
            if tuple(items[i : i + len(phrase)]) == phrase:
                symbols.extend(r for r in replacement if r)
                i += len(phrase)
                break
        else:
            symbols.append(items[i])
            i += 1
    has_number = any(isinstance(s, Fraction) for s in symbols)
    has_operator = any(s in _OPERATORS for s in symbols if isinstance(s, str))
    if has_number and has_operator:
        try:
            expression = _MathParser(symbols).parse()
        except (_NoParse, RecursionError):
            pass
        else:
            wording = _join(words)
            return Intent("math", HIGH, {"expression": expression, "phrase": wording}, text)
    if strong:
        return Intent("math", PARTIAL, {}, text)
    if has_number and has_operator:
        return Intent("math", 0.5, {}, text)
    return None


_WEATHER_STRONG = {"weather", "forecast", "temperature", "humidity", "umbrella", "degrees"}
_WEATHER_WEAK = _words(
    "rain raining rainy snow snowing snowy sunny sun cloudy windy foggy stormy storm hot cold "
    "warm chilly freezing humid"
)


def _weather(text: str, tokens: list[str]) -> Intent | None:
    words = set(tokens)
    if not words & _WEATHER_STRONG and not (words & _WEATHER_WEAK and words & {"it", "outside"}):
        return None
    slots: dict[str, SlotValue] = {}
    city = _city(tokens)
    if city is not None:
        slots["city"] = city
    if "tomorrow" in words:
        slots["day"] = "tomorrow"
    if words & {"fahrenheit", "celsius", "centigrade"}:
        slots["units"] = "fahrenheit" if "fahrenheit" in words else "celsius"
    return Intent("weather", HIGH if city is not None else 0.7, slots, text)


def _city(tokens: list[str]) -> str | None:
    """The place a weather question names: after "in"/"for"/"at", a known city anywhere, or
    the words after a leading "weather" ("weather springfield")."""
    place = _place_after(tokens, ("in", "for", "at", "near"))
    if not place and tokens and tokens[0] in _WEATHER_STRONG:
        rest = [w for w in tokens[1:] if w not in _PLACE_END]
        place = rest if _is_place(rest) and len(rest) <= 3 else []
    if place:
        known = _CITIES.get(" ".join(place))
        return known[0] if known is not None else _title(place)
    known = _lookup(tokens, _CITIES)
    return known[0] if known is not None else None


_LIGHT_WORDS = {"light", "lights", "lamp", "lamps", "lighting"}
_SWITCH_VERBS = {"turn", "switch", "put", "flip", "flick", "shut", "power"}
_ROOMS = _words(
    "kitchen bedroom bathroom toilet hallway hall corridor office study garage basement "
    "cellar attic garden porch patio balcony nursery den playroom lounge stairs landing "
    "pantry closet driveway yard backyard"
) | {
    "living room",
    "dining room",
    "family room",
    "guest room",
    "guest bedroom",
    "master bedroom",
    "kids room",
    "laundry room",
    "utility room",
    "front door",
    "back door",
    "front yard",
    "back yard",
}
_NOT_ROOM = (
    _LIGHT_WORDS
    | _SWITCH_VERBS
    | _words("the a an my all on off out every some these those this that it them up down")
    | _words("of in and")
)


def _light_state(tokens: list[str]) -> str | None:
    for i, word in enumerate(tokens[:-1]):
        if word in _SWITCH_VERBS and tokens[i + 1] in ("on", "off"):
            return tokens[i + 1]
    for i, word in enumerate(tokens[:-1]):
        if word in _LIGHT_WORDS and tokens[i + 1] in ("on", "off", "out"):
            return "off" if tokens[i + 1] == "out" else tokens[i + 1]
    if {"kill", "disable", "deactivate"} & set(tokens):
        return "off"
    if {"enable", "activate"} & set(tokens):
        return "on"
    states = [w for w in tokens if w in ("on", "off")]
    if states:
        return states[-1]
    return "off" if "shut" in tokens else None


def _room(tokens: list[str]) -> str | None:
    for size in (2, 1):
        for i in range(len(tokens) - size + 1):
            candidate = " ".join(tokens[i : i + size])
            if candidate in _ROOMS:
                return candidate
    for i, word in enumerate(tokens):
        if word in _LIGHT_WORDS and i > 0:
            before = tokens[i - 1]
            if before.isalpha() and before not in _NOT_ROOM:
                return before
    for i, word in enumerate(tokens):
        if word == "in":
            words = [w for w in tokens[i + 1 :] if w not in ("the", "my")]
            words = words[: next((k for k, w in enumerate(words) if w in _NOT_ROOM), len(words))]
            if 0 < len(words) <= 3 and all(w.isalpha() for w in words):
                return " ".join(words)
    return None


def _lights(text: str, tokens: list[str]) -> Intent | None:
    room = _room(tokens)
    named = bool(_LIGHT_WORDS & set(tokens))
    state = _light_state(tokens)
    if not named and not (room in _ROOMS and state and _SWITCH_VERBS & set(tokens)):
        return None
    slots: dict[str, SlotValue] = {}
    if state is not None:
        slots["state"] = state
    if room is not None:
        slots["room"] = room
    confidence = HIGH if named and state else 0.75 if state else PARTIAL
    return Intent("lights", confidence, slots, text)


_UNIT_SECONDS = {
    **dict.fromkeys(("second", "seconds", "sec", "secs", "s"), 1),
    **dict.fromkeys(("minute", "minutes", "min", "mins", "m"), 60),
    **dict.fromkeys(("hour", "hours", "hr", "hrs", "h"), 3600),
    **dict.fromkeys(("day", "days"), 86400),
}
_TIMER_WORDS = {"timer", "countdown", "remind", "reminder", "alarm"}
_HALF = Fraction(1, 2)


def _duration_term(items: Items, i: int) -> tuple[Fraction, int, int] | None:
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


def _duration(items: Items) -> Fraction | None:
    """The seconds written in ``items``, parts added up ("1 hour 30 minutes", "1h30")."""
    total = Fraction(0)
    found = False
    i = 0
    while i < len(items):
        term = _duration_term(items, i)
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


def _reminder_label(items: Items, words: list[str]) -> str | None:
    """What to be reminded of: "remind me to call mom in 5 minutes" gives "call mom"."""
    if "remind" not in words or "to" not in items:
        return None
    start = items.index("to") + 1
    end = len(items)
    for k in range(start, len(items)):
        if items[k] in ("in", "after") and _duration_term(items, k + 1) is not None:
            end = k
            break
    label = _join(items[start:end]).strip()
    return label or None


def _timer(text: str, tokens: list[str]) -> Intent | None:
    words = set(tokens)
    if not words & _TIMER_WORDS and not _has(" ".join(tokens), "wake me", "count down", "alert me"):
        return None
    items = _numbers(tokens)
    seconds = _duration(items)
    slots: dict[str, SlotValue] = {}
    if seconds is not None and seconds > 0:
        slots["seconds"] = round(seconds)
    label = _reminder_label(items, tokens)
    if label is not None:
        slots["label"] = label
    return Intent("timer", HIGH if "seconds" in slots else PARTIAL, slots, text)


_HELLO = _words("hello hi hey hiya howdy greetings yo morning afternoon evening")
_GREETING_WORDS = _HELLO | _words("loom there good all everyone")
_GREETING_TAILS = (["how", "are", "you"], ["how", "are", "you", "doing"], ["what", "is", "up"])
_THANKS = _words("thanks thank you very much a lot so cheers loom ok okay great")
_GOODBYE = _words("bye goodbye good night see you later loom for now")
_HELP_EXACT = (["help"], ["help", "me"], ["i", "need", "help"], ["commands"])
_HELP_PHRASES = (
    "what can you do",
    "what do you do",
    "what can i ask",
    "what can i say",
    "how do i use you",
    "how do you work",
    "how does this work",
    "who are you",
    "what are you",
    "what are your commands",
    "list commands",
    "list your commands",
)


def _greeting(text: str, raw: list[str]) -> Intent | None:
    """Hello, thanks or goodbye, when that is all the text says."""
    words = [w for w in raw if w != "please"]
    present = set(words)
    if words and present <= _THANKS and present & {"thanks", "thank", "cheers"}:
        return Intent("greeting", 0.9, {"kind": "thanks"}, text)
    joined = " ".join(words)
    if (
        words
        and present <= _GOODBYE
        and (present & {"bye", "goodbye"} or _has(joined, "good night", "see you"))
    ):
        return Intent("greeting", 0.9, {"kind": "goodbye"}, text)
    rest = [w for w in words if w not in _GREETING_WORDS]
    if words == ["loom"] or ((present & _HELLO or rest) and (not rest or rest in _GREETING_TAILS)):
        return Intent("greeting", 0.9, {"kind": "hello"}, text)
    return None


def _help(text: str, raw: list[str]) -> Intent | None:
    """A question about what the assistant can do."""
    if _remove(raw, _FILLER) in _HELP_EXACT or _has(" ".join(raw), *_HELP_PHRASES):
        return Intent("help", 0.9, {}, text)
    return None


# in order: on equal confidence the first wins
_MATCHERS: tuple[_Matcher, ...] = (_timer, _lights, _math, _date, _time, _weather)


def understand(text: str) -> Intent:
    """The intent of ``text`` (see the module notes); never raises for any string."""
    if not isinstance(text, str):
        raise TypeError(f"understand() takes a str, got {type(text).__name__}")
    raw = _tokens(text[:MAX_CHARS])
    if not raw:
        return Intent("unknown", 0.0, {}, text)
    for social in (_greeting, _help):
        found = social(text, raw)
        if found is not None:
            return found
    tokens = _remove(raw, _FILLER) or raw
    best: Intent | None = None
    for matcher in _MATCHERS:
        candidate = matcher(text, tokens)
        if candidate is not None and (best is None or candidate.confidence > best.confidence):
            best = candidate
    return best if best is not None else Intent("unknown", UNKNOWN, {}, text)
