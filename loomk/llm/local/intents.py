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

Two sets of rules, in order: Home Assistant's own sentence templates (hassil with the
home-assistant-intents sentences, see :mod:`loomk.llm.local._hassil`) read lights, timer,
time, date and weather commands, and name as ``unknown`` the home commands this model cannot
carry out (fans, TV, music, blinds); what they do not match (places and time zones, "an hour
and a half", reminders, spoken math, greetings) is read by the hand-written rules here.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from fractions import Fraction

from loomk.llm.local._durations import duration, duration_term
from loomk.llm.local._hassil import recognize_home
from loomk.llm.local._home import ROOMS
from loomk.llm.local._numbers import Items, as_phrase, read_numbers
from loomk.llm.local._places import city_named, zone_slots
from loomk.llm.local._spoken_math import read_math
from loomk.llm.local._text import has_phrase, tokenize, without_filler, word_set

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


_Matcher = Callable[[str, list[str]], Intent | None]


def _zone(text: str, tokens: Sequence[str]) -> tuple[dict[str, SlotValue], bool]:
    """The ``timezone`` and ``place`` slots a time or date question names, and whether a
    place was named that has no zone known here."""
    slots, unknown_place = zone_slots(text[:MAX_CHARS], tokens)
    return dict(slots), unknown_place


def _time(text: str, tokens: list[str]) -> Intent | None:
    joined = " ".join(tokens)
    if "time" not in tokens and not has_phrase(joined, "what hour", "which hour"):
        return None
    clear = tokens in (["time"], ["the", "time"]) or has_phrase(
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
    slots, unknown_place = _zone(text, tokens)
    if not clear:
        clear = "timezone" in slots and len(tokens) <= 4  # "tokyo time"
    confidence = 0.7 if unknown_place else HIGH if clear else PARTIAL
    return Intent("time", confidence, slots, text)


def _day_offset(tokens: list[str], joined: str) -> int:
    if has_phrase(joined, "day after tomorrow"):
        return 2
    if has_phrase(joined, "day before yesterday"):
        return -2
    items = read_numbers(tokens)
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
    if "date" not in tokens and not has_phrase(
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
    slots, unknown_place = _zone(text, tokens)
    slots["day_offset"] = _day_offset(tokens, joined)
    return Intent("date", 0.7 if unknown_place else HIGH, slots, text)


def _math(text: str, tokens: list[str]) -> Intent | None:
    spoken = read_math(tokens)
    if spoken.expression is not None:
        slots: dict[str, SlotValue] = {"expression": spoken.expression, "phrase": spoken.phrase}
        return Intent("math", HIGH, slots, text)
    if spoken.asked:
        return Intent("math", PARTIAL, {}, text)
    if spoken.arithmetic:
        return Intent("math", 0.5, {}, text)
    return None


_WEATHER_STRONG = {"weather", "forecast", "temperature", "humidity", "umbrella", "degrees"}
_WEATHER_WEAK = word_set(
    "rain raining rainy snow snowing snowy sunny sun cloudy windy foggy stormy storm hot cold "
    "warm chilly freezing humid"
)


def _weather(text: str, tokens: list[str]) -> Intent | None:
    words = set(tokens)
    if not words & _WEATHER_STRONG and not (words & _WEATHER_WEAK and words & {"it", "outside"}):
        return None
    slots: dict[str, SlotValue] = {}
    city = city_named(tokens, _WEATHER_STRONG)
    if city is not None:
        slots["city"] = city
    if "tomorrow" in words:
        slots["day"] = "tomorrow"
    if words & {"fahrenheit", "celsius", "centigrade"}:
        slots["units"] = "fahrenheit" if "fahrenheit" in words else "celsius"
    return Intent("weather", HIGH if city is not None else 0.7, slots, text)


_LIGHT_WORDS = {"light", "lights", "lamp", "lamps", "lighting"}
_SWITCH_VERBS = {"turn", "switch", "put", "flip", "flick", "shut", "power"}
_NOT_ROOM = (
    _LIGHT_WORDS
    | _SWITCH_VERBS
    | word_set("the a an my all on off out every some these those this that it them up down")
    | word_set("of in and")
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
            if candidate in ROOMS:
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
    if not named and not (room in ROOMS and state and _SWITCH_VERBS & set(tokens)):
        return None
    slots: dict[str, SlotValue] = {}
    if state is not None:
        slots["state"] = state
    if room is not None:
        slots["room"] = room
    confidence = HIGH if named and state else 0.75 if state else PARTIAL
    return Intent("lights", confidence, slots, text)


_TIMER_WORDS = {"timer", "countdown", "remind", "reminder", "alarm"}


def _reminder_label(items: Items, words: list[str]) -> str | None:
    """What to be reminded of: "remind me to call mom in 5 minutes" gives "call mom"."""
    if "remind" not in words or "to" not in items:
        return None
    start = items.index("to") + 1
    end = len(items)
    for k in range(start, len(items)):
        if items[k] in ("in", "after") and duration_term(items, k + 1) is not None:
            end = k
            break
    label = as_phrase(items[start:end]).strip()
    return label or None


def _timer(text: str, tokens: list[str]) -> Intent | None:
    words = set(tokens)
    if not words & _TIMER_WORDS and not has_phrase(
        " ".join(tokens), "wake me", "count down", "alert me"
    ):
        return None
    items = read_numbers(tokens)
    seconds = duration(items)
    slots: dict[str, SlotValue] = {}
    if seconds is not None and seconds > 0:
        slots["seconds"] = round(seconds)
    label = _reminder_label(items, tokens)
    if label is not None:
        slots["label"] = label
    return Intent("timer", HIGH if "seconds" in slots else PARTIAL, slots, text)


_HELLO = word_set("hello hi hey hiya howdy greetings yo morning afternoon evening")
_GREETING_WORDS = _HELLO | word_set("loom there good all everyone")
_GREETING_TAILS = (["how", "are", "you"], ["how", "are", "you", "doing"], ["what", "is", "up"])
_THANKS = word_set("thanks thank you very much a lot so cheers loom ok okay great")
_GOODBYE = word_set("bye goodbye good night see you later loom for now")
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
        and (present & {"bye", "goodbye"} or has_phrase(joined, "good night", "see you"))
    ):
        return Intent("greeting", 0.9, {"kind": "goodbye"}, text)
    rest = [w for w in words if w not in _GREETING_WORDS]
    if words == ["loom"] or ((present & _HELLO or rest) and (not rest or rest in _GREETING_TAILS)):
        return Intent("greeting", 0.9, {"kind": "hello"}, text)
    return None


def _help(text: str, raw: list[str]) -> Intent | None:
    """A question about what the assistant can do."""
    if without_filler(raw) in _HELP_EXACT or has_phrase(" ".join(raw), *_HELP_PHRASES):
        return Intent("help", 0.9, {}, text)
    return None


# in order: on equal confidence the first wins
_MATCHERS: tuple[_Matcher, ...] = (_timer, _lights, _math, _date, _time, _weather)


def understand(text: str) -> Intent:
    """The intent of ``text`` (see the module notes); never raises for any string."""
    if not isinstance(text, str):
        raise TypeError(f"understand() takes a str, got {type(text).__name__}")
    raw = tokenize(text[:MAX_CHARS])
    if not raw:
        return Intent("unknown", 0.0, {}, text)
    for social in (_greeting, _help):
        found = social(text, raw)
        if found is not None:
            return found
    tokens = without_filler(raw) or raw
    home = recognize_home(" ".join(tokens))
    if home is not None:
        if home.intent == "unknown":
            return Intent("unknown", UNKNOWN, {}, text)
        # weather without a city is a partial request, as the rules below say it too
        partial = home.intent == "weather" and "city" not in home.slots
        return Intent(home.intent, 0.7 if partial else HIGH, dict(home.slots), text)
    best: Intent | None = None
    for matcher in _MATCHERS:
        candidate = matcher(text, tokens)
        if candidate is not None and (best is None or candidate.confidence > best.confidence):
            best = candidate
    return best if best is not None else Intent("unknown", UNKNOWN, {}, text)
