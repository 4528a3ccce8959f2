"""loomk: a trio-based structured-concurrency microkernel for event-driven AI agents.

Embed it with ``loomk.run(main)`` or ``async with loomk.open_kernel() as kernel``; publish and
subscribe through ``kernel.bus``. See README.md and DESIGN.md for the architecture.
"""

from loomk.bus import (
    EventBus,
    Overflow,
    Subscription,
    SubscriptionStats,
    TopicStats,
)
from loomk.config import Config
from loomk.envelope import Envelope, ThreadTopicKind, agent_reply_topic
from loomk.errors import (
    ConfigError,
    EventError,
    KernelClosed,
    LoomkError,
    OverflowPolicyError,
    TopicError,
)
from loomk.events import Event, QoS
from loomk.kernel import Kernel, open_kernel, run

__version__ = "0.1.0"

__all__ = [
    "Config",
    "ConfigError",
    "Envelope",
    "Event",
    "EventBus",
    "EventError",
    "Kernel",
    "KernelClosed",
    "LoomkError",
    "Overflow",
    "OverflowPolicyError",
    "QoS",
    "Subscription",
    "SubscriptionStats",
    "ThreadTopicKind",
    "TopicError",
    "TopicStats",
    "__version__",
    "agent_reply_topic",
    "open_kernel",
    "run",
]
