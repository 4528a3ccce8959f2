"""Durable agent state (LevelDB), its per-handler commits, and ephemeral memory."""

from loomk.state.agent_state import AgentStateView
from loomk.state.maintenance import StoreCheck, StoreRepair, check_store, repair_store
from loomk.state.memory import EphemeralMemory, MemoryStats
from loomk.state.service import AgentState, StateService
from loomk.state.store import Store, StoreStats

__all__ = [
    "AgentState",
    "AgentStateView",
    "EphemeralMemory",
    "MemoryStats",
    "StateService",
    "Store",
    "StoreCheck",
    "StoreRepair",
    "StoreStats",
    "check_store",
    "repair_store",
]
