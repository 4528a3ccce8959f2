"""Supervision: run an agent's instances one after another, as its restart policy allows.

Each agent is one task. It runs an instance (``on_start``, then the mailbox loop, then
``on_stop``); when the instance ends, the restart policy decides whether a fresh instance
takes over the same mailbox (after a backoff), or the agent is given up on:
``system.agent.failed`` is published and, for a ``critical`` agent, the services' critical-
failure hook stops the kernel. Every restart publishes ``system.agent.restarted``.

Cancellation: ``on_stop`` runs shielded but bounded by the agent's stop timeout, so a hanging
agent can delay a stop or a shutdown by at most twice its timeout and never blocks another
agent; :meth:`Supervisor.force` (a second signal) cuts every ``on_stop`` short at once.
"""

from __future__ import annotations

import functools
import json
import time
from collections.abc import Callable
from types import FrameType
from typing import TYPE_CHECKING, Any

import trio

from loomk.agents._commit import Transaction
from loomk.agents._deadlines import DeadlineKeeper
from loomk.agents._routing import event_handler
from loomk.agents._serve import BatchHandler, serve, serve_batches
from loomk.agents._tracing import TracedContext
from loomk.agents.agent import returned_a_value
from loomk.agents.context import Context
from loomk.agents.services import tracing_of
from loomk.agents.supervisor import RestartTracker
from loomk.errors import AgentFailed, AgentStartError
from loomk.events import Event
from loomk.telemetry.agent_context import bind_agent_context
from loomk.telemetry.logging import get_logger

if TYPE_CHECKING:
    from loomk.agents._record import AgentRecord
    from loomk.agents._subscriptions import AgentSubscriptions
    from loomk.agents.agent import Agent
    from loomk.agents.services import AgentServices

__all__ = ["FAILED_TOPIC", "RESTARTED_TOPIC", "Supervisor", "agent_on_stack"]

RESTARTED_TOPIC = "system.agent.restarted"
FAILED_TOPIC = "system.agent.failed"

_log = get_logger("loomk.runtime")


class Supervisor:
    """Runs agents' tasks: instances, restarts, giving up, and the end of each task."""

    def __init__(
        self,
        services: AgentServices,
        subscriptions: AgentSubscriptions,
        on_finished: Callable[[AgentRecord], None],
        keeper: DeadlineKeeper,
    ) -> None:
        self._services = services
        self._keeper = keeper
        self._subscriptions = subscriptions
        self._on_finished = on_finished  # the runtime forgets the agent
        self._forced = False
        self._on_stop_scopes: set[trio.CancelScope] = set()

    async def run(self, record: AgentRecord) -> None:
        """The agent's task, from its first ``on_start`` to its end."""
        record.task = trio.lowlevel.current_task()
        bind_agent_context(record)  # this task's log records carry the agent's context
        try:
            with record.scope:
                await self._supervise(record)
        finally:
            self._on_finished(record)
            record.mark_finished()

    def force(self) -> None:
        """Abandon graceful stopping: cut every running ``on_stop`` short, now and later."""
        self._forced = True
        for scope in list(self._on_stop_scopes):
            scope.cancel()

    async def _supervise(self, record: AgentRecord) -> None:
        policy = record.policy
        tracker: RestartTracker | None = None  # made at the first restart
        instance = record.agent
        while True:
            failure = await self._run_instance(record, instance)
            if record.start_error is not None:  # never started: spawn reports it, no restart
                record.status = "failed"
                return
            if record.stopping:
                return
            if not policy.restarts_after(failed=failure is not None):
                if failure is not None:
                    await self._give_up(record, failure)
                return
            if tracker is None:
                tracker = RestartTracker(policy)
            if not tracker.allow(trio.current_time()):
                await self._give_up(record, failure)
                return
            record.status = "restarting"
            with trio.CancelScope() as record.backoff:  # a stop cuts the backoff short
                await trio.sleep(tracker.backoff())
            record.backoff = None
            if record.stopping:
                return
            try:
                instance = instance.fresh()
            except Exception as error:  # the agent's constructor failed: nothing to restart
                record.failures += 1
                record.last_error = error
                await self._give_up(record, error)
                return
            record.agent = instance
            record.restarts += 1
            self._subscriptions.carry_over(record)
            await self._announce(RESTARTED_TOPIC, "agent.restarted", record, failure)

    async def _run_instance(self, record: AgentRecord, instance: Agent) -> Exception | None:
        """Run one instance until it stops; returns the exception that ended it, if any."""
        services = self._services
        transaction = Transaction(record.agent_id, services.state, services.bus.publish)
        transaction.settle = functools.partial(services.bus.settle, record.mailbox)
        tracing = tracing_of(services)  # chosen once per instance: nothing per event when off
        if tracing is None:
            ctx = Context(services, record, transaction, self._subscriptions)
        else:
            ctx = TracedContext(tracing, services, record, transaction, self._subscriptions)
        failure: Exception | None = None
        try:
            record.status = "starting"
            transaction.holding = True
            await self._start(record, instance, ctx)
            if transaction.dirty:
                await transaction.flush()
            transaction.holding = False
            await self._subscriptions.end_carried(record)
            record.status = "running"
            record.running_since = time.monotonic()
            record.has_started = True
            record.mark_started()
            if instance.handles_batches:
                on_batch: BatchHandler = instance.on_batch
                if tracing is not None:
                    on_batch = tracing.batch_handler(record.agent_id, on_batch)
                await serve_batches(record, on_batch, ctx, transaction, self._keeper)
            else:
                handler = event_handler(instance)
                if tracing is not None:
                    handler = tracing.handler(record.agent_id, handler)
                await serve(record, handler, ctx, transaction, self._keeper)
        except Exception as error:
            failure = error
            transaction.discard()  # the failed handler's writes and held events never happened
            record.failures += 1
            record.last_error = error
            if record.has_started:
                _log_failure("agent failed", record, error)
            else:
                record.start_error = _start_error(record, error)
                _log_failure("agent did not start", record, error)
        finally:
            await self._stop_instance(record, instance, ctx, transaction)
            transaction.holding = False  # a context kept past its instance publishes at once
        return failure

    @staticmethod
    async def _start(record: AgentRecord, instance: Agent, ctx: Context) -> None:
        """Run ``on_start``; the agent's first one within its start timeout."""
        if record.has_started:
            started: object = await instance.on_start(ctx)  # type: ignore[func-returns-value]
        else:
            with trio.move_on_after(record.start_timeout_s) as deadline:
                started = await instance.on_start(ctx)  # type: ignore[func-returns-value]
            if deadline.cancelled_caught:
                raise AgentStartError(
                    record.agent_id,
                    f"on_start did not return within {record.start_timeout_s:g} s "
                    "(agent_start_timeout_s, or spawn's start_timeout_s)",
                )
        if started is not None:
            raise returned_a_value(instance, "on_start", started)

    async def _stop_instance(
        self, record: AgentRecord, instance: Agent, ctx: Context, transaction: Transaction
    ) -> None:
        record.current_event = None  # on_stop (and a restart's on_start) handle no event
        with trio.CancelScope(shield=True) as scope:
            scope.deadline = trio.current_time() + record.stop_timeout_s
            if self._forced:
                scope.cancel()
            self._on_stop_scopes.add(scope)
            try:
                transaction.holding = True
                await self._commit_group(record, transaction)
                await instance.on_stop(ctx)
                if transaction.dirty:
                    await transaction.flush()
            except Exception as error:
                transaction.discard()
                _log_failure("on_stop failed", record, error)
            finally:
                self._on_stop_scopes.discard(scope)
        if scope.cancelled_caught:
            _log.warning("on_stop cut short", agent_id=record.agent_id, forced=self._forced)

    @staticmethod
    async def _commit_group(record: AgentRecord, transaction: Transaction) -> None:
        """Commit what the handlers that returned before a stop or a failure wrote."""
        transaction.discard()  # a handler cut short (cancelled) never returned: none of it counts
        try:
            record.handled += await transaction.commit_group()
        except Exception as error:  # e.g. the store failed: those handlers are lost
            lost = transaction.abandon()
            _log.error(
                "commit failed; handlers lost",
                agent_id=record.agent_id,
                handlers=lost,
                error=repr(error),
                exc_info=error,
            )

    async def _give_up(self, record: AgentRecord, failure: Exception | None) -> None:
        record.status = "failed"
        _log.error(
            "agent failed past its restart limit",
            agent_id=record.agent_id,
            restarts=record.restarts,
            error=repr(failure),
        )
        await self._announce(FAILED_TOPIC, "agent.failed", record, failure)
        if record.policy.critical:
            self._services.on_critical_failure(AgentFailed(record.agent_id, failure))

    async def _announce(
        self, topic: str, event_type: str, record: AgentRecord, error: BaseException | None
    ) -> None:
        details: dict[str, Any] = {
            "agent_id": record.agent_id,
            "restarts": record.restarts,
            "failures": record.failures,
            "error": repr(error) if error is not None else None,
        }
        event = Event(
            event_type,
            json.dumps(details).encode(),
            source="loomk.runtime",
            metadata={"agent_id": record.agent_id},
        )
        bus = self._services.bus
        if not bus.closed:
            await bus.publish(topic, event)


def _start_error(record: AgentRecord, error: Exception) -> AgentStartError:
    if isinstance(error, AgentStartError):
        return error
    start_error = AgentStartError(record.agent_id, f"on_start raised {error!r}", error)
    start_error.__cause__ = error  # the traceback from spawn shows what on_start raised
    return start_error


def _log_failure(message: str, record: AgentRecord, error: BaseException) -> None:
    """One line per failure; the traceback with an agent's first failure, later only at
    debug (a crash loop must not fill the console with the same traceback)."""
    if record.failures <= 1:
        _log.error(message, agent_id=record.agent_id, error=repr(error), exc_info=error)
        return
    _log.error(message, agent_id=record.agent_id, error=repr(error), failures=record.failures)
    _log.debug(message, agent_id=record.agent_id, exc_info=error)


def agent_on_stack(frame: FrameType | None) -> str | None:
    """The id of the agent whose task is running ``frame``, walking out from it; None when
    the frame is not in an agent's task (for the stall watchdog's report)."""
    code = Supervisor.run.__code__
    while frame is not None:
        if frame.f_code is code:
            record = frame.f_locals.get("record")
            agent_id = getattr(record, "agent_id", None)
            return agent_id if isinstance(agent_id, str) else None
        frame = frame.f_back
    return None
