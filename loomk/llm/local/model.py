"""The embedded local model: answers simple requests offline, in plain English.

:class:`LocalModel` turns an utterance into an :class:`~loomk.llm.local.intents.Intent` and
answers it without a network or a model file, so loomk works (and ``make demo`` runs) with no LLM
endpoint configured. It has three faces:

* :meth:`LocalModel.answer`: text in, a :class:`LocalAnswer` out (the reply, the intent, and
  the actions the caller should carry out, such as ``lights.set`` or ``timer.set``);
* :meth:`LocalModel.generate`: the ``generate`` function of
  :class:`~loomk.actions.providers.llm.LLMGenerateProvider`, so it can stand behind
  ``llm.generate``;
* the model router's confidence estimator, the part Loom's router asks how sure the local
  model would be: ``name``, :meth:`~LocalModel.supports_event_type` and
  :meth:`~LocalModel.estimate_confidence`, the intent's confidence for an event's text.

Time and date come from the injected clock; arithmetic from
:func:`~loomk.actions.providers.math_eval.evaluate`; the weather from the ``weather.get``
capability through the broker, when one is given. Nothing here raises for what a user says.
"""

from __future__ import annotations

import functools
import json
import math
import time
import zoneinfo
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, tzinfo
from typing import Any

from loomk.actions.broker import ActionBroker
from loomk.actions.provider import ActionFailure
from loomk.actions.providers.math_eval import MATH_ERROR, evaluate
from loomk.actions.types import ActionCall
from loomk.errors import ConfigError
from loomk.events import Event, new_event_id
from loomk.llm.local.intents import Intent, understand
from loomk.telemetry.logging import get_logger

__all__ = [
    "MAX_TIMER_SECONDS",
    "MODEL_NAME",
    "TEXT_EVENT_TYPES",
    "TEXT_TYPE_SUFFIXES",
    "LocalAnswer",
    "LocalModel",
    "event_text",
]

MODEL_NAME = "loomk-local"
PROVIDER_NAME = "local"
MAX_TIMER_SECONDS = 7 * 86400
WEATHER_TIMEOUT_MS = 15_000
TEXT_EVENT_TYPES = frozenset(
    {"user.query", "transcript.final", "intent", "text", "chat.message", "collab.request"}
)
TEXT_TYPE_SUFFIXES = (".query", ".text")
_TEXT_KEYS = ("text", "query", "input", "prompt", "message", "content")

_log = get_logger("loomk.llm.local")

_WEEKDAYS = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")
_MONTHS = (
    "January",
    "February",
    "March",
    "April",
    "May",
    "June",
    "July",
    "August",
    "September",
    "October",
    "November",
    "December",
)
_CAPABILITIES = (
    "I can tell you the time or the date, do arithmetic, check the weather, "
    "switch the lights on or off and set timers."
)
HELP_TEXT = f'{_CAPABILITIES} Try "what is 6 times 7" or "what\'s the weather in Paris".'
UNKNOWN_TEXT = f"Sorry, I didn't understand that. {_CAPABILITIES}"


@dataclass(frozen=True, slots=True)
class LocalAnswer:
    """The reply to one utterance: its ``text``, the ``intent`` understood, and ``actions``
    for the caller to carry out (``{"capability": ..., "args": {...}}``; the weather lookup
    is done here, so it never appears)."""

    text: str
    intent: Intent
    actions: list[dict[str, Any]] = field(default_factory=list)

    @property
    def confidence(self) -> float:
        """The intent's confidence."""
        return self.intent.confidence


class LocalModel:
    """The local intent model (see the module notes).

    ``clock`` gives the wall-clock time in seconds since the epoch; ``timezone`` is the IANA
    zone of answers that name none (a :class:`~loomk.errors.ConfigError` if unknown);
    ``broker``, when given, is asked ``weather.get``.
    """

    name = MODEL_NAME

    def __init__(
        self,
        *,
        clock: Callable[[], float] = time.time,
        timezone: str = "UTC",
        broker: ActionBroker | None = None,
    ) -> None:
        zone = _zone(timezone)
        if zone is None:
            raise ConfigError("timezone", f"unknown IANA time zone {timezone!r}")
        self._clock = clock
        self._zone = zone
        self.timezone = timezone
        self._broker = broker

    def __repr__(self) -> str:
        return f"LocalModel(timezone={self.timezone!r}, broker={self._broker is not None})"

    # ---- answering ------------------------------------------------------------------------

    async def answer(self, text: str, *, offline: bool = False) -> LocalAnswer:
        """Understand ``text`` and answer it in plain English; ``offline`` keeps every
        capability that would reach the network (the weather) out of it."""
        intent = _understood(text)
        slots = intent.slots
        if intent.name == "time":
            return LocalAnswer(self._time(slots), intent)
        if intent.name == "date":
            return LocalAnswer(self._date(slots), intent)
        if intent.name == "math":
            return LocalAnswer(_arithmetic(slots), intent)
        if intent.name == "weather":
            return LocalAnswer(await self._weather(slots, offline), intent)
        if intent.name == "lights":
            return _lights(intent)
        if intent.name == "timer":
            return _timer(intent)
        if intent.name == "greeting":
            return LocalAnswer(_GREETINGS.get(str(slots.get("kind")), "Hello!"), intent)
        if intent.name == "help":
            return LocalAnswer(HELP_TEXT, intent)
        return LocalAnswer(UNKNOWN_TEXT, intent)

    def _now(self, slots: Mapping[str, object]) -> tuple[datetime, str] | None:
        """Now in the zone the slots name (else this model's), and where that is ("" for the
        model's own zone); None if the clock gives no usable time."""
        zone, place = self._zone, ""
        named = slots.get("timezone")
        if isinstance(named, str):
            found = _zone(named)
            if found is not None:
                zone, place = found, str(slots.get("place") or named)
        try:
            return datetime.fromtimestamp(self._clock(), zone), place
        except (ArithmeticError, OSError, ValueError, TypeError):
            return None

    def _time(self, slots: Mapping[str, object]) -> str:
        now = self._now(slots)
        if now is None:
            return "Sorry, I can't tell the time right now."
        moment, place = now
        said = f"It's {_clock_time(moment)}{f' in {place}' if place else ''}."
        return _unknown_place(slots, place, said)

    def _date(self, slots: Mapping[str, object]) -> str:
        now = self._now(slots)
        offset = slots.get("day_offset", 0)
        offset = offset if isinstance(offset, int) else 0
        try:
            day = now[0].date() + timedelta(days=offset) if now is not None else None
        except OverflowError:
            day = None
        if now is None or day is None:
            return "Sorry, I can't tell the date right now."
        place = now[1]
        lead = (
            "Today is"
            if offset == 0
            else "Tomorrow is"
            if offset == 1
            else "Yesterday was"
            if offset == -1
            else f"In {offset} days it will be"
            if offset > 0
            else f"{-offset} days ago it was"
        )
        written = f"{_WEEKDAYS[day.weekday()]}, {_MONTHS[day.month - 1]} {day.day}, {day.year}"
        said = f"{lead} {written}{f' in {place}' if place else ''}."
        return _unknown_place(slots, place, said)

    async def _weather(self, slots: Mapping[str, object], offline: bool) -> str:
        city = slots.get("city")
        if not isinstance(city, str):
            return "Which city would you like the weather for?"
        units = slots.get("units")
        report = (
            None
            if offline
            else await self._ask_weather(city, units if isinstance(units, str) else None)
        )
        if report is None:
            return f"Sorry, I can't check the weather for {city} right now."
        if slots.get("day") == "tomorrow":
            return f"I can only see the current weather. {report}"
        return report

    async def _ask_weather(self, city: str, units: str | None) -> str | None:
        """The current weather in ``city`` in words, from ``weather.get``; None on failure."""
        if self._broker is None:
            return None
        args = {"location": city} if units is None else {"location": city, "units": units}
        call = ActionCall.with_args(
            f"{MODEL_NAME}-{new_event_id()}",
            "weather.get",
            args,
            timeout_ms=WEATHER_TIMEOUT_MS,
        )
        try:
            result = await self._broker.invoke(call)
            output = result.json() if result.ok else None
        except Exception as error:  # a broken broker must not break the answer
            _log.warning("weather lookup failed", city=city, error=repr(error))
            return None
        if output is None:
            _log.info("weather lookup failed", city=city, code=result.code)
        return _weather_words(output, city)

    # ---- the router's confidence estimator ------------------------------------------------

    def supports_event_type(self, event_type: str) -> bool:
        """Whether events of this type carry text this model reads: the types of
        ``TEXT_EVENT_TYPES`` and those ending in one of ``TEXT_TYPE_SUFFIXES``."""
        return event_type in TEXT_EVENT_TYPES or event_type.endswith(TEXT_TYPE_SUFFIXES)

    def describe_event_types(self) -> str:
        """The types :meth:`supports_event_type` accepts, in words, for the router's reasons
        ("chat.message, ..., user.query and types ending in .query or .text")."""
        suffixes = " or ".join(TEXT_TYPE_SUFFIXES)
        return f"{', '.join(sorted(TEXT_EVENT_TYPES))} and types ending in {suffixes}"

    async def estimate_confidence(self, event: Event) -> float:
        """How sure this model is that it can answer ``event``: the confidence of the intent
        of its text; 0.0 when it has none (or its payload is not UTF-8)."""
        text = event_text(event)
        return _understood(text).confidence if text is not None else 0.0

    # ---- llm.generate ---------------------------------------------------------------------

    async def generate(self, request: dict[str, Any]) -> dict[str, Any]:
        """Answer an ``llm.generate`` request (the provider's normalised request): the user
        text is the bundle's ``instructions``, else its last ``history`` item. With
        ``offline`` true (private data) no capability that reaches the network is asked."""
        text = _request_text(request)
        reply = await self.answer(text, offline=request.get("offline") is True)
        prompt_tokens = len(text.split())
        completion_tokens = len(reply.text.split())
        return {
            "text": reply.text,
            "model": MODEL_NAME,
            "provider": PROVIDER_NAME,
            "usage": {
                "prompt_tokens": prompt_tokens,
                "completion_tokens": completion_tokens,
                "total_tokens": prompt_tokens + completion_tokens,
            },
            "intent": reply.intent.name,
            "confidence": reply.intent.confidence,
            "actions": reply.actions,
        }


# ---- reading text -----------------------------------------------------------------------


@functools.lru_cache(maxsize=256)
def _understood(text: str) -> Intent:
    """:func:`understand`, remembered: the router estimates an event's confidence and the
    model then answers the same text. (Intents are frozen; nobody changes their slots.)"""
    return understand(text)


def event_text(event: Event) -> str | None:
    """The text an event carries: its UTF-8 payload (a JSON object's ``text``, ``query``,
    ``input``, ``prompt``, ``message`` or ``content`` when it is one), else its ``text``
    metadata; None when the payload is not UTF-8."""
    try:
        text = event.payload.decode("utf-8")
    except UnicodeDecodeError:
        return None
    if text.lstrip().startswith("{"):
        try:
            document = json.loads(text)
        except (ValueError, RecursionError):
            document = None
        if isinstance(document, dict):
            text = next((v for k in _TEXT_KEYS if isinstance(v := document.get(k), str)), "")
    return text if text.strip() else event.metadata.get("text", text)


def _request_text(request: Mapping[str, Any]) -> str:
    bundle = request.get("bundle")
    if isinstance(bundle, Mapping):
        instructions = bundle.get("instructions")
        if isinstance(instructions, str) and instructions.strip():
            return instructions
        history = bundle.get("history")
        if isinstance(history, list):
            for item in reversed(history):
                if isinstance(item, str) and item.strip():
                    said = item.strip()
                    role, colon, rest = said.partition(":")
                    return rest.strip() if colon and role.lower() in ("user", "human") else said
    given = request.get("input")
    return given if isinstance(given, str) else ""


# ---- phrasing ---------------------------------------------------------------------------

_GREETINGS = {
    "hello": "Hello! How can I help?",
    "thanks": "You're welcome!",
    "goodbye": "Goodbye!",
}


def _zone(name: str) -> tzinfo | None:
    if name.upper() == "UTC":
        return UTC
    try:
        return zoneinfo.ZoneInfo(name)
    except (ValueError, KeyError, OSError):
        return None


def _unknown_place(slots: Mapping[str, object], place: str, said: str) -> str:
    """``said``, prefixed by a warning when the slots name a place of no known zone."""
    named = slots.get("place")
    if isinstance(named, str) and not place:
        return f"I don't know the time zone of {named}. Here, {said[:1].lower()}{said[1:]}"
    return said


def _clock_time(moment: datetime) -> str:
    hour = moment.hour % 12 or 12
    return f"{hour}:{moment.minute:02d} {'AM' if moment.hour < 12 else 'PM'}"


def _capitalised(text: str) -> str:
    return text[:1].upper() + text[1:]


def _number_words(value: int | float) -> str:
    if isinstance(value, float) and value.is_integer() and abs(value) < 1e15:
        return str(int(value))
    if isinstance(value, float):
        return format(value, ".10g")
    return str(value)


def _arithmetic(slots: Mapping[str, object]) -> str:
    expression = slots.get("expression")
    if not isinstance(expression, str):
        return 'Sorry, I couldn\'t work out that sum. Try something like "what is 2 plus 3".'
    phrase = str(slots.get("phrase") or expression)
    try:
        value = evaluate(expression)
    except ActionFailure as failure:
        if "division by zero" in failure.message:
            return f"You can't divide by zero, so {phrase} has no answer."
        if failure.code == MATH_ERROR:
            return f"{_capitalised(phrase)} has no answer ({failure.message})."
        return f"Sorry, I can't work out {phrase}: {failure.message}."
    return f"{_capitalised(phrase)} is {_number_words(value)}."


def _weather_words(output: object, city: str) -> str | None:
    """``weather.get``'s output in words: "It's 12°C and partly cloudy in Paris, France."."""
    if not isinstance(output, dict):
        return None
    temperature = output.get("temperature")
    if (
        not isinstance(temperature, int | float)
        or isinstance(temperature, bool)
        or not math.isfinite(temperature)
    ):
        return None
    location = output.get("location")
    where = location if isinstance(location, str) and location.strip() else city
    unit = "F" if output.get("units") == "fahrenheit" else "C"
    conditions = output.get("conditions")
    degrees = f"{math.floor(temperature + 0.5)}°{unit}"
    if isinstance(conditions, str) and conditions.strip() and conditions != "unknown":
        return f"It's {degrees} and {conditions} in {where}."
    return f"It's {degrees} in {where}."


def _lights(intent: Intent) -> LocalAnswer:
    state = intent.slots.get("state")
    room = intent.slots.get("room")
    which = f"the {room} lights" if isinstance(room, str) else "the lights"
    if state not in ("on", "off"):
        return LocalAnswer(f"Should I turn {which} on or off?", intent)
    args: dict[str, Any] = {"room": room} if isinstance(room, str) else {}
    args["on"] = state == "on"
    action = {"capability": "lights.set", "args": args}
    return LocalAnswer(f"Turning {state} {which}.", intent, [action])


def _timer(intent: Intent) -> LocalAnswer:
    seconds = intent.slots.get("seconds")
    if not isinstance(seconds, int):
        return LocalAnswer("For how long should I set the timer?", intent)
    if not 1 <= seconds <= MAX_TIMER_SECONDS:
        return LocalAnswer("Timers can run from 1 second to 7 days.", intent)
    args: dict[str, Any] = {"seconds": seconds}
    label = intent.slots.get("label")
    duration = _duration_words(seconds)
    if isinstance(label, str):
        args["label"] = label
        text = f"OK, I'll remind you to {label} in {duration}."
    else:
        text = f"Timer set for {duration}."
    return LocalAnswer(text, intent, [{"capability": "timer.set", "args": args}])


def _duration_words(seconds: int) -> str:
    """``5400`` as "1 hour and 30 minutes"."""
    parts = []
    for unit, size in (("day", 86400), ("hour", 3600), ("minute", 60), ("second", 1)):
        count, seconds = divmod(seconds, size)
        if count:
            parts.append(f"{count} {unit}{'s' if count != 1 else ''}")
    if len(parts) == 1:
        return parts[0]
    return f"{', '.join(parts[:-1])} and {parts[-1]}"
