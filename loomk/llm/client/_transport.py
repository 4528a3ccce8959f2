"""Sending model requests: the HTTP half of the client.

The client API (:class:`~loomk.llm.client.LLMClient`) builds a :class:`ModelRequest` and
reads what comes back; :class:`LLMTransport` sends it, as httpx's ``Client`` hands its
requests to a transport. Everything about getting a 2xx answer lives here:

* the connection pool: one ``httpx.AsyncClient``, opened and closed with the client, with
  httpx's default TLS verification (or the httpx transport a caller gives for tests,
  proxies and mocks);
* the credentials: the API key goes out as ``Authorization: Bearer`` only to the
  configured endpoint's origin (a call that overrides the base URL must not carry it to
  another host), and is masked in every error message and log line that could show it;
* retries: connect errors, 429 and 5xx are tried again as the retry policy says, waiting
  at least what a ``Retry-After`` asks;
* timeouts: trio deadlines bound each attempt (httpx's own timeouts are off), and an
  optional overall deadline drops the retries that would not finish before it.

Every failure is an :class:`~loomk.errors.LLMError` with a code.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from functools import cache
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

import trio

from loomk.config import SECRET_MASK
from loomk.errors import LLMError
from loomk.llm.client._retry import retry_after, retry_delay
from loomk.llm.client._settings import LLMSettings
from loomk.llm.client._wire import (
    LLM_CONNECT_ERROR,
    LLM_HTTP_ERROR,
    LLM_NOT_CONFIGURED,
    LLM_RATE_LIMITED,
    LLM_TIMEOUT,
    SNIPPET_CHARS,
    bad_response,
    close_quietly,
    describe_error,
    is_json,
    transport_errors,
)
from loomk.telemetry.logging import get_logger

if TYPE_CHECKING:  # httpx is imported on first use: it adds ~90 ms to ``import loomk``
    import ssl

    import httpx

__all__ = ["LLMTransport", "ModelRequest"]

_USER_AGENT = "loomk/0.1"

_log = get_logger("loomk.llm")


@dataclass(frozen=True, slots=True)
class ModelRequest:
    """One POST to a model server.

    ``content`` is the JSON body, already encoded; ``timeout_s`` bounds each attempt;
    ``stream`` asks for an event stream (the answer comes back with only its head read);
    ``deadline`` (trio time), when set, bounds all attempts and the waits between them.
    """

    url: str
    content: bytes
    timeout_s: float
    stream: bool = False
    deadline: float | None = None


@cache
def _tls() -> ssl.SSLContext:
    """httpx's default TLS settings, built once (loading the CA bundle takes tens of ms)."""
    import httpx

    return httpx.create_ssl_context()


class LLMTransport:
    """Sends :class:`ModelRequest` s for one client (see the module notes).

    ``http_transport`` replaces httpx's network transport; without one, connections use
    httpx's default TLS verification. :meth:`open` before sending, :meth:`aclose` after.
    Its :attr:`settings` are the client's only copy: the client reads them from here.
    """

    def __init__(
        self, settings: LLMSettings, *, http_transport: httpx.AsyncBaseTransport | None = None
    ) -> None:
        self._settings = settings
        self._http_transport = http_transport
        self._http: httpx.AsyncClient | None = None

    @property
    def settings(self) -> LLMSettings:
        """Where and how requests go (read-only: the key, the origin it may go to and the
        retry limits must stay those of the endpoint the client builds URLs for)."""
        return self._settings

    @property
    def is_open(self) -> bool:
        """Whether the connection pool is open (between :meth:`open` and :meth:`aclose`)."""
        return self._http is not None

    async def open(self) -> None:
        """Open the connection pool; RuntimeError when it is open already."""
        import httpx

        if self._http is not None:
            raise RuntimeError("the transport is already open")
        self._http = httpx.AsyncClient(
            transport=self._http_transport,
            timeout=None,  # trio deadlines bound each request (see _attempt)
            headers={"User-Agent": _USER_AGENT},
            verify=_tls() if self._http_transport is None else True,
        )

    async def aclose(self) -> None:
        """Close the connection pool (even when cancelled); closing twice is harmless."""
        http, self._http = self._http, None
        if http is not None:
            with trio.CancelScope(shield=True):
                await http.aclose()

    def redact(self, text: str) -> str:
        """``text`` with the API key masked wherever it appears."""
        key = self._settings.api_key
        return text.replace(key, SECRET_MASK) if key else text

    async def send(self, request: ModelRequest) -> httpx.Response:
        """POST ``request`` with retries; its 2xx response (the body read, unless it is an
        event stream, which the caller reads and closes), or the LLMError of the last try."""
        for attempt in itertools.count():
            timeout_s = request.timeout_s
            if request.deadline is not None:
                timeout_s = min(timeout_s, request.deadline - trio.current_time())
                if timeout_s <= 0:
                    raise LLMError(LLM_TIMEOUT, f"no time left to ask {request.url}")
            try:
                response = await self._attempt(request, timeout_s)
            except LLMError as error:
                failure = error
            else:
                if 200 <= response.status_code < 300:
                    return response
                failure = self._status_error(request.url, response)
            delay = retry_delay(failure, attempt, self._settings)
            if delay is None or (
                request.deadline is not None and trio.current_time() + delay >= request.deadline
            ):  # no retry (or none that fits): report this failure now
                raise failure
            reason = (
                {"error": failure.message} if failure.status is None else {"status": failure.status}
            )
            _log.warning(
                "llm request failed, retrying",
                url=request.url,
                **reason,
                attempt=attempt + 1,
                delay_s=round(delay, 3),
            )
            await trio.sleep(delay)
        raise AssertionError("unreachable")  # pragma: no cover

    # ---- one attempt --------------------------------------------------------------------

    def _client(self) -> httpx.AsyncClient:
        if self._http is None:
            raise RuntimeError("the transport is not open: open() it before sending")
        return self._http

    def _headers(self, request: ModelRequest) -> dict[str, str]:
        headers = {
            "Content-Type": "application/json",
            "Accept": "text/event-stream" if request.stream else "application/json",
        }
        if self._settings.api_key and _same_origin(request.url, self._settings.base_url):
            headers["Authorization"] = f"Bearer {self._settings.api_key}"
        return headers

    def _describe(self, error: BaseException) -> str:
        return self.redact(describe_error(error))

    async def _attempt(self, request: ModelRequest, timeout_s: float) -> httpx.Response:
        """One try within ``timeout_s``: a response with its body read (only the head for
        an event stream), or LLM_TIMEOUT / LLM_CONNECT_ERROR / LLM_BAD_RESPONSE."""
        http = self._client()
        url, stream = request.url, request.stream
        errors = transport_errors()
        url_errors: tuple[type[BaseException], ...] = (ValueError, *errors)  # InvalidURL & co
        try:
            built = http.build_request(
                "POST", url, content=request.content, headers=self._headers(request)
            )
        except url_errors as error:
            raise LLMError(
                LLM_NOT_CONFIGURED,
                f"the model endpoint is not a valid URL: {self._describe(error)}",
            ) from None
        _log.debug("llm request", url=url, stream=stream)
        with trio.move_on_after(timeout_s):
            try:
                response = await http.send(built, stream=True)
            except errors as error:
                raise LLMError(
                    LLM_CONNECT_ERROR, f"no answer from {url}: {self._describe(error)}"
                ) from None
            try:
                if not (stream and response.is_success and not is_json(response)):
                    await response.aread()
            except errors as error:
                await close_quietly(response)
                raise bad_response(
                    f"the answer from {url} was cut short: {self._describe(error)}"
                ) from None
            except BaseException:
                await close_quietly(response)
                raise
            return response
        raise LLMError(LLM_TIMEOUT, f"no complete answer from {url} within {timeout_s:g} s")

    def _status_error(self, url: str, response: httpx.Response) -> LLMError:
        status = response.status_code
        # redact before cutting: a key that straddles the cut would keep its first part
        snippet = " ".join(self.redact(response.text).split())[:SNIPPET_CHARS]
        detail = self.redact(f"{url} answered HTTP {status}" + (f": {snippet}" if snippet else ""))
        waited = retry_after(response.headers.get("retry-after"))
        if status == 429:
            return LLMError(LLM_RATE_LIMITED, detail, status=status, retry_after_s=waited)
        return LLMError(LLM_HTTP_ERROR, detail, status=status, retry_after_s=waited)


def _same_origin(url: str, base_url: str) -> bool:
    """Whether ``url`` has the scheme, host and port of ``base_url``."""
    if not base_url:
        return False
    a, b = urlsplit(url), urlsplit(base_url.strip())
    return (a.scheme.lower(), a.hostname, a.port) == (b.scheme.lower(), b.hostname, b.port)
