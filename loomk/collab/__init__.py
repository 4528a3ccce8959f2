"""Collaboration: request/reply, fanout/fanin, barriers and contract-net over the bus."""

from loomk.collab.collaborator import (
    CONTROL_TYPES,
    Collaborator,
    ContractNetResult,
    Strategy,
    collab_types,
    score_of,
)
from loomk.collab.service import BARRIER_PATTERN, REPLY_PATTERN, CollabService, CollabStats

__all__ = [
    "BARRIER_PATTERN",
    "CONTROL_TYPES",
    "REPLY_PATTERN",
    "CollabService",
    "CollabStats",
    "Collaborator",
    "ContractNetResult",
    "Strategy",
    "collab_types",
    "score_of",
]
