"""``llm.generate``: the seam between the action broker and a language-model client.

The provider owns Loom's contract for the capability (payload ``{input?, bundle?, budget?,
stream?}``, output ``{text, model, provider, usage}``, failures ``LLM_ERROR``); the model
call itself is a function handed to it, so the real client and test doubles plug in alike.
That function receives one normalised request::

    {"bundle": {"system", "instructions", "tools_json_schema", "context_docs", "history"},
     "budget": {"max_input_tokens", "max_output_tokens"},
     "stream": bool,
     "overrides": {"model"?, "base_url"?, "temperature"?, "request_timeout_ms"?}}

``overrides`` carries the call headers Loom lets override the client's settings per call.
"""

from __future__ import annotations

import json
import math
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import fastjsonschema

from loomk.actions.provider import ActionFailure, compiled_schema
from loomk.actions.types import (
    ActionCall,
    ActionResult,
    CapabilityDescriptor,
    ErrorCode,
    ProviderKind,
)
from loomk.errors import CapabilityError

__all__ = ["DEFAULT_BUDGET", "LLM_ERROR", "GenerateFunction", "LLMGenerateProvider"]

LLM_ERROR = "LLM_ERROR"
DEFAULT_BUDGET: dict[str, int] = {"max_input_tokens": 2048, "max_output_tokens": 512}

GenerateFunction = Callable[[dict[str, Any]], Awaitable[dict[str, Any]]]

_TEXTS: dict[str, Any] = {"type": "array", "items": {"type": "string"}}
_TOKENS: dict[str, Any] = {"type": "integer", "minimum": 1}
_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "input": {"type": "string", "description": "The prompt, when there is no bundle"},
        "bundle": {
            "type": "object",
            "properties": {
                "system": {"type": "string"},
                "instructions": {"type": "string"},
                "tools_json_schema": {"type": ["string", "null"]},
                "context_docs": _TEXTS,
                "history": _TEXTS,
            },
        },
        "budget": {
            "type": "object",
            "properties": {"max_input_tokens": _TOKENS, "max_output_tokens": _TOKENS},
        },
        "stream": {"type": "boolean"},
    },
}
_BUNDLE_DEFAULTS: dict[str, Any] = {
    "system": "",
    "instructions": "",
    "tools_json_schema": None,
    "context_docs": [],
    "history": [],
}


class LLMGenerateProvider:
    """The ``llm.generate`` capability (version 0.1.0) over a ``generate`` function.

    ``generate`` takes the normalised request (see the module notes) and returns
    ``{text, model?, provider?, usage?}``. An exception it raises fails the call with the
    exception's ``code`` attribute when that is a string, else with ``LLM_ERROR``.
    """

    def __init__(self, generate: GenerateFunction) -> None:
        if not callable(generate):
            raise CapabilityError(f"LLMGenerateProvider needs an async function, got {generate!r}")
        self._generate = generate
        metadata = {
            "desc": "Generate text with the language model",
            "schema": json.dumps(_SCHEMA),
        }
        self._descriptor = CapabilityDescriptor(
            "llm.generate", "0.1.0", ProviderKind.PROVIDER_NATIVE, metadata
        )
        self._validate = compiled_schema(json.dumps(_SCHEMA))

    @property
    def descriptor(self) -> CapabilityDescriptor:
        """``llm.generate`` 0.1.0."""
        return self._descriptor

    async def invoke(self, call: ActionCall) -> ActionResult:
        """Normalise the payload, ask the model, shape its reply; failures are results."""
        try:
            request = self._request(call)
        except ActionFailure as failure:
            return failure.result(call.id)
        try:
            reply = await self._generate(request)
        except ActionFailure as failure:
            return failure.result(call.id)
        except Exception as error:  # the client's failure, reported as this call's
            code = getattr(error, "code", None)
            return ActionResult.failure(
                call.id,
                code if isinstance(code, str) and code else LLM_ERROR,
                str(error) or type(error).__name__,
            )
        try:
            return ActionResult.success(call.id, _output(reply))
        except (TypeError, ValueError) as error:
            return ActionResult.failure(call.id, LLM_ERROR, f"the model client's reply: {error}")

    def _request(self, call: ActionCall) -> dict[str, Any]:
        try:
            args = json.loads(call.payload or b"{}")
        except (ValueError, RecursionError) as error:  # UnicodeDecodeError is a ValueError
            raise _invalid(f"the payload is not valid JSON: {error}") from None
        if not isinstance(args, dict):
            raise _invalid(f"the payload must be a JSON object, got {type(args).__name__}")
        try:
            self._validate(args)
        except fastjsonschema.JsonSchemaValueException as error:
            raise _invalid(f"invalid arguments: {error.message}") from None
        if "bundle" in args:
            bundle = {**_BUNDLE_DEFAULTS, **args["bundle"]}
        elif "input" in args:
            bundle = {**_BUNDLE_DEFAULTS, "instructions": args["input"]}
        else:
            raise _invalid("give the prompt as input (a string) or as a bundle")
        return {
            "bundle": {key: bundle[key] for key in _BUNDLE_DEFAULTS},
            "budget": {
                key: args.get("budget", {}).get(key, n) for key, n in DEFAULT_BUDGET.items()
            },
            "stream": args.get("stream", False),
            "overrides": _overrides(call.headers),
        }

    def __repr__(self) -> str:
        return f"LLMGenerateProvider({self._generate!r})"


def _overrides(headers: Mapping[str, str]) -> dict[str, Any]:
    """The client settings a call overrides through its headers, read as Loom reads them
    (values that do not parse are ignored)."""
    overrides: dict[str, Any] = {
        key: headers[key] for key in ("model", "base_url") if headers.get(key)
    }
    try:
        temperature = float(headers.get("temperature", ""))
        if math.isfinite(temperature):
            overrides["temperature"] = temperature
    except ValueError:
        pass
    timeout = headers.get("request_timeout_ms", "")
    if timeout.isascii() and timeout.isdigit():
        overrides["request_timeout_ms"] = int(timeout)
    return overrides


def _output(reply: object) -> dict[str, Any]:
    """The capability's output from the client's reply; ``ValueError`` if it has no text."""
    if not isinstance(reply, dict) or not isinstance(reply.get("text"), str):
        raise ValueError(f"expected a dict with a string 'text', got {reply!r:.200}")
    output = {key: reply.get(key) for key in ("text", "model", "provider", "usage")}
    for key in _EXTRAS:  # what a model adds (the local model's intent and actions)
        if key in reply:
            output[key] = reply[key]
    json.dumps(output)  # TypeError here rather than in the result
    return output


_EXTRAS = ("intent", "confidence", "actions", "tool_calls")


def _invalid(message: str) -> ActionFailure:
    return ActionFailure(ErrorCode.INVALID_PARAMS, message)
