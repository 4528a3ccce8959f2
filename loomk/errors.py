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
