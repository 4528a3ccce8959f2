"""The kernel: one root nursery that owns the bus and every task, and its ordered shutdown.

``open_kernel`` embeds a kernel in a running trio program; ``run`` starts trio, runs
``main(kernel)`` and shuts down when ``main`` returns or on Ctrl+C / SIGTERM.

Tasks live in three nested layers, so shutdown is ordered by construction:

    core    (bus, state writer)      <- closed last
      agents  (the agent runtime)
        edges   (bridges, servers, user background tasks, ``main``)   <- cancelled first

Shutdown cancels the edges, then stops the agents (they drain, bounded by
``shutdown_timeout_s``), then closes the store and the bus.

Edges (:mod:`loomk.edges`) are entered in the edge layer once the agents layer is up and
before ``main`` runs, in order; they are left, cancelled, before the agents stop. Which ones
run is decided before anything starts (``edges=`` given, else those announced by entry
points whose settings are present), so a wanted edge that cannot be imported fails
``open_kernel`` at once; one that fails to open fails it with
:class:`~loomk.errors.EdgeError` after an orderly shutdown; one that fails later stops the
kernel with its error.

The store opens, and locks ``data_dir``, before anything runs: a directory another kernel
holds is :class:`~loomk.errors.DataDirInUse` and a damaged one
:class:`~loomk.errors.StoreError`, raised by ``open_kernel``/``run`` before ``main`` starts.
A store fault met later stops the kernel with that error (``state_fault = "stop"``, the
default) or fails only the handler that met it (``"agent"``).
"""

from __future__ import annotations

import signal
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping
from contextlib import AsyncExitStack, asynccontextmanager
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, TypeVar

import trio

from loomk.actions.broker import ActionBroker
from loomk.actions.directory import CapabilityDirectory
from loomk.actions.providers import LLMGenerateProvider, builtin_providers
from loomk.agents import Agent, AgentDefaults, AgentHandle, AgentRuntime, agent_on_stack
from loomk.agents.runtime import SPAWN_OPTIONS, SUBSCRIBE_OPTIONS, check_options
from loomk.bus import EventBus
from loomk.collab import Collaborator, CollabService
from loomk.config import Config, ConfigSource, parse_log_levels
from loomk.edges import Edge, discover_edges, wanted_edges
from loomk.errors import AgentError, AgentFailed, EdgeError, EdgeNotFound, KernelClosed, StoreError
from loomk.events import QoS
from loomk.kernel_metrics import KernelMetrics
from loomk.llm import LocalModel, ModelRouter, ModelService
from loomk.state import StoreStats
from loomk.state.service import AgentState, StateService
from loomk.telemetry.logging import config_secrets, configure_logging, get_logger
from loomk.telemetry.metrics import MetricsRegistry
from loomk.telemetry.tracing import Tracing, open_tracing
from loomk.telemetry.watchdog import StallWatchdog

if TYPE_CHECKING:  # the HTTP client is imported only when an endpoint is configured
    from opentelemetry.trace import TracerProvider

    from loomk.llm.client import LLMClient

__all__ = ["Kernel", "open_kernel", "run"]

T = TypeVar("T")
_log = get_logger("loomk.kernel")


class Kernel:
    """A running loomk kernel: its configuration, its event bus and its task layers.

    It is the composition root: it builds the services (bus, state, broker, models,
    collaboration) and runs agents on them, implementing
    :class:`~loomk.agents.AgentServices` for the agents layer.
    """

    def __init__(self, config: Config) -> None:
        self._made_at = time.monotonic()
        self.config = config
        self.agent_defaults = AgentDefaults(
            stop_timeout_s=config.shutdown_timeout_s,
            start_timeout_s=config.agent_start_timeout_s,
            action_timeout_s=config.action_timeout_s,
            memory_max_items=config.memory_max_items,
            memory_max_bytes=config.memory_max_bytes,
        )
        self.bus = EventBus(
            capacities={
                QoS.REALTIME: config.bus_realtime_capacity,
                QoS.BATCHED: config.bus_batched_capacity,
                QoS.BACKGROUND: config.bus_background_capacity,
            },
            max_topics=config.bus_max_topics,
        )
        self.state = StateService(config, on_fault=self._on_state_fault)
        self.broker = ActionBroker(default_timeout_s=config.action_timeout_s)
        if config.builtin_capabilities:
            for provider in builtin_providers():
                self.broker.register(provider)
        self.collab_service = CollabService(self.bus)
        # Models: the local one always (offline default of llm.generate and the router's
        # confidence estimator); the cloud client joins in open_kernel when configured.
        self.local_model = LocalModel(broker=self.broker)
        self.router = ModelRouter(self.local_model, cloud_available=bool(config.llm_base_url))
        self.models = ModelService(self.router, self.local_model.generate, None)
        self.llm: LLMClient | None = None
        if not config.llm_base_url:
            self.broker.register(LLMGenerateProvider(self.local_model.generate))
        self.capabilities = CapabilityDirectory(self.broker)
        self.tracing: Tracing | None = None
        """The spans this kernel records (``tracing`` on), set while it runs; the agents
        read it once per instance (:func:`loomk.agents.services.tracing_of`)."""
        self.agents = AgentRuntime(self)
        self.watchdog: StallWatchdog | None = None
        if config.stall_warning_ms:
            self.watchdog = StallWatchdog(config.stall_warning_ms, locate=agent_on_stack)
        self.directory = self.agents.directory
        self.metrics = MetricsRegistry()
        """The kernel's metrics, read when asked (``render_prometheus()``); edges add theirs."""
        self.metrics.register(
            "kernel",
            KernelMetrics(
                bus=self.bus,
                agents=self.agents,
                broker=self.broker,
                router=self.router,
                collab=self.collab_service,
                store_stats=self._store_stats,
                uptime_s=lambda: self.uptime_s,
                watchdog=self.watchdog,
            ),
        )
        self._edge_nursery: trio.Nursery | None = None
        self._edge_values: dict[str, object] = {}
        self._graceful = trio.CancelScope()
        self._body_scope = trio.CancelScope()
        self._stopping = False
        self._closed = False
        self._error: BaseException | None = None

    @property
    def uptime_s(self) -> float:
        """Seconds since the kernel was made (monotonic clock)."""
        return time.monotonic() - self._made_at

    def _store_stats(self) -> StoreStats | None:
        """The store's counts, None while it is not open."""
        return self.state.store.stats() if self.state.opened else None

    @property
    def name(self) -> str:
        """The kernel's configured name."""
        return self.config.name

    @property
    def closed(self) -> bool:
        """True once the kernel has shut down."""
        return self._closed

    @property
    def stopping(self) -> bool:
        """True once shutdown was requested."""
        return self._stopping

    def start_soon(
        self, fn: Callable[..., Awaitable[Any]], *args: Any, name: str | None = None
    ) -> None:
        """Run a background task in the edge layer; it is cancelled first at shutdown."""
        if self._edge_nursery is None or self._stopping:
            raise KernelClosed("cannot start a task: the kernel is not running")
        self._edge_nursery.start_soon(fn, *args, name=name)

    async def start(
        self, fn: Callable[..., Awaitable[Any]], *args: Any, name: str | None = None
    ) -> Any:
        """Like :meth:`start_soon`, but wait for ``task_status.started(value)`` and return it."""
        if self._edge_nursery is None or self._stopping:
            raise KernelClosed("cannot start a task: the kernel is not running")
        return await self._edge_nursery.start(fn, *args, name=name)

    # ---- edges (see loomk.edges) ----------------------------------------------------------

    def edge(self, name: str) -> object:
        """What the open edge ``name`` yielded (the bridge's server, ...);
        :class:`~loomk.errors.EdgeNotFound` if no edge of that name is open."""
        try:
            return self._edge_values[name]
        except KeyError:
            open_ = ", ".join(sorted(self._edge_values)) or "none"
            raise EdgeNotFound(name, f"no edge of this name is open (open: {open_})") from None

    @property
    def edges(self) -> Mapping[str, object]:
        """The open edges by name, each to what its context yielded (a read-only view)."""
        return MappingProxyType(self._edge_values)

    @property
    def mcp(self) -> Any:
        """The running :class:`~loomk.mcp.manager.McpManager` (the ``mcp`` edge, opened when
        ``mcp_servers`` is set): add, remove and reconnect MCP servers from code. Typed
        ``Any`` because the kernel never imports its edges (nor the ``mcp`` extra);
        :class:`~loomk.errors.EdgeNotFound` when no manager is open. See docs/mcp.md."""
        try:
            return self._edge_values["mcp"]
        except KeyError:
            raise EdgeNotFound(
                "mcp",
                "no MCP manager is open: set mcp_servers (in loomk.toml, [[mcp.servers]]), "
                "or open one with `async with loomk.mcp.open_mcp(kernel) as mcp:`",
            ) from None

    async def _open_edges(self, edges: Iterable[Edge[Kernel]], stack: AsyncExitStack) -> None:
        """Enter each edge's context on ``stack``, in order; one that fails to open is an
        :class:`~loomk.errors.EdgeError` naming it (the ones opened before are left as
        the stack unwinds)."""
        for edge in edges:
            stack.callback(self._edge_values.pop, edge.name, None)  # runs after it closed
            try:
                value = await stack.enter_async_context(edge.open(self))
            except EdgeError:
                raise
            except Exception as error:
                raise EdgeError(edge.name, f"failed to open: {error!r}", error) from error
            self._edge_values[edge.name] = value
            _log.info("edge open", kernel=self.name, edge=edge.name)

    def _attach_llm(self, client: LLMClient) -> None:
        """Answer ``llm.generate`` and cloud-routed questions with the configured endpoint."""
        self.llm = client
        from loomk.llm.client import client_generate

        generate = client_generate(client)
        self.models.cloud = generate
        self.broker.register(LLMGenerateProvider(generate))

    def collaborator(self, sender: str = "kernel") -> Collaborator:
        """Collaboration calls (request, fanout, barrier, contract-net) made as ``sender``;
        agents use the same calls on their context."""
        return Collaborator(self.bus, self.collab_service, sender)

    def _on_state_fault(self, error: StoreError) -> None:
        """The store failed while running: with ``state_fault="stop"`` the kernel stops and
        ``run``/``open_kernel`` raise ``error`` (an environment fault is not a handler's bug
        that restarting agents would cure); with ``"agent"`` only the caller sees it."""
        if self.config.state_fault != "stop":
            return
        if self._error is None:
            _log.error("state store failed; stopping the kernel", error=str(error))
        self.stop(error)

    def on_critical_failure(self, error: AgentFailed) -> None:
        """A ``critical`` agent gave up: shut down, and make ``run``/``open_kernel`` raise
        ``error``."""
        self.stop(error)

    # ---- agents (see loomk.agents) -----------------------------------------------------------

    async def spawn(self, agent: Agent, **supervision: Any) -> AgentHandle:
        """Start a supervised agent; see :meth:`AgentRuntime.spawn` for the options."""
        check_options("spawn", supervision, SPAWN_OPTIONS)
        return await self.agents.spawn(agent, **supervision)

    async def spawn_many(self, agents: Iterable[Agent], **supervision: Any) -> list[AgentHandle]:
        """Start many agents at once, checked before any starts (faster than one by one)."""
        return await self.agents.spawn_many(agents, **supervision)

    async def stop_agent(self, agent_id: str, timeout_s: float | None = None) -> None:
        """Stop an agent gracefully (drain, ``on_stop``), cancelling it past the timeout."""
        await self.agents.stop(agent_id, timeout_s)

    async def subscribe_agent(self, agent_id: str, pattern: str, **options: Any) -> None:
        """Subscribe a running agent to ``pattern`` (options: qos, event_types, overflow,
        capacity)."""
        check_options("subscribe_agent", options, SUBSCRIBE_OPTIONS)
        await self.agents.subscribe(agent_id, pattern, **options)

    async def unsubscribe_agent(self, agent_id: str, pattern: str) -> None:
        """Unsubscribe a running agent from ``pattern``."""
        await self.agents.unsubscribe(agent_id, pattern)

    def subscriptions(self, agent_id: str) -> list[str]:
        """The patterns an agent is subscribed to."""
        return self.agents.subscriptions(agent_id)

    # ---- state (see loomk.state) ----------------------------------------------------------

    async def forget_agent(self, agent_id: str) -> int:
        """Delete everything stored for an agent that is not running (right to erasure).

        Returns how many keys were deleted. Stop the agent first: a running agent would
        write its state back.
        """
        if agent_id in self.agents:
            raise AgentError(f"Agent {agent_id} is running: stop it before forgetting it")
        return await self.state.forget(agent_id)

    def agent_state(self, agent_id: str) -> AgentState:
        """The committed state of an agent as ``loom.v1.AgentState`` (running or not)."""
        ephemeral, metadata = b"[]", None
        if agent_id in self.agents:
            ephemeral = self.agents.get(agent_id).memory.as_json()
            info = self.directory.get(agent_id)
            metadata = dict(info.metadata) if info is not None else None
        return self.state.snapshot(agent_id, ephemeral, metadata)

    # ---- lifecycle ----------------------------------------------------------------------

    def stop(self, error: BaseException | None = None) -> None:
        """Request a graceful shutdown; safe to call from any task, any number of times.

        With ``error``, the kernel shuts down and ``open_kernel``/``run`` raise it.
        """
        if error is not None and self._error is None:
            self._error = error
        if not self._stopping:
            self._stopping = True
            _log.info("kernel stopping", kernel=self.name, error=repr(error) if error else None)
        self._body_scope.cancel()

    async def _watch_signals(
        self, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> None:
        """First SIGINT/SIGTERM: graceful stop. A second one: stop waiting for anything."""
        with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
            task_status.started()
            async for signum in signals:
                if not self._stopping:
                    _log.info("signal received, shutting down", signal=signal.Signals(signum).name)
                    self.stop()
                else:
                    _log.warning("second signal, forcing shutdown")
                    self._graceful.cancel()
                    self.agents.force()
                    raise _ForcedShutdown


class _ForcedShutdown(Exception):
    """Raised by the signal watcher to abandon a graceful shutdown."""


@asynccontextmanager
async def open_kernel(
    config: Config | None = None,
    *,
    edges: Iterable[Edge[Kernel]] | None = None,
    tracer_provider: TracerProvider | None = None,
    **settings: Any,
) -> AsyncIterator[Kernel]:
    """Run a kernel for the duration of the ``async with`` body.

    Settings come from keyword arguments, ``loomk.toml`` and ``LOOMK_*`` variables (see
    :class:`loomk.Config`), or pass a ready ``config``. Leaving the body shuts the kernel
    down in order; ``kernel.stop()`` ends the body early (it is cancelled, not failed).

    ``edges`` are the edges the kernel may run (each runs if it is ``wanted``); None means
    those announced by installed packages (:func:`loomk.edges.discover_edges`).

    ``tracer_provider`` is the OpenTelemetry provider the kernel records spans through when
    the ``tracing`` setting is on (None: the global one); see docs/tracing.md.
    """
    if config is None:
        config = Config.load(**settings)
    elif settings:
        config = config.replace(**settings)
    configure_logging(
        config.log_level,
        config.log_format,
        levels=parse_log_levels(config.log_levels),
        mask_fields=config.log_mask_fields.split(","),
        secrets=config_secrets(config),
    )
    chosen = wanted_edges(discover_edges() if edges is None else edges, config)
    tracing = open_tracing(config, tracer_provider)  # fails fast without loomk[otel]
    kernel = Kernel(config)
    kernel.tracing = tracing
    kernel.broker.trace_with(tracing)
    _open_state(kernel)
    try:
        async with AsyncExitStack() as resources, trio.open_nursery() as core:
            if config.llm_base_url:  # closed after the agents stopped (the stack unwinds last)
                from loomk.llm.client import LLMClient, LLMSettings

                client = LLMClient(LLMSettings.from_config(config))
                kernel._attach_llm(await resources.enter_async_context(client))
            kernel.state.attach(core)
            await core.start(kernel.collab_service.run)
            if kernel.watchdog is not None:
                await core.start(kernel.watchdog.run)
            if config.handle_signals:
                await core.start(kernel._watch_signals)
            try:
                async with trio.open_nursery() as agents:
                    kernel.agents.attach(agents)
                    try:
                        async with _edge_layer(kernel, chosen):
                            yield kernel
                    finally:
                        # shielded from outside cancellation; a second signal cancels
                        # ``_graceful`` itself to stop waiting for the agents
                        with trio.CancelScope(shield=True), kernel._graceful:
                            await kernel.agents.shutdown(config.shutdown_timeout_s)
                        agents.cancel_scope.cancel()
            finally:
                with trio.CancelScope(shield=True):  # what agents committed reaches the disk
                    await kernel.state.aclose()
                kernel.collab_service.close()
                kernel.bus.close()
                kernel._closed = True
                core.cancel_scope.cancel()
    except BaseExceptionGroup as group:
        error = _unwrap(group)
        raise error from error.__cause__  # hide the group, keep the error's own cause
    finally:
        kernel.state.close_now()  # if the kernel failed before closing its state
        kernel.broker.trace_with(None)  # a broker kept past its kernel records no more
        kernel.tracing = None
    _log.info("kernel stopped", kernel=config.name)
    if kernel._error is not None:
        raise kernel._error


@asynccontextmanager
async def _edge_layer(kernel: Kernel, edges: list[Edge[Kernel]]) -> AsyncIterator[None]:
    """The edge layer: a nursery for background tasks and ``main``, and the edges' contexts
    inside it; on the way out the whole layer is cancelled, then the edges are left."""
    async with trio.open_nursery() as nursery, AsyncExitStack() as opened:
        kernel._edge_nursery = nursery
        try:
            await kernel._open_edges(edges, opened)
            with kernel._body_scope:
                yield
        finally:
            kernel._stopping = True
            nursery.cancel_scope.cancel()


def _open_state(kernel: Kernel) -> None:
    """Open the store before anything runs, so a held or damaged data directory fails here,
    naming itself; then make the kernel's config say where the state really is (the
    temporary directory of ``state_temporary``, a relative ``data_dir`` made absolute)."""
    kernel.state.open()
    config, data_dir = kernel.config, kernel.state.data_dir
    if data_dir != config.data_dir:
        source = config.source("data_dir")
        if config.state_temporary:
            source = ConfigSource("kernel", "state_temporary")
        kernel.config = config.replace_from(source, data_dir=data_dir)


def _unwrap(group: BaseExceptionGroup[BaseException]) -> BaseException:
    """The one exception inside nested single-member groups, else the group itself."""
    error: BaseException = group
    while isinstance(error, BaseExceptionGroup) and len(error.exceptions) == 1:
        error = error.exceptions[0]
    if isinstance(error, BaseExceptionGroup):
        forced = error.subgroup(_ForcedShutdown)
        rest = error.subgroup(lambda e: not isinstance(e, _ForcedShutdown | trio.Cancelled))
        if forced is not None and rest is None:
            return _ForcedShutdown()
    return error


def run(
    main: Callable[[Kernel], Awaitable[T]],
    *,
    config: Config | None = None,
    edges: Iterable[Edge[Kernel]] | None = None,
    **settings: Any,
) -> T | None:
    """Run ``main(kernel)`` in a fresh kernel and return its result.

    Starts trio, so call it from synchronous code. Ctrl+C or SIGTERM stops the kernel
    gracefully (a second one forces it) and ``run`` returns None without a traceback.
    ``edges`` as for :func:`open_kernel`.
    """
    settings.setdefault("handle_signals", True)

    async def entry() -> T | None:
        result: T | None = None
        async with open_kernel(config, edges=edges, **settings) as kernel:
            result = await main(kernel)
        return result

    try:
        return trio.run(entry)
    except (KeyboardInterrupt, _ForcedShutdown):
        return None
