"""Capability providers: what the broker invokes.

A provider has a :class:`CapabilityDescriptor` and an ``async invoke(call) -> ActionResult``.
Most capabilities are plain async Python functions; :func:`capability` turns one into a
:class:`FunctionProvider`, which decodes the JSON payload, checks it against the schema
(``INVALID_PARAMS`` when it does not fit), calls the function and encodes what it returns.
A function reports a failure with its own code by raising :class:`ActionFailure`.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Awaitable, Callable
from typing import Any, Protocol, runtime_checkable

import fastjsonschema

from loomk.actions.types import (
    ActionCall,
    ActionResult,
    ActionStatus,
    CapabilityDescriptor,
    ErrorCode,
    ProviderKind,
)
from loomk.errors import CapabilityError

__all__ = [
    "ActionFailure",
    "CapabilityProvider",
    "FunctionProvider",
    "capability",
    "compiled_schema",
]

CapabilityFunction = Callable[[dict[str, Any]], Awaitable[Any]]


@runtime_checkable
class CapabilityProvider(Protocol):
    """Anything the broker can invoke."""

    @property
    def descriptor(self) -> CapabilityDescriptor:
        """What this provider offers."""
        ...

    async def invoke(self, call: ActionCall) -> ActionResult:
        """Run ``call``; a result, never an exception, is the expected outcome."""
        ...


@functools.lru_cache(maxsize=256)
def compiled_schema(schema_json: str) -> Callable[[Any], Any]:
    """The validator of a JSON schema (given as JSON text), compiled once per schema:
    compiling takes milliseconds, and every kernel registers the same built-ins."""
    validate: Callable[[Any], Any] = fastjsonschema.compile(json.loads(schema_json))
    return validate


class ActionFailure(Exception):
    """Raised by a capability function to fail with a specific code (e.g. ``INVALID_QUERY``).

    ``retryable`` makes the result ``ACTION_RETRYABLE``, which the broker retries.
    """

    def __init__(
        self,
        code: str,
        message: str,
        *,
        retryable: bool = False,
        details: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.retryable = retryable
        self.details = dict(details or {})

    def result(self, call_id: str) -> ActionResult:
        """This failure as the result of call ``call_id``."""
        status = ActionStatus.ACTION_RETRYABLE if self.retryable else ActionStatus.ACTION_ERROR
        return ActionResult.failure(
            call_id, self.code, self.message, status=status, details=self.details
        )


class FunctionProvider:
    """A capability implemented by an async function of the decoded JSON payload.

    The payload must be a JSON object; the function's return value becomes the output
    (JSON-encoded, or as is when it is bytes).
    """

    def __init__(
        self,
        function: CapabilityFunction,
        descriptor: CapabilityDescriptor,
    ) -> None:
        if not callable(function):
            raise CapabilityError(f"a capability needs a callable, got {function!r}")
        self._function = function
        self._descriptor = descriptor
        schema = descriptor.schema()
        if descriptor.metadata.get("schema") and schema is None:
            raise CapabilityError(f"the schema of {descriptor.name} is not a JSON object")
        try:
            self._validate = (
                compiled_schema(descriptor.metadata["schema"]) if schema is not None else None
            )
        except fastjsonschema.JsonSchemaDefinitionException as error:
            raise CapabilityError(f"the schema of {descriptor.name} is invalid: {error}") from error

    @property
    def descriptor(self) -> CapabilityDescriptor:
        """What this provider offers."""
        return self._descriptor

    async def invoke(self, call: ActionCall) -> ActionResult:
        """Decode and check the payload, run the function, encode its answer."""
        try:
            args = json.loads(call.payload or b"{}")
        except (ValueError, RecursionError) as error:  # UnicodeDecodeError is a ValueError
            return ActionResult.failure(
                call.id, ErrorCode.INVALID_PARAMS, f"the payload is not valid JSON: {error}"
            )
        if not isinstance(args, dict):
            return ActionResult.failure(
                call.id,
                ErrorCode.INVALID_PARAMS,
                f"the payload must be a JSON object, got {type(args).__name__}",
            )
        if self._validate is not None:
            try:
                self._validate(args)
            except fastjsonschema.JsonSchemaValueException as error:
                return ActionResult.failure(
                    call.id, ErrorCode.INVALID_PARAMS, f"invalid arguments: {error.message}"
                )
        try:
            output = await self._function(args)
        except ActionFailure as failure:
            return failure.result(call.id)
        if isinstance(output, ActionResult):
            return output
        try:
            return ActionResult.success(call.id, output)
        except (TypeError, ValueError) as error:
            return ActionResult.failure(
                call.id, ErrorCode.CAPABILITY_ERROR, f"the output is not JSON-serialisable: {error}"
            )

    def __repr__(self) -> str:
        return f"FunctionProvider({self._descriptor.key})"


def capability(
    name: str,
    *,
    version: str = "0.1.0",
    description: str = "",
    schema: dict[str, Any] | None = None,
    kind: ProviderKind = ProviderKind.PROVIDER_NATIVE,
    metadata: dict[str, str] | None = None,
) -> Callable[[CapabilityFunction], FunctionProvider]:
    """Make a provider of an async function of the JSON arguments::

    @capability("math.double", schema={"type": "object", "required": ["x"]})
    async def double(args):
        return {"value": args["x"] * 2}

    kernel.broker.register(double)
    """
    meta = dict(metadata or {})
    if description:
        meta["desc"] = description
    if schema is not None:
        meta["schema"] = json.dumps(schema)
    descriptor = CapabilityDescriptor(name, version, kind, meta)

    def wrap(function: CapabilityFunction) -> FunctionProvider:
        return FunctionProvider(function, descriptor)

    return wrap
