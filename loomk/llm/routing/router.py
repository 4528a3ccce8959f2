"""The model router: per event, the local model, the cloud, or both.

It keeps the decision table of Loom's router, first match wins:

1. ``local-only`` privacy: Local, "Privacy policy requires local-only processing".
2. The local estimator reads the event type and is confident enough
   (``quality_threshold``): Local.
3. ``latency_budget_ms`` < 100: Local ("Latency budget too tight for cloud").
4. The cloud would cost more than ``cost_cap_per_event``: LocalFallback.
5. Read with confidence > 0.5: Hybrid (local quick pass, cloud refine).
6. Otherwise: Cloud.

The estimator reads an event when it supports its type, or when the policy's
``event_types`` (an agent's ``routing.event_types``) name the type: an agent declares the
types it asks about, and the estimator scores them from their text. An event it does not
read gets confidence 0 and, whatever the route, a reason that says so: which model does
not read which type, and which types it does read when the estimator can describe them
(:class:`DescribesEventTypes`).

Unlike Loom, every privacy level counts. The effective level is the stricter of the
policy's and the event's ``privacy`` metadata; an event label that names no level counts
as ``private`` (it may mean something stricter). ``local-only`` and ``private`` never reach
the cloud: what would have gone there stays local, with the reason saying why.
``sensitive`` may go, but only through :meth:`ModelRouter.mask_for_cloud`, which masks the
configured fields in the event's metadata and JSON payload. With no cloud model configured,
cloud-bound events fall back to the local model.
"""

from __future__ import annotations

import enum
import json
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any, Protocol, runtime_checkable

from loomk.events import Event
from loomk.llm.routing.decision import Route, RoutingDecision

__all__ = [
    "CLOUD_COSTS",
    "DEFAULT_MASKED_FIELDS",
    "MASK",
    "ConfidenceEstimator",
    "DescribesEventTypes",
    "ModelRouter",
    "PrivacyLevel",
    "RouterStats",
    "RoutingPolicy",
]

MASK = "[masked]"
DEFAULT_MASKED_FIELDS = (
    "user_id",
    "user",
    "name",
    "email",
    "phone",
    "address",
    "location",
    "ip",
    "account",
    "session_id",
)
CLOUD_COSTS: dict[str, float] = {"video_frame": 0.005, "audio_chunk": 0.002, "intent": 0.01}
_DEFAULT_COST = 0.001
LOCAL_LATENCY_MS = 50
HYBRID_LATENCY_MS = 300
CLOUD_LATENCY_MS = 500


class PrivacyLevel(enum.Enum):
    """How far an event may travel, least to most strict."""

    PUBLIC = "public"
    SENSITIVE = "sensitive"
    PRIVATE = "private"
    LOCAL_ONLY = "local-only"

    @classmethod
    def parse(
        cls, text: str | None, default: PrivacyLevel, unknown: PrivacyLevel | None = None
    ) -> PrivacyLevel:
        """The level named by ``text`` (any case; ``local_only``, ``local only`` and
        ``localonly`` too); ``default`` when absent, ``unknown`` (else ``default``) when it
        names no level."""
        if not text:
            return default
        name = "-".join(text.strip().lower().replace("_", " ").replace("-", " ").split())
        try:
            return cls("local-only" if name == "localonly" else name)
        except ValueError:
            return default if unknown is None else unknown

    @property
    def rank(self) -> int:
        """Strictness: 0 (public) to 3 (local-only)."""
        return list(PrivacyLevel).index(self)

    @property
    def cloud_allowed(self) -> bool:
        """Whether events at this level may reach a cloud model."""
        return self.rank <= PrivacyLevel.SENSITIVE.rank


@dataclass(frozen=True, slots=True)
class RoutingPolicy:
    """Loom's routing policy, plus the fields masked before a sensitive event goes out and
    the event types the local estimator is asked about beyond those it reads by itself
    (``event_types``: their confidence is estimated from their text, as for its own)."""

    privacy_level: PrivacyLevel = PrivacyLevel.SENSITIVE
    latency_budget_ms: int = 200
    cost_cap_per_event: float = 0.01
    quality_threshold: float = 0.85
    masked_fields: tuple[str, ...] = DEFAULT_MASKED_FIELDS
    event_types: frozenset[str] = frozenset()

    def overridden(self, parameters: Mapping[str, str]) -> RoutingPolicy:
        """This policy with Loom's ``routing.*`` parameters applied (agent metadata).

        Keys: ``routing.privacy``, ``routing.latency_budget_ms``, ``routing.cost_cap``,
        ``routing.quality_threshold``, and loomk's ``routing.masked_fields`` and
        ``routing.event_types`` (both comma-separated; blanks around names are dropped).
        An unparsable value keeps the current one, as in Loom.
        """
        changes: dict[str, Any] = {}
        if "routing.privacy" in parameters:
            changes["privacy_level"] = PrivacyLevel.parse(
                parameters["routing.privacy"], self.privacy_level
            )
        budget = _number(parameters.get("routing.latency_budget_ms"), int)
        if budget is not None and budget >= 0:
            changes["latency_budget_ms"] = budget
        cap = _number(parameters.get("routing.cost_cap"), float)
        if cap is not None and cap >= 0:
            changes["cost_cap_per_event"] = cap
        threshold = _number(parameters.get("routing.quality_threshold"), float)
        if threshold is not None and 0 <= threshold <= 1:
            changes["quality_threshold"] = threshold
        masked = parameters.get("routing.masked_fields")
        if isinstance(masked, str):
            changes["masked_fields"] = _names(masked)
        asked = parameters.get("routing.event_types")
        if isinstance(asked, str):
            changes["event_types"] = frozenset(_names(asked))
        return replace(self, **changes) if changes else self


class ConfidenceEstimator(Protocol):
    """How sure the local model would be about an event (the local model implements it)."""

    @property
    def name(self) -> str:
        """Shown in logs."""
        ...

    def supports_event_type(self, event_type: str) -> bool:
        """Whether it can handle events of this type at all."""
        ...

    async def estimate_confidence(self, event: Event) -> float:
        """Its confidence, 0.0 to 1.0, that it would handle ``event`` well."""
        ...


@runtime_checkable
class DescribesEventTypes(Protocol):
    """An estimator that can say which event types it reads (the local model does): the
    router names them when it meets a type the estimator does not read."""

    def describe_event_types(self) -> str:
        """The types it reads, in words: "user.query, text and types ending in .query"."""
        ...


@dataclass(frozen=True, slots=True)
class RouterStats:
    """How many decisions went each way, as :meth:`ModelRouter.stats` saw them (a snapshot:
    ``by_route``, keyed by route value, is a copy)."""

    decisions: int = 0
    by_route: dict[str, int] = field(default_factory=dict)

    def rate(self, route: Route) -> float:
        """The share of decisions that chose ``route``."""
        return self.by_route.get(route.value, 0) / self.decisions if self.decisions else 0.0

    @property
    def local_rate(self) -> float:
        """Share handled locally (Local and LocalFallback)."""
        return self.rate(Route.LOCAL) + self.rate(Route.LOCAL_FALLBACK)

    @property
    def cloud_rate(self) -> float:
        """Share sent to the cloud alone."""
        return self.rate(Route.CLOUD)

    @property
    def hybrid_rate(self) -> float:
        """Share handled by both (local quick pass, cloud refine)."""
        return self.rate(Route.HYBRID)


class _RouterCounters:
    """The router's live counts; :meth:`snapshot` freezes them into a :class:`RouterStats`."""

    __slots__ = ("by_route", "decisions")

    def __init__(self) -> None:
        self.decisions = 0
        self.by_route: dict[str, int] = {}

    def count(self, route: Route) -> None:
        self.decisions += 1
        self.by_route[route.value] = self.by_route.get(route.value, 0) + 1

    def snapshot(self) -> RouterStats:
        return RouterStats(decisions=self.decisions, by_route=dict(self.by_route))


class ModelRouter:
    """Decides where each event is handled (see the module notes for the rules)."""

    def __init__(
        self,
        estimator: ConfidenceEstimator | None = None,
        policy: RoutingPolicy | None = None,
        *,
        cloud_available: bool = True,
        cloud_costs: Mapping[str, float] | None = None,
    ) -> None:
        self.estimator = estimator
        self.policy = policy or RoutingPolicy()
        self.cloud_available = cloud_available
        self.cloud_costs = dict(CLOUD_COSTS if cloud_costs is None else cloud_costs)
        self._counters = _RouterCounters()

    def policy_for(
        self, event: Event, parameters: Mapping[str, str] | None = None
    ) -> RoutingPolicy:
        """The policy for ``event``: the router's, overridden by an agent's ``routing.*``
        parameters, made stricter (never looser) by the event's ``privacy`` metadata."""
        policy = self.policy.overridden(parameters) if parameters else self.policy
        # an event label that names no level fails closed: it may mean something stricter
        stated = PrivacyLevel.parse(
            event.metadata.get("privacy"), policy.privacy_level, unknown=PrivacyLevel.PRIVATE
        )
        if stated.rank > policy.privacy_level.rank:
            policy = replace(policy, privacy_level=stated)
        return policy

    def cloud_cost(self, event_type: str) -> float:
        """What sending one event of this type to the cloud is estimated to cost."""
        return self.cloud_costs.get(event_type, _DEFAULT_COST)

    async def route(
        self,
        event: Event,
        policy: RoutingPolicy | None = None,
        *,
        parameters: Mapping[str, str] | None = None,
    ) -> RoutingDecision:
        """Decide for ``event`` (``policy`` if given, else :meth:`policy_for`)."""
        if policy is None:
            policy = self.policy_for(event, parameters)
        decision = await self._decide(event, policy)
        self._counters.count(decision.route)
        return decision

    def stats(self) -> RouterStats:
        """The decisions made so far, by route (a snapshot that later decisions leave as
        it is)."""
        return self._counters.snapshot()

    async def _decide(self, event: Event, policy: RoutingPolicy) -> RoutingDecision:
        """The decision for ``event``: the table applied to the local confidence, its reason
        saying why that confidence is 0 when the estimator did not read the event."""
        privacy = policy.privacy_level
        if privacy is PrivacyLevel.LOCAL_ONLY:
            return RoutingDecision(
                Route.LOCAL, 1.0, "Privacy policy requires local-only processing", LOCAL_LATENCY_MS
            )
        estimator = self.estimator
        supported = estimator is not None and (
            event.type in policy.event_types or estimator.supports_event_type(event.type)
        )
        confidence = 0.0
        if supported and estimator is not None:
            confidence = min(1.0, max(0.0, float(await estimator.estimate_confidence(event))))
        decision = self._table(event, policy, supported, confidence)
        if supported:
            return decision
        return replace(decision, reason=f"{decision.reason}; {self._unread(event.type)}")

    def _unread(self, event_type: str) -> str:
        """Why the local confidence of an event of ``event_type`` is 0: it was not read."""
        estimator = self.estimator
        if estimator is None:
            return "no local model estimates confidence, so it is 0"
        reads = ""
        if isinstance(estimator, DescribesEventTypes):
            reads = f"; it reads {estimator.describe_event_types()}"
        return (
            f"local confidence 0: the local model ({estimator.name}) does not read events of "
            f"type {event_type!r}{reads}; an agent names more types in routing.event_types"
        )

    def _table(
        self, event: Event, policy: RoutingPolicy, supported: bool, confidence: float
    ) -> RoutingDecision:
        """Loom's decision table, from the local confidence (see the module notes)."""
        privacy = policy.privacy_level
        if supported and confidence >= policy.quality_threshold:
            return RoutingDecision(
                Route.LOCAL,
                confidence,
                "Local model confidence exceeds threshold",
                LOCAL_LATENCY_MS,
            )
        if policy.latency_budget_ms < 100:
            return RoutingDecision(
                Route.LOCAL, confidence, "Latency budget too tight for cloud", LOCAL_LATENCY_MS
            )
        cost = self.cloud_cost(event.type)
        if cost > policy.cost_cap_per_event:
            return RoutingDecision(
                Route.LOCAL_FALLBACK, confidence, "Cloud cost exceeds budget", LOCAL_LATENCY_MS
            )
        if not privacy.cloud_allowed:
            return RoutingDecision(
                Route.LOCAL_FALLBACK,
                confidence,
                f"Privacy policy ({privacy.value}) keeps the event off the cloud",
                LOCAL_LATENCY_MS,
            )
        if not self.cloud_available:
            return RoutingDecision(
                Route.LOCAL_FALLBACK, confidence, "No cloud model configured", LOCAL_LATENCY_MS
            )
        masked = " (sensitive fields masked)" if privacy is PrivacyLevel.SENSITIVE else ""
        if supported and confidence > 0.5:
            return RoutingDecision(
                Route.HYBRID,
                confidence,
                f"Hybrid: local quick + cloud refine{masked}",
                HYBRID_LATENCY_MS,
                cost,
            )
        return RoutingDecision(
            Route.CLOUD, 0.0, f"Default to cloud for quality{masked}", CLOUD_LATENCY_MS, cost
        )

    def mask_for_cloud(self, event: Event, policy: RoutingPolicy) -> Event:
        """``event`` as it may leave for the cloud: for ``sensitive`` events, the policy's
        fields masked in the metadata and (when it is a JSON object) the payload.

        Raises ``PermissionError`` for ``private`` and ``local-only`` events, which must not
        leave at all (a router decision never sends them).
        """
        privacy = policy.privacy_level
        if not privacy.cloud_allowed:
            raise PermissionError(f"a {privacy.value} event must not go to the cloud")
        if privacy is PrivacyLevel.PUBLIC or not policy.masked_fields:
            return event
        fields = set(policy.masked_fields)
        metadata = {k: (MASK if k in fields else v) for k, v in event.metadata.items()}
        payload = event.payload
        try:
            document = json.loads(payload) if payload else None
        except (ValueError, RecursionError):
            document = None
        if isinstance(document, dict | list):
            try:
                payload = json.dumps(_masked(document, fields)).encode()
            except RecursionError:  # too deep to walk: send none of it
                payload = json.dumps(MASK).encode()
        return event.replace(metadata=metadata, payload=payload)

    def scrub(self, text: str, event: Event, policy: RoutingPolicy) -> str:
        """``text`` (made locally from ``event``) with every value that
        :meth:`mask_for_cloud` would hide replaced by the mask, so it may go out too."""
        if policy.privacy_level is PrivacyLevel.PUBLIC or not policy.masked_fields:
            return text
        for secret in sorted(_masked_values(event, set(policy.masked_fields)), key=len)[::-1]:
            text = text.replace(secret, MASK)
        return text


def _masked_values(event: Event, fields: set[str]) -> set[str]:
    """The string values ``mask_for_cloud`` hides: of masked metadata keys and JSON members."""
    found = {value for key, value in event.metadata.items() if key in fields and value}
    try:
        document = json.loads(event.payload) if event.payload else None
    except (ValueError, RecursionError):
        return found
    stack = [document]
    while stack:
        value = stack.pop()
        if isinstance(value, dict):
            for key, member in value.items():
                if key in fields and isinstance(member, str | int | float) and str(member):
                    found.add(str(member))
                else:
                    stack.append(member)
        elif isinstance(value, list):
            stack.extend(value)
    return found


def _masked(value: Any, fields: set[str]) -> Any:
    """``value`` with every object member named in ``fields`` masked, at any depth."""
    if isinstance(value, dict):
        return {k: (MASK if k in fields else _masked(v, fields)) for k, v in value.items()}
    if isinstance(value, list):
        return [_masked(item, fields) for item in value]
    return value


def _names(text: str) -> tuple[str, ...]:
    """The comma-separated names in ``text``, stripped, blanks dropped."""
    return tuple(name.strip() for name in text.split(",") if name.strip())


def _number(text: str | None, kind: type[int] | type[float]) -> Any:
    if text is None:
        return None
    try:
        value = kind(text.strip())
    except ValueError:
        return None
    return value if value == value else None  # NaN is no number
