"""The event bus: topics, overflow policies, lanes and publish/subscribe.

Users need :class:`EventBus`, :class:`Subscription`, :class:`Overflow` and the statistics.
The kernel's own layers (the agent runtime, the collaboration service) also use the bus's
internal API below: a :class:`Mailbox` of lanes that one task drains with
``take_nowait`` (``EMPTY`` when there is nothing), and the :class:`Binding` of a lane to a
pattern, made by ``EventBus.bind`` and ended by ``EventBus.detach``.
"""

from loomk.bus._lanes import EMPTY, EventHandler, Mailbox
from loomk.bus.bus import (
    CHECKPOINT_EVERY,
    DEFAULT_CAPACITY,
    Binding,
    EventBus,
    Subscription,
    SubscriptionStats,
    TopicStats,
    binding_stats,
)
from loomk.bus.overflow import Overflow
from loomk.bus.tap import BusTap, TapBatch
from loomk.bus.topics import pattern_matches, validate_pattern, validate_topic

__all__ = [
    "CHECKPOINT_EVERY",
    "DEFAULT_CAPACITY",
    "EMPTY",
    "Binding",
    "BusTap",
    "EventBus",
    "EventHandler",
    "Mailbox",
    "Overflow",
    "Subscription",
    "SubscriptionStats",
    "TapBatch",
    "TopicStats",
    "binding_stats",
    "pattern_matches",
    "validate_pattern",
    "validate_topic",
]
