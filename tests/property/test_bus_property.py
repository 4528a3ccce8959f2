"""Property tests of the event bus: lossless ``block`` delivery and counter conservation.

Each example runs its own ``trio.run``; hypothesis drives the operations.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import trio
import trio.testing
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from loomk import Event, EventBus, Overflow, QoS
from loomk.bus import Subscription
from loomk.testing import assert_conserved

SETTINGS = settings(
    max_examples=120,
    deadline=None,
    database=None,
    derandomize=True,  # the same examples every run
    suppress_health_check=[HealthCheck.too_slow],
)


def run(main: Callable[[], object]) -> None:
    """Run ``main`` on a mock clock: a deadlock fails fast with TooSlowError, never hangs."""

    async def guarded() -> None:
        with trio.fail_after(3600):
            await main()  # type: ignore[misc]

    trio.run(guarded, clock=trio.testing.MockClock(autojump_threshold=0))


def matches(pattern: str, topic: str) -> bool:
    """Reference matcher, independent of the bus's trie."""
    p, t = pattern.split("."), topic.split(".")
    if p[-1] == ">":
        return len(t) >= len(p) and all(a in ("*", b) for a, b in zip(p[:-1], t, strict=False))
    return len(p) == len(t) and all(a in ("*", b) for a, b in zip(p, t, strict=True))


# --- (1) block: every published event is received exactly once, in order -------------------

block_ops = st.lists(
    st.one_of(
        st.tuples(st.just("pub"), st.integers(0, 2), st.integers(1, 10)),
        st.tuples(st.just("take"), st.just(0), st.integers(1, 12)),
    ),
    max_size=30,
)


@SETTINGS
@given(capacity=st.integers(1, 8), publishers=st.integers(1, 3), ops=block_ops)
def test_block_delivers_every_event_exactly_once_in_order(
    capacity: int, publishers: int, ops: list[tuple[str, int, int]]
) -> None:
    async def main() -> None:
        bus = EventBus()
        sub = bus.subscribe("t", overflow="block", capacity=capacity)
        sent = [0] * publishers
        received: list[tuple[int, int]] = []
        finished = [0]

        async def publisher(index: int, bursts: trio.MemoryReceiveChannel[int]) -> None:
            seq = 0
            async for count in bursts:
                for _ in range(count):
                    assert await bus.publish("t", Event("m", f"{index}:{seq}".encode())) == 1
                    seq += 1
            finished[0] += 1

        def take(limit: int) -> None:
            for _ in range(limit):
                try:
                    _, event = sub.receive_nowait()
                except trio.WouldBlock:
                    return
                index, seq = event.payload.decode().split(":")
                received.append((int(index), int(seq)))

        async with trio.open_nursery() as nursery:
            senders = []
            for index in range(publishers):
                send, receive = trio.open_memory_channel[int](float("inf"))
                senders.append(send)
                nursery.start_soon(publisher, index, receive)
            for op, who, count in ops:
                if op == "pub":
                    who %= publishers
                    senders[who].send_nowait(count)
                    sent[who] += count
                else:
                    take(count)
                await trio.testing.wait_all_tasks_blocked()
                depth = sub.stats().depth
                assert depth <= capacity
                # nothing is lost or duplicated while publishers wait
                assert len(received) + depth <= sum(sent)
                assert sub.stats().dropped == {}
            for send in senders:
                send.close()
            for _ in range(sum(sent) + 2):  # bounded: a lost wake-up fails, never hangs
                await trio.testing.wait_all_tasks_blocked()
                take(sum(sent))
                if finished[0] == publishers and len(received) == sum(sent):
                    break

        assert finished[0] == publishers
        for index in range(publishers):
            assert [seq for who, seq in received if who == index] == list(range(sent[index]))
        assert len(received) == sum(sent)
        stats = sub.stats()
        assert (stats.delivered, stats.dropped, stats.depth) == (sum(sent), {}, 0)
        assert stats.high_water <= capacity
        topic = bus.stats("t")
        assert (topic.published, topic.delivered, topic.dropped) == (sum(sent), sum(sent), {})

    run(main)


# --- (2) conservation: matched == delivered + dropped + filtered ---------------------------

# few, overlapping names, so that subscriptions match often and lanes overflow
PATTERNS = ["a", "a.b", "a.*", "a.>", "*.c", "*", ">", "b.c", "*.*.>"]
TOPICS = ["a", "a.b", "a.c", "b.c", "a.b.c"]
TYPES = ["x", "y", "z"]


def merge_ok(queued: Event, new: Event) -> Event:
    return Event(new.type, queued.payload + b"," + new.payload, metadata=new.metadata)


def merge_flaky(queued: Event, new: Event) -> Event:
    if new.payload.endswith(b"!"):
        raise ValueError("refuses")
    if new.payload.endswith(b"?"):
        return None  # type: ignore[return-value]
    return merge_ok(queued, new)


def key_by_type(topic: str, event: Event) -> str:
    return event.type


high_waters = st.none() | st.integers(1, 4)
policies = st.one_of(
    st.just("block"),
    st.just("drop_oldest"),
    st.just("drop_newest"),
    st.builds(Overflow.sample, st.integers(1, 4), high_water=high_waters),
    st.builds(Overflow.latest, st.sampled_from([None, "k", key_by_type])),
    st.builds(Overflow.aggregate, st.sampled_from([merge_ok, merge_flaky]), high_water=high_waters),
)


@dataclass
class SubSpec:
    pattern: str
    policy: object
    capacity: int
    qos: QoS
    event_types: list[str] | None


sub_specs = st.builds(
    SubSpec,
    pattern=st.sampled_from(PATTERNS),
    policy=policies,
    capacity=st.integers(1, 4),
    qos=st.sampled_from(list(QoS)),
    event_types=st.none() | st.lists(st.sampled_from(TYPES), min_size=1, max_size=2),
)

publish_op = st.tuples(
    st.just("pub"),
    st.sampled_from(TOPICS),
    st.sampled_from(TYPES),
    st.sampled_from(["", "!", "?"]),  # "!" and "?" make merge_flaky fail
    st.sampled_from(["k1", "k2"]),
    st.integers(1, 8),  # a burst of that many events
)
conservation_ops = st.lists(
    st.one_of(
        publish_op,
        publish_op,
        publish_op,
        st.tuples(st.just("drain"), st.integers(0, 99), st.integers(1, 5)),
        st.tuples(st.just("unsub"), st.integers(0, 99)),
    ),
    min_size=5,
    max_size=40,
)


@dataclass
class Model:
    matched: int = 0
    filtered: int = 0
    received: list[Event] = field(default_factory=list)
    offered: list[Event] = field(default_factory=list)  # matched and not filtered, in order
    active: bool = True


@settings(SETTINGS, max_examples=250)
@given(specs=st.lists(sub_specs, min_size=1, max_size=6), ops=conservation_ops)
def test_counters_are_conserved(specs: list[SubSpec], ops: list[tuple]) -> None:
    async def main() -> None:
        bus = EventBus()
        subs: list[Subscription] = []
        models: list[Model] = []
        reach: dict[str, int] = {}
        published: dict[str, int] = {}
        calls = [0]

        async def consume(sub: Subscription, model: Model) -> None:
            async for _, event in sub:
                model.received.append(event)

        def drain_into(index: int, limit: int) -> None:
            for _ in range(limit):
                try:
                    _, event = subs[index].receive_nowait()
                except (trio.WouldBlock, trio.EndOfChannel):
                    return
                models[index].received.append(event)

        async def publish(topic: str, event: Event) -> None:
            lower = upper = 0
            for spec, model in zip(specs, models, strict=True):
                if not (model.active and matches(spec.pattern, topic)):
                    continue
                model.matched += 1
                reach[topic] = reach.get(topic, 0) + 1
                if spec.event_types is not None and event.type not in spec.event_types:
                    model.filtered += 1
                    continue
                model.offered.append(event)
                upper += 1
                if spec.policy in ("block", "drop_oldest") or (
                    isinstance(spec.policy, Overflow) and spec.policy.kind == "latest"
                ):
                    lower += 1  # these policies always queue the new event
            count = await bus.publish(topic, event)
            assert lower <= count <= upper
            published[topic] = published.get(topic, 0) + 1
            calls[0] += 1

        async with trio.open_nursery() as nursery:
            for spec in specs:
                sub = bus.subscribe(
                    spec.pattern,
                    qos=spec.qos,
                    event_types=spec.event_types,
                    overflow=spec.policy,  # type: ignore[arg-type]
                    capacity=spec.capacity,
                )
                subs.append(sub)
                models.append(Model())
                if spec.policy == "block":  # lossless lanes need a live consumer
                    nursery.start_soon(consume, sub, models[-1])

            for serial, op in enumerate(ops):
                if op[0] == "pub":
                    _, topic, etype, mark, key, times = op
                    for burst in range(times):
                        payload = f"{serial}.{burst}{mark}".encode()
                        await publish(topic, Event(etype, payload, metadata={"k": key}))
                elif op[0] == "drain":
                    drain_into(op[1] % len(subs), op[2])
                else:
                    index = op[1] % len(subs)
                    subs[index].unsubscribe()
                    models[index].active = False

            for sub in subs:
                sub.unsubscribe()
            await trio.testing.wait_all_tasks_blocked()
            for index in range(len(subs)):
                drain_into(index, 10_000)

        totals_reach = 0
        for spec, sub, model in zip(specs, subs, models, strict=True):
            stats = sub.stats()
            assert stats.depth == 0
            assert stats.filtered == model.filtered
            assert stats.delivered == len(model.received)
            assert_conserved(sub, model.matched)
            assert stats.high_water <= spec.capacity
            if spec.policy == "block":
                assert stats.dropped == {}
                assert [e.payload for e in model.received] == [e.payload for e in model.offered]
            elif spec.policy in ("drop_oldest", "drop_newest") or (
                isinstance(spec.policy, Overflow) and spec.policy.kind == "sample"
            ):
                # a FIFO that only loses events: what arrives is an ordered subsequence
                positions = {id(e): n for n, e in enumerate(model.offered)}
                order = [positions[id(e)] for e in model.received]
                assert order == sorted(order)
                assert len(set(order)) == len(order)
        for topic, count in published.items():
            stats = bus.stats(topic)
            assert stats.published == count
            assert assert_conserved(bus, topic).matched == reach.get(topic, 0)
            totals_reach += reach.get(topic, 0)
        totals = bus.totals()
        assert totals.published == calls[0] == sum(op[5] for op in ops if op[0] == "pub")
        assert assert_conserved(bus, ">").matched == totals_reach
        assert totals.delivered == sum(len(m.received) for m in models)

    run(main)
