"""Property tests of the per-delivery hop: ``hop_metadata`` and ``delivered_event``.

``hop_metadata`` is the runtime's flattened, fast version of the envelope step; it must
agree exactly with the reference built from :class:`Envelope` for any metadata, including
junk and numbers at the edges of Loom's i32 ttl and u32 hop.
"""

from __future__ import annotations

import re
import time

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from loomk import Envelope, Event
from loomk._hop import hop_metadata
from loomk.envelope import RESERVED_KEYS
from loomk.events import delivered_event

SETTINGS = settings(
    max_examples=250,
    deadline=None,
    database=None,
    derandomize=True,  # the same examples every run
    suppress_health_check=[HealthCheck.too_slow],
)

_I32_MIN, _I32_MAX, _U32_MAX = -(2**31), 2**31 - 1, 2**32 - 1
_DECIMAL = re.compile(r"[0-9]+")

edge_numbers = st.sampled_from(
    [
        _I32_MIN - 1,
        _I32_MIN,
        _I32_MIN + 1,
        -1,
        0,
        1,
        2,
        3,
        16,
        254,
        255,
        256,
        257,
        _I32_MAX - 1,
        _I32_MAX,
        _I32_MAX + 1,
        _U32_MAX - 1,
        _U32_MAX,
        _U32_MAX + 1,
        2**63,
        -(2**63) - 1,
    ]
)
numeric_text = st.one_of(
    edge_numbers.map(str),
    edge_numbers.map(lambda n: f"+{n}" if n >= 0 else str(n)),
    edge_numbers.map(lambda n: f"00{n}" if n >= 0 else str(n)),
    st.integers(-(2**34), 2**34).map(str),
    st.integers(-5, 300).map(str),
)
junk = st.sampled_from(
    [
        "",
        " ",
        "-",
        "+",
        "+-1",
        "1.0",
        "1e3",
        "0x10",
        " 7",
        "7 ",
        "7\n",
        "1_000",
        "٣",  # an Arabic-Indic digit: int() would take it, Loom's parser does not
        "\uff15",  # a fullwidth digit
        "NaN",
        "agent.x",
        "thread.t.reply",
    ]
)
# Any text an event can hold: everything but NUL and lone surrogates (the wire's UTF-8).
wire_char = st.characters(exclude_categories=["Cs"], exclude_characters="\x00")
value = st.one_of(numeric_text, junk, st.text(wire_char, max_size=12))
other_key = st.text(wire_char, min_size=1, max_size=6).filter(lambda k: k not in RESERVED_KEYS)
metadata = st.builds(
    lambda reserved, others: {**others, **reserved},
    st.dictionaries(st.sampled_from(RESERVED_KEYS), value),
    st.dictionaries(other_key, st.text(wire_char, max_size=8), max_size=3),
)
ident = st.one_of(
    st.sampled_from(["evt-1", "a", "x" * 40]), st.text(wire_char, min_size=1, max_size=10)
)
sender = st.one_of(
    st.sampled_from(["", "agent.me", "agent.other"]), st.text(wire_char, max_size=10)
)


def reference(md: dict[str, str], fallback_id: str, sender: str) -> dict[str, str] | None:
    """The envelope path ``hop_metadata`` must agree with."""
    env = Envelope.from_metadata(md, fallback_id)
    if not env.sender:
        env.sender = sender
    if not env.next_hop():
        return None
    out = dict(md)
    env.apply_to_metadata(out)
    return out


def ts_is_kept(md: dict[str, str]) -> bool:
    """Whether ``ts`` parses (ASCII digits with an optional sign), so it must be kept."""
    raw = md.get("ts")
    return raw is not None and re.fullmatch(r"[+-]?[0-9]+", raw, flags=re.ASCII) is not None


def assert_same_hop(got: dict[str, str] | None, want: dict[str, str] | None, md: dict[str, str]):
    assert (got is None) == (want is None), (got, want)
    if got is None or want is None:
        return
    assert got.keys() == want.keys()
    if ts_is_kept(md):
        assert got == want
        assert got["ts"] == str(int(md["ts"]))
    else:
        # both sides stamp "now" at slightly different instants
        assert {k: v for k, v in got.items() if k != "ts"} == {
            k: v for k, v in want.items() if k != "ts"
        }
        assert _DECIMAL.fullmatch(got["ts"])
        assert abs(int(got["ts"]) - time.time() * 1000) < 600_000


@SETTINGS
@given(md=metadata, fallback_id=ident, sender=sender)
def test_hop_metadata_equals_the_envelope_path(
    md: dict[str, str], fallback_id: str, sender: str
) -> None:
    before = dict(md)
    got = hop_metadata(md, fallback_id, sender)
    assert md == before  # the input is never changed
    assert_same_hop(got, reference(md, fallback_id, sender), md)
    if got is not None:
        assert got is not md
        assert set(RESERVED_KEYS) <= got.keys()
        for key, val in md.items():  # other keys pass through untouched
            if key not in RESERVED_KEYS:
                assert got[key] == val


@SETTINGS
@given(
    ttl=st.integers(-3, 40),
    hop=st.one_of(st.integers(0, 300), st.integers(_U32_MAX - 40, _U32_MAX)),
)
def test_a_message_lives_exactly_ttl_minus_one_deliveries(ttl: int, hop: int) -> None:
    md: dict[str, str] | None = {"ttl": str(ttl), "hop": str(hop), "sender": "agent.s"}
    deliveries = 0
    while md is not None:
        md = hop_metadata(md, "evt", "agent.r")
        if md is not None:
            deliveries += 1
            assert int(md["ttl"]) == ttl - deliveries
            assert int(md["hop"]) == min(hop + deliveries, _U32_MAX)
        assert deliveries <= 40
    assert deliveries == max(0, ttl - 1)


@SETTINGS
@given(md=metadata, event_id=st.one_of(st.none(), ident))
def test_delivered_event_per_receiver(md: dict[str, str], event_id: str | None) -> None:
    event = Event("e", b"payload", metadata=md, id=event_id)
    before = dict(event.metadata)
    first = delivered_event(event, "agent.x")
    second = delivered_event(event, "agent.y")
    assert event.metadata == before  # the shared original is never changed

    want = reference(md, event.id, "agent.x")
    if want is None:  # expired: every receiver drops it
        assert first is None
        assert second is None
        return
    assert first is not None
    assert second is not None
    assert first is not event
    lazy = first.conversation()  # read before the copy's metadata is written
    assert_same_hop(first.metadata, want, md)
    assert (
        lazy
        == first.conversation()
        == (
            first.metadata["thread_id"],
            first.metadata["correlation_id"],
            first.metadata["reply_to"],
        )
    )
    assert first.metadata["thread_id"] == (md.get("thread_id") or event.id)
    for copy in (first, second):
        assert (copy.id, copy.type, copy.payload) == (event.id, event.type, event.payload)
        assert copy.metadata is not event.metadata
    if md.get("sender"):
        # the copy is the same for everyone, so it is made once
        assert second is first
        assert first.metadata["sender"] == md["sender"]
    else:
        # each receiver fills in itself as the sender
        assert second is not first
        assert first.metadata["sender"] == "agent.x"
        assert second.metadata["sender"] == "agent.y"
        assert_same_hop(second.metadata, reference(md, event.id, "agent.y"), md)
    # a delivered copy forwarded on takes one more hop
    again = delivered_event(first, "agent.z")
    assert_same_hop(
        None if again is None else again.metadata,
        reference(first.metadata, first.id, "agent.z"),
        first.metadata,
    )
    assert event.metadata == before
