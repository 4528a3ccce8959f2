"""The agents of a linked kernel, listed in the server's directory.

A kernel linked with ``loomk_bridge.connect`` registers as one remote agent (the link) and
names the agents it runs in its registration metadata (``loomk.agents``: a JSON list of
``{"id", "topics", "capabilities"}``). The server lists each of them in its directory,
marked ``loomk.remote=bridge`` and ``loomk.via=<link>``, so ``kernel.directory`` shows every
agent taking part in the bus wherever it runs. The entries follow the link's registrations
and go with it.
"""

from __future__ import annotations

import json
from collections.abc import Sequence

from loomk import AgentDirectory, AgentInfo, InvalidAgentId, TopicError
from loomk.agents import validate_agent_id
from loomk.bus import validate_pattern

__all__ = [
    "AGENTS_KEY",
    "REMOTE_KEY",
    "VIA_KEY",
    "encode_agents",
    "is_listing",
    "linked_agents",
    "list_linked",
    "unlist_linked",
]

MAX_AGENTS_TEXT = 1 << 20
"""Characters of a ``loomk.agents`` value a bridge reads at most."""

AGENTS_KEY = "loomk.agents"
"""RegisterAgent metadata of a link: the agents of the linked kernel (JSON)."""

VIA_KEY = "loomk.via"
"""Directory metadata of an agent of a linked kernel: the link it is reached through."""

REMOTE_KEY = "loomk.remote"
"""Directory metadata marking an agent that lives in another process, behind the bridge."""


def encode_agents(agents: Sequence[AgentInfo]) -> str:
    """The ``loomk.agents`` value listing ``agents``."""
    return json.dumps(
        [
            {"id": a.agent_id, "topics": list(a.topics), "capabilities": list(a.capabilities)}
            for a in agents
        ],
        separators=(",", ":"),
    )


def linked_agents(value: str, limit: int | None = None) -> list[AgentInfo]:
    """The agents a ``loomk.agents`` value lists; ``ValueError`` saying what is wrong.

    ``limit`` bounds how many agents it may list, and how many topics and capabilities
    each (``bridge_max_registration_items``, as for the registration's own lists): every
    listed agent becomes a directory entry, so a registration must not make more of them
    than the bridge takes in one. The count is checked before any entry is."""
    if not value:
        return []
    if len(value) > MAX_AGENTS_TEXT:
        raise ValueError(f"{AGENTS_KEY} is over {MAX_AGENTS_TEXT} characters")
    try:
        listed = json.loads(value)
    except (json.JSONDecodeError, RecursionError) as error:  # nesting too deep: recursion
        raise ValueError(f"{AGENTS_KEY} is not JSON a bridge takes: {error}") from None
    if not isinstance(listed, list):
        raise ValueError(f"{AGENTS_KEY} must be a JSON list of agents")
    if limit is not None and len(listed) > limit:
        raise ValueError(_too_many(f"{len(listed)} agents listed in {AGENTS_KEY}", limit))
    agents: dict[str, AgentInfo] = {}  # one entry per id: the last one listed
    for entry in listed:
        if not isinstance(entry, dict):
            raise ValueError(f"{AGENTS_KEY}: each agent is an object, got {entry!r:.80}")
        agent_id, topics, capabilities = (
            entry.get("id"),
            entry.get("topics", []),
            entry.get("capabilities", []),
        )
        try:
            validate_agent_id(agent_id)
        except InvalidAgentId as error:
            raise ValueError(f"{AGENTS_KEY}: {error}") from None
        for name, items in (("topics", topics), ("capabilities", capabilities)):
            if not isinstance(items, list) or not all(isinstance(i, str) for i in items):
                raise ValueError(f"{AGENTS_KEY}: {name} of {agent_id!r} must be a list of strings")
            if limit is not None and len(items) > limit:
                raise ValueError(
                    _too_many(f"{AGENTS_KEY}: {len(items)} {name} of {agent_id!r}", limit)
                )
        try:  # checked here, so that listing them can fail no more
            for pattern in topics:
                validate_pattern(pattern)
        except TopicError as error:
            raise ValueError(f"{AGENTS_KEY}: a topic of {agent_id!r}: {error}") from None
        agents[str(agent_id)] = AgentInfo(str(agent_id), tuple(topics), tuple(capabilities), {})
    return list(agents.values())


def _too_many(what: str, limit: int) -> str:
    return (
        f"{what}, more than this bridge takes in one registration "
        f"({limit}, bridge_max_registration_items)"
    )


def list_linked(
    directory: AgentDirectory, link_id: str, agents: Sequence[AgentInfo], previous: Sequence[str]
) -> list[str]:
    """Put ``agents`` in ``directory`` as reached through ``link_id``, replacing what the
    link listed before (``previous``); an id another agent holds (an agent of this kernel,
    a remote agent, or another link's listing) is left to it. Returns the ids listed now.

    A listing holds its id loosely: a remote agent that registers the id takes it over
    (see :func:`is_listing`)."""
    now = {a.agent_id for a in agents}
    unlist_linked(directory, link_id, [i for i in previous if i not in now])
    listed = []
    for agent in agents:
        held = directory.get(agent.agent_id)
        if held is not None and held.metadata.get(VIA_KEY) != link_id:
            continue  # an agent of this kernel, or of another link, has the id
        directory.register(
            AgentInfo(
                agent.agent_id,
                agent.topics,
                agent.capabilities,
                {REMOTE_KEY: "bridge", VIA_KEY: link_id},
            )
        )
        listed.append(agent.agent_id)
    return listed


def unlist_linked(directory: AgentDirectory, link_id: str, ids: Sequence[str]) -> None:
    """Take the agents ``ids`` listed through ``link_id`` out of ``directory``."""
    for agent_id in ids:
        held = directory.get(agent_id)
        if held is not None and held.metadata.get(VIA_KEY) == link_id:
            directory.unregister(agent_id)


def is_listing(info: AgentInfo | None) -> bool:
    """Whether the directory entry ``info`` is a linked kernel's listing (it names the link
    it is reached through), not an agent registered here: a remote agent registering its
    id replaces it. A listing is a link's say-so, so it must not keep an id from a real
    agent (any client can list any id)."""
    if info is None:
        return False
    metadata = info.metadata
    return metadata.get(REMOTE_KEY) == "bridge" and bool(metadata.get(VIA_KEY))
