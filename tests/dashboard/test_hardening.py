"""What the security and operations review asked of the dashboard (docs/dashboard.md):
DNS rebinding refused by ``Host``, no HTTP/2 (h2c upgrade or prior knowledge), ``loomk top``
owning its socket, ``/metrics`` rendered at most once a second, a connection cap, the
security headers on every answer, and no dead ASGI lifespan branch."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import pytest
import trio
import trio.testing
from dashboard_support import (
    FAST,
    capture_dashboard_logs,
    feed_client,
    next_frame,
    open_stream,
    serving,
    upgrade_request,
)
from trio_websocket import ConnectionRejected

from loomk import Event
from loomk.dashboard import DashboardLimits, open_dashboard
from loomk.dashboard._app import CONTENT_SECURITY_POLICY, DashboardApp
from loomk.dashboard._hosts import HostPolicy, host_name
from loomk.dashboard._hub import FeedHub
from loomk.dashboard._metrics import RenderCache
from loomk.dashboard._top_view import TopView
from loomk.dashboard.top import fetch_snapshot
from loomk.testing import open_test_kernel


def _port(address: str) -> int:
    return int(address.rsplit(":", 1)[1])


async def _exchange(address: str, request: bytes) -> bytes:
    """Send ``request`` on a new connection and read until the server closes it."""
    host, port = address.rsplit(":", 1)
    stream = await trio.open_tcp_stream(host.strip("[]"), int(port))
    try:
        await stream.send_all(request)
        received = b""
        with trio.fail_after(10):
            while chunk := await stream.receive_some(65536):
                received += chunk
        return received
    finally:
        await stream.aclose()


async def _handshake_status(address: str, request: bytes) -> int:
    """The HTTP status a raw websocket handshake ``request`` is answered with."""
    host, port = address.rsplit(":", 1)
    stream = await trio.open_tcp_stream(host.strip("[]"), int(port))
    try:
        await stream.send_all(request)
        head = b""
        with trio.fail_after(10):
            while b"\r\n" not in head:
                chunk = await stream.receive_some(1)
                assert chunk, head
                head += chunk
        return int(head.split()[1])
    finally:
        await stream.aclose()


def _with_host(request: bytes, host: str) -> bytes:
    """``request`` (from :func:`upgrade_request`) with another ``Host`` header."""
    lines = request.split(b"\r\n")
    return b"\r\n".join(
        f"Host: {host}".encode() if line.startswith(b"Host:") else line for line in lines
    )


# --- 1. DNS rebinding ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "name"),
    [
        ("127.0.0.1:8765", "127.0.0.1"),
        ("[::1]:8765", "::1"),
        ("[::1]", "::1"),
        ("LocalHost.:80", "localhost"),
        ("Dash.Example.COM", "dash.example.com"),
        ("::1", "::1"),
        ("[::1", ""),
    ],
)
def test_the_name_part_of_a_host_header(value: str, name: str) -> None:
    assert host_name(value) == name


@pytest.mark.parametrize(
    "host",
    ["localhost", "localhost:1", "127.0.0.1:8765", "127.9.9.9", "[::1]:8765", "[::ffff:127.0.0.1]"],
)
def test_a_loopback_dashboard_answers_loopback_names(host: str) -> None:
    assert HostPolicy(loopback_only=True).misdirected(host) == ""


@pytest.mark.parametrize(
    "host", ["evil.example:8765", "evil.example", "10.0.0.1:8765", "[::2]:8765", "127.0.0.1.evil"]
)
def test_a_loopback_dashboard_refuses_other_names(host: str) -> None:
    assert "DNS rebinding" in HostPolicy(loopback_only=True).misdirected(host)
    assert HostPolicy(loopback_only=True, allowed=frozenset({host_name(host)})).misdirected(
        host
    ) == ("")
    assert HostPolicy(loopback_only=False).misdirected(host) == ""


async def test_a_rebound_page_gets_421_for_http_and_the_feed_with_a_logged_reason() -> None:
    with capture_dashboard_logs() as logs:
        async with serving() as (_, dashboard):
            port = _port(dashboard.address)
            evil = f"evil.example:{port}"
            async with httpx.AsyncClient(base_url=dashboard.url) as http:
                answers = {
                    path: await http.get(path, headers={"Host": evil})
                    for path in ("/", "/metrics", "/api/snapshot", "/nowhere")
                }
                fine = [
                    (await http.get("/healthz", headers={"Host": host})).status_code
                    for host in (f"localhost:{port}", f"127.0.0.1:{port}", f"[::1]:{port}")
                ]
            request = _with_host(upgrade_request(port), evil) + b""
            origin = f"Origin: http://{evil}\r\n\r\n".encode()
            feed = await _handshake_status(dashboard.address, request[:-2] + origin)
            own = await _handshake_status(dashboard.address, upgrade_request(port))
    assert {path: answer.status_code for path, answer in answers.items()} == dict.fromkeys(
        answers, 421
    )
    assert all(evil not in answer.text for answer in answers.values())
    assert fine == [200, 200, 200]
    assert (feed, own) == (421, 101)
    refused = [r for r in logs if "DNS rebinding" in r.get("reason", "")]
    assert {r["event"] for r in refused} == {
        "dashboard: request refused",
        "dashboard: feed client refused",
    }


async def test_allowed_hosts_are_answered_and_count_as_the_same_origin() -> None:
    async with serving(dashboard_allowed_hosts="dash.example.com, other.example") as (
        _,
        dashboard,
    ):
        port = _port(dashboard.address)
        async with httpx.AsyncClient(base_url=dashboard.url) as http:
            proxied = await http.get("/healthz", headers={"Host": "dash.example.com"})
            stranger = await http.get("/healthz", headers={"Host": "evil.example"})
        # a proxy forwarding the public Host and the page's Origin
        forwarded = _with_host(upgrade_request(port), "dash.example.com")
        origin = b"Origin: https://dash.example.com\r\n\r\n"
        through_proxy = await _handshake_status(dashboard.address, forwarded[:-2] + origin)
        # a proxy that does not pass Host through: the Origin is still a listed name
        rewritten = upgrade_request(port)[:-2] + origin
        host_rewritten = await _handshake_status(dashboard.address, rewritten)
        foreign = upgrade_request(port)[:-2] + b"Origin: https://evil.example\r\n\r\n"
        cross = await _handshake_status(dashboard.address, foreign)
    assert (proxied.status_code, stranger.status_code) == (200, 421)
    assert (through_proxy, host_rewritten, cross) == (101, 101, 403)


async def test_the_allowed_hosts_keyword_overrides_the_setting() -> None:
    async with (
        open_test_kernel(dashboard_allowed_hosts="dash.example.com") as kernel,
        open_dashboard(kernel, "127.0.0.1:0", limits=FAST, allowed_hosts=["lan.example"]) as dash,
        httpx.AsyncClient(base_url=dash.url) as http,
    ):
        lan = await http.get("/healthz", headers={"Host": "lan.example:8765"})
        setting = await http.get("/healthz", headers={"Host": "dash.example.com"})
    assert (lan.status_code, setting.status_code) == (200, 421)


async def test_a_dashboard_on_the_network_answers_any_host() -> None:
    with capture_dashboard_logs():  # it warns about being open to the network
        async with (
            open_test_kernel() as kernel,
            open_dashboard(kernel, "0.0.0.0:0", limits=FAST) as dashboard,
        ):
            port = _port(dashboard.address)
            async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as http:
                answer = await http.get("/healthz", headers={"Host": f"dash.example.com:{port}"})
    assert answer.status_code == 200


# --- 2. no HTTP/2 ----------------------------------------------------------------------------

H2_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
H2C_UPGRADE = (
    b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: Upgrade, HTTP2-Settings\r\n"
    b"Upgrade: h2c\r\nHTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA\r\n\r\n"
)


async def test_http2_prior_knowledge_is_refused_with_505_and_logged() -> None:
    with capture_dashboard_logs() as logs:
        async with serving() as (_, dashboard):
            answer = await _exchange(dashboard.address, H2_PREFACE)
            async with httpx.AsyncClient(base_url=dashboard.url) as http:
                health = await http.get("/healthz")
                metrics = (await http.get("/metrics")).text
    assert answer.startswith(b"HTTP/1.1 505 "), answer
    assert b"HTTP/2" in answer
    assert health.status_code == 200
    assert "dashboard_connections_refused_total 1" in metrics
    assert any(r.get("reason") == "HTTP/2 with prior knowledge" for r in logs)


@pytest.mark.parametrize(
    "request_",
    [
        H2C_UPGRADE,
        H2C_UPGRADE.replace(b"Upgrade: h2c", b"upgrade:   H2C  "),
        H2C_UPGRADE.replace(b"Upgrade: h2c\r\n", b"Upgrade:\r\n h2c\r\n"),  # folded
        H2C_UPGRADE.replace(b"Upgrade: h2c\r\n", b""),  # HTTP2-Settings alone
    ],
)
async def test_an_h2c_upgrade_is_refused_with_400_never_101(request_: bytes) -> None:
    async with serving() as (_, dashboard):
        # the request arrives in two reads, split inside its last header line: lines
        # split across reads are seen whole
        host, port = dashboard.address.rsplit(":", 1)
        stream = await trio.open_tcp_stream(host, int(port))
        cut = request_.rindex(b"\r\n", 0, -4) + 6
        await stream.send_all(request_[:cut])
        await trio.testing.wait_all_tasks_blocked()  # the server has read the first piece
        await stream.send_all(request_[cut:])
        answer = b""
        with trio.fail_after(10):
            while chunk := await stream.receive_some(65536):
                answer += chunk
        await stream.aclose()
    assert answer.startswith(b"HTTP/1.1 400 "), answer
    assert b" 101 " not in answer
    assert b"h2c" in answer


async def test_http2_after_a_first_request_cuts_the_connection() -> None:
    async with serving() as (_, dashboard):
        first = b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"
        stream = await open_stream(dashboard)
        await stream.send_all(first)
        answer = b""
        with trio.fail_after(10):
            while not answer.endswith(b"ok\n"):
                answer += await stream.receive_some(65536)
            await stream.send_all(H2_PREFACE)
            rest = b""
            while chunk := await stream.receive_some(65536):
                rest += chunk
        await stream.aclose()
    assert answer.startswith(b"HTTP/1.1 200 ")
    assert rest == b""  # no HTTP/2 SETTINGS frame: closed


async def test_an_h2c_upgrade_on_the_feed_path_is_refused_too() -> None:
    async with serving() as (_, dashboard):
        answer = await _exchange(dashboard.address, H2C_UPGRADE.replace(b"/healthz", b"/ws"))
        stats = dashboard.stats()
    assert answer.startswith(b"HTTP/1.1 400 ")
    assert stats.clients == 0


# --- 3. loomk top's own socket -----------------------------------------------------------------


async def test_top_reads_a_feed_on_an_ipv6_loopback_dashboard() -> None:
    """``loomk top`` sends the URL's ``[::1]:PORT`` as Host (trio-websocket's own client
    sent ``::1:PORT``, which a loopback dashboard refuses as not a loopback name)."""
    async with (
        open_test_kernel() as kernel,
        open_dashboard(kernel, "[::1]:0", limits=FAST) as dashboard,
    ):
        assert dashboard.address.startswith("[::1]:")
        view = TopView(url=dashboard.ws_url)
        snapshot = await fetch_snapshot(dashboard.ws_url, view, timeout_s=10)
    assert snapshot["kernel"] == kernel.name


async def test_a_refused_feed_raises_the_rejection_itself_not_a_group() -> None:
    async with serving() as (_, dashboard):
        with pytest.raises(ConnectionRejected) as rejected:
            async with feed_client(dashboard, "/elsewhere"):
                pass
    assert rejected.value.status_code == 404


# --- 4. /metrics cached, connections capped --------------------------------------------------


def test_the_render_cache_renders_again_once_max_age_has_passed() -> None:
    now = [100.0]
    renders: list[float] = []

    def render() -> str:
        renders.append(now[0])
        return f"rendered at {now[0]}"

    cache = RenderCache(render, 1.0, lambda: now[0])
    first = cache.get()
    now[0] = 100.999
    assert cache.get() == first
    now[0] = 101.0
    assert cache.get() == "rendered at 101.0"
    assert renders == [100.0, 101.0]
    uncached = RenderCache(render, 0.0, lambda: now[0])
    assert uncached.get() == uncached.get()
    assert len(renders) == 4


async def test_scrapes_within_the_max_age_share_one_rendering() -> None:
    limits = DashboardLimits(tick_s=0.01, snapshot_interval_s=0.05, metrics_max_age_s=3600)
    async with (
        serving(limits) as (kernel, dashboard),
        httpx.AsyncClient(base_url=dashboard.url) as http,
    ):
        first = await http.get("/metrics")
        await kernel.bus.publish("sensor.temp", Event("reading"))
        second = await http.get("/metrics")
    assert first.text == second.text
    assert "sensor.temp" not in second.text
    assert DashboardLimits().metrics_max_age_s == 1.0


async def test_connections_beyond_the_cap_are_closed_at_once_with_a_logged_reason() -> None:
    limits = DashboardLimits(tick_s=0.01, snapshot_interval_s=0.05, max_connections=2)
    with capture_dashboard_logs() as logs:
        async with serving(limits) as (_, dashboard):
            async with feed_client(dashboard) as one, feed_client(dashboard) as two:
                with trio.fail_after(10):
                    await next_frame(one, "hello")
                    await next_frame(two, "hello")
                    extra = await open_stream(dashboard)
                    assert await extra.receive_some(100) == b""  # closed, nothing said
                await extra.aclose()
            with trio.fail_after(10):
                await dashboard.wait_until(lambda stats: stats.clients == 0)
                while True:  # the feed clients' connections end a little after they do
                    async with httpx.AsyncClient(base_url=dashboard.url) as http:
                        try:
                            after = await http.get("/metrics")
                            break
                        except httpx.TransportError:  # refused: wait for them to end
                            await trio.testing.wait_all_tasks_blocked()
    assert after.status_code == 200
    assert "dashboard_connections_refused_total" in after.text
    assert any(r["event"] == "dashboard: connection refused: too many connections" for r in logs)
    assert DashboardLimits().max_connections is None  # four times max_clients


# --- 5. security headers ---------------------------------------------------------------------


async def test_every_answer_carries_the_security_headers() -> None:
    async with serving() as (_, dashboard), httpx.AsyncClient(base_url=dashboard.url) as http:
        answers = [
            await http.get("/"),
            await http.get("/static/app.js"),
            await http.get("/metrics"),
            await http.get("/api/snapshot"),
            await http.get("/nowhere"),
            await http.post("/"),
            await http.get("/ws"),
            await http.get("/", headers={"Host": "evil.example"}),
        ]
        rejected = await _exchange(dashboard.address, upgrade_request(0, "/feed"))
    for answer in answers:
        assert answer.headers["content-security-policy"] == CONTENT_SECURITY_POLICY
        assert answer.headers["x-content-type-options"] == "nosniff"
        assert answer.headers["referrer-policy"] == "no-referrer"
    assert CONTENT_SECURITY_POLICY == (
        "default-src 'self'; connect-src 'self' ws: wss:; frame-ancestors 'none'; base-uri 'none'"
    )
    assert b"content-security-policy: default-src 'self'" in rejected.lower()


# --- 6. dead code ----------------------------------------------------------------------------


async def test_the_app_does_not_speak_lifespan() -> None:
    """The per-connection server never sends the lifespan scope; the app says it does not
    take part by raising, without receiving anything."""
    async with open_test_kernel() as kernel:
        app = DashboardApp(kernel, FeedHub(kernel, FAST), Path("."), lambda peer: False)
        received: list[str] = []

        async def receive() -> dict[str, Any]:
            received.append("receive")
            return {"type": "lifespan.shutdown"}

        async def send(message: Any) -> None:
            received.append("send")

        with pytest.raises(ValueError, match="lifespan"):
            await app({"type": "lifespan"}, receive, send)  # type: ignore[arg-type, typeddict-item]
    assert received == []


async def test_a_client_already_closing_is_not_closed_again_as_not_reading() -> None:
    async with open_test_kernel() as kernel:
        hub = FeedHub(kernel, FAST)
        cuts: list[str] = []
        client = hub.admit("peer", lambda: cuts.append("cut"))
        assert client is not None  # hello and a snapshot wait in its outbox, untaken
        client.close(1008, "bad messages")
        with capture_dashboard_logs() as logs:
            hub.close_stalled(trio.current_time() + FAST.not_reading_timeout_s + 1)
        stalled = hub.admit("other", lambda: cuts.append("other cut"))
        assert stalled is not None
        hub.close_stalled(trio.current_time() + FAST.not_reading_timeout_s + 1)
    assert cuts == ["other cut"]
    assert client.close_reason == "bad messages"
    assert not client.transport_aborted
    assert logs == []
    assert stalled.close_reason == "not reading"
