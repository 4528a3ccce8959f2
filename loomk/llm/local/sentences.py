"""The sentences the local model understands, as templates a speech recognizer can be held to.

A recognizer with a closed grammar (pocketsphinx JSGF, a Vosk phrase list) hears commands far
better than free dictation; Rhasspy builds that grammar from the same templates its intent
engine reads. :func:`command_templates` gives them in Home Assistant's template language
(``[optional]``, ``(a|b)``, ``<rule>``, ``{list}``):

* Home Assistant's *speech-to-phrase* templates (home-assistant-intents' trimmed set for
  closed-vocabulary speech recognition) of the intents this model serves: lights, timers,
  time, date, weather;
* this model's own templates for what it reads beyond them (time and weather in a city, a
  date tomorrow, spoken math, greetings, help).

:func:`slot_values` fills the lists (rooms, cities, numbers as words). Every sentence they
give is understood by :func:`loomk.llm.local.understand` as its intent (a test checks it).
:mod:`loomk_audio.grammar` turns them into a JSGF grammar and a phrase list.
"""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING, Any

from loomk.llm.local._home import HOME_INTENTS, ROOMS
from loomk.llm.local._places import city_names

if TYPE_CHECKING:
    from unicode_rbnf import RbnfEngine

__all__ = ["command_templates", "expansion_rules", "number_words", "slot_values"]

_LANGUAGE = "en"
_OWN_TEMPLATES: dict[str, tuple[str, ...]] = {
    "time": ("what time is it in {city}", "<what_is> the time in {city}"),
    "date": (
        "what day is it [today]",
        "what day is tomorrow",
        "<what_is> the date tomorrow",
        "what is the date in {city}",
    ),
    "weather": (
        "<what_is> the weather [like] in {city} [(today|tomorrow)]",
        "<what_is> the weather [like] tomorrow",
        "<what_is> the forecast [for tomorrow]",
        "will it rain [(today|tomorrow)]",
        "what is the temperature outside",
    ),
    "timer": (
        "set a {timer_minutes:minutes} minute timer",
        "set a timer for half an hour",
        "set a timer for an hour and a half",
        "remind me in {timer_minutes:minutes} minutes",
    ),
    "math": (
        "what is {number} (plus|minus|times|divided by) {number}",
        "what is {number} percent of {number}",
        "what is the square root of {number}",
    ),
    "greeting": (
        "(hello|hi) [there]",
        "good (morning|afternoon|evening)",
        "thank you [very much]",
        "thanks",
        "goodbye",
        "good night",
    ),
    "help": ("help", "what can you do", "what can i say"),
}


def number_words(number: int) -> str:
    """``number`` in words, as people say it: 25 gives "twenty five" (CLDR's spelling, by
    unicode-rbnf, which hassil uses too; hyphens become spaces, as speech has none)."""
    spelled: str = _spell_out().format_number(number).text
    return spelled.replace("-", " ")


@functools.cache
def _spell_out() -> RbnfEngine:
    from unicode_rbnf import RbnfEngine

    return RbnfEngine.for_language(_LANGUAGE)


def slot_values() -> dict[str, list[str]]:
    """The words each ``{list}`` of :func:`command_templates` stands for: rooms, cities,
    and numbers as words (timers up to an hour of minutes or seconds and 12 hours, a
    brightness in tens of percent, operands of spoken math up to twenty and in tens)."""
    minutes = [number_words(n) for n in range(1, 61)]
    return {
        "area": sorted(ROOMS),
        "city": sorted(city_names()),
        "timer_hours": [number_words(n) for n in range(1, 13)],
        "timer_minutes": minutes,
        "timer_seconds": minutes,
        "timer_half": ["half"],
        "brightness": [number_words(n) for n in range(10, 101, 10)],
        "number": [number_words(n) for n in (*range(21), *range(30, 101, 10))],
    }


def expansion_rules() -> dict[str, str]:
    """The ``<rule>`` templates :func:`command_templates` use ("<what_is>" is "(what's|whats|
    what is|tell me)"), from Home Assistant's speech-to-phrase set."""
    rules: dict[str, str] = dict(_speech_to_phrase()["expansion_rules"])
    return rules


def command_templates() -> list[tuple[str, str]]:
    """(intent, template) for every sentence the grammar offers, Home Assistant's first."""
    data = _speech_to_phrase()
    templates: list[tuple[str, str]] = []
    for home_intent, ours in HOME_INTENTS.items():
        for block in data["intents"][home_intent]["data"]:
            domain = block.get("slots", {}).get("domain")
            if ours == "lights" and domain != "light":
                continue  # fans, covers and locks share these Home Assistant intents
            templates += [(ours, sentence) for sentence in block["sentences"]]
    for intent, own in _OWN_TEMPLATES.items():
        templates += [(intent, sentence) for sentence in own]
    return templates


def _speech_to_phrase() -> dict[str, Any]:
    from home_assistant_intents import get_speech_to_phrase_intents

    data = get_speech_to_phrase_intents(_LANGUAGE)
    if data is None:  # pragma: no cover - the package ships English
        raise RuntimeError("home-assistant-intents has no English speech-to-phrase sentences")
    return data
