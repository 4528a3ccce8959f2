"""An OpenAI-compatible model server for tests, on the loopback server of ``httpserver``.

It answers ``POST /v1/chat/completions`` (JSON, or SSE when the body asks ``"stream":
true``) and ``POST /v1/responses`` with "Hello!" unless a test scripts what comes next, per
path, with :meth:`FakeOpenAI.script`: any :class:`Response` (the builders below cover
well-formed answers, tool calls, SSE streams, and misbehaviour: malformed JSON, a cut
stream, 429 with ``Retry-After``, 5xx, 404, a hang), or a function of the request. Every
request is recorded, with the (trio) time it arrived, so tests can check bodies, headers
and waits.

    async with serve_openai() as fake:
        fake.script("chat/completions", server_error(500), chat_json("Hi"))
        ... LLMSettings(base_url=fake.base_url) ...
        fake.requests[0].json()["messages"]

:func:`serving_connections` counts the server's open connections (its connection tasks,
found through trio's task tree), so tests can prove a client closed its connection.
"""

from __future__ import annotations

import json
from collections import deque
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import trio
from httpserver import Request, Response, Server, serve_http

__all__ = [
    "MODEL",
    "USAGE",
    "FakeOpenAI",
    "chat_chunks",
    "chat_completion",
    "chat_json",
    "hang",
    "live_tasks",
    "malformed_json",
    "not_found",
    "rate_limited",
    "responses_json",
    "responses_output",
    "serve_openai",
    "server_error",
    "serving_connections",
    "sse_body",
    "sse_response",
    "tool_call",
]

MODEL = "fake-model-1"
USAGE = {"prompt_tokens": 7, "completion_tokens": 3, "total_tokens": 10}

Scripted = Response | Callable[[Request], Response]


# ---- answers --------------------------------------------------------------------------------


def tool_call(name: str, arguments: Any, call_id: str = "call_1") -> dict[str, Any]:
    """A Chat Completions tool call; ``arguments`` is JSON-encoded unless it is a str."""
    encoded = arguments if isinstance(arguments, str) else json.dumps(arguments)
    return {"id": call_id, "type": "function", "function": {"name": name, "arguments": encoded}}


def chat_completion(
    text: str | None = "Hello!",
    *,
    tool_calls: Sequence[dict[str, Any]] = (),
    model: str = MODEL,
    usage: dict[str, Any] | None = USAGE,
    finish_reason: str | None = None,
) -> dict[str, Any]:
    """A Chat Completions response body."""
    message: dict[str, Any] = {"role": "assistant", "content": text}
    if tool_calls:
        message["tool_calls"] = list(tool_calls)
    finish = finish_reason or ("tool_calls" if tool_calls else "stop")
    body: dict[str, Any] = {
        "id": "chatcmpl-1",
        "object": "chat.completion",
        "created": 1700000000,
        "model": model,
        "choices": [{"index": 0, "message": message, "finish_reason": finish}],
    }
    if usage is not None:
        body["usage"] = usage
    return body


def responses_output(
    text: str | None = "Hello!",
    *,
    function_calls: Sequence[tuple[str, Any]] = (),
    model: str = MODEL,
    usage: dict[str, Any] | None = USAGE,
) -> dict[str, Any]:
    """A Responses API response body (real OpenAI shape: a ``message`` output item with
    ``output_text`` content, ``function_call`` items for ``(name, arguments)``)."""
    output: list[dict[str, Any]] = []
    for n, (name, arguments) in enumerate(function_calls):
        output.append(
            {
                "type": "function_call",
                "id": f"fc_{n}",
                "call_id": f"call_{n}",
                "name": name,
                "arguments": arguments if isinstance(arguments, str) else json.dumps(arguments),
            }
        )
    if text is not None:
        output.append(
            {
                "type": "message",
                "id": "msg_1",
                "role": "assistant",
                "status": "completed",
                "content": [{"type": "output_text", "text": text, "annotations": []}],
            }
        )
    body: dict[str, Any] = {
        "id": "resp_1",
        "object": "response",
        "status": "completed",
        "model": model,
        "output": output,
    }
    if usage is not None:
        body["usage"] = usage
    return body


def chat_json(text: str | None = "Hello!", **kwargs: Any) -> Response:
    """A JSON Chat Completions answer."""
    return Response.json_body(chat_completion(text, **kwargs))


def responses_json(text: str | None = "Hello!", **kwargs: Any) -> Response:
    """A JSON Responses API answer."""
    return Response.json_body(responses_output(text, **kwargs))


def chat_chunks(
    deltas: Sequence[str],
    *,
    tool_calls: Sequence[dict[str, Any]] = (),
    finish_reason: str | None = "stop",
    model: str = MODEL,
    usage: dict[str, Any] | None = None,
) -> list[dict[str, Any]]:
    """The ``chat.completion.chunk`` objects of a streamed answer: a role chunk, one chunk
    per text delta, then each tool-call delta (``{"index", "id"?, "function": {...}}``),
    then the finish chunk and, if given, a usage chunk."""

    def chunk(delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
        return {
            "id": "chatcmpl-1",
            "object": "chat.completion.chunk",
            "created": 1700000000,
            "model": model,
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
        }

    chunks = [chunk({"role": "assistant", "content": ""})]
    chunks += [chunk({"content": text}) for text in deltas]
    chunks += [chunk({"tool_calls": [call]}) for call in tool_calls]
    if finish_reason is not None:
        chunks.append(chunk({}, finish_reason))
    if usage is not None:
        chunks.append(
            {
                "id": "chatcmpl-1",
                "object": "chat.completion.chunk",
                "model": model,
                "choices": [],
                "usage": usage,
            }
        )
    return chunks


def sse_body(events: Sequence[dict[str, Any] | str], *, done: bool = True) -> list[bytes]:
    """SSE chunks: each event (an object as JSON, or a raw string) as a ``data:`` event,
    then ``data: [DONE]`` unless ``done`` is False."""
    chunks = [
        f"data: {event if isinstance(event, str) else json.dumps(event)}\n\n".encode()
        for event in events
    ]
    if done:
        chunks.append(b"data: [DONE]\n\n")
    return chunks


def sse_response(chunks: Sequence[bytes], *, cut: bool = False) -> Response:
    """A streamed ``text/event-stream`` answer; ``cut`` drops the connection after the
    chunks, in the middle of the body."""
    headers = {"content-type": "text/event-stream", "cache-control": "no-cache"}
    return Response(200, b"", headers, chunks=list(chunks), cut=cut)


def malformed_json(status: int = 200) -> Response:
    """A body that claims to be JSON and is not."""
    return Response(status, b'{"choices": [', {"content-type": "application/json"})


def rate_limited(retry_after: str | None = "3") -> Response:
    """429 Too Many Requests, with ``Retry-After`` when given."""
    headers = {} if retry_after is None else {"retry-after": retry_after}
    return Response.json_body(
        {"error": {"message": "Rate limit reached", "type": "rate_limit_error"}},
        status=429,
        **headers,
    )


def server_error(status: int = 500) -> Response:
    """A 5xx with an OpenAI-style error body."""
    return Response.json_body(
        {"error": {"message": "The server had an error", "type": "server_error"}}, status=status
    )


def not_found() -> Response:
    """404, as a server without the route answers."""
    return Response.json_body({"detail": "Not Found"}, status=404)


def hang() -> Response:
    """No answer at all, until the client gives up."""
    return Response(hang=True)


# ---- the server -----------------------------------------------------------------------------


def _default(request: Request) -> Response:
    if request.path.endswith("/chat/completions"):
        if _wants_stream(request):
            return sse_response(sse_body(chat_chunks(["Hel", "lo!"])))
        return chat_json()
    if request.path.endswith("/responses"):
        return responses_json()
    return not_found()


def _wants_stream(request: Request) -> bool:
    try:
        return request.json().get("stream") is True
    except (ValueError, AttributeError):
        return False


@dataclass
class FakeOpenAI:
    """The running fake: its URLs, its script and what it received."""

    server: Server
    times: list[float] = field(default_factory=list)
    _scripts: dict[str, deque[Scripted]] = field(default_factory=dict)

    @property
    def url(self) -> str:
        """``http://127.0.0.1:PORT``."""
        return self.server.url

    @property
    def base_url(self) -> str:
        """The OpenAI base URL (``…/v1``)."""
        return f"{self.server.url}/v1"

    @property
    def requests(self) -> list[Request]:
        """Every request received, in order."""
        return self.server.requests

    def paths(self) -> list[str]:
        """The path of every request received, in order."""
        return [request.path for request in self.requests]

    def bodies(self) -> list[Any]:
        """The decoded JSON body of every request received, in order."""
        return [request.json() for request in self.requests]

    def script(self, path: str, *answers: Scripted) -> None:
        """Queue ``answers`` for the next requests to ``/v1/{path}`` (e.g.
        ``"chat/completions"``, ``"responses"``); when they run out, the defaults answer."""
        self._scripts.setdefault(f"/v1/{path.strip('/')}", deque()).extend(answers)

    async def _handle(self, request: Request) -> Response:
        self.times.append(trio.current_time())
        queue = self._scripts.get(request.path)
        if request.method != "POST":
            return Response.json_body({"error": "method not allowed"}, status=405)
        answer: Scripted = queue.popleft() if queue else _default
        return answer(request) if callable(answer) else answer


@asynccontextmanager
async def serve_openai() -> AsyncIterator[FakeOpenAI]:
    """Run the fake on 127.0.0.1 for the duration of the block."""
    fake: FakeOpenAI | None = None

    async def handler(request: Request) -> Response:
        assert fake is not None
        return await fake._handle(request)

    async with serve_http(handler) as server:
        fake = FakeOpenAI(server)
        yield fake


# ---- looking at trio's task tree ------------------------------------------------------------


def _tasks(task: trio.lowlevel.Task) -> Iterator[trio.lowlevel.Task]:
    yield task
    for nursery in task.child_nurseries:
        for child in nursery.child_tasks:
            yield from _tasks(child)


def live_tasks() -> list[trio.lowlevel.Task]:
    """Every task of the current trio run."""
    root = trio.lowlevel.current_root_task()
    assert root is not None
    return list(_tasks(root))


def _awaits(coro: object) -> Iterator[str]:
    """The names of the coroutines in ``coro``'s await chain, outermost first."""
    while coro is not None:
        code = getattr(coro, "cr_code", None)
        if code is None:
            return
        yield code.co_name
        coro = getattr(coro, "cr_await", None)


def serving_connections() -> int:
    """How many connections the test servers are serving right now (one task each, in
    which trio's listener runs ``httpserver._serve_connection``)."""
    return sum(1 for task in live_tasks() if "_serve_connection" in _awaits(task.coro))
