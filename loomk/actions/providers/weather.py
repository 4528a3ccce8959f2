"""``weather.get``: current weather for a place name, from Open-Meteo (no API key needed).

Loom's provider, kept to the letter: the place is geocoded first, then its current
conditions are fetched; units are celsius or fahrenheit ("c"/"f" too, anything else counts
as celsius); a blank location fails with ``INVALID_LOCATION``; every fetch, parse or
unknown-place failure is ``WEATHER_FETCH_FAILED`` ("Failed to get weather: ..."). The whole
call, both requests together, is bounded by one timeout.
"""

from __future__ import annotations

import contextlib
import json
import math
from decimal import Decimal
from typing import Any

import trio

from loomk.actions.provider import ActionFailure, FunctionProvider
from loomk.actions.providers._http import FetchError, get_json, loom_quote
from loomk.actions.types import ActionCall, ActionResult, CapabilityDescriptor, ProviderKind
from loomk.errors import CapabilityError

__all__ = [
    "DEFAULT_FORECAST_URL",
    "DEFAULT_GEOCODING_URL",
    "INVALID_LOCATION",
    "WEATHER_FETCH_FAILED",
    "WeatherProvider",
    "describe_weather_code",
]

DEFAULT_GEOCODING_URL = "https://geocoding-api.open-meteo.com/v1/search"
DEFAULT_FORECAST_URL = "https://api.open-meteo.com/v1/forecast"
INVALID_LOCATION = "INVALID_LOCATION"
WEATHER_FETCH_FAILED = "WEATHER_FETCH_FAILED"

_DESCRIPTION = "Get current weather information for a location"
_SCHEMA: dict[str, Any] = {  # what models are told: Loom's schema, word for word
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
# What is enforced: less than what is advertised, since Loom takes "c", "F" or "kelvin"
# (as celsius) without complaint.
_ACCEPTED: dict[str, Any] = {
    "type": "object",
    "properties": {"location": {"type": "string"}},
    "required": ["location"],
}
_CURRENT = "temperature_2m,relative_humidity_2m,wind_speed_10m,weather_code"

_WMO: dict[int, str] = {
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


def describe_weather_code(code: int) -> str:
    """A WMO weather code in words, as Loom words it ("unknown" for codes it does not map)."""
    return _WMO.get(code, "unknown")


class WeatherProvider:
    """The ``weather.get`` capability (version 0.1.0).

    Payload ``{location, units?}``; output ``{location: "Name, Country", temperature,
    conditions, humidity, wind_speed, units}``. ``timeout_s`` bounds the whole call.
    """

    def __init__(
        self,
        *,
        timeout_s: float = 10.0,
        geocoding_url: str = DEFAULT_GEOCODING_URL,
        forecast_url: str = DEFAULT_FORECAST_URL,
    ) -> None:
        if not (isinstance(timeout_s, int | float) and 0 < timeout_s < math.inf):
            raise CapabilityError(f"timeout_s must be a positive number, got {timeout_s!r}")
        self.timeout_s = float(timeout_s)
        self.geocoding_url = geocoding_url
        self.forecast_url = forecast_url
        metadata = {"desc": _DESCRIPTION, "schema": json.dumps(_SCHEMA)}
        self._descriptor = CapabilityDescriptor(
            "weather.get", "0.1.0", ProviderKind.PROVIDER_NATIVE, metadata
        )
        checked = CapabilityDescriptor(
            "weather.get", "0.1.0", metadata={"schema": json.dumps(_ACCEPTED)}
        )
        self._checked = FunctionProvider(self._get, checked)

    @property
    def descriptor(self) -> CapabilityDescriptor:
        """``weather.get`` 0.1.0 with Loom's ``desc`` and ``schema`` metadata."""
        return self._descriptor

    async def invoke(self, call: ActionCall) -> ActionResult:
        """Geocode the location, fetch its current weather; failures are results."""
        return await self._checked.invoke(call)

    async def _get(self, args: dict[str, Any]) -> dict[str, Any]:
        location: str = args["location"]
        units = _units(args.get("units"))
        if not location.strip():
            raise ActionFailure(INVALID_LOCATION, "Location parameter cannot be empty")
        deadline = trio.current_time() + self.timeout_s
        try:
            geocoded = await get_json(
                _with_query(self.geocoding_url, f"name={loom_quote(location)}")
                + "&count=1&language=en&format=json",
                what="Geocoding API",
                timeout_s=deadline - trio.current_time(),
            )
            latitude, longitude, place = _place(geocoded, location)
            wind_unit = "mph" if units == "fahrenheit" else "kmh"
            query = (
                f"latitude={_coordinate(latitude)}&longitude={_coordinate(longitude)}"
                f"&current={_CURRENT}&temperature_unit={units}&wind_speed_unit={wind_unit}"
            )
            forecast = await get_json(
                _with_query(self.forecast_url, query),
                what="Weather API",
                timeout_s=deadline - trio.current_time(),
            )
            current = _current(forecast)
        except FetchError as error:
            raise ActionFailure(WEATHER_FETCH_FAILED, f"Failed to get weather: {error}") from None
        return {"location": place, **current, "units": units}

    def __repr__(self) -> str:
        return f"WeatherProvider({self.geocoding_url}, {self.forecast_url})"


def _units(value: object) -> str:
    """Loom's reading of ``units``: fahrenheit for "fahrenheit"/"f" in any case, else
    celsius."""
    if isinstance(value, str) and value.lower() in ("fahrenheit", "f"):
        return "fahrenheit"
    return "celsius"


def _with_query(url: str, query: str) -> str:
    return f"{url}{'&' if '?' in url else '?'}{query}"


def _coordinate(value: float) -> str:
    """A coordinate as Rust prints an f64 (as Loom sent it): shortest digits, no exponent,
    no trailing ``.0``."""
    text = format(Decimal(repr(float(value))), "f")
    return text.rstrip("0").rstrip(".") if "." in text else text


def _place(document: Any, location: str) -> tuple[float, float, str]:
    """Latitude, longitude and "Name, Country" of the first geocoding result."""
    if not isinstance(document, dict):
        raise FetchError("Failed to parse geocoding response: not a JSON object")
    results = document.get("results")
    if results is None or results == []:
        raise FetchError(f"Location not found: {location}")
    first = results[0] if isinstance(results, list) else None
    if not isinstance(first, dict):
        raise FetchError("Failed to parse geocoding response: results is not a list of places")
    name = first.get("name")
    country = first.get("country")
    if not isinstance(name, str) or not isinstance(country, str | None):
        raise FetchError("Failed to parse geocoding response: name or country is not a string")
    latitude = _real(first.get("latitude"), "geocoding", "latitude")
    longitude = _real(first.get("longitude"), "geocoding", "longitude")
    return latitude, longitude, f"{name}, {country}" if country is not None else name


def _current(document: Any) -> dict[str, Any]:
    """Temperature, conditions, humidity and wind speed from a forecast's ``current``."""
    current = document.get("current") if isinstance(document, dict) else None
    if not isinstance(current, dict):
        raise FetchError("Failed to parse weather response: no current conditions")
    return {
        "temperature": _real(current.get("temperature_2m"), "weather", "temperature_2m"),
        "conditions": describe_weather_code(
            _whole(current.get("weather_code"), "weather", "weather_code")
        ),
        "humidity": _whole(current.get("relative_humidity_2m"), "weather", "relative_humidity_2m"),
        "wind_speed": _real(current.get("wind_speed_10m"), "weather", "wind_speed_10m"),
    }


def _real(value: object, response: str, field: str) -> float:
    number = math.nan
    if isinstance(value, int | float) and not isinstance(value, bool):
        with contextlib.suppress(OverflowError):  # an integer beyond any float stays NaN
            number = float(value)
    if not math.isfinite(number):  # also NaN and Infinity, which Python's JSON accepts
        raise FetchError(f"Failed to parse {response} response: {field} is not a number")
    return number


def _whole(value: object, response: str, field: str) -> int:
    number = _real(value, response, field)
    if not number.is_integer():
        raise FetchError(f"Failed to parse {response} response: {field} is not an integer")
    return int(number)
