"""``ctx.memory``: an agent's ephemeral context window, bounded by count and by bytes.

It lives in memory only: it survives a restart of the agent (a fresh instance sees what the
failed one remembered) but not a restart of the kernel. When either bound is exceeded, the
oldest entries go first.
"""

from __future__ import annotations

import json
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from loomk.errors import StateError

__all__ = ["EphemeralMemory", "MemoryStats"]


def _size(item: Any) -> int:
    if isinstance(item, bytes):
        return len(item)
    try:
        if isinstance(item, str):
            return len(item.encode())
        return len(json.dumps(item, separators=(",", ":"), allow_nan=False))
    except (TypeError, ValueError) as error:  # UnicodeEncodeError (lone surrogates) too
        kind = type(item).__name__
        raise StateError(f"memory items are JSON-serialisable, got {kind}") from error


@dataclass(frozen=True, slots=True)
class MemoryStats:
    """A snapshot of one ephemeral memory."""

    items: int
    """Items remembered now."""
    size_bytes: int
    """Their total size."""
    max_items: int
    max_bytes: int
    appended: int
    """Items ever appended."""
    evicted: int
    """Items forgotten to stay within the bounds (``clear`` not counted)."""


class EphemeralMemory:
    """A bounded, in-memory window of recent items (str, bytes or JSON values)."""

    __slots__ = ("_appended", "_evicted", "_items", "_total", "max_bytes", "max_items")

    def __init__(self, max_items: int = 256, max_bytes: int = 256 * 1024) -> None:
        if max_items < 1 or max_bytes < 1:
            raise StateError("memory bounds must be >= 1")
        self.max_items = max_items
        self.max_bytes = max_bytes
        self._items: deque[tuple[Any, int]] = deque()
        self._total = 0
        self._appended = 0
        self._evicted = 0

    def append(self, item: Any) -> None:
        """Remember ``item``; forget the oldest entries while over a bound.

        An item larger than ``max_bytes`` on its own is refused with :class:`StateError`.
        """
        size = _size(item)
        if size > self.max_bytes:
            raise StateError(f"a memory item of {size} bytes exceeds max_bytes={self.max_bytes}")
        self._items.append((item, size))
        self._total += size
        self._appended += 1
        while len(self._items) > self.max_items or self._total > self.max_bytes:
            _, dropped = self._items.popleft()
            self._total -= dropped
            self._evicted += 1

    def extend(self, items: list[Any]) -> None:
        """Append each of ``items`` in order."""
        for item in items:
            self.append(item)

    def items(self) -> list[Any]:
        """The remembered items, oldest first."""
        return [item for item, _ in self._items]

    def clear(self) -> None:
        """Forget everything."""
        self._items.clear()
        self._total = 0

    def stats(self) -> MemoryStats:
        """A snapshot of the counters (see :class:`MemoryStats`)."""
        return MemoryStats(
            items=len(self._items),
            size_bytes=self._total,
            max_items=self.max_items,
            max_bytes=self.max_bytes,
            appended=self._appended,
            evicted=self._evicted,
        )

    @property
    def size_bytes(self) -> int:
        """The total size of the remembered items."""
        return self._total

    def __len__(self) -> int:
        return len(self._items)

    def __iter__(self) -> Iterator[Any]:
        return iter(self.items())

    def as_json(self) -> bytes:
        """The window as a JSON list (bytes items as ``{"$bytes": base64}``)."""
        import base64

        return json.dumps(
            [
                {"$bytes": base64.b64encode(item).decode()} if isinstance(item, bytes) else item
                for item, _ in self._items
            ]
        ).encode()
