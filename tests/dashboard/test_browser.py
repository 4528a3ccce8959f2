"""The dashboard page in a real browser (Debian's chromium, driven by Playwright's sync API).

Each test runs a kernel with two agents and the dashboard edge in a background thread
(:class:`browser_support.KernelThread`), opens the page, publishes from the test thread and
waits (Playwright's own waiting, no sleeps) for the page to show it. No test may leave a
console error or an uncaught page error behind.

A missing browser fails the tests: ``make test`` installs the ``chromium`` package.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from browser_support import KernelThread, chromium
from playwright.sync_api import (
    Browser,
    ConsoleMessage,
    Locator,
    Page,
    WebError,
    WebSocket,
    WebSocketRoute,
    expect,
)

import loomk
from loomk.bus.topics import pattern_matches

PUBLISH_TO_ROW_S = 1.0  # an event is on the page within this long of its publication
WAIT_MS = 10_000  # page loads, the first snapshot, agent rows


class Relay(loomk.Agent):
    """Answers every ``orders.*`` event on ``audit.<its id>`` (so it is a source too)."""

    topics = ("orders.>",)

    async def on_event(self, ctx: loomk.Context, event: loomk.Event) -> None:
        await ctx.emit(f"audit.{self.agent_id}", loomk.Event("audited", event.payload))


class Listener(loomk.Agent):
    """Subscribes to room temperatures and does nothing with them."""

    topics = ("sensor.*.temp",)


async def _spawn_agents(kernel: loomk.Kernel) -> None:
    await kernel.spawn(Relay("alpha"))
    await kernel.spawn(Listener("beta"))


@dataclass
class Dashboard:
    """An open dashboard page on a running kernel, with what the page received and logged."""

    page: Page
    kernel: KernelThread
    errors: list[str] = field(default_factory=list)
    sockets: list[WebSocket] = field(default_factory=list)
    frames: list[dict[str, Any]] = field(default_factory=list)

    def publish(self, topic: str, etype: str = "test", payload: bytes = b"{}", **meta: str) -> None:
        self.kernel.publish(topic, loomk.Event(etype, payload, metadata=meta))

    def row(self, topic: str) -> Locator:
        """The event rows of ``topic`` (a Playwright locator)."""
        return self.page.locator(f'#events tbody tr[data-topic="{topic}"]')

    def next_snapshots(self, count: int = 2) -> None:
        """Wait for ``count`` more snapshot frames: the server has had at least
        ``(count - 1)`` snapshot intervals to act on what the page sent before."""
        assert self.sockets, "the page opened no websocket"
        for _ in range(count):
            with self.sockets[-1].expect_event(
                "framereceived", predicate=_is_snapshot, timeout=WAIT_MS
            ):
                pass

    def event_topics_since(self, index: int) -> list[str]:
        """The topics of the events the page was sent after frame ``index``."""
        return [
            event["topic"]
            for frame in self.frames[index:]
            if frame.get("type") == "events"
            for event in frame["events"]
        ]


def _is_snapshot(payload: str | bytes) -> bool:
    frame = json.loads(payload)
    return isinstance(frame, dict) and frame.get("type") == "snapshot"


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with chromium() as browser:
        yield browser


@pytest.fixture
def kernel() -> Iterator[KernelThread]:
    with KernelThread(
        _spawn_agents,
        name="browser-test",
        dashboard_address="127.0.0.1:0",
        state_temporary=True,
    ) as running:
        yield running


@pytest.fixture
def dashboard(browser: Browser, kernel: KernelThread) -> Iterator[Dashboard]:
    """The page, loaded and live (connected, first snapshot shown); on the way out, no
    page of its browser context may have logged a console error or thrown."""
    edge = kernel.kernel.edge("dashboard")
    assert hasattr(edge, "url"), f"the dashboard edge yielded {edge!r}, without a url"
    url = str(edge.url)
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    page = context.new_page()
    page.set_default_timeout(WAIT_MS)
    board = Dashboard(page, kernel)

    def on_console(message: ConsoleMessage) -> None:
        if message.type == "error":
            board.errors.append(f"console: {message.text} ({message.location})")

    def on_page_error(error: WebError) -> None:
        board.errors.append(f"page error: {error.error.message}")

    def on_socket(socket: WebSocket) -> None:
        board.sockets.append(socket)
        socket.on("framereceived", on_frame)

    def on_frame(payload: str | bytes) -> None:
        board.frames.append(json.loads(payload))

    context.on("console", on_console)  # of every page of the context
    context.on("weberror", on_page_error)
    page.on("websocket", on_socket)
    try:
        page.goto(url)
        expect(page.locator("#status")).to_have_attribute("data-state", "open")
        expect(page.locator('#agents tbody tr[data-agent="alpha"]')).to_be_visible()
        yield board
        assert board.errors == [], "the page logged errors"
    finally:
        context.close()  # before the kernel stops: its closing socket is no page error


def test_page_lists_the_running_agents(dashboard: Dashboard) -> None:
    page = dashboard.page
    expect(page.locator("#kernel")).to_have_text("browser-test")
    rows = page.locator("#agents tbody tr")
    expect(rows).to_have_count(2)
    for agent in ("alpha", "beta"):
        row = page.locator(f'#agents tbody tr[data-agent="{agent}"]')
        expect(row).to_be_visible()
        expect(row.locator("td").first).to_have_text(agent)
        expect(row).to_have_attribute("data-status", "running")
    expect(page.locator("#agents-count")).to_have_text("2")
    expect(page.locator("#uptime")).to_have_text(re.compile(r"^\d+s$|\d+m \d+s$"))


def test_a_published_event_is_shown_within_a_second(dashboard: Dashboard) -> None:
    row = dashboard.row("orders.created")
    expect(row).to_have_count(0)
    started = time.monotonic()
    dashboard.publish("orders.created", "order", b'{"id": 7}', thread_id="t-7")
    expect(row).to_be_visible(timeout=PUBLISH_TO_ROW_S * 1000)
    elapsed = time.monotonic() - started
    assert elapsed <= PUBLISH_TO_ROW_S + 0.2, f"shown {elapsed:.3f} s after publication"
    cells = row.first.locator("td")
    expect(cells.nth(1)).to_have_text("orders.created")
    expect(cells.nth(2)).to_have_text("order")
    expect(cells.nth(4)).to_have_text("t-7")
    expect(cells.nth(5)).to_contain_text('{"id": 7}')
    # the relay's answer comes after it, so it is above it (newest first)
    expect(dashboard.row("audit.alpha")).to_be_visible()
    expect(dashboard.page.locator("#events tbody tr").first).to_have_attribute(
        "data-topic", "audit.alpha"
    )


def test_event_text_is_escaped(dashboard: Dashboard) -> None:
    markup = '<img src=x onerror="window.__pwned=1"><b>bold</b>'
    dashboard.publish("orders.markup", "<script>", markup.encode())
    row = dashboard.row("orders.markup")
    expect(row).to_be_visible()
    expect(row.locator("td").nth(5)).to_have_text(markup)
    expect(row.locator("td").nth(2)).to_have_text("<script>")
    assert dashboard.page.locator("#events img, #events b, #events script").count() == 0
    assert dashboard.page.evaluate("window.__pwned") is None


def test_the_topic_filter_shows_only_matching_events(dashboard: Dashboard) -> None:
    page = dashboard.page
    dashboard.publish("orders.before")
    expect(dashboard.row("orders.before")).to_be_visible()

    page.locator("#filter").fill("sensor.*.temp")
    page.locator("#filter").press("Enter")
    expect(page.locator("#filter-active")).to_have_text("sensor.*.temp")
    expect(dashboard.row("orders.before")).to_have_count(0)  # the old rows are cleared
    dashboard.next_snapshots()
    sent_from = len(dashboard.frames)

    dashboard.publish("sensor.kitchen.temp")
    dashboard.publish("sensor.kitchen.humidity")
    dashboard.publish("orders.filtered")
    dashboard.publish("sensor.kitchen.temp.raw")
    dashboard.publish("sensor.hall.temp")  # the last one: when it is shown, all were seen
    expect(dashboard.row("sensor.hall.temp")).to_be_visible(timeout=PUBLISH_TO_ROW_S * 1000)
    expect(dashboard.row("sensor.kitchen.temp")).to_be_visible()
    shown = page.locator("#events tbody tr").evaluate_all(
        "rows => rows.map(row => row.dataset.topic)"
    )
    assert sorted(shown) == ["sensor.hall.temp", "sensor.kitchen.temp"]
    # and the server filtered them: the page was sent nothing else
    sent = dashboard.event_topics_since(sent_from)
    assert sent, "no events frame after the filter"
    assert all(pattern_matches("sensor.*.temp", topic) for topic in sent), sent

    # a bad pattern is refused by the server, which keeps the filter it had
    page.locator("#filter").fill("sensor.>.temp")
    page.locator("#filter").press("Enter")
    expect(page.locator("#filter-error")).to_be_visible()
    expect(page.locator("#filter-error")).to_contain_text("BAD_FILTER")
    expect(page.locator("#filter")).to_have_attribute("aria-invalid", "true")
    expect(page.locator("#filter-active")).to_have_text("sensor.*.temp")

    # ">" (like "") is everything again
    page.locator("#filter").fill(">")
    page.locator("#filter").press("Enter")
    expect(page.locator("#filter-error")).to_be_hidden()
    expect(page.locator("#filter-active")).to_have_text("all")
    dashboard.publish("orders.after")
    expect(dashboard.row("orders.after")).to_be_visible()


def test_pause_stops_new_rows_and_resume_restarts_them(dashboard: Dashboard) -> None:
    page = dashboard.page
    dashboard.publish("orders.before")
    expect(dashboard.row("orders.before")).to_be_visible()

    page.locator("#pause").click()
    expect(page.locator("#paused-badge")).to_be_visible()
    expect(page.locator("#paused-badge")).to_have_text("paused")
    expect(page.locator("#pause")).to_have_attribute("aria-pressed", "true")
    dashboard.next_snapshots()
    rows_before = page.locator("#events tbody tr").count()
    sent_from = len(dashboard.frames)

    dashboard.publish("orders.while-paused")
    dashboard.next_snapshots()  # ten and more event ticks later
    assert dashboard.event_topics_since(sent_from) == [], "events were sent while paused"
    expect(dashboard.row("orders.while-paused")).to_have_count(0)
    expect(page.locator("#events tbody tr")).to_have_count(rows_before)

    page.locator("#pause").click()
    expect(page.locator("#paused-badge")).to_be_hidden()
    expect(page.locator("#pause")).to_have_attribute("aria-pressed", "false")
    dashboard.next_snapshots(1)
    dashboard.publish("orders.resumed")
    expect(dashboard.row("orders.resumed")).to_be_visible(timeout=PUBLISH_TO_ROW_S * 1000)


def test_the_topology_shows_agents_and_their_patterns(dashboard: Dashboard) -> None:
    topology = dashboard.page.locator("#topology")
    for agent in ("alpha", "beta"):
        node = topology.locator(f'[data-testid="topo-agent"][data-agent="{agent}"]')
        expect(node).to_be_visible()
        expect(node).to_contain_text(agent)
    for pattern in ("orders.>", "sensor.*.temp"):
        node = topology.locator(f'[data-testid="topo-pattern"][data-pattern="{pattern}"]')
        expect(node).to_be_visible()
    # one edge per subscription: the two above and each agent's own reply topic
    expect(topology.locator("path.topo-sub")).to_have_count(4)


def test_what_an_agent_emits_names_it_as_source(dashboard: Dashboard) -> None:
    """An agent's events carry ``sender = agent.<id>`` (``Context.emit``); the feed gives it
    as the event's ``source``, and the topology draws an edge agent -> topic from it."""
    dashboard.publish("orders.created")  # alpha answers on audit.alpha
    audit = dashboard.row("audit.alpha")
    expect(audit).to_be_visible()
    expect(audit.first.locator("td.source")).to_have_text("agent.alpha")
    topology = dashboard.page.locator("#topology")
    expect(topology.locator('[data-testid="topo-topic"][data-topic="audit.alpha"]')).to_be_visible()
    expect(topology.locator("path.topo-pub")).to_have_count(1)
    # a source that is no agent draws nothing
    dashboard.kernel.publish("orders.other", loomk.Event("t", source="sensor-gw"))
    expect(dashboard.row("orders.other").first.locator("td.source")).to_have_text("sensor-gw")
    expect(topology.locator('[data-testid="topo-topic"]')).to_have_count(1)


def test_the_stream_keeps_the_newest_200_rows_newest_first(dashboard: Dashboard) -> None:
    async def burst(kernel: loomk.Kernel) -> None:
        for n in range(260):
            await kernel.bus.publish(f"bulk.{n}", loomk.Event("bulk", str(n).encode()))

    dashboard.kernel.run(burst, dashboard.kernel.kernel)
    rows = dashboard.page.locator("#events tbody tr")
    expect(rows).to_have_count(200)
    expect(dashboard.page.locator("#events-count")).to_have_text("200")
    numbers = rows.evaluate_all("rows => rows.map(row => Number(row.dataset.topic.slice(5)))")
    assert numbers == sorted(numbers, reverse=True), "not newest first"
    assert numbers[0] >= 250, "the newest events are missing"


def test_threads_and_charts_fill_in(dashboard: Dashboard) -> None:
    page = dashboard.page
    dashboard.publish("orders.one", thread_id="thread-a")
    dashboard.publish("orders.two", thread_id="thread-b")
    dashboard.publish("orders.three", thread_id="thread-a")
    lanes = page.locator('#threads [data-testid="thread-lane"]')
    expect(lanes.first).to_have_attribute("data-thread", "thread-a")  # newest first
    expect(page.locator('#threads [data-thread="thread-a"] .thread-mark')).to_have_count(2)
    expect(page.locator('#threads [data-thread="thread-b"] .thread-mark')).to_have_count(1)
    dashboard.next_snapshots()
    expect(page.locator("#chart-throughput polyline")).to_have_count(2)
    expect(page.locator("#chart-latency polyline")).to_have_count(1)
    expect(page.locator("#total-published")).not_to_have_text("0")


def test_a_phone_sized_screen_has_no_horizontal_scroll(dashboard: Dashboard) -> None:
    page = dashboard.page
    page.set_viewport_size({"width": 390, "height": 844})
    long_token = "a-very-long-room-name-that-does-not-break-" * 3
    dashboard.publish(
        f"sensor.{long_token}.temp", "reading", b"x" * 160, thread_id="thread-" + "y" * 60
    )
    expect(dashboard.row(f"sensor.{long_token}.temp")).to_be_visible()
    expect(page.locator('#threads [data-testid="thread-lane"]')).to_have_count(1)
    expect(page.locator('#topology [data-testid="topo-agent"]')).to_have_count(2)
    width = page.evaluate("[document.documentElement.scrollWidth, window.innerWidth]")
    assert width[0] <= width[1], f"the page is {width[0]} px wide in a {width[1]} px viewport"
    # the panels are stacked, one under the other, each within the screen
    boxes = [
        page.locator(selector).bounding_box()
        for selector in ("#stream-panel", "#agents-panel", "#topology-panel", "#charts-panel")
    ]
    assert all(box is not None for box in boxes)
    lefts = {round(box["x"]) for box in boxes if box is not None}
    assert len(lefts) == 1, f"panels side by side on a phone: {boxes}"
    assert all(box["x"] + box["width"] <= 390 for box in boxes if box is not None)
    tops = [box["y"] for box in boxes if box is not None]
    assert tops == sorted(tops)


def test_the_page_reconnects_when_its_socket_is_closed(dashboard: Dashboard) -> None:
    page = dashboard.page.context.new_page()
    routes: list[WebSocketRoute] = []

    def forward(route: WebSocketRoute) -> None:
        route.connect_to_server()  # pass every frame through, both ways
        routes.append(route)

    page.route_web_socket(re.compile(r"/ws$"), forward)
    page.goto(dashboard.page.url)
    status = page.locator("#status")
    expect(status).to_have_attribute("data-state", "open")
    expect(page.locator('#agents tbody tr[data-agent="beta"]')).to_be_visible()
    routes[0].close(code=1001, reason="gone away")  # as a network blip or a restart would
    expect(status).to_have_attribute("data-state", "closed")
    expect(status).to_contain_text("retrying")
    expect(status).to_have_attribute("data-state", "open")  # within the first backoff
    assert len(routes) == 2
    dashboard.publish("orders.after-reconnect")
    expect(page.locator('#events tbody tr[data-topic="orders.after-reconnect"]')).to_be_visible()
    page.close()
