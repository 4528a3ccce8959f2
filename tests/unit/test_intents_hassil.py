"""The local model's intents read with Home Assistant's templates (hassil) and text2num.

Home Assistant's sentences read lights, timers, time, date and weather commands; the home
commands this model cannot carry out (fans, TV, music, thermostats) come out ``unknown``;
what the templates do not match is still read by the hand-written rules. The held-out set
(``benchmarks/data/intent_heldout.jsonl``) measures the whole engine against the
hand-written one it replaced.
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from fractions import Fraction
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from loomk.llm.local import HIGH, UNKNOWN, understand
from loomk.llm.local._hassil import load, recognize_home, to_digits
from loomk.llm.local._numbers import read_numbers
from loomk.llm.local._text import tokenize
from loomk.llm.local.sentences import command_templates, number_words, slot_values

ROOT = Path(__file__).resolve().parents[2]

# measured on the held-out set (233 phrasings) with the hand-written engine of commit
# d8840007 (benchmarks/intent_accuracy.py prints both engines side by side)
BEFORE_INTENT_RIGHT = 223
BEFORE_SLOTS_RIGHT = 223
# the floor the current engine must keep (it measured 227 and 227 when written)
FLOOR_INTENT_RIGHT = 226
FLOOR_SLOTS_RIGHT = 226


@pytest.mark.parametrize(
    ("text", "slots"),
    [
        ("turn on the kitchen lights", {"state": "on", "room": "kitchen"}),
        ("switch off the lights in the living room", {"state": "off", "room": "living room"}),
        ("turn the lights on in here", {"state": "on"}),
        ("turn off every light in the house", {"state": "off"}),
        ("the master bedroom lights on", {"state": "on", "room": "master bedroom"}),
        ("set the bedroom brightness to 50 percent", {"state": "on", "room": "bedroom"}),
    ],
)
def test_home_assistant_reads_light_commands(text: str, slots: dict[str, Any]) -> None:
    found = recognize_home(text)
    assert found is not None
    assert found.source.startswith("Hass")
    assert (found.intent, found.slots) == ("lights", slots)
    assert understand(text).slots == slots
    assert understand(text).confidence == HIGH


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("set a timer for twenty five minutes", 1500),
        ("start a timer for 1 hour and 20 minutes", 4800),
        ("10 minute timer", 600),
        ("set a timer for two minutes and thirty seconds", 150),
    ],
)
def test_home_assistant_reads_timers_with_number_words(text: str, seconds: int) -> None:
    found = recognize_home(text)
    assert found is not None
    assert found.source == "HassStartTimer"
    assert found.slots == {"seconds": seconds}


def test_a_reminder_keeps_what_it_is_for_and_a_delayed_question_is_left_to_the_rules() -> None:
    reminder = recognize_home("remind me to call mom in 20 minutes")
    assert reminder is not None
    assert reminder.slots == {"seconds": 1200, "label": "call mom"}
    assert recognize_home("what is the weather in 2 hours") is None
    assert understand("what's the weather in 2 hours").name == "weather"


@pytest.mark.parametrize(
    "text",
    [
        "turn on the fan in the bedroom",
        "turn on the tv",
        "set the thermostat to 21 degrees",
        "set the living room temperature to 20",
        "play the weather girls",
        "turn up the volume",
        "open the blinds",
        "add milk to my shopping list",
    ],
)
def test_home_commands_this_model_cannot_do_are_unknown(text: str) -> None:
    """Without Home Assistant's templates the rules read some of these as lights or
    weather ("bedroom" and "on"; "degrees"; "weather")."""
    found = understand(text)
    assert (found.name, found.confidence, found.slots) == ("unknown", UNKNOWN, {})


@pytest.mark.parametrize(
    ("text", "name", "slots"),
    [
        ("what time is it", "time", {}),
        ("what is the current date", "date", {"day_offset": 0}),
        ("what's the weather like in paris", "weather", {"city": "Paris"}),
    ],
)
def test_home_assistant_reads_time_date_and_weather(
    text: str, name: str, slots: dict[str, Any]
) -> None:
    found = understand(text)
    assert (found.name, found.slots) == (name, slots)
    assert recognize_home(" ".join(tokenize(text))) is not None


@pytest.mark.parametrize(
    ("text", "name", "slots"),
    [
        ("what time is it in tokyo", "time", {"timezone": "Asia/Tokyo", "place": "Tokyo"}),
        ("set a timer for an hour and a half", "timer", {"seconds": 5400}),
        ("what's the weather in springfield tomorrow", "weather", {"city": "Springfield"}),
        ("what is fifteen percent of two hundred", "math", {"expression": "(15 * 200 / 100)"}),
    ],
)
def test_what_the_templates_do_not_match_the_rules_still_read(
    text: str, name: str, slots: dict[str, Any]
) -> None:
    found = understand(text)
    assert found.name == name
    assert slots.items() <= found.slots.items(), found


def test_weather_without_a_city_stays_a_partial_request() -> None:
    found = understand("what's the weather like")
    assert (found.name, found.slots) == ("weather", {})
    assert 0.5 <= found.confidence <= 0.8


def test_home_assistant_is_asked_only_about_a_spoken_command() -> None:
    assert recognize_home("") is None
    assert recognize_home("turn on the lights " * 10) is None  # 40 words: no command


def test_the_recognizer_is_built_once() -> None:
    first = load()
    assert first > 0
    assert load() == first


def test_loomk_imports_none_of_the_intent_libraries() -> None:
    code = (
        "import sys, loomk, loomk.llm, loomk.llm.local\n"
        "libs = ('hassil', 'home_assistant_intents', 'text_to_num', 'unicode_rbnf')\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in libs))\n"
        "loomk.llm.local.understand('turn on the kitchen lights')\n"
        "print(sorted({m.split('.')[0] for m in sys.modules if m.split('.')[0] in libs}))\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("LOOMK_")}
    result = subprocess.run(
        [sys.executable, "-c", code],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [
        "[]",
        "['hassil', 'home_assistant_intents', 'text_to_num', 'unicode_rbnf']",
    ]


@pytest.mark.parametrize(
    ("tokens", "items"),
    [
        ("twenty five minutes", [Fraction(25), "minutes"]),
        ("two thousand and twenty four", [Fraction(2024)]),
        ("a hundred divided by 4", [Fraction(100), "divided", "by", Fraction(4)]),
        ("three point one four", [Fraction(314, 100)]),
        ("3 point 14", [Fraction(314, 100)]),
        ("one and a half hours", [Fraction(1), "and", "a", "half", "hours"]),
        ("one second", [Fraction(1), "second"]),  # an ordinal word is never read as one
        ("the first four five", ["the", "first", Fraction(4), Fraction(5)]),
        ("and point a", ["and", "point", "a"]),
    ],
)
def test_numbers_are_read_by_text2num(tokens: str, items: list[object]) -> None:
    assert read_numbers(tokens.split()) == items


def test_to_digits_leaves_text_without_numbers_alone() -> None:
    assert to_digits("turn on the lights") == "turn on the lights"
    assert to_digits("set a timer for one minute") == "set a timer for 1 minute"


def test_the_sentence_lists_are_spoken_words() -> None:
    assert [number_words(n) for n in (0, 7, 25, 60, 100)] == [
        "zero",
        "seven",
        "twenty five",
        "sixty",
        "one hundred",
    ]
    values = slot_values()
    assert "living room" in values["area"]
    assert "tokyo" in values["city"]
    assert values["timer_minutes"][:2] == ["one", "two"]
    assert len(values["timer_minutes"]) == 60
    intents = {intent for intent, _ in command_templates()}
    assert intents == {"lights", "timer", "time", "date", "weather", "math", "greeting", "help"}


def _benchmark() -> ModuleType:
    path = ROOT / "benchmarks" / "intent_accuracy.py"
    spec = importlib.util.spec_from_file_location("intent_accuracy", path)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def test_held_out_accuracy_is_above_its_floor_and_the_hand_written_engines() -> None:
    bench = _benchmark()
    cases = bench.load_cases()
    assert len(cases) == 233
    score = bench.score(understand, cases)
    assert score.intent_right["all"] >= max(FLOOR_INTENT_RIGHT, BEFORE_INTENT_RIGHT)
    assert score.slots_right["all"] >= max(FLOOR_SLOTS_RIGHT, BEFORE_SLOTS_RIGHT)
    for intent in ("lights", "timer", "time", "date", "weather", "math", "greeting"):
        assert score.intent_accuracy(intent) >= 0.95, intent
