"""Actions: capability providers, the broker that invokes them, and the tool orchestrator."""

from loomk.actions.broker import ActionBroker, BrokerStats, CapabilityStats, Upstream
from loomk.actions.directory import CapabilityDirectory
from loomk.actions.orchestrator import FinalAnswer, ModelCall, OrchestratorStats, ToolOrchestrator
from loomk.actions.provider import ActionFailure, CapabilityProvider, FunctionProvider, capability
from loomk.actions.tools import (
    ToolCall,
    ToolNames,
    ToolStyle,
    answer_text,
    parse_tool_calls,
    tool_result_messages,
    tools_for,
)
from loomk.actions.types import (
    ActionCall,
    ActionError,
    ActionResult,
    ActionStatus,
    CapabilityDescriptor,
    ErrorCode,
    ProviderKind,
    parse_version,
)

__all__ = [
    "ActionBroker",
    "ActionCall",
    "ActionError",
    "ActionFailure",
    "ActionResult",
    "ActionStatus",
    "BrokerStats",
    "CapabilityDescriptor",
    "CapabilityDirectory",
    "CapabilityProvider",
    "CapabilityStats",
    "ErrorCode",
    "FinalAnswer",
    "FunctionProvider",
    "ModelCall",
    "OrchestratorStats",
    "ProviderKind",
    "ToolCall",
    "ToolNames",
    "ToolOrchestrator",
    "ToolStyle",
    "Upstream",
    "answer_text",
    "capability",
    "parse_tool_calls",
    "parse_version",
    "tool_result_messages",
    "tools_for",
]
