"""loomk: a trio-based structured-concurrency microkernel for event-driven AI agents.

Embed it with ``loomk.run(main)`` or ``async with loomk.open_kernel() as kernel``; publish and
subscribe through ``kernel.bus``; spawn agents with ``kernel.spawn``. README.md shows the
way in, docs/architecture.md the layers and modules.
"""

from typing import TYPE_CHECKING, Any

from loomk.actions import (
    ActionBroker,
    ActionCall,
    ActionError,
    ActionFailure,
    ActionResult,
    ActionStatus,
    CapabilityDescriptor,
    CapabilityDirectory,
    CapabilityProvider,
    ErrorCode,
    FunctionProvider,
    ProviderKind,
    ToolOrchestrator,
    capability,
)
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
from loomk.config import BridgeAcl, BridgeAclEntry, Config, ConfigSource
from loomk.edges import Edge
from loomk.envelope import Envelope, ThreadTopicKind, agent_reply_topic
from loomk.errors import (
    ActionCallError,
    AgentContractError,
    AgentError,
    AgentExists,
    AgentFailed,
    AgentNotFound,
    AgentStartError,
    AlreadySubscribed,
    CapabilityError,
    CollabError,
    CollabTimeout,
    ConfigError,
    DataDirInUse,
    EdgeError,
    EdgeNotFound,
    EdgeUnavailable,
    EventError,
    InvalidAgentId,
    KernelClosed,
    LinkError,
    LLMError,
    LoomkError,
    NotSubscribed,
    OverflowPolicyError,
    QoSError,
    StateError,
    StoreCorrupted,
    StoreError,
    TopicError,
)
from loomk.events import Event, QoS
from loomk.kernel import Kernel, open_kernel, run
from loomk.llm import (
    LocalModel,
    ModelRouter,
    PrivacyLevel,
    Route,
    RoutingPolicy,
)
from loomk.state import MAINTENANCE_NAMES, AgentState, AgentStateView, EphemeralMemory, Store

if TYPE_CHECKING:
    from loomk.llm import LLMClient, LLMSettings
    from loomk.state import StoreCheck, StoreRepair, check_store, repair_store


def __getattr__(name: str) -> Any:
    """Loaded on first use: ``LLMClient`` and ``LLMSettings`` (see :mod:`loomk.llm`), and
    the store's maintenance tools (see :mod:`loomk.state`)."""
    if name in ("LLMClient", "LLMSettings"):
        from loomk import llm

        return getattr(llm, name)
    if name in MAINTENANCE_NAMES:
        from loomk import state

        return getattr(state, name)
    raise AttributeError(f"module 'loomk' has no attribute {name!r}")


__version__ = "0.1.0"

__all__ = [
    "ActionBroker",
    "ActionCall",
    "ActionCallError",
    "ActionError",
    "ActionFailure",
    "ActionResult",
    "ActionStatus",
    "Agent",
    "AgentContractError",
    "AgentDirectory",
    "AgentError",
    "AgentExists",
    "AgentFailed",
    "AgentHandle",
    "AgentInfo",
    "AgentNotFound",
    "AgentStartError",
    "AgentState",
    "AgentStateView",
    "AgentStats",
    "AlreadySubscribed",
    "BridgeAcl",
    "BridgeAclEntry",
    "CapabilityDescriptor",
    "CapabilityDirectory",
    "CapabilityError",
    "CapabilityProvider",
    "CollabError",
    "CollabTimeout",
    "Config",
    "ConfigError",
    "ConfigSource",
    "Context",
    "DataDirInUse",
    "Edge",
    "EdgeError",
    "EdgeNotFound",
    "EdgeUnavailable",
    "Envelope",
    "EphemeralMemory",
    "ErrorCode",
    "Event",
    "EventBus",
    "EventError",
    "FunctionProvider",
    "InvalidAgentId",
    "Kernel",
    "KernelClosed",
    "LLMClient",
    "LLMError",
    "LLMSettings",
    "LinkError",
    "LocalModel",
    "LoomkError",
    "ModelRouter",
    "NotSubscribed",
    "Overflow",
    "OverflowPolicyError",
    "PrivacyLevel",
    "ProviderKind",
    "QoS",
    "QoSError",
    "RestartPolicy",
    "Route",
    "RoutingPolicy",
    "StateError",
    "Store",
    "StoreCheck",
    "StoreCorrupted",
    "StoreError",
    "StoreRepair",
    "Subscription",
    "SubscriptionStats",
    "ThreadTopicKind",
    "ToolOrchestrator",
    "Topic",
    "TopicError",
    "TopicStats",
    "__version__",
    "agent",
    "agent_reply_topic",
    "capability",
    "check_store",
    "open_kernel",
    "repair_store",
    "run",
]
