"""The MCP client: a kernel's MCP servers, their tools registered as broker capabilities.

:func:`open_mcp` runs an :class:`McpManager` on a kernel's broker for the length of an
``async with``; the manager owns a nursery with one supervisor task per server (see
:mod:`loomk.mcp._connection`). ``await add(settings)`` connects a server and registers its
capabilities (``server:tool``, plus resources and prompts when the server has them) or
raises :class:`~loomk.mcp.errors.McpError` naming the server and saying why; the kernel and
the other servers carry on either way. ``remove(name)`` disconnects and unregisters (Loom
left the capabilities registered); ``reconnect(name)`` connects again now.

While a server is down (its process died, its transport dropped) its capabilities **stay
registered** and answer ``PROVIDER_UNAVAILABLE`` until the supervisor has it back: the set
of tools a model is offered does not flicker with every restart, and a caller learns why the
call failed. Each reconnection re-lists the tools and brings the registrations in line (new
tools registered, gone ones unregistered), as a ``notifications/tools/list_changed`` does.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable, Mapping
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


@dataclass(frozen=True, slots=True)
class McpServerInfo:
    """One server as the manager sees it: ``state`` (connecting, ready, down, stopped),
    what its handshake said (empty before the first), its tools and the capabilities
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
    """A connection and the broker registrations that follow it."""

    def __init__(
        self,
        settings: McpServerSettings,
        broker: ActionBroker,
        backoff_s: float,
        max_backoff_s: float,
    ) -> None:
        self.broker = broker
        self.counts = _Counts()
        self.registered: dict[str, CapabilityProvider] = {}
        self.finished = trio.Event()
        self.connection = McpConnection(
            settings, self.sync, backoff_s=backoff_s, max_backoff_s=max_backoff_s
        )

    async def run(self) -> None:
        try:
            await self.connection.run()
        finally:
            self.finished.set()

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
        problem = connection.last_problem
        return McpServerInfo(
            name=connection.name,
            state=connection.state.value,
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
            connects=connection.connects,
            restarts=connection.restarts,
            dropped_lines=connection.dropped_lines,
        )


class McpManager:
    """A kernel's MCP servers (see the module notes). Made by :func:`open_mcp`, which owns
    the nursery its supervisor tasks run in.

    ``backoff_s`` is the first wait before reconnecting a server that dropped, doubled
    after each failed attempt up to ``max_backoff_s``.
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
        self._closed = False

    async def add(self, settings: McpServerSettings) -> McpServerInfo:
        """Connect to a server and register its capabilities; what it told.

        Raises :class:`McpError` naming the server when it cannot be started or reached,
        writes what is not JSON-RPC, does not finish the handshake within ``timeout_s``,
        or speaks another protocol version than ``protocol_version``; a name already in
        use is refused too. Cancelling ``add`` stops the half-made connection.
        """
        if self._closed:
            raise McpError(TRANSPORT_ERROR, "the MCP manager is closed")
        if settings.name in self._servers:
            raise McpError(TRANSPORT_ERROR, f"MCP server {settings.name!r} is already added")
        check_settings(settings)
        server = _Server(settings, self._broker, self._backoff_s, self._max_backoff_s)
        self._servers[settings.name] = server
        try:
            self._nursery.start_soon(server.run)
            problem = await server.connection.wait_attempt(0)
        except BaseException:
            await self._drop(settings.name)
            raise
        if problem is not None:
            await self._drop(settings.name)
            raise problem
        _log.info("MCP server added", server=settings.name, tools=len(server.registered))
        return server.info()

    async def remove(self, name: str) -> bool:
        """Disconnect a server and unregister its capabilities (waits for its process to
        stop); False when there is no such server."""
        if name not in self._servers:
            return False
        await self._drop(name)
        return True

    async def _drop(self, name: str) -> None:
        server = self._servers.pop(name)
        server.unregister_all()
        server.connection.stop()
        with trio.CancelScope(shield=True):  # the process must not outlive its removal
            await server.finished.wait()
        server.unregister_all()

    async def reconnect(self, name: str) -> McpServerInfo:
        """Drop the server's connection and connect again now; what it told. Raises
        :class:`McpError` when that attempt fails (the supervisor keeps trying, with
        backoff, and its capabilities answer ``PROVIDER_UNAVAILABLE`` meanwhile)."""
        server = self._server(name)
        connection = server.connection
        before = connection.attempts_done
        connection.restart()
        problem = await connection.wait_attempt(before)
        if problem is not None:
            raise problem
        return server.info()

    async def wait_ready(self, name: str) -> McpServerInfo:
        """Wait until server ``name`` is connected (at once when it is); what it told."""
        server = self._server(name)
        await server.connection.wait_ready()
        return server.info()

    def servers(self) -> list[str]:
        """The names of the servers, in order."""
        return sorted(self._servers)

    def info(self, name: str) -> McpServerInfo:
        """What server ``name`` told and where its connection is; :class:`McpError` for a
        name not added."""
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
            server.connection.stop()
        self._servers.clear()


@asynccontextmanager
async def open_mcp(
    kernel: Kernel,
    servers: Iterable[McpServerSettings] = (),
    *,
    backoff_s: float = 0.1,
    max_backoff_s: float = 10.0,
) -> AsyncIterator[McpManager]:
    """Run an :class:`McpManager` on ``kernel``'s broker, with ``servers`` added first (the
    first that fails raises its :class:`McpError`, and the ones added before are closed).
    On exit every server is removed and its process stopped.

    An exception from the block (or from adding) comes out as itself, not wrapped in the
    nursery's exception group, when it is the only one."""
    try:
        async with trio.open_nursery() as nursery:
            manager = McpManager(
                kernel.broker, nursery, backoff_s=backoff_s, max_backoff_s=max_backoff_s
            )
            try:
                for settings in servers:
                    await manager.add(settings)
                yield manager
            finally:
                manager.close()
    except BaseExceptionGroup as group:
        error: BaseException = group
        while isinstance(error, BaseExceptionGroup) and len(error.exceptions) == 1:
            error = error.exceptions[0]
        raise error from error.__cause__
