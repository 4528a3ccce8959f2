"""Actions: capability providers, the broker that invokes them, and the tool orchestrator."""

from loomk.actions.broker import ActionBroker, CapabilityStats
from loomk.actions.directory import CapabilityDirectory
from loomk.actions.provider import ActionFailure, CapabilityProvider, FunctionProvider, capability
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
    "CapabilityDescriptor",
    "CapabilityDirectory",
    "CapabilityProvider",
    "CapabilityStats",
    "ErrorCode",
    "FunctionProvider",
    "ProviderKind",
    "capability",
    "parse_version",
]
