"""The dashboard's HTTP side, over real loopback sockets: the page, static files, the
answers to bad paths and methods, ``/metrics`` as Prometheus parses it, ``/api/snapshot``,
and the edge the kernel opens from ``dashboard_address``."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest
import trio
from dashboard_support import capture_dashboard_logs, raw_upgrade, serving
from prometheus_client.parser import text_string_to_metric_families

from loomk import Event
from loomk.dashboard import STATIC_DIR, Dashboard, DashboardError, open_dashboard
from loomk.testing import open_test_kernel


@pytest.fixture
def static_dir(tmp_path: Path) -> Path:
    """A static directory of known files, and a secret beside it."""
    static = tmp_path / "static"
    (static / "img").mkdir(parents=True)
    (static / "index.html").write_text("<!doctype html><title>loomk</title>")
    (static / "app.js").write_text("console.log('hi')")
    (static / "style.css").write_text("body{}")
    (static / "img" / "logo.svg").write_text("<svg/>")
    (static / ".hidden").write_text("no")
    (tmp_path / "secret.txt").write_text("do not serve")
    return static


async def test_the_edge_serves_the_shipped_page_and_logs_its_url() -> None:
    with capture_dashboard_logs() as logs:
        async with open_test_kernel(dashboard_address="127.0.0.1:0") as kernel:
            dashboard = kernel.edge("dashboard")
            assert isinstance(dashboard, Dashboard)
            assert dashboard.url == f"http://{dashboard.address}/"
            assert dashboard.ws_url == f"ws://{dashboard.address}/ws"
            async with httpx.AsyncClient(base_url=dashboard.url) as http:
                page = await http.get("/")
                health = await http.get("/healthz")
    assert page.status_code == 200
    assert page.headers["content-type"] == "text/html; charset=utf-8"
    assert page.headers["cache-control"] == "no-cache"
    assert page.content == (STATIC_DIR / "index.html").read_bytes()
    assert (health.status_code, health.text) == (200, "ok\n")
    assert any(
        r["event"] == f"dashboard: {dashboard.url}" and r["log_level"] == "info" for r in logs
    )


async def test_static_files_are_served_with_their_types_and_nothing_outside(
    static_dir: Path,
) -> None:
    async with (
        serving(static_dir=static_dir) as (_, dashboard),
        httpx.AsyncClient(base_url=dashboard.url) as http,
    ):
        answers = {
            path: await http.get(path)
            for path in (
                "/",
                "/static/app.js",
                "/static/style.css",
                "/static/img/logo.svg",
                "/static/../secret.txt",
                "/static/%2e%2e/secret.txt",
                "/static/img/%2e%2e/%2e%2e/secret.txt",
                "/static/.hidden",
                "/static/",
                "/static/img",
                "/static/missing.js",
                "/nowhere",
            )
        }
        head = await http.head("/static/app.js")
    types = {path: answer.headers["content-type"] for path, answer in answers.items()}
    assert types["/"] == "text/html; charset=utf-8"
    assert types["/static/app.js"] == "text/javascript; charset=utf-8"
    assert types["/static/style.css"] == "text/css; charset=utf-8"
    assert types["/static/img/logo.svg"] == "image/svg+xml"
    assert answers["/static/app.js"].text == "console.log('hi')"
    assert answers["/static/app.js"].headers["cache-control"] == "no-cache"
    refused = [path for path, answer in answers.items() if answer.status_code == 404]
    assert refused == list(answers)[4:]
    assert all("do not serve" not in answer.text for answer in answers.values())
    assert head.status_code == 200
    assert head.headers["content-length"] == str(len("console.log('hi')"))
    assert head.content == b""


async def test_other_methods_are_405_and_a_plain_get_of_the_feed_is_426() -> None:
    async with serving() as (_, dashboard), httpx.AsyncClient(base_url=dashboard.url) as http:
        post = await http.post("/metrics", content=b"x")
        delete = await http.delete("/")
        unknown_post = await http.post("/nowhere")
        feed = await http.get("/ws")
    assert (post.status_code, post.headers["allow"]) == (405, "GET, HEAD")
    assert delete.status_code == 405
    assert unknown_post.status_code == 404
    assert (feed.status_code, feed.headers["upgrade"]) == (426, "websocket")


async def test_metrics_are_prometheus_text_with_the_bus_counts() -> None:
    async with serving() as (kernel, dashboard):
        for n in range(3):
            await kernel.bus.publish("sensor.temp", Event("reading", str(n).encode()))
        async with httpx.AsyncClient(base_url=dashboard.url) as http:
            answer = await http.get("/metrics")
        published = kernel.bus.stats("sensor.temp").published
    assert answer.status_code == 200
    assert answer.headers["content-type"] == "text/plain; version=0.0.4; charset=utf-8"
    samples = {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(answer.text)
        for sample in family.samples
    }
    assert published == 3
    assert samples[("published_events_total", (("topic", "sensor.temp"),))] == published
    assert samples[("dashboard_clients", ())] == 0
    assert ("dashboard_frames_sent_total", ()) in samples


async def test_the_dashboard_metrics_leave_with_the_dashboard() -> None:
    async with open_test_kernel() as kernel:
        async with open_dashboard(kernel, "127.0.0.1:0"):
            assert "dashboard" in kernel.metrics.sources()
        assert "dashboard" not in kernel.metrics.sources()


async def test_the_snapshot_endpoint_answers_the_latest_snapshot() -> None:
    async with (
        serving() as (kernel, dashboard),
        httpx.AsyncClient(base_url=dashboard.url) as http,
    ):
        answer = await http.get("/api/snapshot")
    snapshot = json.loads(answer.text)
    assert answer.headers["content-type"] == "application/json"
    assert snapshot["type"] == "snapshot"
    assert snapshot["kernel"] == kernel.name
    assert set(snapshot) >= {"t_ms", "uptime_s", "totals", "agents", "topics", "edges"}


async def test_an_upgrade_request_with_trailing_bytes_does_not_take_the_server_down() -> None:
    """pgjones/hypercorn#225: on hypercorn's own trio server this ends the whole server."""
    with capture_dashboard_logs() as logs:
        async with serving() as (_, dashboard):
            stream = await raw_upgrade(dashboard, trailing=b"x\n")
            with trio.fail_after(10):
                await dashboard.wait_until(lambda stats: stats.closed == {"connection failed": 1})
                await stream.aclose()
                async with httpx.AsyncClient(base_url=dashboard.url) as http:
                    health = await http.get("/healthz")
                    metrics = await http.get("/metrics")
    assert health.status_code == 200
    assert "dashboard_connections_failed_total 1" in metrics.text
    assert any("broke the HTTP protocol" in r["event"] for r in logs)


async def test_a_busy_or_bad_address_fails_at_once() -> None:
    async with serving() as (kernel, dashboard):
        with pytest.raises(DashboardError, match="cannot listen"):
            async with open_dashboard(kernel, dashboard.address):
                pass
        with pytest.raises(DashboardError, match="HOST:PORT"):
            async with open_dashboard(kernel, "nowhere"):
                pass
