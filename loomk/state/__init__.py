"""Durable agent state (LevelDB), its per-handler commits, and ephemeral memory.

The operators' tools (:func:`check_store`, :func:`repair_store` and their results, from
:mod:`loomk.state.maintenance`) load on first use: a running kernel never needs them.
"""

from typing import TYPE_CHECKING, Any

from loomk.state.agent_state import AgentStateView
from loomk.state.memory import EphemeralMemory, MemoryStats
from loomk.state.service import AgentState, StateService
from loomk.state.store import Store, StoreStats

if TYPE_CHECKING:
    from loomk.state.maintenance import StoreCheck, StoreRepair, check_store, repair_store

MAINTENANCE_NAMES = frozenset({"StoreCheck", "StoreRepair", "check_store", "repair_store"})
"""The names of :mod:`loomk.state.maintenance`, imported when one is first asked for."""


def __getattr__(name: str) -> Any:
    if name in MAINTENANCE_NAMES:
        from loomk.state import maintenance

        return getattr(maintenance, name)
    raise AttributeError(f"module 'loomk.state' has no attribute {name!r}")


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
