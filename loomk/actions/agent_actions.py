"""How an agent's capability calls look on the wire and to observers, as Loom's agents show them.

An agent calls ``ctx.invoke``; the call gets a fresh envelope (thread and correlation = the
call id, sender ``agent.{id}``) and a QoS from its priority, and its outcome is published as
an ``action_result`` event on ``agent.{id}`` for dashboards and tests. A missing capability
is an ``ACTION_ERROR`` result (``PROVIDER_UNAVAILABLE``), never the end of the agent.
"""

from __future__ import annotations

import json
import uuid
from typing import Any

from loomk._metakeys import RESERVED_KEYS
from loomk.actions.types import ActionCall, ActionResult
from loomk.envelope import Envelope
from loomk.errors import EventError
from loomk.events import Event, QoS

__all__ = ["action_call", "action_result_event", "qos_for_priority"]

ACTION_RESULT = "action_result"


def qos_for_priority(priority: int) -> QoS:
    """Loom's mapping: 70 and above realtime, 30 to 69 batched, below 30 background."""
    if priority >= 70:
        return QoS.REALTIME
    if priority >= 30:
        return QoS.BATCHED
    return QoS.BACKGROUND


def action_call(
    sender: str,
    capability: str,
    args: Any,
    *,
    version: str = "",
    timeout_s: float | None = None,
    priority: int = 50,
    call_id: str | None = None,
    headers: dict[str, str] | None = None,
) -> ActionCall:
    """The call an agent makes: JSON payload (bytes as given), envelope headers, QoS."""
    if not isinstance(capability, str) or not capability:
        raise EventError(f"a capability name is a non-empty str, got {capability!r}")
    if priority.__class__ is not int or not 0 <= priority <= 100:
        raise EventError(f"priority must be an int from 0 to 100, got {priority!r}")
    if isinstance(args, bytes):
        payload = args
    else:
        try:
            payload = json.dumps({} if args is None else args).encode()
        except (TypeError, ValueError) as error:
            raise EventError(f"capability arguments must be JSON-serialisable: {error}") from error
    call_id = call_id or f"act_{uuid.uuid4().hex}"
    merged = dict(headers or {})
    Envelope.new(call_id, sender).apply_to_metadata(merged)  # reserved keys are the call's
    timeout_ms = 0 if timeout_s is None else max(1, int(timeout_s * 1000))
    return ActionCall(
        call_id,
        capability,
        payload,
        version=version,
        headers=merged,
        timeout_ms=timeout_ms,
        correlation_id=call_id,
        qos=qos_for_priority(priority),
    )


def action_result_event(
    sender: str, call: ActionCall, result: ActionResult, priority: int
) -> Event:
    """The ``action_result`` observability event for ``call``'s outcome."""
    metadata = {
        "action_type": call.capability,
        "status": result.status.label,
        **{key: value for key, value in call.headers.items() if key in _ENVELOPE_KEYS},
    }
    if result.error is not None:
        metadata["error_code"] = result.error.code
    return Event(
        ACTION_RESULT,
        result.output,
        source=sender,
        metadata=metadata,
        tags=("action",),
        priority=priority,
    )


_ENVELOPE_KEYS = frozenset(RESERVED_KEYS)
