"""OpenTelemetry spans of an event's path: publish -> deliver -> handle -> invoke.

Off by default (``tracing = false``). With ``tracing = true`` a kernel makes one
:class:`Tracing` at start (:func:`open_tracing`) and hands it to the places that record:

- ``publish``: an agent's ``ctx.emit`` (and ``ctx.reply``, which emits). It is started
  when the agent emits, as a child of the span current then (the ``handle`` span inside a
  handler), and it rides on a copy of the event as W3C ``traceparent``/``tracestate``
  metadata, with the time of the emit (:data:`PUBLISHED_NS`) and the topic
  (:data:`PUBLISHED_TOPIC`). Inside a handler the event is held until the handler's state
  commits (the transactional outbox), so the span ends at once (``loomk.held``) and the
  wait for the commit is part of ``deliver``; outside one it lasts the bus's ``publish``.
- ``deliver``: from the emit to the start of the receiving handler, a child of
  ``publish`` (one per receiving agent), ended when that handler starts.
- ``handle``: the handler's run, a child of ``deliver`` and the current span while the
  handler runs (an event with no trace of its own starts a new trace here). An
  exception is recorded on it and its status set to ``ERROR``; a handler cut short
  (cancelled) is no error.
- ``invoke``: a capability call through the broker, a child of the current span (so a
  ``ctx.invoke`` in a handler nests under ``handle``), with the capability and the result.

Why one object per kernel, not a module-wide switch: a process may run several kernels,
some traced and some not (the tests do), and each may have its own tracer provider. The
cost when off is nothing on the hot paths: the agent runtime picks a traced handler and a
traced context once per agent instance, and the broker checks one attribute per call.

This module never imports ``opentelemetry`` at import time: only :class:`Tracing` does,
when a kernel with ``tracing`` on starts, so ``import loomk`` stays fast and the package
stays optional (``pip install 'loomk[otel]'``).
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING, Protocol, TypeVar

from loomk.config import Config
from loomk.errors import ConfigError

if TYPE_CHECKING:  # the optional package, for annotations only
    from opentelemetry.context import Context as OtelContext
    from opentelemetry.trace import Span, TracerProvider
    from opentelemetry.util.types import AttributeValue

__all__ = [
    "PUBLISHED_NS",
    "PUBLISHED_TOPIC",
    "TRACEPARENT",
    "TRACER_NAME",
    "TRACESTATE",
    "TracedEvent",
    "Tracing",
    "open_tracing",
]

TRACER_NAME = "loomk"
"""The instrumentation scope of every loomk span (``get_tracer("loomk")``)."""

TRACEPARENT = "traceparent"
"""W3C Trace Context's header, as an event metadata key: the ``publish`` span."""

TRACESTATE = "tracestate"
"""W3C Trace Context's vendor state, as an event metadata key (when there is any)."""

PUBLISHED_NS = "loomk.published_ns"
"""Event metadata key: when the traced event was emitted, in epoch nanoseconds (the start
of its ``deliver`` spans)."""

PUBLISHED_TOPIC = "loomk.topic"
"""Event metadata key: the topic the traced event was emitted on (a handler is not told
the topic, its ``handle`` span is)."""

_INSTALL_HINT = "pip install 'loomk[otel]'"

R = TypeVar("R")
C = TypeVar("C")


class TracedEvent(Protocol):
    """What tracing reads of an event (a :class:`loomk.Event`; this layer sits below it)."""

    @property
    def id(self) -> str:
        """The event's id."""
        ...

    @property
    def type(self) -> str:
        """The event's type."""
        ...

    @property
    def metadata(self) -> Mapping[str, str]:
        """The event's metadata, where the trace context travels."""
        ...


E = TypeVar("E", bound=TracedEvent)


def open_tracing(config: Config, provider: TracerProvider | None = None) -> Tracing | None:
    """The kernel's :class:`Tracing` when ``config.tracing`` is on, else None.

    ``provider`` is the tracer provider to record through (the global one when None, as
    set with ``opentelemetry.trace.set_tracer_provider``); it is not used with tracing
    off. Raises :class:`~loomk.errors.ConfigError` naming the setting when OpenTelemetry
    is not installed, so a kernel that was asked to trace fails at start rather than
    running untraced.
    """
    if not config.tracing:
        return None
    try:
        return Tracing(provider)
    except ImportError as error:
        raise ConfigError(
            "tracing",
            f"is on, but OpenTelemetry is not installed ({error}): {_INSTALL_HINT}, "
            "or turn tracing off",
        ) from error


class Tracing:
    """The spans one kernel records, through one OpenTelemetry tracer.

    Made by :func:`open_tracing`; the agent runtime wraps each instance's handler with
    :meth:`handler` (or :meth:`batch_handler`) and its context's ``emit`` with
    :meth:`publishing`, and the broker wraps each call with :meth:`invoking`.
    """

    __slots__ = (
        "_error",
        "_extract",
        "_inject",
        "_link",
        "_root",
        "_span_of",
        "_status",
        "_tracer",
        "_with_span",
        "consumer",
        "producer",
    )

    def __init__(self, provider: TracerProvider | None = None) -> None:
        """Bind the OpenTelemetry API (imported here, never before: it is optional)."""
        from opentelemetry import trace
        from opentelemetry.context import Context as OtelContext
        from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

        # W3C Trace Context always, whatever the process's global propagator: the metadata
        # keys are part of the event format, not a choice of the embedding program
        propagator = TraceContextTextMapPropagator()
        self._tracer = trace.get_tracer(TRACER_NAME, tracer_provider=provider)
        self._inject = propagator.inject
        self._extract = propagator.extract
        self._with_span = trace.set_span_in_context
        # the parent of a handle span whose event carries no trace: none. Not the span
        # current in the agent's task, which may be one it inherited when it was spawned
        # (the handler of another agent that spawned it, a host program's span).
        self._root = OtelContext()
        self._span_of = trace.get_current_span
        self._link = trace.Link
        self._status = trace.Status
        self._error = trace.StatusCode.ERROR
        self.producer = trace.SpanKind.PRODUCER
        self.consumer = trace.SpanKind.CONSUMER

    # ---- publish --------------------------------------------------------------------------

    @contextmanager
    def publishing(
        self, topic: str, event: TracedEvent, *, sender: str, held: bool
    ) -> Iterator[dict[str, str]]:
        """The ``publish`` span of ``event`` emitted on ``topic`` by ``sender``, a child of
        the current span; yields the metadata entries that carry it (add them to a copy of
        the event and publish that inside the ``with``). An exception leaving the ``with``
        is recorded on the span."""
        now = time.time_ns()
        attributes: dict[str, AttributeValue] = {
            "messaging.system": "loomk",
            "messaging.operation.type": "publish",
            "messaging.destination.name": topic,
            "messaging.message.id": event.id,
            "loomk.event_type": event.type,
            "loomk.sender": sender,
            "loomk.held": held,
        }
        with self._tracer.start_as_current_span(
            "publish", kind=self.producer, attributes=attributes, start_time=now
        ) as span:
            entries: dict[str, str] = {}
            self._inject(entries, self._with_span(span))
            entries[PUBLISHED_NS] = str(now)
            entries[PUBLISHED_TOPIC] = topic
            yield entries

    # ---- deliver and handle ---------------------------------------------------------------

    def handler(
        self, agent_id: str, handler: Callable[[C, E], Awaitable[R]]
    ) -> Callable[[C, E], Awaitable[R]]:
        """``handler`` (an agent's ``on_event``) recording ``deliver`` and ``handle`` spans
        for each event it is given; wrapped once per agent instance."""

        async def traced(ctx: C, event: E) -> R:
            with self._handling(agent_id, event):
                return await handler(ctx, event)

        return traced

    def batch_handler(
        self, agent_id: str, handler: Callable[[C, list[E]], Awaitable[R]]
    ) -> Callable[[C, list[E]], Awaitable[R]]:
        """``handler`` (an agent's ``on_batch``) recording one ``handle`` span per batch,
        linked to a ``deliver`` span per traced event (a batch has no single parent)."""

        async def traced(ctx: C, events: list[E]) -> R:
            with self._handling_batch(agent_id, events):
                return await handler(ctx, events)

        return traced

    @contextmanager
    def _handling(self, agent_id: str, event: TracedEvent) -> Iterator[None]:
        metadata = event.metadata
        attributes = _receive_attributes(agent_id, metadata)
        attributes["messaging.message.id"] = event.id
        attributes["loomk.event_type"] = event.type
        parent = self._delivered(metadata, attributes)
        if parent is None:
            parent = self._root
        with self._tracer.start_as_current_span(
            "handle", context=parent, kind=self.consumer, attributes=attributes
        ):
            yield

    @contextmanager
    def _handling_batch(self, agent_id: str, events: Sequence[TracedEvent]) -> Iterator[None]:
        links = []
        for event in events:
            metadata = event.metadata
            attributes = _receive_attributes(agent_id, metadata)
            attributes["messaging.message.id"] = event.id
            attributes["loomk.event_type"] = event.type
            delivered = self._delivered(metadata, attributes)
            if delivered is not None:
                links.append(self._link(self._span_of(delivered).get_span_context()))
        attributes = {
            "messaging.system": "loomk",
            "messaging.operation.type": "process",
            "messaging.batch.message_count": len(events),
            "loomk.agent_id": agent_id,
        }
        with self._tracer.start_as_current_span(
            "handle", context=self._root, kind=self.consumer, attributes=attributes, links=links
        ):
            yield

    def _delivered(
        self, metadata: Mapping[str, str], attributes: dict[str, AttributeValue]
    ) -> OtelContext | None:
        """The context the ``handle`` span of an event with ``metadata`` goes in: its
        ``deliver`` span (made here, already ended) when the event carries its emit time,
        else the trace it carries; None when it carries none (``handle`` starts a trace)."""
        if TRACEPARENT not in metadata:
            return None
        carried = self._extract(metadata)
        published = _epoch_ns(metadata.get(PUBLISHED_NS))
        now = time.time_ns()
        if published is None or now - published > _STALE_NS:
            return carried  # an emit time that old is a forged or re-published stamp
        deliver = self._tracer.start_span(
            "deliver",
            context=carried,
            kind=self.consumer,
            attributes={**attributes, "messaging.operation.type": "receive"},
            start_time=min(published, now),  # another machine's clock may run ahead
        )
        deliver.end(end_time=now)
        return self._with_span(deliver, carried)

    # ---- invoke ---------------------------------------------------------------------------

    @contextmanager
    def invoking(self, capability: str, version: str) -> Iterator[Span]:
        """The ``invoke`` span of a call of ``capability`` (``version``, empty for the
        highest), a child of the current span; give the outcome with :meth:`invoked`."""
        attributes: dict[str, AttributeValue] = {"loomk.capability": capability}
        if version:
            attributes["loomk.capability.version"] = version
        with self._tracer.start_as_current_span("invoke", attributes=attributes) as span:
            yield span

    def invoked(self, span: Span, status: str, error_code: str | None) -> None:
        """Record a call's outcome on its ``invoke`` span: ``status`` (``ok``, ``error``,
        ``timeout``, ``retryable``) and the error's code; a call that failed is an error."""
        span.set_attribute("loomk.action.status", status)
        if error_code is not None:
            span.set_attribute("loomk.action.error_code", error_code)
        if status != "ok":
            span.set_status(self._status(self._error, error_code or status))


def _receive_attributes(agent_id: str, metadata: Mapping[str, str]) -> dict[str, AttributeValue]:
    """The attributes of a receiving agent's ``deliver``/``handle`` span of an event."""
    attributes: dict[str, AttributeValue] = {
        "messaging.system": "loomk",
        "messaging.operation.type": "process",
        "loomk.agent_id": agent_id,
    }
    topic = metadata.get(PUBLISHED_TOPIC)
    if topic is not None:
        attributes["messaging.destination.name"] = topic
    return attributes


_STALE_NS = 3600 * 10**9
"""An emit time more than an hour old makes no ``deliver`` span: the event was stored and
published again, or its stamp came from a client (a span from 1970 helps nobody)."""


def _epoch_ns(text: str | None) -> int | None:
    """``text`` as epoch nanoseconds, or None when absent or not a plain positive integer
    (metadata may come from anywhere: a bad value loses the ``deliver`` span, nothing else)."""
    if text is None or not text.isdigit() or not text.isascii():
        return None
    return int(text)
