"""Watchers: plain callbacks told that something changed (subscriptions, capabilities,
directory entries), for whoever mirrors it elsewhere (a bus link).

A watcher is called synchronously, inside the change: it must be quick and must not raise
(setting a ``trio.Event`` is the usual body).
"""

from __future__ import annotations

from collections.abc import Callable

__all__ = ["Watchers"]


class Watchers:
    """A set of change callbacks."""

    __slots__ = ("_watchers",)

    def __init__(self) -> None:
        self._watchers: list[Callable[[], None]] = []

    def add(self, watcher: Callable[[], None]) -> Callable[[], None]:
        """Call ``watcher()`` on every change from now on; returns the function that stops
        it (idempotent). Raises ``TypeError`` for what cannot be called."""
        if not callable(watcher):
            raise TypeError(f"a watcher must be callable, got {watcher!r}")
        self._watchers.append(watcher)

        def unwatch() -> None:
            if watcher in self._watchers:
                self._watchers.remove(watcher)

        return unwatch

    def __bool__(self) -> bool:
        """Whether anyone watches."""
        return bool(self._watchers)

    def notify(self) -> None:
        """Tell every watcher that something changed."""
        for watcher in tuple(self._watchers):
            watcher()
