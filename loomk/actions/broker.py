"""The action broker: a registry of capability providers and the one way to invoke them.

``invoke`` never raises for a failed call; every outcome is an :class:`ActionResult`:

1. A call the wire could not carry is ``INVALID_PARAMS`` (see
   :func:`~loomk.actions.types.call_problem`). The envelope headers are filled (all seven
   keys of Loom's envelope) and ``correlation_id`` follows them.
2. A repeat of a call seen before is answered from a bounded cache (errors and timeouts
   too); a repeat of one still running waits for that one's result instead of running
   twice. A repeat is the *same call*, not just the same id (see
   :mod:`loomk.actions.repeats`): an id reused for a different call runs as a call of its
   own, so no caller is ever handed the outcome of another's call. A call without an id
   is never cached.
3. The capability resolves to ``name:version``, or for an empty version to the highest
   semantic version registered. No provider: ``PROVIDER_UNAVAILABLE`` (not cached, since
   a provider may register later).
4. The call waits for a slot if the capability has a concurrency limit, then runs under its
   timeout (``timeout_ms``, else the broker's default, 30 s); the wait counts toward it. A
   provider that raises gives ``CAPABILITY_ERROR`` with its message; one that overruns is
   cancelled and gives ``ACTION_TIMEOUT``. ``ACTION_RETRYABLE`` results are retried with
   exponential backoff and jitter while the deadline allows.

A kernel linked to others (a bridge client, a cluster link) sets an *upstream*
(:meth:`ActionBroker.set_upstream`): a call no local provider takes goes there instead of
failing, under the same timeout, retries and repeat rules; it is counted in
``stats().upstream``. One exception to the repeat rules: an upstream answer
``PROVIDER_UNAVAILABLE`` (the link is down, or no provider over there is) is not cached,
like a local call without a provider: the call did not run, and may well run once the link
is back; a retry with the same id runs again instead of getting the stale failure.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Coroutine, Iterator, Mapping
from dataclasses import dataclass, field, fields, replace
from typing import TYPE_CHECKING, Any, Protocol

import trio

from loomk._watchers import Watchers
from loomk._wire import text_problem
from loomk.actions.provider import CapabilityProvider
from loomk.actions.repeats import Repeats
from loomk.actions.types import (
    ActionCall,
    ActionResult,
    ActionStatus,
    CapabilityDescriptor,
    ErrorCode,
    call_problem,
    parse_version,
)
from loomk.errors import CapabilityError
from loomk.telemetry.logging import get_logger

if TYPE_CHECKING:
    from loomk.telemetry.tracing import Tracing
from loomk.telemetry.metrics import Histogram, HistogramSnapshot

__all__ = ["ActionBroker", "BrokerStats", "CapabilityStats", "Upstream"]

_log = get_logger("loomk.broker")
DEFAULT_TIMEOUT_S = 30.0


@dataclass(frozen=True, slots=True)
class CapabilityStats:
    """The counts of one capability (all versions) as :meth:`ActionBroker.stats` saw them:
    calls (cache hits included), their outcomes, retries, cache hits and latency."""

    calls: int = 0
    ok: int = 0
    errors: int = 0
    timeouts: int = 0
    retries: int = 0
    cached: int = 0
    latency_total_s: float = 0.0
    latency_max_s: float = 0.0
    latency: HistogramSnapshot = field(default_factory=lambda: Histogram().snapshot())
    """The spread of the latencies of the calls that ran (seconds)."""

    @property
    def latency_mean_s(self) -> float:
        """Mean latency of the calls that ran (not cache hits)."""
        ran = self.calls - self.cached
        return self.latency_total_s / ran if ran else 0.0


_NEVER_CALLED = CapabilityStats()


@dataclass(frozen=True, slots=True)
class BrokerStats:
    """The broker's counts as :meth:`ActionBroker.stats` saw them (a snapshot that later
    calls leave as it is).

    ``capabilities`` maps the name of each capability called (in name order) to its counts:
    the calls that found a provider or a cached result. ``unavailable`` counts the calls
    that found neither (counted apart, so made-up names do not grow the map). The map is
    the snapshot's own copy.
    """

    capabilities: Mapping[str, CapabilityStats] = field(default_factory=dict)
    unavailable: int = 0
    upstream: CapabilityStats = _NEVER_CALLED
    """The calls no local provider took that went to the upstream (all capabilities)."""

    def capability(self, name: str) -> CapabilityStats:
        """The counts of capability ``name``: all zero when it was never called."""
        return self.capabilities.get(name, _NEVER_CALLED)


@dataclass(slots=True)
class _CapabilityCounters:
    """The live counts of one capability (the fields of :class:`CapabilityStats`)."""

    calls: int = 0
    ok: int = 0
    errors: int = 0
    timeouts: int = 0
    retries: int = 0
    cached: int = 0
    latency_total_s: float = 0.0
    latency_max_s: float = 0.0
    latency: Histogram = field(default_factory=Histogram)

    def cache_hit(self) -> None:
        """Count a call answered with an earlier call's result."""
        self.calls += 1
        self.cached += 1

    def ran(self, result: ActionResult, elapsed: float) -> None:
        """Count how a call that ran for ``elapsed`` seconds ended."""
        self.latency_total_s += elapsed
        self.latency_max_s = max(self.latency_max_s, elapsed)
        self.latency.observe(elapsed)
        if result.status is ActionStatus.ACTION_OK:
            self.ok += 1
        elif result.status is ActionStatus.ACTION_TIMEOUT:
            self.timeouts += 1
        else:
            self.errors += 1

    def snapshot(self) -> CapabilityStats:
        """Every counter, by name, frozen (a counter without its field there fails here)."""
        counts = {f.name: getattr(self, f.name) for f in fields(self)}
        counts["latency"] = self.latency.snapshot()
        return CapabilityStats(**counts)


class Upstream(Protocol):
    """Where calls go that no local provider takes: another kernel, through a link."""

    async def invoke(self, call: ActionCall) -> ActionResult:
        """Run ``call`` elsewhere; a failure is an :class:`ActionResult`, like a provider's."""
        ...


class _Registration:
    __slots__ = ("descriptor", "limiter", "provider")

    def __init__(self, provider: CapabilityProvider, limiter: trio.CapacityLimiter | None) -> None:
        self.provider = provider
        self.descriptor = provider.descriptor
        self.limiter = limiter


class _UpstreamRegistration:
    __slots__ = ("limiter", "provider")

    def __init__(self, upstream: Upstream) -> None:
        self.provider = upstream
        self.limiter: trio.CapacityLimiter | None = None


class ActionBroker:
    """Registers providers by ``name:version`` and invokes them (see the module notes)."""

    def __init__(
        self,
        *,
        default_timeout_s: float = DEFAULT_TIMEOUT_S,
        cache_size: int = 1024,
        max_retries: int = 2,
        retry_backoff_s: float = 0.05,
    ) -> None:
        if not _is_number(default_timeout_s) or not default_timeout_s > 0:
            raise CapabilityError(f"default_timeout_s must be > 0, got {default_timeout_s!r}")
        for name, value in (("cache_size", cache_size), ("max_retries", max_retries)):
            if value.__class__ is not int or value < 0:
                raise CapabilityError(f"{name} must be an int >= 0, got {value!r}")
        if not _is_number(retry_backoff_s) or not 0 <= retry_backoff_s < math.inf:
            raise CapabilityError(
                f"retry_backoff_s must be a finite number >= 0, got {retry_backoff_s!r}"
            )
        self.default_timeout_s = default_timeout_s
        self.cache_size = cache_size
        self.max_retries = max_retries
        self.retry_backoff_s = retry_backoff_s
        self._registry: dict[str, _Registration] = {}  # name:version
        self._by_name: dict[str, list[_Registration]] = {}  # highest version first
        self._repeats = Repeats(cache_size)
        self._counters: dict[str, _CapabilityCounters] = {}
        self._unavailable = 0
        self._upstream: _UpstreamRegistration | None = None
        self._upstream_counters = _CapabilityCounters()
        self._watchers = Watchers()
        self._tracing: Tracing | None = None

    # ---- the registry -------------------------------------------------------------------

    def register(
        self, provider: CapabilityProvider, *, max_concurrency: int | None = None
    ) -> CapabilityDescriptor:
        """Add ``provider`` (replacing one with the same ``name:version``).

        ``max_concurrency`` bounds how many of its calls run at once; the others wait.
        """
        descriptor = getattr(provider, "descriptor", None)
        if not isinstance(descriptor, CapabilityDescriptor) or not callable(
            getattr(provider, "invoke", None)
        ):
            raise CapabilityError(
                f"a provider needs a CapabilityDescriptor and an async invoke(), got {provider!r}"
            )
        if max_concurrency is not None and (
            max_concurrency.__class__ is not int or max_concurrency < 1
        ):
            raise CapabilityError(f"max_concurrency must be an int >= 1, got {max_concurrency!r}")
        limiter = trio.CapacityLimiter(max_concurrency) if max_concurrency else None
        registration = _Registration(provider, limiter)
        self._remove(descriptor.key)
        self._registry[descriptor.key] = registration
        versions = self._by_name.setdefault(descriptor.name, [])
        versions.append(registration)
        versions.sort(key=lambda r: parse_version(r.descriptor.version), reverse=True)
        _log.debug("capability registered", capability=descriptor.key)
        self._watchers.notify()
        return descriptor

    def unregister(self, name: str, version: str | None = None) -> list[CapabilityDescriptor]:
        """Remove ``name:version``, or every version of ``name``; returns what went."""
        if version is not None:
            keys = [f"{name}:{version}"]
        else:
            keys = [r.descriptor.key for r in self._by_name.get(name, [])]
        return [d for d in (self._remove(key) for key in keys) if d is not None]

    def _remove(self, key: str) -> CapabilityDescriptor | None:
        registration = self._registry.pop(key, None)
        if registration is None:
            return None
        name = registration.descriptor.name
        versions = [r for r in self._by_name[name] if r is not registration]
        if versions:
            self._by_name[name] = versions
        else:
            del self._by_name[name]
        self._watchers.notify()
        return registration.descriptor

    def watch(self, watcher: Callable[[], None]) -> Callable[[], None]:
        """Call ``watcher()`` after every registration and removal (a link offering this
        kernel's capabilities elsewhere follows them so); returns the function that stops
        watching. The watcher must be quick and must not raise."""
        if not callable(watcher):
            raise CapabilityError(f"a broker watcher must be callable, got {watcher!r}")
        return self._watchers.add(watcher)

    def set_upstream(self, upstream: Upstream | None) -> None:
        """Send calls that no local provider takes to ``upstream`` (None: fail them with
        ``PROVIDER_UNAVAILABLE`` again). One upstream at a time; setting one replaces the
        previous."""
        if upstream is not None and not callable(getattr(upstream, "invoke", None)):
            raise CapabilityError(f"an upstream needs an async invoke(call), got {upstream!r}")
        self._upstream = _UpstreamRegistration(upstream) if upstream is not None else None

    @property
    def upstream(self) -> Upstream | None:
        """Where calls no local provider takes go, if anywhere."""
        return self._upstream.provider if self._upstream is not None else None

    def list_capabilities(self) -> list[CapabilityDescriptor]:
        """Every registered descriptor, by name then highest version first."""
        return [r.descriptor for name in sorted(self._by_name) for r in self._by_name[name]]

    def __iter__(self) -> Iterator[CapabilityDescriptor]:
        return iter(self.list_capabilities())

    def __len__(self) -> int:
        return len(self._registry)

    def __contains__(self, name: object) -> bool:
        return name in self._by_name or name in self._registry

    def resolve(self, name: str, version: str = "") -> CapabilityProvider | None:
        """The provider of ``name:version``, or of the highest version when ``version`` is
        empty; None when there is none."""
        registration = self._resolve(name, version)
        return registration.provider if registration is not None else None

    def _resolve(self, name: str, version: str) -> _Registration | None:
        if version:
            return self._registry.get(f"{name}:{version}")
        versions = self._by_name.get(name)
        return versions[0] if versions else None

    # ---- invoking -----------------------------------------------------------------------

    def _counters_of(self, capability: str) -> _CapabilityCounters:
        counters = self._counters.get(capability)
        if counters is None:
            counters = self._counters[capability] = _CapabilityCounters()
        return counters

    def _counters_of_repeat(self, call: ActionCall) -> _CapabilityCounters:
        """Where a repeat answered from the cache counts: its capability's counters, or the
        upstream's when it went there (resolved only when there is an upstream at all)."""
        if self._upstream is not None and self._resolve(call.capability, call.version) is None:
            return self._upstream_counters
        return self._counters_of(call.capability)

    def stats(self) -> BrokerStats:
        """The counts so far: per capability name, and of the calls that found no provider
        (a frozen snapshot; ``stats().capability(name)`` for one capability)."""
        return BrokerStats(
            capabilities={
                name: counters.snapshot() for name, counters in sorted(self._counters.items())
            },
            unavailable=self._unavailable,
            upstream=self._upstream_counters.snapshot(),
        )

    def trace_with(self, tracing: Tracing | None) -> None:
        """Record an ``invoke`` span per call with ``tracing`` (the kernel's, when its
        ``tracing`` setting is on); None stops it. See :mod:`loomk.telemetry.tracing`."""
        self._tracing = tracing

    def invoke(self, call: ActionCall) -> Coroutine[Any, Any, ActionResult]:
        """Run ``call`` through its provider; always an :class:`ActionResult` (see above).

        (A plain function returning the call's coroutine, so that tracing off costs a call
        one attribute check and no extra coroutine frame.)"""
        tracing = self._tracing
        if tracing is None:
            return self._invoke(call)
        return self._traced_invoke(call, tracing)

    async def _traced_invoke(self, call: ActionCall, tracing: Tracing) -> ActionResult:
        """:meth:`invoke` in an ``invoke`` span, with the outcome on it."""
        capability = getattr(call, "capability", "")  # an invalid call may have no str here
        version = getattr(call, "version", "")
        with tracing.invoking(
            capability if capability.__class__ is str else repr(capability),
            version if version.__class__ is str else "",
        ) as span:
            result = await self._invoke(call)
            error = result.error
            tracing.invoked(span, result.status.label, error.code if error else None)
        return result

    async def _invoke(self, call: ActionCall) -> ActionResult:
        problem = call_problem(call)
        if problem:
            call_id = getattr(call, "id", "")
            valid_id = call_id.__class__ is str and not text_problem(call_id)
            return ActionResult.failure(
                call_id if valid_id else "", ErrorCode.INVALID_PARAMS, problem
            )
        call = call.with_envelope()
        repeats = self._repeats
        cached = repeats.result_of(call)
        if cached is not None:
            self._counters_of_repeat(call).cache_hit()
            return cached
        running = repeats.running(call)
        if running is not None:  # the same call is running: share its outcome
            shared = await running.wait()
            if shared is None:  # the first caller was cancelled: run it now
                return await self._invoke(call)
            self._counters_of_repeat(call).cache_hit()
            return shared
        registration: _Registration | _UpstreamRegistration | None = self._resolve(
            call.capability, call.version
        )
        if registration is not None:
            counters = self._counters_of(call.capability)
        elif self._upstream is not None:  # counted together: names from afar are not ours
            registration, counters = self._upstream, self._upstream_counters
        else:  # counted apart: made-up names must not grow the stats
            self._unavailable += 1
            wanted = f"{call.capability}:{call.version}" if call.version else call.capability
            return ActionResult.failure(
                call.id, ErrorCode.PROVIDER_UNAVAILABLE, f"no provider for capability {wanted}"
            )
        counters.calls += 1
        flight = repeats.start(call)
        started = trio.current_time()
        timeout_s = call.timeout_ms / 1000 if call.timeout_ms > 0 else self.default_timeout_s
        try:
            with trio.CancelScope(deadline=started + timeout_s) as scope:
                result = await self._attempt(registration, call)
                if result.status is ActionStatus.ACTION_RETRYABLE:
                    result = await self._retry(registration, call, result)
            if scope.cancelled_caught:
                _log.warning(
                    "capability timed out", capability=call.capability, timeout_s=timeout_s
                )
                result = ActionResult.failure(
                    call.id,
                    ErrorCode.ACTION_TIMEOUT,
                    f"{call.capability} did not answer within {timeout_s:g} s",
                    status=ActionStatus.ACTION_TIMEOUT,
                )
        except BaseException:  # cancelled: a repeat waiting on this one runs on its own
            flight.abandon()
            raise
        finally:
            repeats.end(call, flight)
        counters.ran(result, trio.current_time() - started)
        if registration.__class__ is not _UpstreamRegistration or not _unavailable(result):
            repeats.keep(call, result)  # an unreachable upstream is transient: not kept
        flight.finish(result)
        return result

    async def _retry(
        self,
        registration: _Registration | _UpstreamRegistration,
        call: ActionCall,
        result: ActionResult,
    ) -> ActionResult:
        """Retry a call that answered ``ACTION_RETRYABLE``, with exponential backoff and
        jitter, up to ``max_retries`` times (the caller's cancel scope bounds it all)."""
        attempt = 0
        while result.status is ActionStatus.ACTION_RETRYABLE and attempt < self.max_retries:
            attempt += 1
            counters = (
                self._upstream_counters
                if isinstance(registration, _UpstreamRegistration)
                else self._counters[call.capability]
            )
            counters.retries += 1
            backoff = self.retry_backoff_s * 2 ** (attempt - 1)
            await trio.sleep(backoff * (0.5 + random.random()))
            result = await self._attempt(registration, call)
        return result

    async def _attempt(
        self, registration: _Registration | _UpstreamRegistration, call: ActionCall
    ) -> ActionResult:
        limiter = registration.limiter
        try:
            if limiter is None:
                result = await registration.provider.invoke(call)
            else:
                async with limiter:
                    result = await registration.provider.invoke(call)
        except Exception as error:  # the provider's failure is this call's, nobody else's
            _log.warning(
                "capability failed", capability=call.capability, error=repr(error), exc_info=error
            )
            return ActionResult.failure(
                call.id, ErrorCode.CAPABILITY_ERROR, str(error) or type(error).__name__
            )
        if not isinstance(result, ActionResult):
            return ActionResult.failure(
                call.id,
                ErrorCode.CAPABILITY_ERROR,
                f"provider returned {type(result).__name__}, not an ActionResult",
            )
        if result.id != call.id:
            result = replace(result, id=call.id)
        return result


def _unavailable(result: ActionResult) -> bool:
    """Whether ``result`` says no provider could be reached, so the call did not run: code
    ``PROVIDER_UNAVAILABLE``, or a peer's own code giving it as the reason (a bridge
    answers ``BROKER_ERROR`` with ``details["reason"]``, as Loom does)."""
    error = result.error
    if error is None:
        return False
    unavailable = ErrorCode.PROVIDER_UNAVAILABLE
    return error.code == unavailable or error.details.get("reason") == unavailable


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)
