"""The action vocabulary of ``loom.v1`` (action.proto): calls, results, descriptors, codes.

Value objects mirroring the protobuf messages field for field, so the bridge converts them
one to one. Payloads and outputs are bytes, JSON by convention.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from enum import IntEnum
from typing import Any

from loomk.errors import CapabilityError
from loomk.events import QoS

__all__ = [
    "ActionCall",
    "ActionError",
    "ActionResult",
    "ActionStatus",
    "CapabilityDescriptor",
    "ErrorCode",
    "ProviderKind",
    "parse_version",
]


class ActionStatus(IntEnum):
    """``loom.v1.ActionStatus``."""

    ACTION_OK = 0
    ACTION_ERROR = 1
    ACTION_TIMEOUT = 2
    ACTION_RETRYABLE = 3

    @property
    def label(self) -> str:
        """The short name used in observability events: ok, error, timeout, retryable."""
        return self.name.removeprefix("ACTION_").lower()


class ProviderKind(IntEnum):
    """``loom.v1.ProviderKind``: what implements a capability."""

    PROVIDER_NATIVE = 0
    PROVIDER_WASM = 1
    PROVIDER_GRPC = 2  # a bridge agent in another process
    PROVIDER_MCP = 3


class ErrorCode:
    """The ``ActionError.code`` values loomk produces (providers may add their own)."""

    INVALID_PARAMS = "INVALID_PARAMS"  # payload not JSON, or not matching the schema
    CAPABILITY_ERROR = "CAPABILITY_ERROR"  # the provider raised
    ACTION_TIMEOUT = "ACTION_TIMEOUT"  # the provider did not answer in time (cancelled)
    PROVIDER_UNAVAILABLE = "PROVIDER_UNAVAILABLE"  # no provider for the capability
    CONCURRENCY_LIMIT = "CONCURRENCY_LIMIT"  # never produced: calls wait for a slot


_NUMERIC = r"(?:0|[1-9][0-9]*)"
_PRE_ID = r"(?:0|[1-9][0-9]*|[0-9]*[A-Za-z-][0-9A-Za-z-]*)"
_VERSION = re.compile(  # semver 2.0 (no leading zeros, no empty identifiers, ASCII only), no +build
    rf"({_NUMERIC})\.({_NUMERIC})\.({_NUMERIC})"
    rf"(?:-({_PRE_ID}(?:\.{_PRE_ID})*))?",
    re.ASCII,
)
_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_\-]*(?:[.:][A-Za-z0-9_][A-Za-z0-9_\-]*)*", re.ASCII)


def parse_version(version: str) -> tuple[Any, ...]:
    """A sortable key for a semantic version ``MAJOR.MINOR.PATCH[-PRERELEASE]``.

    A release sorts above its pre-releases; pre-release identifiers compare as semver says
    (numeric ones numerically, below alphanumeric ones). Build metadata (``+build``) is
    refused: two versions equal in precedence would make "the highest" ambiguous. Raises
    :class:`CapabilityError` for anything else.
    """
    match = _VERSION.fullmatch(version) if isinstance(version, str) else None
    if match is None:
        raise CapabilityError(f"not a semantic version (MAJOR.MINOR.PATCH): {version!r}")
    major, minor, patch, pre = match.groups()
    if pre is None:
        return int(major), int(minor), int(patch), (1,)
    ids = tuple((0, int(part), "") if part.isdigit() else (1, 0, part) for part in pre.split("."))
    return int(major), int(minor), int(patch), (0, ids)


@dataclass(frozen=True, slots=True)
class CapabilityDescriptor:
    """What a provider offers: ``name`` (``weather.get``), ``version`` and metadata.

    Metadata keys by convention: ``desc`` (a description for people and models) and
    ``schema`` (the JSON schema of the payload, as a JSON string).
    """

    name: str
    version: str = "0.1.0"
    provider: ProviderKind = ProviderKind.PROVIDER_NATIVE
    metadata: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not _NAME.fullmatch(self.name):
            raise CapabilityError(
                f"a capability name is dot-separated words (e.g. weather.get), got {self.name!r}"
            )
        parse_version(self.version)
        try:
            object.__setattr__(self, "provider", ProviderKind(self.provider))
        except ValueError as error:
            raise CapabilityError(f"unknown provider kind {self.provider!r}") from error
        if not isinstance(self.metadata, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in self.metadata.items()
        ):
            raise CapabilityError(f"capability metadata maps str to str, got {self.metadata!r}")

    @property
    def key(self) -> str:
        """``name:version``, the registry key."""
        return f"{self.name}:{self.version}"

    @property
    def description(self) -> str:
        """The ``desc`` metadata, or the name."""
        return self.metadata.get("desc") or self.name

    def schema(self) -> dict[str, Any] | None:
        """The payload's JSON schema from the ``schema`` metadata, if it is a valid object."""
        raw = self.metadata.get("schema")
        if not raw:
            return None
        try:
            schema = json.loads(raw)
        except ValueError:
            return None
        return schema if isinstance(schema, dict) else None


@dataclass(frozen=True, slots=True)
class ActionCall:
    """``loom.v1.ActionCall``: one invocation of a capability.

    ``id`` is the idempotency key (the broker answers a repeated id from its cache);
    ``version`` empty means the highest registered; ``timeout_ms`` 0 means the broker's
    default.
    """

    id: str
    capability: str
    payload: bytes = b"{}"
    version: str = ""
    headers: dict[str, str] = field(default_factory=dict)
    timeout_ms: int = 0
    correlation_id: str = ""
    qos: QoS = QoS.BATCHED

    @classmethod
    def with_args(cls, call_id: str, capability: str, args: Any, **fields: Any) -> ActionCall:
        """A call whose payload is ``args`` as JSON (bytes are sent as they are)."""
        payload = args if isinstance(args, bytes) else json.dumps(args).encode()
        return cls(call_id, capability, payload, **fields)


@dataclass(frozen=True, slots=True)
class ActionError:
    """``loom.v1.ActionError``."""

    code: str
    message: str = ""
    details: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class ActionResult:
    """``loom.v1.ActionResult``: the answer to the call with the same ``id``."""

    id: str
    status: ActionStatus = ActionStatus.ACTION_OK
    output: bytes = b""
    error: ActionError | None = None

    def __post_init__(self) -> None:
        if self.status.__class__ is not ActionStatus:  # a plain int from the wire, say
            object.__setattr__(self, "status", ActionStatus(self.status))

    @classmethod
    def success(cls, call_id: str, output: Any = None) -> ActionResult:
        """An OK result; ``output`` is JSON-encoded unless it is bytes."""
        data = output if isinstance(output, bytes) else json.dumps(output).encode()
        return cls(call_id, ActionStatus.ACTION_OK, data)

    @classmethod
    def failure(
        cls,
        call_id: str,
        code: str,
        message: str = "",
        *,
        status: ActionStatus = ActionStatus.ACTION_ERROR,
        details: dict[str, str] | None = None,
    ) -> ActionResult:
        """A failed result with an error ``code``."""
        return cls(call_id, status, b"", ActionError(code, message, dict(details or {})))

    @property
    def ok(self) -> bool:
        """True for ``ACTION_OK``."""
        return self.status is ActionStatus.ACTION_OK

    @property
    def code(self) -> str:
        """The error code, or "" when OK."""
        return self.error.code if self.error is not None else ""

    def json(self) -> Any:
        """The output decoded as JSON (raises ``ValueError`` if it is not JSON)."""
        return json.loads(self.output)
