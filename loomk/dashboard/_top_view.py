"""What ``loomk top`` shows: the feed's frames folded into a :class:`TopView`, drawn with rich.

Everything here is pure (no socket, no clock, no terminal), so the dashboard's look and its
tolerance of bad input are tested apart from the websocket: :func:`apply_frame` folds one
frame into the view, :func:`render_top` draws the live screen and :func:`render_snapshot`
the plain tables ``loomk top --once`` prints.

The feed is another process's output, so nothing in a frame is trusted: a frame that is not
a JSON object with a known ``type`` is counted as malformed, a missing or mistyped field is
drawn as ``-``, and every text from the server is drawn as plain text with control
characters replaced (an agent id such as ``[bold]`` is not rich markup, an event preview
holding an escape sequence cannot repaint the terminal).
"""

from __future__ import annotations

import json
import math
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field

from rich import box
from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text

__all__ = [
    "FRAME_TYPES",
    "RECENT_EVENTS",
    "TopView",
    "apply_frame",
    "render_snapshot",
    "render_top",
]

FRAME_TYPES = frozenset({"hello", "snapshot", "events", "error", "pong"})
"""The frame types of the feed protocol (docs/dashboard.md); any other is malformed."""
RECENT_EVENTS = 8
"""How many of the latest events the live screen lists."""
TOPICS_SHOWN = 10
"""How many of the busiest topics the live screen lists (``--once`` prints them all)."""
PREVIEW_CHARS = 60
"""How much of an event's payload preview the live screen shows."""

_MISSING = "-"
_STATUS_STYLES = {
    "running": "green",
    "starting": "cyan",
    "restarting": "yellow",
    "stopping": "yellow",
    "stopped": "dim",
    "failed": "bold red",
}
_CONNECTION_STYLES = {"connected": "bold green", "connecting": "yellow", "reconnecting": "bold red"}

JsonObject = Mapping[str, object]


@dataclass
class TopView:
    """What ``loomk top`` knows of the feed: the latest snapshot, the latest events, the
    connection's state and what went wrong on it."""

    url: str
    """The feed's ``ws://`` URL."""
    connection: str = "connecting"
    """``connecting`` (first attempt), ``connected`` or ``reconnecting``."""
    connection_detail: str = ""
    """Why the last connection ended or failed, and when the next attempt is."""
    kernel: str = ""
    """The kernel's name, from ``hello`` or the latest snapshot."""
    snapshot: JsonObject | None = None
    """The latest ``snapshot`` frame, as received."""
    recent_events: deque[JsonObject] = field(default_factory=lambda: deque(maxlen=RECENT_EVENTS))
    """The latest events, oldest first."""
    missed_events: int = 0
    """Events the server said it did not send us (sampled or dropped), since we started."""
    frames: int = 0
    """Frames received, malformed ones included."""
    malformed_frames: int = 0
    """Frames that were not a JSON object with a known ``type`` (or had a malformed body)."""
    server_errors: int = 0
    """``error`` frames received."""
    last_server_error: str = ""
    """The latest ``error`` frame's code and message."""
    connections: int = 0
    """Connections opened so far: more than one means the feed was reconnected."""


def apply_frame(view: TopView, message: str | bytes) -> str | None:
    """Fold one feed frame into ``view``; its type, or None if it was malformed (counted in
    :attr:`TopView.malformed_frames`). Never raises, whatever the server sent."""
    view.frames += 1
    frame = _decode(message)
    kind = frame.get("type") if frame is not None else None
    if frame is None or not isinstance(kind, str) or kind not in FRAME_TYPES:
        view.malformed_frames += 1
        return None
    if kind == "hello":
        view.kernel = _text(frame.get("kernel")) or view.kernel
    elif kind == "snapshot":
        view.snapshot = frame
        view.kernel = _text(frame.get("kernel")) or view.kernel
    elif kind == "events":
        events = frame.get("events")
        if not isinstance(events, list):
            view.malformed_frames += 1
            return None
        view.recent_events.extend(event for event in events if isinstance(event, dict))
        missed = _as_number(frame.get("missed"))
        if missed is not None and 0 < missed < 1e15:
            view.missed_events += int(missed)
    elif kind == "error":
        view.server_errors += 1
        code, message_text = _text(frame.get("code")), _text(frame.get("message"))
        view.last_server_error = f"{code or 'ERROR'}: {message_text}".rstrip(": ")
    return kind


def _decode(message: str | bytes) -> JsonObject | None:
    """The frame's JSON object, or None if it is binary, not JSON or not an object."""
    if not isinstance(message, str):  # the protocol sends text frames only
        return None
    try:
        frame = json.loads(message)
    except ValueError:  # JSONDecodeError, and numbers too large to convert
        return None
    except RecursionError:  # a deeply nested document
        return None
    return frame if isinstance(frame, dict) else None


# --- drawing -------------------------------------------------------------------------------


def render_top(view: TopView, *, agent_rows: int | None = None) -> RenderableType:
    """The live screen: header, agents, busiest topics, recent events, edges' counters.

    ``agent_rows`` caps the agents listed (the terminal's height allows so many), saying how
    many more there are; None lists them all."""
    snapshot = view.snapshot or {}
    parts: list[RenderableType] = [_live_header(view, snapshot)]
    if view.snapshot is None:
        parts.append(Text("waiting for the first snapshot...", style="dim"))
        return Group(*parts)
    tables = [
        _agents_table(snapshot, limit=agent_rows),
        _topics_table(snapshot, limit=TOPICS_SHOWN),
        _events_table(view),
        _edges_table(snapshot),
    ]
    return _stacked(parts, tables)


def render_snapshot(snapshot: JsonObject) -> RenderableType:
    """One snapshot as plain tables (``loomk top --once``): a summary line, every agent,
    every topic, the capabilities called and the edges' counters."""
    tables = [
        _agents_table(snapshot, limit=None),
        _topics_table(snapshot, limit=None),
        _capabilities_table(snapshot),
        _edges_table(snapshot),
    ]
    return _stacked([_summary(snapshot)], tables)


def _stacked(head: list[RenderableType], tables: list[Table | None]) -> RenderableType:
    """``head`` then the tables that are there, a blank line before each."""
    parts = list(head)
    for table in tables:
        if table is not None:
            parts.extend((Text(""), table))
    return Group(*parts)


def rows_needed_besides_agents(view: TopView) -> int:
    """Terminal lines the live screen needs for all but the agents' rows: what is left of
    the terminal's height is the agents' budget."""
    snapshot = view.snapshot or {}
    header = 3
    tables = 4  # each: title, heading, rule, bottom
    topics = min(len(_records(snapshot.get("topics"))), TOPICS_SHOWN) + tables
    events = len(view.recent_events) + tables
    edges = len(_mapping(snapshot.get("edges"))) + tables
    agents_frame = 5  # title, heading, rule, bottom, the "more" caption
    return header + topics + events + edges + agents_frame


def _live_header(view: TopView, snapshot: JsonObject) -> RenderableType:
    state = Text()
    state.append("loomk top", style="bold")
    state.append("  kernel ")
    state.append(_plain(view.kernel) or _MISSING, style="bold cyan")
    state.append(f"  up {_duration(snapshot.get('uptime_s'))}  ")
    state.append(view.connection, style=_CONNECTION_STYLES.get(view.connection, ""))
    if view.connection_detail:
        state.append(f" ({_plain(view.connection_detail)})", style="dim")
    state.append(f"  {_plain(view.url)}", style="dim")
    lines: list[RenderableType] = [state, _totals_line(snapshot)]
    trouble = _trouble_line(view)
    if trouble is not None:
        lines.append(trouble)
    return Group(*lines)


def _summary(snapshot: JsonObject) -> RenderableType:
    title = Text()
    title.append("kernel ")
    title.append(_plain(_text(snapshot.get("kernel"))) or _MISSING, style="bold")
    title.append(f"  up {_duration(snapshot.get('uptime_s'))}")
    return Group(title, _totals_line(snapshot))


def _totals_line(snapshot: JsonObject) -> Text:
    totals = _mapping(snapshot.get("totals"))
    line = Text()
    for label, value in (
        ("published/s", _rate(totals.get("published_per_s"))),
        ("delivered/s", _rate(totals.get("delivered_per_s"))),
        ("dropped", _count(totals.get("dropped"))),
        ("published", _count(totals.get("published"))),
        ("delivered", _count(totals.get("delivered"))),
        ("agents", str(len(_records(snapshot.get("agents"))))),
    ):
        line.append(f"{label} ")
        style = "bold red" if label == "dropped" and value not in ("0", _MISSING) else "bold"
        line.append(value, style=style)
        line.append("  ")
    line.rstrip()
    return line


def _trouble_line(view: TopView) -> Text | None:
    """Malformed frames, server errors and missed events, when there were any."""
    trouble: list[str] = []
    if view.malformed_frames:
        trouble.append(f"malformed frames: {view.malformed_frames}")
    if view.server_errors:
        trouble.append(f"server errors: {view.server_errors} (last {view.last_server_error})")
    if view.missed_events:
        trouble.append(f"events not sent to us: {view.missed_events}")
    if not trouble:
        return None
    return Text(_plain("  ".join(trouble)), style="yellow")


def _table(title: str) -> Table:
    """A table in the screen's style: a title on the left, a rule under the headings only
    (compact, so more rows fit a terminal)."""
    return Table(
        title=title,
        title_justify="left",
        title_style="bold",
        box=box.SIMPLE_HEAD,
        show_edge=False,
        pad_edge=False,
        collapse_padding=True,
    )


def _agents_table(snapshot: JsonObject, *, limit: int | None) -> Table:
    agents = sorted(_records(snapshot.get("agents")), key=lambda agent: _text(agent.get("id")))
    shown = agents if limit is None else agents[: max(limit, 1)]
    table = _table("agents")
    table.add_column("id", no_wrap=True, style="bold")
    table.add_column("status", no_wrap=True)
    for heading in ("mailbox", "peak", "handled/s", "handled", "failures", "restarts", "p99 ms"):
        table.add_column(heading, justify="right", no_wrap=True)
    for agent in shown:
        status = _text(agent.get("status"))
        latency = _mapping(agent.get("latency_ms"))
        table.add_row(
            Text(_plain(_text(agent.get("id"))) or _MISSING),
            Text(_plain(status) or _MISSING, style=_STATUS_STYLES.get(status, "")),
            _count(agent.get("mailbox")),
            _count(agent.get("mailbox_high_water")),
            _rate(agent.get("handled_per_s")),
            _count(agent.get("handled")),
            _count(agent.get("failures")),
            _count(agent.get("restarts")),
            _milliseconds(latency.get("p99")),
        )
    if len(shown) < len(agents):
        table.caption = f"... {len(agents) - len(shown)} more agents (a taller terminal shows them)"
    return table


def _topics_table(snapshot: JsonObject, *, limit: int | None) -> Table:
    topics = sorted(
        _records(snapshot.get("topics")),
        key=lambda topic: (_number(topic.get("published_per_s")), _number(topic.get("published"))),
        reverse=True,
    )
    shown = topics if limit is None else topics[:limit]
    title = "busiest topics" if limit is not None else "topics"
    table = _table(title)
    table.add_column("topic", no_wrap=True, overflow="ellipsis", max_width=48)
    for heading in ("published/s", "published", "delivered", "depth", "dropped", "subscribers"):
        table.add_column(heading, justify="right")
    for topic in shown:
        dropped = _count(topic.get("dropped"))
        table.add_row(
            Text(_plain(_text(topic.get("topic"))) or _MISSING),
            _rate(topic.get("published_per_s")),
            _count(topic.get("published")),
            _count(topic.get("delivered")),
            _count(topic.get("depth")),
            Text(dropped, style="red" if dropped not in ("0", _MISSING) else ""),
            _count(topic.get("subscriptions")),
        )
    return table


def _events_table(view: TopView) -> Table:
    table = _table("recent events")
    table.add_column("seq", justify="right")
    for heading in ("topic", "type", "source"):
        table.add_column(heading, no_wrap=True, overflow="ellipsis", max_width=32)
    table.add_column("bytes", justify="right")
    table.add_column("preview", no_wrap=True, overflow="ellipsis")
    for event in reversed(view.recent_events):  # the newest on top
        table.add_row(
            _count(event.get("seq")),
            Text(_plain(_text(event.get("topic"))) or _MISSING),
            Text(_plain(_text(event.get("type"))) or _MISSING),
            Text(_plain(_text(event.get("source"))) or _MISSING),
            _count(event.get("size")),
            Text(_plain(_text(event.get("preview")))[:PREVIEW_CHARS], style="dim"),
        )
    return table


def _edges_table(snapshot: JsonObject) -> Table | None:
    edges = _mapping(snapshot.get("edges"))
    if not edges:
        return None
    table = _table("edges")
    table.add_column("edge", style="bold", no_wrap=True)
    table.add_column("counters")
    for name in sorted(edges):
        counters = _flatten(edges[name])
        shown = "  ".join(f"{key} {value}" for key, value in counters) or _MISSING
        table.add_row(Text(_plain(name)), Text(_plain(shown)))
    return table


def _capabilities_table(snapshot: JsonObject) -> Table | None:
    capabilities = _records(snapshot.get("capabilities"))
    if not capabilities:
        return None
    table = _table("capabilities")
    table.add_column("capability")
    for heading in ("calls", "errors", "p50 ms", "p99 ms"):
        table.add_column(heading, justify="right")
    for capability in capabilities:
        table.add_row(
            Text(_plain(_text(capability.get("name"))) or _MISSING),
            _count(capability.get("calls")),
            _count(capability.get("errors")),
            _milliseconds(capability.get("p50_ms")),
            _milliseconds(capability.get("p99_ms")),
        )
    return table


# --- reading untrusted values ----------------------------------------------------------------


def _as_number(value: object) -> float | None:
    """``value`` as a finite number, or None (missing, a string, a bool, NaN, too large)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    try:
        number = float(value)
    except OverflowError:  # an integer beyond a float's range
        return None
    return number if math.isfinite(number) else None


def _number(value: object) -> float:
    """``value`` as a number for sorting; missing or not a number sorts as -1."""
    number = _as_number(value)
    return -1.0 if number is None else number


def _text(value: object) -> str:
    return value if isinstance(value, str) else ""


def _mapping(value: object) -> JsonObject:
    return value if isinstance(value, dict) else {}


def _records(value: object) -> list[JsonObject]:
    """The objects of a JSON list; anything else in it (or no list) is left out."""
    return [item for item in value if isinstance(item, dict)] if isinstance(value, list) else []


def _plain(text: str) -> str:
    """``text`` with every control or other unprintable character replaced by ``?``: it is
    shown on one line and cannot send the terminal escape sequences."""
    return "".join(ch if ch.isprintable() else " " if ch in "\t\n\r" else "?" for ch in text)


def _count(value: object) -> str:
    number = _as_number(value)
    if number is None:
        return _MISSING
    return f"{int(number):,}" if abs(number) < 1e15 else f"{number:.3g}"


def _rate(value: object) -> str:
    number = _as_number(value)
    if number is None:
        return _MISSING
    return f"{number:,.0f}" if abs(number) >= 100 else f"{number:.1f}"


def _milliseconds(value: object) -> str:
    number = _as_number(value)
    if number is None:
        return _MISSING
    if abs(number) >= 100:
        return f"{number:,.0f}"
    return f"{number:.2f}" if abs(number) < 1 else f"{number:.1f}"


def _duration(value: object) -> str:
    """Seconds as ``42s``, ``3m05s``, ``2h03m`` or ``4d02h``; ``-`` if not a number."""
    number = _as_number(value)
    if number is None or not 0 <= number < 1e12:
        return _MISSING
    minutes, second = divmod(int(number), 60)
    hours, minute = divmod(minutes, 60)
    days, hour = divmod(hours, 24)
    if days:
        return f"{days}d{hour:02d}h"
    if hours:
        return f"{hours}h{minute:02d}m"
    if minutes:
        return f"{minutes}m{second:02d}s"
    return f"{second}s"


def _flatten(value: object, prefix: str = "", depth: int = 0) -> list[tuple[str, str]]:
    """An edge's counters as ``(name, shown value)`` pairs, nested objects as ``a.b`` (three
    levels deep; deeper ones are shown as ``{...}``)."""
    if isinstance(value, dict):
        if depth >= 3:
            return [(prefix.rstrip("."), "{...}")]
        pairs: list[tuple[str, str]] = []
        for key in sorted(value, key=str):
            pairs.extend(_flatten(value[key], f"{prefix}{key}.", depth + 1))
        return pairs
    name = prefix.rstrip(".") or "value"
    number = _as_number(value)
    if number is not None:
        shown = _count(number) if number.is_integer() else _rate(number)
    elif isinstance(value, str | bool) or value is None:
        shown = str(value).lower() if not isinstance(value, str) else value
    else:
        shown = f"[{len(value)} items]" if isinstance(value, list) else _MISSING
    return [(name, shown)]
