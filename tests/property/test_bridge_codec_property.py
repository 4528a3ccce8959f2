"""Property tests of loomk_bridge.codec: every valid value survives the wire.

- A loomk event goes out and comes back through bytes equal to itself when its confidence
  is a float32 (any other confidence comes back as its nearest float32), and a valid wire
  event goes through loomk and back out as the same message: the bridge forwards bytes
  unchanged.
- Calls, results (known statuses) and descriptors round-trip exactly both ways.
"""

from __future__ import annotations

import struct

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from loomk import (
    ActionCall,
    ActionError,
    ActionResult,
    ActionStatus,
    CapabilityDescriptor,
    Event,
    ProviderKind,
    QoS,
)
from loomk_bridge._proto import action_pb2, event_pb2
from loomk_bridge.codec import (
    call_from_proto,
    call_to_proto,
    descriptor_from_proto,
    descriptor_to_proto,
    event_from_proto,
    event_to_proto,
    result_from_proto,
    result_to_proto,
)

SETTINGS = settings(
    max_examples=250,
    deadline=None,
    database=None,
    derandomize=True,  # the same examples every run
    suppress_health_check=[HealthCheck.too_slow],
)

_INT64 = (-(2**63), 2**63 - 1)

# Text the wire carries and loomk takes: any code point but NUL and surrogates.
wire_text = st.text(st.characters(codec="utf-8", exclude_characters="\x00"), max_size=20)
nonempty_text = st.text(
    st.characters(codec="utf-8", exclude_characters="\x00"), min_size=1, max_size=20
)
string_maps = st.dictionaries(wire_text, wire_text, max_size=6)
float32_confidences = st.floats(0.0, 1.0, width=32)
# 0 is the wire's "unset": it reads as now (tested in the unit tests)
timestamps = st.integers(*_INT64).filter(lambda ms: ms != 0)


def _float32(value: float) -> float:
    result: float = struct.unpack("<f", struct.pack("<f", value))[0]
    return result


@st.composite
def events(draw: st.DrawFn, confidence: st.SearchStrategy[float] = float32_confidences) -> Event:
    return Event(
        draw(nonempty_text),
        draw(st.binary(max_size=64)),
        source=draw(wire_text),
        metadata=draw(string_maps),
        tags=draw(st.lists(wire_text, max_size=4)),
        priority=draw(st.integers(0, 100)),
        confidence=draw(confidence),
        id=draw(st.none() | nonempty_text),
        timestamp_ms=draw(timestamps),
    )


def _through_bytes(event: Event) -> Event:
    data = event_to_proto(event).SerializeToString()
    return event_from_proto(event_pb2.Event.FromString(data))


@SETTINGS
@given(events())
def test_an_event_with_a_float32_confidence_round_trips_exactly(event: Event) -> None:
    back = _through_bytes(event)
    assert back == event
    assert back.tags == event.tags


@SETTINGS
@given(events(confidence=st.floats(0.0, 1.0)))
def test_any_confidence_comes_back_as_its_nearest_float32(event: Event) -> None:
    back = _through_bytes(event)
    assert back.confidence == _float32(event.confidence)
    assert back == event.replace(confidence=_float32(event.confidence))


@SETTINGS
@given(
    st.builds(
        event_pb2.Event,
        id=nonempty_text,
        type=nonempty_text,
        timestamp_ms=timestamps,
        source=wire_text,
        metadata=string_maps,
        payload=st.binary(max_size=64),
        confidence=float32_confidences,
        tags=st.lists(wire_text, max_size=4),
        priority=st.integers(0, 100),
    )
)
def test_a_valid_wire_event_goes_back_out_unchanged(message: event_pb2.Event) -> None:
    out = event_to_proto(event_from_proto(message))
    assert out == message
    assert out.SerializeToString(deterministic=True) == message.SerializeToString(
        deterministic=True
    )


@SETTINGS
@given(
    st.builds(
        ActionCall,
        id=wire_text,
        capability=nonempty_text,
        payload=st.binary(max_size=64),
        # short numeric versions ("1.0", Loom's SDK) are read as semantic ones: not kept
        version=wire_text.filter(lambda v: v.count(".") >= 2 or not v.replace(".", "").isdigit()),
        headers=string_maps,
        timeout_ms=st.integers(0, _INT64[1]),
        correlation_id=wire_text,
        qos=st.sampled_from(QoS),
    )
)
def test_a_call_round_trips(call: ActionCall) -> None:
    data = call_to_proto(call).SerializeToString()
    assert call_from_proto(action_pb2.ActionCall.FromString(data)) == call


_errors = st.none() | st.builds(ActionError, wire_text, wire_text, string_maps)


@SETTINGS
@given(
    st.builds(
        ActionResult,
        id=wire_text,
        status=st.sampled_from(ActionStatus),
        output=st.binary(max_size=64),
        error=_errors,
    )
)
def test_a_result_round_trips(result: ActionResult) -> None:
    data = result_to_proto(result).SerializeToString()
    assert result_from_proto(action_pb2.ActionResult.FromString(data)) == result


@SETTINGS
@given(
    st.integers(-(2**31), 2**31 - 1).filter(lambda n: n not in {s.value for s in ActionStatus}),
    _errors,
)
def test_every_unknown_status_is_a_failure_naming_it(
    number: int, error: ActionError | None
) -> None:
    message = action_pb2.ActionResult(id="c", status=number, output=b"x")  # type: ignore[arg-type]
    if error is not None:
        message.error.CopyFrom(result_to_proto(ActionResult("c", error=error)).error)
    result = result_from_proto(message)
    assert result.status is ActionStatus.ACTION_ERROR
    assert result.error is not None
    assert result.error.details["wire_status"] == str(number)
    assert f"ActionStatus {number}," in result.error.message


_names = st.from_regex(r"[a-z_][a-z0-9_-]{0,8}(\.[a-z_][a-z0-9_-]{0,8}){0,3}", fullmatch=True)
_versions = st.tuples(st.integers(0, 999), st.integers(0, 999), st.integers(0, 999)).map(
    lambda parts: ".".join(map(str, parts))
)


@SETTINGS
@given(
    st.builds(
        CapabilityDescriptor,
        name=_names,
        version=_versions,
        provider=st.sampled_from(ProviderKind),
        metadata=string_maps,
    )
)
def test_a_descriptor_round_trips(descriptor: CapabilityDescriptor) -> None:
    data = descriptor_to_proto(descriptor).SerializeToString()
    assert descriptor_from_proto(action_pb2.CapabilityDescriptor.FromString(data)) == descriptor
