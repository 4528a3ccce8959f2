"""``ctx.state``: an agent's persistent key-value state, committed atomically per handler.

Rules (also in docs/state.md):

- Values are JSON-serialisable (``bytes`` are kept raw); keys are ``str``. A value that
  cannot be stored raises :class:`StateError` at the assignment, which fails the handler.
- Reads see the handler's own writes at once. Assign to change a value: mutating a value
  read from the state in place is not noticed.
- Everything one handler invocation (``on_start``, ``on_event``, ``on_stop``) writes is
  committed atomically after it returns, together with the events it emitted (a
  transactional outbox: they are published only after the commit). If the handler raises,
  none of its writes apply and none of its held events are published.
- While an agent has a backlog, the commits of consecutive handlers are grouped (up to
  :data:`loomk.agents.COMMIT_GROUP_MAX`) into one atomic batch, written before the
  agent parks; the group's held events then go out in the order they were emitted. A later
  handler reads the earlier ones' writes at once; if the process dies first, a whole suffix
  of handlers is lost, never part of one, and none of their events were published.
- ``await ctx.state.flush()`` commits and releases what is held so far; interactive calls
  (requests, capability invocations) flush first, as they act outside the agent.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Awaitable, Callable, Iterator, MutableMapping
from typing import Any

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
# Values that cannot change after assignment: the committed copy can be the value itself.
_IMMUTABLE = frozenset({bytes, str, int, float, bool, type(None)})


class AgentStateView(MutableMapping[str, Any]):
    """The state of one agent as its handlers see it: committed values plus pending writes.

    Writes are layered: the running handler's own (``_pending``), then those of earlier
    handlers whose group commit has not happened yet (``_staged``), then what is committed.
    A handler that raises loses only its own layer.
    """

    __slots__ = ("_committed", "_flush", "_pending", "_pending_plain", "_staged", "_staged_plain")

    def __init__(self, committed: dict[str, Any], flush: Callable[[], Awaitable[None]]) -> None:
        self._committed = committed
        self._flush = flush  # the context's commit: state writes and held events together
        self._pending: dict[str, Any] = {}  # key -> (value, encoded, key bytes) or _DELETED
        self._staged: dict[str, Any] = {}  # the same, from handlers that already returned
        # Fast paths: no deletes and no mutable values pending; no deletes staged.
        self._pending_plain = True
        self._staged_plain = True

    # ---- the mapping --------------------------------------------------------------------

    def _lookup(self, key: object) -> Any:
        """The pending or staged entry for ``key``, or None."""
        entry = self._pending.get(key)  # type: ignore[call-overload]
        if entry is None and self._staged:
            entry = self._staged.get(key)  # type: ignore[call-overload]
        return entry

    def __getitem__(self, key: str) -> Any:
        entry = self._lookup(key)
        if entry is not None:
            if entry is _DELETED:
                raise KeyError(key)
            return entry[0]
        return self._committed[key]

    def __setitem__(self, key: str, value: Any) -> None:
        if key.__class__ is not str:
            raise StateError(f"state keys are str, got {key!r}")
        try:
            raw_key = key.encode()
        except UnicodeEncodeError as error:
            raise StateError(f"state keys must encode to UTF-8, got {key!r}") from error
        if value.__class__ is bytes:  # the common case, inlined
            self._pending[key] = (value, _RAW + value, raw_key)
        else:
            self._pending[key] = (value, encode_value(key, value), raw_key)
            if value.__class__ not in _IMMUTABLE:
                self._pending_plain = False

    def __delitem__(self, key: str) -> None:
        if key not in self:
            raise KeyError(key)
        self._pending[key] = _DELETED
        self._pending_plain = False

    def __contains__(self, key: object) -> bool:
        entry = self._lookup(key)
        if entry is not None:
            return entry is not _DELETED
        return key in self._committed

    def __iter__(self) -> Iterator[str]:
        for key in self._committed:
            if self._lookup(key) is not _DELETED:
                yield key
        for layer in (self._staged, self._pending):
            for key, entry in layer.items():
                if (
                    entry is not _DELETED
                    and key not in self._committed
                    and (layer is self._pending or key not in self._pending)
                ):
                    yield key

    def __len__(self) -> int:
        return sum(1 for _ in self)

    def __repr__(self) -> str:
        return f"AgentStateView({dict(self)!r})"

    # ---- committing (the runtime's side) -----------------------------------------------

    @property
    def dirty(self) -> bool:
        """Whether there are writes not committed yet."""
        return bool(self._pending or self._staged)

    def seal(self) -> None:
        """The running handler returned: its writes join the group awaiting commit.

        From here on a value reads back in its stored form (a mutable value decoded from
        what will be stored), so later handlers read exactly what a restarted agent would,
        whether or not the group has been committed yet.
        """
        pending = self._pending
        if not pending:
            return
        staged = self._staged
        if self._pending_plain:  # nothing to convert
            if staged:
                staged.update(pending)
            else:
                self._staged = pending
        else:
            for key, entry in pending.items():
                if entry is _DELETED:
                    self._staged_plain = False
                elif entry[0].__class__ not in _IMMUTABLE:
                    entry = (decode_value(entry[1]), entry[1], entry[2])
                staged[key] = entry
            self._pending_plain = True
        self._pending = {}

    def pending_operations(self, prefix: bytes) -> tuple[dict[bytes, bytes], list[bytes]]:
        """Every uncommitted write (staged, then pending) as store operations under ``prefix``."""
        self.seal()
        if self._staged_plain:
            return {prefix + entry[2]: entry[1] for entry in self._staged.values()}, []
        puts: dict[bytes, bytes] = {}
        deletes: list[bytes] = []
        for key, entry in self._staged.items():
            if entry is _DELETED:
                deletes.append(prefix + key.encode())
            else:
                puts[prefix + entry[2]] = entry[1]
        return puts, deletes

    def applied(self) -> None:
        """The uncommitted writes were committed: fold them into the committed values."""
        self.seal()
        committed = self._committed
        if self._staged_plain:
            committed.update({key: entry[0] for key, entry in self._staged.items()})
        else:
            for key, entry in self._staged.items():
                if entry is _DELETED:
                    committed.pop(key, None)
                else:
                    committed[key] = entry[0]
        self._staged = {}
        self._staged_plain = True

    def discard(self) -> None:
        """Forget the running handler's writes (it failed); earlier handlers' stay staged."""
        self._pending = {}
        self._pending_plain = True

    def abandon(self) -> None:
        """Forget every uncommitted write (their commit failed)."""
        self.discard()
        self._staged = {}
        self._staged_plain = True

    async def flush(self) -> None:
        """Commit what was written so far and publish the events held until now."""
        await self._flush()


def state_as_json(values: dict[str, Any]) -> bytes:
    """An agent's state as one JSON object (bytes values as ``{"$bytes": base64}``)."""

    def plain(value: Any) -> Any:
        if isinstance(value, bytes):
            return {"$bytes": base64.b64encode(value).decode()}
        return value

    return json.dumps({key: plain(value) for key, value in values.items()}).encode()
