"""The MCP client: a kernel's MCP servers, their tools registered as broker capabilities.

:func:`open_mcp` runs an :class:`McpManager` on a kernel's broker for the length of an
``async with``; the manager owns a nursery with one supervisor task per server (see
:mod:`loomk.mcp._connection`). ``await add(settings)`` connects a server and registers its
capabilities (``server:tool``, plus resources and prompts when the server has them) or
raises :class:`~loomk.mcp.errors.McpError` naming the server and saying why; the kernel and
the other servers carry on either way. ``remove(name)`` disconnects and unregisters (Loom
left the capabilities registered); ``reconnect(name)`` connects again now.

The servers given to :func:`open_mcp` (a kernel's ``mcp_servers``) are started together by
:meth:`McpManager.start`, which never raises for a server: one that exits at start, hangs
in the handshake or speaks another protocol version is logged as an error naming it and
why, shows as ``failed`` in :meth:`McpManager.info`, and is tried again with backoff, so a
bad entry in ``loomk.toml`` never keeps the kernel or the other servers from starting.

While a server is down (its process died, its transport dropped) its capabilities **stay
registered** and answer ``PROVIDER_UNAVAILABLE`` until the supervisor has it back: the set
of tools a model is offered does not flicker with every restart, and a caller learns why the
call failed. Each reconnection re-lists the tools and brings the registrations in line (new
tools registered, gone ones unregistered), as a ``notifications/tools/list_changed`` does.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import trio

from loomk import ActionBroker, ActionResult, ActionStatus, CapabilityProvider
from loomk.config import McpServerSettings
from loomk.telemetry import get_logger

from ._adapter import ADAPTER_VERSION, extra_providers, tool_provider
from ._connection import ConnectionState, McpConnection, check_settings
from .errors import TIMEOUT, TRANSPORT_ERROR, McpError

if TYPE_CHECKING:
    from loomk import Kernel

__all__ = ["McpManager", "McpServerInfo", "McpServerStats", "McpStats", "open_mcp"]

_log = get_logger("loomk.mcp")

_FAILED = "failed"
"""The state of a configured server whose last connection never worked (see ``_Server``)."""


@dataclass(frozen=True, slots=True)
class McpServerInfo:
    """One server as the manager sees it: ``state`` (connecting, ready, down, stopped, or
    failed: a configured server that could not start, tried again with backoff), what its
    handshake said (empty before the first), its tools and the capabilities
    registered for it, and why its last connection ended (if it did)."""

    name: str
    state: str
    server_name: str = ""
    server_version: str = ""
    protocol_version: str = ""
    tools: tuple[str, ...] = ()
    capabilities: tuple[str, ...] = ()
    last_error: str = ""


@dataclass(frozen=True, slots=True)
class McpServerStats:
    """The counts of one server: calls through its capabilities and how they ended,
    connections made and restarts after a drop, lines dropped as not JSON-RPC."""

    calls: int = 0
    ok: int = 0
    errors: int = 0
    timeouts: int = 0
    transport_errors: int = 0
    connects: int = 0
    restarts: int = 0
    dropped_lines: int = 0


@dataclass(frozen=True, slots=True)
class McpStats:
    """The counts of every server, by name."""

    servers: Mapping[str, McpServerStats] = field(default_factory=dict)


@dataclass(slots=True)
class _Counts:
    calls: int = 0
    ok: int = 0
    errors: int = 0
    timeouts: int = 0
    transport_errors: int = 0

    def record(self, result: ActionResult) -> None:
        self.calls += 1
        if result.status is ActionStatus.ACTION_OK:
            self.ok += 1
        elif result.status is ActionStatus.ACTION_TIMEOUT or result.code == TIMEOUT:
            self.timeouts += 1
        else:
            self.errors += 1
            if result.code == TRANSPORT_ERROR:
                self.transport_errors += 1


class _Server:
    """A server: its connection and the broker registrations that follow it.

    A connection whose first attempt fails ends (see :mod:`loomk.mcp._connection`). For a
    server added by :meth:`McpManager.add` that is the end: ``add`` raises and drops it.
    For a configured server (``retry``) the server itself tries again, with a fresh
    connection after a backoff (doubled each time, capped), until it works or is removed:
    a server that is not up yet when the kernel starts (an HTTP service still booting) comes
    in when it is, and one that never works is reported in :meth:`info` meanwhile.
    """

    def __init__(
        self,
        settings: McpServerSettings,
        broker: ActionBroker,
        backoff_s: float,
        max_backoff_s: float,
        *,
        retry: bool,
    ) -> None:
        self.settings = settings
        self.broker = broker
        self.retry = retry
        self.counts = _Counts()
        self.registered: dict[str, CapabilityProvider] = {}
        self.finished = trio.Event()
        self.stopped = False
        self.failed = False  # the last connection never worked; waiting to try again
        self.failures = 0  # first attempts that failed, over every connection
        self.last_failure: McpError | None = None
        self._backoff_s = backoff_s
        self._max_backoff_s = max_backoff_s
        self._scope = trio.CancelScope()
        self._wake = trio.Event()
        self._changed = trio.Event()
        self._earlier_connects = 0  # of the connections replaced after failing
        self._earlier_restarts = 0
        self._earlier_dropped = 0
        self.connection = self._new_connection()

    def _new_connection(self) -> McpConnection:
        return McpConnection(
            self.settings,
            self._on_change,
            backoff_s=self._backoff_s,
            max_backoff_s=self._max_backoff_s,
        )

    @property
    def name(self) -> str:
        return self.settings.name

    def _on_change(self) -> None:
        """The connection's state or tools changed: follow with the broker, wake waiters."""
        if self.connection.state is ConnectionState.READY:
            self.last_failure = None
        self.sync()
        self._notify()

    def _notify(self) -> None:
        self._changed.set()
        self._changed = trio.Event()

    async def _wait_until(self, done: Callable[[], bool]) -> None:
        while not done():
            await self._changed.wait()

    async def run(self) -> None:
        """The server's task: its connection's supervisor, started again after a failed
        first attempt when ``retry`` (see the class notes)."""
        delay = self._backoff_s
        try:
            with self._scope:
                while True:
                    await self.connection.run()
                    if self.stopped or not self.retry:
                        return
                    # run() returns only when stopped or when the first attempt failed
                    problem = self.connection.last_problem
                    self.failed = True
                    self.failures += 1
                    self.last_failure = problem
                    self._notify()
                    log = _log.error if self.failures == 1 else _log.warning
                    log(
                        "MCP server failed to start; retrying",
                        server=self.name,
                        reason=str(problem),
                        retry_in_s=delay,
                    )
                    with trio.move_on_after(delay):
                        await self._wake.wait()
                    self._wake = trio.Event()
                    delay = min(delay * 2, self._max_backoff_s)
                    old = self.connection
                    self._earlier_connects += old.connects
                    self._earlier_restarts += old.restarts + 1
                    self._earlier_dropped += old.dropped_lines
                    self.connection = self._new_connection()
                    self.failed = False
                    self._notify()
        finally:
            self.finished.set()
            self._notify()

    def stop(self) -> None:
        """End the server for good (its task finishes once its process has stopped)."""
        self.stopped = True
        self.connection.stop()
        self._scope.cancel()
        self._notify()

    async def next_attempt(self) -> McpError | None:
        """Wait for the current connection's next attempt (the one a failed server is
        waiting to make: now, without the rest of its backoff) to succeed or fail; its
        problem (None: it connected). Raises :class:`McpError` if the server is removed
        or stopped first, so a waiter never outlives it."""
        if self.failed:
            self._wake.set()
            await self._wait_until(lambda: not self.failed or self.finished.is_set())
        connection = self.connection
        before = connection.attempts_done
        if connection.state is not ConnectionState.CONNECTING or before:
            connection.restart()  # a connection that is up (or down): connect again now
        return await self._attempt_of(connection, before)

    async def first_attempt(self) -> McpError | None:
        """Wait for the first attempt of the first connection to succeed or fail (see
        :meth:`next_attempt`)."""
        return await self._attempt_of(self.connection, 0)

    async def _attempt_of(self, connection: McpConnection, before: int) -> McpError | None:
        await self._wait_until(
            lambda: (
                connection.attempts_done > before
                or self.stopped
                or connection is not self.connection
                or (self.finished.is_set() and connection.state is ConnectionState.STOPPED)
            )
        )
        if connection.attempts_done > before:
            if connection.state is ConnectionState.READY:
                return None
            return connection.last_problem or McpError(
                TRANSPORT_ERROR, f"MCP server {self.name!r} did not connect"
            )
        raise McpError(TRANSPORT_ERROR, f"MCP server {self.name!r} was removed meanwhile")

    async def wait_ready(self) -> None:
        """Wait until the server serves requests; :class:`McpError` if it ends first."""
        await self._wait_until(
            lambda: self.connection.state is ConnectionState.READY or self.finished.is_set()
        )
        if self.connection.state is not ConnectionState.READY:
            raise McpError(TRANSPORT_ERROR, f"MCP server {self.name!r} is stopped")

    def sync(self) -> None:
        """Bring the broker in line with the server's tools (when it is connected)."""
        connection = self.connection
        facts = connection.facts
        if connection.state is not ConnectionState.READY or facts is None:
            return
        wanted: dict[str, CapabilityProvider] = {}
        for extra in extra_providers(connection, facts.capabilities, self.counts.record):
            wanted[extra.descriptor.name] = extra
        for tool in facts.tools:
            tool_cap = tool_provider(connection, tool, self.counts.record)
            if tool_cap is None:
                continue
            if tool_cap.descriptor.name in wanted:
                _log.warning("MCP tool name clashes; skipped", capability=tool_cap.descriptor.name)
                continue
            wanted[tool_cap.descriptor.name] = tool_cap
        for name in [n for n in self.registered if n not in wanted]:
            self._unregister(name)
        for name, provider in wanted.items():  # register replaces: fresh adapters each time
            self.broker.register(provider)
            self.registered[name] = provider

    def _unregister(self, name: str) -> None:
        provider = self.registered.pop(name)
        if self.broker.resolve(name, ADAPTER_VERSION) is provider:  # not someone else's since
            self.broker.unregister(name, ADAPTER_VERSION)

    def unregister_all(self) -> None:
        for name in list(self.registered):
            self._unregister(name)

    def info(self) -> McpServerInfo:
        connection = self.connection
        facts = connection.facts
        problem = connection.last_problem or self.last_failure
        return McpServerInfo(
            name=connection.name,
            state=_FAILED if self.failed else connection.state.value,
            server_name=facts.name if facts else "",
            server_version=facts.version if facts else "",
            protocol_version=facts.protocol_version if facts else "",
            tools=tuple(sorted(t.name for t in facts.tools)) if facts else (),
            capabilities=tuple(sorted(self.registered)),
            last_error=str(problem) if problem is not None else "",
        )

    def stats(self) -> McpServerStats:
        c, connection = self.counts, self.connection
        return McpServerStats(
            calls=c.calls,
            ok=c.ok,
            errors=c.errors,
            timeouts=c.timeouts,
            transport_errors=c.transport_errors,
            connects=self._earlier_connects + connection.connects,
            restarts=self._earlier_restarts + connection.restarts,
            dropped_lines=self._earlier_dropped + connection.dropped_lines,
        )


class McpManager:
    """A kernel's MCP servers (see the module notes). Made by :func:`open_mcp`, which owns
    the nursery its supervisor tasks run in.

    ``backoff_s`` is the first wait before reconnecting a server that dropped (or, for a
    configured server, trying again one that failed to start), doubled after each failed
    attempt up to ``max_backoff_s``.
    """

    def __init__(
        self,
        broker: ActionBroker,
        nursery: trio.Nursery,
        *,
        backoff_s: float = 0.1,
        max_backoff_s: float = 10.0,
    ) -> None:
        self._broker = broker
        self._nursery = nursery
        self._backoff_s = backoff_s
        self._max_backoff_s = max_backoff_s
        self._servers: dict[str, _Server] = {}
        self._invalid: dict[str, McpError] = {}  # configured, but no connection can come of
        self._closed = False

    def _check_name(self, name: str) -> None:
        if self._closed:
            raise McpError(TRANSPORT_ERROR, "the MCP manager is closed")
        if name in self._servers or name in self._invalid:
            raise McpError(TRANSPORT_ERROR, f"MCP server {name!r} is already added")

    def _start(self, settings: McpServerSettings, *, retry: bool) -> _Server:
        server = _Server(settings, self._broker, self._backoff_s, self._max_backoff_s, retry=retry)
        self._servers[settings.name] = server
        self._nursery.start_soon(server.run)
        return server

    async def add(self, settings: McpServerSettings) -> McpServerInfo:
        """Connect to a server and register its capabilities; what it told.

        Raises :class:`McpError` naming the server when it cannot be started or reached,
        writes what is not JSON-RPC, does not finish the handshake within ``timeout_s``,
        or speaks another protocol version than ``protocol_version`` (the server is not
        kept: the caller asked, the caller hears); a name already in use is refused too,
        and so is a server removed before it connected. Cancelling ``add`` stops the
        half-made connection.
        """
        self._check_name(settings.name)
        check_settings(settings)
        server = self._start(settings, retry=False)
        try:
            problem = await server.first_attempt()
        except BaseException:
            await self._drop(server)
            raise
        if problem is not None:
            await self._drop(server)
            raise problem
        _log.info("MCP server added", server=settings.name, tools=len(server.registered))
        return server.info()

    async def start(self, servers: Iterable[McpServerSettings]) -> None:
        """Start configured ``servers`` together and wait until each has connected or
        failed its first attempt (at most its ``timeout_s``, all at once, not one after
        another). Never raises for a server: one that fails is logged as an error naming
        it and why, shows as ``failed`` in :meth:`info` (with the error), and is tried
        again with backoff until it works or is removed; :meth:`reconnect` tries it now.
        Settings no connection can come of (an unsupported ``protocol_version``) are
        logged and shown as ``failed`` too, and not tried."""
        started: list[_Server] = []
        for settings in servers:
            try:
                self._check_name(settings.name)
                check_settings(settings)
            except McpError as error:
                if self._closed:
                    raise
                if settings.name not in self._servers and settings.name not in self._invalid:
                    self._invalid[settings.name] = error
                _log.error("MCP server not started", server=settings.name, reason=str(error))
                continue
            started.append(self._start(settings, retry=True))

        async def settle(server: _Server) -> None:
            try:
                problem = await server.first_attempt()
            except McpError:  # removed meanwhile
                return
            if problem is None:
                _log.info("MCP server added", server=server.name, tools=len(server.registered))

        async with trio.open_nursery() as nursery:
            for server in started:
                nursery.start_soon(settle, server)

    async def remove(self, name: str) -> bool:
        """Disconnect a server and unregister its capabilities (waits for its process to
        stop); False when there is no such server."""
        if self._invalid.pop(name, None) is not None:
            return True
        server = self._servers.get(name)
        if server is None:
            return False
        await self._drop(server)
        return True

    async def _drop(self, server: _Server) -> None:
        """Forget ``server`` (if its name is still its own: an ``add`` cancelled after a
        ``remove`` must not drop a server added since under the same name), stop it and
        unregister its capabilities."""
        if self._servers.get(server.name) is server:
            del self._servers[server.name]
        server.unregister_all()
        server.stop()
        with trio.CancelScope(shield=True):  # the process must not outlive its removal
            await server.finished.wait()
        server.unregister_all()

    async def reconnect(self, name: str) -> McpServerInfo:
        """Drop the server's connection and connect again now (a server that failed to
        start: try it now); what it told. Raises :class:`McpError` when that attempt fails
        (the supervisor keeps trying, with backoff, and its capabilities answer
        ``PROVIDER_UNAVAILABLE`` meanwhile)."""
        invalid = self._invalid.get(name)
        if invalid is not None:
            raise invalid
        server = self._server(name)
        problem = await server.next_attempt()
        if problem is not None:
            raise problem
        return server.info()

    async def wait_ready(self, name: str) -> McpServerInfo:
        """Wait until server ``name`` is connected (at once when it is); what it told."""
        server = self._server(name)
        await server.wait_ready()
        return server.info()

    def servers(self) -> list[str]:
        """The names of the servers (failed ones included), in order."""
        return sorted([*self._servers, *self._invalid])

    def info(self, name: str) -> McpServerInfo:
        """What server ``name`` told and where its connection is (``failed`` with
        ``last_error`` saying why, for a configured server that could not start);
        :class:`McpError` for a name not added."""
        invalid = self._invalid.get(name)
        if invalid is not None:
            return McpServerInfo(name=name, state=_FAILED, last_error=str(invalid))
        return self._server(name).info()

    def stats(self) -> McpStats:
        """The counts of every server (a snapshot)."""
        return McpStats({name: self._servers[name].stats() for name in sorted(self._servers)})

    def _server(self, name: str) -> _Server:
        server = self._servers.get(name)
        if server is None:
            raise McpError(TRANSPORT_ERROR, f"MCP server not found: {name!r}")
        return server

    def close(self) -> None:
        """Unregister every server's capabilities and stop its connection (the nursery
        waits for the processes to stop)."""
        self._closed = True
        for server in self._servers.values():
            server.unregister_all()
            server.stop()
        self._servers.clear()
        self._invalid.clear()


@asynccontextmanager
async def open_mcp(
    kernel: Kernel,
    servers: Iterable[McpServerSettings] = (),
    *,
    backoff_s: float = 0.1,
    max_backoff_s: float = 10.0,
) -> AsyncIterator[McpManager]:
    """Run an :class:`McpManager` on ``kernel``'s broker, with ``servers`` started first
    (together; see :meth:`McpManager.start`: one that fails is logged, shown as ``failed``
    by :meth:`McpManager.info` and tried again, and never stops the others or the block).
    On exit every server is removed and its process stopped.

    An exception from the block comes out as itself, not wrapped in the nursery's
    exception group, when it is the only one."""
    try:
        async with trio.open_nursery() as nursery:
            manager = McpManager(
                kernel.broker, nursery, backoff_s=backoff_s, max_backoff_s=max_backoff_s
            )
            try:
                await manager.start(servers)
                yield manager
            finally:
                manager.close()
    except BaseExceptionGroup as group:
        error: BaseException = group
        while isinstance(error, BaseExceptionGroup) and len(error.exceptions) == 1:
            error = error.exceptions[0]
        raise error from error.__cause__
