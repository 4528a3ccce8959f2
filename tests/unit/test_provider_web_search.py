"""``web.search`` through a real broker against a loopback server speaking DuckDuckGo's
Instant Answer JSON, as Loom's provider uses it: the request, the ordering and flattening of
results, ``top_k``, the stub, Loom's URL encoding and error codes, and the timeout.
"""

from __future__ import annotations

import itertools
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
import trio
import trio.testing
from httpserver import Request, Response, serve_http

from loomk.actions import ActionBroker, ActionCall, ActionResult, ActionStatus, ErrorCode
from loomk.actions.providers import WebSearchProvider
from loomk.actions.providers._http import MAX_BODY_BYTES

TIMEOUT_S = 2.5
STUB_SNIPPET = "No detailed results available. Try refining your query."
_ids = itertools.count()


def topic(n: int) -> dict[str, Any]:
    return {"Text": f"Topic {n}", "FirstURL": f"https://duckduckgo.com/t{n}", "Icon": {}}


def answer(
    abstract: str = "", url: str = "", topics: list[Any] | None = None, **extra: Any
) -> dict[str, Any]:
    return {
        "Abstract": abstract,
        "AbstractText": abstract,
        "AbstractURL": url,
        "Heading": "",
        "RelatedTopics": topics or [],
        "Results": [],
        **extra,
    }


def duckduckgo(response: Response) -> Callable[[Request], Awaitable[Response]]:
    async def handler(request: Request) -> Response:
        return response

    return handler


def broker_for(url: str, timeout_s: float = TIMEOUT_S) -> ActionBroker:
    broker = ActionBroker(default_timeout_s=60.0)
    broker.register(WebSearchProvider(timeout_s=timeout_s, url=f"{url}/"))
    return broker


async def search(broker: ActionBroker, args: Any) -> ActionResult:
    return await broker.invoke(ActionCall.with_args(f"s{next(_ids)}", "web.search", args))


async def search_with(response: Response, args: Any) -> tuple[ActionResult, list[Request]]:
    async with serve_http(duckduckgo(response)) as server:
        result = await search(broker_for(server.url), args)
    return result, server.requests


def assert_failed(result: ActionResult, code: str, *fragments: str) -> None:
    assert result.status is ActionStatus.ACTION_ERROR, result
    assert result.code == code, result
    assert result.error is not None
    for fragment in fragments:
        assert fragment in result.error.message, result.error.message


def titles(result: ActionResult) -> list[str]:
    return [item["title"] for item in result.json()["results"]]


# --- results -----------------------------------------------------------------------------

GROUPED = answer(
    "Python is a programming language.",
    "https://en.wikipedia.org/wiki/Python",
    [
        topic(1),
        {"Name": "Software", "Topics": [topic(2), {"Topics": [topic(3)]}, topic(4)]},
        topic(5),
        topic(6),
    ],
)


async def test_summary_first_then_related_topics_flattened_in_order() -> None:
    result, requests = await search_with(Response.json_body(GROUPED), {"query": "python"})
    assert result.ok, result
    assert result.json() == {
        "query": "python",
        "results": [
            {
                "title": "Summary",
                "url": "https://en.wikipedia.org/wiki/Python",
                "snippet": "Python is a programming language.",
            },
            {"title": "Topic 1", "url": "https://duckduckgo.com/t1", "snippet": None},
            {"title": "Topic 2", "url": "https://duckduckgo.com/t2", "snippet": None},
            {"title": "Topic 3", "url": "https://duckduckgo.com/t3", "snippet": None},
            {"title": "Topic 4", "url": "https://duckduckgo.com/t4", "snippet": None},
        ],
        "count": 5,
    }
    (request,) = requests
    assert (request.method, request.path) == ("GET", "/")
    assert request.query == {"q": "python", "format": "json"}
    assert request.headers["user-agent"] == "loomk/0.1"


@pytest.mark.parametrize(
    ("top_k", "expected"),
    [
        (1, ["Summary"]),
        (3, ["Summary", "Topic 1", "Topic 2"]),
        (0, ["Summary"]),  # as in Loom, the summary is added whatever top_k is
        (7, ["Summary", *(f"Topic {n}" for n in range(1, 7))]),
    ],
)
async def test_top_k_bounds_the_results_summary_included(top_k: int, expected: list[str]) -> None:
    result, _ = await search_with(Response.json_body(GROUPED), {"query": "q", "top_k": top_k})
    assert titles(result) == expected
    assert result.json()["count"] == len(expected)


@pytest.mark.parametrize(
    ("top_k", "count"),
    [(50, 10), (10, 10), (None, 5), (-1, 5), (2.0, 5), ("3", 5), (True, 5), ([3], 5)],
)
async def test_top_k_is_capped_at_ten_and_anything_not_a_whole_number_means_five(
    top_k: Any, count: int
) -> None:
    many = answer(topics=[topic(n) for n in range(15)])
    args = {"query": "q"} if top_k is None else {"query": "q", "top_k": top_k}
    result, _ = await search_with(Response.json_body(many), args)
    assert result.ok, result
    assert titles(result) == [f"Topic {n}" for n in range(count)]


async def test_topics_without_text_or_url_are_skipped_and_not_counted() -> None:
    topics = [
        {"Text": "", "FirstURL": "https://x"},
        {"Text": "no url", "FirstURL": ""},
        topic(1),
        {"Topics": []},
        topic(2),
    ]
    result, _ = await search_with(Response.json_body(answer(topics=topics)), {"query": "q"})
    assert titles(result) == ["Topic 1", "Topic 2"]


async def test_deeply_nested_groups_are_flattened() -> None:
    nested: dict[str, Any] = {"Topics": [topic(1)]}
    for _ in range(400):
        nested = {"Topics": [nested]}
    result, _ = await search_with(Response.json_body(answer(topics=[nested])), {"query": "q"})
    assert titles(result) == ["Topic 1"]


async def test_nothing_found_gives_the_stub_with_loom_url_encoding() -> None:
    query = "C++ & Rust ~ café/ü?"
    result, requests = await search_with(Response.json_body(answer()), {"query": query})
    assert result.ok, result
    assert result.json() == {
        "query": query,
        "results": [
            {
                "title": f"Search: {query}",
                "url": "https://duckduckgo.com/?q=C%2B%2B+%26+Rust+~+caf%C3%A9%2F%C3%BC%3F",
                "snippet": STUB_SNIPPET,
            }
        ],
        "count": 1,
    }
    assert requests[0].target == "/?q=C%2B%2B+%26+Rust+~+caf%C3%A9%2F%C3%BC%3F&format=json"


async def test_missing_fields_count_as_empty() -> None:
    result, _ = await search_with(Response.json_body({}), {"query": "q"})
    assert titles(result) == ["Search: q"]


async def test_redirects_are_followed() -> None:
    async def handler(request: Request) -> Response:
        if request.path == "/":
            return Response(302, headers={"location": "/moved?q=x&format=json"})
        return Response.json_body(answer(topics=[topic(1)]))

    async with serve_http(handler) as server:
        result = await search(broker_for(server.url), {"query": "x"})
    assert titles(result) == ["Topic 1"]
    assert [request.path for request in server.requests] == ["/", "/moved"]


# --- the descriptor ----------------------------------------------------------------------


def test_the_descriptor_carries_loom_desc_and_schema() -> None:
    descriptor = WebSearchProvider().descriptor
    assert descriptor.key == "web.search:0.1.0"
    assert descriptor.description == "Search the web for information using DuckDuckGo"
    assert descriptor.schema() == {
        "type": "object",
        "properties": {
            "query": {"type": "string", "description": "Search query string"},
            "top_k": {
                "type": "integer",
                "description": "Maximum number of results to return",
                "minimum": 1,
                "maximum": 10,
                "default": 5,
            },
        },
        "required": ["query"],
    }


# --- bad payloads ------------------------------------------------------------------------


@pytest.mark.parametrize("query", ["", "  ", "\n"])
async def test_a_blank_query_is_invalid_query_and_nothing_is_fetched(query: str) -> None:
    result, requests = await search_with(Response.json_body(answer()), {"query": query})
    assert_failed(result, "INVALID_QUERY", "Query parameter cannot be empty")
    assert requests == []


@pytest.mark.parametrize("payload", [b"{}", b'{"top_k": 3}', b'{"query": 7}', b"[1]", b"{"])
async def test_a_missing_or_mistyped_query_is_invalid_params(payload: bytes) -> None:
    result, requests = await search_with(Response.json_body(answer()), payload)
    assert_failed(result, ErrorCode.INVALID_PARAMS)
    assert requests == []


# --- the service failing -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("response", "fragment"),
    [
        (Response(500, b"down"), "Search API returned status: 500"),
        (Response(404), "Search API returned status: 404"),
        (Response(200, b"{'AbstractText':"), "Failed to parse Search API response"),
        (Response(200, b""), "Failed to parse Search API response"),
        (Response(200, b"[" * 100_000), "Failed to parse Search API response"),
        (Response.json_body(["not", "an", "object"]), "not a JSON object"),
        (Response.json_body({"RelatedTopics": {"Text": "x"}}), "unexpected field types"),
        (Response.json_body({"AbstractText": 3}), "unexpected field types"),
        (Response.json_body(answer(topics=[7])), "not an object"),
        (Response.json_body(answer(topics=[{"Text": "no url"}])), "has no Text"),
        (Response(200, chunks=[b'{"AbstractText": "'], cut=True), "request failed"),
    ],
)
async def test_any_fetch_or_parse_failure_is_search_failed(
    response: Response, fragment: str
) -> None:
    result, _ = await search_with(response, {"query": "q"})
    assert_failed(result, "SEARCH_FAILED", "Web search failed: ", fragment)


async def test_a_body_declared_over_the_size_cap_is_search_failed() -> None:
    huge = answer("x" * (MAX_BODY_BYTES + 1))
    result, _ = await search_with(Response.json_body(huge), {"query": "q"})
    assert_failed(result, "SEARCH_FAILED", f"more than {MAX_BODY_BYTES} bytes")


async def test_a_chunked_body_over_the_size_cap_is_search_failed() -> None:
    chunk = b" " * (1024 * 1024)
    chunks = [b'{"AbstractText": "x"}', *([chunk] * (MAX_BODY_BYTES // len(chunk) + 1))]
    result, _ = await search_with(Response(200, chunks=chunks), {"query": "q"})
    assert_failed(result, "SEARCH_FAILED", f"more than {MAX_BODY_BYTES} bytes")


async def test_connection_refused_is_search_failed() -> None:
    with trio.socket.socket() as sock:
        await sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    result = await search(broker_for(f"http://127.0.0.1:{port}"), {"query": "q"})
    assert_failed(result, "SEARCH_FAILED", "Web search failed: ", "request failed")


async def test_a_hanging_service_fails_within_the_timeout(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with serve_http(duckduckgo(Response(hang=True))) as server:
        started = trio.current_time()
        result = await search(broker_for(server.url), {"query": "q"})
        elapsed = trio.current_time() - started
    assert_failed(result, "SEARCH_FAILED", "Web search failed: ")
    assert elapsed == pytest.approx(TIMEOUT_S, abs=0.01)
    assert len(server.requests) == 1


async def test_a_trickling_service_cannot_hold_the_call_past_the_timeout(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """Every byte arrives well within the read timeout, the whole body never does in time."""

    async def trickle(stream: trio.SocketStream) -> None:
        async with stream:
            await stream.receive_some(65536)
            await stream.send_all(b"HTTP/1.1 200 OK\r\ncontent-length: 1000\r\n\r\n")
            for _ in range(1000):
                await trio.sleep(TIMEOUT_S / 5)
                await stream.send_all(b" ")

    async with trio.open_nursery() as nursery:
        listeners = await nursery.start(trio.serve_tcp, trickle, 0)
        port = listeners[0].socket.getsockname()[1]
        started = trio.current_time()
        result = await search(broker_for(f"http://127.0.0.1:{port}"), {"query": "q"})
        elapsed = trio.current_time() - started
        nursery.cancel_scope.cancel()
    assert_failed(result, "SEARCH_FAILED", f"did not answer within {TIMEOUT_S:g} s")
    assert elapsed == pytest.approx(TIMEOUT_S, abs=0.01)
