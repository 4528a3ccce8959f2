"""``web.search``: web search through DuckDuckGo's Instant Answer API (no API key needed).

Loom's provider, kept to the letter: the abstract comes first as a "Summary" result, then
the related topics (groups flattened, in order) until ``top_k`` results; when there is
nothing, one stub result links to a DuckDuckGo search page. A blank query fails with
``INVALID_QUERY``; every fetch or parse failure is ``SEARCH_FAILED`` ("Web search failed:
...").
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from typing import Any

from loomk.actions.provider import ActionFailure, FunctionProvider
from loomk.actions.providers._http import FetchError, get_json, loom_quote
from loomk.actions.types import ActionCall, ActionResult, CapabilityDescriptor, ProviderKind
from loomk.errors import CapabilityError

__all__ = ["DEFAULT_SEARCH_URL", "INVALID_QUERY", "SEARCH_FAILED", "WebSearchProvider"]

DEFAULT_SEARCH_URL = "https://api.duckduckgo.com/"
INVALID_QUERY = "INVALID_QUERY"
SEARCH_FAILED = "SEARCH_FAILED"
DEFAULT_TOP_K = 5
MAX_TOP_K = 10

_DESCRIPTION = "Search the web for information using DuckDuckGo"
_SCHEMA: dict[str, Any] = {  # what models are told: Loom's schema, word for word
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
# What is enforced: less than what is advertised, since Loom caps a too-large top_k at 10
# and reads anything that is not a whole number >= 0 as the default.
_ACCEPTED: dict[str, Any] = {
    "type": "object",
    "properties": {"query": {"type": "string"}},
    "required": ["query"],
}
_NO_RESULTS = "No detailed results available. Try refining your query."
_END = object()


class WebSearchProvider:
    """The ``web.search`` capability (version 0.1.0).

    Payload ``{query, top_k?}``; output ``{query, results: [{title, url, snippet}], count}``
    (``snippet`` is null for related topics). ``timeout_s`` bounds the whole call.
    """

    def __init__(self, *, timeout_s: float = 10.0, url: str = DEFAULT_SEARCH_URL) -> None:
        if not (isinstance(timeout_s, int | float) and 0 < timeout_s < math.inf):
            raise CapabilityError(f"timeout_s must be a positive number, got {timeout_s!r}")
        self.timeout_s = float(timeout_s)
        self.url = url
        metadata = {"desc": _DESCRIPTION, "schema": json.dumps(_SCHEMA)}
        self._descriptor = CapabilityDescriptor(
            "web.search", "0.1.0", ProviderKind.PROVIDER_NATIVE, metadata
        )
        checked = CapabilityDescriptor(
            "web.search", "0.1.0", metadata={"schema": json.dumps(_ACCEPTED)}
        )
        self._checked = FunctionProvider(self._search, checked)

    @property
    def descriptor(self) -> CapabilityDescriptor:
        """``web.search`` 0.1.0 with Loom's ``desc`` and ``schema`` metadata."""
        return self._descriptor

    async def invoke(self, call: ActionCall) -> ActionResult:
        """Ask DuckDuckGo; failures are results."""
        return await self._checked.invoke(call)

    async def _search(self, args: dict[str, Any]) -> dict[str, Any]:
        query: str = args["query"]
        top_k = _top_k(args.get("top_k"))
        if not query.strip():
            raise ActionFailure(INVALID_QUERY, "Query parameter cannot be empty")
        separator = "&" if "?" in self.url else "?"
        try:
            answer = await get_json(
                f"{self.url}{separator}q={loom_quote(query)}&format=json",
                what="Search API",
                timeout_s=self.timeout_s,
            )
            results = _results(answer, top_k)
        except FetchError as error:
            raise ActionFailure(SEARCH_FAILED, f"Web search failed: {error}") from None
        if not results:
            results.append(
                {
                    "title": f"Search: {query}",
                    "url": f"https://duckduckgo.com/?q={loom_quote(query)}",
                    "snippet": _NO_RESULTS,
                }
            )
        return {"query": query, "results": results, "count": len(results)}

    def __repr__(self) -> str:
        return f"WebSearchProvider({self.url})"


def _top_k(value: object) -> int:
    """Loom's reading of ``top_k``: a whole number >= 0, at most 10; otherwise 5."""
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return min(value, MAX_TOP_K)
    return DEFAULT_TOP_K


def _results(answer: Any, top_k: int) -> list[dict[str, Any]]:
    """The abstract (if any) then related topics, up to ``top_k`` results in all.

    As in Loom the abstract is added whatever ``top_k`` is. Missing keys count as empty;
    keys of the wrong type, and topics (up to the last one read) that are neither a result
    nor a group, are parse failures, as they are for Loom.
    """
    if not isinstance(answer, dict):
        raise FetchError("Failed to parse search response: not a JSON object")
    text = answer.get("AbstractText", "")
    url = answer.get("AbstractURL", "")
    topics = answer.get("RelatedTopics", [])
    if not (isinstance(text, str) and isinstance(url, str) and isinstance(topics, list)):
        raise FetchError("Failed to parse search response: unexpected field types")
    results: list[dict[str, Any]] = []
    if text:
        results.append({"title": "Summary", "url": url, "snippet": text})
    for title, link in _topics(topics):
        if len(results) >= top_k:
            break
        if title and link:
            results.append({"title": title, "url": link, "snippet": None})
    return results


def _topics(topics: list[Any]) -> Iterator[tuple[str, str]]:
    """``(Text, FirstURL)`` of every result topic, groups (``Topics``) flattened in order.

    Walked with a stack rather than recursion, so no nesting depth can overflow it.
    """
    stack: list[Iterator[Any]] = [iter(topics)]
    while stack:
        topic = next(stack[-1], _END)
        if topic is _END:
            stack.pop()
            continue
        if not isinstance(topic, dict):
            raise FetchError("Failed to parse search response: a related topic is not an object")
        text, link = topic.get("Text"), topic.get("FirstURL")
        if isinstance(text, str) and isinstance(link, str):
            yield text, link
        elif isinstance(topic.get("Topics"), list):
            stack.append(iter(topic["Topics"]))
        else:
            raise FetchError("Failed to parse search response: a related topic has no Text")
