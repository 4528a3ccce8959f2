"""loomk_bridge.codec: loomk values <-> loom.v1 messages, and what a peer may not send.

Wire bytes are written out by hand here (field numbers and wire types from
schemas/loom/v1), so a field mapped to the wrong one, or a float32 read as something else,
fails against what a Loom client would send, not only against our own encoder.
"""

from __future__ import annotations

import math
import struct

import pytest
from google.protobuf.message import DecodeError

from loomk import (
    ActionCall,
    ActionCallError,
    ActionError,
    ActionResult,
    ActionStatus,
    CapabilityDescriptor,
    CapabilityError,
    Envelope,
    Event,
    EventError,
    ProviderKind,
    QoS,
)
from loomk.events import delivered_event, now_ms
from loomk_bridge._proto import action_pb2, event_pb2
from loomk_bridge.codec import (
    BAD_STATUS,
    call_from_proto,
    call_to_proto,
    descriptor_from_proto,
    descriptor_to_proto,
    event_from_proto,
    event_to_proto,
    result_from_proto,
    result_to_proto,
)

# ---- hand-written protobuf encoding ---------------------------------------------------


def _varint(value: int) -> bytes:
    value &= (1 << 64) - 1  # negative int32/int64 go out as ten-byte two's complement
    out = bytearray()
    while True:
        low = value & 0x7F
        value >>= 7
        if value:
            out.append(low | 0x80)
        else:
            out.append(low)
            return bytes(out)


def _len_field(number: int, data: bytes) -> bytes:
    return _varint(number << 3 | 2) + _varint(len(data)) + data


def _varint_field(number: int, value: int) -> bytes:
    return _varint(number << 3) + _varint(value)


def _float_field(number: int, value: float) -> bytes:
    return _varint(number << 3 | 5) + struct.pack("<f", value)


def _map_entry(number: int, key: str, value: str) -> bytes:
    return _len_field(number, _len_field(1, key.encode()) + _len_field(2, value.encode()))


def _float32(value: float) -> float:
    """``value`` rounded to the nearest float32, as a Python float."""
    result: float = struct.unpack("<f", struct.pack("<f", value))[0]
    return result


# What a Loom client sends for one event, fields in number order (as protobuf writes them).
LOOM_EVENT_BYTES = (
    _len_field(1, b"evt-42")
    + _len_field(2, b"sensor.reading")
    + _varint_field(3, 1_700_000_000_123)
    + _len_field(4, b"agent.camera")
    + _map_entry(5, "thread_id", "t-1")
    + _len_field(6, b'{"lux": 310}')
    + _float_field(7, 0.75)
    + _len_field(8, b"vision")
    + _len_field(8, b"raw")
    + _varint_field(9, 80)
)
LOOM_EVENT = Event(
    "sensor.reading",
    b'{"lux": 310}',
    source="agent.camera",
    metadata={"thread_id": "t-1"},
    tags=("vision", "raw"),
    priority=80,
    confidence=0.75,
    id="evt-42",
    timestamp_ms=1_700_000_000_123,
)


# ---- events: the wire ---------------------------------------------------------------


def test_a_loom_clients_event_bytes_decode_to_the_event_they_describe() -> None:
    event = event_from_proto(event_pb2.Event.FromString(LOOM_EVENT_BYTES))
    assert event.as_dict() == LOOM_EVENT.as_dict()
    assert event.tags == ("vision", "raw")  # a tuple, as loomk's own events hold them


def test_an_event_encodes_to_the_bytes_a_loom_client_would_send() -> None:
    assert event_to_proto(LOOM_EVENT).SerializeToString(deterministic=True) == LOOM_EVENT_BYTES


def test_an_event_with_an_envelope_survives_serialisation_unchanged() -> None:
    event = Envelope.new("thread-9", sender="agent.a").attach_to_event(
        Event("chat.msg", b"\x00\xffbinary", source="agent.a", tags=("a",), priority=0)
    )
    data = event_to_proto(event).SerializeToString()
    back = event_from_proto(event_pb2.Event.FromString(data))
    assert back == event
    assert back.metadata == event.metadata
    assert len(back.metadata) == 7  # the whole envelope, not just the fields around it


def test_a_delivered_copy_encodes_with_its_hopped_envelope() -> None:
    """A copy made for a receiver writes its id and envelope lazily: the codec must read
    them through the public fields, not the unset slots behind them."""
    original = Event("chat.msg", b"hi", metadata={"sender": "agent.a", "hop": "2"})
    copy = delivered_event(original, "agent.b")
    assert copy is not None
    message = event_to_proto(copy)
    assert message.id == original.id
    assert message.metadata["hop"] == "3"
    assert event_from_proto(message) == copy


def test_an_empty_event_encodes_only_what_it_has() -> None:
    event = Event("t", id="i", timestamp_ms=5, priority=0, confidence=0.0)
    assert event_to_proto(event).SerializeToString(deterministic=True) == (
        _len_field(1, b"i") + _len_field(2, b"t") + _varint_field(3, 5)
    )


# ---- events: confidence is a float32 on the wire -------------------------------------


@pytest.mark.parametrize("confidence", [0.0, 1.0, 0.5, 0.75, 2.0**-20, _float32(0.3)])
def test_a_float32_confidence_round_trips_exactly(confidence: float) -> None:
    event = Event("t", confidence=confidence)
    assert event_from_proto(event_to_proto(event)).confidence == confidence


@pytest.mark.parametrize("confidence", [0.3, 0.1, 0.9999999, 1e-50])
def test_other_confidences_come_back_rounded_to_float32(confidence: float) -> None:
    back = event_from_proto(event_to_proto(Event("t", confidence=confidence))).confidence
    assert back != confidence
    assert back == _float32(confidence)
    assert 0.0 <= back <= 1.0


def test_confidence_0_3_reads_back_as_its_float32_value() -> None:
    back = event_from_proto(event_to_proto(Event("t", confidence=0.3))).confidence
    assert back == 0.30000001192092896


def test_a_wire_confidence_goes_back_out_as_the_same_32_bits() -> None:
    """Forwarding keeps bytes: what came in as float32 is not moved by any rounding."""
    bits = struct.pack("<f", 0.3)
    data = _len_field(1, b"e") + _len_field(2, b"t") + _varint_field(3, 9) + b"\x3d" + bits
    out = event_to_proto(event_from_proto(event_pb2.Event.FromString(data)))
    assert out.SerializeToString(deterministic=True) == data


# ---- events: proto3 defaults --------------------------------------------------------


def test_an_event_without_an_id_gets_a_fresh_loomk_id() -> None:
    message = event_pb2.Event(type="t", timestamp_ms=1)
    first, second = event_from_proto(message), event_from_proto(message)
    assert first.id.startswith("evt-")  # made as loomk makes every event id
    assert first.id != second.id
    assert first.id == first.id  # made once, then kept
    assert event_to_proto(first).id == first.id


def test_an_event_with_timestamp_zero_is_stamped_now() -> None:
    before = now_ms()
    event = event_from_proto(event_pb2.Event(id="e", type="t"))
    after = now_ms()
    assert before <= event.timestamp_ms <= after


def test_a_negative_timestamp_is_kept() -> None:
    assert event_from_proto(event_pb2.Event(id="e", type="t", timestamp_ms=-5)).timestamp_ms == -5


def test_zero_priority_and_confidence_stay_zero() -> None:
    """Unlike id and timestamp, these zeros are values loomk has (low, none): kept."""
    event = event_from_proto(event_pb2.Event(id="e", type="t", timestamp_ms=1))
    assert (event.priority, event.confidence) == (0, 0.0)
    assert (event.payload, event.source, event.metadata, event.tags) == (b"", "", {}, ())


# ---- events: what a peer may not send -------------------------------------------------


def _wire_event(**fields: object) -> event_pb2.Event:
    base: dict[str, object] = {"id": "evt-bad", "type": "t", "timestamp_ms": 1}
    base.update(fields)
    return event_pb2.Event(**base)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("fields", "named"),
    [
        ({"metadata": {"k": "v\x00w"}}, "metadata value of 'k'"),
        ({"metadata": {"k\x00": "v"}}, "metadata key"),
        ({"type": "a\x00b"}, "type"),
        ({"type": ""}, "type"),
        ({"source": "agent\x00x"}, "source"),
        ({"tags": ["ok", "b\x00d"]}, "tag"),
        ({"priority": 1000}, "priority"),
        ({"priority": -1}, "priority"),
        ({"confidence": math.nan}, "confidence"),
        ({"confidence": 2.0}, "confidence"),
        ({"confidence": -0.5}, "confidence"),
        ({"confidence": math.inf}, "confidence"),
    ],
)
def test_a_bad_wire_event_raises_event_error_naming_the_field(
    fields: dict[str, object], named: str
) -> None:
    with pytest.raises(EventError) as caught:
        event_from_proto(_wire_event(**fields))
    message = str(caught.value)
    assert message.startswith("loom.v1.Event 'evt-bad' from the wire: event ")
    assert named in message
    assert isinstance(caught.value.__cause__, EventError)
    assert caught.value.code == "EVENT_INVALID"


def test_a_nul_in_the_wire_id_is_refused_and_shown_escaped() -> None:
    with pytest.raises(EventError, match=r"'e\\x00v'.*event id"):
        event_from_proto(_wire_event(id="e\x00v"))


def test_a_very_long_id_is_cut_short_in_the_error() -> None:
    with pytest.raises(EventError) as caught:
        event_from_proto(_wire_event(id="x" * 10_000, priority=101))
    assert len(str(caught.value)) < 300
    assert "priority" in str(caught.value)


@pytest.mark.parametrize(
    "data",
    [
        _len_field(2, b"\xff\xfe"),  # type
        _len_field(1, b"\xed\xa0\x80"),  # id: a lone surrogate, UTF-8 encoded
        _map_entry(5, "k", "v")[:-1] + b"\xc3",  # metadata value cut mid-character
        _len_field(8, b"ok\x80"),  # a tag
    ],
)
def test_invalid_utf8_fails_in_the_protobuf_layer(data: bytes) -> None:
    """upb refuses a string that is not UTF-8 on parse, so none reaches the codec: a lone
    surrogate cannot arrive in a message."""
    with pytest.raises(DecodeError, match="UTF-8"):
        event_pb2.Event.FromString(data)


def test_a_message_cannot_be_built_from_a_lone_surrogate() -> None:
    with pytest.raises(UnicodeEncodeError):
        event_pb2.Event(type="\ud800")


# ---- capability calls ---------------------------------------------------------------


@pytest.mark.parametrize("qos", list(QoS))
def test_a_call_round_trips_through_bytes(qos: QoS) -> None:
    call = ActionCall(
        "call-1",
        "weather.get",
        b'{"city": "Oslo"}',
        version="1.2.0",
        headers={"thread_id": "t", "sender": "agent.a"},
        timeout_ms=2500,
        correlation_id="corr-1",
        qos=qos,
    )
    data = call_to_proto(call).SerializeToString()
    message = action_pb2.ActionCall.FromString(data)
    assert message.qos == qos.value
    back = call_from_proto(message)
    assert back == call
    assert back.qos is qos


def test_a_calls_fields_land_on_their_wire_numbers() -> None:
    call = ActionCall("c", "x.y", b"{}", version="1.0.0", timeout_ms=7, correlation_id="k")
    assert call_to_proto(call).SerializeToString(deterministic=True) == (
        _len_field(1, b"c")
        + _len_field(2, b"x.y")
        + _len_field(3, b"1.0.0")
        + _len_field(4, b"{}")
        + _varint_field(6, 7)
        + _len_field(7, b"k")
        + _varint_field(8, 1)  # QoS.BATCHED, ActionCall's default
    )


def test_a_bare_wire_call_means_what_loomk_defaults_mean() -> None:
    call = call_from_proto(action_pb2.ActionCall(capability="x.y"))
    assert (call.id, call.version, call.timeout_ms, call.qos) == ("", "", 0, QoS.REALTIME)
    assert (call.payload, call.headers, call.correlation_id) == (b"", {}, "")


@pytest.mark.parametrize(
    ("fields", "named"),
    [
        ({"qos": 7}, "field qos: unknown QoS 7"),
        ({"qos": -1}, "field qos: unknown QoS -1"),
        ({"capability": ""}, "names no capability"),
        ({"headers": {"sender": "a\x00b"}}, "header 'sender'"),
        ({"timeout_ms": -1}, "timeout_ms"),
        ({"correlation_id": "c\x00"}, "correlation_id"),
        ({"version": "1\x00"}, "version"),
    ],
)
def test_a_bad_wire_call_raises_action_call_error_naming_the_field(
    fields: dict[str, object], named: str
) -> None:
    base: dict[str, object] = {"id": "call-bad", "capability": "x.y"}
    base.update(fields)
    with pytest.raises(ActionCallError) as caught:
        call_from_proto(action_pb2.ActionCall(**base))  # type: ignore[arg-type]
    assert str(caught.value).startswith("loom.v1.ActionCall 'call-bad' from the wire: ")
    assert named in str(caught.value)
    assert caught.value.code == "ACTION_CALL_INVALID"


# ---- results ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "result",
    [
        ActionResult.success("c1", {"t": 21.5}),
        ActionResult("c2", ActionStatus.ACTION_OK, b""),
        ActionResult.failure("c3", "CAPABILITY_ERROR", "boom", details={"trace": "x"}),
        ActionResult.failure("c4", "ACTION_TIMEOUT", status=ActionStatus.ACTION_TIMEOUT),
        ActionResult.failure("c5", "BUSY", status=ActionStatus.ACTION_RETRYABLE),
        ActionResult("c6", ActionStatus.ACTION_ERROR, b"partial", ActionError("")),
        ActionResult("c7", ActionStatus.ACTION_ERROR, b"", None),
    ],
)
def test_a_result_round_trips_through_bytes(result: ActionResult) -> None:
    data = result_to_proto(result).SerializeToString()
    back = result_from_proto(action_pb2.ActionResult.FromString(data))
    assert back == result
    assert back.status is result.status


def test_an_empty_error_and_no_error_stay_apart_on_the_wire() -> None:
    with_empty = result_to_proto(ActionResult("c", ActionStatus.ACTION_ERROR, b"", ActionError("")))
    without = result_to_proto(ActionResult("c", ActionStatus.ACTION_ERROR))
    assert with_empty.HasField("error")
    assert not without.HasField("error")
    assert with_empty.SerializeToString() == _len_field(1, b"c") + _varint_field(2, 1) + (
        _len_field(4, b"")
    )


def test_an_unknown_status_becomes_a_bad_status_failure() -> None:
    data = (
        _len_field(1, b"call-9")
        + _varint_field(2, 7)
        + _len_field(3, b"out")
        + _len_field(4, _len_field(1, b"NEWER") + _map_entry(3, "why", "future"))
    )
    message = action_pb2.ActionResult.FromString(data)
    assert message.status == 7  # proto3 enums are open: upb keeps the number
    result = result_from_proto(message)
    assert result.id == "call-9"
    assert result.status is ActionStatus.ACTION_ERROR
    assert result.output == b""
    assert result.error is not None
    assert result.error.code == BAD_STATUS == "BAD_STATUS"
    assert "ActionStatus 7" in result.error.message
    assert "'NEWER'" in result.error.message
    assert result.error.details == {"why": "future", "wire_status": "7"}


def test_an_unknown_negative_status_without_an_error_is_a_failure_too() -> None:
    result = result_from_proto(action_pb2.ActionResult(id="c", status=-3))  # type: ignore[arg-type]
    assert not result.ok
    assert result.code == BAD_STATUS
    assert result.error is not None
    assert result.error.details == {"wire_status": "-3"}


# ---- capability descriptors ---------------------------------------------------------


@pytest.mark.parametrize("provider", list(ProviderKind))
def test_a_descriptor_round_trips_through_bytes(provider: ProviderKind) -> None:
    descriptor = CapabilityDescriptor(
        "weather.get", "2.1.0-beta.1", provider, {"desc": "Weather", "schema": "{}"}
    )
    data = descriptor_to_proto(descriptor).SerializeToString()
    message = action_pb2.CapabilityDescriptor.FromString(data)
    assert message.provider == provider.value
    back = descriptor_from_proto(message)
    assert back == descriptor
    assert back.provider is provider


def test_a_descriptor_without_a_version_gets_the_default() -> None:
    back = descriptor_from_proto(action_pb2.CapabilityDescriptor(name="x.y"))
    assert back.version == CapabilityDescriptor("x.y").version == "0.1.0"
    assert back.provider is ProviderKind.PROVIDER_NATIVE


@pytest.mark.parametrize(
    ("fields", "named"),
    [
        ({"name": "x.y", "provider": 9}, "field provider: unknown ProviderKind 9"),
        ({"name": "has space"}, "capability name"),
        ({"name": ""}, "capability name"),
        ({"name": "x.y", "version": "1.0.0.0"}, "not a semantic version"),
    ],
)
def test_a_bad_wire_descriptor_raises_capability_error_naming_the_field(
    fields: dict[str, object], named: str
) -> None:
    with pytest.raises(CapabilityError) as caught:
        descriptor_from_proto(action_pb2.CapabilityDescriptor(**fields))  # type: ignore[arg-type]
    name = fields["name"]
    assert str(caught.value).startswith(f"loom.v1.CapabilityDescriptor {name!r} from the wire: ")
    assert named in str(caught.value)


# ---- enums --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("ours", "theirs", "prefix"),
    [
        (QoS, event_pb2.QoSLevel, "QOS_"),
        (ActionStatus, action_pb2.ActionStatus, ""),
        (ProviderKind, action_pb2.ProviderKind, ""),
    ],
)
def test_loomk_enums_and_wire_enums_agree_by_name_and_number(
    ours: type[QoS] | type[ActionStatus] | type[ProviderKind],
    theirs: object,
    prefix: str,
) -> None:
    wire = dict(theirs.items())  # type: ignore[attr-defined]
    assert {prefix + member.name: member.value for member in ours} == wire


def test_every_loomk_enum_value_encodes_to_its_own_number() -> None:
    for qos in QoS:
        assert call_to_proto(ActionCall("c", "x.y", qos=qos)).qos == qos.value
    for status in ActionStatus:
        assert result_to_proto(ActionResult("c", status)).status == status.value
    for provider in ProviderKind:
        assert descriptor_to_proto(CapabilityDescriptor("x.y", provider=provider)).provider == (
            provider.value
        )


@pytest.mark.parametrize(("wire", "read"), [("1", "1.0.0"), ("1.0", "1.0.0"), ("2.5", "2.5.0")])
def test_short_versions_of_looms_sdk_read_as_semantic_ones(wire: str, read: str) -> None:
    """Loom's Python SDK registers and calls capabilities at version "1.0"."""
    descriptor = descriptor_from_proto(action_pb2.CapabilityDescriptor(name="x.y", version=wire))
    call = call_from_proto(action_pb2.ActionCall(id="c", capability="x.y", version=wire))
    assert (descriptor.version, call.version) == (read, read)
