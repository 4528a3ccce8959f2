"""The event bus: topics, overflow policies, lanes and publish/subscribe."""

from loomk.bus.bus import (
    CHECKPOINT_EVERY,
    DEFAULT_CAPACITY,
    EventBus,
    Subscription,
    SubscriptionStats,
    TopicStats,
)
from loomk.bus.overflow import Overflow
from loomk.bus.topics import pattern_matches, validate_pattern, validate_topic

__all__ = [
    "CHECKPOINT_EVERY",
    "DEFAULT_CAPACITY",
    "EventBus",
    "Overflow",
    "Subscription",
    "SubscriptionStats",
    "TopicStats",
    "pattern_matches",
    "validate_pattern",
    "validate_topic",
]
