"""Agents: the Agent API, its Context, the supervised runtime and the agent directory."""

from loomk.agents.agent import Agent, FunctionAgent, Topic, agent, validate_agent_id
from loomk.agents.context import Context
from loomk.agents.directory import AgentDirectory, AgentInfo
from loomk.agents.runtime import AgentHandle, AgentRuntime, AgentStats
from loomk.agents.supervisor import RestartPolicy

__all__ = [
    "Agent",
    "AgentDirectory",
    "AgentHandle",
    "AgentInfo",
    "AgentRuntime",
    "AgentStats",
    "Context",
    "FunctionAgent",
    "RestartPolicy",
    "Topic",
    "agent",
    "validate_agent_id",
]
