"""``understand``: a table of phrasings across every intent with the slots they name,
paraphrase robustness (case, punctuation, filler), confidence bands, and property tests
(never raises, confidence in [0, 1], deterministic).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from loomk.actions.providers.math_eval import evaluate
from loomk.llm.local import HIGH, INTENTS, MAX_CHARS, Intent, understand

TOKYO = {"timezone": "Asia/Tokyo", "place": "Tokyo"}
NEW_YORK = {"timezone": "America/New_York", "place": "New York"}

# (text, intent, slots). Slots are compared exactly, except for math, where "value" is the
# value of the expression the intent carries (what evaluate() makes of it).
TABLE: list[tuple[str, str, dict[str, Any]]] = [
    # time
    ("what time is it", "time", {}),
    ("What's the time?", "time", {}),
    ("time", "time", {}),
    ("tell me the time", "time", {}),
    ("current time please", "time", {}),
    ("what hour is it", "time", {}),
    ("time in Tokyo", "time", TOKYO),
    ("what time is it in tokyo", "time", TOKYO),
    ("Tokyo time", "time", TOKYO),
    ("what's the time in New York right now?", "time", NEW_YORK),
    ("what time is it in New York City", "time", {**NEW_YORK, "place": "New York City"}),
    ("time in Europe/Paris", "time", {"timezone": "Europe/Paris", "place": "Europe/Paris"}),
    (
        "time in america/los_angeles",
        "time",
        {"timezone": "America/Los_Angeles", "place": "America/Los_Angeles"},
    ),
    ("what time is it in London", "time", {"timezone": "Europe/London", "place": "London"}),
    ("time in UTC", "time", {"timezone": "UTC", "place": "UTC"}),
    (
        "what time is it in São Paulo",
        "time",
        {"timezone": "America/Sao_Paulo", "place": "São Paulo"},
    ),
    ("what time is it in the UK", "time", {"timezone": "Europe/London", "place": "the UK"}),
    ("what time is it in Narnia", "time", {"place": "Narnia"}),
    # date
    ("what's the date", "date", {"day_offset": 0}),
    ("what is today's date?", "date", {"day_offset": 0}),
    ("what day is it today", "date", {"day_offset": 0}),
    ("what day of the week is it", "date", {"day_offset": 0}),
    ("tomorrow's date", "date", {"day_offset": 1}),
    ("what's the date tomorrow", "date", {"day_offset": 1}),
    ("what day is tomorrow", "date", {"day_offset": 1}),
    ("what was yesterday's date", "date", {"day_offset": -1}),
    ("what's the date the day after tomorrow", "date", {"day_offset": 2}),
    ("what was the date the day before yesterday", "date", {"day_offset": -2}),
    ("what is the date in 3 days", "date", {"day_offset": 3}),
    ("what was the date ten days ago", "date", {"day_offset": -10}),
    ("what year is it", "date", {"day_offset": 0}),
    ("what day is it in Tokyo", "date", {**TOKYO, "day_offset": 0}),
    # math
    ("what is 2 plus 3", "math", {"value": 5}),
    ("calculate (4+5)*2", "math", {"value": 18}),
    ("12 divided by 4", "math", {"value": 3}),
    ("square root of 81", "math", {"value": 9}),
    ("what's the square root of 144?", "math", {"value": 12}),
    ("15% of 200", "math", {"value": 30}),
    ("what is 20 percent of 50", "math", {"value": 10}),
    ("what is 6 times 7", "math", {"value": 42}),
    ("What's seven times eight?", "math", {"value": 56}),
    ("what is twenty-five minus 5", "math", {"value": 20}),
    ("how much is three hundred and twelve plus eight", "math", {"value": 320}),
    ("what is three point five times two", "math", {"value": 7}),
    ("what is 2 to the power of 10", "math", {"value": 1024}),
    ("what is 5 squared", "math", {"value": 25}),
    ("2 cubed", "math", {"value": 8}),
    ("what is negative 5 plus 3", "math", {"value": -2}),
    ("17 mod 5", "math", {"value": 2}),
    ("add 2 and 3", "math", {"value": 5}),
    ("subtract 3 from 10", "math", {"value": 7}),
    ("multiply 6 by 7", "math", {"value": 42}),
    ("divide 12 by 4", "math", {"value": 3}),
    ("the sum of 2 and 3", "math", {"value": 5}),
    ("the product of 4 and 5", "math", {"value": 20}),
    ("the difference between 10 and 4", "math", {"value": 6}),
    ("the average of 2, 4 and 9", "math", {"value": 5}),
    ("half of 10", "math", {"value": 5}),
    ("what is 1,000 times 3", "math", {"value": 3000}),
    ("compute 2 ** 8", "math", {"value": 256}),
    ("what's 3 x 4", "math", {"value": 12}),
    ("what is 10 - 2 - 3", "math", {"value": 5}),
    ("what is 2 + 3 * 4", "math", {"value": 14}),
    ("what is a hundred divided by 4", "math", {"value": 25}),
    ("what is two thousand and twenty four minus 24", "math", {"value": 2000}),
    ("what is 3 point 14 times 2", "math", {"value": 6.28}),
    ("what is pi times 2", "math", {"value": 2 * math.pi}),
    ("what is (2 + 3) squared", "math", {"value": 25}),
    ("square root of (16 + 9)", "math", {"value": 5}),
    ("what's two plus two equal to", "math", {"value": 4}),
    # weather
    ("weather in Paris", "weather", {"city": "Paris"}),
    ("what's the weather like in san francisco today", "weather", {"city": "San Francisco"}),
    ("will it rain in London tomorrow", "weather", {"city": "London", "day": "tomorrow"}),
    ("how hot is it in New York", "weather", {"city": "New York"}),
    ("is it cold outside in Chicago right now", "weather", {"city": "Chicago"}),
    ("forecast for Berlin", "weather", {"city": "Berlin"}),
    ("paris weather", "weather", {"city": "Paris"}),
    ("weather Springfield", "weather", {"city": "Springfield"}),
    ("do I need an umbrella in Seattle", "weather", {"city": "Seattle"}),
    ("what's the temperature in sao paulo", "weather", {"city": "São Paulo"}),
    ("weather in Ouagadougou", "weather", {"city": "Ouagadougou"}),
    ("weather in Paris in fahrenheit", "weather", {"city": "Paris", "units": "fahrenheit"}),
    ("what's the weather", "weather", {}),
    ("is it raining", "weather", {}),
    # lights
    ("turn on the kitchen lights", "lights", {"state": "on", "room": "kitchen"}),
    ("switch off the lights in the bedroom", "lights", {"state": "off", "room": "bedroom"}),
    ("lights off", "lights", {"state": "off"}),
    ("Lights on!", "lights", {"state": "on"}),
    ("turn the lights on in the living room", "lights", {"state": "on", "room": "living room"}),
    ("kitchen lights on please", "lights", {"state": "on", "room": "kitchen"}),
    ("turn off the desk lamp", "lights", {"state": "off", "room": "desk"}),
    ("switch the bathroom light off", "lights", {"state": "off", "room": "bathroom"}),
    ("turn off all the lights", "lights", {"state": "off"}),
    ("lights out", "lights", {"state": "off"}),
    ("turn the lights in the games room on", "lights", {"state": "on", "room": "games room"}),
    ("disable the porch lights", "lights", {"state": "off", "room": "porch"}),
    ("enable the lights in the garage", "lights", {"state": "on", "room": "garage"}),
    ("the kitchen lights", "lights", {"room": "kitchen"}),
    # timer
    ("set a timer for 5 minutes", "timer", {"seconds": 300}),
    ("timer 90 seconds", "timer", {"seconds": 90}),
    ("remind me in an hour and a half", "timer", {"seconds": 5400}),
    ("set a 10 minute timer", "timer", {"seconds": 600}),
    ("set a timer for half an hour", "timer", {"seconds": 1800}),
    ("start a timer for one and a half hours", "timer", {"seconds": 5400}),
    ("timer for 2 and a half minutes", "timer", {"seconds": 150}),
    ("set a timer for 1 hour and 30 minutes", "timer", {"seconds": 5400}),
    ("timer 1h30", "timer", {"seconds": 5400}),
    ("countdown 45 secs", "timer", {"seconds": 45}),
    ("set a timer for a quarter of an hour", "timer", {"seconds": 900}),
    ("set a timer for three quarters of an hour", "timer", {"seconds": 2700}),
    ("wake me up in 20 minutes", "timer", {"seconds": 1200}),
    (
        "remind me to turn off the lights in 10 minutes",
        "timer",
        {"seconds": 600, "label": "turn off the lights"},
    ),
    ("remind me to call mom in 20 minutes", "timer", {"seconds": 1200, "label": "call mom"}),
    (
        "remind me in 10 minutes to take out the pizza",
        "timer",
        {"seconds": 600, "label": "take out the pizza"},
    ),
    ("set a timer", "timer", {}),
    # greeting and help
    ("hello", "greeting", {"kind": "hello"}),
    ("hey loom", "greeting", {"kind": "hello"}),
    ("good morning!", "greeting", {"kind": "hello"}),
    ("hi there, how are you", "greeting", {"kind": "hello"}),
    ("thank you very much", "greeting", {"kind": "thanks"}),
    ("bye", "greeting", {"kind": "goodbye"}),
    ("help", "help", {}),
    ("what can you do?", "help", {}),
    ("hey loom, can you help me", "help", {}),
    # unknown
    ("asdf qwerty", "unknown", {}),
    ("the quick brown fox jumps over the lazy dog", "unknown", {}),
    ("play some jazz", "unknown", {}),
    ("", "unknown", {}),
]


def slots_of(intent: Intent) -> dict[str, Any]:
    """The slots as the table states them (a math expression by its value)."""
    if intent.name == "math" and "expression" in intent.slots:
        return {"value": evaluate(str(intent.slots["expression"]))}
    return dict(intent.slots)


def test_the_table_is_large_and_covers_every_intent() -> None:
    assert len(TABLE) >= 80
    assert {name for _, name, _ in TABLE} == set(INTENTS)


@pytest.mark.parametrize(("text", "name", "slots"), TABLE)
def test_phrasing(text: str, name: str, slots: dict[str, Any]) -> None:
    intent = understand(text)
    assert (intent.name, slots_of(intent)) == (name, slots), intent
    assert intent.text == text


@pytest.mark.parametrize(
    ("text", "phrase"),
    [
        ("what is 2 plus 3", "2 plus 3"),
        ("calculate (4+5)*2", "(4 + 5) * 2"),
        ("what's 15% of 200?", "15% of 200"),
        ("square root of -4", "square root of -4"),
    ],
)
def test_math_keeps_the_wording_for_the_answer(text: str, phrase: str) -> None:
    assert understand(text).slots["phrase"] == phrase


def test_math_expressions_follow_arithmetic_precedence() -> None:
    assert understand("what is 2 plus 3 times 4").slots["expression"] == "2 + 3 * 4"
    assert evaluate(str(understand("2 cubed squared").slots["expression"])) == 64
    assert evaluate(str(understand("3 divided by 10 percent").slots["expression"])) == 30
    assert (
        evaluate(str(understand("2 to the power of 3 to the power of 2").slots["expression"]))
        == 512
    )


def test_division_by_zero_is_still_arithmetic() -> None:
    intent = understand("what is 10 divided by 0")
    assert intent.name == "math"
    assert intent.confidence >= 0.9
    assert intent.slots["expression"] == "10 / 0"


BASES = [
    "what time is it",
    "what is the date",
    "what is 6 times 7",
    "weather in Paris",
    "turn on the kitchen lights",
    "set a timer for 5 minutes",
]
DECORATIONS = [
    "{}",
    "{}?",
    "{}!!",
    "{} please",
    "please {}",
    "hey loom, {}",
    "Hey Loom {}.",
    "ok loom {}",
    "can you {}",
    "could you please {}?",
    "um, {}, thanks",
    "  {}   ",
]


@pytest.mark.parametrize("base", BASES)
@pytest.mark.parametrize("decoration", DECORATIONS)
def test_filler_punctuation_and_case_change_nothing(base: str, decoration: str) -> None:
    expected = understand(base)
    for text in (decoration.format(base), decoration.format(base).upper()):
        found = understand(text)
        assert (found.name, found.slots, found.confidence) == (
            expected.name,
            expected.slots,
            expected.confidence,
        ), text


@pytest.mark.parametrize(
    "paraphrases",
    [
        ["what time is it", "what's the time", "do you know what time it is", "tell me the time"],
        ["what's the date today", "what is today's date", "what is the date", "date please"],
        ["what is 6 times 7", "6 x 7", "6 * 7", "multiply 6 by 7", "six multiplied by seven"],
        ["weather in Paris", "what's the weather in paris", "how's the weather in Paris today"],
        [
            "turn on the kitchen lights",
            "switch the kitchen lights on",
            "kitchen lights on",
            "could you turn the lights on in the kitchen",
        ],
        ["set a timer for 5 minutes", "timer 5 minutes", "5 minute timer", "timer for five mins"],
    ],
)
def test_paraphrases_agree(paraphrases: list[str]) -> None:
    understood = [understand(text) for text in paraphrases]
    assert len({(i.name, repr(slots_of(i))) for i in understood}) == 1, understood
    assert all(i.confidence >= 0.9 for i in understood)


@pytest.mark.parametrize(
    "text",
    [
        "what time is it in Tokyo",
        "what's the date tomorrow",
        "calculate 2 + 2",
        "weather in Paris",
        "turn off the lights",
        "set a timer for 10 seconds",
    ],
)
def test_clear_requests_are_confident(text: str) -> None:
    assert understand(text).confidence >= 0.9


@pytest.mark.parametrize(
    ("text", "name"),
    [
        ("what's the weather like", "weather"),  # no city
        ("will it snow tomorrow", "weather"),
        ("set a timer", "timer"),  # no duration
        ("remind me later", "timer"),
        ("the lights", "lights"),  # no on/off
        ("turn off the kitchen", "lights"),  # a room but no light named
        ("calculate the tip", "math"),  # no expression
        ("what time is it in Atlantis", "time"),  # a place of unknown zone
    ],
)
def test_partial_requests_are_medium(text: str, name: str) -> None:
    intent = understand(text)
    assert intent.name == name
    assert 0.5 <= intent.confidence <= 0.8


@pytest.mark.parametrize("text", ["asdf", "play some jazz", "the cat sat on the mat", "42", "..."])
def test_unknown_is_unsure(text: str) -> None:
    intent = understand(text)
    assert intent.name == "unknown"
    assert intent.confidence < 0.3


def test_blank_text_has_no_confidence() -> None:
    assert understand("").confidence == 0.0
    assert understand("  \n\t?! ").confidence == 0.0


def test_intent_is_frozen() -> None:
    intent = understand("what time is it")
    with pytest.raises(dataclasses.FrozenInstanceError):
        intent.name = "date"  # type: ignore[misc]
    assert intent == Intent("time", HIGH, {}, "what time is it")


def test_non_text_is_a_type_error() -> None:
    with pytest.raises(TypeError):
        understand(b"what time is it")  # type: ignore[arg-type]


def test_only_the_beginning_of_a_long_text_is_read() -> None:
    long = "set a timer for 5 minutes " + "x" * (MAX_CHARS * 10)
    intent = understand(long)
    assert (intent.name, intent.slots) == ("timer", {"seconds": 300})
    assert intent.text == long


VOCABULARY_TEXT = (
    "what is the time in tokyo date plus minus times divided by square root of percent % ( ) "
    "- + * / ** 2 3.5 0 one hundred and a an half hour minutes timer remind me to lights on off "
    "kitchen weather rain it paris for at point five thousand sum add subtract from multiply "
    "divide difference between average squared cubed x mod Europe/Paris hey loom please"
)
VOCABULARY = VOCABULARY_TEXT.split()


@settings(max_examples=300, deadline=None)
@given(
    st.one_of(
        st.text(max_size=200),
        st.lists(st.sampled_from(VOCABULARY), max_size=30).map(" ".join),
    )
)
def test_understand_is_total_bounded_and_deterministic(text: str) -> None:
    intent = understand(text)
    assert intent.name in INTENTS
    assert 0.0 <= intent.confidence <= 1.0
    assert intent.text == text
    assert understand(text) == intent
    for value in intent.slots.values():
        assert isinstance(value, str | int | float)
