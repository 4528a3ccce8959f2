"""Fetching one JSON document over HTTP, shared by the providers that call web services.

Every way a fetch can go wrong (no connection, no answer in time, a non-2xx status, a body
too large, a body that is not JSON) raises the one :class:`FetchError`, so each provider
maps it to its own error code in one place. The deadline is a hard bound on the whole
request, not only on each socket operation, so a server that trickles bytes cannot hold a
call past it.
"""

from __future__ import annotations

import json
import ssl
from functools import cache
from typing import TYPE_CHECKING, Any

import trio

if TYPE_CHECKING:  # httpx is imported on first use: it adds ~90 ms to ``import loomk``
    import httpx

__all__ = ["MAX_BODY_BYTES", "USER_AGENT", "FetchError", "get_json", "loom_quote"]

USER_AGENT = "loomk/0.1"
MAX_BODY_BYTES = 4 * 1024 * 1024  # far above any answer the built-in services give

_UNRESERVED = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_.~")


class FetchError(Exception):
    """The document could not be fetched or decoded; the message says why."""


def loom_quote(text: str) -> str:
    """``text`` encoded for a query string exactly as Loom does it.

    Unreserved characters stay, a space becomes ``+``, everything else becomes ``%XX``
    (uppercase) per UTF-8 byte; lone surrogates, which have no UTF-8 form, become ``?``.
    """
    out: list[str] = []
    for char in text:
        if char in _UNRESERVED:
            out.append(char)
        elif char == " ":
            out.append("+")
        else:
            out.extend(f"%{byte:02X}" for byte in char.encode("utf-8", "replace"))
    return "".join(out)


async def get_json(
    url: str,
    *,
    what: str,
    timeout_s: float,
    user_agent: str = USER_AGENT,
    max_bytes: int = MAX_BODY_BYTES,
) -> Any:
    """GET ``url`` and decode its JSON body, all within ``timeout_s`` seconds.

    ``what`` names the service in error messages ("Geocoding API"). Redirects are followed,
    as Loom's HTTP client does.
    """
    import httpx  # deferred, see the module imports

    if not timeout_s > 0:
        raise FetchError(f"{what} was not asked: no time left")
    headers = {"User-Agent": user_agent, "Accept": "application/json"}
    body = b""
    async with httpx.AsyncClient(
        timeout=timeout_s, headers=headers, follow_redirects=True, verify=_tls()
    ) as client:
        with trio.move_on_after(timeout_s) as scope:
            try:
                async with client.stream("GET", url) as response:
                    if not response.is_success:
                        status = f"{response.status_code} {response.reason_phrase}".strip()
                        raise FetchError(f"{what} returned status: {status}")
                    body = await _read_body(response, what, max_bytes)
            except (httpx.HTTPError, httpx.InvalidURL, httpx.StreamError, OSError) as error:
                raise FetchError(f"{what} request failed: {_describe(error)}") from error
    if scope.cancelled_caught:
        raise FetchError(f"{what} did not answer within {timeout_s:g} s")
    try:
        return json.loads(body)
    except (ValueError, RecursionError) as error:
        raise FetchError(f"Failed to parse {what} response: {error}") from error


async def _read_body(response: httpx.Response, what: str, max_bytes: int) -> bytes:
    """The body, or :class:`FetchError` if it is over ``max_bytes``.

    An oversized body without a declared length is still read to its end (and dropped),
    since leaving httpx's stream half-read leaks its async generators under trio; the
    deadline bounds how long that takes.
    """
    too_large = FetchError(f"{what} answered with more than {max_bytes} bytes")
    declared = response.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > max_bytes:
        raise too_large
    chunks: list[bytes] = []
    size = 0
    async for chunk in response.aiter_bytes():
        size += len(chunk)
        if size <= max_bytes:
            chunks.append(chunk)
    if size > max_bytes:
        raise too_large
    return b"".join(chunks)


@cache
def _tls() -> ssl.SSLContext:
    """httpx's default TLS settings, built once: loading the CA bundle for every client
    would cost tens of milliseconds per call."""
    import httpx  # deferred, see the module imports

    return httpx.create_ssl_context()


def _describe(error: BaseException) -> str:
    """An exception's message, or its type's name when it has none (httpx timeouts)."""
    return str(error) or type(error).__name__
