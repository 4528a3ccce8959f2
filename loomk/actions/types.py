"""The action vocabulary of ``loom.v1`` (action.proto): calls, results, descriptors, codes.

Value objects mirroring the protobuf messages field for field, so the bridge converts them
one to one. Payloads and outputs are bytes, JSON by convention: standard JSON, so NaN and
infinities are refused rather than written as ``NaN``/``Infinity``, which other parsers
reject. An :class:`ActionCall` checks its fields when made, as the wire needs them
(:func:`call_problem`).
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from dataclasses import fields as dataclass_fields
from enum import IntEnum
from typing import Any

from loomk._hop import DEFAULT_TTL
from loomk._metakeys import CORRELATION_ID, HOP, REPLY_TO, SENDER, THREAD_ID, TS, TTL
from loomk._wire import INT64_MAX, short_repr, text_problem
from loomk.envelope import Envelope
from loomk.errors import ActionCallError, CapabilityError
from loomk.events import QoS, now_ms

__all__ = [
    "ActionCall",
    "ActionError",
    "ActionResult",
    "ActionStatus",
    "CapabilityDescriptor",
    "ErrorCode",
    "ProviderKind",
    "call_problem",
    "json_payload",
    "parse_version",
    "timeout_ms_of",
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


_STANDARD_JSON = json.JSONEncoder(allow_nan=False)
"""Encodes payloads and outputs as standard JSON (made once: ``json.dumps`` with options
builds an encoder per call)."""

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

    ``id`` is the idempotency key: the broker answers a repeat of the same call (same id,
    capability, version, payload and caller) from its cache, see docs/actions.md;
    ``version`` empty means the highest registered; ``timeout_ms`` 0 means the broker's
    default. Raises :class:`~loomk.errors.ActionCallError` for a field the wire cannot
    carry (:func:`call_problem` says which); a bytes-like payload is kept as bytes.
    """

    id: str
    capability: str
    payload: bytes = b"{}"
    version: str = ""
    headers: dict[str, str] = field(default_factory=dict)
    timeout_ms: int = 0
    correlation_id: str = ""
    qos: QoS = QoS.BATCHED

    def __post_init__(self) -> None:
        if self.payload.__class__ is not bytes and isinstance(self.payload, bytearray | memoryview):
            object.__setattr__(self, "payload", bytes(self.payload))
        if self.qos.__class__ is not QoS:
            object.__setattr__(self, "qos", QoS(self.qos))  # QoSError for what is no level
        problem = call_problem(self)
        if problem:
            raise ActionCallError(problem)

    @classmethod
    def with_args(cls, call_id: str, capability: str, args: Any, **fields: Any) -> ActionCall:
        """A call whose payload is ``args`` as JSON (bytes are sent as they are); raises
        :class:`~loomk.errors.ActionCallError` for arguments JSON cannot carry."""
        return cls(call_id, capability, json_payload(args), **fields)

    def with_envelope(self) -> ActionCall:
        """The call carrying all seven envelope headers (Loom's defaults for those it
        lacks) with ``correlation_id`` following them; the call itself when it has them.

        What is filled in derives from fields this call's constructor checked, so the copy
        is not checked again: the broker makes one for every call it gets.
        """
        headers = self.headers
        if headers:
            filled = dict(headers)
            Envelope.from_metadata(headers, self.id).apply_to_metadata(filled)
            correlation_id = filled[CORRELATION_ID]
            if filled == headers and self.correlation_id == correlation_id:
                return self
        else:  # a call made by hand: Loom's defaults, without reading any header
            call_id = correlation_id = self.id
            filled = {
                THREAD_ID: call_id,
                CORRELATION_ID: call_id,
                SENDER: "",
                REPLY_TO: f"thread.{call_id}.reply",
                TTL: _DEFAULT_TTL_TEXT,
                HOP: "0",
                TS: str(now_ms()),
            }
        copy = object.__new__(ActionCall)
        for name in _CALL_FIELDS:
            object.__setattr__(copy, name, getattr(self, name))
        object.__setattr__(copy, "headers", filled)
        object.__setattr__(copy, "correlation_id", correlation_id)
        return copy


_DEFAULT_TTL_TEXT = str(DEFAULT_TTL)
_CALL_FIELDS = tuple(f.name for f in dataclass_fields(ActionCall))


def call_problem(call: object) -> str:
    """Why ``call`` cannot be sent or invoked as it is, or "" when it can.

    Every string must be text the wire carries (valid UTF-8 without NUL) and ``timeout_ms``
    an int from 0 to int64's maximum. The broker asks this of every call it gets, since a
    call may have been changed or faked after it was made.
    """
    if not isinstance(call, ActionCall):
        return f"invoke takes an ActionCall, got {type(call).__name__}"
    problem = _text_fields_problem(call)
    if problem:
        return problem
    if not call.capability:
        return "the call names no capability: give a capability name such as 'weather.get'"
    if call.payload.__class__ is not bytes:
        return (
            f"the call's payload must be bytes (JSON by convention), got {short_repr(call.payload)}"
        )
    headers = call.headers
    if headers.__class__ is not dict:
        return f"the call's headers must be a dict of str to str, got {short_repr(headers)}"
    for key, value in headers.items():
        if key.__class__ is not str or value.__class__ is not str:
            return (
                f"the call's headers must map str to str, got {short_repr(key)}: "
                f"{short_repr(value)}"
            )
        if not (key.isascii() and value.isascii()) or "\x00" in key or "\x00" in value:
            problem = text_problem(key) or text_problem(value)
            if problem:
                return f"the call's header {short_repr(key)}: {short_repr(value)} {problem}"
    timeout_ms = call.timeout_ms
    if timeout_ms.__class__ is not int or not 0 <= timeout_ms <= INT64_MAX:
        return (
            f"timeout_ms must be an int from 0 (the broker's default) to {INT64_MAX} "
            f"(int64, as on the wire), got {short_repr(timeout_ms)}"
        )
    if call.qos.__class__ is not QoS:
        return f"the call's qos must be a QoS, got {short_repr(call.qos)}"
    return ""


def _text_fields_problem(call: ActionCall) -> str:
    """What is wrong with the call's id, capability, version or correlation_id, or "".

    The common case (four str of plain ASCII) is one expression: a broker checks every call.
    """
    ident, name, version, correlation = call.id, call.capability, call.version, call.correlation_id
    if (
        ident.__class__ is str
        and name.__class__ is str
        and version.__class__ is str
        and correlation.__class__ is str
        and (ident + name + version + correlation).isascii()
        and "\x00" not in ident
        and "\x00" not in name
        and "\x00" not in version
        and "\x00" not in correlation
    ):
        return ""
    for field_name, value in (
        ("id", ident),
        ("capability", name),
        ("version", version),
        ("correlation_id", correlation),
    ):
        if value.__class__ is not str:
            return f"the call's {field_name} must be a str, got {short_repr(value)}"
        problem = text_problem(value)
        if problem:
            return f"the call's {field_name} {short_repr(value)} {problem}"
    return ""


def json_payload(args: Any) -> bytes:
    """``args`` as standard JSON bytes (bytes are taken as they are).

    Raises :class:`~loomk.errors.ActionCallError` for what JSON cannot carry: NaN or an
    infinity, objects it does not know, circular or too deeply nested values.
    """
    if isinstance(args, bytes):
        return bytes(args)
    try:
        return _STANDARD_JSON.encode(args).encode()
    except RecursionError as error:
        raise ActionCallError(
            "capability arguments are nested too deeply to encode as JSON: flatten them, "
            "or pass the JSON yourself as bytes"
        ) from error
    except ValueError as error:  # NaN or an infinity, or a value that contains itself
        raise ActionCallError(
            f"capability arguments cannot be sent as standard JSON ({error}): replace NaN "
            "and infinities (with None or a string, say); a value must not contain itself"
        ) from error
    except TypeError as error:
        raise ActionCallError(
            f"capability arguments must be JSON-serialisable: {error} (use dicts, lists, "
            "str, numbers, bool and None, or pass bytes)"
        ) from error


def timeout_ms_of(timeout_s: object) -> int:
    """``timeout_s`` seconds as a call's ``timeout_ms`` (at least 1); None gives 0, the
    broker's default.

    Raises :class:`~loomk.errors.ActionCallError` unless it is a finite number > 0 whose
    milliseconds fit the wire's int64.
    """
    if timeout_s is None:
        return 0
    if (
        not isinstance(timeout_s, int | float)
        or isinstance(timeout_s, bool)
        or not 0 < timeout_s < math.inf
    ):
        raise ActionCallError(
            f"timeout_s must be a finite number of seconds > 0, or None for the broker's "
            f"default; got {short_repr(timeout_s)}"
        )
    timeout_ms = max(1, math.ceil(timeout_s * 1000))
    if timeout_ms > INT64_MAX:
        raise ActionCallError(
            f"timeout_s of {timeout_s:g} s is beyond what the wire carries "
            f"(int64 milliseconds); pass None for the broker's default"
        )
    return timeout_ms


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
            try:
                status = ActionStatus(self.status)
            except ValueError as error:
                raise CapabilityError(
                    f"unknown action status {short_repr(self.status)}: use ActionStatus "
                    "(ACTION_OK 0, ACTION_ERROR 1, ACTION_TIMEOUT 2, ACTION_RETRYABLE 3)"
                ) from error
            object.__setattr__(self, "status", status)

    @classmethod
    def success(cls, call_id: str, output: Any = None) -> ActionResult:
        """An OK result; ``output`` is JSON-encoded unless it is bytes. Standard JSON: NaN,
        infinities or a value that contains itself raise :class:`CapabilityError` (a
        ``ValueError``), objects JSON does not know ``TypeError``."""
        if isinstance(output, bytes):
            return cls(call_id, ActionStatus.ACTION_OK, output)
        try:
            data = _STANDARD_JSON.encode(output).encode()
        except ValueError as error:
            raise CapabilityError(
                f"the output cannot be sent as standard JSON ({error}): replace NaN and "
                "infinities (with None or a string, say); a value must not contain itself"
            ) from error
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
