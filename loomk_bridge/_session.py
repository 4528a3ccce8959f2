"""One open EventStream, seen from the kernel's trio side.

The session is the remote agent's presence in the kernel while its stream is open: its
topics are bound to a mailbox on the bus (real subscriptions, with the bus's lossless
``block`` policy for the batched lane, like Loom's bridge), what arrives there goes out as
``delivery`` frames (or ``delivery_batch`` frames for clients that asked), what the client
publishes goes onto the bus, and capability calls the kernel routes to the agent go out as
``action_call`` frames and come back as ``action_result``.

A bad frame gets an ``err`` frame and the stream goes on; so does a publish the agent's
``bridge_acl`` rules do not allow (``PERMISSION_DENIED``, audited) or whose payload is over
``bridge_max_payload_bytes`` (``PAYLOAD_TOO_LARGE``): the event is not published.

The session ends when the client ends its side, when it vanishes (grpclib cancels the
handler, which cancels this task), when a second stream of the same agent replaces it, when
the agent misses its heartbeats, when it reads nothing of what is queued for half as long
(``SLOW_CONSUMER``: deliveries are lossless, so a client that stops reading would otherwise
stall every publisher of its topics), or when the server closes; calls still waiting for the
agent then fail at once with ``PROVIDER_UNAVAILABLE`` rather than hang until their timeout.
"""

from __future__ import annotations

from collections.abc import Callable, Collection
from dataclasses import dataclass, field, fields
from typing import Any

import trio

from loomk import ActionResult, ErrorCode, Event, EventError, TopicError
from loomk.bus import EMPTY, Binding, EventBus, Mailbox
from loomk.events import now_ms
from loomk.links import ORIGIN_KEY
from loomk.telemetry.logging import get_logger
from loomk_bridge._acl import AgentPolicy
from loomk_bridge._loom_keys import SDK_SENDER, SENDER, from_loom_sdk, to_loom_sdk
from loomk_bridge._outbox import Outbox
from loomk_bridge._proto import bridge_pb2
from loomk_bridge.codec import call_to_proto, event_from_proto, event_to_proto, result_from_proto

__all__ = ["BATCH_MAX", "SessionCounters", "StreamSession"]

_log = get_logger("loomk.bridge")

BATCH_MAX = 256
"""Deliveries in one ``delivery_batch`` frame (or handed to the writer in one crossing)."""


@dataclass
class SessionCounters:
    """What one stream has carried (summed into the server's stats)."""

    received: int = 0  # events published by the client
    delivered: int = 0  # events sent to the client
    errors: int = 0  # err frames sent
    calls: int = 0  # action calls pushed to the client
    too_large: int = 0  # events refused for their payload's size

    def add(self, other: SessionCounters) -> None:
        """Add ``other``'s counts to these."""
        for counter in fields(self):
            name = counter.name
            setattr(self, name, getattr(self, name) + getattr(other, name))


@dataclass
class _Pending:
    done: trio.Event = field(default_factory=trio.Event)
    result: ActionResult | None = None


class StreamSession:
    """The trio side of one agent's EventStream (see the module)."""

    def __init__(
        self,
        agent_id: str,
        *,
        bus: EventBus,
        outbox: Outbox,
        topics: tuple[str, ...],
        batches: bool,
        origin: str,
        slow_consumer_s: float,
        policy: AgentPolicy,
        max_payload_bytes: int,
        loom_sdk_keys: bool = False,
        senders: Callable[[], Collection[str]] | None = None,
    ) -> None:
        self.agent_id = agent_id
        self.counters = SessionCounters()
        self.last_seen = trio.current_time()
        self.ended = trio.Event()
        self.client_ended = False  # the client closed its side (rather than vanished)
        self._bus = bus
        self._outbox = outbox
        self._batches = batches
        self._origin = origin
        self._slow_consumer_s = slow_consumer_s
        self._policy = policy
        self._max_payload_bytes = max_payload_bytes
        self._open = policy.rules.everything  # no ACL: nothing to check per event
        self._senders = senders  # under an ACL: who an event may say it is from
        self._loom_sdk_keys = loom_sdk_keys  # translate loom-py's envelope keys both ways
        self._mailbox = Mailbox()
        self._bindings: dict[str, Binding] = {}
        for pattern in topics:  # bound now, so nothing published from here on is missed
            self.subscribe(pattern)
        self._pending: dict[str, _Pending] = {}
        self._scope = trio.CancelScope()
        self._end_code = ""
        self._end_message = ""

    # ---- life --------------------------------------------------------------------------

    async def run(self, inbound: trio.MemoryReceiveChannel[Any]) -> None:
        """Serve the stream until it ends (see the module); cleans up however it ends."""
        try:
            with self._scope:
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(self._forward)
                    await self._receive(inbound)
                    self.client_ended = True
                    nursery.cancel_scope.cancel()  # the client ended its side
        finally:
            self.close()

    @property
    def end_code(self) -> str:
        """Why the server ended the stream ("" when the client ended it or vanished)."""
        return self._end_code

    def end(self, code: str, message: str) -> None:
        """Stop the session, telling the client why in an ``err`` frame (idempotent)."""
        if not self._end_code:
            self._end_code, self._end_message = code, message
        self._scope.cancel()

    def close(self) -> None:
        """Release everything: subscriptions, waiting calls, the stream (idempotent)."""
        if self.ended.is_set():
            return
        for binding in self._bindings.values():
            self._bus.detach(binding)
        self._bindings.clear()
        self._mailbox.discard()
        for call_id, pending in self._pending.items():
            pending.result = _disconnected(call_id, self.agent_id)
            pending.done.set()
        self._pending.clear()
        final = [_error_frame(self._end_code, self._end_message)] if self._end_code else []
        self._outbox.close(final)
        self.ended.set()

    # ---- subscriptions -----------------------------------------------------------------

    def subscribe(self, pattern: str) -> None:
        """Deliver events on ``pattern`` to the client (idempotent)."""
        if pattern not in self._bindings:
            self._bindings[pattern] = self._bus.bind(self._mailbox, pattern)

    def unsubscribe(self, pattern: str) -> None:
        binding = self._bindings.pop(pattern, None)
        if binding is not None:
            self._bus.detach(binding)

    @property
    def topics(self) -> list[str]:
        return list(self._bindings)

    # ---- kernel -> client --------------------------------------------------------------

    async def _forward(self) -> None:
        mailbox, origin, counters = self._mailbox, self._origin, self.counters
        loom_sdk_keys, batches = self._loom_sdk_keys, self._batches
        take, delivery = mailbox.take_nowait, bridge_pb2.Delivery
        while True:
            item = take()
            if item is EMPTY:
                mailbox.prune()
                await mailbox.wait()
                continue
            deliveries = []
            while True:
                route, event = item  # type: ignore[misc]
                if not origin or event.metadata.get(ORIGIN_KEY) != origin:
                    message = event_to_proto(event)
                    if loom_sdk_keys:
                        to_loom_sdk(message)
                    deliveries.append(delivery(topic=route.topic, event=message))
                if len(deliveries) == BATCH_MAX:
                    break
                item = take()
                if item is EMPTY:
                    break
            if not deliveries:
                continue
            if batches:
                frames: list[Any] = [
                    bridge_pb2.ServerEvent(
                        delivery_batch=bridge_pb2.DeliveryBatch(deliveries=deliveries)
                    )
                ]
            else:
                frames = [bridge_pb2.ServerEvent(delivery=d) for d in deliveries]
            with trio.move_on_after(self._slow_consumer_s) as waiting:
                if await self._outbox.put(frames):
                    counters.delivered += len(deliveries)
            if waiting.cancelled_caught:  # it stalls the publishers of its topics: cut it
                self.end(
                    "SLOW_CONSUMER",
                    f"agent {self.agent_id!r} read none of its queued frames for "
                    f"{self._slow_consumer_s:g} s",
                )
                return
            await trio.lowlevel.checkpoint()

    async def call(self, call: Any) -> ActionResult:
        """Push ``call`` (a loomk ActionCall) to the client and wait for its result; the
        broker's timeout bounds the wait."""
        if self.ended.is_set():
            return _disconnected(call.id, self.agent_id)
        # One call per id at a time: the broker shares a running call with a repeat of it.
        pending = self._pending[call.id] = _Pending()
        self.counters.calls += 1
        try:
            frame = bridge_pb2.ServerEvent(action_call=call_to_proto(call))
            if not await self._outbox.put([frame]):  # the stream closed while it waited
                return _disconnected(call.id, self.agent_id)
            await pending.done.wait()
        finally:
            self._pending.pop(call.id, None)
        assert pending.result is not None
        return pending.result

    # ---- client -> kernel --------------------------------------------------------------

    async def _receive(self, inbound: trio.MemoryReceiveChannel[Any]) -> None:
        with inbound:  # closed on the way out, so the reader stops feeding it
            async for frame in inbound:
                self.last_seen = trio.current_time()
                kind = frame.WhichOneof("msg")
                if kind == "publish":
                    await self._publish(frame.publish)
                elif kind == "publish_batch":
                    await self._publish_batch(frame.publish_batch.publishes)
                elif kind == "ping":
                    pong = bridge_pb2.HeartbeatResponse(timestamp_ms=now_ms(), status="ok")
                    await self._outbox.put([bridge_pb2.ServerEvent(pong=pong)])
                elif kind == "action_result":
                    self._resolve(frame.action_result)
                elif kind != "ack":  # acknowledgements carry nothing the kernel needs
                    await self._refuse(
                        "UNKNOWN_MESSAGE",
                        "a client frame with no known case was ignored (this server knows "
                        "publish, ack, ping, action_result and publish_batch)",
                    )

    async def _publish_batch(self, publishes: Any) -> None:
        """Each publish of a batch frame, in order. Without an ACL, an event that decodes
        and fits goes straight to the bus (the per-event cost is what a batch's throughput
        is made of); anything else takes :meth:`_publish`, which refuses it with the
        reason."""
        # (loom-py knows no batch frames: no keys to translate here)
        if not self._open or self._senders is not None:  # rules or senders to check
            for publish in publishes:
                await self._publish(publish)
            return
        bus_publish, limit, published = self._bus.publish, self._max_payload_bytes, 0
        try:
            for publish in publishes:
                if publish.HasField("event"):
                    try:
                        event = event_from_proto(publish.event)
                        if len(event.payload) <= limit:
                            await bus_publish(publish.topic, event)
                            published += 1
                            continue
                    except (EventError, TopicError):
                        pass  # refused below, with the reason
                await self._publish(publish)
        finally:
            self.counters.received += published

    async def _publish(self, publish: Any) -> None:
        topic = publish.topic
        if not publish.HasField("event"):
            await self._refuse("MISSING_EVENT", f"a publish to {topic!r} carried no event")
            return
        if not self._open and not self._policy.rules.may_publish(topic):
            await self._refuse("PERMISSION_DENIED", self._policy.deny("publish", topic))
            return
        try:
            if self._loom_sdk_keys:
                from_loom_sdk(publish.event)
            event = event_from_proto(publish.event)
        except EventError as error:
            await self._refuse("INVALID_EVENT", f"publish to {topic!r}: {error}")
            return
        if self._senders is not None:
            event = self._own_sender(event, self._senders)
        if len(event.payload) > self._max_payload_bytes:
            self.counters.too_large += 1
            await self._refuse(
                "PAYLOAD_TOO_LARGE",
                f"publish to {topic!r}: a payload of {len(event.payload)} bytes is over this "
                f"bridge's limit of {self._max_payload_bytes} bytes (bridge_max_payload_bytes)",
            )
            return
        try:
            await self._bus.publish(topic, event)
        except TopicError as error:
            await self._refuse("INVALID_TOPIC", str(error))
            return
        self.counters.received += 1

    def _own_sender(self, event: Event, senders: Callable[[], Collection[str]]) -> Event:
        """``event``, its sender made this stream's agent unless it names one the stream
        may speak for (``senders``: under an ACL, where who says what matters:
        collaboration trusts the sender of bids, awards and answers)."""
        metadata = event.metadata
        sender, loom_sender = metadata.get(SENDER), metadata.get(SDK_SENDER)
        if not sender and not loom_sender:
            return event  # it says nothing of who sent it: nothing to ask
        allowed = senders()
        own = {}
        if sender and sender.removeprefix("agent.") not in allowed:
            own[SENDER] = f"agent.{self.agent_id}"
        if loom_sender and loom_sender.removeprefix("agent.") not in allowed:
            own[SDK_SENDER] = self.agent_id
        if not own:
            return event
        _log.info("event sender set to its stream's agent", agent=self.agent_id, claimed=sender)
        return event.with_metadata(**own)

    def _resolve(self, message: Any) -> None:
        pending = self._pending.get(message.id)
        if pending is None or pending.done.is_set():
            _log.debug("result for no waiting call", agent=self.agent_id, call_id=message.id)
            return
        pending.result = result_from_proto(message)  # never raises: odd statuses are errors
        pending.done.set()

    async def _refuse(self, code: str, message: str) -> None:
        self.counters.errors += 1
        _log.info("bridge frame refused", agent=self.agent_id, code=code, reason=message)
        await self._outbox.put([_error_frame(code, message)])


def _disconnected(call_id: str, agent_id: str) -> ActionResult:
    return ActionResult.failure(
        call_id,
        ErrorCode.PROVIDER_UNAVAILABLE,
        f"remote agent {agent_id!r} disconnected before answering",
    )


def _error_frame(code: str, message: str) -> Any:
    return bridge_pb2.ServerEvent(err=bridge_pb2.Error(code=code, message=message))
