"""The other kernels of the cluster, as this kernel knows them from their announcements.

Every kernel announces itself on ``_{prefix}.announce`` every ``announce_s`` seconds and at
once when its agents or capabilities change: its node name, its agents (id, topics,
capabilities) and its capabilities. A kernel not heard from for ``EXPIRY_PERIODS`` periods
is taken for gone, as is one that says goodbye. Each peer's agents are listed in
``kernel.directory`` (marked ``loomk.remote=cluster`` and ``loomk.node=<node>``), and each
capability no local provider offers becomes a :class:`RemoteCapability` in the broker, so
``ctx.invoke`` and ``kernel.capabilities`` reach it; the call goes to the node over NATS
request/reply. An agent id or capability that exists here stays this kernel's own.
"""

from __future__ import annotations

import itertools
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import trio

from loomk.actions import ActionBroker, ActionCall, ActionResult, CapabilityDescriptor
from loomk.agents import AgentDirectory, AgentInfo
from loomk.telemetry.logging import get_logger

__all__ = ["EXPIRY_PERIODS", "NODE_KEY", "Peer", "Peers", "RemoteCapability"]

_log = get_logger("loomk.cluster")

EXPIRY_PERIODS = 3
"""Announcement periods a peer may miss before it is taken for gone."""

REMOTE_KEY = "loomk.remote"
NODE_KEY = "loomk.node"
"""Directory metadata naming the kernel (cluster node) an agent runs on."""

Invoke = Callable[[str, ActionCall], Awaitable[ActionResult]]
"""Sends a call to a node and returns its result (the link's NATS request)."""


class RemoteCapability:
    """A capability of other kernels, invoked on one of them over NATS (round robin)."""

    def __init__(self, descriptor: CapabilityDescriptor, invoke: Invoke) -> None:
        self.descriptor = descriptor
        self.nodes: list[str] = []
        self._invoke = invoke
        self._turn = itertools.count()

    async def invoke(self, call: ActionCall) -> ActionResult:
        nodes = self.nodes
        if not nodes:
            return ActionResult.failure(
                call.id, "PROVIDER_UNAVAILABLE", f"no kernel offers {call.capability} now"
            )
        node = nodes[next(self._turn) % len(nodes)]
        return await self._invoke(node, call)


@dataclass
class Peer:
    """One other kernel: what it last announced and when."""

    node: str
    seen: float
    expiry_s: float = 0.0  # silent this long: gone (its own announcement period times 3)
    instance: str = ""  # the run of the kernel that announced last
    agents: list[AgentInfo] = field(default_factory=list)
    capabilities: list[CapabilityDescriptor] = field(default_factory=list)


class Peers:
    """The cluster's other kernels, reflected in the local directory and broker."""

    def __init__(
        self,
        node: str,
        directory: AgentDirectory,
        broker: ActionBroker,
        invoke: Invoke,
        expiry_s: float,
    ) -> None:
        self.node = node
        self.expiry_s = expiry_s
        self._directory = directory
        self._broker = broker
        self._invoke = invoke
        self.peers: dict[str, Peer] = {}
        self._listed: dict[str, str] = {}  # agent id -> node listing it
        self._remote: dict[str, RemoteCapability] = {}  # capability key -> its proxy

    # ---- what this kernel announces ------------------------------------------------------

    def own_agents(self) -> list[AgentInfo]:
        """The agents of this kernel's bus (not those listed from peers)."""
        return [a for a in self._directory.all() if not self._is_listing(a)]

    @staticmethod
    def _is_listing(info: AgentInfo | None, node: str | None = None) -> bool:
        """Whether a directory entry is a peer's listing (of ``node``, when given): an
        entry without the mark is this kernel's own, whatever was listed before."""
        if info is None or info.metadata.get(REMOTE_KEY) != "cluster":
            return False
        return node is None or info.metadata.get(NODE_KEY) == node

    def own_capabilities(self) -> list[CapabilityDescriptor]:
        """The capabilities this kernel's own providers offer (not the peers' proxies)."""
        own = []
        for descriptor in self._broker.list_capabilities():
            provider = self._broker.resolve(descriptor.name, descriptor.version)
            if not isinstance(provider, RemoteCapability):
                own.append(descriptor)
        return own

    # ---- what peers announce ------------------------------------------------------------

    def announced(
        self,
        node: str,
        agents: list[AgentInfo],
        capabilities: list[CapabilityDescriptor],
        *,
        every_s: float | None = None,
        instance: str = "",
    ) -> bool:
        """A peer's announcement (``every_s``: how often it announces, when it says);
        returns whether the peer is new."""
        now = trio.current_time()
        peer = self.peers.get(node)
        new = peer is None
        if peer is None:
            peer = self.peers[node] = Peer(node, now)
            _log.info("cluster peer joined", node=self.node, peer=node)
        peer.seen = now
        peer.instance = instance
        peer.expiry_s = EXPIRY_PERIODS * every_s if every_s else self.expiry_s
        self._list_agents(peer, agents)
        self._offer(peer, capabilities)
        return new

    def gone(self, node: str, reason: str, instance: str | None = None) -> None:
        """A peer left or went silent: its agents and capabilities go (``instance``: only
        if it is the run that announced last, not a late goodbye of an earlier one)."""
        peer = self.peers.get(node)
        if peer is None or (instance is not None and instance != peer.instance):
            return
        del self.peers[node]
        self._list_agents(peer, [])
        self._offer(peer, [])
        _log.info("cluster peer gone", node=self.node, peer=node, reason=reason)

    def expire(self) -> None:
        """Drop the peers not heard from within their expiry (3 of their periods)."""
        now = trio.current_time()
        for node, peer in list(self.peers.items()):
            expiry = peer.expiry_s or self.expiry_s
            if peer.seen < now - expiry:
                self.gone(node, f"not heard from for {expiry:g} s")

    def clear(self) -> None:
        """Forget every peer (the link stops)."""
        for node in list(self.peers):
            self.gone(node, "this kernel left the cluster")

    def _list_agents(self, peer: Peer, agents: list[AgentInfo]) -> None:
        directory, listed = self._directory, self._listed
        keep = {a.agent_id for a in agents}
        for old in peer.agents:
            if old.agent_id not in keep and listed.get(old.agent_id) == peer.node:
                del listed[old.agent_id]
                if self._is_listing(directory.get(old.agent_id), peer.node):
                    directory.unregister(old.agent_id)  # not if a local agent took the id
        kept = []
        for info in agents:
            current = directory.get(info.agent_id)
            if current is not None and not self._is_listing(current):
                listed.pop(info.agent_id, None)
                continue  # an agent of this kernel has the id: it stays
            holder = listed.get(info.agent_id)
            if holder is not None and holder != peer.node and holder in self.peers:
                continue  # another peer listed it first
            metadata = {**info.metadata, REMOTE_KEY: "cluster", NODE_KEY: peer.node}
            entry = AgentInfo(info.agent_id, info.topics, info.capabilities, metadata)
            if directory.get(info.agent_id) != entry:
                directory.register(entry)
            listed[info.agent_id] = peer.node
            kept.append(info)
        peer.agents = kept

    def _offer(self, peer: Peer, capabilities: list[CapabilityDescriptor]) -> None:
        broker, remote = self._broker, self._remote
        offered = {d.key: d for d in capabilities}
        for descriptor in peer.capabilities:
            proxy = remote.get(descriptor.key)
            if descriptor.key in offered or proxy is None:
                continue
            if peer.node in proxy.nodes:
                proxy.nodes.remove(peer.node)
            if not proxy.nodes:
                del remote[descriptor.key]
                if broker.resolve(descriptor.name, descriptor.version) is proxy:
                    broker.unregister(descriptor.name, descriptor.version)
        for key, descriptor in offered.items():
            proxy = remote.get(key)
            if proxy is None:
                if broker.resolve(descriptor.name, descriptor.version) is not None:
                    continue  # offered here: calls stay here
                proxy = remote[key] = RemoteCapability(descriptor, self._invoke)
                broker.register(proxy)
            if peer.node not in proxy.nodes:
                proxy.nodes.append(peer.node)
        peer.capabilities = list(offered.values())

    def is_proxy(self, provider: object) -> bool:
        """Whether ``provider`` is a peer's capability (a call for it must not be sent on)."""
        return isinstance(provider, RemoteCapability)

    def describe(self) -> dict[str, Any]:
        """The peers as plain data (for stats and dashboards)."""
        now = trio.current_time()
        return {
            node: {
                "agents": len(p.agents),
                "capabilities": len(p.capabilities),
                "seen_s_ago": round(now - p.seen, 3),
            }
            for node, p in sorted(self.peers.items())
        }
