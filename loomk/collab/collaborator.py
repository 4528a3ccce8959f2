"""Collaboration primitives over the bus: request/reply, fanout/fanin, barrier, contract-net.

The wire conventions are the ones Loom's collaboration code uses, so Loom responders and
bridge clients interoperate: a call has a thread, correlation is by ``correlation_id``,
answers go to the envelope's reply topic ``thread.{id}.reply``, contract-net talks on
``thread.{id}.broadcast``, and every control event is tagged ``collab``. What Loom
documented but never built is here too: the fanout strategies ``any``, ``first_k``,
``majority`` and ``all``, barriers, and the execute phase of contract-net.

Every call waits on the kernel's :class:`CollabService`, which hands it the answers as they
are published; nothing it registers outlives it, whether it ends by answer, timeout or
cancellation.

Arguments are checked before anything is registered or sent (:class:`CollabError`,
:class:`TopicError`, :class:`EventError`), and a call made once the kernel has shut down
raises :class:`KernelClosed` naming the call.
"""

from __future__ import annotations

import itertools
import math
import secrets
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Literal

import trio

from loomk._metakeys import DEADLINE_MS, SENDER, THREAD_ID, without_origin
from loomk._wire import INT64_MAX, short_repr, text_problem
from loomk.bus import EventBus
from loomk.bus.topics import is_wildcard, validate_topic
from loomk.collab.service import WHOLE_WINDOW, CollabService, Collector
from loomk.envelope import Envelope, thread_broadcast_topic, thread_reply_topic
from loomk.errors import CollabError, CollabTimeout, EventError, KernelClosed
from loomk.events import Event, now_ms

__all__ = [
    "CONTROL_TYPES",
    "Collaborator",
    "ContractNetResult",
    "Strategy",
    "collab_types",
    "score_of",
]

Strategy = Literal["any", "first_k", "majority", "all"]


class collab_types:
    """The control event types (Loom's ``collab_types`` plus ``collab.result``)."""

    REQUEST = "collab.request"
    REPLY = "collab.reply"
    CFP = "collab.cfp"
    PROPOSAL = "collab.proposal"
    AWARD = "collab.award"
    RESULT = "collab.result"
    BARRIER = "collab.barrier"
    TIMEOUT = "collab.timeout"
    SUMMARY = "collab.summary"


CONTROL_TYPES = frozenset(
    {
        collab_types.REQUEST,
        collab_types.CFP,
        collab_types.AWARD,
        collab_types.BARRIER,
        collab_types.TIMEOUT,
        collab_types.SUMMARY,
    }
)
"""Types a call never takes as an answer (its own requests and announcements)."""

_TAGS = ("collab",)
_NO_SUBJECT = object()


@dataclass(frozen=True, slots=True)
class ContractNetResult:
    """What a contract-net round produced."""

    thread_id: str
    proposals: list[Event]  # every correlated proposal, in arrival order
    winners: list[Event]  # the awarded proposals, best score first
    results: dict[str, Event] = field(default_factory=dict)  # awardee sender -> its result
    missing: list[str] = field(default_factory=list)  # awardees that reported no result

    @property
    def complete(self) -> bool:
        """Every awardee reported a result."""
        return not self.missing


_PROCESS = secrets.token_hex(6)  # unique per process; a counter makes ids unique within it
_SEQUENCE = itertools.count(1)


def _new_thread(prefix: str) -> str:
    """A new thread (or correlation) id, unique across processes and cheap to make."""
    return f"{prefix}_{_PROCESS}{next(_SEQUENCE):x}"


def _positive(name: str, value: float) -> None:
    if not isinstance(value, int | float) or isinstance(value, bool) or not value > 0:
        raise CollabError(
            f"{name} must be a number of seconds greater than 0 (math.inf waits for ever), "
            f"got {short_repr(value)}"
        )


def score_of(event: Event) -> float:
    """A proposal's ``score`` metadata as a float (missing or unparsable: 0.0, as Loom)."""
    try:
        score = float(event.metadata.get("score", "0"))
    except ValueError:
        return 0.0
    return score if score == score else 0.0  # NaN ranks as 0


class Collaborator:
    """Runs collaboration calls on ``bus`` as ``sender`` (``agent.{id}`` inside agents)."""

    def __init__(self, bus: EventBus, service: CollabService, sender: str) -> None:
        self._bus = bus
        self._service = service
        self.sender = sender

    def _check_running(self, call: str, subject: object = _NO_SUBJECT) -> None:
        """Refuse ``call`` on ``subject`` (named in the message) once the kernel has shut
        down; the message is built only then."""
        if self._bus.closed or self._service.closed:
            named = call if subject is _NO_SUBJECT else f"{call} {short_repr(subject)}"
            raise KernelClosed(f"cannot {named}: the kernel is not running (it has shut down)")

    # ---- building and sending ------------------------------------------------------------

    def _control(
        self,
        event_type: str,
        envelope: Envelope,
        *,
        priority: int,
        payload: bytes = b"",
        extra: dict[str, str] | None = None,
    ) -> Event:
        metadata = dict(extra or {})
        envelope.apply_to_metadata(metadata)
        return Event(
            event_type,
            payload,
            source=self.sender,
            metadata=metadata,
            tags=_TAGS,
            priority=priority,
        )

    def _outgoing(
        self,
        message: Event | bytes | str,
        envelope: Envelope,
        default_type: str,
        timeout_s: float,
    ) -> Event:
        """``message`` carrying ``envelope`` (an Event keeps its type, payload and metadata)
        and the deadline ``timeout_s`` from now, by which whoever handles it must be done."""
        deadline = _deadline_metadata(timeout_s)
        if isinstance(message, Event):
            # a forwarded event keeps its metadata, but not the link it came in through:
            # the call must go out through that link too
            metadata = without_origin(message.metadata)
            envelope.apply_to_metadata(metadata)
            metadata.update(deadline)
            return message.replace(metadata=metadata, source=message.source or self.sender)
        if isinstance(message, bytes | str):
            return self._control(
                default_type, envelope, priority=50, payload=_bytes(message), extra=deadline
            )
        raise EventError(
            f"a collaboration message is an Event, bytes or str, got {short_repr(message)}"
        )

    def _envelope(self, thread_id: str, correlation_id: str) -> Envelope:
        return Envelope(
            thread_id=thread_id,
            correlation_id=correlation_id,
            sender=self.sender,
            reply_to=thread_reply_topic(thread_id),
        )

    async def _collect(
        self,
        correlation_id: str,
        collector: Collector,
        sends: Sequence[tuple[str, Event]],
        timeout_s: float,
    ) -> bool:
        """Publish ``sends`` with ``collector`` listening; True if it got enough in time."""
        self._service.watch(correlation_id, collector)
        try:
            for topic, event in sends:
                await self._bus.publish(topic, event)
            return await self._service.wait(collector, timeout_s)
        finally:
            self._service.unwatch(correlation_id, collector)

    def _forget(self, topic: str) -> None:
        self._bus.forget_topic(topic)

    # ---- request / reply ----------------------------------------------------------------

    async def request(self, topic: str, message: Event | bytes | str, *, timeout_s: float) -> Event:
        """Publish ``message`` on ``topic`` and return the first correlated answer.

        Raises :class:`CollabTimeout` (after publishing ``collab.timeout`` on the reply
        topic) when none comes within ``timeout_s``. The request carries a new thread unless
        ``message`` has one, and always a new correlation id.
        """
        self._check_running("request on", topic)
        _positive("timeout_s", timeout_s)
        validate_topic(topic)
        _check_message(message)
        thread_id = _thread_of(message) or _new_thread("req")
        correlation_id = thread_id if not _thread_of(message) else _new_thread("req")
        envelope = self._envelope(thread_id, correlation_id)
        request = self._outgoing(message, envelope, collab_types.REQUEST, timeout_s)
        collector = Collector(1, _is_answer, self.sender)
        try:
            if await self._collect(correlation_id, collector, [(topic, request)], timeout_s):
                return collector.events[0]
            timeout = self._control(
                collab_types.TIMEOUT,
                envelope,
                priority=40,
                extra={"reason": "request_reply_timeout", "topic": topic},
            )
            await self._bus.publish(envelope.reply_to, timeout)
            raise CollabTimeout(f"no reply on {topic!r} within {timeout_s:g} s")
        finally:
            self._forget(envelope.reply_to)

    # ---- fanout / fanin -----------------------------------------------------------------

    async def fanout(
        self,
        topics: Sequence[str],
        message: Event | bytes | str,
        *,
        timeout_s: float,
        strategy: Strategy = "all",
        k: int | None = None,
    ) -> list[Event]:
        """Send ``message`` to every topic and gather correlated answers, in arrival order.

        ``strategy`` says when to stop waiting: ``any`` (the first answer), ``first_k`` (``k``
        answers), ``majority`` (``n // 2 + 1`` of ``n`` topics) or ``all`` (one per topic);
        otherwise the timeout ends it and what arrived is returned. One answer counts per
        responder; answers after the end are ignored. ``collab.summary`` is published on the
        reply topic either way.
        """
        self._check_running("fanout")
        topics = _topic_list(topics)
        if not topics:
            return []
        _positive("timeout_s", timeout_s)
        needed = _needed(strategy, k, len(topics))
        for topic in topics:
            validate_topic(topic)
        _check_message(message)
        thread_id = _thread_of(message) or _new_thread("fanout")
        correlation_id = thread_id if not _thread_of(message) else _new_thread("fanout")
        envelope = self._envelope(thread_id, correlation_id)
        request = self._outgoing(message, envelope, collab_types.REQUEST, timeout_s)
        collector = Collector(needed, _is_answer, self.sender)
        try:
            met = await self._collect(
                correlation_id, collector, [(topic, request) for topic in topics], timeout_s
            )
            summary = self._control(
                collab_types.SUMMARY,
                envelope,
                priority=40,
                extra={
                    "received": str(len(collector.events)),
                    "target_first_k": str(needed),
                    "strategy": strategy,
                    "targets": str(len(topics)),
                    "met": "true" if met else "false",
                },
            )
            await self._bus.publish(envelope.reply_to, summary)
            return list(collector.events)
        finally:
            self._forget(envelope.reply_to)

    # ---- barrier ------------------------------------------------------------------------

    async def barrier(
        self, name: str, n: int, *, timeout_s: float, participant: str | None = None
    ) -> list[str]:
        """Check in at barrier ``name`` and wait until ``n`` participants have; returns them
        in arrival order.

        Check-ins travel as ``collab.barrier`` events on ``thread.{name}.barrier``, so agents
        in other processes take part. A participant counts once per round; when the round is
        full it ends for everyone and the next check-in starts a new one. On timeout the
        participant withdraws, ``collab.timeout`` is published and :class:`CollabTimeout`
        raised.
        """
        self._check_running("check in at barrier", name)
        if not isinstance(n, int) or isinstance(n, bool) or n < 1:
            raise CollabError(f"a barrier needs n >= 1 participants, got {short_repr(n)}")
        _positive("timeout_s", timeout_s)
        topic = f"thread.{name}.barrier" if isinstance(name, str) else ""
        if not isinstance(name, str) or not name or "." in name:
            raise CollabError(
                f"a barrier name is one topic token (no dots), got {short_repr(name)}"
            )
        validate_topic(topic)
        who = participant or self.sender
        if not isinstance(who, str) or not who:
            raise CollabError(
                f"a barrier participant needs a name (a sender), got {short_repr(who)}"
            )
        problem = text_problem(who)
        if problem:
            raise CollabError(f"the barrier participant {short_repr(who)} {problem}")
        round_ = self._service.barrier_round(name)
        round_.waiters += 1
        envelope = self._envelope(name, name)
        check_in = self._control(
            collab_types.BARRIER,
            envelope,
            priority=50,
            extra={"barrier_n": str(n), "participant": who},
        )
        try:
            await self._bus.publish(topic, check_in)
            with trio.move_on_after(timeout_s):
                await round_.done.wait()
        finally:
            round_.waiters -= 1
            if not round_.done.is_set():  # timed out or cancelled: not checked in any more
                self._service.withdraw(name, round_, who)
        if round_.done.is_set():
            return list(round_.participants)
        timeout = self._control(
            collab_types.TIMEOUT,
            envelope,
            priority=40,
            extra={"reason": "barrier_timeout", "barrier_n": str(n), "participant": who},
        )
        await self._bus.publish(topic, timeout)
        raise CollabTimeout(
            f"barrier {name!r}: {len(round_.participants)} of {n} participants "
            f"within {timeout_s:g} s"
        )

    # ---- contract net -------------------------------------------------------------------

    async def contract_net(
        self,
        thread_id: str,
        cfp: Event | bytes | str,
        *,
        window_s: float,
        max_awards: int = 1,
        execute_timeout_s: float = 30.0,
    ) -> ContractNetResult:
        """Call for proposals on ``thread.{id}.broadcast``, award the best, collect results.

        Proposals (``collab.proposal``, correlated with the thread) are gathered for the
        whole window and ranked by their ``score`` metadata, best first (ties keep arrival
        order). Each of the best ``max_awards`` gets a ``collab.award`` (its metadata plus
        ``award_to``); awardees then report a ``collab.result`` on the reply topic, collected
        until all have or ``execute_timeout_s`` passes. ``collab.summary`` ends the round.
        """
        self._check_running("run contract-net round", thread_id)
        _positive("window_s", window_s)
        _positive("execute_timeout_s", execute_timeout_s)
        if not isinstance(max_awards, int) or isinstance(max_awards, bool) or max_awards < 1:
            raise CollabError(f"max_awards must be greater than 0, got {max_awards!r}")
        if not isinstance(thread_id, str) or not thread_id or "." in thread_id:
            raise CollabError(
                f"a thread id is one topic token (no dots), got {short_repr(thread_id)}"
            )
        broadcast = thread_broadcast_topic(thread_id)
        validate_topic(broadcast)
        _check_message(cfp, own_thread=False)  # the round's thread replaces the cfp's
        envelope = self._envelope(thread_id, thread_id)
        call = self._outgoing(cfp, envelope, collab_types.CFP, window_s)
        if isinstance(cfp, Event):
            call = call.replace(type=collab_types.CFP)
        proposals = Collector(WHOLE_WINDOW, _of_type(collab_types.PROPOSAL), self.sender)
        try:
            await self._collect(thread_id, proposals, [(broadcast, call)], window_s)
            ranked = sorted(proposals.events, key=score_of, reverse=True)  # stable
            winners = ranked[:max_awards]
            awardees = [w.metadata.get(SENDER, "") for w in winners]
            results = Collector(len(winners), _result_from(set(awardees)), self.sender)
            awards = [
                (broadcast, self._award(winner, envelope, execute_timeout_s)) for winner in winners
            ]
            if winners:
                await self._collect(thread_id, results, awards, execute_timeout_s)
            reported = {e.metadata.get(SENDER, ""): e for e in results.events}
            summary = self._control(
                collab_types.SUMMARY,
                envelope,
                priority=40,
                extra={
                    "winners": str(len(winners)),
                    "max_awards": str(max_awards),
                    "proposals": str(len(proposals.events)),
                    "results": str(len(reported)),
                },
            )
            await self._bus.publish(broadcast, summary)
        finally:
            self._forget(envelope.reply_to)
        return ContractNetResult(
            thread_id,
            proposals.events,
            winners,
            reported,
            [a for a in awardees if a not in reported],
        )

    def _award(self, winner: Event, envelope: Envelope, execute_timeout_s: float) -> Event:
        # the proposal's metadata, but not the link it came in through: the award goes back
        # out through that link (it would be kept here as an echo otherwise)
        metadata = without_origin(winner.metadata)
        metadata["award_to"] = winner.metadata.get(SENDER, "")
        metadata.update(_deadline_metadata(execute_timeout_s))
        return self._control(collab_types.AWARD, envelope, priority=60, extra=metadata)


def _deadline_metadata(timeout_s: float) -> dict[str, str]:
    """``deadline_ms`` for a call waiting ``timeout_s`` from now; none for one that waits
    for ever (an infinite timeout) or past what the wire's int64 can say."""
    if not math.isfinite(timeout_s):
        return {}
    deadline = now_ms() + math.ceil(timeout_s * 1000)
    return {DEADLINE_MS: str(deadline)} if deadline <= INT64_MAX else {}


def _bytes(message: bytes | str) -> bytes:
    return message if isinstance(message, bytes) else message.encode()


def _check_message(message: object, *, own_thread: bool = True) -> None:
    """Refuse a message no call could send: not an Event, bytes or str; text that UTF-8
    cannot encode; with ``own_thread``, an Event whose ``thread_id`` (which the call then
    keeps) is not one topic token, so its replies would go where no call listens."""
    if isinstance(message, Event):
        if not own_thread:
            return
        thread_id = message.metadata.get(THREAD_ID, "")
        if thread_id and ("." in thread_id or is_wildcard(thread_id)):
            raise CollabError(
                f"the message's thread_id is one topic token (no dots or wildcards), "
                f"got {short_repr(thread_id)}"
            )
        if thread_id:
            validate_topic(thread_reply_topic(thread_id))
    elif isinstance(message, str):
        if not message.isascii():
            try:
                message.encode()
            except UnicodeEncodeError as error:
                raise CollabError(
                    f"a str message must be valid text: it holds a lone surrogate "
                    f"{message[error.start]!r} at index {error.start}, which UTF-8 cannot "
                    "encode; decode bytes with errors='replace', or send bytes"
                ) from error
    elif not isinstance(message, bytes):
        raise EventError(
            f"a collaboration message is an Event, bytes or str, got {short_repr(message)}"
        )


def _topic_list(topics: object) -> list[str]:
    """``topics`` as a list, refusing a single topic or something that is no collection."""
    if isinstance(topics, str | bytes) or not isinstance(topics, Iterable):
        raise CollabError(
            f"fanout takes a list of topics, got {short_repr(topics)} "
            "(for one topic, pass [topic] or use request)"
        )
    return list(topics)


def _thread_of(message: Event | bytes | str) -> str:
    if isinstance(message, Event):
        return message.metadata.get("thread_id", "")
    return ""


def _is_answer(event: Event) -> bool:
    return event.type not in CONTROL_TYPES


def _of_type(event_type: str) -> Callable[[Event], bool]:
    return lambda event: event.type == event_type


def _result_from(awardees: set[str]) -> Callable[[Event], bool]:
    return lambda event: (
        event.type == collab_types.RESULT and event.metadata.get(SENDER, "") in awardees
    )


def _needed(strategy: str, k: int | None, targets: int) -> int:
    if strategy == "any":
        return 1
    if strategy == "all":
        return targets
    if strategy == "majority":
        return targets // 2 + 1
    if strategy == "first_k":
        if not isinstance(k, int) or isinstance(k, bool) or k < 1:
            raise CollabError(f"first_k needs k greater than 0, got {k!r}")
        return k
    raise CollabError(f"unknown fanout strategy {strategy!r} (any, first_k, majority or all)")
