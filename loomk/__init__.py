"""loomk: a trio-based structured-concurrency microkernel for event-driven AI agents.

Embed it with ``loomk.run(main)`` or ``async with loomk.open_kernel() as kernel``; publish and
subscribe through ``kernel.bus``. See README.md and DESIGN.md for the architecture.
"""

from loomk.agents import (
    Agent,
    AgentDirectory,
    AgentHandle,
    AgentInfo,
    AgentStats,
    Context,
    RestartPolicy,
    Topic,
    agent,
)
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
    AgentContractError,
    AgentError,
    AgentExists,
    AgentFailed,
    AgentNotFound,
    AlreadySubscribed,
    ConfigError,
    DataDirInUse,
    EventError,
    InvalidAgentId,
    KernelClosed,
    LoomkError,
    NotSubscribed,
    OverflowPolicyError,
    StateError,
    StoreError,
    TopicError,
)
from loomk.events import Event, QoS
from loomk.kernel import Kernel, open_kernel, run
from loomk.state import AgentState, AgentStateView, EphemeralMemory, Store

__version__ = "0.1.0"

__all__ = [
    "Agent",
    "AgentContractError",
    "AgentDirectory",
    "AgentError",
    "AgentExists",
    "AgentFailed",
    "AgentHandle",
    "AgentInfo",
    "AgentNotFound",
    "AgentState",
    "AgentStateView",
    "AgentStats",
    "AlreadySubscribed",
    "Config",
    "ConfigError",
    "Context",
    "DataDirInUse",
    "Envelope",
    "EphemeralMemory",
    "Event",
    "EventBus",
    "EventError",
    "InvalidAgentId",
    "Kernel",
    "KernelClosed",
    "LoomkError",
    "NotSubscribed",
    "Overflow",
    "OverflowPolicyError",
    "QoS",
    "RestartPolicy",
    "StateError",
    "Store",
    "StoreError",
    "Subscription",
    "SubscriptionStats",
    "ThreadTopicKind",
    "Topic",
    "TopicError",
    "TopicStats",
    "__version__",
    "agent",
    "agent_reply_topic",
    "open_kernel",
    "run",
]
