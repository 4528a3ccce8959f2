"""``llm.generate`` on the real client: the ``generate`` function of :class:`LLMGenerateProvider`.

The provider (``loomk.actions.providers.llm``) validates the capability's payload and hands
over a normalised request ``{bundle, budget, stream, overrides}``; :func:`client_generate`
answers it with :meth:`LLMClient.generate` and returns Loom's output shape ``{text, model,
provider, usage}``. The call headers Loom lets override the client's settings (``model``,
``base_url``, ``temperature``, ``request_timeout_ms``) apply to that one call; the shared
client and its credentials are reused, and the API key cannot be overridden. An
:class:`~loomk.errors.LLMError` keeps its code, which becomes the ActionResult's code.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import trio

from loomk.actions.providers.llm import GenerateFunction
from loomk.llm.client._client import LLMClient
from loomk.llm.client.prompt import PromptBundle, TokenBudget

__all__ = ["client_generate"]

_DEADLINE_MARGIN_S = 0.05


def _overrides(overrides: object) -> dict[str, Any]:
    """The keyword overrides for :meth:`LLMClient.generate`; unusable values are ignored,
    as Loom ignores headers that do not parse."""
    if not isinstance(overrides, Mapping):
        return {}
    found: dict[str, Any] = {}
    for key in ("model", "base_url"):
        value = overrides.get(key)
        if isinstance(value, str) and value.strip():
            found[key] = value.strip()
    temperature = overrides.get("temperature")
    if (
        isinstance(temperature, int | float)
        and not isinstance(temperature, bool)
        and math.isfinite(temperature)
        and temperature >= 0
    ):
        found["temperature"] = float(temperature)
    timeout_ms = overrides.get("request_timeout_ms")
    if isinstance(timeout_ms, int) and not isinstance(timeout_ms, bool) and timeout_ms > 0:
        found["timeout_s"] = timeout_ms / 1000
    return found


def client_generate(client: LLMClient) -> GenerateFunction:
    """A ``generate`` function for :class:`LLMGenerateProvider` answering with ``client``
    (which must be open while calls run)."""

    async def generate(request: dict[str, Any]) -> dict[str, Any]:
        bundle = PromptBundle.from_dict(request.get("bundle", {}))
        budget = TokenBudget.from_dict(request.get("budget", {}))
        # The broker runs this under the call's deadline: finish a little before it, so a
        # hang or a long Retry-After ends with the client's code, not ACTION_TIMEOUT.
        deadline = trio.current_effective_deadline() - _DEADLINE_MARGIN_S
        reply = await client.generate(
            bundle,
            budget,
            stream=request.get("stream") is True,
            deadline=deadline if math.isfinite(deadline) else None,
            **_overrides(request.get("overrides")),
        )
        return reply.as_output()

    generate.__qualname__ = f"client_generate({client!r})"
    return generate
