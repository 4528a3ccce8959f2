"""The cluster's parts that need no server: the wire codec, the share setting, stream names,
JetStream redelivery bookkeeping, and the peers' directory entries and capabilities (their
expiry on a MockClock)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import trio
import trio.testing
from hypothesis import given
from hypothesis import strategies as st
from store_support import running

from loomk import ActionBroker, AgentDirectory, AgentInfo, ConfigError, Event
from loomk.actions import ActionCall, ActionResult, CapabilityDescriptor
from loomk.cluster._durable import DurableStream, stream_name
from loomk.cluster._peers import Peers, RemoteCapability
from loomk.cluster._wire import (
    NotAnEvent,
    decode_announcement,
    decode_call,
    decode_event,
    decode_result,
    encode_announcement,
    encode_call,
    encode_event,
    encode_goodbye,
    encode_result,
)
from loomk.config import Config, parse_cluster_share, patterns_overlap

# ---- wire ----------------------------------------------------------------------------------


def test_an_event_crosses_the_wire_whole_but_for_the_local_origin_stamp() -> None:
    event = Event(
        "sensor.reading",
        b"\x00\xffraw",
        source="cam",
        metadata={"thread_id": "t1", "loomk.origin": "cluster:a"},
        tags=["x", "y"],
        priority=7,
        confidence=0.25,
    )
    node, back = decode_event(encode_event(event, "a"))
    assert node == "a"
    assert (back.id, back.type, back.payload, back.source) == (
        event.id,
        event.type,
        event.payload,
        event.source,
    )
    assert back.metadata == {"thread_id": "t1"}
    assert (back.tags, back.priority, back.confidence) == (("x", "y"), 7, 0.25)
    assert back.timestamp_ms == event.timestamp_ms


@given(st.binary(max_size=64))
def test_bytes_that_are_no_loomk_event_raise_not_an_event(data: bytes) -> None:
    try:
        decode_event(data)
    except NotAnEvent:
        return
    assert data.startswith(b"\x00LK1")  # only a well-formed envelope decodes


@pytest.mark.parametrize(
    "body",
    [
        b"plain text",
        b"\x00LK1\x00\x00\x01\x00{}",  # length past the end
        b"\x00LK1\x00\x00\x00\x02{}",  # no type, no id
        b'\x00LK1\x00\x00\x00\x2a{"n":"a","i":"x","t":"bad type!","ts":1}',
        b'\x00LK1\x00\x00\x00\x1f{"n":5,"i":"x","t":"ok","ts":1}',
    ],
)
def test_broken_envelopes_say_why(body: bytes) -> None:
    with pytest.raises(NotAnEvent):
        decode_event(body)


def test_calls_and_results_cross_whole() -> None:
    call = ActionCall("c1", "calc.double", b'{"x": 1}', version="1.0.0", timeout_ms=500)
    assert decode_call(encode_call(call)) == call
    result = ActionResult.failure(
        "c1",
        "TOOL_ERROR",
        "no",
    )
    assert decode_result(encode_result(result)) == result
    ok = ActionResult.success("c1", {"y": 2})
    assert decode_result(encode_result(ok)) == ok
    with pytest.raises(ValueError, match="not a capability call"):
        decode_call(b"[1]")
    with pytest.raises(ValueError, match="not a capability result"):
        decode_result(b'{"id": "x"}')


def test_announcements_cross_whole_and_bad_ones_say_why() -> None:
    agents = [AgentInfo("worker", ("ask.>",), ("calc.double",))]
    body = encode_announcement("b", "run-1", 2.0, agents, [CapabilityDescriptor("calc.double")])
    heard = decode_announcement(body.encode())
    assert (heard.node, heard.instance, heard.every_s, heard.bye) == ("b", "run-1", 2.0, False)
    assert heard.agents == tuple(agents)
    assert [d.name for d in heard.capabilities] == ["calc.double"]
    assert decode_announcement(encode_goodbye("b", "run-1")).bye
    for bad, why in [
        (b"{", "Expecting property name"),
        (b'{"node": "two words"}', "bad node name"),
        (b'{"node": "b", "agents": [{"topics": []}]}', "KeyError"),
        (b'{"node": "b", "agents": [{"id": "x", "topics": ["a..b"]}]}', "empty token"),
    ]:
        with pytest.raises(ValueError, match=why):
            decode_announcement(bad)


# ---- settings ------------------------------------------------------------------------------


def test_the_share_setting_reads_patterns_and_qos() -> None:
    assert parse_cluster_share("sensor.>, order.*=batched, log.>=BACKGROUND") == [
        ("sensor.>", "realtime"),
        ("order.*", "batched"),
        ("log.>", "background"),
    ]
    for bad, why in [
        ("a.>.b", "not a topic pattern"),
        ("a.b=fast", "QoS"),
        (" , ", "no pattern"),
        ("a.>=batched, a.b=background", "overlap"),
    ]:
        with pytest.raises(ValueError, match=why):
            parse_cluster_share(bad)
    with pytest.raises(ConfigError, match="cluster_share"):
        Config.load(env={}, cluster_share="a.>=batched, *.b=batched")


@pytest.mark.parametrize(
    ("first", "second", "overlap"),
    [
        ("a.>", "a.b", True),
        ("a.b.>", "a.b", False),
        ("a.*", "a.b", True),
        ("a.*", "b.*", False),
        (">", "x.y.z", True),
        ("a.b", "a.b.c", False),
        ("*.b", "a.*", True),
    ],
)
def test_pattern_overlap(first: str, second: str, overlap: bool) -> None:
    assert patterns_overlap(first, second) is overlap
    assert patterns_overlap(second, first) is overlap


def test_cluster_urls_and_node_names_are_checked() -> None:
    assert Config.load(env={"LOOMK_CLUSTER_NATS_URL": "nats://a:1, tls://u:p@b:2"})
    with pytest.raises(ConfigError, match="cluster_nats_url"):
        Config.load(env={}, cluster_nats_url="http://example.com")
    with pytest.raises(ConfigError, match="cluster_node"):
        Config.load(env={}, cluster_node="two words")


def test_stream_names_are_readable_and_one_per_pattern() -> None:
    assert stream_name("loomk", "order.>").startswith("LOOMK_order_ALL_")
    assert stream_name("loomk", "a.*") != stream_name("loomk", "a_ANY")
    assert stream_name("loomk", "a.b") != stream_name("loomk", "a_b")


# ---- redelivery bookkeeping ----------------------------------------------------------------


def test_a_stream_publishes_new_sequences_once_and_acknowledges_settled_repeats() -> None:
    stream = DurableStream("order.>", "loomk.order.>", "S", b"k")
    for sequence in (1, 2, 3, 7):  # what an earlier run recorded
        stream.settled.add(sequence)
    assert stream.settled.ranges == [[1, 3], [7, 7]]
    assert stream.admit(2, True) == "again"  # settled before: acknowledge, publish nothing
    assert stream.admit(8, False) == "new"  # delivered after restart before the ones below
    assert stream.admit(5, True) == "new"  # never settled: published now, not lost
    assert stream.admit(8, True) == "held"  # still pending here
    assert stream.redelivered == 3
    stream.hold(8, "m8", None)
    stream.hold(5, "m5", None)
    assert stream.ready() == ["m8", "m5"]
    assert stream.ready() == []
    assert stream.settled.ranges == [[1, 3], [5, 5], [7, 8]]
    stream.settled.add(4)
    stream.settled.add(6)
    assert stream.settled.ranges == [[1, 8]]
    assert 6 in stream.settled
    assert 9 not in stream.settled
    assert 0 not in stream.settled


async def test_the_settled_record_is_read_back_only_for_the_same_stream(tmp_path: Path) -> None:
    async with running(tmp_path / "db") as store:
        first = DurableStream("order.>", "loomk.order.>", "S", b"k")
        first.created = "t1"
        first.settled.add(10)
        await store.commit({b"k": first.mark_value()})
        again = DurableStream("order.>", "loomk.order.>", "S", b"k")
        again.load_mark(store, "t1")
        assert 10 in again.settled
        remade = DurableStream("order.>", "loomk.order.>", "S", b"k")
        remade.load_mark(store, "t2")  # the stream was made again: sequences start over
        assert 10 not in remade.settled


# ---- peers ---------------------------------------------------------------------------------


class Native:
    descriptor = CapabilityDescriptor("local.only")

    async def invoke(self, call: ActionCall) -> ActionResult:
        return ActionResult.success(call.id, "here")


async def test_peers_list_agents_offer_capabilities_and_expire(
    autojump_clock: trio.testing.MockClock,
) -> None:
    directory, broker = AgentDirectory(), ActionBroker()
    broker.register(Native())
    directory.register(AgentInfo("mine", ("x.y",)))
    sent: list[tuple[str, str]] = []

    async def invoke(node: str, call: ActionCall) -> ActionResult:
        sent.append((node, call.capability))
        return ActionResult.success(call.id, node)

    peers = Peers("a", directory, broker, invoke, expiry_s=6.0)
    offered = [CapabilityDescriptor("calc.double"), CapabilityDescriptor("local.only")]
    assert peers.announced(
        "b", [AgentInfo("worker", ("ask.>",)), AgentInfo("mine", ("z",))], offered
    )
    assert not peers.announced("b", [AgentInfo("worker", ("ask.>",))], offered)
    worker = directory.get("worker")
    assert worker is not None
    assert worker.metadata["loomk.node"] == "b"
    assert directory.get("mine") == AgentInfo("mine", ("x.y",))  # its own stays
    assert isinstance(broker.resolve("calc.double"), RemoteCapability)
    assert not isinstance(broker.resolve("local.only"), RemoteCapability)
    assert [a.agent_id for a in peers.own_agents()] == ["mine"]
    assert [d.name for d in peers.own_capabilities()] == ["local.only"]

    peers.announced("c", [], [CapabilityDescriptor("calc.double")])
    for expected in ("b", "c", "b"):  # round robin over the kernels offering it
        result = await broker.invoke(ActionCall(f"call-{len(sent)}", "calc.double"))
        assert json.loads(result.output) == expected

    await trio.sleep(4)
    peers.announced("c", [], [CapabilityDescriptor("calc.double")])
    await trio.sleep(3)
    peers.expire()  # b silent for 7 s: gone; c heard 3 s ago: stays
    assert list(peers.peers) == ["c"]
    assert "worker" not in directory
    assert broker.resolve("calc.double") is not None
    peers.gone("c", "it left")
    assert broker.resolve("calc.double") is None
    assert broker.resolve("local.only") is not None
