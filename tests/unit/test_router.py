"""The model router: Loom's decision table and loomk's privacy rules and masking; its stats."""

from __future__ import annotations

import dataclasses
import json

import pytest

from loomk import Event
from loomk.llm import Route
from loomk.llm.local import TEXT_EVENT_TYPES, LocalModel
from loomk.llm.routing import (
    DEFAULT_MASKED_FIELDS,
    MASK,
    DescribesEventTypes,
    ModelRouter,
    PrivacyLevel,
    RouterStats,
    RoutingPolicy,
)


class Estimator:
    """A confidence estimator with a fixed answer for the types it supports."""

    name = "fixed"

    def __init__(self, confidence: float, types: tuple[str, ...] = ("intent", "user.query")):
        self.confidence = confidence
        self.types = types
        self.asked: list[str] = []

    def supports_event_type(self, event_type: str) -> bool:
        return event_type in self.types

    async def estimate_confidence(self, event: Event) -> float:
        self.asked.append(event.type)
        return self.confidence


PUBLIC = RoutingPolicy(privacy_level=PrivacyLevel.PUBLIC)


def query(privacy: str | None = None, event_type: str = "user.query") -> Event:
    metadata = {"privacy": privacy} if privacy is not None else {}
    return Event(event_type, b"what is the weather", metadata=metadata)


# --- Loom's table -------------------------------------------------------------------------


async def test_local_only_stays_local_without_asking_the_estimator() -> None:
    estimator = Estimator(0.1)
    router = ModelRouter(estimator)
    decision = await router.route(query("local-only"))
    assert decision.route is Route.LOCAL
    assert decision.confidence == 1.0
    assert "local-only" in decision.reason
    assert decision.estimated_latency_ms == 50
    assert estimator.asked == []


@pytest.mark.parametrize(
    ("confidence", "route", "reason"),
    [
        (0.95, Route.LOCAL, "Local model confidence exceeds threshold"),
        (0.85, Route.LOCAL, "Local model confidence exceeds threshold"),  # >= threshold
        (0.75, Route.HYBRID, "Hybrid: local quick + cloud refine"),
        (0.51, Route.HYBRID, "Hybrid: local quick + cloud refine"),
        (0.50, Route.CLOUD, "Default to cloud for quality"),  # > 0.5 needed for hybrid
        (0.10, Route.CLOUD, "Default to cloud for quality"),
    ],
)
async def test_confidence_decides_between_local_hybrid_and_cloud(
    confidence: float, route: Route, reason: str
) -> None:
    decision = await ModelRouter(Estimator(confidence), PUBLIC).route(query())
    assert decision.route is route
    assert decision.reason == reason
    if route is Route.CLOUD:
        assert decision.confidence == 0.0
        assert decision.estimated_latency_ms == 500
        assert decision.estimated_cost == 0.001
    if route is Route.HYBRID:
        assert decision.confidence == confidence
        assert decision.estimated_latency_ms == 300


async def test_a_tight_latency_budget_keeps_it_local() -> None:
    policy = RoutingPolicy(privacy_level=PrivacyLevel.PUBLIC, latency_budget_ms=99)
    decision = await ModelRouter(Estimator(0.2), policy).route(query())
    assert (decision.route, decision.reason) == (Route.LOCAL, "Latency budget too tight for cloud")


async def test_cloud_cost_over_the_cap_falls_back_locally() -> None:
    policy = RoutingPolicy(privacy_level=PrivacyLevel.PUBLIC, cost_cap_per_event=0.004)
    router = ModelRouter(Estimator(0.2, ("video_frame",)), policy)
    decision = await router.route(Event("video_frame"))
    assert (decision.route, decision.reason) == (Route.LOCAL_FALLBACK, "Cloud cost exceeds budget")
    assert router.cloud_cost("video_frame") == 0.005
    assert router.cloud_cost("intent") == 0.01
    assert router.cloud_cost("anything") == 0.001


async def test_unsupported_types_are_not_estimated_and_go_to_the_cloud() -> None:
    estimator = Estimator(0.99)
    decision = await ModelRouter(estimator, PUBLIC).route(query(event_type="telemetry"))
    assert decision.route is Route.CLOUD
    assert estimator.asked == []


async def test_no_estimator_means_cloud_and_no_cloud_means_local_fallback() -> None:
    assert (await ModelRouter(None, PUBLIC).route(query())).route is Route.CLOUD
    offline = ModelRouter(Estimator(0.7), PUBLIC, cloud_available=False)
    decision = await offline.route(query())
    assert (decision.route, decision.reason) == (Route.LOCAL_FALLBACK, "No cloud model configured")


# --- privacy: every level counts ------------------------------------------------------------


@pytest.mark.parametrize("privacy", ["private", "local-only", "LOCAL_ONLY"])
async def test_private_and_local_only_never_go_to_the_cloud(privacy: str) -> None:
    for confidence in (0.0, 0.3, 0.7):
        decision = await ModelRouter(Estimator(confidence), PUBLIC).route(query(privacy))
        assert decision.route in (Route.LOCAL, Route.LOCAL_FALLBACK)


async def test_the_stricter_of_policy_and_event_privacy_wins() -> None:
    strict = RoutingPolicy(privacy_level=PrivacyLevel.PRIVATE)
    router = ModelRouter(Estimator(0.2), strict)
    decision = await router.route(query("public"))  # the event cannot loosen the policy
    assert decision.route is Route.LOCAL_FALLBACK
    assert "private" in decision.reason
    loose = ModelRouter(Estimator(0.2), PUBLIC)
    assert (await loose.route(query("private"))).route is Route.LOCAL_FALLBACK
    assert (await loose.route(query("nonsense"))).route is Route.LOCAL_FALLBACK  # fails closed
    for spelling in ("Local Only", "localonly", "LOCAL_ONLY", "local-only"):
        assert (await loose.route(query(spelling))).route is Route.LOCAL


async def test_sensitive_events_may_go_with_masking_said_in_the_reason() -> None:
    decision = await ModelRouter(Estimator(0.2)).route(query())  # default policy: sensitive
    assert decision.route is Route.CLOUD
    assert decision.reason == "Default to cloud for quality (sensitive fields masked)"


def test_masking_covers_metadata_and_json_payload_at_any_depth() -> None:
    router = ModelRouter()
    policy = RoutingPolicy(masked_fields=("email", "name"))
    event = Event(
        "user.query",
        json.dumps(
            {"text": "hi", "email": "a@b.c", "user": {"name": "Ada", "tags": [{"name": "x"}]}}
        ).encode(),
        metadata={"email": "a@b.c", "thread_id": "t"},
    )
    masked = router.mask_for_cloud(event, policy)
    assert masked.metadata == {"email": MASK, "thread_id": "t"}
    assert json.loads(masked.payload) == {
        "text": "hi",
        "email": MASK,
        "user": {"name": MASK, "tags": [{"name": MASK}]},
    }
    assert event.metadata["email"] == "a@b.c"  # the original is untouched


def test_masking_leaves_public_and_plain_text_alone_and_refuses_private() -> None:
    router = ModelRouter()
    event = Event("user.query", b"call me at 555", metadata={"phone": "555"})
    assert router.mask_for_cloud(event, PUBLIC) is event
    masked = router.mask_for_cloud(event, RoutingPolicy())
    assert masked.payload == b"call me at 555"  # not JSON: nothing to mask inside
    assert masked.metadata["phone"] == MASK
    assert "phone" in DEFAULT_MASKED_FIELDS
    with pytest.raises(PermissionError):
        router.mask_for_cloud(event, RoutingPolicy(privacy_level=PrivacyLevel.PRIVATE))


# --- policy from agent parameters ------------------------------------------------------------


def test_agent_parameters_override_the_policy_and_bad_values_are_ignored() -> None:
    policy = RoutingPolicy().overridden(
        {
            "routing.privacy": "public",
            "routing.latency_budget_ms": "50",
            "routing.cost_cap": "0.5",
            "routing.quality_threshold": "0.6",
            "routing.masked_fields": "email, ssn,",
        }
    )
    assert policy == RoutingPolicy(
        privacy_level=PrivacyLevel.PUBLIC,
        latency_budget_ms=50,
        cost_cap_per_event=0.5,
        quality_threshold=0.6,
        masked_fields=("email", "ssn"),
    )
    unchanged = RoutingPolicy().overridden(
        {
            "routing.privacy": "whatever",
            "routing.latency_budget_ms": "fast",
            "routing.cost_cap": "nan",
            "routing.quality_threshold": "2",
        }
    )
    assert unchanged == RoutingPolicy()


async def test_stats_count_rates_by_route() -> None:
    router = ModelRouter(Estimator(0.7), PUBLIC)
    await router.route(query())  # hybrid
    await router.route(query("local-only"))  # local
    await router.route(query(event_type="other"))  # cloud (unsupported)
    await router.route(query())  # hybrid
    stats = router.stats()
    assert stats.decisions == 4
    assert stats.by_route == {"Hybrid": 2, "Local": 1, "Cloud": 1}
    assert stats.hybrid_rate == 0.5
    assert stats.local_rate == 0.25
    assert stats.cloud_rate == 0.25


async def test_stats_are_a_frozen_snapshot() -> None:
    router = ModelRouter(Estimator(0.7), PUBLIC)
    assert router.stats() == RouterStats()
    await router.route(query())
    before = router.stats()
    await router.route(query("local-only"))
    assert (before.decisions, before.by_route) == (1, {"Hybrid": 1})  # left as it was
    with pytest.raises(dataclasses.FrozenInstanceError):
        before.decisions = 0  # type: ignore[misc]
    before.by_route["Hybrid"] = 99  # a copy: the router's counts are not touched
    after = router.stats()
    assert (after.decisions, after.by_route) == (2, {"Hybrid": 1, "Local": 1})
    assert after.rate(Route.LOCAL) == 0.5


def test_scrub_masks_the_values_of_masked_fields_anywhere_in_a_text() -> None:
    router = ModelRouter()
    policy = RoutingPolicy(masked_fields=("email", "name"))
    event = Event(
        "user.query",
        json.dumps({"text": "mail Ada", "user": {"name": "Ada", "email": "a@b.c"}}).encode(),
        metadata={"email": "x@y.z"},
    )
    said = "I will mail Ada at a@b.c and x@y.z"
    assert router.scrub(said, event, policy) == f"I will mail {MASK} at {MASK} and {MASK}"
    assert router.scrub(said, event, PUBLIC) == said


# --- honest reasons: an event the local model does not read ----------------------------------


async def test_an_unread_type_says_the_local_model_does_not_read_it_and_what_it_reads() -> None:
    offline = ModelRouter(LocalModel(), PUBLIC, cloud_available=False)
    decision = await offline.route(Event("sensor.note", b"turn on the kitchen lights"))
    assert (decision.route, decision.confidence) == (Route.LOCAL_FALLBACK, 0.0)
    assert decision.reason == (
        "No cloud model configured; local confidence 0: the local model (loomk-local) does "
        "not read events of type 'sensor.note'; it reads chat.message, collab.request, "
        "intent, text, transcript.final, user.query and types ending in .query or .text; "
        "an agent names more types in routing.event_types"
    )


async def test_every_route_of_an_unread_type_says_why_its_confidence_is_0() -> None:
    estimator = Estimator(0.99)  # describes nothing: the reason names it, not its types
    tight = RoutingPolicy(privacy_level=PrivacyLevel.PUBLIC, latency_budget_ms=50)
    for router, route, base in [
        (ModelRouter(estimator, PUBLIC), Route.CLOUD, "Default to cloud for quality"),
        (ModelRouter(estimator, tight), Route.LOCAL, "Latency budget too tight for cloud"),
    ]:
        decision = await router.route(query(event_type="telemetry"))
        assert decision.route is route
        assert decision.reason == (
            f"{base}; local confidence 0: the local model (fixed) does not read events of "
            "type 'telemetry'; an agent names more types in routing.event_types"
        )
    decision = await ModelRouter(None, PUBLIC).route(query())
    assert decision.reason == (
        "Default to cloud for quality; no local model estimates confidence, so it is 0"
    )
    assert estimator.asked == []


async def test_a_read_type_keeps_loom_s_reason_as_it_is() -> None:
    offline = ModelRouter(LocalModel(), PUBLIC, cloud_available=False)
    decision = await offline.route(Event("user.query", b"tell me a story about dragons"))
    assert decision.reason == "No cloud model configured"


async def test_types_an_agent_declares_are_scored_from_their_text() -> None:
    router = ModelRouter(LocalModel(), PUBLIC, cloud_available=False)
    note = Event("sensor.note", b"turn on the kitchen lights")
    asked = {"routing.event_types": "alarm.spoken, sensor.note"}
    decision = await router.route(note, parameters=asked)
    assert decision.route is Route.LOCAL
    assert decision.reason == "Local model confidence exceeds threshold"
    assert decision.confidence >= 0.85
    # only the types named: another stays unread
    other = await router.route(note.replace(type="sensor.other"), parameters=asked)
    assert (other.route, other.confidence) == (Route.LOCAL_FALLBACK, 0.0)
    assert "does not read events of type 'sensor.other'" in other.reason


def test_routing_event_types_are_parsed_as_a_comma_separated_set() -> None:
    policy = RoutingPolicy().overridden({"routing.event_types": " sensor.note,, alarm.spoken ,"})
    assert policy.event_types == frozenset({"sensor.note", "alarm.spoken"})
    assert RoutingPolicy().event_types == frozenset()
    assert RoutingPolicy().overridden({"routing.event_types": ""}).event_types == frozenset()
    not_text = {"routing.event_types": 7, "routing.masked_fields": None}
    assert RoutingPolicy().overridden(not_text) == RoutingPolicy()  # type: ignore[dict-item]


def test_the_local_model_describes_the_types_it_reads() -> None:
    local = LocalModel()
    assert isinstance(local, DescribesEventTypes)
    assert not isinstance(Estimator(0.5), DescribesEventTypes)
    described = local.describe_event_types()
    for name in TEXT_EVENT_TYPES:
        assert name in described
    assert described.endswith("types ending in .query or .text")
