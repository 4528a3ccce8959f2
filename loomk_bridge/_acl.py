"""Who may do what through the bridge: bearer tokens, agent tokens and ``bridge_acl``.

:class:`AccessControl` answers three questions for the handlers:

- *Which tokens open the door* (:meth:`AccessControl.token_accepted`): with ``bridge_token``
  set, every call must carry ``authorization: Bearer <token>`` with it or with one of the
  agent tokens of ``bridge_acl``.
- *Who is calling* (:meth:`AccessControl.identify`): a call claims an agent id (RegisterAgent's
  ``agent_id``, the stream's Ack, ForwardAction's ``x-agent-id`` header). A token bound to an
  agent id in ``bridge_acl`` acts as that id only, and an id with a bound token is claimed only
  with it; anything else is ``UNAUTHENTICATED``.
- *What that agent may do* (:class:`Rules`): its own entry, else the ``"*"`` entry, else
  nothing; no ``bridge_acl`` at all allows everything. Publishing checks the topic against
  ``publish``; a subscription pattern must be *covered* by ``subscribe`` (every topic it can
  match is allowed, :func:`pattern_covers`); ``call`` and ``offer`` match capability names.
  An agent may always subscribe to its own reply topic ``agent.{id}.replies`` (Loom's SDK
  registers it for every agent).

Every refusal is counted (the bridge's stats) and written to the audit log
(:mod:`loomk_bridge._audit`).
"""

from __future__ import annotations

import hmac
from collections.abc import Iterable, Mapping, Sequence
from typing import NoReturn

from grpclib.const import Status

from loomk import agent_reply_topic
from loomk.bus import pattern_matches
from loomk.config import BridgeAcl
from loomk_bridge._audit import AuditLog

__all__ = [
    "ACTIONS",
    "ALLOW_ALL",
    "CALLER_HEADER",
    "DENY_ALL",
    "AccessControl",
    "AccessDenied",
    "AgentPolicy",
    "Rules",
    "pattern_covers",
]

ACTIONS: tuple[str, ...] = ("publish", "subscribe", "call", "offer")
"""What ``bridge_acl`` governs; ``authenticate`` is audited too, and counted as refused."""

CALLER_HEADER = "x-agent-id"
"""ActionCall header naming the calling agent (Loom's SDK sends it with every call)."""

_PUBLISH_CACHE = 4096  # topics whose publish decision one Rules remembers
_TARGET_SHOWN = 200  # characters of a denied target in messages and audit records


class AccessDenied(Exception):
    """A call refused: the gRPC ``status`` and a message for the client."""

    def __init__(self, status: Status, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def pattern_covers(allowed: Iterable[str], requested: str) -> bool:
    """Whether every topic ``requested`` can match is matched by one of ``allowed``.

    Patterns use the bus's grammar: ``*`` is one token, ``>`` one or more trailing tokens.
    ``sensor.>`` covers ``sensor.*.temp``; ``sensor.*`` does not cover ``sensor.>``; the
    union counts: ``a.*`` and ``a.*.>`` together cover ``a.>``.
    """
    return _covers([tuple(p.split(".")) for p in allowed], tuple(requested.split(".")))


def _covers(allowed: list[tuple[str, ...]], requested: tuple[str, ...]) -> bool:
    if not requested:
        return any(not pattern for pattern in allowed)
    if any(pattern == (">",) for pattern in allowed):
        return True  # one or more tokens remain: '>' takes them all
    head, rest = requested[0], requested[1:]
    if head == ">":  # one token then nothing, or one token then one or more
        return _covers(allowed, ("*",)) and _covers(allowed, ("*", ">"))
    if head == "*":  # any token, one nobody names among them: only '*' takes it
        return _covers([p[1:] for p in allowed if p and p[0] == "*"], rest)
    return _covers([p[1:] for p in allowed if p and p[0] in ("*", head)], rest)


class Rules:
    """What one agent may do: the compiled lists of its ``bridge_acl`` entry."""

    __slots__ = ("_call", "_offer", "_publish", "_published", "_subscribe", "everything")

    def __init__(
        self,
        publish: Sequence[str],
        subscribe: Sequence[str],
        call: Sequence[str],
        offer: Sequence[str],
    ) -> None:
        self._publish = tuple(publish)
        self._subscribe = tuple(subscribe)
        self._call = tuple(call)
        self._offer = tuple(offer)
        self._published: dict[str, bool] = {}
        self.everything = all(
            lst == (">",) for lst in (self._publish, self._subscribe, self._call, self._offer)
        )
        """No restriction on topics and capabilities (no ``bridge_acl``, or an entry that
        allows ``>`` everywhere): those checks can be skipped."""

    def may_publish(self, topic: str) -> bool:
        if self.everything:
            return True
        known = self._published.get(topic)
        if known is None:
            if len(self._published) >= _PUBLISH_CACHE:
                self._published.clear()
            known = self._published[topic] = any(
                pattern_matches(pattern, topic) for pattern in self._publish
            )
        return known

    def may_subscribe(self, pattern: str, agent_id: str = "") -> bool:
        if self.everything or (agent_id and pattern == agent_reply_topic(agent_id)):
            return True
        return pattern_covers(self._subscribe, pattern)

    def may_call(self, capability: str) -> bool:
        return self.everything or any(pattern_matches(p, capability) for p in self._call)

    def may_offer(self, capability: str) -> bool:
        return self.everything or any(pattern_matches(p, capability) for p in self._offer)


ALLOW_ALL = Rules((">",), (">",), (">",), (">",))
DENY_ALL = Rules((), (), (), ())


class AccessControl:
    """Tokens, identities and rules of one bridge server (see the module)."""

    def __init__(self, acl: BridgeAcl, token: str, audit: AuditLog | None = None) -> None:
        self.acl = acl
        self.audit = audit if audit is not None else AuditLog()
        self._token = token.encode()
        self._agent_tokens = [
            (entry.token.encode(), agent) for agent, entry in acl.items() if entry.token
        ]
        self._rules: dict[str, Rules] = {}
        self.refused = 0  # calls refused for their token (UNAUTHENTICATED)
        self.denied: dict[str, int] = dict.fromkeys(ACTIONS, 0)  # by action

    @property
    def needs_token(self) -> bool:
        """Whether every call must carry a token (``bridge_token`` is set)."""
        return bool(self._token)

    # ---- who is calling ------------------------------------------------------------------

    def token_accepted(self, authorization: str | None) -> bool:
        """Whether ``authorization`` carries ``bridge_token`` or an agent's token."""
        given = _bearer(authorization)
        if given is None:
            return False
        found = hmac.compare_digest(given, self._token)
        return self._owner(given) is not None or found

    def identify(
        self, agent_id: str | None, authorization: str | None, *, peer: str, method: str
    ) -> str | None:
        """The agent id a call acts as: the one it claims, else the one its token is bound
        to (None: anonymous, governed by the ``"*"`` entry). Raises :class:`AccessDenied`
        (``UNAUTHENTICATED``, audited) when the claim and the token do not fit."""
        given = _bearer(authorization)
        owner = self._owner(given) if given is not None else None
        if not agent_id:
            return owner
        entry = self.acl.get(agent_id)
        if owner is not None and owner != agent_id:
            self.refuse(
                agent_id,
                peer,
                method,
                f"the token presented is agent {owner!r}'s",
                "the token presented is bound to another agent id (bridge_acl)",
            )
        if entry is not None and entry.token and owner != agent_id:
            self.refuse(
                agent_id,
                peer,
                method,
                "the agent's own token is missing or wrong",
                f"agent {agent_id!r} must present its own token "
                "(authorization: Bearer <token>, bridge_acl)",
            )
        return agent_id

    def refuse(
        self, agent_id: str | None, peer: str, method: str, reason: str, message: str
    ) -> NoReturn:
        """Count, audit and raise an ``UNAUTHENTICATED`` refusal of ``method``."""
        self.refused += 1
        self.audit.denied(
            agent=agent_id, peer=peer, action="authenticate", target=method, reason=reason
        )
        raise AccessDenied(Status.UNAUTHENTICATED, message)

    def _owner(self, given: bytes) -> str | None:
        """The agent whose bound token ``given`` is; every token compared in constant time."""
        owner = None
        for token, agent in self._agent_tokens:
            if hmac.compare_digest(given, token):
                owner = agent
        return owner

    # ---- what it may do ------------------------------------------------------------------

    def rules_for(self, agent_id: str | None) -> Rules:
        """The agent's rules: its entry, else ``"*"``'s, else none; all without an ACL."""
        if not self.acl:
            return ALLOW_ALL
        entry = self.acl.entry_for(agent_id) if agent_id else self.acl.get("*")
        if entry is None:
            return DENY_ALL
        key = agent_id if agent_id and agent_id in self.acl else "*"
        rules = self._rules.get(key)
        if rules is None:
            rules = self._rules[key] = Rules(
                entry.publish, entry.subscribe, entry.call, entry.offer
            )
        return rules

    def deny(self, agent_id: str | None, peer: str, action: str, target: str) -> str:
        """Count and audit a denied ``action`` on ``target``; the message for the client
        (a long target, a garbage topic say, is cut short in both)."""
        self.denied[action] += 1
        if len(target) > _TARGET_SHOWN:
            target = target[:_TARGET_SHOWN] + "..."
        who = f"agent {agent_id!r}" if agent_id else "an agent that names none"
        reason = f"not allowed by bridge_acl ({who})"
        self.audit.denied(agent=agent_id, peer=peer, action=action, target=target, reason=reason)
        verb = {"publish": "publish on", "subscribe": "subscribe to"}.get(action, action)
        return f"{who} may not {verb} {target!r} (bridge_acl)"

    def check_registration(
        self, agent_id: str, topics: Iterable[str], capabilities: Iterable[str], peer: str
    ) -> None:
        """Raise :class:`AccessDenied` (``PERMISSION_DENIED``) naming every topic and
        capability of a registration outside the agent's rules (each one audited)."""
        rules = self.rules_for(agent_id)
        if rules.everything:
            return
        refused = [
            self.deny(agent_id, peer, "subscribe", pattern)
            for pattern in topics
            if not rules.may_subscribe(pattern, agent_id)
        ]
        refused += [
            self.deny(agent_id, peer, "offer", name)
            for name in dict.fromkeys(capabilities)
            if not rules.may_offer(name)
        ]
        if refused:
            raise AccessDenied(Status.PERMISSION_DENIED, "; ".join(refused))

    def counts(self) -> Mapping[str, int]:
        """Denials by action (a copy)."""
        return dict(self.denied)


class AgentPolicy:
    """One agent's rules, with what a denial needs to say who and where (a stream's view)."""

    __slots__ = ("_access", "agent_id", "peer", "rules")

    def __init__(self, access: AccessControl, agent_id: str, peer: str) -> None:
        self._access = access
        self.agent_id = agent_id
        self.peer = peer
        self.rules = access.rules_for(agent_id)

    def deny(self, action: str, target: str) -> str:
        """Count and audit a denial; the message for the client."""
        return self._access.deny(self.agent_id, self.peer, action, target)


def _bearer(authorization: str | None) -> bytes | None:
    """The token of ``Bearer <token>`` (the scheme in any case), else None."""
    if not isinstance(authorization, str):
        return None
    scheme, _, token = authorization.partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token:
        return None
    try:
        return token.encode("ascii")
    except UnicodeEncodeError:
        return None
