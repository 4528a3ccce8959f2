"""structlog processors of loomk: agent context, a level per logger, masked secrets.

Each is a plain structlog processor, ``(logger, method_name, event_dict) -> event_dict``,
so a host program that configures structlog itself can put them into its own chain:

- :func:`filter_by_logger_level` drops a record below the level of its logger (first in
  the chain, so a dropped record costs no more work);
- :func:`add_agent_context` adds ``agent_id``, ``thread_id`` and ``correlation_id`` of the
  agent whose task writes the record, and of the event it is handling;
- :func:`mask_secrets` hides credentials wherever they appear (after
  ``format_exc_info``, so that it sees the exception text, and before the renderer).

What the filter and the masking apply is process-wide, set by :func:`configure_processors`
(the kernel calls it at start through :func:`loomk.telemetry.configure_logging`).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, MutableMapping
from typing import Any

import structlog

from loomk.config import SECRET_MASK
from loomk.telemetry.agent_context import current_log_agent

__all__ = [
    "LEVELS",
    "add_agent_context",
    "configure_processors",
    "filter_by_logger_level",
    "mask_secrets",
    "reset_processors",
]

LEVELS: Mapping[str, int] = {
    "debug": 10,
    "info": 20,
    "warning": 30,
    "error": 40,
    "critical": 50,
}
"""Level names loomk's settings take, and their numbers (those of :mod:`logging`)."""

# structlog's method names (``exception`` logs at error, ``msg`` at info)
_METHOD_LEVELS: Mapping[str, int] = {
    **LEVELS,
    "msg": 20,
    "warn": 30,
    "exception": 40,
    "fatal": 50,
}

# The envelope's metadata keys (loomk._metakeys' THREAD_ID and CORRELATION_ID: telemetry
# sits below the envelope in the layers, so it spells them; a test keeps them equal).
_THREAD_ID = "thread_id"
_CORRELATION_ID = "correlation_id"

_CACHE_MAX = 4096  # logger and field names remembered; past it they are worked out each time


# --- agent context ------------------------------------------------------------------------


def add_agent_context(
    logger: Any, method_name: str, event_dict: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    """Add ``agent_id`` of the agent whose task writes the record and, while it handles
    an event that has them, that event's ``thread_id`` and ``correlation_id``.

    A field the caller gave (or bound) is never overridden. Outside every agent the record
    is left as it is.
    """
    agent = current_log_agent()
    if agent is None:
        return event_dict
    try:
        event_dict.setdefault("agent_id", agent.agent_id)
        event = agent.current_event
        if event is not None:
            metadata = event.metadata
            thread_id = metadata.get(_THREAD_ID)
            if thread_id:
                event_dict.setdefault(_THREAD_ID, thread_id)
            correlation_id = metadata.get(_CORRELATION_ID)
            if correlation_id:
                event_dict.setdefault(_CORRELATION_ID, correlation_id)
    except Exception:  # context is a help: a record is never lost over it
        pass
    return event_dict


# --- level per logger ---------------------------------------------------------------------


class _LevelTable:
    """The level of each logger: its own, else its closest dotted ancestor's, else the
    default. Resolved names are remembered (loggers are few and long-lived)."""

    __slots__ = ("_resolved", "default", "levels", "lowest")

    def __init__(self, default: int, levels: Mapping[str, int]) -> None:
        self.default = default
        self.levels = dict(levels)
        self.lowest = min([default, *self.levels.values()])
        self._resolved: dict[str, int] = {}

    def level_of(self, name: str) -> int:
        level = self._resolved.get(name)
        if level is None:
            level = self._resolve(name)
            if len(self._resolved) < _CACHE_MAX:
                self._resolved[name] = level
        return level

    def _resolve(self, name: str) -> int:
        levels = self.levels
        while True:
            level = levels.get(name)
            if level is not None:
                return level
            name, dot, _ = name.rpartition(".")
            if not dot:
                return self.default


def filter_by_logger_level(
    logger: Any, method_name: str, event_dict: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    """Drop the record (``structlog.DropEvent``) when it is below its logger's level.

    The logger is the record's ``component`` field (what ``get_logger(name)`` binds), else
    its ``logger`` field, else the name of the logger writing it (a ``logging.Logger`` of
    structlog's standard library integration); its level is the most specific configured
    prefix's ("loomk.bridge" covers "loomk.bridge.server"), else the default level. Put it
    first in the chain. A standard library record formatted by
    ``structlog.stdlib.ProcessorFormatter`` is never dropped (its stdlib level applied).
    """
    level = _METHOD_LEVELS.get(method_name)
    if level is None:
        return event_dict
    table = _levels
    name = event_dict.get("component")
    if not isinstance(name, str):
        name = event_dict.get("logger")
    if not isinstance(name, str):
        name = getattr(logger, "name", None)  # a standard library logger's own name
    threshold = table.level_of(name) if isinstance(name, str) else table.default
    if level < threshold:
        if "_record" in event_dict:
            # a standard library record in ProcessorFormatter: DropEvent is not caught
            # there (it would escape the program's logging call); stdlib levels apply
            return event_dict
        raise structlog.DropEvent
    return event_dict


# --- secrets ------------------------------------------------------------------------------

# A field whose (lowercased) name contains one of these holds a secret. "token" followed by
# "s" or "iz" is a count or a tokenizer ("prompt_tokens", "tokenizer"), not a credential.
_SECRET_NAME = re.compile(
    r"api[_-]?key|authorization|password|passwd|secret|token(?!s|iz)|cookie|credential"
    r"|private[_-]?key"
)
# Inside any string: an HTTP credential after its scheme, and an OpenAI-style key.
_SCHEME = r"(?P<scheme>\b(?i:bearer|basic))\s+[A-Za-z0-9\-._~+/]+=*"
_API_KEY = r"\bsk-[A-Za-z0-9_\-]{20,}"
# Inside any string: the password of a URL's user information ("https://user:pw@host").
_USERINFO = r"(?<=://)(?P<user>[^/\s:@]*):[^/\s@]+@"
# Inside any string: a value given to a name, as a repr, JSON or a query writes it
# ("api_key='x'", '"password": "x"', "token=x"); masked when the name looks secret.
_QUOTED = r"""(?:"(?:[^"\\]|\\.)*"?|'(?:[^'\\]|\\.)*'?)"""
# (a closing quote is optional: a repr cut short, "'password': 'hunt...", hides the rest)
_PAIR = re.compile(
    rf"""(?P<kq>["'])(?P<qkey>[A-Za-z_][\w\-]*)(?P=kq)(?P<colon>\s*:\s*)(?P<qvalue>{_QUOTED})"""
    rf"""|(?<![\w\-.])(?P<key>[A-Za-z_][\w\-]*)=(?P<value>{_QUOTED}|[^\s&,;'"()\[\]{{}}<>]+)"""
)
_NOTHING = frozenset({"''", '""', "None", "True", "False"})
_SUBSTRING_MIN = 6
"""A configured secret value shorter than this is masked only where a whole string is it
(masking every occurrence of a few characters would garble the logs and hide nothing)."""
_MAX_DEPTH = 16  # nesting looked into; anything deeper is masked whole
_UNTOUCHED = frozenset({"exc_info"})  # left to format_exc_info / the renderer


def _replace(match: re.Match[str]) -> str:
    scheme = match.group("scheme")
    if scheme is not None:
        return f"{scheme} {SECRET_MASK}"
    user = match.group("user")
    return SECRET_MASK if user is None else f"{user}:{SECRET_MASK}@"


class _Masker:
    """The masking rules of the moment: built-in and configured field names, built-in
    string patterns and the configured secret values, compiled into one expression."""

    __slots__ = ("_names", "_short", "_text", "fields", "secrets")

    def __init__(self, fields: frozenset[str], secrets: frozenset[str]) -> None:
        self.fields = fields
        self.secrets = secrets
        self._short = frozenset(value for value in secrets if len(value) < _SUBSTRING_MIN)
        longest_first = sorted(
            (value for value in secrets if len(value) >= _SUBSTRING_MIN), key=len, reverse=True
        )
        self._text = re.compile(
            "|".join([*map(re.escape, longest_first), _SCHEME, _API_KEY, _USERINFO])
        )
        self._names: dict[str, bool] = {}

    def secret_name(self, name: str) -> bool:
        known = self._names.get(name)
        if known is None:
            lowered = name.lower()
            known = lowered in self.fields or _SECRET_NAME.search(lowered) is not None
            if len(self._names) < _CACHE_MAX:
                self._names[name] = known
        return known

    def text(self, text: str) -> str:
        if text in self._short:
            return SECRET_MASK
        if "=" in text or ":" in text:
            text = _PAIR.sub(self._pair, text)
        return self._text.sub(_replace, text)

    def _pair(self, match: re.Match[str]) -> str:
        """A ``name=value`` or ``"name": "value"`` pair, its value masked if the name
        looks secret and the value is something (not empty, None or a flag)."""
        key = match.group("qkey")
        if key is not None:
            value = match.group("qvalue")
            if value in _NOTHING or not self.secret_name(key):
                return match.group()
            key_quote, quote = match.group("kq"), value[0]
            return f"{key_quote}{key}{key_quote}{match.group('colon')}{quote}{SECRET_MASK}{quote}"
        key = match.group("key")
        value = match.group("value")
        if value in _NOTHING or not self.secret_name(key):
            return match.group()
        if value[0] in "'\"":
            return f"{key}={value[0]}{SECRET_MASK}{value[0]}"
        return f"{key}={SECRET_MASK}"

    def field(self, name: str, value: object, depth: int) -> object:
        """``value`` of the field ``name``: masked whole if the name is a secret's."""
        if self.secret_name(name) and _holds_something(name, value):
            return SECRET_MASK
        return self.value(value, depth)

    def value(self, value: object, depth: int) -> object:
        """``value`` with every secret inside it masked (the same object if none was)."""
        if isinstance(value, str):
            masked = self.text(value)
            return value if masked == value else masked
        if value is None or isinstance(value, int | float):
            return value
        if depth >= _MAX_DEPTH:
            return SECRET_MASK
        if isinstance(value, Mapping):
            items = {key: self.field(str(key), item, depth + 1) for key, item in value.items()}
            if type(value) is dict and all(items[key] is item for key, item in value.items()):
                return value
            return items
        if type(value) is list or type(value) is tuple:
            masked_items = [self.value(item, depth + 1) for item in value]
            if all(new is old for new, old in zip(masked_items, value, strict=True)):
                return value
            return masked_items if type(value) is list else tuple(masked_items)
        shown = repr(value)  # what the renderer would show: replaced only if it gave one away
        masked = self.text(shown)
        return value if masked == shown else masked


def _holds_something(name: str, value: object) -> bool:
    """Whether a value under a secret's name has anything to hide: not None, a flag, an
    empty string or a token count (``prompt_tokens=12``, ``token_count=5``)."""
    if value is None or isinstance(value, bool):
        return False
    if isinstance(value, str | bytes) and not value:
        return False
    return not (isinstance(value, int | float) and "token" in name.lower())


def mask_secrets(
    logger: Any, method_name: str, event_dict: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    """Replace every secret in the record with ``SECRET_MASK``, looking into dicts, lists
    and tuples.

    Masked whole: the value of a field whose name looks secret (contains ``api_key``,
    ``apikey``, ``authorization``, ``password``, ``passwd``, ``secret``, ``token``,
    ``cookie``, ``credential`` or ``private_key``, any case) or is a configured mask field.
    Masked inside any string: the credential of ``Bearer ...``/``Basic ...``, OpenAI-style
    ``sk-...`` keys and the configured secret values. Run it after ``format_exc_info`` (the
    exception's text is a string then) and before the renderer. It never raises: where
    masking a field fails, the whole field is masked.
    """
    masker = _masker
    for key, value in tuple(event_dict.items()):
        if key in _UNTOUCHED or (isinstance(key, str) and key.startswith("_")):
            continue  # "_record" and the like belong to structlog's stdlib bridge
        try:
            masked = masker.field(str(key), value, 0)
        except Exception:  # a masking bug must not break logging, nor let a secret out
            masked = SECRET_MASK
        if masked is not value:
            event_dict[key] = masked
    return event_dict


# --- settings -----------------------------------------------------------------------------

_DEFAULT_LEVEL = "warning"
_levels = _LevelTable(LEVELS[_DEFAULT_LEVEL], {})
_masker = _Masker(frozenset(), frozenset())


def configure_processors(
    *,
    level: str = _DEFAULT_LEVEL,
    levels: Mapping[str, str] | None = None,
    mask_fields: Iterable[str] = (),
    secrets: Iterable[str] = (),
) -> int:
    """Set what :func:`filter_by_logger_level` and :func:`mask_secrets` apply, process-wide.

    ``level`` and ``levels`` (logger -> level name) replace the levels in force. Masking
    only grows: ``mask_fields`` (field names, any case, matched whole) and ``secrets``
    (values to hide wherever they appear) are added to those already known, so a second
    kernel in the process never unmasks the first one's secrets. Returns the lowest level
    any logger now has: a filtering bound logger at that level lets everything else
    through. Raises ``ValueError`` for an unknown level name.
    """
    global _levels, _masker
    table = _LevelTable(
        _level_number(level),
        {name: _level_number(value) for name, value in (levels or {}).items()},
    )
    fields = _masker.fields | {name.strip().lower() for name in mask_fields if name.strip()}
    known = _masker.secrets | {value for value in secrets if value}
    if fields != _masker.fields or known != _masker.secrets:
        _masker = _Masker(fields, known)
    _levels = table
    return table.lowest


def reset_processors() -> None:
    """Back to the defaults: level ``warning`` for every logger, only the built-in masking
    rules (for tests, which must not leave settings to the next one)."""
    global _levels, _masker
    _levels = _LevelTable(LEVELS[_DEFAULT_LEVEL], {})
    _masker = _Masker(frozenset(), frozenset())


def _level_number(name: str) -> int:
    number = LEVELS.get(name.strip().lower())
    if number is None:
        raise ValueError(f"unknown log level {name!r} (expected one of {', '.join(LEVELS)})")
    return number
