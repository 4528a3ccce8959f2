"""``ctx.state``: an agent's persistent key-value state, committed atomically per handler.

Rules (also in docs/state.md):

- Values are JSON-serialisable (``bytes`` are kept raw); keys are ``str``. A value that
  cannot be stored raises :class:`StateError` at the assignment, which fails the handler.
- Reads see the handler's own writes at once. Assign to change a value: mutating a value
  read from the state in place is not noticed.
- Everything one handler invocation (``on_start``, ``on_event``, ``on_stop``) writes is
  committed in one atomic batch when it returns, together with the events it emitted (a
  transactional outbox: they are published only after the commit). If the handler raises,
  none of its writes apply and none of its held events are published.
- ``await ctx.state.flush()`` commits and releases what is held so far.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Awaitable, Callable, Iterator, MutableMapping
from typing import Any, Protocol

from loomk.errors import StateError

__all__ = ["AgentStateView", "decode_value", "encode_value", "state_as_json"]

_RAW = b"\x00"  # bytes kept as they are
_JSON = b"\x01"  # anything else, as JSON


def encode_value(key: str, value: Any) -> bytes:
    """The stored form of ``value``; raises :class:`StateError` if it cannot be stored."""
    if value.__class__ is bytes:
        return _RAW + value
    if isinstance(value, bytes | bytearray | memoryview):
        return _RAW + bytes(value)
    try:
        text = json.dumps(value, separators=(",", ":"), allow_nan=False, ensure_ascii=False)
        return _JSON + text.encode()
    except (TypeError, ValueError) as error:  # UnicodeEncodeError (lone surrogates) too
        raise StateError(
            f"state value for key {key!r} cannot be stored ({type(value).__name__}): {error}"
        ) from error


def decode_value(raw: bytes) -> Any:
    """The value stored as ``raw``."""
    if raw[:1] == _RAW:
        return raw[1:]
    return json.loads(raw[1:])


_DELETED = object()


class _WriteObserver(Protocol):
    def mark_dirty(self) -> None: ...


def _encodable(key: str) -> bool:
    try:
        key.encode()
    except UnicodeEncodeError:
        return False
    return True


class AgentStateView(MutableMapping[str, Any]):
    """The state of one agent as its handlers see it: committed values plus pending writes."""

    __slots__ = ("_committed", "_flush", "_owner", "_pending")

    def __init__(
        self,
        committed: dict[str, Any],
        flush: Callable[[], Awaitable[None]],
        owner: _WriteObserver | None = None,
    ) -> None:
        self._committed = committed
        self._flush = flush  # the context's commit: state writes and held events together
        self._owner = owner  # told of every write, so the runtime knows a commit is due
        self._pending: dict[str, Any] = {}  # key -> (value, encoded) or _DELETED

    # ---- the mapping --------------------------------------------------------------------

    def __getitem__(self, key: str) -> Any:
        pending = self._pending.get(key)
        if pending is not None:
            if pending is _DELETED:
                raise KeyError(key)
            return pending[0]
        return self._committed[key]

    def __setitem__(self, key: str, value: Any) -> None:
        if key.__class__ is not str or not _encodable(key):
            raise StateError(f"state keys are str that encode to UTF-8, got {key!r}")
        self._pending[key] = (value, encode_value(key, value))
        if self._owner is not None:
            self._owner.mark_dirty()

    def __delitem__(self, key: str) -> None:
        if key not in self:
            raise KeyError(key)
        self._pending[key] = _DELETED
        if self._owner is not None:
            self._owner.mark_dirty()

    def __contains__(self, key: object) -> bool:
        pending = self._pending.get(key)  # type: ignore[call-overload]
        if pending is not None:
            return pending is not _DELETED
        return key in self._committed

    def __iter__(self) -> Iterator[str]:
        for key in self._committed:
            if self._pending.get(key) is not _DELETED:
                yield key
        for key, pending in self._pending.items():
            if pending is not _DELETED and key not in self._committed:
                yield key

    def __len__(self) -> int:
        return sum(1 for _ in self)

    def __repr__(self) -> str:
        return f"AgentStateView({dict(self)!r})"

    # ---- committing (the runtime's side) -----------------------------------------------

    @property
    def dirty(self) -> bool:
        """Whether there are writes not committed yet."""
        return bool(self._pending)

    def pending_operations(self, prefix: bytes) -> tuple[dict[bytes, bytes], list[bytes]]:
        """The pending writes as store operations under ``prefix``."""
        puts: dict[bytes, bytes] = {}
        deletes: list[bytes] = []
        for key, pending in self._pending.items():
            if pending is _DELETED:
                deletes.append(prefix + key.encode())
            else:
                puts[prefix + key.encode()] = pending[1]
        return puts, deletes

    def applied(self) -> None:
        """The pending writes were committed: fold them into the committed values.

        The committed values are decoded from what was stored, so later handlers read
        exactly what a restarted agent would (not an object mutated since it was assigned).
        """
        committed = self._committed
        for key, pending in self._pending.items():
            if pending is _DELETED:
                committed.pop(key, None)
            else:
                committed[key] = decode_value(pending[1])
        self._pending = {}

    def discard(self) -> None:
        """Forget the pending writes (their handler failed)."""
        self._pending = {}

    async def flush(self) -> None:
        """Commit what this handler wrote so far and publish the events it holds."""
        await self._flush()


def state_as_json(values: dict[str, Any]) -> bytes:
    """An agent's state as one JSON object (bytes values as ``{"$bytes": base64}``)."""

    def plain(value: Any) -> Any:
        if isinstance(value, bytes):
            return {"$bytes": base64.b64encode(value).decode()}
        return value

    return json.dumps({key: plain(value) for key, value in values.items()}).encode()
