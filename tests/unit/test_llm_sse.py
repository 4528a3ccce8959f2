"""The SSE parser: the WHATWG line rules, OpenAI's ``[DONE]`` sentinel, cut events, and use
on a real streamed HTTP body read with httpx's ``aiter_lines()``."""

from __future__ import annotations

import json

import httpx
from httpserver import Request, Response, serve_http
from hypothesis import given
from hypothesis import strategies as st

from loomk.llm.client.sse import SSEEvent, SSEParser, parse_lines


def test_a_data_line_and_a_blank_line_make_an_event() -> None:
    assert parse_lines(["data: hello", ""]) == [SSEEvent("hello")]


def test_data_lines_join_with_newlines() -> None:
    assert parse_lines(["data: one", "data: two", "data:", ""]) == [SSEEvent("one\ntwo\n")]


def test_only_one_space_after_the_colon_is_dropped() -> None:
    events = parse_lines(["data:tight", "", "data:  two spaces", ""])
    assert [e.data for e in events] == ["tight", " two spaces"]


def test_event_id_and_retry_fields() -> None:
    lines = ["event: update", "id: 7", "retry: 1500", "data: x", "", "data: y", ""]
    first, second = parse_lines(lines)
    assert first == SSEEvent("x", "update", "7", 1500)
    assert second == SSEEvent("y", "message", "7", 1500)  # the type resets, the id stays


def test_comments_unknown_fields_and_bad_values_are_ignored() -> None:
    lines = [": keep-alive", "foo: bar", "retry: soon", "id: a\0b", "data: x", ""]
    assert parse_lines(lines) == [SSEEvent("x")]


def test_a_blank_line_without_data_dispatches_nothing() -> None:
    assert parse_lines(["", "", "event: ping", "", ": comment", ""]) == []


def test_a_field_without_colon_has_an_empty_value() -> None:
    assert parse_lines(["data", ""]) == [SSEEvent("")]


def test_line_endings_and_a_leading_bom_are_ignored() -> None:
    assert parse_lines(["\ufeffdata: a\r\n", "\r\n"]) == [SSEEvent("a")]
    parser = SSEParser()
    parser.feed("data: b")
    assert parser.feed("\ufeffdata: c") is None  # a BOM only counts at the very start
    assert parser.feed("") == SSEEvent("b")


def test_done_is_the_openai_sentinel() -> None:
    events = parse_lines(["data: {}", "", "data: [DONE]", ""])
    assert [e.done for e in events] == [False, True]


def test_close_reports_an_event_cut_in_the_middle() -> None:
    parser = SSEParser()
    assert parser.feed("data: complete") is None
    assert parser.feed("") == SSEEvent("complete")
    assert parser.close() is False
    parser.feed('data: {"partial": ')
    assert parser.pending
    assert parser.close() is True
    assert not parser.pending


_LINE = st.text(st.characters(exclude_characters="\r\n", codec="utf-8"), max_size=20)
_EVENTS = st.lists(
    st.tuples(
        st.sampled_from(["", "message", "delta", "error"]), st.lists(_LINE, min_size=1, max_size=3)
    ),
    max_size=8,
)


@given(_EVENTS)
def test_what_is_written_is_what_is_read(events: list[tuple[str, list[str]]]) -> None:
    lines: list[str] = []
    for kind, data in events:
        if kind:
            lines.append(f"event: {kind}")
        lines += [f"data: {piece}" for piece in data]
        lines.append("")
    parsed = parse_lines(lines)
    assert [(e.event, e.data) for e in parsed] == [
        (kind or "message", "\n".join(data)) for kind, data in events
    ]


async def test_it_reads_a_real_stream_through_aiter_lines() -> None:
    body = [
        b'data: {"n": 1}\n\n',
        b'data: {"n"',  # an event split across chunks
        b": 2}\r\n\r\n: comment\n\n",
        b"data: [DONE]\n\n",
    ]

    async def handler(request: Request) -> Response:
        return Response(headers={"content-type": "text/event-stream"}, chunks=body)

    events = []
    parser = SSEParser()
    async with (
        serve_http(handler) as server,
        httpx.AsyncClient() as client,
        client.stream("GET", server.url) as response,
    ):
        async for line in response.aiter_lines():
            event = parser.feed(line)
            if event is not None:
                events.append(event)
    assert [json.loads(e.data)["n"] for e in events[:-1]] == [1, 2]
    assert events[-1].done
