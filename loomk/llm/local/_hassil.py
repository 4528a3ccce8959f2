"""Commands read with Home Assistant's own sentence templates (hassil + home-assistant-intents).

Home Assistant's offline intent engine knows thousands of ways to say "turn on the kitchen
lights", "set a timer for 5 minutes", "what time is it" or "what's the weather in Paris";
:func:`recognize_home` reads an utterance with those templates, filled with this model's
rooms (``area``), cities (weather ``name``) and devices that are not lights (``name``), and
says which of the local model's intents it is, with its slots:

* lights (``HassTurnOn``/``HassTurnOff`` of the light domain, ``HassLightSet``), timer
  (``HassStartTimer``), time, date and weather (``HassGetCurrentTime``/``Date``/``Weather``);
* ``unknown`` for a command Home Assistant knows that this model cannot carry out (a fan,
  the TV, music, blinds, a thermostat, a shopping list): naming it so keeps the hand-written
  rules from mistaking "turn on the fan in the bedroom" for the bedroom lights;
* None when no template matches, and the hand-written rules read the utterance.

The templates and the recognizer are built on first use (about 0.15 s) and kept for the
process: :func:`load` does it up front, and says how long it took.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from loomk.llm.local._home import HOME_INTENTS, OTHER_DEVICES, ROOMS
from loomk.llm.local._places import city_names

if TYPE_CHECKING:
    from hassil import Intents, RecognizeResult, SlotList

__all__ = ["HomeMatch", "load", "recognize_home", "to_digits"]

LANGUAGE = "en"
MAX_WORDS = 24
HERE = "here"  # the area a command means when it names none ("turn on the lights")

# Home Assistant intents the local model serves, and the ones it knows it cannot serve
_SERVED = HOME_INTENTS
_NOT_SERVED = frozenset(
    {
        "HassBroadcast",
        "HassClimateSetFanMode",
        "HassClimateSetTemperature",
        "HassFanSetSpeed",
        "HassLawnMowerDock",
        "HassLawnMowerStartMowing",
        "HassListAddItem",
        "HassListCompleteItem",
        "HassListRemoveItem",
        "HassMediaNext",
        "HassMediaPause",
        "HassMediaPlayerMute",
        "HassMediaPlayerUnmute",
        "HassMediaPrevious",
        "HassMediaSearchAndPlay",
        "HassMediaUnpause",
        "HassSetPosition",
        "HassSetVolume",
        "HassSetVolumeRelative",
        "HassShoppingListAddItem",
        "HassShoppingListCompleteItem",
        "HassVacuumCleanArea",
        "HassVacuumReturnToBase",
        "HassVacuumStart",
    }
)
# an indoor temperature question is the thermostat's; without a room it may be the weather's
_NOT_SERVED_IN_A_ROOM = frozenset({"HassClimateGetTemperature"})
INTENT_NAMES = frozenset(_SERVED) | _NOT_SERVED | _NOT_SERVED_IN_A_ROOM


@dataclass(frozen=True, slots=True)
class HomeMatch:
    """What Home Assistant's templates read: the local model's ``intent`` name, its
    ``slots``, and the Home Assistant intent (``source``) it came from."""

    intent: str
    slots: dict[str, str | int] = field(default_factory=dict)
    source: str = ""


@dataclass(frozen=True, slots=True)
class _Engine:
    intents: Intents
    slot_lists: dict[str, SlotList]
    seconds: float  # how long loading took


def load() -> float:
    """Build the recognizer now (it is built once per process, and its first recognition
    compiles the templates); the seconds that took, imports included."""
    return _engine().seconds


def to_digits(text: str) -> str:
    """``text`` with its number words as numerals ("twenty five minutes" gives "25 minutes"),
    as Home Assistant's number ranges expect them."""
    from text_to_num import alpha2digit

    try:
        digits: str = alpha2digit(text, LANGUAGE, threshold=0)
    except Exception:  # the reader is native code: any failure leaves the words as they are
        return text
    return digits


def recognize_home(text: str) -> HomeMatch | None:
    """The local model's intent in ``text`` as Home Assistant's templates read it, or None
    when no template matches (see the module notes). ``text`` should be tokenized (lower
    case, no wake word); more than :data:`MAX_WORDS` words is no spoken command and is
    left to the rules. Numbers may be words or numerals."""
    if not text.strip() or len(text.split()) > MAX_WORDS:
        return None
    engine = _engine()
    result = _recognize(engine, to_digits(text))
    return None if result is None else _match(result)


def _recognize(engine: _Engine, text: str) -> RecognizeResult | None:
    from hassil import recognize_best

    try:
        return recognize_best(
            text,
            engine.intents,
            slot_lists=engine.slot_lists,
            intent_context={"area": HERE},
            language=LANGUAGE,
        )
    except Exception:  # a third-party matcher on any text: a failure is no match, never a crash
        return None


def _match(result: RecognizeResult) -> HomeMatch | None:
    """Home Assistant's reading as the local model's intent and slots (see the module
    notes); None for an intent it neither serves nor refuses, or a delayed command."""
    name = result.intent.name
    values = {key: entity.value for key, entity in result.entities.items()}
    area = values.get("area")
    room = area if isinstance(area, str) and area != HERE else None
    if name in _NOT_SERVED or (name in _NOT_SERVED_IN_A_ROOM and room is not None):
        return HomeMatch("unknown", {}, name)
    ours = _SERVED.get(name)
    if ours is None:
        return None
    slots: dict[str, str | int] = {}
    if ours == "lights":
        domain = values.get("domain", result.context.get("domain"))
        if domain != "light":
            return HomeMatch("unknown", {}, name)
        slots["state"] = _light_state(name, values)
        if room is not None:
            slots["room"] = room
    elif ours == "timer":
        label = _timer_label(values)
        if label is None:
            return None
        slots["seconds"] = _timer_seconds(values)
        if label:
            slots["label"] = label
    elif ours == "date":
        slots["day_offset"] = 0
    elif ours == "weather" and isinstance(values.get("name"), str):
        slots["city"] = str(values["name"])
    return HomeMatch(ours, slots, name)


def _light_state(name: str, values: Mapping[str, Any]) -> str:
    """on/off: what ``HassTurnOn``/``Off`` say, and for ``HassLightSet`` on unless the
    brightness is 0."""
    if name == "HassTurnOff" or (name == "HassLightSet" and values.get("brightness") == 0):
        return "off"
    return "on"


def _timer_label(values: Mapping[str, Any]) -> str | None:
    """A timer's name ("pasta"), or what a reminder is for ("remind me to call mom in 5
    minutes" gives "call mom"; "wake me up in 20 minutes" none). None when the timer delays
    another command ("what's the weather in 2 hours"): that is a question for now, not a
    timer, and the rules read it."""
    name = values.get("name")
    if isinstance(name, str):
        return name
    command = values.get("conversation_command")
    if not isinstance(command, str):
        return ""
    words = command.split()
    if words[:2] == ["wake", "me"]:
        return ""
    if words[:2] != ["remind", "me"]:
        return None
    return " ".join(words[3:] if words[2:3] in (["to"], ["about"]) else words[2:])


def _timer_seconds(values: Mapping[str, Any]) -> int:
    total = 0
    for key, unit in (("hours", 3600), ("minutes", 60), ("seconds", 1)):
        amount = values.get(key)
        if isinstance(amount, int | float):
            total += round(amount * unit)
    return total


@functools.cache
def _engine() -> _Engine:
    """Home Assistant's English templates for :data:`INTENT_NAMES`, and the slot lists
    that fill them. Built once: loading the templates takes about 0.15 s."""
    started = time.perf_counter()
    from hassil import Intents, TextSlotList
    from home_assistant_intents import get_intents

    data = get_intents(LANGUAGE)
    if data is None:  # pragma: no cover - the package always ships English
        raise RuntimeError("home-assistant-intents has no English sentences")
    data = dict(data)
    data["intents"] = {k: v for k, v in data["intents"].items() if k in INTENT_NAMES}
    intents = Intents.from_dict(data)
    names: list[tuple[str, Any, dict[str, Any]]] = [
        (device, device, {"domain": domain}) for device, domain in sorted(OTHER_DEVICES.items())
    ]
    names += [(key, display, {"domain": "weather"}) for key, display in city_names().items()]
    slot_lists: dict[str, SlotList] = {
        "area": TextSlotList.from_strings(sorted(ROOMS), allow_template=False, name="area"),
        "floor": TextSlotList.from_strings(
            ["upstairs", "downstairs", "ground floor", "first floor"],
            allow_template=False,
            name="floor",
        ),
        "name": TextSlotList.from_tuples(names, allow_template=False, name="name"),
    }
    engine = _Engine(intents, slot_lists, 0.0)
    _recognize(engine, "turn on the kitchen lights")  # compiles the templates
    return _Engine(intents, slot_lists, time.perf_counter() - started)
