"""One feed client: its filter, pause state, outbox, and the commands it sends.

The websocket handler of :mod:`loomk.dashboard._app` feeds each text message to
:meth:`FeedClient.handle_message`; the answers (``pong``, ``error``) go to the client's
outbox like every other frame, so answering never waits on the client either. Deciding to
close a client (too many bad messages in a row, a message too big, not reading, shutdown)
sets :attr:`FeedClient.close_code` and :attr:`FeedClient.done`; the handler does the rest.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import trio

from loomk.bus import validate_pattern
from loomk.dashboard._logs import dashboard_log as _log
from loomk.dashboard._outbox import Outbox, frame_json
from loomk.errors import TopicError

__all__ = [
    "CLOSE_BAD_MESSAGES",
    "CLOSE_GOING_AWAY",
    "CLOSE_TOO_BIG",
    "CLOSE_TRY_LATER",
    "ClientLimits",
    "FeedClient",
    "error_frame",
]

CLOSE_GOING_AWAY = 1001
CLOSE_BAD_MESSAGES = 1008  # policy violation: bad messages in a row, not reading
CLOSE_TOO_BIG = 1009
CLOSE_TRY_LATER = 1013

_ALL = ">"


def error_frame(code: str, message: str) -> str:
    """An ``error`` frame (``BAD_MESSAGE``, ``UNKNOWN_COMMAND``, ``BAD_FILTER``)."""
    return frame_json({"type": "error", "code": code, "message": message})


_PONG = frame_json({"type": "pong"})


@dataclass(frozen=True, slots=True)
class ClientLimits:
    """What one client may send: ``max_message_bytes`` per message (more closes it with
    1009) and ``max_bad_messages`` bad ones in a row (that many close it with 1008)."""

    max_message_bytes: int = 4096
    max_bad_messages: int = 10


class FeedClient:
    """A websocket client of the feed (made by the hub when it admits one)."""

    __slots__ = (
        "abort_transport",
        "bad_in_a_row",
        "close_code",
        "close_reason",
        "done",
        "ident",
        "limits",
        "outbox",
        "pattern",
        "paused",
        "peer",
        "peer_gone",
        "transport_aborted",
    )

    def __init__(
        self,
        ident: int,
        peer: str,
        outbox: Outbox,
        limits: ClientLimits,
        abort_transport: Callable[[], None],
    ) -> None:
        self.ident = ident
        self.peer = peer
        self.outbox = outbox
        self.limits = limits
        self.abort_transport = abort_transport
        """Cuts the connection under the websocket: the way out for a client whose socket
        no longer takes bytes (a close frame could not reach it)."""
        self.pattern = _ALL
        """The client's topic filter (``>``: every topic)."""
        self.paused = False
        self.bad_in_a_row = 0
        self.close_code: int | None = None
        self.close_reason = ""
        self.transport_aborted = False
        self.peer_gone = False
        """The connection ended (the client closed it, or it was cut)."""
        self.done = trio.Event()
        """Set when the client must go: the handler closes it (``close_code``) and leaves."""

    @property
    def wants_events(self) -> bool:
        """Whether the hub should build ``events`` frames for this client now."""
        return not self.paused and self.close_code is None

    def close(self, code: int, reason: str, detail: str = "", *, abort: bool = False) -> None:
        """Decide to close the client with ``code`` and ``reason`` (a short phrase, also the
        key of ``DashboardStats.closed``; the first decision stands). ``abort`` also cuts
        its connection at once, for a client whose socket takes nothing more."""
        if self.close_code is None:
            self.close_code = code
            self.close_reason = reason
            _log().info(
                "dashboard: closing a feed client",
                client=self.peer,
                code=code,
                reason=reason,
                detail=detail or None,
            )
        if abort and not self.transport_aborted:
            self.transport_aborted = True
            self.abort_transport()
        self._finish()

    def disconnected(self) -> None:
        """The connection ended: nothing more can be sent."""
        self.peer_gone = True
        self._finish()

    def _finish(self) -> None:
        self.done.set()
        self.outbox.wake()  # the writer stops waiting for frames

    # ---- what the client sends ------------------------------------------------------------

    def handle_message(self, text: str | None, data: bytes | None) -> None:
        """Act on one websocket message: a command, or a bad message answered with an
        ``error`` frame (too many in a row, or one too big, close the client)."""
        size = len(data) if data is not None else len((text or "").encode("utf-8", "surrogatepass"))
        if size > self.limits.max_message_bytes:
            self.close(
                CLOSE_TOO_BIG,
                "message too big",
                f"a message of {size} bytes, over {self.limits.max_message_bytes}",
            )
            return
        if text is None:
            self._bad("BAD_MESSAGE", "frames are JSON text, not binary")
            return
        try:
            message: Any = json.loads(text)
        except ValueError:
            self._bad("BAD_MESSAGE", "not JSON")
            return
        if not isinstance(message, dict):
            self._bad("BAD_MESSAGE", "not a JSON object")
            return
        kind = message.get("type")
        if not isinstance(kind, str):
            self._bad("BAD_MESSAGE", "no 'type'")
            return
        if kind == "filter":
            self._filter(message.get("topic"))
        elif kind == "pause":
            self._good()
            self.paused = True
        elif kind == "resume":
            self._good()
            self.paused = False
        elif kind == "ping":
            self._good()
            self.outbox.put_control(_PONG)
        else:
            self._bad("UNKNOWN_COMMAND", f"unknown command {kind[:64]!r}")

    def _filter(self, topic: object) -> None:
        if topic == "":
            topic = _ALL
        if not isinstance(topic, str):
            self._bad("BAD_FILTER", "'topic' is a string: a topic pattern ('' or '>' for all)")
            return
        try:
            self.pattern = validate_pattern(topic)
        except TopicError as error:
            self._bad("BAD_FILTER", str(error)[:200])
            return
        self._good()

    def _good(self) -> None:
        self.bad_in_a_row = 0

    def _bad(self, code: str, message: str) -> None:
        self.bad_in_a_row += 1
        _log().info(
            "dashboard: bad message from a feed client",
            client=self.peer,
            code=code,
            problem=message,
            in_a_row=self.bad_in_a_row,
        )
        self.outbox.put_control(error_frame(code, message))
        if self.bad_in_a_row >= self.limits.max_bad_messages:
            self.close(
                CLOSE_BAD_MESSAGES, "bad messages", f"{self.bad_in_a_row} bad messages in a row"
            )
