"""Which agent the running task belongs to, for the log processors.

The agent runtime binds each agent's task to the agent once, when the task starts
(:func:`bind_agent_context`); a trio task copies its context when it is spawned, so the
binding holds for that task and the tasks it starts, and costs nothing per event. What
the agent is handling right now is read from the bound object when a record is written
(:func:`loomk.telemetry.processors.add_agent_context`), never copied on the hot path.

Telemetry sits below the agents in the layers, so it knows the agent only through the
small protocols here (the runtime's record of an agent satisfies :class:`LogAgent`).
"""

from __future__ import annotations

from collections.abc import Mapping
from contextvars import ContextVar
from typing import Protocol

__all__ = ["LogAgent", "LoggedEvent", "bind_agent_context", "current_log_agent"]


class LoggedEvent(Protocol):
    """What the log processors read of an event: its metadata (the envelope's ids)."""

    @property
    def metadata(self) -> Mapping[str, str]: ...


class LogAgent(Protocol):
    """What the log processors read of an agent: its id and the event it is handling."""

    @property
    def agent_id(self) -> str: ...

    @property
    def current_event(self) -> LoggedEvent | None: ...


_AGENT: ContextVar[LogAgent | None] = ContextVar("loomk_log_agent", default=None)


def bind_agent_context(agent: LogAgent) -> None:
    """Make ``agent`` the agent of the running task (and of the tasks it starts later).

    Call it once, at the top of the agent's own task: the binding lives in that task's
    context and needs no reset (it ends with the task).
    """
    _AGENT.set(agent)


def current_log_agent() -> LogAgent | None:
    """The agent the running task belongs to, or None outside every agent."""
    return _AGENT.get()
