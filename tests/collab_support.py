"""Helpers shared by the collaboration tests: responders, background calls, leak checks.

Responders come in two kinds, because both must work:

- :class:`Echo`, a real agent that answers with ``ctx.reply``;
- :func:`loom_responder`, a plain bus subscriber answering the way Loom's responders and bridge
  clients do: ``Envelope.from_event(request)``, attached to the reply, published on
  ``env.reply_topic()``.

Either can be held back by a ``trio.Event`` gate, so a test decides when each answer arrives.
Kernels come from :func:`loomk.testing.open_test_kernel`.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from functools import partial
from typing import Generic, TypeVar

import trio
import trio.testing

from loomk import Agent, Context, Envelope, Event, EventBus, Kernel

T = TypeVar("T")

settle = trio.testing.wait_all_tasks_blocked

SERVICE_PATTERNS = frozenset({"thread.*.reply", "thread.*.barrier"})
"""The collaboration service's two kernel-lifetime handler bindings (attached on first use)."""


# --- background calls ---------------------------------------------------------------------


class Pending(Generic[T]):
    """The outcome of a call running in the background, and the virtual time it ended."""

    def __init__(self) -> None:
        self.done = trio.Event()
        self.value: T | None = None
        self.error: Exception | None = None
        self.ended_at: float | None = None

    def result(self) -> T:
        """The value the call returned (fails the test if it raised or is still running)."""
        assert self.done.is_set(), "the call has not returned"
        assert self.error is None, f"the call raised {self.error!r}"
        assert self.value is not None
        return self.value


def start_call(nursery: trio.Nursery, call: Callable[[], Awaitable[T]]) -> Pending[T]:
    """Run ``call()`` in ``nursery``; the returned :class:`Pending` records how it ended."""
    pending: Pending[T] = Pending()

    async def run() -> None:
        try:
            pending.value = await call()
        except Exception as error:
            pending.error = error
        finally:
            pending.ended_at = trio.current_time()
            pending.done.set()

    nursery.start_soon(run)
    return pending


# --- responders ---------------------------------------------------------------------------


def loom_reply(request: Event, payload: bytes, sender: str | None = None) -> tuple[str, Event]:
    """A Loom-style answer to ``request`` and its topic: the request's envelope (with
    ``sender`` if given) attached to a ``collab.reply``, for ``env.reply_topic()``."""
    envelope = Envelope.from_event(request)
    if sender is not None:
        envelope.sender = sender
    reply = envelope.attach_to_event(Event("collab.reply", payload, source=sender or "loom"))
    return envelope.reply_topic(), reply


async def loom_responder(
    bus: EventBus,
    topic: str,
    *,
    sender: str | None = None,
    gate: trio.Event | None = None,
    times: int = 1,
    seen: list[Event] | None = None,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Answer each request on ``topic`` ``times`` times, Loom-style, with ``re:{payload}``.

    ``sender`` overrides the envelope's sender (else it stays the requester's, as in a Loom
    responder that does not set it); ``gate`` holds every answer until set; ``seen``
    collects the requests as they arrive.
    """
    async with bus.subscribe(topic) as subscription:
        task_status.started()
        async for _, request in subscription:
            if seen is not None:
                seen.append(request)
            if gate is not None:
                await gate.wait()
            for _ in range(times):
                reply_topic, reply = loom_reply(request, b"re:" + request.payload, sender)
                await bus.publish(reply_topic, reply)


async def start_responder(
    kernel: Kernel,
    topic: str,
    *,
    sender: str | None = None,
    gate: trio.Event | None = None,
    times: int = 1,
) -> list[Event]:
    """Start a :func:`loom_responder` on ``topic`` in the kernel; returns the requests it
    gets, as they arrive."""
    seen: list[Event] = []
    await kernel.start(
        partial(loom_responder, kernel.bus, topic, sender=sender, gate=gate, times=times, seen=seen)
    )
    return seen


class Echo(Agent):
    """An agent answering every event on its topics with ``ctx.reply``: a ``collab.reply``
    whose payload is ``{id}:{payload}``, after ``gate`` is set when there is one."""

    def __init__(self, agent_id: str, *topics: str, gate: trio.Event | None = None) -> None:
        super().__init__(agent_id)
        self.topics = topics  # type: ignore[misc]  # per-instance topics
        self.gate = gate
        self.seen: list[Event] = []

    async def on_event(self, ctx: Context, event: Event) -> None:
        self.seen.append(event)
        if self.gate is not None:
            await self.gate.wait()
        payload = f"{self.agent_id}:".encode() + event.payload
        await ctx.reply(event, Event("collab.reply", payload))


# --- observing the bus --------------------------------------------------------------------


def of_type(items: list[tuple[str, Event]], event_type: str) -> list[tuple[str, Event]]:
    """The captured ``(topic, event)`` items whose event has ``event_type``."""
    return [(topic, event) for topic, event in items if event.type == event_type]


# --- leak checks --------------------------------------------------------------------------


def subscriptions(kernel: Kernel) -> set[tuple[int, str]]:
    """The bus's live subscriptions as ``(id, pattern)``."""
    return {(stats.id, stats.pattern) for stats in kernel.bus.subscription_stats()}


def assert_nothing_left(kernel: Kernel, before: set[tuple[int, str]], *reply_topics: str) -> None:
    """No call is waiting, no subscription was added since ``before`` (but the service's two
    kernel-lifetime bindings, once each), and no reply topic is still in the table."""
    assert kernel.collab_service.waiting == 0
    added = sorted(pattern for _, pattern in subscriptions(kernel) - before)
    assert set(added) <= SERVICE_PATTERNS, added
    assert len(added) == len(set(added)), added
    topics = kernel.bus.topics()
    for topic in reply_topics:
        assert topic not in topics, topics
