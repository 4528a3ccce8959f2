"""``weather.get`` through a real broker against a loopback server speaking Open-Meteo's
geocoding and forecast JSON, as Loom's provider uses them: the requests it sends, the output it
builds, Loom's error codes, and its timeout on a MockClock.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
import trio
import trio.testing
from httpserver import Request, Response, serve_http

from loomk.actions import ActionBroker, ActionCall, ActionResult, ActionStatus, ErrorCode
from loomk.actions.providers import WeatherProvider, builtin_providers

LONDON = {
    "results": [
        {
            "id": 2643743,
            "name": "London",
            "latitude": 51.50853,
            "longitude": -0.12574,
            "elevation": 25.0,
            "country_code": "GB",
            "timezone": "Europe/London",
            "country": "United Kingdom",
        }
    ],
    "generationtime_ms": 0.7,
}
CURRENT = "temperature_2m,relative_humidity_2m,wind_speed_10m,weather_code"
TIMEOUT_S = 3.0
_ids = itertools.count()


def forecast(
    temperature: Any = 12.5, humidity: Any = 81, wind: Any = 14.8, code: Any = 61
) -> dict[str, Any]:
    return {
        "latitude": 51.5,
        "longitude": -0.12,
        "current_units": {"temperature_2m": "°C", "wind_speed_10m": "km/h"},
        "current": {
            "time": "2024-05-01T12:00",
            "interval": 900,
            "temperature_2m": temperature,
            "relative_humidity_2m": humidity,
            "wind_speed_10m": wind,
            "weather_code": code,
        },
    }


def open_meteo(
    geocode: Response | None = None, weather: Response | None = None
) -> Callable[[Request], Awaitable[Response]]:
    """Open-Meteo on /v1/search and /v1/forecast (London, light rain unless told)."""

    async def handler(request: Request) -> Response:
        if request.path == "/v1/search":
            return geocode or Response.json_body(LONDON)
        if request.path == "/v1/forecast":
            return weather or Response.json_body(forecast())
        return Response(404)

    return handler


def broker_for(url: str, timeout_s: float = TIMEOUT_S) -> ActionBroker:
    """A broker with the built-ins, weather pointed at ``url``."""
    broker = ActionBroker(default_timeout_s=60.0)
    for provider in builtin_providers(
        http_timeout_s=timeout_s,
        weather_geocoding_url=f"{url}/v1/search",
        weather_forecast_url=f"{url}/v1/forecast",
        search_url=f"{url}/unused",
    ):
        broker.register(provider)
    return broker


async def get_weather(broker: ActionBroker, args: Any) -> ActionResult:
    return await broker.invoke(ActionCall.with_args(f"w{next(_ids)}", "weather.get", args))


def assert_failed(result: ActionResult, code: str, *fragments: str) -> None:
    assert result.status is ActionStatus.ACTION_ERROR, result
    assert result.code == code, result
    assert result.output == b""
    assert result.error is not None
    for fragment in fragments:
        assert fragment in result.error.message, result.error.message


async def closed_port() -> int:
    """A loopback port nothing listens on."""
    with trio.socket.socket() as sock:
        await sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


# --- success -----------------------------------------------------------------------------


async def test_geocodes_then_fetches_the_current_weather() -> None:
    async with serve_http(open_meteo()) as server:
        result = await get_weather(broker_for(server.url), {"location": "London"})
    assert result.ok, result
    assert result.json() == {
        "location": "London, United Kingdom",
        "temperature": 12.5,
        "conditions": "rain",
        "humidity": 81,
        "wind_speed": 14.8,
        "units": "celsius",
    }
    geocode, weather = server.requests
    assert (geocode.method, geocode.path) == ("GET", "/v1/search")
    assert geocode.query == {"name": "London", "count": "1", "language": "en", "format": "json"}
    assert geocode.headers["user-agent"] == "loomk/0.1"
    assert (weather.method, weather.path) == ("GET", "/v1/forecast")
    assert weather.query == {
        "latitude": "51.50853",
        "longitude": "-0.12574",
        "current": CURRENT,
        "temperature_unit": "celsius",
        "wind_speed_unit": "kmh",
    }
    assert weather.headers["user-agent"] == "loomk/0.1"


@pytest.mark.parametrize(
    ("units", "expected"),
    [
        ("fahrenheit", "fahrenheit"),
        ("Fahrenheit", "fahrenheit"),
        ("f", "fahrenheit"),
        ("F", "fahrenheit"),
        ("celsius", "celsius"),
        ("C", "celsius"),
        ("kelvin", "celsius"),
        (7, "celsius"),
    ],
)
async def test_units_are_read_as_loom_reads_them(units: Any, expected: str) -> None:
    async with serve_http(open_meteo()) as server:
        result = await get_weather(broker_for(server.url), {"location": "London", "units": units})
    assert result.ok, result
    assert result.json()["units"] == expected
    query = server.requests[1].query
    assert query["temperature_unit"] == expected
    assert query["wind_speed_unit"] == ("mph" if expected == "fahrenheit" else "kmh")


async def test_the_location_is_encoded_as_loom_encodes_it() -> None:
    async with serve_http(open_meteo()) as server:
        result = await get_weather(broker_for(server.url), {"location": "São Paulo & co~"})
    assert result.ok, result
    target = server.requests[0].target
    assert target.startswith("/v1/search?name=S%C3%A3o+Paulo+%26+co~&count=1&")
    assert server.requests[0].query["name"] == "São Paulo & co~"


async def test_a_place_without_a_country_is_named_alone_and_whole_coordinates_lose_dot_zero() -> (
    None
):
    place = {"results": [{"name": "Null Island", "latitude": 0.0, "longitude": 1e-7}]}
    handler = open_meteo(geocode=Response.json_body(place))
    async with serve_http(handler) as server:
        result = await get_weather(broker_for(server.url), {"location": "null island"})
    assert result.ok, result
    assert result.json()["location"] == "Null Island"
    query = server.requests[1].query
    assert (query["latitude"], query["longitude"]) == ("0", "0.0000001")


WMO = {
    0: "clear sky",
    1: "mainly clear",
    2: "partly cloudy",
    3: "overcast",
    45: "foggy",
    48: "foggy",
    51: "drizzle",
    53: "drizzle",
    55: "drizzle",
    61: "rain",
    63: "rain",
    65: "rain",
    71: "snow",
    73: "snow",
    75: "snow",
    77: "snow grains",
    80: "rain showers",
    81: "rain showers",
    82: "rain showers",
    85: "snow showers",
    86: "snow showers",
    95: "thunderstorm",
    96: "thunderstorm with hail",
    99: "thunderstorm with hail",
}


async def test_every_wmo_code_is_worded_as_in_loom_and_others_are_unknown() -> None:
    codes = {**WMO, 4: "unknown", 56: "unknown", 100: "unknown", -1: "unknown"}
    current = {"code": 0}

    async def handler(request: Request) -> Response:
        if request.path == "/v1/search":
            return Response.json_body(LONDON)
        return Response.json_body(forecast(code=current["code"]))

    async with serve_http(handler) as server:
        broker = broker_for(server.url)
        for code, words in codes.items():
            current["code"] = code
            result = await get_weather(broker, {"location": "London"})
            assert result.ok, result
            assert result.json()["conditions"] == words, code


async def test_whole_floats_from_the_service_are_accepted() -> None:
    weather = Response.json_body(forecast(temperature=20, humidity=55.0, wind=3, code=2.0))
    async with serve_http(open_meteo(weather=weather)) as server:
        result = await get_weather(broker_for(server.url), {"location": "London"})
    assert result.ok, result
    output = result.json()
    assert (output["temperature"], output["humidity"], output["wind_speed"]) == (20.0, 55, 3.0)
    assert output["conditions"] == "partly cloudy"
    assert isinstance(output["humidity"], int)


# --- the descriptor ----------------------------------------------------------------------


def test_the_descriptor_carries_loom_desc_and_schema() -> None:
    descriptor = WeatherProvider().descriptor
    assert descriptor.key == "weather.get:0.1.0"
    assert descriptor.description == "Get current weather information for a location"
    assert descriptor.schema() == {
        "type": "object",
        "properties": {
            "location": {
                "type": "string",
                "description": "City or location name (e.g., 'Beijing', 'New York', 'London')",
            },
            "units": {
                "type": "string",
                "description": "Temperature units",
                "enum": ["celsius", "fahrenheit"],
                "default": "celsius",
            },
        },
        "required": ["location"],
    }


def test_builtin_providers_offer_the_four_capabilities() -> None:
    broker = ActionBroker()
    for provider in builtin_providers():
        broker.register(provider)
    keys = [descriptor.key for descriptor in broker.list_capabilities()]
    assert keys == ["math.eval:0.1.0", "time.now:0.1.0", "weather.get:0.1.0", "web.search:0.1.0"]


@pytest.mark.parametrize("timeout_s", [0, -1.0, float("nan"), float("inf")])
def test_a_timeout_that_is_not_a_positive_number_is_refused(timeout_s: float) -> None:
    with pytest.raises(ValueError, match="timeout_s"):
        WeatherProvider(timeout_s=timeout_s)


# --- bad payloads ------------------------------------------------------------------------


@pytest.mark.parametrize("location", ["", "   ", "\t\n"])
async def test_a_blank_location_is_invalid_location_and_nothing_is_fetched(
    location: str,
) -> None:
    async with serve_http(open_meteo()) as server:
        result = await get_weather(broker_for(server.url), {"location": location})
    assert_failed(result, "INVALID_LOCATION", "Location parameter cannot be empty")
    assert server.requests == []


@pytest.mark.parametrize(
    "payload",
    [b"{}", b'{"units": "celsius"}', b'{"location": 42}', b'{"location": null}', b"not json"],
)
async def test_a_missing_or_mistyped_location_is_invalid_params(payload: bytes) -> None:
    async with serve_http(open_meteo()) as server:
        result = await get_weather(broker_for(server.url), payload)
    assert_failed(result, ErrorCode.INVALID_PARAMS)
    assert server.requests == []


# --- the service failing -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("geocode", "weather", "fragment"),
    [
        (Response(500, b"oops"), None, "Geocoding API returned status: 500"),
        (None, Response(503), "Weather API returned status: 503"),
        (Response(200, b"{not json"), None, "Failed to parse Geocoding API response"),
        (None, Response(200, b"<html>"), "Failed to parse Weather API response"),
        (None, Response.json_body({"current": {}}), "temperature_2m is not a number"),
        (None, Response.json_body({"hourly": {}}), "no current conditions"),
        (None, Response.json_body(forecast(humidity=81.5)), "relative_humidity_2m"),
        (None, Response.json_body(forecast(temperature="warm")), "temperature_2m"),
        (None, Response.json_body(forecast(wind=True)), "wind_speed_10m"),
        (None, Response(200, b'{"current": {"temperature_2m": NaN}}'), "temperature_2m"),
        (Response.json_body([LONDON]), None, "not a JSON object"),
        (Response.json_body({"results": {"name": "x"}}), None, "not a list of places"),
        (Response.json_body({"results": [{"name": "x"}]}), None, "latitude is not a number"),
        (Response.json_body({"results": [{"latitude": 1, "longitude": 2}]}), None, "name"),
        (Response(200, chunks=[b'{"results": [{"na'], cut=True), None, "request failed"),
    ],
)
async def test_any_fetch_or_parse_failure_is_weather_fetch_failed(
    geocode: Response | None, weather: Response | None, fragment: str
) -> None:
    async with serve_http(open_meteo(geocode, weather)) as server:
        result = await get_weather(broker_for(server.url), {"location": "London"})
    assert_failed(result, "WEATHER_FETCH_FAILED", "Failed to get weather: ", fragment)


@pytest.mark.parametrize("answer", [{"generationtime_ms": 0.4}, {"results": []}])
async def test_an_unknown_place_is_weather_fetch_failed_without_a_forecast(
    answer: dict[str, Any],
) -> None:
    handler = open_meteo(geocode=Response.json_body(answer))
    async with serve_http(handler) as server:
        result = await get_weather(broker_for(server.url), {"location": "Nowhere Town"})
    assert_failed(result, "WEATHER_FETCH_FAILED", "Failed to get weather: Location not found")
    assert result.error is not None
    assert result.error.message.endswith("Location not found: Nowhere Town")
    assert [request.path for request in server.requests] == ["/v1/search"]


async def test_connection_refused_is_weather_fetch_failed() -> None:
    port = await closed_port()
    result = await get_weather(broker_for(f"http://127.0.0.1:{port}"), {"location": "London"})
    assert_failed(result, "WEATHER_FETCH_FAILED", "Failed to get weather: ", "request failed")


@pytest.mark.parametrize("hanging", ["/v1/search", "/v1/forecast"])
async def test_a_hanging_service_fails_within_the_timeout(
    autojump_clock: trio.testing.MockClock, hanging: str
) -> None:
    async def handler(request: Request) -> Response:
        if request.path == hanging:
            return Response(hang=True)
        return await open_meteo()(request)

    async with serve_http(handler) as server:
        started = trio.current_time()
        result = await get_weather(broker_for(server.url), {"location": "London"})
        elapsed = trio.current_time() - started
    assert_failed(result, "WEATHER_FETCH_FAILED", "Failed to get weather: ")
    assert elapsed == pytest.approx(TIMEOUT_S, abs=0.01)  # one budget for both requests
    assert server.requests[-1].path == hanging


async def test_results_are_json_with_loom_field_types() -> None:
    async with serve_http(open_meteo()) as server:
        result = await get_weather(broker_for(server.url), {"location": "London", "units": "f"})
    output = json.loads(result.output)
    assert list(output) == [
        "location",
        "temperature",
        "conditions",
        "humidity",
        "wind_speed",
        "units",
    ]
    assert isinstance(output["temperature"], float)
    assert isinstance(output["wind_speed"], float)


async def test_a_shorter_broker_deadline_cancels_the_request_cleanly(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with serve_http(open_meteo(geocode=Response(hang=True))) as server:
        broker = broker_for(server.url, timeout_s=10.0)
        call = ActionCall.with_args("deadline", "weather.get", {"location": "x"}, timeout_ms=500)
        started = trio.current_time()
        result = await broker.invoke(call)
        elapsed = trio.current_time() - started
    assert result.status is ActionStatus.ACTION_TIMEOUT
    assert result.code == ErrorCode.ACTION_TIMEOUT
    assert elapsed == pytest.approx(0.5, abs=0.01)
