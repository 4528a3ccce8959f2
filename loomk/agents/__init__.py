"""Agents: the Agent API, its Context, the supervised runtime and the agent directory.

The layer sees the rest of the kernel only through :class:`AgentServices`.
"""

from loomk.agents._commit import COMMIT_GROUP_MAX
from loomk.agents._record import AgentHandle, AgentStats
from loomk.agents._serve import LATENCY_SAMPLE_EVERY
from loomk.agents._supervise import agent_on_stack
from loomk.agents.agent import Agent, FunctionAgent, Topic, agent, validate_agent_id
from loomk.agents.context import Context
from loomk.agents.directory import AgentDirectory, AgentInfo
from loomk.agents.runtime import AgentRuntime
from loomk.agents.services import (
    AgentDefaults,
    AgentServices,
    AgentStateStore,
    CapabilityInvoker,
)
from loomk.agents.supervisor import RestartPolicy

__all__ = [
    "COMMIT_GROUP_MAX",
    "LATENCY_SAMPLE_EVERY",
    "Agent",
    "AgentDefaults",
    "AgentDirectory",
    "AgentHandle",
    "AgentInfo",
    "AgentRuntime",
    "AgentServices",
    "AgentStateStore",
    "AgentStats",
    "CapabilityInvoker",
    "Context",
    "FunctionAgent",
    "RestartPolicy",
    "Topic",
    "agent",
    "agent_on_stack",
    "validate_agent_id",
]
