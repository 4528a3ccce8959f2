"""How an agent's capability calls look on the wire and to observers, as Loom's agents show them.

An agent calls ``ctx.invoke``; the call gets a fresh envelope (thread and correlation = the
call id, sender ``agent.{id}``) and a QoS from its priority, and its outcome is published as
an ``action_result`` event on ``agent.{id}`` for dashboards and tests. A missing capability
is an ``ACTION_ERROR`` result (``PROVIDER_UNAVAILABLE``), never the end of the agent.

A mistake in the call itself (a name, arguments, timeout, priority, id or version that no
call can carry) is the caller's, so :func:`action_call` raises
:class:`~loomk.errors.ActionCallError` for it before anything runs or is published.
"""

from __future__ import annotations

import uuid
from typing import Any

from loomk._metakeys import RESERVED_KEYS
from loomk._wire import short_repr, text_problem
from loomk.actions.types import ActionCall, ActionResult, json_payload, timeout_ms_of
from loomk.envelope import Envelope
from loomk.errors import ActionCallError
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
    """The call an agent makes: JSON payload (bytes as given), envelope headers, QoS.

    ``args`` None sends ``{}``; ``timeout_s`` None leaves the timeout to the broker; an
    empty or absent ``call_id`` gets a fresh one. Raises
    :class:`~loomk.errors.ActionCallError` for anything no call can carry.
    """
    _check_text("capability name", capability, "a capability name such as 'weather.get'")
    _check_text("version", version, "'' for the highest, or a version such as '1.0.0'", empty=True)
    if call_id is not None:
        _check_text("call_id", call_id, "None for a fresh id, or a str", empty=True)
    if priority.__class__ is not int or not 0 <= priority <= 100:
        raise ActionCallError(f"priority must be an int from 0 to 100, got {short_repr(priority)}")
    payload = json_payload({} if args is None else args)
    timeout_ms = timeout_ms_of(timeout_s)
    call_id = call_id or f"act_{uuid.uuid4().hex}"
    merged = dict(headers or {})
    Envelope.new(call_id, sender).apply_to_metadata(merged)  # reserved keys are the call's
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


def _check_text(name: str, value: object, wanted: str, *, empty: bool = False) -> None:
    """Raise :class:`ActionCallError` unless ``value`` is a str the wire carries (non-empty
    unless ``empty``); ``wanted`` says what to give instead."""
    if value.__class__ is not str or not (value or empty):
        raise ActionCallError(f"{name} must be {wanted}, got {short_repr(value)}")
    assert isinstance(value, str)
    problem = text_problem(value)
    if problem:
        raise ActionCallError(f"{name} {short_repr(value)} {problem}")
