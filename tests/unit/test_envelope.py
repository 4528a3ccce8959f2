"""Unit tests for loomk.envelope, checked against how Loom's envelope behaves."""

from __future__ import annotations

import dataclasses
import time

import pytest

from loomk._metakeys import RESERVED_KEYS
from loomk.envelope import (
    DEFAULT_TTL,
    Envelope,
    ThreadTopicKind,
    agent_reply_topic,
    thread_broadcast_topic,
    thread_reply_topic,
)
from loomk.events import Event

SEVEN_KEYS = {"thread_id", "correlation_id", "sender", "reply_to", "ttl", "hop", "ts"}
HOP_MAX = 2**32 - 1


def _wall_ms() -> int:
    return time.time_ns() // 1_000_000


# ---- keys and free functions -------------------------------------------------------------


def test_reserved_keys_are_loom_keys() -> None:
    assert set(RESERVED_KEYS) == SEVEN_KEYS
    assert len(RESERVED_KEYS) == 7
    assert DEFAULT_TTL == 16


def test_topic_helpers() -> None:
    assert agent_reply_topic("x") == "agent.x.replies"
    assert thread_broadcast_topic("t1") == "thread.t1.broadcast"
    assert thread_reply_topic("t1") == "thread.t1.reply"
    assert ThreadTopicKind.BROADCAST.topic("t1") == "thread.t1.broadcast"
    assert ThreadTopicKind.REPLY.topic("t1") == "thread.t1.reply"


# ---- constructors ------------------------------------------------------------------------


def test_new_fills_loom_defaults() -> None:
    before = _wall_ms()
    env = Envelope.new("t1", "agent.a")
    after = _wall_ms()
    assert env.thread_id == "t1"
    assert env.sender == "agent.a"
    assert env.correlation_id == "t1"
    assert env.reply_to == "thread.t1.reply"
    assert env.ttl == 16
    assert env.hop == 0
    assert before <= env.timestamp_ms <= after


def test_new_sender_defaults_to_empty() -> None:
    assert Envelope.new("t1").sender == ""


def test_constructor_defaults_match_new() -> None:
    env = Envelope("t1")
    assert env.correlation_id == "t1"
    assert env.reply_to == "thread.t1.reply"
    assert env.sender == ""
    assert env.ttl == 16
    assert env.hop == 0


def test_constructor_empty_correlation_and_reply_to_get_defaults() -> None:
    env = Envelope("t1", correlation_id="", reply_to="")
    assert env.correlation_id == "t1"
    assert env.reply_to == "thread.t1.reply"


def test_constructor_keeps_explicit_values() -> None:
    env = Envelope("t1", "c1", "s1", "r1", 3, 4, 5)
    assert (env.thread_id, env.correlation_id, env.sender, env.reply_to) == ("t1", "c1", "s1", "r1")
    assert (env.ttl, env.hop, env.timestamp_ms) == (3, 4, 5)


def test_with_agent_reply() -> None:
    env = Envelope.with_agent_reply("t1", "agent.a", "b")
    assert env.thread_id == "t1"
    assert env.sender == "agent.a"
    assert env.correlation_id == "t1"
    assert env.reply_to == "agent.b.replies"
    assert env.ttl == 16
    assert env.hop == 0


# ---- from_metadata -----------------------------------------------------------------------


def test_from_metadata_empty_gives_defaults_with_fallback_thread() -> None:
    before = _wall_ms()
    env = Envelope.from_metadata({}, "fallback")
    after = _wall_ms()
    assert env.thread_id == "fallback"
    assert env.correlation_id == "fallback"
    assert env.sender == ""
    assert env.reply_to == "thread.fallback.reply"
    assert env.ttl == 16
    assert env.hop == 0
    assert before <= env.timestamp_ms <= after


def test_from_metadata_reads_all_keys() -> None:
    env = Envelope.from_metadata(
        {
            "thread_id": "t1",
            "correlation_id": "c1",
            "sender": "agent.s",
            "reply_to": "agent.r.replies",
            "ttl": "5",
            "hop": "3",
            "ts": "1234",
        },
        "fallback",
    )
    assert env == Envelope("t1", "c1", "agent.s", "agent.r.replies", 5, 3, 1234)


def test_from_metadata_correlation_and_reply_to_default_to_the_given_thread() -> None:
    env = Envelope.from_metadata({"thread_id": "t1"}, "fallback")
    assert env.thread_id == "t1"
    assert env.correlation_id == "t1"
    assert env.reply_to == "thread.t1.reply"


def test_from_metadata_empty_thread_falls_back() -> None:
    env = Envelope.from_metadata({"thread_id": ""}, "fb")
    assert env.thread_id == "fb"
    assert env.reply_to == "thread.fb.reply"


@pytest.mark.parametrize(
    "raw",
    ["", "abc", "1.5", "16x", "0x10", "2147483648", "-2147483649", "1_0", " 5", "5\n", "\u0663"],
)
def test_from_metadata_bad_or_out_of_range_ttl_defaults_to_16(raw: str) -> None:
    assert Envelope.from_metadata({"ttl": raw}, "t").ttl == 16


@pytest.mark.parametrize(
    ("raw", "expected"),
    [("0", 0), ("1", 1), ("-3", -3), ("2147483647", 2**31 - 1), ("-2147483648", -(2**31))],
)
def test_from_metadata_ttl_in_i32_range_is_kept(raw: str, expected: int) -> None:
    assert Envelope.from_metadata({"ttl": raw}, "t").ttl == expected


@pytest.mark.parametrize("raw", ["", "abc", "1.0", "-1", "4294967296", "99999999999999999999"])
def test_from_metadata_bad_or_out_of_range_hop_defaults_to_0(raw: str) -> None:
    assert Envelope.from_metadata({"hop": raw}, "t").hop == 0


@pytest.mark.parametrize(("raw", "expected"), [("0", 0), ("7", 7), ("4294967295", HOP_MAX)])
def test_from_metadata_hop_in_u32_range_is_kept(raw: str, expected: int) -> None:
    assert Envelope.from_metadata({"hop": raw}, "t").hop == expected


@pytest.mark.parametrize("raw", ["", "yesterday", "1.5e3"])
def test_from_metadata_unparsable_ts_defaults_to_now(raw: str) -> None:
    before = _wall_ms()
    env = Envelope.from_metadata({"ts": raw}, "t")
    after = _wall_ms()
    assert before <= env.timestamp_ms <= after


def test_from_metadata_ts_is_kept() -> None:
    assert Envelope.from_metadata({"ts": "0"}, "t").timestamp_ms == 0
    assert Envelope.from_metadata({"ts": "1700000000000"}, "t").timestamp_ms == 1700000000000


def test_from_metadata_ignores_other_keys() -> None:
    env = Envelope.from_metadata({"other": "x", "thread_id": "t1", "ttl": "4"}, "fb")
    assert env.thread_id == "t1"
    assert env.ttl == 4


# ---- from_event --------------------------------------------------------------------------


def test_from_event_uses_event_id_as_fallback_thread() -> None:
    event = Event("t", id="evt-42")
    env = Envelope.from_event(event)
    assert env.thread_id == "evt-42"
    assert env.correlation_id == "evt-42"
    assert env.reply_to == "thread.evt-42.reply"
    assert env.ttl == 16
    assert env.hop == 0


def test_from_event_uses_lazily_made_id_as_fallback_thread() -> None:
    event = Event("t")
    env = Envelope.from_event(event)
    assert env.thread_id == event.id


def test_from_event_prefers_metadata_thread() -> None:
    event = Event("t", id="evt-42", metadata={"thread_id": "t9", "hop": "2"})
    env = Envelope.from_event(event)
    assert env.thread_id == "t9"
    assert env.hop == 2


# ---- writing -----------------------------------------------------------------------------


def test_as_metadata_has_the_seven_keys_as_strings() -> None:
    env = Envelope("t1", "c1", "s1", "r1", 3, 4, 5)
    assert env.as_metadata() == {
        "thread_id": "t1",
        "correlation_id": "c1",
        "sender": "s1",
        "reply_to": "r1",
        "ttl": "3",
        "hop": "4",
        "ts": "5",
    }


def test_apply_to_metadata_writes_all_seven_keys_overwriting() -> None:
    env = Envelope("t1", "c1", "", "r1", 3, 4, 5)
    metadata = {
        "thread_id": "old",
        "correlation_id": "old",
        "sender": "old",
        "reply_to": "old",
        "ttl": "99",
        "hop": "99",
        "ts": "99",
        "other": "kept",
    }
    result = env.apply_to_metadata(metadata)
    assert result is None
    assert metadata == {
        "thread_id": "t1",
        "correlation_id": "c1",
        "sender": "",
        "reply_to": "r1",
        "ttl": "3",
        "hop": "4",
        "ts": "5",
        "other": "kept",
    }


def test_apply_to_empty_metadata_writes_defaults_too() -> None:
    metadata: dict[str, str] = {}
    Envelope("t1", timestamp_ms=7).apply_to_metadata(metadata)
    assert set(metadata) == SEVEN_KEYS
    assert metadata["sender"] == ""
    assert metadata["ttl"] == "16"
    assert metadata["hop"] == "0"
    assert metadata["correlation_id"] == "t1"
    assert metadata["reply_to"] == "thread.t1.reply"
    assert metadata["ts"] == "7"


def test_attach_to_event_returns_a_copy_and_leaves_the_original_untouched() -> None:
    original = Event(
        "t",
        b"payload",
        id="e1",
        metadata={"thread_id": "old", "ttl": "1", "other": "kept"},
        priority=9,
    )
    snapshot = original.as_dict()
    env = Envelope("t1", "c1", "agent.s", "r1", 3, 4, 5)
    attached = env.attach_to_event(original)
    assert attached is not original
    assert original.as_dict() == snapshot
    assert attached.metadata == {
        "thread_id": "t1",
        "correlation_id": "c1",
        "sender": "agent.s",
        "reply_to": "r1",
        "ttl": "3",
        "hop": "4",
        "ts": "5",
        "other": "kept",
    }
    assert attached.id == "e1"
    assert attached.payload == b"payload"
    assert attached.priority == 9
    assert attached.type == "t"


def test_attach_then_from_event_round_trips() -> None:
    env = Envelope.with_agent_reply("t1", "agent.a", "b")
    env.next_hop()
    attached = env.attach_to_event(Event("t"))
    assert Envelope.from_event(attached) == env


def test_round_trip_with_extreme_values() -> None:
    env = Envelope("t1", ttl=-(2**31), hop=HOP_MAX, timestamp_ms=0)
    assert Envelope.from_event(env.attach_to_event(Event("t"))) == env


def test_helper_built_and_envelope_built_events_agree_on_the_four_keys() -> None:
    base = Event("t")
    by_helpers = base.with_thread("t1").with_correlation("c1").with_reply_to("r1").with_sender("s1")
    by_envelope = Envelope("t1", "c1", "s1", "r1").attach_to_event(base)
    four = ("thread_id", "correlation_id", "reply_to", "sender")
    assert {k: by_helpers.metadata[k] for k in four} == {k: by_envelope.metadata[k] for k in four}
    assert by_envelope.thread_id == "t1"
    assert by_envelope.correlation_id == "c1"
    assert by_envelope.reply_to == "r1"
    assert by_envelope.sender == "s1"
    assert set(by_envelope.metadata) - set(by_helpers.metadata) == {"ttl", "hop", "ts"}
    env_from_helpers = Envelope.from_event(by_helpers)
    assert env_from_helpers.thread_id == "t1"
    assert env_from_helpers.correlation_id == "c1"
    assert env_from_helpers.reply_to == "r1"
    assert env_from_helpers.sender == "s1"


def test_envelope_built_with_defaults_agrees_with_helpers() -> None:
    by_envelope = Envelope.new("t1", "agent.a").attach_to_event(Event("t"))
    by_helpers = (
        Event("t")
        .with_thread("t1")
        .with_correlation("t1")
        .with_reply_to("thread.t1.reply")
        .with_sender("agent.a")
    )
    for key in ("thread_id", "correlation_id", "reply_to", "sender"):
        assert by_envelope.metadata[key] == by_helpers.metadata[key]


# ---- routing -----------------------------------------------------------------------------


def test_next_hop_sequence_from_ttl_3() -> None:
    env = Envelope("t1", ttl=3)
    assert env.next_hop() is True
    assert (env.ttl, env.hop) == (2, 1)
    assert env.next_hop() is True
    assert (env.ttl, env.hop) == (1, 2)
    assert env.next_hop() is False
    assert (env.ttl, env.hop) == (0, 3)
    assert env.next_hop() is False
    assert (env.ttl, env.hop) == (0, 4)
    assert env.next_hop() is False
    assert env.ttl == 0


def test_next_hop_from_default_ttl_lives_15_hops() -> None:
    env = Envelope.new("t1")
    alive = [env.next_hop() for _ in range(20)]
    assert alive == [True] * 15 + [False] * 5
    assert env.ttl == 0
    assert env.hop == 20


@pytest.mark.parametrize("ttl", [0, -1, -(2**31)])
def test_next_hop_with_non_positive_ttl_is_dead_and_ttl_unchanged(ttl: int) -> None:
    env = Envelope("t1", ttl=ttl)
    assert env.next_hop() is False
    assert env.ttl == ttl
    assert env.hop == 1


def test_next_hop_hop_saturates_at_u32_max() -> None:
    env = Envelope("t1", hop=HOP_MAX - 1, ttl=100)
    assert env.next_hop() is True
    assert env.hop == HOP_MAX
    assert env.next_hop() is True
    assert env.hop == HOP_MAX
    assert env.ttl == 98


def test_topics_of_an_envelope() -> None:
    env = Envelope.with_agent_reply("t1", "agent.a", "b")
    assert env.broadcast_topic() == "thread.t1.broadcast"
    assert env.reply_topic() == "thread.t1.reply"  # ignores reply_to
    assert env.reply_to == "agent.b.replies"
    custom = Envelope("t2", reply_to="somewhere.else")
    assert custom.reply_topic() == "thread.t2.reply"


@pytest.mark.parametrize(
    ("sender", "expected"),
    [
        ("agent.x", "agent.x.replies"),
        ("agent.planner.v2", "agent.planner.v2.replies"),
        ("agent.", ""),
        ("agent", ""),
        ("user.x", ""),
        ("xagent.x", ""),
        ("", ""),
    ],
)
def test_agent_reply_topic_method(sender: str, expected: str) -> None:
    assert Envelope("t1", sender=sender).agent_reply_topic() == expected


def test_envelope_is_a_value() -> None:
    a = Envelope("t1", timestamp_ms=5)
    b = Envelope("t1", timestamp_ms=5)
    assert a == b
    assert a != dataclasses.replace(b, hop=1)
    assert a != dataclasses.replace(b, ttl=15)
