"""The agent directory: who is running, what they listen to, what they can do.

The runtime keeps it current on spawn, subscribe, unsubscribe and stop (Loom's directory was
never fed). ``by_topic`` takes a concrete topic and finds every agent with a matching
pattern, through the same token trie the bus uses.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field

from loomk._watchers import Watchers
from loomk.bus.topics import TopicTrie, validate_pattern, validate_topic

__all__ = ["AgentDirectory", "AgentInfo"]


@dataclass(frozen=True, slots=True)
class AgentInfo:
    """What the directory knows of one agent."""

    agent_id: str
    topics: tuple[str, ...] = ()
    capabilities: tuple[str, ...] = ()
    metadata: Mapping[str, str] = field(default_factory=dict)


class AgentDirectory:
    """Agents indexed by id, topic pattern, capability and metadata."""

    def __init__(self) -> None:
        self._infos: dict[str, AgentInfo] = {}
        self._patterns: TopicTrie[str] = TopicTrie()
        self._pattern_keys: dict[str, dict[str, int]] = {}  # agent -> pattern -> trie key
        self._by_capability: dict[str, set[str]] = {}
        self._keys = itertools.count(1)
        self._watchers = Watchers()

    def __len__(self) -> int:
        return len(self._infos)

    def __contains__(self, agent_id: object) -> bool:
        return agent_id in self._infos

    def register(self, info: AgentInfo) -> None:
        """Add or replace an agent; a replaced agent leaves its old indices first."""
        for pattern in info.topics:
            validate_pattern(pattern)
        self.unregister(info.agent_id)
        self._infos[info.agent_id] = info
        self._pattern_keys[info.agent_id] = {}
        for pattern in dict.fromkeys(info.topics):  # a repeated pattern is indexed once
            self._index_pattern(info.agent_id, pattern)
        for capability in info.capabilities:
            self._by_capability.setdefault(capability, set()).add(info.agent_id)
        self._watchers.notify()

    def unregister(self, agent_id: str) -> bool:
        """Remove an agent from every index; False if it was not registered."""
        info = self._infos.pop(agent_id, None)
        if info is None:
            return False
        for pattern, key in self._pattern_keys.pop(agent_id).items():
            self._patterns.remove(pattern, key)
        for capability in info.capabilities:
            holders = self._by_capability[capability]
            holders.discard(agent_id)
            if not holders:
                del self._by_capability[capability]
        self._watchers.notify()
        return True

    def add_topic(self, agent_id: str, pattern: str) -> None:
        """Record one more pattern for a registered agent."""
        info = self._infos[agent_id]
        if pattern in self._pattern_keys[agent_id]:
            return
        validate_pattern(pattern)
        self._infos[agent_id] = _replace_topics(info, (*info.topics, pattern))
        self._index_pattern(agent_id, pattern)
        self._watchers.notify()

    def remove_topic(self, agent_id: str, pattern: str) -> None:
        """Forget one pattern of a registered agent."""
        info = self._infos[agent_id]
        key = self._pattern_keys[agent_id].pop(pattern, None)
        if key is None:
            return
        self._patterns.remove(pattern, key)
        self._infos[agent_id] = _replace_topics(info, tuple(t for t in info.topics if t != pattern))
        self._watchers.notify()

    def watch(self, watcher: Callable[[], None]) -> Callable[[], None]:
        """Call ``watcher()`` after every change of an entry (a link that lists this
        kernel's agents elsewhere follows them so); returns the function that stops
        watching. The watcher must be quick and must not raise."""
        return self._watchers.add(watcher)

    def get(self, agent_id: str) -> AgentInfo | None:
        """The agent's entry, or None."""
        return self._infos.get(agent_id)

    def by_topic(self, topic: str) -> list[str]:
        """Agents with a pattern matching the published ``topic``, each once, in the order
        their matching patterns were added."""
        validate_topic(topic)
        seen: dict[str, None] = {}
        for _, agent_id in self._patterns.match(topic):
            seen[agent_id] = None
        return list(seen)

    def by_capability(self, capability: str) -> list[str]:
        """Agents declaring ``capability``, sorted by id."""
        return sorted(self._by_capability.get(capability, ()))

    def by_metadata(self, key: str, value: str | None = None) -> list[str]:
        """Agents whose metadata has ``key`` (equal to ``value`` when given), sorted by id."""
        return sorted(
            agent_id
            for agent_id, info in self._infos.items()
            if key in info.metadata and (value is None or info.metadata[key] == value)
        )

    def all(self) -> list[AgentInfo]:
        """Every entry, in registration order."""
        return list(self._infos.values())

    def _index_pattern(self, agent_id: str, pattern: str) -> None:
        key = next(self._keys)
        self._pattern_keys[agent_id][pattern] = key
        self._patterns.insert(pattern, key, agent_id)


def _replace_topics(info: AgentInfo, topics: Iterable[str]) -> AgentInfo:
    return AgentInfo(info.agent_id, tuple(topics), info.capabilities, info.metadata)
