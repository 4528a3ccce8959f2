"""The built-in capability providers: ``time.now``, ``math.eval``, ``weather.get``,
``web.search``, and the ``llm.generate`` seam a model client plugs into.

:func:`builtin_providers` makes the four that need nothing but the network; register them
with ``for provider in builtin_providers(): broker.register(provider)``.
"""

from __future__ import annotations

from loomk.actions.provider import CapabilityProvider
from loomk.actions.providers.llm import LLM_ERROR, GenerateFunction, LLMGenerateProvider
from loomk.actions.providers.math_eval import MATH_ERROR, math_eval_provider
from loomk.actions.providers.time_now import time_now_provider
from loomk.actions.providers.weather import (
    DEFAULT_FORECAST_URL,
    DEFAULT_GEOCODING_URL,
    INVALID_LOCATION,
    WEATHER_FETCH_FAILED,
    WeatherProvider,
)
from loomk.actions.providers.web_search import (
    DEFAULT_SEARCH_URL,
    INVALID_QUERY,
    SEARCH_FAILED,
    WebSearchProvider,
)

__all__ = [
    "INVALID_LOCATION",
    "INVALID_QUERY",
    "LLM_ERROR",
    "MATH_ERROR",
    "SEARCH_FAILED",
    "WEATHER_FETCH_FAILED",
    "GenerateFunction",
    "LLMGenerateProvider",
    "WeatherProvider",
    "WebSearchProvider",
    "builtin_providers",
    "math_eval_provider",
    "time_now_provider",
]


def builtin_providers(
    *,
    http_timeout_s: float = 10.0,
    weather_geocoding_url: str | None = None,
    weather_forecast_url: str | None = None,
    search_url: str | None = None,
) -> list[CapabilityProvider]:
    """``time.now``, ``math.eval``, ``weather.get`` and ``web.search``, ready to register.

    The URLs default to the public Open-Meteo and DuckDuckGo endpoints; ``http_timeout_s``
    bounds each weather or search call.
    """
    return [
        time_now_provider(),
        math_eval_provider(),
        WeatherProvider(
            timeout_s=http_timeout_s,
            geocoding_url=weather_geocoding_url or DEFAULT_GEOCODING_URL,
            forecast_url=weather_forecast_url or DEFAULT_FORECAST_URL,
        ),
        WebSearchProvider(timeout_s=http_timeout_s, url=search_url or DEFAULT_SEARCH_URL),
    ]
