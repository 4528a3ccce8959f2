"""The loomk error hierarchy.

Every error loomk raises on purpose is a :class:`LoomkError` carrying a machine-readable
``code``, so callers (and the gRPC bridge, which puts codes on the wire) can branch on the
kind of failure without parsing messages. Each subclass also derives from the closest
built-in exception, so ``except ValueError`` keeps working for code that does not know loomk.
"""

from __future__ import annotations


class LoomkError(Exception):
    """Base class of every error loomk raises on purpose."""

    code: str = "LOOMK_ERROR"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:
        return self.message


class ConfigError(LoomkError, ValueError):
    """A configuration key is unknown or its value is invalid; the message names the key."""

    code = "CONFIG_INVALID"

    def __init__(self, key: str, message: str) -> None:
        super().__init__(f"config key {key!r}: {message}")
        self.key = key


class TopicError(LoomkError, ValueError):
    """A topic or subscription pattern is malformed; the message says why."""

    code = "TOPIC_INVALID"

    def __init__(self, topic: object, reason: str) -> None:
        super().__init__(f"invalid topic {topic!r}: {reason}")
        self.topic = topic
        self.reason = reason


class EventError(LoomkError, ValueError):
    """An event field has the wrong type or an out-of-range value."""

    code = "EVENT_INVALID"


class OverflowPolicyError(LoomkError, ValueError):
    """An overflow policy or queue capacity is not one loomk knows how to apply."""

    code = "OVERFLOW_POLICY_INVALID"


class KernelClosed(LoomkError, RuntimeError):
    """The kernel (or its bus) has shut down and accepts no more work."""

    code = "KERNEL_CLOSED"


class AgentError(LoomkError):
    """Base class of agent-runtime errors."""

    code = "AGENT_ERROR"


class InvalidAgentId(AgentError, ValueError):
    """An agent id is empty, has whitespace or wildcards, or is otherwise unusable in topics."""

    code = "AGENT_ID_INVALID"


class AgentExists(AgentError):
    """An agent with this id is already running."""

    code = "AGENT_EXISTS"


class AgentNotFound(AgentError, LookupError):
    """No running agent has this id."""

    code = "AGENT_NOT_FOUND"


class AlreadySubscribed(AgentError):
    """The agent is already subscribed to this pattern."""

    code = "AGENT_ALREADY_SUBSCRIBED"


class NotSubscribed(AgentError, LookupError):
    """The agent is not subscribed to this pattern."""

    code = "AGENT_NOT_SUBSCRIBED"


class AgentContractError(AgentError, TypeError):
    """An agent broke its contract, e.g. a handler returned a value instead of None."""

    code = "AGENT_CONTRACT"


class AgentFailed(AgentError):
    """An agent failed more often than its restart policy allows (raised for critical agents)."""

    code = "AGENT_FAILED"

    def __init__(self, agent_id: str, cause: BaseException | None) -> None:
        super().__init__(f"agent {agent_id!r} failed past its restart limit: {cause!r}")
        self.agent_id = agent_id
        self.cause = cause


class AgentStartError(AgentError):
    """An agent's first ``on_start`` failed or ran past its start timeout, so ``spawn``
    did not start it (restarts apply only to an agent that started once)."""

    code = "AGENT_START_FAILED"

    def __init__(self, agent_id: str, message: str, cause: BaseException | None = None) -> None:
        super().__init__(f"agent {agent_id!r} did not start: {message}")
        self.agent_id = agent_id
        self.cause = cause


class StoreError(LoomkError):
    """The durable store cannot be opened, read or written; the message names the path."""

    code = "STORE_ERROR"


class DataDirInUse(StoreError):
    """Another kernel holds the data directory."""

    code = "DATA_DIR_IN_USE"


class StoreCorrupted(StoreError):
    """The database on disk is damaged: a checksum does not match, its log or manifest is
    unreadable, or commits it acknowledged are missing. ``loomk state check`` describes the
    damage and ``loomk state repair`` salvages what can be read."""

    code = "STORE_CORRUPTED"


class StateError(LoomkError, ValueError):
    """A state value cannot be stored (not JSON-serialisable) or a key is not a str."""

    code = "STATE_INVALID"


class CapabilityError(LoomkError, ValueError):
    """A capability descriptor or provider is malformed (bad name, version or metadata)."""

    code = "CAPABILITY_INVALID"


class CollabError(LoomkError, ValueError):
    """A collaboration call was asked for with invalid arguments (Loom's validation errors)."""

    code = "COLLAB_INVALID"


class CollabTimeout(LoomkError, TimeoutError):
    """A collaboration call got no (or not enough) answers before its timeout."""

    code = "COLLAB_TIMEOUT"


class LLMError(LoomkError):
    """A model request failed; ``code`` says how (the API key never appears in it).

    Codes: ``LLM_TIMEOUT``, ``LLM_RATE_LIMITED`` (after retries; ``retry_after_s`` if the
    server said), ``LLM_CONNECT_ERROR``, ``LLM_HTTP_ERROR`` (``status``), ``LLM_BAD_RESPONSE``
    (malformed JSON or SSE, a stream cut short, no text), ``LLM_NOT_CONFIGURED``,
    ``LLM_INVALID_REQUEST``.
    """

    code = "LLM_ERROR"

    def __init__(
        self,
        code: str,
        message: str,
        *,
        status: int | None = None,
        retry_after_s: float | None = None,
    ) -> None:
        super().__init__(message)
        self.code = code
        self.status = status
        self.retry_after_s = retry_after_s


class QoSError(LoomkError, ValueError):
    """A QoS level is not one loomk has: ``QoS.REALTIME`` (0), ``BATCHED`` (1) or
    ``BACKGROUND`` (2). Raised wherever a QoS is taken (``QoS(value)`` itself included)."""

    code = "QOS_INVALID"


class ActionCallError(EventError):
    """A capability call cannot be made from what was given: its name, arguments, timeout,
    id, version or headers. Raised before anything runs, by ``ctx.invoke`` and
    :class:`~loomk.ActionCall`; an :class:`EventError`, as these mistakes were before."""

    code = "ACTION_CALL_INVALID"


class EdgeError(LoomkError):
    """An edge of the kernel (bridge server, dashboard, cluster link...) could not be opened,
    or an edge's name is misused; ``edge`` names it, ``cause`` is what went wrong (also the
    ``__cause__``). See docs/edges.md."""

    code = "EDGE_FAILED"

    def __init__(self, edge: str, message: str, cause: BaseException | None = None) -> None:
        super().__init__(f"edge {edge!r}: {message}")
        self.edge = edge
        self.cause = cause


class EdgeUnavailable(EdgeError):
    """A setting asks for an edge that cannot be loaded, usually because its optional extra
    is not installed; ``setting`` names the setting that asked for it."""

    code = "EDGE_UNAVAILABLE"

    def __init__(
        self, edge: str, setting: str, message: str, cause: BaseException | None = None
    ) -> None:
        super().__init__(edge, message, cause)
        self.setting = setting


class EdgeNotFound(EdgeError, LookupError):
    """No open edge has this name (``kernel.edge(name)``)."""

    code = "EDGE_NOT_FOUND"


class LinkError(LoomkError):
    """A bus link (a bridge client, a cluster link) was misconfigured or refused by the
    other side; the message says which and how to fix it."""

    code = "LINK_FAILED"
