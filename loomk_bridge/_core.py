"""The bridge's state in the kernel: registered remote agents, their streams, their
capabilities in the broker, and their liveness.

Everything here runs in the kernel's thread. The methods the grpclib handlers call from the
asyncio side are synchronous (they only touch plain objects, the directory and the broker),
so a registration or a heartbeat needs no crossing; only work that awaits the kernel
(``forward``, a stream's session) crosses, once per call or per stream.

Liveness: an agent is live while frames arrive on its stream, or unary ``Heartbeat`` calls
arrive on the same connection (Loom's SDK sends one every 15 s and nothing else while idle),
within ``heartbeat_timeout_s``. An agent silent for longer, or registered and never streaming,
is dropped: its stream ends with an ``err`` frame, and its directory entry and capabilities
go. A stream that ends leaves the registration in place until then, so an agent that
reconnects keeps its capabilities; calls meanwhile fail fast with ``PROVIDER_UNAVAILABLE``.

Linked kernels (``loomk_bridge.connect``, metadata ``loomk.link``): a capability two links
offer is served by the first; when it goes, another that offers it takes over. One link name
is held by one process at a time (``loomk.instance``). A linked kernel's agents are listed in
the directory, within the registration's bounds, never under an id the ACL binds to a token
the link did not present, and never in the way of a remote agent that registers the id.
A call forwarded here for a capability this kernel lacks goes on to its own upstream, if it
is itself linked further up.

Access: every registration, stream and forwarded call goes through the server's
:class:`~loomk_bridge._acl.AccessControl` (who is calling, and what its ``bridge_acl`` entry
allows); a registration is also bounded in size (``bridge_max_registration_items``).
"""

from __future__ import annotations

import weakref
from collections.abc import Callable, Collection
from dataclasses import dataclass, field
from typing import Any

import trio

from loomk import (
    ActionCallError,
    ActionResult,
    AgentInfo,
    CapabilityDescriptor,
    CapabilityError,
    ErrorCode,
    InvalidAgentId,
    Kernel,
    ProviderKind,
    TopicError,
)
from loomk.agents import validate_agent_id
from loomk.bus import validate_pattern
from loomk.links import ORIGIN_KEY
from loomk.telemetry.logging import get_logger
from loomk_bridge._acl import AccessControl, AgentPolicy
from loomk_bridge._linked import (
    AGENTS_KEY,
    REMOTE_KEY,
    VIA_KEY,
    is_listing,
    linked_agents,
    list_linked,
    unlist_linked,
)
from loomk_bridge._outbox import Outbox
from loomk_bridge._proto import action_pb2
from loomk_bridge._session import SessionCounters, StreamSession
from loomk_bridge.codec import (
    call_from_proto,
    descriptor_from_proto,
    result_to_proto,
)

__all__ = [
    "BATCH_KEY",
    "INSTANCE_KEY",
    "LINK_KEY",
    "PERMISSION_DENIED",
    "BridgeCore",
    "RemoteAgent",
]

_log = get_logger("loomk.bridge")

BATCH_KEY = "loomk.batch"
"""RegisterAgent metadata: "1" asks for ``delivery_batch`` frames (a loomk extension)."""

_SHUTDOWN = "SHUTDOWN"
_CLOSED = "CLOSED"

PERMISSION_DENIED = "PERMISSION_DENIED"
"""``ActionError.code`` of a forwarded call that ``bridge_acl`` does not allow."""

LINK_KEY = "loomk.link"
"""RegisterAgent metadata of a linked kernel (``loomk_bridge.connect``): capabilities this
kernel already has are left out of its registration instead of refusing it (built-in ones
every kernel has, say)."""

INSTANCE_KEY = "loomk.instance"
"""RegisterAgent metadata of a link: which link (a random id per link object, so per
process) registers. While a link's stream is open, a link of another instance registering
the same id is refused: two processes given one link name would otherwise replace each
other's registration and stream, back and forth, for ever. The same instance (a link
reconnecting) registers again as before."""

_REGISTER = "/loom.v1.Bridge/RegisterAgent"


@dataclass
class RemoteAgent:
    """A registered remote agent."""

    agent_id: str
    topics: tuple[str, ...]
    capabilities: tuple[CapabilityDescriptor, ...]
    metadata: dict[str, str]
    peer: str
    last_seen: float
    session: StreamSession | None = None
    registered_keys: list[tuple[str, str]] = field(default_factory=list)
    linked: list[str] = field(default_factory=list)  # agents of a linked kernel it lists
    shadowed: list[CapabilityDescriptor] = field(default_factory=list)
    """What a link offered that another remote agent already offered here: left out, and
    taken over when that one stops offering it (so the capability stays while any link
    that has it is here)."""

    @property
    def streaming(self) -> bool:
        """Whether its stream is open."""
        return self.session is not None and not self.session.ended.is_set()


class RemoteCapability:
    """A capability offered by a remote agent: invoking it pushes the call down the agent's
    stream and waits for the result it sends back (bounded by the broker's timeout)."""

    def __init__(self, descriptor: CapabilityDescriptor, agent_id: str, core: BridgeCore) -> None:
        self._descriptor = descriptor
        self._agent_id = agent_id
        self._core = core

    @property
    def agent_id(self) -> str:
        """The remote agent that offers it."""
        return self._agent_id

    @property
    def descriptor(self) -> CapabilityDescriptor:
        return self._descriptor

    async def invoke(self, call: Any) -> ActionResult:
        session = self._core.session_of(self._agent_id)
        if session is None or session.ended.is_set():
            return ActionResult.failure(
                call.id,
                ErrorCode.PROVIDER_UNAVAILABLE,
                f"remote agent {self._agent_id!r} offers {self._descriptor.key} but has no "
                "open stream (it is disconnected or has not connected yet)",
            )
        return await session.call(call)


class BridgeCore:
    """Registrations, streams and liveness of remote agents (see the module)."""

    def __init__(
        self,
        kernel: Kernel,
        *,
        heartbeat_timeout_s: float,
        access: AccessControl | None = None,
        max_payload_bytes: int | None = None,
        max_registration_items: int | None = None,
    ) -> None:
        config = kernel.config
        self.kernel = kernel
        self.heartbeat_timeout_s = heartbeat_timeout_s
        self.access = (
            access if access is not None else AccessControl(config.bridge_acl, config.bridge_token)
        )
        self.max_payload_bytes = (
            config.bridge_max_payload_bytes if max_payload_bytes is None else max_payload_bytes
        )
        self.max_registration_items = (
            config.bridge_max_registration_items
            if max_registration_items is None
            else max_registration_items
        )
        self.agents: dict[str, RemoteAgent] = {}
        self.dropped = 0
        self.totals = SessionCounters()  # what ended streams carried
        self._unregistered: set[StreamSession] = set()  # streams of agents never registered
        # ended sessions whose counters are in the totals (weakly: they must not pile up)
        self._ended: weakref.WeakSet[StreamSession] = weakref.WeakSet()
        self.changed = trio.Event()  # set and replaced on every change (tests, dashboards)

    def _changed(self) -> None:
        self.changed.set()
        self.changed = trio.Event()

    # ---- registration (asyncio side, synchronous) --------------------------------------

    @property
    def refused(self) -> int:
        """Calls refused for a missing or wrong token."""
        return self.access.refused

    def register(self, request: Any, peer: str, authorization: str | None = None) -> str:
        """Register or re-register a remote agent; "" on success, else why not (Loom
        answers with ``success=false`` rather than a gRPC error).

        Raises :class:`~loomk_bridge._acl.AccessDenied` when ``authorization`` cannot claim
        the agent id, or the agent's ``bridge_acl`` rules do not allow a topic or capability
        it asks for; nothing changes then (an earlier registration stays as it was)."""
        agent_id = request.agent_id
        if not agent_id:
            return "agent_id cannot be empty"  # Loom's words
        try:
            validate_agent_id(agent_id)
        except InvalidAgentId as error:
            return str(error)
        self.access.identify(agent_id, authorization, peer=peer, method=_REGISTER)
        too_many = self._too_many(request)
        if too_many:
            return f"agent {agent_id!r}: {too_many}"
        metadata = dict(request.metadata)
        is_link = bool(metadata.get(LINK_KEY))
        known = self.agents.get(agent_id)
        held = self.kernel.directory.get(agent_id)
        if _held_here(held, known):  # spawned since, if the remote agent had it
            return f"agent_id {agent_id!r} is taken by an agent of this kernel"
        if known is not None and is_link:
            clash = _other_instance(known, metadata)
            if clash:
                return clash
        topics = tuple(dict.fromkeys(request.subscribed_topics))
        try:
            for pattern in topics:
                validate_pattern(pattern)
            capabilities = tuple(descriptor_from_proto(d) for d in request.capabilities)
        except (TopicError, CapabilityError) as error:
            return f"agent {agent_id!r}: {error}"
        try:
            linked = (
                linked_agents(metadata.get(AGENTS_KEY, ""), self.max_registration_items)
                if is_link
                else []
            )
        except ValueError as error:
            return f"agent {agent_id!r}: {error}"
        broker = self.kernel.broker
        own = set(known.registered_keys) if known is not None else set()
        kept, taken = [], []  # free (or its own already), and offered by another provider
        for descriptor in capabilities:
            provider = broker.resolve(descriptor.name, descriptor.version)
            if provider is None or (descriptor.name, descriptor.version) in own:
                kept.append(descriptor)
            else:
                taken.append((descriptor, provider))
        # what a link offers that this kernel has is left out, not checked
        offered = [d.name for d in (kept if is_link else capabilities)]
        self.access.check_registration(agent_id, topics, offered, peer)
        if taken and not is_link:
            return (
                f"agent {agent_id!r}: capability {taken[0][0].key} is already offered "
                "by another provider of this kernel"
            )
        rules = self.access.rules_for(agent_id)
        shadowed = []
        for descriptor, provider in taken:  # a linked kernel: each side serves its own calls
            _log.info(
                "linked capability already offered here", agent=agent_id, capability=descriptor.key
            )
            if isinstance(provider, RemoteCapability) and rules.may_offer(descriptor.name):
                shadowed.append(_as_remote(descriptor))  # its own, once the other goes
        # nothing refused it: from here on it changes the bridge's state
        linked = self._listable(agent_id, linked)
        released: list[tuple[str, str]] = []
        if known is not None:
            released = self._unregister_capabilities(known)
        elif held is not None:  # a linked kernel's listing: a real agent takes the id over
            self._take_from_listing(held, agent_id)
        agent = RemoteAgent(
            agent_id,
            topics,
            tuple(_as_remote(descriptor) for descriptor in kept),
            metadata,
            peer,
            trio.current_time(),
            session=known.session if known is not None else None,
            shadowed=shadowed,
        )
        for descriptor in agent.capabilities:
            broker.register(RemoteCapability(descriptor, agent_id, self))
            agent.registered_keys.append((descriptor.name, descriptor.version))
        self.agents[agent_id] = agent
        self._list(agent)
        agent.linked = list_linked(
            self.kernel.directory, agent_id, linked, known.linked if known is not None else []
        )
        if agent.session is not None:  # re-registered while streaming: follow the topics
            for pattern in agent.session.topics:
                if pattern not in topics:
                    agent.session.unsubscribe(pattern)
            for pattern in topics:
                agent.session.subscribe(pattern)
        self._hand_over(released)
        _log.info("remote agent registered", agent=agent_id, peer=peer, topics=list(topics))
        self._changed()
        return ""

    def _list(self, agent: RemoteAgent) -> None:
        """Put (or put again) ``agent``'s entry in the kernel's directory, with its metadata
        but ``loomk.via``: that marks a link's listing, which only the bridge writes (an
        agent claiming it would pass for a listing, and a link could take its entry)."""
        if _held_here(self.kernel.directory.get(agent.agent_id), agent):
            return  # an agent of this kernel has taken the id since: it stays
        metadata = {key: value for key, value in agent.metadata.items() if key != VIA_KEY}
        metadata.update({REMOTE_KEY: "bridge", "peer": agent.peer})
        self.kernel.directory.register(
            AgentInfo(
                agent.agent_id, agent.topics, tuple(d.name for d in agent.capabilities), metadata
            )
        )

    def _listable(self, link_id: str, listed: list[AgentInfo]) -> list[AgentInfo]:
        """The agents of ``listed`` link ``link_id`` may list: not those whose id the ACL
        binds to a token (such an agent must register itself, with its token; a listing
        would let anyone show an agent under a protected id). Logged once per registration."""
        acl = self.access.acl
        kept = [a for a in listed if not ((entry := acl.get(a.agent_id)) and entry.token)]
        if len(kept) < len(listed):
            _log.warning(
                "linked agents not listed: their ids are bound to tokens",
                link=link_id,
                skipped=len(listed) - len(kept),
            )
        return kept

    def _take_from_listing(self, held: AgentInfo, agent_id: str) -> None:
        """A remote agent registers an id a link lists: the link no longer lists it (its
        entry is replaced by the agent's, and the link's later registrations leave it)."""
        link = self.agents.get(held.metadata.get(VIA_KEY, ""))
        if link is not None and agent_id in link.linked:
            link.linked.remove(agent_id)
        _log.info(
            "remote agent takes over a linked listing",
            agent=agent_id,
            link=held.metadata.get(VIA_KEY),
        )

    def _too_many(self, request: Any) -> str:
        """Why a registration is too large to take, or ""."""
        limit = self.max_registration_items
        for what, count in (
            ("topics", len(request.subscribed_topics)),
            ("capabilities", len(request.capabilities)),
            ("metadata entries", len(request.metadata)),
        ):
            if count > limit:
                return (
                    f"{count} {what}, more than this bridge takes in one registration "
                    f"({limit}, bridge_max_registration_items)"
                )
        return ""

    def heartbeat(self, peer: str) -> None:
        """A unary Heartbeat: every agent streaming over that connection is live."""
        now = trio.current_time()
        for agent in self.agents.values():
            if agent.peer == peer:
                agent.last_seen = now

    # ---- streams -----------------------------------------------------------------------

    def open_session(self, agent_id: str, outbox: Outbox, peer: str) -> StreamSession:
        """A session for a new stream of ``agent_id``, replacing the agent's previous one."""
        agent = self.agents.get(agent_id)
        topics = agent.topics if agent is not None else ()
        metadata = agent.metadata if agent is not None else {}
        session = StreamSession(
            agent_id,
            bus=self.kernel.bus,
            outbox=outbox,
            topics=topics,
            batches=metadata.get(BATCH_KEY) == "1",
            origin=metadata.get(ORIGIN_KEY, ""),
            slow_consumer_s=self.heartbeat_timeout_s / 2,
            policy=AgentPolicy(self.access, agent_id, peer),
            max_payload_bytes=self.max_payload_bytes,
            # loom-py neither links nor asks for batches: only its streams need its keys
            loom_sdk_keys=not metadata.get(LINK_KEY) and metadata.get(BATCH_KEY) != "1",
            senders=self._senders_of(agent_id) if self.access.acl else None,
        )
        if agent is not None:
            previous = agent.session
            if previous is not None:
                previous.end("REPLACED", f"a new stream of agent {agent_id!r} replaced this one")
            agent.session = session
            agent.peer = peer
            agent.last_seen = trio.current_time()
        else:  # Loom lets an unregistered agent stream: it publishes, and gets no deliveries
            self._unregistered.add(session)
        self._changed()
        return session

    def _senders_of(self, agent_id: str) -> Callable[[], Collection[str]]:
        """The agent ids a stream of ``agent_id`` may name as an event's sender: its own,
        and for a link the agents it lists (asked anew as its registration changes)."""

        def senders() -> Collection[str]:
            agent = self.agents.get(agent_id)
            return (agent_id, *agent.linked) if agent is not None else (agent_id,)

        return senders

    def session_ended(self, session: StreamSession) -> None:
        """Forget ``session`` if it is still its agent's current one (a replaced stream's
        end must not take its successor with it)."""
        if session in self._ended:
            return
        session.close()
        self._ended.add(session)
        self.totals.add(session.counters)
        self._unregistered.discard(session)
        agent = self.agents.get(session.agent_id)
        if agent is not None and agent.session is session:
            agent.session = None
            if session.client_ended and agent.metadata.get(LINK_KEY):
                # a linked kernel that closes its stream has left: its agents go now
                self.drop(agent.agent_id, _CLOSED, f"link {agent.agent_id!r} closed")
        self._changed()

    def session_of(self, agent_id: str) -> StreamSession | None:
        agent = self.agents.get(agent_id)
        return agent.session if agent is not None else None

    # ---- liveness ----------------------------------------------------------------------

    def drop_silent(self) -> list[str]:
        """Drop every agent silent for longer than the heartbeat timeout; their ids."""
        now = trio.current_time()
        silent = []
        for agent in list(self.agents.values()):
            seen = agent.last_seen
            if agent.session is not None:
                seen = max(seen, agent.session.last_seen)
            if now - seen > self.heartbeat_timeout_s:
                silent.append(agent.agent_id)
                self.drop(
                    agent.agent_id,
                    "HEARTBEAT_TIMEOUT",
                    f"no frame or heartbeat from agent {agent.agent_id!r} for "
                    f"{self.heartbeat_timeout_s:g} s",
                )
        return silent

    def drop(self, agent_id: str, code: str, message: str) -> None:
        """Remove a remote agent: end its stream, unregister its capabilities and entry."""
        agent = self.agents.pop(agent_id, None)
        if agent is None:
            return
        if code not in (_SHUTDOWN, _CLOSED):
            self.dropped += 1
        if agent.session is not None:
            agent.session.end(code, message)
        released = self._unregister_capabilities(agent)
        info = self.kernel.directory.get(agent_id)
        if info is not None and info.metadata.get(REMOTE_KEY) == "bridge":  # still ours
            self.kernel.directory.unregister(agent_id)
        unlist_linked(self.kernel.directory, agent_id, agent.linked)
        if code != _SHUTDOWN:  # all go: nobody to hand capabilities to
            self._hand_over(released)
        log = _log.info if code in (_SHUTDOWN, _CLOSED) else _log.warning
        log("remote agent dropped", agent=agent_id, code=code, reason=message)
        self._changed()

    def _unregister_capabilities(self, agent: RemoteAgent) -> list[tuple[str, str]]:
        """Take the agent's capabilities out of the broker, unless another provider has
        replaced them there since (``broker.register`` replaces silently); the
        ``(name, version)`` keys taken out."""
        broker = self.kernel.broker
        released = []
        for name, version in agent.registered_keys:
            provider = broker.resolve(name, version)
            if isinstance(provider, RemoteCapability) and provider.agent_id == agent.agent_id:
                broker.unregister(name, version)
                released.append((name, version))
        agent.registered_keys.clear()
        return released

    def _hand_over(self, released: list[tuple[str, str]]) -> None:
        """Register each released capability nobody offers now for another remote agent
        that offered it too (a link whose offer was left out because this one had it):
        one with an open stream first. Its directory entry follows."""
        broker = self.kernel.broker
        for name, version in released:
            if broker.resolve(name, version) is not None:
                continue
            heir: tuple[RemoteAgent, CapabilityDescriptor] | None = None
            for candidate in self.agents.values():
                for descriptor in candidate.shadowed:
                    if descriptor.name == name and descriptor.version == version:
                        if heir is None or (candidate.streaming and not heir[0].streaming):
                            heir = (candidate, descriptor)
                        break
            if heir is None:
                continue
            agent, descriptor = heir
            agent.shadowed.remove(descriptor)
            broker.register(RemoteCapability(descriptor, agent.agent_id, self))
            agent.registered_keys.append((name, version))
            agent.capabilities = (*agent.capabilities, descriptor)
            self._list(agent)
            _log.info("capability handed over", agent=agent.agent_id, capability=descriptor.key)

    def close(self) -> None:
        """The server stops: every stream ends, every remote agent goes."""
        for agent_id in list(self.agents):
            self.drop(agent_id, _SHUTDOWN, "the bridge server is shutting down")
        for session in list(self._unregistered):
            session.end(_SHUTDOWN, "the bridge server is shutting down")

    # ---- ForwardAction (trio side) -----------------------------------------------------

    async def forward(self, message: Any, caller: str | None = None, peer: str = "") -> Any:
        """Run a forwarded call of ``caller`` (an agent id, None when the call names none)
        through the broker; always an ``ActionResult`` message. A capability outside the
        caller's ``call`` rules is refused before the broker is asked (so a refusal says
        nothing about what exists): ``ACTION_ERROR`` with code ``PERMISSION_DENIED``. One no
        provider here offers is ``BROKER_ERROR``, unless this kernel is itself linked to
        another (the broker has an upstream): then it goes on there, so a call from a kernel
        linked below reaches the capabilities further up."""
        try:
            call = call_from_proto(message)
        except ActionCallError as error:
            return result_to_proto(
                ActionResult.failure(message.id, ErrorCode.INVALID_PARAMS, str(error))
            )
        if not self.access.rules_for(caller).may_call(call.capability):
            refusal = self.access.deny(caller, peer, "call", call.capability)
            return action_pb2.ActionResult(
                id=call.id,
                status=action_pb2.ACTION_ERROR,
                error=action_pb2.ActionError(
                    code=PERMISSION_DENIED,
                    message=refusal,
                    details={"capability": call.capability, "agent": caller or ""},
                ),
            )
        broker = self.kernel.broker
        if broker.resolve(call.capability, call.version) is None and broker.upstream is None:
            wanted = f"{call.capability}:{call.version}" if call.version else call.capability
            return action_pb2.ActionResult(
                id=call.id,
                status=action_pb2.ACTION_ERROR,
                error=action_pb2.ActionError(
                    code="BROKER_ERROR",  # Loom's code for a call the broker cannot route
                    message=f"no provider for capability {wanted}",
                    details={"reason": ErrorCode.PROVIDER_UNAVAILABLE},
                ),
            )
        # a kernel linked further up sends what it lacks on (the broker's upstream)
        return result_to_proto(await broker.invoke(call))


def _held_here(held: AgentInfo | None, known: RemoteAgent | None) -> bool:
    """Whether directory entry ``held`` is an agent of this kernel's: neither a linked
    kernel's listing (which a remote agent takes over) nor the registered remote agent
    ``known``'s own entry."""
    if held is None or is_listing(held):
        return False
    own = (
        known is not None
        and held.metadata.get(REMOTE_KEY) == "bridge"
        and VIA_KEY not in held.metadata
    )
    return not own


def _as_remote(descriptor: CapabilityDescriptor) -> CapabilityDescriptor:
    if descriptor.provider is ProviderKind.PROVIDER_GRPC:
        return descriptor
    return CapabilityDescriptor(
        descriptor.name, descriptor.version, ProviderKind.PROVIDER_GRPC, dict(descriptor.metadata)
    )


def _other_instance(known: RemoteAgent, metadata: dict[str, str]) -> str:
    """Why a link registration (``metadata``) may not take ``known``'s id: it comes from
    another link instance (another process given the same link name) while ``known``'s
    stream is open; "" when it may (the same instance reconnecting, a stream that ended,
    or a side that does not say its instance)."""
    held_by = known.metadata.get(INSTANCE_KEY, "")
    instance = metadata.get(INSTANCE_KEY, "")
    if (
        not known.metadata.get(LINK_KEY)
        or not held_by
        or not instance
        or instance == held_by
        or not known.streaming
    ):
        return ""
    return (
        f"agent {known.agent_id!r} is already linked from another process (instance "
        f"{held_by}); give each process its own link name"
    )
