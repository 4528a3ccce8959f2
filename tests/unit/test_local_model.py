"""``LocalModel``: exact answers on an injected clock, arithmetic, the weather through a real
broker (and without one, or with a failing provider), lights and timer actions, the router's
confidence-estimator protocol on events, and ``llm.generate`` through a real broker.
"""

from __future__ import annotations

import itertools
import json
from datetime import UTC, datetime
from typing import Any

import pytest

from loomk.actions import ActionBroker, ActionCall, ActionFailure, ActionResult, capability
from loomk.actions.providers import LLMGenerateProvider
from loomk.errors import ConfigError
from loomk.events import Event
from loomk.llm.local import MAX_TIMER_SECONDS, LocalAnswer, LocalModel, event_text, understand

NOVEMBER_14_2023 = 1_700_000_000.0  # 2023-11-14T22:13:20Z, a Tuesday
_ids = itertools.count()


def model(**options: Any) -> LocalModel:
    return LocalModel(clock=lambda: NOVEMBER_14_2023, **options)


async def reply(text: str, **options: Any) -> str:
    return (await model(**options).answer(text)).text


# ---- time and date ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("timezone", "text", "expected"),
    [
        ("UTC", "what time is it", "It's 10:13 PM."),
        ("Asia/Tokyo", "what time is it", "It's 7:13 AM."),
        ("America/New_York", "what's the time?", "It's 5:13 PM."),
        ("UTC", "time in Tokyo", "It's 7:13 AM in Tokyo."),
        ("Asia/Tokyo", "what time is it in London", "It's 10:13 PM in London."),
        ("UTC", "time in Europe/Paris", "It's 11:13 PM in Europe/Paris."),
    ],
)
async def test_time_on_the_injected_clock(timezone: str, text: str, expected: str) -> None:
    assert await reply(text, timezone=timezone) == expected


async def test_time_in_a_place_of_unknown_zone_says_so() -> None:
    assert await reply("what time is it in Kathmandu") == (
        "I don't know the time zone of Kathmandu. Here, it's 10:13 PM."
    )


@pytest.mark.parametrize(
    ("timezone", "text", "expected"),
    [
        ("UTC", "what's the date", "Today is Tuesday, November 14, 2023."),
        ("Asia/Tokyo", "what's the date", "Today is Wednesday, November 15, 2023."),
        ("UTC", "what day is it in Tokyo", "Today is Wednesday, November 15, 2023 in Tokyo."),
        ("UTC", "tomorrow's date", "Tomorrow is Wednesday, November 15, 2023."),
        ("UTC", "what was yesterday's date", "Yesterday was Monday, November 13, 2023."),
        ("UTC", "what is the date in 20 days", "In 20 days it will be Monday, December 4, 2023."),
        ("UTC", "what was the date 14 days ago", "14 days ago it was Tuesday, October 31, 2023."),
    ],
)
async def test_date_on_the_injected_clock(timezone: str, text: str, expected: str) -> None:
    assert await reply(text, timezone=timezone) == expected


@pytest.mark.parametrize(
    ("seconds", "expected"),
    [(0, "It's 12:00 AM."), (12 * 3600, "It's 12:00 PM."), (13 * 3600 + 5 * 60, "It's 1:05 PM.")],
)
async def test_twelve_hour_clock(seconds: int, expected: str) -> None:
    local = LocalModel(clock=lambda: 1_699_920_000 + seconds)  # 2023-11-14T00:00Z
    assert (await local.answer("what time is it")).text == expected


async def test_a_broken_clock_gives_an_apology_not_an_error() -> None:
    def broken() -> float:
        return float("nan")

    local = LocalModel(clock=broken)
    assert (await local.answer("what time is it")).text == "Sorry, I can't tell the time right now."
    assert (await local.answer("what's the date")).text == "Sorry, I can't tell the date right now."


async def test_a_date_beyond_the_calendar_gives_an_apology() -> None:
    last_day = datetime(9999, 12, 31, tzinfo=UTC).timestamp()
    local = LocalModel(clock=lambda: last_day)
    assert (await local.answer("what's the date")).text == "Today is Friday, December 31, 9999."
    assert (await local.answer("what is the date in 10 days")).text == (
        "Sorry, I can't tell the date right now."
    )


def test_an_unknown_model_timezone_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="timezone"):
        LocalModel(timezone="Mars/Olympus_Mons")


# ---- arithmetic -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("what is 2 plus 3", "2 plus 3 is 5."),
        ("what is 6 times 7", "6 times 7 is 42."),
        ("calculate (4+5)*2", "(4 + 5) * 2 is 18."),
        ("12 divided by 4", "12 divided by 4 is 3."),
        ("10 divided by 4", "10 divided by 4 is 2.5."),
        ("what's 10 divided by 3?", "10 divided by 3 is 3.333333333."),
        ("what is the square root of 81", "The square root of 81 is 9."),
        ("what's 15% of 200", "15% of 200 is 30."),
        ("what is two to the power of ten", "Two to the power of ten is 1024."),
        ("what is 10 divided by 0", "You can't divide by zero, so 10 divided by 0 has no answer."),
        ("what is 5 mod 0", "You can't divide by zero, so 5 mod 0 has no answer."),
    ],
)
async def test_arithmetic(text: str, expected: str) -> None:
    assert await reply(text) == expected


async def test_arithmetic_without_an_answer_is_explained() -> None:
    assert await reply("square root of -4") == (
        "Square root of -4 has no answer (sqrt: math domain error)."
    )
    refused = await reply("what is 9 to the power of 99999")
    assert refused.startswith("Sorry, I can't work out 9 to the power of 99999")
    assert "4096 bits" in refused


async def test_arithmetic_it_cannot_read() -> None:
    answer = await model().answer("calculate the tip")
    assert answer.text.startswith("Sorry, I couldn't work out that sum.")
    assert answer.intent.name == "math"
    assert answer.actions == []


# ---- weather ----------------------------------------------------------------------------


class FakeWeather:
    """A ``weather.get`` provider answering with Loom's output shape, recording its calls."""

    def __init__(self, **output: Any) -> None:
        self.calls: list[dict[str, Any]] = []
        self.output = {
            "location": "Paris, France",
            "temperature": 12.4,
            "conditions": "partly cloudy",
            "humidity": 71,
            "wind_speed": 9.7,
            "units": "celsius",
            **output,
        }

    def broker(self) -> ActionBroker:
        @capability("weather.get", schema={"type": "object", "required": ["location"]})
        async def weather_get(args: dict[str, Any]) -> dict[str, Any]:
            self.calls.append(args)
            return self.output

        broker = ActionBroker()
        broker.register(weather_get)
        return broker


async def test_weather_through_the_broker() -> None:
    weather = FakeWeather()
    answer = await model(broker=weather.broker()).answer("what's the weather like in Paris?")
    assert answer.text == "It's 12°C and partly cloudy in Paris, France."
    assert weather.calls == [{"location": "Paris"}]
    assert answer.actions == []
    assert answer.confidence >= 0.9


async def test_weather_in_fahrenheit_asks_for_fahrenheit() -> None:
    weather = FakeWeather(location="New York, United States", temperature=71.5, units="fahrenheit")
    answer = await model(broker=weather.broker()).answer("how hot is it in New York in fahrenheit")
    assert answer.text == "It's 72°F and partly cloudy in New York, United States."
    assert weather.calls == [{"location": "New York", "units": "fahrenheit"}]


async def test_weather_without_conditions_and_for_tomorrow() -> None:
    weather = FakeWeather(location="London, United Kingdom", temperature=-0.6, conditions="unknown")
    answer = await model(broker=weather.broker()).answer("will it rain in London tomorrow")
    assert answer.text == (
        "I can only see the current weather. It's -1°C in London, United Kingdom."
    )


async def test_repeated_weather_questions_are_asked_again_not_cached() -> None:
    weather = FakeWeather()
    local = model(broker=weather.broker())
    await local.answer("weather in Paris")
    await local.answer("weather in Paris")
    assert len(weather.calls) == 2


async def test_weather_without_a_broker() -> None:
    answer = await model().answer("weather in Paris")
    assert answer.text == "Sorry, I can't check the weather for Paris right now."


async def test_weather_without_a_city_asks_for_one() -> None:
    weather = FakeWeather()
    answer = await model(broker=weather.broker()).answer("what's the weather like")
    assert answer.text == "Which city would you like the weather for?"
    assert weather.calls == []
    assert 0.5 <= answer.confidence <= 0.8


async def failing_broker(error: Exception) -> ActionBroker:
    @capability("weather.get")
    async def weather_get(args: dict[str, Any]) -> dict[str, Any]:
        raise error

    broker = ActionBroker()
    broker.register(weather_get)
    return broker


@pytest.mark.parametrize(
    "error",
    [
        ActionFailure(
            "WEATHER_FETCH_FAILED", "Failed to get weather: Location not found: Atlantis"
        ),
        RuntimeError("the provider broke"),
    ],
)
async def test_weather_when_the_provider_fails(error: Exception) -> None:
    local = model(broker=await failing_broker(error))
    answer = await local.answer("weather in Atlantis")
    assert answer.text == "Sorry, I can't check the weather for Atlantis right now."


@pytest.mark.parametrize(
    "output",
    [{"temperature": "warm"}, {"temperature": None}, {"temperature": True}],
)
async def test_weather_with_an_unusable_output(output: dict[str, Any]) -> None:
    weather = FakeWeather(**output)
    answer = await model(broker=weather.broker()).answer("weather in Paris")
    assert answer.text == "Sorry, I can't check the weather for Paris right now."


class BrokenBroker(ActionBroker):
    async def invoke(self, call: ActionCall) -> ActionResult:
        raise RuntimeError("the broker is broken")


async def test_weather_with_a_broker_that_raises() -> None:
    answer = await model(broker=BrokenBroker()).answer("weather in Paris")
    assert answer.text == "Sorry, I can't check the weather for Paris right now."


async def test_weather_with_no_provider_registered() -> None:
    answer = await model(broker=ActionBroker()).answer("weather in Paris")
    assert answer.text == "Sorry, I can't check the weather for Paris right now."


# ---- lights and timers ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected", "args"),
    [
        (
            "turn on the kitchen lights",
            "Turning on the kitchen lights.",
            {"room": "kitchen", "on": True},
        ),
        (
            "switch off the lights in the bedroom",
            "Turning off the bedroom lights.",
            {"room": "bedroom", "on": False},
        ),
        ("lights off", "Turning off the lights.", {"on": False}),
    ],
)
async def test_lights(text: str, expected: str, args: dict[str, Any]) -> None:
    answer = await model().answer(text)
    assert answer.text == expected
    assert answer.actions == [{"capability": "lights.set", "args": args}]
    json.dumps(answer.actions)  # actions are plain JSON


async def test_lights_without_a_state_ask_and_do_nothing() -> None:
    answer = await model().answer("the kitchen lights")
    assert answer.text == "Should I turn the kitchen lights on or off?"
    assert answer.actions == []


@pytest.mark.parametrize(
    ("text", "expected", "args"),
    [
        ("set a timer for 5 minutes", "Timer set for 5 minutes.", {"seconds": 300}),
        ("timer 90 seconds", "Timer set for 1 minute and 30 seconds.", {"seconds": 90}),
        ("timer for one second", "Timer set for 1 second.", {"seconds": 1}),
        (
            "set a timer for 1 hour 2 minutes and 3 seconds",
            "Timer set for 1 hour, 2 minutes and 3 seconds.",
            {"seconds": 3723},
        ),
        (
            "remind me in an hour and a half to stretch",
            "OK, I'll remind you to stretch in 1 hour and 30 minutes.",
            {"seconds": 5400, "label": "stretch"},
        ),
    ],
)
async def test_timers(text: str, expected: str, args: dict[str, Any]) -> None:
    answer = await model().answer(text)
    assert answer.text == expected
    assert answer.actions == [{"capability": "timer.set", "args": args}]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("set a timer", "For how long should I set the timer?"),
        ("set a timer for 9 days", "Timers can run from 1 second to 7 days."),
    ],
)
async def test_timers_that_are_not_set(text: str, expected: str) -> None:
    answer = await model().answer(text)
    assert answer.text == expected
    assert answer.actions == []


def test_the_longest_timer_is_a_week() -> None:
    assert MAX_TIMER_SECONDS == 7 * 24 * 3600


# ---- greeting, help, unknown ------------------------------------------------------------


async def test_greeting_help_and_unknown() -> None:
    local = model()
    assert (await local.answer("hey loom")).text == "Hello! How can I help?"
    assert (await local.answer("thanks!")).text == "You're welcome!"
    assert "the weather" in (await local.answer("what can you do?")).text
    unknown = await local.answer("play some jazz")
    assert unknown.text.startswith("Sorry, I didn't understand")
    assert unknown.confidence < 0.3
    assert unknown == LocalAnswer(unknown.text, understand("play some jazz"), [])


# ---- the router's confidence estimator ----------------------------------------------------


def test_estimator_identity_and_supported_types() -> None:
    local = model(timezone="Europe/Paris")
    assert local.name == "loomk-local"
    assert repr(local) == "LocalModel(timezone='Europe/Paris', broker=False)"
    for supported in (
        "user.query",
        "transcript.final",
        "intent",
        "text",
        "chat.message",
        "collab.request",
        "voice.query",
        "ocr.text",
    ):
        assert local.supports_event_type(supported), supported
    for unsupported in ("audio_chunk", "video_frame", "face_event", "routing_decision", "textual"):
        assert not local.supports_event_type(unsupported), unsupported


@pytest.mark.parametrize(
    ("event", "low", "high"),
    [
        (Event("user.query", b"what time is it"), 0.9, 1.0),
        (Event("transcript.final", b"hey loom, turn on the kitchen lights"), 0.9, 1.0),
        (Event("user.query", b"what's the weather"), 0.5, 0.8),
        (Event("user.query", b"play some jazz"), 0.0, 0.29),
        (Event("chat.message", json.dumps({"text": "what is 6 times 7"}).encode()), 0.9, 1.0),
        (Event("user.query", b"", metadata={"text": "set a timer for 5 minutes"}), 0.9, 1.0),
        (Event("user.query", b""), 0.0, 0.0),
        (Event("user.query", b"{not json, what time is it"), 0.9, 1.0),
    ],
)
async def test_estimate_confidence(event: Event, low: float, high: float) -> None:
    assert low <= await model().estimate_confidence(event) <= high


async def test_invalid_utf8_has_no_confidence() -> None:
    event = Event("user.query", b"what time \xff\xfe is it")
    assert event_text(event) is None
    assert await model().estimate_confidence(event) == 0.0


async def test_estimate_matches_the_answer() -> None:
    local = model()
    text = "switch off the lights in the bedroom"
    estimate = await local.estimate_confidence(Event("user.query", text.encode()))
    assert estimate == (await local.answer(text)).confidence


# ---- llm.generate -----------------------------------------------------------------------


def generate_broker(local: LocalModel) -> ActionBroker:
    broker = ActionBroker()
    broker.register(LLMGenerateProvider(local.generate))
    return broker


async def generate(broker: ActionBroker, payload: Any) -> dict[str, Any]:
    result = await broker.invoke(ActionCall.with_args(f"g{next(_ids)}", "llm.generate", payload))
    assert result.ok, result
    output: dict[str, Any] = result.json()
    return output


async def test_generate_through_the_broker() -> None:
    output = await generate(generate_broker(model()), {"input": "what is 6 times 7"})
    assert "42" in output["text"]
    assert output["text"] == "6 times 7 is 42."
    assert output["provider"] == "local"
    assert output["model"] == "loomk-local"
    assert output["usage"] == {"prompt_tokens": 5, "completion_tokens": 5, "total_tokens": 10}


async def test_generate_reads_the_bundle() -> None:
    broker = generate_broker(model())
    output = await generate(
        broker,
        {"bundle": {"system": "You are Loom.", "instructions": "what time is it in Tokyo"}},
    )
    assert output["text"] == "It's 7:13 AM in Tokyo."
    from_history = await generate(
        broker, {"bundle": {"history": ["hello", "user: set a timer for 5 minutes"]}}
    )
    assert from_history["text"] == "Timer set for 5 minutes."
    empty = await generate(broker, {"bundle": {}})
    assert empty["text"].startswith("Sorry, I didn't understand")


async def test_generate_returns_the_intent_and_actions() -> None:
    output = await model().generate(
        {"bundle": {"instructions": "turn on the kitchen lights"}, "budget": {}, "stream": False}
    )
    assert output["intent"] == "lights"
    assert output["confidence"] >= 0.9
    assert output["actions"] == [
        {"capability": "lights.set", "args": {"room": "kitchen", "on": True}}
    ]
    assert output["text"] == "Turning on the kitchen lights."
    assert output["usage"]["total_tokens"] == 5 + 5


async def test_generate_asks_the_weather_through_its_own_broker() -> None:
    weather = FakeWeather()
    output = await generate(
        generate_broker(model(broker=weather.broker())), {"input": "weather in Paris"}
    )
    assert output["text"] == "It's 12°C and partly cloudy in Paris, France."
