"""Unit tests for loomk.events: the Event value type, its validation, copies and QoS levels."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import time
from types import MappingProxyType

import pytest

from loomk import events as events_module
from loomk.errors import EventError, LoomkError
from loomk.events import Event, QoS, new_event_id, now_ms


def _wall_ms() -> int:
    return time.time_ns() // 1_000_000


def _id_parts(event_id: str) -> tuple[str, int]:
    """Split ``evt-{prefix}-{hexcounter}`` into its prefix and counter."""
    tag, prefix, counter = event_id.split("-")
    assert tag == "evt"
    return prefix, int(counter, 16)


# ---- QoS ---------------------------------------------------------------------------------


def test_qos_values_equal_loom_v1_qos_level() -> None:
    assert QoS.REALTIME == 0
    assert QoS.BATCHED == 1
    assert QoS.BACKGROUND == 2
    assert [level.name for level in QoS] == ["REALTIME", "BATCHED", "BACKGROUND"]
    assert QoS(1) is QoS.BATCHED


# ---- id and timestamp --------------------------------------------------------------------


def test_now_ms_is_wall_clock_milliseconds() -> None:
    before = _wall_ms()
    value = now_ms()
    after = _wall_ms()
    assert before <= value <= after


def test_timestamp_filled_in_when_absent() -> None:
    before = _wall_ms()
    event = Event("t")
    after = _wall_ms()
    assert isinstance(event.timestamp_ms, int)
    assert before <= event.timestamp_ms <= after


def test_explicit_id_and_timestamp_are_kept() -> None:
    event = Event("t", id="e1", timestamp_ms=1234)
    assert event.id == "e1"
    assert event.timestamp_ms == 1234


def test_timestamp_zero_and_negative_are_kept() -> None:
    assert Event("t", timestamp_ms=0).timestamp_ms == 0
    assert Event("t", timestamp_ms=-5).timestamp_ms == -5


def test_id_filled_in_when_absent_and_stable_on_reread() -> None:
    event = Event("t")
    first = event.id
    assert first.startswith("evt-")
    assert event.id == first
    assert event.id == first


def test_id_is_made_lazily_on_first_read() -> None:
    # Created first, read second: a lazily made id takes the later counter value.
    created_first = Event("t")
    created_second = Event("t")
    read_first = created_second.id
    read_second = created_first.id
    prefix_a, counter_a = _id_parts(read_first)
    prefix_b, counter_b = _id_parts(read_second)
    assert prefix_a == prefix_b
    assert counter_b > counter_a


def test_ids_unique_across_many_events() -> None:
    ids = [Event("t").id for _ in range(5000)]
    ids += [new_event_id() for _ in range(1000)]
    assert len(set(ids)) == len(ids)


def test_reseed_ids_changes_prefix_and_keeps_ids_unique() -> None:
    before = Event("t").id
    prefix_before, _ = _id_parts(before)
    events_module._reseed_ids()
    after = Event("t").id
    prefix_after, counter_after = _id_parts(after)
    assert prefix_after != prefix_before
    assert counter_after == 1
    assert after != before


def test_forked_child_gets_a_different_id_prefix() -> None:
    # Fork inside a fresh single-threaded interpreter, not inside the test runner.
    script = textwrap.dedent(
        """
        import os
        from loomk.events import Event

        parent_id = Event("t").id
        read_fd, write_fd = os.pipe()
        pid = os.fork()
        if pid == 0:
            os.close(read_fd)
            os.write(write_fd, Event("t").id.encode())
            os._exit(0)
        os.close(write_fd)
        child_id = os.read(read_fd, 200).decode()
        os.waitpid(pid, 0)
        after_id = Event("t").id
        print(parent_id, child_id, after_id)
        """
    )
    result = subprocess.run(
        [sys.executable, "-W", "error", "-c", script],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    parent_id, child_id, after_id = result.stdout.split()
    parent_prefix, _ = _id_parts(parent_id)
    child_prefix, _ = _id_parts(child_id)
    after_prefix, _ = _id_parts(after_id)
    assert child_prefix != parent_prefix
    assert after_prefix == parent_prefix  # the parent keeps its own prefix
    assert len({parent_id, child_id, after_id}) == 3


# ---- defaults and coercion ---------------------------------------------------------------


def test_defaults() -> None:
    event = Event("t")
    assert event.type == "t"
    assert event.payload == b""
    assert event.priority == 50
    assert event.confidence == 1.0
    assert event.tags == ()
    assert isinstance(event.tags, tuple)
    assert event.metadata == {}
    assert isinstance(event.metadata, dict)
    assert event.source == ""


def test_fields_are_stored() -> None:
    event = Event(
        "camera.face",
        b"\x00\x01",
        source="cam",
        metadata={"k": "v"},
        tags=["a", "b"],
        priority=90,
        confidence=0.25,
    )
    assert event.type == "camera.face"
    assert event.payload == b"\x00\x01"
    assert event.source == "cam"
    assert event.metadata == {"k": "v"}
    assert event.tags == ("a", "b")
    assert event.priority == 90
    assert event.confidence == 0.25


def test_priority_and_confidence_bounds_are_inclusive() -> None:
    assert Event("t", priority=0).priority == 0
    assert Event("t", priority=100).priority == 100
    assert Event("t", confidence=0.0).confidence == 0.0
    low = Event("t", confidence=0)
    assert low.confidence == 0.0
    assert isinstance(low.confidence, float)


def test_tags_from_any_iterable_become_a_tuple() -> None:
    assert Event("t", tags=["x", "y"]).tags == ("x", "y")
    assert Event("t", tags=(t for t in ["p", "q"])).tags == ("p", "q")


def test_metadata_from_any_mapping_is_copied_into_a_dict() -> None:
    source = {"a": "1"}
    event = Event("t", metadata=source)
    source["a"] = "changed"
    source["b"] = "2"
    assert event.metadata == {"a": "1"}
    proxied = Event("t", metadata=MappingProxyType({"x": "y"}))
    assert proxied.metadata == {"x": "y"}
    assert type(proxied.metadata) is dict


@pytest.mark.parametrize("raw", [bytearray(b"abc"), memoryview(b"abc")])
def test_bytes_like_payload_coerced_to_bytes(raw: bytearray | memoryview) -> None:
    event = Event("t", raw)
    assert type(event.payload) is bytes
    assert event.payload == b"abc"


def test_bytearray_payload_is_copied() -> None:
    raw = bytearray(b"abc")
    event = Event("t", raw)
    raw[0] = ord("z")
    assert event.payload == b"abc"


# ---- validation --------------------------------------------------------------------------


def test_event_error_is_a_value_error_with_a_code() -> None:
    assert issubclass(EventError, ValueError)
    assert issubclass(EventError, LoomkError)
    with pytest.raises(EventError) as info:
        Event("")
    assert info.value.code == "EVENT_INVALID"


def test_str_payload_rejected_with_a_hint_to_encode() -> None:
    with pytest.raises(EventError, match=r"payload must be bytes, got str") as info:
        Event("t", "hello")  # type: ignore[arg-type]
    assert "encode" in str(info.value)


def test_int_payload_rejected_without_encode_hint() -> None:
    with pytest.raises(EventError, match=r"payload must be bytes, got int") as info:
        Event("t", 5)  # type: ignore[arg-type]
    assert "encode" not in str(info.value)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"type": None}, r"type must be a non-empty str, got None"),
        ({"type": ""}, r"type must be a non-empty str, got ''"),
        ({"type": b"t"}, r"type must be a non-empty str"),
        ({"type": "t", "payload": None}, r"payload must be bytes, got NoneType"),
        ({"type": "t", "payload": [1, 2]}, r"payload must be bytes, got list"),
        ({"type": "t", "source": None}, r"source must be a str"),
        ({"type": "t", "metadata": {1: "v"}}, r"metadata must map str to str.*int: str"),
        ({"type": "t", "metadata": {"k": 1}}, r"metadata must map str to str.*str: int"),
        ({"type": "t", "metadata": {"k": None}}, r"metadata must map str to str"),
        ({"type": "t", "metadata": {"k": b"v"}}, r"metadata must map str to str.*str: bytes"),
        ({"type": "t", "metadata": [("k", "v")]}, r"metadata must be a mapping"),
        ({"type": "t", "metadata": "k=v"}, r"metadata must be a mapping"),
        ({"type": "t", "tags": "abc"}, r"tags must be a list of str, got 'abc'"),
        ({"type": "t", "tags": b"abc"}, r"tags must be a list of str"),
        ({"type": "t", "tags": ["ok", 3]}, r"tags must be str, got 3"),
        ({"type": "t", "tags": [None]}, r"tags must be str, got None"),
        ({"type": "t", "priority": -1}, r"priority must be an int from 0 to 100, got -1"),
        ({"type": "t", "priority": 101}, r"priority must be an int from 0 to 100, got 101"),
        ({"type": "t", "priority": 50.0}, r"priority must be an int from 0 to 100, got 50.0"),
        ({"type": "t", "priority": True}, r"priority must be an int from 0 to 100, got True"),
        ({"type": "t", "priority": "50"}, r"priority must be an int"),
        ({"type": "t", "confidence": -0.1}, r"confidence must be a number from 0.0 to 1.0"),
        ({"type": "t", "confidence": 1.5}, r"confidence must be a number from 0.0 to 1.0"),
        ({"type": "t", "confidence": 2}, r"confidence must be a number from 0.0 to 1.0"),
        ({"type": "t", "confidence": float("nan")}, r"confidence must be a number"),
        ({"type": "t", "confidence": "0.5"}, r"confidence must be a number.*'0.5'"),
        ({"type": "t", "confidence": "1.0"}, r"confidence must be a number"),
        ({"type": "t", "confidence": None}, r"confidence must be a number"),
        ({"type": "t", "id": ""}, r"id must be a non-empty str, got ''"),
        ({"type": "t", "id": 7}, r"id must be a non-empty str, got 7"),
        ({"type": "t", "timestamp_ms": 1.5}, r"timestamp_ms must be an int, got 1.5"),
        ({"type": "t", "timestamp_ms": "123"}, r"timestamp_ms must be an int, got '123'"),
        ({"type": "t", "timestamp_ms": True}, r"timestamp_ms must be an int, got True"),
    ],
)
def test_bad_input_raises_event_error(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(EventError, match=message):
        Event(**kwargs)  # type: ignore[arg-type]


@pytest.mark.parametrize("flag", [False, True])
def test_bool_confidence_rejected(flag: bool) -> None:
    # Like priority, confidence must be a real number, not a bool (bool is an int subclass).
    with pytest.raises(EventError, match=rf"confidence must be a number.*{flag}"):
        Event("t", confidence=flag)


def test_bad_input_is_catchable_as_value_error() -> None:
    with pytest.raises(ValueError, match="priority"):
        Event("t", priority=500)


# ---- copies ------------------------------------------------------------------------------


def test_replace_makes_a_changed_copy_and_keeps_the_rest() -> None:
    original = Event("t", b"p", source="s", metadata={"k": "v"}, tags=["x"], priority=10)
    copy = original.replace(payload=b"q", priority=20)
    assert copy is not original
    assert copy.payload == b"q"
    assert copy.priority == 20
    assert copy.type == "t"
    assert copy.source == "s"
    assert copy.metadata == {"k": "v"}
    assert copy.tags == ("x",)
    assert copy.id == original.id
    assert copy.timestamp_ms == original.timestamp_ms
    assert original.payload == b"p"
    assert original.priority == 10


def test_replace_without_changes_is_an_equal_independent_copy() -> None:
    original = Event("t", metadata={"k": "v"})
    copy = original.replace()
    assert copy == original
    assert copy is not original
    assert copy.metadata is not original.metadata
    copy.metadata["k"] = "changed"
    assert original.metadata == {"k": "v"}


def test_replace_validates_like_the_constructor() -> None:
    original = Event("t")
    with pytest.raises(EventError, match="priority"):
        original.replace(priority=101)
    with pytest.raises(EventError, match="payload must be bytes, got str"):
        original.replace(payload="text")
    with pytest.raises(EventError, match="type must be a non-empty str"):
        original.replace(type="")
    assert original.replace(payload=bytearray(b"b")).payload == b"b"


def test_replace_of_metadata_and_source_validates_them_too() -> None:
    """The senders' path (metadata and source only) checks what it changes, as the rest."""
    original = Event("t", source="s", metadata={"k": "v"})
    with pytest.raises(EventError, match="source must be a str"):
        original.replace(source=1)
    with pytest.raises(EventError, match="metadata must map str to str"):
        original.replace(metadata={"k": 1})
    with pytest.raises(EventError, match="metadata must be a mapping"):
        original.replace(metadata=["k"])
    cleared = original.replace(metadata=None)  # as the constructor: no metadata
    assert cleared.metadata == {}
    assert cleared.source == "s"
    assert cleared.id == original.id
    moved = original.replace(metadata={"a": "b"}, source="elsewhere")
    assert (moved.metadata, moved.source, moved.type) == ({"a": "b"}, "elsewhere", "t")
    assert original.metadata == {"k": "v"}


def test_replace_rejects_unknown_fields() -> None:
    event = Event("t")
    with pytest.raises(EventError, match=r"no field\(s\) \['bogus', 'colour'\]"):
        event.replace(bogus=1, colour="red")
    with pytest.raises(EventError, match="_id"):
        event.replace(_id="x")


def test_with_metadata_copies_and_leaves_original_untouched() -> None:
    original = Event("t", metadata={"a": "1", "b": "2"})
    copy = original.with_metadata(b="two", c="3")
    assert copy.metadata == {"a": "1", "b": "two", "c": "3"}
    assert original.metadata == {"a": "1", "b": "2"}
    assert copy.id == original.id
    assert copy is not original


def test_with_metadata_validates_values() -> None:
    with pytest.raises(EventError, match="metadata must map str to str"):
        Event("t").with_metadata(k=1)  # type: ignore[arg-type]


# ---- envelope helpers (EventExt) ---------------------------------------------------------


def test_envelope_readers_are_none_when_absent() -> None:
    event = Event("t")
    assert event.thread_id is None
    assert event.correlation_id is None
    assert event.reply_to is None
    assert event.sender is None


def test_with_helpers_set_keys_and_return_copies() -> None:
    original = Event("t", metadata={"other": "x"})
    built = original.with_thread("th").with_correlation("co").with_reply_to("re").with_sender("se")
    assert built.metadata == {
        "other": "x",
        "thread_id": "th",
        "correlation_id": "co",
        "reply_to": "re",
        "sender": "se",
    }
    assert built.thread_id == "th"
    assert built.correlation_id == "co"
    assert built.reply_to == "re"
    assert built.sender == "se"
    assert original.metadata == {"other": "x"}
    assert original.thread_id is None
    assert built.id == original.id


@pytest.mark.parametrize(
    ("helper", "key"),
    [
        ("with_thread", "thread_id"),
        ("with_correlation", "correlation_id"),
        ("with_reply_to", "reply_to"),
        ("with_sender", "sender"),
    ],
)
def test_with_helpers_overwrite(helper: str, key: str) -> None:
    original = Event("t", metadata={key: "old"})
    updated = getattr(original, helper)("new")
    assert updated.metadata[key] == "new"
    assert getattr(updated, key) == "new"
    assert original.metadata[key] == "old"
    assert getattr(original, key) == "old"


def test_with_helpers_validate() -> None:
    with pytest.raises(EventError):
        Event("t").with_thread(5)  # type: ignore[arg-type]


# ---- value semantics ---------------------------------------------------------------------


def test_equality_is_by_value() -> None:
    kwargs: dict[str, object] = {
        "payload": b"p",
        "source": "s",
        "metadata": {"k": "v"},
        "tags": ["a"],
        "priority": 7,
        "confidence": 0.5,
        "id": "e1",
        "timestamp_ms": 99,
    }
    a = Event("t", **kwargs)  # type: ignore[arg-type]
    b = Event("t", **kwargs)  # type: ignore[arg-type]
    assert a == b
    assert a is not b
    assert a != b.replace(payload=b"other")
    assert a != b.replace(metadata={"k": "w"})
    assert a != b.replace(id="e2")
    assert a != b.replace(timestamp_ms=100)
    assert a != b.replace(tags=["b"])
    assert a != b.replace(priority=8)
    assert a != b.replace(confidence=0.6)
    assert a != b.replace(source="x")
    assert a != b.replace(type="u")


def test_events_without_explicit_ids_differ() -> None:
    assert Event("t", timestamp_ms=1) != Event("t", timestamp_ms=1)


def test_event_compared_with_other_types() -> None:
    event = Event("t", id="e1", timestamp_ms=1)
    assert event != event.as_dict()
    assert event != "e1"
    assert (event == 3) is False


def test_events_are_unhashable() -> None:
    event = Event("t")
    with pytest.raises(TypeError):
        hash(event)
    with pytest.raises(TypeError):
        {event}  # noqa: B018


def test_repr_shows_fields_and_truncates_long_payloads() -> None:
    short = Event("t", b"x" * 32, source="src", id="e1", metadata={"k": "v"})
    text = repr(short)
    assert text.startswith("Event(")
    assert "type='t'" in text
    assert "id='e1'" in text
    assert "source='src'" in text
    assert "{'k': 'v'}" in text
    assert repr(b"x" * 32) in text
    assert "..." not in text

    long = Event("t", b"y" * 33 + b"TAIL" * 100, id="e2")
    long_text = repr(long)
    assert repr(b"y" * 32 + b"...") in long_text
    assert "TAIL" not in long_text
    assert len(long_text) < 200


def test_as_dict() -> None:
    event = Event(
        "t",
        b"p",
        source="s",
        metadata={"k": "v"},
        tags=("a", "b"),
        priority=5,
        confidence=0.5,
        id="e1",
        timestamp_ms=42,
    )
    data = event.as_dict()
    assert data == {
        "id": "e1",
        "type": "t",
        "timestamp_ms": 42,
        "source": "s",
        "metadata": {"k": "v"},
        "payload": b"p",
        "confidence": 0.5,
        "tags": ["a", "b"],
        "priority": 5,
    }
    data["metadata"]["k"] = "changed"
    assert event.metadata == {"k": "v"}


def test_as_dict_round_trips_through_the_constructor() -> None:
    event = Event("t", b"p", metadata={"k": "v"}, tags=["a"])
    assert Event(**event.as_dict()) == event


def test_as_dict_includes_the_lazily_made_id() -> None:
    event = Event("t")
    data = event.as_dict()
    assert data["id"] == event.id
    assert data["id"].startswith("evt-")
