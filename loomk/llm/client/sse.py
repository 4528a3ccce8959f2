"""An incremental parser of server-sent events (the ``text/event-stream`` format).

Model servers stream with SSE: ``data:`` lines carrying JSON chunks, a blank line ending
each event, and ``data: [DONE]`` at the end (OpenAI's sentinel). :class:`SSEParser` takes
the stream one line at a time (as ``httpx.Response.aiter_lines()`` yields them) and returns
an :class:`SSEEvent` whenever a blank line completes one, following the WHATWG rules:
several ``data:`` lines join with newlines, one space after the colon is dropped, lines
starting with ``:`` are comments, unknown fields are ignored, an event without data is not
dispatched. A parser holds no I/O, so it is equally usable on lists of lines in tests.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

__all__ = ["DONE", "SSEEvent", "SSEParser", "parse_lines"]

DONE = "[DONE]"
_BOM = "\ufeff"


@dataclass(frozen=True, slots=True)
class SSEEvent:
    """One dispatched event: its type (``message`` unless an ``event:`` line said
    otherwise), its data, and the last ``id:`` / ``retry:`` values seen."""

    data: str
    event: str = "message"
    id: str | None = None
    retry: int | None = None

    @property
    def done(self) -> bool:
        """True for OpenAI's end-of-stream sentinel, ``data: [DONE]``."""
        return self.data.strip() == DONE


class SSEParser:
    """Feed lines, get events. ``pending`` says whether an event was left unfinished."""

    __slots__ = ("_data", "_event", "_first", "_id", "_retry")

    def __init__(self) -> None:
        self._data: list[str] = []
        self._event = ""
        self._id: str | None = None
        self._retry: int | None = None
        self._first = True

    @property
    def pending(self) -> bool:
        """True when lines of an event arrived but not the blank line that ends it."""
        return bool(self._data) or bool(self._event)

    def feed(self, line: str) -> SSEEvent | None:
        """Take one line (its line ending, if any, is ignored); return the event it
        completes, if any."""
        if self._first:
            self._first = False
            line = line.removeprefix(_BOM)
        line = line.rstrip("\r\n")
        if not line:
            return self._dispatch()
        if line.startswith(":"):
            return None
        name, colon, value = line.partition(":")
        if colon and value.startswith(" "):
            value = value[1:]
        if name == "data":
            self._data.append(value)
        elif name == "event":
            self._event = value
        elif name == "id":
            if "\0" not in value:
                self._id = value
        elif name == "retry" and value.isascii() and value.isdigit():
            self._retry = int(value)
        return None

    def _dispatch(self) -> SSEEvent | None:
        data, event = self._data, self._event
        self._data, self._event = [], ""
        if not data:
            return None
        return SSEEvent("\n".join(data), event or "message", self._id, self._retry)

    def close(self) -> bool:
        """End the stream: an unfinished event is discarded, as the standard says.

        Returns whether one was (the stream was cut in the middle of an event).
        """
        cut = self.pending
        self._data, self._event = [], ""
        return cut


def parse_lines(lines: Iterable[str]) -> list[SSEEvent]:
    """Every complete event in ``lines`` (a convenience for whole bodies and tests)."""
    parser = SSEParser()
    events = [event for line in lines if (event := parser.feed(line)) is not None]
    parser.close()
    return events
