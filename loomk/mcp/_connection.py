"""One supervised connection to one MCP server.

:class:`McpConnection` starts the server (stdio: ``command`` with ``args``, ``env`` added to
the inherited environment, in ``cwd``) or reaches it (Streamable HTTP at ``url``), does the
handshake (``initialize`` then ``notifications/initialized``, through the SDK's
:class:`~mcp.client.session.ClientSession`), lists its tools (every page), and serves
requests until the connection ends. :meth:`McpConnection.run` is the supervisor: when the
process dies or the transport drops it connects again after an exponential backoff (capped),
for as long as the connection is not stopped. A first attempt that fails ends the run: a
server that never worked is the caller's problem (:meth:`McpManager.add` raises), not one to
retry forever.

Why the transport's read stream goes through a relay task of ours: the SDK reports a line
that is not JSON-RPC as an exception *value* in that stream and keeps going, and it gives no
public signal when the stream ends. The relay sees both: garbage during the handshake fails
the handshake at once (``PROTOCOL_ERROR``) instead of letting it wait for its timeout;
garbage afterwards is dropped with a warning (as Loom did); any other transport exception
or the end of the stream means the connection is gone.

Cancellation: every request runs in a cancel scope of its own, registered while it runs;
when the connection drops, those scopes are cancelled, so a call in flight ends at once
with ``TRANSPORT_ERROR`` rather than waiting for an answer that cannot come. A request that
outlives ``timeout_s`` ends with ``TIMEOUT``. Cancelling the caller cancels its request (the
SDK tells the server) and leaves the connection up. :meth:`stop` cancels the whole run; the
SDK's stdio shutdown (close stdin, wait, kill the process tree) is shielded and bounded.
"""

from __future__ import annotations

import dataclasses
import enum
import math
import os
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

import anyio
import mcp_types as types
import trio
from anyio.streams.memory import MemoryObjectSendStream
from mcp.client.session import ClientSession
from mcp.client.stdio import StdioServerParameters, stdio_client
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.exceptions import MCPError
from mcp.shared.message import SessionMessage
from mcp_types.version import HANDSHAKE_PROTOCOL_VERSIONS
from pydantic import ValidationError

from loomk import __version__

if TYPE_CHECKING:  # the SDK's name for a transport's pair of streams
    from mcp.client._transport import ReadStream, TransportStreams
from loomk.config import McpServerSettings, mcp_server_name_problem
from loomk.telemetry import get_logger

from .errors import (
    INVALID_PARAMS,
    PROTOCOL_ERROR,
    SERVER_ERROR,
    TIMEOUT,
    TOOL_NOT_FOUND,
    TRANSPORT_ERROR,
    McpError,
)

__all__ = ["UNAVAILABLE", "ConnectionState", "McpConnection", "ServerFacts"]

_log = get_logger("loomk.mcp")
_T = TypeVar("_T")

UNAVAILABLE = "PROVIDER_UNAVAILABLE"
"""The code of a request made while the server is not connected (the broker's code)."""

_CLIENT_INFO = types.Implementation(name="loomk", version=__version__)
_CONNECTION_CLOSED = -32000  # the SDK's CONNECTION_CLOSED error code
_METHOD_NOT_FOUND = -32601
_INVALID_PARAMS = -32602


class ConnectionState(enum.Enum):
    """Where a connection is in its life."""

    CONNECTING = "connecting"  # starting the server, or in the handshake
    READY = "ready"  # serving requests
    DOWN = "down"  # the connection ended; the supervisor waits out the backoff
    STOPPED = "stopped"  # stopped for good (removed, or the first attempt failed)


@dataclass(frozen=True, slots=True)
class ServerFacts:
    """What a handshake and the listings told about a server."""

    name: str
    version: str
    protocol_version: str
    capabilities: types.ServerCapabilities
    tools: tuple[types.Tool, ...]


def check_settings(settings: McpServerSettings) -> None:
    """Raise :class:`McpError` for settings no connection can come of (before any work).

    The name is checked here too (settings made in code skip :meth:`McpServerSettings.
    from_table`): a name that cannot prefix a capability would leave the server connected
    with none of its capabilities registered."""
    where = f"MCP server {settings.name!r}"
    name_problem = mcp_server_name_problem(settings.name)
    if name_problem is not None:
        raise McpError(TRANSPORT_ERROR, f"{where}: settings.name: {name_problem}")
    if bool(settings.command) == bool(settings.url):
        raise McpError(TRANSPORT_ERROR, f"{where} needs exactly one of command and url")
    if not (isinstance(settings.timeout_s, int | float) and 0 < settings.timeout_s < math.inf):
        raise McpError(
            TRANSPORT_ERROR, f"{where}: timeout_s must be > 0, got {settings.timeout_s!r}"
        )
    version = settings.protocol_version
    if version and version not in HANDSHAKE_PROTOCOL_VERSIONS:
        raise McpError(
            PROTOCOL_ERROR,
            f"{where}: unsupported protocol version {version!r} "
            f"(supported: {', '.join(HANDSHAKE_PROTOCOL_VERSIONS)})",
        )


class _Flight:
    """One request in progress: its cancel scope, and whether the connection dropping (not
    its timeout) is what cancelled it."""

    __slots__ = ("dropped", "scope")

    def __init__(self, deadline: float) -> None:
        self.scope = trio.CancelScope(deadline=deadline)
        self.dropped = False


class McpConnection:
    """One MCP server, connected and kept connected (see the module notes).

    ``on_change`` is called (synchronously, must not raise) whenever the state or the tool
    list changes, so the owner can follow with its broker registrations.

    The backoff (``backoff_s`` doubled after each drop, up to ``max_backoff_s``) starts again
    only after a connection stayed up ``stable_s`` (default: 10 times ``backoff_s``, at
    least 5 s): a server that dies a second after each start must not be restarted forever
    at the shortest delay. ``next_retry_s`` is the wait before the coming reconnection (while
    ``DOWN``) or the last one.
    """

    def __init__(
        self,
        settings: McpServerSettings,
        on_change: Callable[[], None],
        *,
        backoff_s: float = 0.1,
        max_backoff_s: float = 10.0,
        stable_s: float | None = None,
    ) -> None:
        check_settings(settings)
        self.settings = settings
        self._on_change = on_change
        self._backoff_s = backoff_s
        self._max_backoff_s = max_backoff_s
        # how long a connection must have stayed up for the backoff to start again
        self._stable_s = max(10 * backoff_s, 5.0) if stable_s is None else stable_s
        self._stopped = False
        self.next_retry_s = 0.0
        self._state = ConnectionState.CONNECTING
        self._facts: ServerFacts | None = None
        self._session: ClientSession | None = None
        self._flights: set[_Flight] = set()
        self._live: trio.CancelScope | None = None
        self._problem: McpError | None = None
        self._handshaking = False
        self._run_scope = trio.CancelScope()
        self._wake = trio.Event()
        self._tools_changed = trio.Event()
        self._changed = trio.Event()
        self._attempts_done = 0
        self._last_problem: McpError | None = None
        self._ever_ready = False
        self._attempts_done_pending = False
        self.connects = 0
        self.restarts = 0
        self.dropped_lines = 0

    # ---- what it knows --------------------------------------------------------------------

    @property
    def name(self) -> str:
        """The server's name in loomk (the settings' ``name``)."""
        return self.settings.name

    @property
    def state(self) -> ConnectionState:
        """Where the connection is (see :class:`ConnectionState`)."""
        return self._state

    @property
    def facts(self) -> ServerFacts | None:
        """What the last successful handshake and listing said; None before the first."""
        return self._facts

    @property
    def last_problem(self) -> McpError | None:
        """Why the last attempt or connection ended, if it did."""
        return self._last_problem

    def _set_state(self, state: ConnectionState) -> None:
        self._state = state
        self._notify()

    def _notify(self) -> None:
        self._wake_waiters()
        self._on_change()

    def _wake_waiters(self) -> None:
        self._changed.set()
        self._changed = trio.Event()

    async def _wait_until(self, done: Callable[[], bool]) -> None:
        while not done():
            await self._changed.wait()

    def _removed(self) -> McpError:
        return McpError(TRANSPORT_ERROR, f"MCP server {self.name!r} was removed")

    async def wait_attempt(self, after: int) -> McpError | None:
        """Wait for the attempt after the first ``after`` ones to succeed or fail; its
        problem (None: it connected). Raises :class:`McpError` (``TRANSPORT_ERROR``) when
        the connection is stopped first, since then no attempt may ever end."""
        await self._wait_until(lambda: self._attempts_done > after or self._stopped)
        if self._stopped:
            raise self._removed()
        return self._last_problem if self._state is not ConnectionState.READY else None

    @property
    def attempts_done(self) -> int:
        """How many connection attempts have succeeded or failed so far."""
        return self._attempts_done

    async def wait_ready(self) -> None:
        """Wait until the connection serves requests (returns at once when it does);
        raises :class:`McpError` if it is stopped for good first."""
        await self._wait_until(
            lambda: self._state in (ConnectionState.READY, ConnectionState.STOPPED)
        )
        if self._stopped:
            raise self._removed()
        if self._state is ConnectionState.STOPPED:
            raise McpError(TRANSPORT_ERROR, f"MCP server {self.name!r} is stopped")

    # ---- supervision ----------------------------------------------------------------------

    async def run(self) -> None:
        """Connect and stay connected until :meth:`stop` (or until the first attempt
        fails): the supervisor task, one per server.

        Raises nothing but cancellation (and ``KeyboardInterrupt``-like exceptions): it runs
        in the manager's nursery beside the other servers, so an error of its own is logged
        and recorded as :attr:`last_problem` instead of taking them down."""
        try:
            with self._run_scope:
                await self._supervise()
        except BaseException as error:
            fatal, other = _split_errors(error)
            if other is not None:
                self._last_problem = _first_mcp_error(other) or McpError(
                    TRANSPORT_ERROR, f"MCP server {self.name!r}: {_describe(other)}"
                )
                _log.error("MCP server supervisor failed", server=self.name, error=_describe(other))
            if fatal is error:
                raise
            if fatal is not None:
                raise fatal from None
        finally:
            self._session = None
            self._drop_flights()
            self._state = ConnectionState.STOPPED
            if self._attempts_done_pending and self._stopped:
                self._last_problem = self._removed()
            self._finish_attempt()  # a waiter for this attempt must not wait forever
            self._notify()

    async def _supervise(self) -> None:
        delay = self._backoff_s
        while True:
            self._set_state(ConnectionState.CONNECTING)
            connects = self.connects
            problem, up_s = await self._connect_and_serve()
            self._last_problem = problem
            if not self._ever_ready:
                self._finish_attempt()
                return
            if self.connects > connects and up_s >= self._stable_s:
                delay = self._backoff_s  # it worked for a while: start the backoff again
            self.next_retry_s = delay
            self._finish_attempt()
            self._set_state(ConnectionState.DOWN)
            _log.warning(
                "MCP server connection ended; reconnecting",
                server=self.name,
                reason=str(problem),
                backoff_s=delay,
            )
            with trio.move_on_after(delay):
                await self._wake.wait()
            self._wake = trio.Event()
            delay = min(delay * 2, self._max_backoff_s)
            self.restarts += 1

    def _finish_attempt(self) -> None:
        if self._attempts_done_pending:
            self._attempts_done_pending = False
            self._attempts_done += 1
            self._notify()

    def stop(self) -> None:
        """End the run for good (the caller's nursery waits for the server to shut down);
        whoever waits for an attempt or for the connection gets :class:`McpError`."""
        self._stopped = True
        self._run_scope.cancel()
        self._wake_waiters()  # not the owner's on_change: it is unregistering meanwhile

    def restart(self) -> None:
        """Drop the current connection (if any) and connect again now, without backoff."""
        self._fail(McpError(TRANSPORT_ERROR, f"MCP server {self.name!r}: reconnect requested"))
        self._wake.set()

    def _fail(self, problem: McpError) -> None:
        """End the current connection attempt or session because of ``problem``."""
        if self._problem is None:
            self._problem = problem
        self._session = None
        self._drop_flights()
        if self._state is ConnectionState.READY:  # down from now: no request may start
            self._last_problem = self._problem
            self._set_state(ConnectionState.DOWN)
        if self._live is not None:
            self._live.cancel()

    def _drop_flights(self) -> None:
        for flight in self._flights:
            flight.dropped = True
            flight.scope.cancel()

    async def _connect_and_serve(self) -> tuple[McpError, float]:
        """One connection: start, handshake, list, serve until it ends; why it ended, and
        for how long it served (0: it never did).

        Cancellation (of the run) mixed with the transport's own error in one exception
        group (the HTTP transport's pending ``ConnectError``) is split: the error is this
        connection's problem, only the cancellation goes on."""
        self._problem = None
        self._attempts_done_pending = True
        self._live = trio.CancelScope()
        where = f"MCP server {self.name!r}"
        ready_at: float | None = None
        try:
            with self._live:
                async with self._transport() as (read, write):
                    relay_send, relay_receive = anyio.create_memory_object_stream[
                        SessionMessage | Exception
                    ](0)
                    async with trio.open_nursery() as nursery:
                        nursery.start_soon(self._relay, read, relay_send)
                        async with ClientSession(
                            relay_receive,
                            write,
                            message_handler=self._on_message,
                            client_info=_CLIENT_INFO,
                        ) as session:
                            self._facts = await self._handshake(session)
                            ready_at = trio.current_time()
                            self._session = session
                            self.connects += 1
                            self._ever_ready = True
                            self._state = ConnectionState.READY
                            self._finish_attempt()  # notifies
                            nursery.start_soon(self._follow_tool_changes)
                            await trio.sleep_forever()
        except BaseException as error:  # ours, the SDK's or the OS's: spawning, HTTP, a pipe
            fatal, other = _split_errors(error)
            if other is not None:
                self._problem = (
                    self._problem
                    or _first_mcp_error(other)
                    or McpError(TRANSPORT_ERROR, f"{where}: {_describe(other)}")
                )
            if fatal is error:
                raise
            if fatal is not None:
                raise fatal from None
        finally:
            self._session = None
            self._live = None
            self._drop_flights()
        up_s = 0.0 if ready_at is None else trio.current_time() - ready_at
        problem = self._problem or McpError(TRANSPORT_ERROR, f"{where}: the connection ended")
        return problem, up_s

    @asynccontextmanager
    async def _transport(self) -> AsyncIterator[TransportStreams]:
        settings = self.settings
        if settings.url:
            async with streamable_http_client(settings.url) as streams:
                yield streams[0], streams[1]
            return
        parameters = StdioServerParameters(
            command=settings.command,
            args=list(settings.args),
            env={**os.environ, **settings.env},
            cwd=settings.cwd or None,
        )
        async with stdio_client(parameters) as streams:
            yield streams[0], streams[1]

    async def _relay(
        self,
        read: ReadStream[SessionMessage | Exception],
        send: MemoryObjectSendStream[SessionMessage | Exception],
    ) -> None:
        """Pass the server's messages to the session, watching for garbage and the end."""
        where = f"MCP server {self.name!r}"
        async with send:
            try:
                async for item in read:
                    if isinstance(item, Exception):
                        if isinstance(item, ValueError) and not self._handshaking:
                            self.dropped_lines += 1
                            _log.warning(
                                "MCP server sent a line that is not JSON-RPC; dropped",
                                server=self.name,
                                error=_describe(item),
                            )
                            continue
                        code = PROTOCOL_ERROR if isinstance(item, ValueError) else TRANSPORT_ERROR
                        self._fail(
                            McpError(code, f"{where} sent what is not JSON-RPC: {_describe(item)}")
                            if code == PROTOCOL_ERROR
                            else McpError(code, f"{where}: {_describe(item)}")
                        )
                        return
                    await send.send(item)
            except (anyio.ClosedResourceError, anyio.BrokenResourceError, anyio.EndOfStream):
                pass
        self._fail(
            McpError(
                TRANSPORT_ERROR,
                f"{where} closed the connection"
                + (" during the handshake (did it exit?)" if self._handshaking else ""),
            )
        )

    async def _handshake(self, session: ClientSession) -> ServerFacts:
        """``initialize`` (proposing the wanted version, if any), check the version,
        ``notifications/initialized``, then the tool list: all within ``timeout_s``."""
        settings = self.settings
        where = f"MCP server {self.name!r}"
        self._handshaking = True
        try:
            with trio.move_on_after(settings.timeout_s) as scope:
                result = await self._initialize(session)
                capabilities = result.capabilities
                tools: tuple[types.Tool, ...] = ()
                if capabilities.tools is not None:
                    tools = tuple(await list_all_tools(session))
        except MCPError as error:
            raise McpError(
                SERVER_ERROR, f"{where} refused the handshake: {error.message} (code: {error.code})"
            ) from error
        except (RuntimeError, ValidationError) as error:
            raise McpError(PROTOCOL_ERROR, f"{where}: {_describe(error)}") from error
        finally:
            self._handshaking = False
        if scope.cancelled_caught:
            raise McpError(
                TIMEOUT, f"{where} did not finish the handshake within {settings.timeout_s:g} s"
            )
        info = result.server_info
        return ServerFacts(info.name, info.version, result.protocol_version, capabilities, tools)

    async def _initialize(self, session: ClientSession) -> types.InitializeResult:
        wanted = self.settings.protocol_version
        where = f"MCP server {self.name!r}"
        if not wanted:  # the SDK's own handshake: the newest version both speak
            return await session.initialize()
        # A version was asked for: propose it, and insist on it (the SDK would propose its
        # newest and accept any it knows).
        result = await session.send_request(
            types.InitializeRequest(
                params=types.InitializeRequestParams(
                    protocol_version=wanted,
                    capabilities=types.ClientCapabilities(),
                    client_info=_CLIENT_INFO,
                )
            ),
            types.InitializeResult,
        )
        if result.protocol_version != wanted:
            raise McpError(
                PROTOCOL_ERROR,
                f"{where} answered protocol version {result.protocol_version!r}, "
                f"not the {wanted!r} its settings ask for",
            )
        session.adopt(result)
        await session.send_notification(types.InitializedNotification())
        return result

    async def _on_message(self, message: types.ServerNotification | Exception) -> None:
        """The SDK's hook for what the server sends unasked: a tool list change is noted
        here and followed by :meth:`_follow_tool_changes` (no session I/O in the hook)."""
        if isinstance(message, types.ToolListChangedNotification):
            self._tools_changed.set()

    async def _follow_tool_changes(self) -> None:
        while True:
            await self._tools_changed.wait()
            self._tools_changed = trio.Event()
            try:
                tools = await self.request("tools/list", list_all_tools)
            except McpError as error:
                _log.warning("MCP tool list refresh failed", server=self.name, error=str(error))
                continue
            if self._facts is not None:
                self._facts = dataclasses.replace(self._facts, tools=tuple(tools))
                self._notify()

    # ---- requests -------------------------------------------------------------------------

    async def request(self, what: str, operation: Callable[[ClientSession], Awaitable[_T]]) -> _T:
        """Run ``operation`` on the live session, bounded by ``timeout_s``.

        Raises :class:`McpError`: ``PROVIDER_UNAVAILABLE`` when not connected,
        ``TRANSPORT_ERROR`` when the connection drops meanwhile, ``TIMEOUT``,
        ``SERVER_ERROR`` (or ``TOOL_NOT_FOUND``/``INVALID_PARAMS``) for a JSON-RPC error,
        ``PROTOCOL_ERROR`` for an answer that does not fit the protocol.
        """
        where = f"MCP server {self.name!r}"
        session = self._session
        if session is None or self._state is not ConnectionState.READY:
            raise McpError(UNAVAILABLE, f"{where} is not connected ({self._state.value})")
        timeout_s = self.settings.timeout_s
        flight = _Flight(trio.current_time() + timeout_s)
        self._flights.add(flight)
        try:
            with flight.scope:
                return await operation(session)
        except MCPError as error:
            if error.code == _CONNECTION_CLOSED:
                raise McpError(
                    TRANSPORT_ERROR, f"{where}: the connection closed during {what}"
                ) from error
            code = _error_code(what, error)
            raise McpError(
                code, f"{where}: {what} failed: {error.message} (code: {error.code})"
            ) from error
        except (anyio.ClosedResourceError, anyio.BrokenResourceError) as error:
            raise McpError(
                TRANSPORT_ERROR, f"{where}: the connection closed during {what}"
            ) from error
        except (RuntimeError, ValidationError) as error:
            raise McpError(PROTOCOL_ERROR, f"{where}: {what}: {_describe(error)}") from error
        finally:
            self._flights.discard(flight)
        # only a cancelled scope gets here: the connection dropped, or the time ran out
        if flight.dropped:
            raise McpError(TRANSPORT_ERROR, f"{where}: the connection was lost during {what}")
        raise McpError(TIMEOUT, f"{where} did not answer {what} within {timeout_s:g} s")


async def all_pages(
    fetch: Callable[[types.PaginatedRequestParams | None], Awaitable[Any]], items: str
) -> list[Any]:
    """Every item of a paginated listing (``tools``, ``resources``, ``prompts``): ``fetch``
    is asked page after page, following ``nextCursor`` (a repeated cursor ends it)."""
    found: list[Any] = []
    cursor: str | None = None
    seen: set[str] = set()
    while True:
        params = types.PaginatedRequestParams(cursor=cursor) if cursor is not None else None
        page = await fetch(params)
        found.extend(getattr(page, items))
        cursor = page.next_cursor
        if cursor is None or cursor in seen:
            return found
        seen.add(cursor)


async def list_all_tools(session: ClientSession) -> list[types.Tool]:
    """Every tool the server lists, over all pages."""
    return await all_pages(lambda params: session.list_tools(params=params), "tools")


_UNKNOWN_TOOL = ("unknown tool", "tool not found", "no such tool")


def _error_code(what: str, error: MCPError) -> str:
    """Loom's code for a JSON-RPC error answering ``what`` (the method).

    The spec answers an unknown tool with ``-32602`` ("Unknown tool: x"), so that is
    ``TOOL_NOT_FOUND`` for a ``tools/call`` whose message says so and ``INVALID_PARAMS``
    otherwise; ``-32601`` (method not found) is ``TOOL_NOT_FOUND`` only for ``tools/call``
    (older servers answer an unknown tool so) and ``SERVER_ERROR`` for any other method
    (the server does not support it); any other code is ``SERVER_ERROR``."""
    if error.code == _INVALID_PARAMS:
        message = error.message.lower()
        if what == "tools/call" and any(words in message for words in _UNKNOWN_TOOL):
            return TOOL_NOT_FOUND
        return INVALID_PARAMS
    if error.code == _METHOD_NOT_FOUND and what == "tools/call":
        return TOOL_NOT_FOUND
    return SERVER_ERROR


def _split_errors(
    error: BaseException,
) -> tuple[BaseException | None, BaseException | None]:
    """``error`` split into what must go on (cancellation, ``KeyboardInterrupt``...; an
    exception group keeps the leaves that are no :class:`Exception`) and the errors, either
    None when there is none of it. A group of one leaf is unwrapped."""
    if not isinstance(error, BaseExceptionGroup):
        if isinstance(error, Exception):
            return None, error
        return error, None
    errors, fatal = error.split(Exception)
    return _unwrap(fatal), _unwrap(errors)


_E = TypeVar("_E", bound=BaseException)


def _unwrap(group: BaseExceptionGroup[_E] | None) -> _E | BaseExceptionGroup[_E] | None:
    """The only leaf of ``group`` when it has one, else ``group``."""
    if group is not None and len(group.exceptions) == 1:
        only = group.exceptions[0]
        return only if not isinstance(only, BaseExceptionGroup) else _unwrap(only)
    return group


def _first_mcp_error(error: BaseException) -> McpError | None:
    """The :class:`McpError` in ``error`` (which may be an exception group), if any."""
    if isinstance(error, McpError):
        return error
    if isinstance(error, BaseExceptionGroup):
        for inner in error.exceptions:
            found = _first_mcp_error(inner)
            if found is not None:
                return found
    return None


def _describe(error: BaseException) -> str:
    """A one-line account of ``error``, looking inside exception groups."""
    if isinstance(error, BaseExceptionGroup):
        return "; ".join(_describe(e) for e in error.exceptions)
    text = str(error).strip().splitlines()
    return f"{type(error).__name__}: {text[0]}" if text else type(error).__name__
