"""Collaboration: request/reply, fanout/fanin, barriers and contract-net over the bus."""

from loomk.collab.collaborator import (
    CONTROL_TYPES,
    Collaborator,
    ContractNetResult,
    Strategy,
    collab_types,
    score_of,
)
from loomk.collab.service import CollabService, CollabStats

__all__ = [
    "CONTROL_TYPES",
    "CollabService",
    "CollabStats",
    "Collaborator",
    "ContractNetResult",
    "Strategy",
    "collab_types",
    "score_of",
]
