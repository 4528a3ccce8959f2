"""Unit tests for loomk.actions.ActionBroker through real providers, against Loom's broker.

Covers registration and version resolution, PROVIDER_UNAVAILABLE, the idempotency cache,
concurrency limits, retries, statistics, timeouts (on a MockClock), the envelope headers and
bad input, including that a failing call never affects the others.
"""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
import trio
import trio.testing

from loomk import ActionCallError, CapabilityError, Context, Event
from loomk.actions import (
    ActionBroker,
    ActionCall,
    ActionFailure,
    ActionResult,
    ActionStatus,
    BrokerStats,
    CapabilityDescriptor,
    CapabilityDirectory,
    CapabilityProvider,
    CapabilityStats,
    ErrorCode,
    FunctionProvider,
    capability,
)
from loomk.envelope import RESERVED_KEYS
from loomk.testing import RecordingProvider, ScriptedAgent, open_test_kernel

settle = trio.testing.wait_all_tasks_blocked

OK = ActionStatus.ACTION_OK
ERROR = ActionStatus.ACTION_ERROR
TIMEOUT = ActionStatus.ACTION_TIMEOUT
RETRYABLE = ActionStatus.ACTION_RETRYABLE


# --- providers ----------------------------------------------------------------------------

Behaviour = Callable[[ActionCall], Awaitable[Any]]


async def _noop(args: dict[str, Any]) -> Any:
    return None


class Hanging:
    """A provider that never answers; records that it was cancelled and left."""

    def __init__(self, name: str = "test.hang") -> None:
        self._descriptor = CapabilityDescriptor(name, "1.0.0")
        self.started = 0
        self.cancelled = 0
        self.exited = 0

    @property
    def descriptor(self) -> CapabilityDescriptor:
        return self._descriptor

    async def invoke(self, call: ActionCall) -> ActionResult:
        self.started += 1
        try:
            await trio.sleep_forever()
        except trio.Cancelled:
            self.cancelled += 1
            raise
        finally:
            self.exited += 1
        raise AssertionError("unreachable")


class Gated:
    """A provider whose calls wait for ``gate`` and count how many are inside at once."""

    def __init__(self, name: str = "test.gated") -> None:
        self._descriptor = CapabilityDescriptor(name, "1.0.0")
        self.gate = trio.Event()
        self.inside = 0
        self.peak = 0
        self.count = 0

    @property
    def descriptor(self) -> CapabilityDescriptor:
        return self._descriptor

    async def invoke(self, call: ActionCall) -> ActionResult:
        self.count += 1
        self.inside += 1
        self.peak = max(self.peak, self.inside)
        try:
            await self.gate.wait()
        finally:
            self.inside -= 1
        return ActionResult.success(call.id, {"n": self.count})


class Flaky:
    """Answers ACTION_RETRYABLE ``failures`` times, then OK; notes when each attempt ran."""

    def __init__(self, failures: int, name: str = "test.flaky") -> None:
        self._descriptor = CapabilityDescriptor(name, "1.0.0")
        self.failures = failures
        self.attempts: list[float] = []

    @property
    def descriptor(self) -> CapabilityDescriptor:
        return self._descriptor

    async def invoke(self, call: ActionCall) -> ActionResult:
        self.attempts.append(trio.current_time())
        if len(self.attempts) <= self.failures:
            return ActionResult.failure(call.id, "BUSY", "try later", status=RETRYABLE)
        return ActionResult.success(call.id, {"attempt": len(self.attempts)})


def call(call_id: str, cap: str = "test.cap", args: Any = None, **fields: Any) -> ActionCall:
    return ActionCall.with_args(call_id, cap, {} if args is None else args, **fields)


# --- registration and resolution ----------------------------------------------------------


def test_providers_satisfy_the_protocol() -> None:
    assert isinstance(RecordingProvider(), CapabilityProvider)
    assert isinstance(Hanging(), CapabilityProvider)

    @capability("x.y")
    async def fn(args: dict[str, Any]) -> Any:
        return args

    assert isinstance(fn, FunctionProvider)
    assert isinstance(fn, CapabilityProvider)


async def test_register_list_and_invoke() -> None:
    broker = ActionBroker()
    provider = RecordingProvider("math.add")
    descriptor = broker.register(provider)
    assert descriptor == provider.descriptor
    assert len(broker) == 1
    assert "math.add" in broker
    assert "math.add:1.0.0" in broker
    assert "math.sub" not in broker
    assert broker.list_capabilities() == [descriptor]
    assert list(broker) == [descriptor]
    result = await broker.invoke(call("c1", "math.add"))
    assert result.ok
    assert result.id == "c1"
    assert result.json() == {"version": "1.0.0"}
    assert provider.count == 1


async def test_function_capability() -> None:
    @capability(
        "math.double",
        version="1.2.3",
        description="Doubles x",
        schema={"type": "object", "required": ["x"], "properties": {"x": {"type": "number"}}},
    )
    async def double(args: dict[str, Any]) -> Any:
        return {"value": args["x"] * 2}

    broker = ActionBroker()
    descriptor = broker.register(double)
    assert descriptor.key == "math.double:1.2.3"
    assert descriptor.description == "Doubles x"
    result = await broker.invoke(call("c1", "math.double", {"x": 21}))
    assert result.ok
    assert result.json() == {"value": 42}


async def test_unversioned_call_runs_the_highest_semantic_version() -> None:
    broker = ActionBroker()
    for version in ("1.10.0", "1.2.0", "1.9.9"):
        broker.register(RecordingProvider("v.cap", version))
    # 1.10.0 > 1.9.9 > 1.2.0 numerically (a string sort would pick 1.9.9)
    result = await broker.invoke(call("c1", "v.cap"))
    assert result.json() == {"version": "1.10.0"}
    assert broker.resolve("v.cap") is not None
    assert broker.resolve("v.cap").descriptor.version == "1.10.0"  # type: ignore[union-attr]


async def test_prerelease_of_a_higher_version_is_highest() -> None:
    broker = ActionBroker()
    for version in ("1.10.0", "2.0.0-rc.1", "1.2.0"):
        broker.register(RecordingProvider("v.cap", version))
    # semver: 2.0.0-rc.1 > 1.10.0 (pre-releases sit below 2.0.0 only)
    assert (await broker.invoke(call("c1", "v.cap"))).json() == {"version": "2.0.0-rc.1"}
    broker.register(RecordingProvider("v.cap", "2.0.0"))
    assert (await broker.invoke(call("c2", "v.cap"))).json() == {"version": "2.0.0"}
    broker.register(RecordingProvider("v.cap", "2.0.0-rc.2"))
    assert (await broker.invoke(call("c3", "v.cap"))).json() == {"version": "2.0.0"}


async def test_exact_version_is_honoured() -> None:
    broker = ActionBroker()
    for version in ("1.2.0", "1.10.0", "2.0.0-rc.1"):
        broker.register(RecordingProvider("v.cap", version))
    for version in ("1.2.0", "1.10.0", "2.0.0-rc.1"):
        result = await broker.invoke(call(f"c-{version}", "v.cap", version=version))
        assert result.json() == {"version": version}


async def test_registering_the_same_key_replaces_the_provider() -> None:
    broker = ActionBroker()
    old, new = RecordingProvider("r.cap"), RecordingProvider("r.cap")
    broker.register(old)
    broker.register(new)
    assert len(broker) == 1
    assert broker.list_capabilities() == [new.descriptor]
    assert (await broker.invoke(call("c1", "r.cap"))).ok
    assert (old.count, new.count) == (0, 1)
    assert broker.resolve("r.cap", "1.0.0") is new


async def test_unknown_capability_is_provider_unavailable() -> None:
    broker = ActionBroker()
    result = await broker.invoke(call("c1", "no.such"))
    assert result.status is ERROR
    assert result.code == ErrorCode.PROVIDER_UNAVAILABLE
    assert result.id == "c1"
    assert result.error is not None
    assert "no.such" in result.error.message


async def test_unknown_version_is_provider_unavailable() -> None:
    broker = ActionBroker()
    provider = RecordingProvider("v.cap", "1.0.0")
    broker.register(provider)
    result = await broker.invoke(call("c1", "v.cap", version="2.0.0"))
    assert result.status is ERROR
    assert result.code == ErrorCode.PROVIDER_UNAVAILABLE
    assert result.error is not None
    assert "v.cap:2.0.0" in result.error.message
    assert provider.count == 0


async def test_provider_unavailable_is_not_cached() -> None:
    broker = ActionBroker()
    first = await broker.invoke(call("c1", "late.cap"))
    assert first.code == ErrorCode.PROVIDER_UNAVAILABLE
    provider = RecordingProvider("late.cap")
    broker.register(provider)
    second = await broker.invoke(call("c1", "late.cap"))
    assert second.ok
    assert provider.count == 1


async def test_unregister_one_version_is_seen_at_once() -> None:
    broker = ActionBroker()
    directory = CapabilityDirectory(broker)
    for version in ("1.0.0", "2.0.0"):
        broker.register(RecordingProvider("u.cap", version))
    assert [d.version for d in directory.find_by_name("u.cap")] == ["2.0.0", "1.0.0"]
    removed = broker.unregister("u.cap", "2.0.0")
    assert [d.key for d in removed] == ["u.cap:2.0.0"]
    assert [d.version for d in directory.find_by_name("u.cap")] == ["1.0.0"]
    assert directory.get("u.cap", "2.0.0") is None
    assert "u.cap:2.0.0" not in directory
    assert "u.cap" in directory
    assert (await broker.invoke(call("c1", "u.cap"))).json() == {"version": "1.0.0"}
    gone = await broker.invoke(call("c2", "u.cap", version="2.0.0"))
    assert gone.code == ErrorCode.PROVIDER_UNAVAILABLE


async def test_unregister_all_versions() -> None:
    broker = ActionBroker()
    directory = CapabilityDirectory(broker)
    broker.register(RecordingProvider("other.cap"))
    for version in ("1.0.0", "1.1.0", "0.9.0"):
        broker.register(RecordingProvider("u.cap", version))
    removed = broker.unregister("u.cap")
    assert sorted(d.version for d in removed) == ["0.9.0", "1.0.0", "1.1.0"]
    assert "u.cap" not in broker
    assert "u.cap" not in directory
    assert directory.find_by_name("u.cap") == []
    assert [d.name for d in directory.list()] == ["other.cap"]
    assert len(broker) == len(directory) == 1
    result = await broker.invoke(call("c1", "u.cap"))
    assert result.code == ErrorCode.PROVIDER_UNAVAILABLE


def test_unregister_unknown_returns_nothing() -> None:
    broker = ActionBroker()
    broker.register(RecordingProvider("u.cap"))
    assert broker.unregister("nope") == []
    assert broker.unregister("u.cap", "9.9.9") == []
    assert len(broker) == 1


class _NoInvoke:
    descriptor = CapabilityDescriptor("x.y")


class _StrDescriptor:
    descriptor = "x.y:1.0.0"

    async def invoke(self, call: ActionCall) -> ActionResult:
        return ActionResult.success(call.id)


@pytest.mark.parametrize(
    "provider",
    [object(), None, "x.y", _NoInvoke(), _StrDescriptor(), CapabilityDescriptor("x.y")],
)
def test_registering_a_non_provider_raises(provider: Any) -> None:
    broker = ActionBroker()
    with pytest.raises(CapabilityError):
        broker.register(provider)
    assert len(broker) == 0


@pytest.mark.parametrize("limit", [0, -1, True, 1.5, "2"])
def test_bad_max_concurrency_raises_and_keeps_the_old_provider(limit: Any) -> None:
    broker = ActionBroker()
    old = RecordingProvider("m.cap")
    broker.register(old)
    with pytest.raises(CapabilityError):
        broker.register(RecordingProvider("m.cap"), max_concurrency=limit)
    assert broker.resolve("m.cap") is old


@pytest.mark.parametrize(
    "settings",
    [
        {"default_timeout_s": 0},
        {"default_timeout_s": -1.0},
        {"cache_size": -1},
        {"max_retries": -1},
        {"retry_backoff_s": -0.1},
    ],
)
def test_bad_broker_settings_raise(settings: dict[str, Any]) -> None:
    with pytest.raises(CapabilityError):
        ActionBroker(**settings)


# --- invoke never raises ------------------------------------------------------------------


@pytest.mark.parametrize("bad", [None, "c1", {"id": "c1", "capability": "x"}, 42])
async def test_invoke_with_a_non_call_is_invalid_params(bad: Any) -> None:
    broker = ActionBroker()
    result = await broker.invoke(bad)
    assert isinstance(result, ActionResult)
    assert result.status is ERROR
    assert result.code == ErrorCode.INVALID_PARAMS


MALFORMED = [
    pytest.param({"headers": None}, id="headers-None"),
    pytest.param({"headers": {"ttl": 5}}, id="header-not-str"),
    pytest.param({"headers": {"k": "a\x00b"}}, id="header-with-NUL"),
    pytest.param({"timeout_ms": None}, id="timeout-None"),
    pytest.param({"timeout_ms": 2**63}, id="timeout-beyond-int64"),
    pytest.param({"timeout_ms": -1}, id="timeout-negative"),
    pytest.param({"capability": ["test.cap"]}, id="capability-list"),
    pytest.param({"capability": "test.cap\ud800"}, id="capability-lone-surrogate"),
    pytest.param({"version": "1.0.0\x00"}, id="version-with-NUL"),
    pytest.param({"payload": "{}"}, id="payload-str"),
]


def forged(**fields: Any) -> ActionCall:
    """A call changed after it was made, past the checks its constructor makes."""
    made = ActionCall("c1", "test.cap")
    for name, value in fields.items():
        object.__setattr__(made, name, value)
    return made


@pytest.mark.parametrize("fields", MALFORMED)
async def test_invoke_with_a_malformed_call_never_raises(fields: dict[str, Any]) -> None:
    broker = ActionBroker()
    provider = RecordingProvider()
    broker.register(provider)
    result = await broker.invoke(forged(**fields))
    assert isinstance(result, ActionResult)
    assert result.status is ERROR
    assert result.code == ErrorCode.INVALID_PARAMS
    assert result.id == "c1"
    assert provider.count == 0
    assert (await broker.invoke(call("c2"))).ok  # and the broker works on


@pytest.mark.parametrize("fields", MALFORMED)
def test_a_malformed_call_cannot_be_made(fields: dict[str, Any]) -> None:
    with pytest.raises(ActionCallError) as info:
        ActionCall(**{"id": "c1", "capability": "test.cap", **fields})
    assert info.value.code == "ACTION_CALL_INVALID"


# --- idempotency --------------------------------------------------------------------------


async def test_same_call_id_runs_once_and_answers_equally() -> None:
    broker = ActionBroker()
    provider = RecordingProvider()
    broker.register(provider)
    first = await broker.invoke(call("c1"))
    second = await broker.invoke(call("c1"))
    assert provider.count == 1
    assert first == second
    assert second.ok
    third = await broker.invoke(call("c2"))
    assert provider.count == 2
    assert third.id == "c2"


async def secret_keeper(c: ActionCall) -> ActionResult:
    """Answers with what it was asked, and who asked: another call's data, if leaked."""
    return ActionResult.success(
        c.id,
        {
            "capability": c.capability,
            "version": c.version,
            "args": json.loads(c.payload),
            "caller": c.headers.get("sender", ""),
        },
    )


@pytest.mark.parametrize(
    ("first", "second"),
    [
        pytest.param(call("c1", "a.cap"), call("c1", "b.cap"), id="another-capability"),
        pytest.param(
            call("c1", "a.cap", {"user": "alice"}),
            call("c1", "a.cap", {"user": "bob"}),
            id="other-arguments",
        ),
        pytest.param(
            call("c1", "a.cap", version="1.0.0"), call("c1", "a.cap", version="2.0.0"), id="version"
        ),
        pytest.param(
            call("c1", "a.cap", headers={"sender": "agent.alice"}),
            call("c1", "a.cap", headers={"sender": "agent.bob"}),
            id="another-caller",
        ),
    ],
)
async def test_an_id_reused_for_another_call_never_gets_the_earlier_output(
    first: ActionCall, second: ActionCall
) -> None:
    # Loom looked the cache up by id alone, so the second caller got the first one's data
    broker = ActionBroker()
    for name, version in (("a.cap", "1.0.0"), ("a.cap", "2.0.0"), ("b.cap", "1.0.0")):
        broker.register(RecordingProvider(name, version=version, behaviour=secret_keeper))
    one = await broker.invoke(first)
    two = await broker.invoke(second)
    assert one.ok
    assert two.ok
    assert two.output != one.output
    assert two.id == "c1"
    # each is still answered from the cache when repeated exactly
    assert await broker.invoke(first) == one
    assert await broker.invoke(second) == two
    stats = broker.stats()
    assert sum(s.cached for s in stats.capabilities.values()) == 2


async def test_a_full_cache_forgets_the_oldest_call_even_under_one_id() -> None:
    broker = ActionBroker(cache_size=2)
    provider = RecordingProvider()
    broker.register(provider)
    for user in ("alice", "bob", "carol"):  # one id, three calls: alice's is forgotten
        await broker.invoke(call("same", args={"user": user}))
    assert provider.count == 3
    await broker.invoke(call("same", args={"user": "carol"}))
    await broker.invoke(call("same", args={"user": "bob"}))
    assert provider.count == 3
    await broker.invoke(call("same", args={"user": "alice"}))
    assert provider.count == 4
    assert [json.loads(c.payload)["user"] for c in provider.calls] == [
        "alice",
        "bob",
        "carol",
        "alice",
    ]


async def test_agents_reusing_a_call_id_each_get_their_own_answer() -> None:
    answers: dict[str, Any] = {}

    async def ask(ctx: Context, event: Event) -> None:
        user = event.payload.decode()
        result = await ctx.invoke("a.cap", {"user": user}, call_id="shared")
        answers[ctx.agent_id] = result.json()

    async with open_test_kernel() as kernel:
        kernel.broker.register(RecordingProvider("a.cap", behaviour=secret_keeper))
        for name in ("alice", "bob", "mallory"):
            await kernel.spawn(ScriptedAgent(name, {"ask": ask}))
        await kernel.bus.publish("in.alice", Event("ask", b"alice"))
        await settle()
        await kernel.bus.publish("in.bob", Event("ask", b"bob"))  # other arguments
        await kernel.bus.publish("in.mallory", Event("ask", b"alice"))  # alice's, not alice
        await settle()
    assert answers["alice"]["args"] == {"user": "alice"}
    assert answers["bob"]["args"] == {"user": "bob"}
    assert answers["mallory"]["caller"] == "agent.mallory"  # not alice's cached answer


async def test_a_repeat_differing_only_in_per_hop_headers_is_the_same_call() -> None:
    broker = ActionBroker()
    provider = RecordingProvider()
    broker.register(provider)
    first = await broker.invoke(call("c1", headers={"sender": "agent.a", "ts": "1", "hop": "0"}))
    again = await broker.invoke(call("c1", headers={"sender": "agent.a", "ts": "2", "hop": "3"}))
    assert again == first
    assert provider.count == 1


async def test_concurrent_calls_sharing_an_id_but_not_the_call_both_run() -> None:
    broker = ActionBroker()
    gated = Gated()
    broker.register(gated)
    results: dict[str, ActionResult] = {}

    async def run(label: str, args: dict[str, Any]) -> None:
        results[label] = await broker.invoke(call("same", "test.gated", args))

    async with trio.open_nursery() as nursery:
        nursery.start_soon(run, "alice", {"user": "alice"})
        nursery.start_soon(run, "bob", {"user": "bob"})
        await settle()
        assert gated.inside == 2  # bob's call did not wait for alice's to share its outcome
        gated.gate.set()
    assert results["alice"].ok
    assert results["bob"].ok
    stats = broker.stats().capability("test.gated")
    assert (stats.calls, stats.cached) == (2, 0)


async def test_errors_are_cached() -> None:
    broker = ActionBroker()

    async def boom(call: ActionCall) -> Any:
        raise ValueError("boom")

    provider = RecordingProvider("err.cap", behaviour=boom)
    broker.register(provider)
    first = await broker.invoke(call("c1", "err.cap"))
    second = await broker.invoke(call("c1", "err.cap"))
    assert first.code == ErrorCode.CAPABILITY_ERROR
    assert second == first
    assert provider.count == 1


async def test_invalid_params_results_are_cached() -> None:
    runs = 0

    @capability("p.cap", schema={"type": "object", "required": ["x"]})
    async def needs_x(args: dict[str, Any]) -> Any:
        nonlocal runs
        runs += 1
        return args

    broker = ActionBroker()
    broker.register(needs_x)
    first = await broker.invoke(call("c1", "p.cap", {}))
    assert first.code == ErrorCode.INVALID_PARAMS
    assert await broker.invoke(call("c1", "p.cap", {})) == first
    assert runs == 0
    # the same id with a good payload is another call: it runs
    assert (await broker.invoke(call("c1", "p.cap", {"x": 1}))).json() == {"x": 1}
    assert runs == 1


async def test_timeouts_are_cached(autojump_clock: trio.testing.MockClock) -> None:
    broker = ActionBroker()
    hanging = Hanging()
    broker.register(hanging)
    first = await broker.invoke(call("c1", "test.hang", timeout_ms=1000))
    assert first.status is TIMEOUT
    before = trio.current_time()
    second = await broker.invoke(call("c1", "test.hang", timeout_ms=1000))
    assert trio.current_time() == before  # answered from the cache, no second wait
    assert second == first
    assert hanging.started == 1


async def test_cache_is_bounded_and_evicts_the_oldest() -> None:
    broker = ActionBroker(cache_size=2)
    provider = RecordingProvider()
    broker.register(provider)
    for call_id in ("a", "b", "c"):
        await broker.invoke(call(call_id))
    assert provider.count == 3
    await broker.invoke(call("c"))  # still cached
    await broker.invoke(call("b"))  # still cached
    assert provider.count == 3
    await broker.invoke(call("a"))  # evicted: runs again
    assert provider.count == 4
    assert [c.id for c in provider.calls] == ["a", "b", "c", "a"]


async def test_cache_hit_refreshes_an_entry() -> None:
    broker = ActionBroker(cache_size=2)
    provider = RecordingProvider()
    broker.register(provider)
    await broker.invoke(call("a"))
    await broker.invoke(call("b"))
    await broker.invoke(call("a"))  # hit: "a" becomes the newest
    await broker.invoke(call("c"))  # evicts "b", the least recently used
    await broker.invoke(call("a"))
    assert [c.id for c in provider.calls] == ["a", "b", "c"]
    await broker.invoke(call("b"))
    assert [c.id for c in provider.calls] == ["a", "b", "c", "b"]


async def test_cache_size_zero_disables_the_cache() -> None:
    broker = ActionBroker(cache_size=0)
    provider = RecordingProvider()
    broker.register(provider)
    await broker.invoke(call("a"))
    await broker.invoke(call("a"))
    assert provider.count == 2


async def test_calls_without_an_id_are_not_cached() -> None:
    broker = ActionBroker()
    provider = RecordingProvider()
    broker.register(provider)
    first = await broker.invoke(call(""))
    second = await broker.invoke(call(""))
    assert first.ok
    assert second.ok
    assert provider.count == 2


async def test_concurrent_calls_with_the_same_id_run_once() -> None:
    broker = ActionBroker()
    gated = Gated()
    broker.register(gated)
    results: list[ActionResult] = []

    async def run() -> None:
        results.append(await broker.invoke(call("same", "test.gated")))

    async with trio.open_nursery() as nursery:
        nursery.start_soon(run)
        nursery.start_soon(run)
        await settle()
        assert gated.count == 1
        assert gated.inside == 1
        assert results == []
        gated.gate.set()
    assert gated.count == 1
    assert len(results) == 2
    assert results[0] == results[1]
    assert results[0].ok
    assert results[0].id == "same"
    stats = broker.stats().capability("test.gated")
    assert (stats.calls, stats.ok, stats.cached) == (2, 1, 1)


async def test_a_cancelled_caller_does_not_strand_a_call_with_the_same_id(
    autojump_clock: trio.testing.MockClock,
) -> None:
    # The first caller of id "x" gives up (its scope is cancelled); a second caller of "x"
    # that was waiting for the first one's outcome must still get an ActionResult, within its
    # own timeout, instead of waiting forever.
    broker = ActionBroker()
    hanging = Hanging()
    broker.register(hanging)
    results: list[ActionResult] = []
    first_scope = trio.CancelScope()

    async def first() -> None:
        with first_scope:
            await broker.invoke(call("x", "test.hang", timeout_ms=10_000))

    async def second() -> None:
        with trio.fail_after(60):
            results.append(await broker.invoke(call("x", "test.hang", timeout_ms=1_000)))

    async with trio.open_nursery() as nursery:
        nursery.start_soon(first)
        await settle()
        nursery.start_soon(second)
        await settle()
        first_scope.cancel()
    assert len(results) == 1
    assert results[0].id == "x"


# --- concurrency limits -------------------------------------------------------------------


async def test_max_concurrency_bounds_calls_inside_the_provider() -> None:
    broker = ActionBroker()
    gated = Gated()
    broker.register(gated, max_concurrency=2)
    results: list[ActionResult] = []

    async def run(i: int) -> None:
        results.append(await broker.invoke(call(f"c{i}", "test.gated")))

    async with trio.open_nursery() as nursery:
        for i in range(5):
            nursery.start_soon(run, i)
        await settle()
        # two run, three wait for a slot: nobody failed
        assert gated.inside == 2
        assert gated.count == 2
        assert results == []
        gated.gate.set()
    assert gated.peak == 2
    assert gated.count == 5
    assert len(results) == 5
    assert all(r.ok for r in results)
    assert sorted(r.id for r in results) == [f"c{i}" for i in range(5)]


async def test_waiting_calls_enter_one_slot_at_a_time() -> None:
    broker = ActionBroker()
    inside = 0
    peak = 0
    releases = [trio.Event() for _ in range(5)]
    entered: list[int] = []

    async def step(c: ActionCall) -> ActionResult:
        nonlocal inside, peak
        index = int(c.id)
        inside += 1
        peak = max(peak, inside)
        entered.append(index)
        try:
            await releases[index].wait()
        finally:
            inside -= 1
        return ActionResult.success(c.id)

    broker.register(RecordingProvider("lim.cap", behaviour=step), max_concurrency=2)
    done: list[str] = []

    async def run(i: int) -> None:
        done.append((await broker.invoke(call(str(i), "lim.cap"))).id)

    async with trio.open_nursery() as nursery:
        for i in range(5):
            nursery.start_soon(run, i)
            await settle()
        assert entered == [0, 1]
        for i in range(5):
            releases[i].set()
            await settle()
            assert inside <= 2
            assert len(entered) == min(5, i + 3)
    assert peak == 2
    assert done == ["0", "1", "2", "3", "4"]


async def test_a_limit_does_not_hold_back_other_capabilities() -> None:
    broker = ActionBroker()
    gated = Gated()
    other = RecordingProvider("other.cap")
    broker.register(gated, max_concurrency=1)
    broker.register(other)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(broker.invoke, call("g1", "test.gated"))
        nursery.start_soon(broker.invoke, call("g2", "test.gated"))
        await settle()
        assert gated.inside == 1
        assert (await broker.invoke(call("o1", "other.cap"))).ok
        gated.gate.set()
    assert gated.count == 2


async def test_waiting_for_a_slot_counts_toward_the_timeout(
    autojump_clock: trio.testing.MockClock,
) -> None:
    broker = ActionBroker()
    gated = Gated()
    broker.register(gated, max_concurrency=1)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(broker.invoke, call("holder", "test.gated", timeout_ms=60_000))
        await settle()
        start = trio.current_time()
        result = await broker.invoke(call("waiter", "test.gated", timeout_ms=1_000))
        assert trio.current_time() - start == pytest.approx(1.0, abs=1e-9)
        assert result.status is TIMEOUT
        assert result.code == ErrorCode.ACTION_TIMEOUT
        assert gated.count == 1  # the waiter never got in
        gated.gate.set()


# --- retries ------------------------------------------------------------------------------


async def test_retryable_then_ok_is_retried(autojump_clock: trio.testing.MockClock) -> None:
    broker = ActionBroker(max_retries=2, retry_backoff_s=0.5)
    flaky = Flaky(failures=2)
    broker.register(flaky)
    result = await broker.invoke(call("c1", "test.flaky"))
    assert result.ok
    assert result.json() == {"attempt": 3}
    assert len(flaky.attempts) == 3
    stats = broker.stats().capability("test.flaky")
    assert (stats.calls, stats.ok, stats.errors, stats.retries) == (1, 1, 0, 2)
    # exponential backoff with jitter in [0.5, 1.5) of 0.5 s, then of 1.0 s
    first_gap = flaky.attempts[1] - flaky.attempts[0]
    second_gap = flaky.attempts[2] - flaky.attempts[1]
    assert 0.25 <= first_gap <= 0.75
    assert 0.5 <= second_gap <= 1.5


async def test_retries_stop_at_max_retries(autojump_clock: trio.testing.MockClock) -> None:
    broker = ActionBroker(max_retries=1)
    flaky = Flaky(failures=2)
    broker.register(flaky)
    result = await broker.invoke(call("c1", "test.flaky"))
    assert result.status is RETRYABLE
    assert result.code == "BUSY"
    assert result.id == "c1"
    assert len(flaky.attempts) == 2
    stats = broker.stats().capability("test.flaky")
    assert (stats.calls, stats.ok, stats.errors, stats.retries) == (1, 0, 1, 1)


async def test_no_retries_with_max_retries_zero() -> None:
    broker = ActionBroker(max_retries=0)
    flaky = Flaky(failures=1)
    broker.register(flaky)
    result = await broker.invoke(call("c1", "test.flaky"))
    assert result.status is RETRYABLE
    assert len(flaky.attempts) == 1


async def test_action_failure_retryable_is_retried(
    autojump_clock: trio.testing.MockClock,
) -> None:
    attempts = 0

    @capability("net.fetch")
    async def fetch(args: dict[str, Any]) -> Any:
        nonlocal attempts
        attempts += 1
        if attempts == 1:
            raise ActionFailure("UPSTREAM_BUSY", "busy", retryable=True)
        return {"attempts": attempts}

    broker = ActionBroker(max_retries=3)
    broker.register(fetch)
    result = await broker.invoke(call("c1", "net.fetch"))
    assert result.ok
    assert result.json() == {"attempts": 2}


async def test_errors_are_not_retried() -> None:
    broker = ActionBroker(max_retries=3)

    async def fail(c: ActionCall) -> ActionResult:
        return ActionResult.failure(c.id, "NOPE", "no")

    provider = RecordingProvider("e.cap", behaviour=fail)
    broker.register(provider)
    result = await broker.invoke(call("c1", "e.cap"))
    assert result.code == "NOPE"
    assert provider.count == 1
    assert broker.stats().capability("e.cap").retries == 0


async def test_retries_end_by_the_deadline(autojump_clock: trio.testing.MockClock) -> None:
    broker = ActionBroker(max_retries=100, retry_backoff_s=10.0)
    flaky = Flaky(failures=1000)
    broker.register(flaky)
    start = trio.current_time()
    result = await broker.invoke(call("c1", "test.flaky", timeout_ms=2_000))
    assert trio.current_time() - start <= 2.0 + 1e-9
    assert not result.ok
    assert result.status in (TIMEOUT, RETRYABLE)
    assert result.id == "c1"


# --- stats --------------------------------------------------------------------------------


async def test_stats_count_outcomes(autojump_clock: trio.testing.MockClock) -> None:
    broker = ActionBroker(max_retries=3)

    async def mixed(c: ActionCall) -> ActionResult:
        if c.id.startswith("ok"):
            return ActionResult.success(c.id)
        if c.id.startswith("err"):
            raise RuntimeError("bad")
        if c.id.startswith("retry"):
            return ActionResult.failure(c.id, "BUSY", status=RETRYABLE)
        await trio.sleep_forever()
        raise AssertionError("unreachable")

    broker.register(RecordingProvider("s.cap", behaviour=mixed))
    for call_id in ("ok1", "ok2", "ok3", "ok4", "err1"):
        await broker.invoke(call(call_id, "s.cap"))
    await broker.invoke(call("retry1", "s.cap"))  # four attempts, three retries, an error
    await broker.invoke(call("hang1", "s.cap", timeout_ms=4_000))
    for call_id in ("ok1", "ok1", "ok2", "err1", "hang1"):  # answered from the cache
        await broker.invoke(call(call_id, "s.cap", timeout_ms=4_000))
    stats = broker.stats().capability("s.cap")
    # every count differs from the others: each field shows its own counter
    assert (stats.calls, stats.ok, stats.errors, stats.timeouts, stats.retries) == (12, 4, 2, 1, 3)
    assert stats.cached == 5
    assert stats.latency_max_s == pytest.approx(4.0, abs=1e-9)
    assert stats.latency_total_s > 4.0  # the retries' backoff came on top
    assert stats.latency_mean_s == pytest.approx(stats.latency_total_s / 7)


async def test_stats_of_all_and_of_unknown() -> None:
    broker = ActionBroker()
    assert broker.stats() == BrokerStats()
    broker.register(RecordingProvider("a.cap"))
    broker.register(RecordingProvider("b.cap"))
    await broker.invoke(call("1", "b.cap"))
    await broker.invoke(call("2", "a.cap"))
    await broker.invoke(call("3", "b.cap"))
    await broker.invoke(call("4", "missing.cap"))
    await broker.invoke(call("5", "missing.cap", version="9.9"))
    everything = broker.stats()
    assert list(everything.capabilities) == ["a.cap", "b.cap"]  # by name
    assert everything.capabilities["a.cap"].calls == 1
    assert everything.capability("b.cap").calls == 2
    assert everything.unavailable == 2
    assert "missing.cap" not in everything.capabilities  # made-up names do not grow the map
    assert everything.capability("never.called") == CapabilityStats()
    assert CapabilityStats().latency_mean_s == 0.0


async def test_stats_are_frozen_snapshots() -> None:
    broker = ActionBroker()
    broker.register(RecordingProvider("a.cap"))
    await broker.invoke(call("1", "a.cap"))
    await broker.invoke(call("2", "missing.cap"))
    before = broker.stats()
    await broker.invoke(call("3", "a.cap"))
    await broker.invoke(call("1", "a.cap"))  # cached
    await broker.invoke(call("4", "missing.cap"))
    one = before.capability("a.cap")
    assert (one.calls, one.ok, one.cached, before.unavailable) == (1, 1, 0, 1)  # as it was
    with pytest.raises(dataclasses.FrozenInstanceError):
        one.calls = 0  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        before.unavailable = 0  # type: ignore[misc]
    now = broker.stats()
    assert (now.capability("a.cap").calls, now.capability("a.cap").cached) == (3, 1)
    assert now.unavailable == 2
    assert now == broker.stats()  # nothing happened in between: equal snapshots
    assert now.capabilities is not broker.stats().capabilities  # each snapshot its own copy


# --- timeouts -----------------------------------------------------------------------------


async def test_hanging_provider_times_out_and_is_cancelled(
    autojump_clock: trio.testing.MockClock,
) -> None:
    broker = ActionBroker()
    hanging = Hanging()
    broker.register(hanging)
    start = trio.current_time()
    result = await broker.invoke(call("c1", "test.hang", timeout_ms=1_500))
    assert trio.current_time() - start == pytest.approx(1.5, abs=1e-9)
    assert result.status is TIMEOUT
    assert result.code == ErrorCode.ACTION_TIMEOUT
    assert result.id == "c1"
    assert (hanging.started, hanging.cancelled, hanging.exited) == (1, 1, 1)
    assert broker.stats().capability("test.hang").timeouts == 1


async def test_default_timeout_is_30_s(autojump_clock: trio.testing.MockClock) -> None:
    broker = ActionBroker()
    assert broker.default_timeout_s == 30.0
    broker.register(Hanging())
    start = trio.current_time()
    result = await broker.invoke(call("c1", "test.hang"))
    assert trio.current_time() - start == pytest.approx(30.0, abs=1e-9)
    assert result.status is TIMEOUT


async def test_broker_default_timeout_setting(autojump_clock: trio.testing.MockClock) -> None:
    broker = ActionBroker(default_timeout_s=5.0)
    broker.register(Hanging())
    start = trio.current_time()
    result = await broker.invoke(call("c1", "test.hang", timeout_ms=0))
    assert trio.current_time() - start == pytest.approx(5.0, abs=1e-9)
    assert result.status is TIMEOUT


async def test_answer_just_before_the_deadline_is_ok(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async def slow(c: ActionCall) -> ActionResult:
        await trio.sleep(0.999)
        return ActionResult.success(c.id, "late but fine")

    broker = ActionBroker()
    broker.register(RecordingProvider("slow.cap", behaviour=slow))
    result = await broker.invoke(call("c1", "slow.cap", timeout_ms=1_000))
    assert result.ok
    assert result.json() == "late but fine"


async def test_kernel_broker_uses_action_timeout_s(autojump_clock: trio.testing.MockClock) -> None:
    async with open_test_kernel(action_timeout_s=2) as kernel:
        assert isinstance(kernel.broker, ActionBroker)
        assert kernel.broker.default_timeout_s == 2
        hanging = Hanging()
        kernel.broker.register(hanging)
        assert "test.hang" in kernel.capabilities  # the directory is a view of this broker
        start = trio.current_time()
        result = await kernel.broker.invoke(call("c1", "test.hang"))
        assert trio.current_time() - start == pytest.approx(2.0, abs=1e-9)
        assert result.status is TIMEOUT
        assert hanging.cancelled == 1


async def test_kernel_broker_default_is_30_s() -> None:
    async with open_test_kernel() as kernel:
        assert kernel.broker.default_timeout_s == 30.0
        assert isinstance(kernel.capabilities, CapabilityDirectory)


# --- envelope headers ---------------------------------------------------------------------


async def _received(broker_call: ActionCall) -> ActionCall:
    broker = ActionBroker()
    provider = RecordingProvider()
    broker.register(provider)
    result = await broker.invoke(broker_call)
    assert result.ok
    assert provider.count == 1
    return provider.calls[0]


async def test_all_seven_headers_are_filled_with_defaults() -> None:
    before = time.time_ns() // 1_000_000
    received = await _received(call("c1"))
    after = time.time_ns() // 1_000_000
    assert set(received.headers) == set(RESERVED_KEYS)
    assert received.headers["thread_id"] == "c1"
    assert received.headers["correlation_id"] == "c1"
    assert received.headers["sender"] == ""
    assert received.headers["reply_to"] == "thread.c1.reply"
    assert received.headers["ttl"] == "16"
    assert received.headers["hop"] == "0"
    assert before <= int(received.headers["ts"]) <= after
    assert received.correlation_id == "c1"


async def test_given_headers_are_kept() -> None:
    headers = {
        "thread_id": "t-9",
        "sender": "agent.alice",
        "reply_to": "agent.alice.replies",
        "ttl": "5",
        "hop": "3",
        "ts": "1700000000000",
        "traceparent": "00-abc-def-01",
    }
    received = await _received(call("c1", headers=headers))
    assert received.headers == {**headers, "correlation_id": "t-9"}
    assert received.correlation_id == "t-9"  # correlation defaults to the thread


async def test_correlation_id_field_follows_the_header() -> None:
    received = await _received(
        call("c1", headers={"correlation_id": "corr-1"}, correlation_id="field-value")
    )
    assert received.correlation_id == "corr-1"
    assert received.headers["correlation_id"] == "corr-1"
    assert received.headers["thread_id"] == "c1"


async def test_correlation_id_field_is_overwritten_without_a_header() -> None:
    # Loom's apply_to_action_call: the field takes the header's value, here the call id
    received = await _received(call("c1", correlation_id="field-value"))
    assert received.correlation_id == "c1"
    assert received.headers["correlation_id"] == "c1"


async def test_unparsable_header_values_take_the_defaults() -> None:
    received = await _received(
        call("c1", headers={"ttl": "many", "hop": "-1", "thread_id": "", "ts": "soon"})
    )
    assert received.headers["ttl"] == "16"
    assert received.headers["hop"] == "0"
    assert received.headers["thread_id"] == "c1"
    assert received.headers["ts"].isdigit()


async def test_complete_valid_headers_pass_through() -> None:
    headers = {
        "thread_id": "t",
        "correlation_id": "k",
        "sender": "agent.a",
        "reply_to": "r.x",
        "ttl": "3",
        "hop": "1",
        "ts": "5",
    }
    received = await _received(call("c1", headers=headers, correlation_id="k"))
    assert received.headers == headers
    assert received.correlation_id == "k"


async def test_all_seven_keys_present_but_empty_or_bad_still_get_defaults() -> None:
    # Loom reads every call through from_metadata (empty or unparsable values take the
    # defaults), even when all seven keys are there.
    headers = {
        "thread_id": "",
        "correlation_id": "",
        "sender": "",
        "reply_to": "",
        "ttl": "many",
        "hop": "x",
        "ts": "soon",
    }
    received = await _received(call("c1", headers=headers))
    assert received.headers["thread_id"] == "c1"
    assert received.headers["correlation_id"] == "c1"
    assert received.headers["reply_to"] == "thread.c1.reply"
    assert received.headers["ttl"] == "16"
    assert received.headers["hop"] == "0"
    assert received.headers["ts"].isdigit()
    assert received.correlation_id == "c1"


async def test_the_callers_call_is_not_modified() -> None:
    headers = {"sender": "agent.bob"}
    original = call("c1", headers=headers)
    received = await _received(original)
    assert original.headers == {"sender": "agent.bob"}
    assert headers == {"sender": "agent.bob"}
    assert original.correlation_id == ""
    assert received.headers["sender"] == "agent.bob"


async def test_envelope_is_filled_for_the_exact_version_too() -> None:
    broker = ActionBroker()
    provider = RecordingProvider("v.cap", "3.1.4")
    broker.register(provider)
    await broker.invoke(call("c7", "v.cap", version="3.1.4"))
    assert set(provider.calls[0].headers) == set(RESERVED_KEYS)
    assert provider.calls[0].headers["thread_id"] == "c7"


# --- bad input ----------------------------------------------------------------------------

_SCHEMA = {
    "type": "object",
    "required": ["x"],
    "properties": {"x": {"type": "integer"}},
    "additionalProperties": False,
}


def _schema_broker() -> tuple[ActionBroker, list[dict[str, Any]]]:
    seen: list[dict[str, Any]] = []

    @capability("math.inc", schema=_SCHEMA)
    async def inc(args: dict[str, Any]) -> Any:
        seen.append(args)
        return {"value": args["x"] + 1}

    broker = ActionBroker()
    broker.register(inc)
    return broker, seen


@pytest.mark.parametrize(
    "payload",
    [
        pytest.param(b"{not json", id="not-json"),
        pytest.param(b'{"x": 1', id="truncated"),
        pytest.param(b"\xff\xfe\x00", id="not-utf8"),
        pytest.param(b'{"x": 1} trailing', id="trailing-garbage"),
    ],
)
async def test_payload_not_json_is_invalid_params(payload: bytes) -> None:
    broker, seen = _schema_broker()
    result = await broker.invoke(ActionCall("c1", "math.inc", payload))
    assert result.status is ERROR
    assert result.code == ErrorCode.INVALID_PARAMS
    assert result.id == "c1"
    assert seen == []


@pytest.mark.parametrize(
    "args",
    [
        pytest.param({}, id="missing-required"),
        pytest.param({"x": "one"}, id="wrong-type"),
        pytest.param({"x": 1, "y": 2}, id="extra-property"),
        pytest.param({"x": 1.5}, id="not-integer"),
    ],
)
async def test_payload_not_matching_the_schema_is_invalid_params(args: dict[str, Any]) -> None:
    broker, seen = _schema_broker()
    result = await broker.invoke(call("c1", "math.inc", args))
    assert result.status is ERROR
    assert result.code == ErrorCode.INVALID_PARAMS
    assert seen == []


@pytest.mark.parametrize("payload", [b"[1, 2]", b"[]", b'"x"', b"42", b"null", b"true"])
async def test_payload_not_an_object_is_invalid_params(payload: bytes) -> None:
    runs = 0

    @capability("free.form")  # no schema: the payload must still be an object
    async def free(args: dict[str, Any]) -> Any:
        nonlocal runs
        runs += 1
        return args

    broker = ActionBroker()
    broker.register(free)
    result = await broker.invoke(ActionCall("c1", "free.form", payload))
    assert result.code == ErrorCode.INVALID_PARAMS
    assert runs == 0


async def test_deeply_nested_json_array_is_invalid_params() -> None:
    broker, seen = _schema_broker()
    depth = 100_000
    payload = b"[" * depth + b"]" * depth  # valid JSON, but an array, and too deep to decode
    result = await broker.invoke(ActionCall("c1", "math.inc", payload))
    assert result.status is ERROR
    assert result.code == ErrorCode.INVALID_PARAMS
    assert seen == []


async def test_valid_payload_passes_the_schema() -> None:
    broker, seen = _schema_broker()
    result = await broker.invoke(call("c1", "math.inc", {"x": 41}))
    assert result.ok
    assert result.json() == {"value": 42}
    assert seen == [{"x": 41}]


async def test_empty_payload_is_an_empty_object() -> None:
    @capability("free.form")
    async def free(args: dict[str, Any]) -> Any:
        return {"args": args}

    broker = ActionBroker()
    broker.register(free)
    result = await broker.invoke(ActionCall("c1", "free.form", b""))
    assert result.ok
    assert result.json() == {"args": {}}


async def test_function_raising_is_capability_error_with_its_message() -> None:
    @capability("bad.fn")
    async def bad(args: dict[str, Any]) -> Any:
        raise ValueError("boom")

    broker = ActionBroker()
    broker.register(bad)
    result = await broker.invoke(call("c1", "bad.fn"))
    assert result.status is ERROR
    assert result.code == ErrorCode.CAPABILITY_ERROR
    assert result.error is not None
    assert result.error.message == "boom"
    assert result.id == "c1"


async def test_class_provider_raising_is_capability_error() -> None:
    async def boom(c: ActionCall) -> Any:
        raise KeyError("missing")

    async def silent(c: ActionCall) -> Any:
        raise RuntimeError

    broker = ActionBroker()
    broker.register(RecordingProvider("boom.cap", behaviour=boom))
    broker.register(RecordingProvider("silent.cap", behaviour=silent))
    result = await broker.invoke(call("c1", "boom.cap"))
    assert result.code == ErrorCode.CAPABILITY_ERROR
    assert result.error is not None
    assert "missing" in result.error.message
    result = await broker.invoke(call("c2", "silent.cap"))
    assert result.code == ErrorCode.CAPABILITY_ERROR
    assert result.error is not None
    assert result.error.message == "RuntimeError"  # no message: the exception's type


async def test_action_failure_keeps_its_code() -> None:
    @capability("search.web")
    async def search(args: dict[str, Any]) -> Any:
        raise ActionFailure("INVALID_QUERY", "empty query", details={"field": "q"})

    broker = ActionBroker()
    broker.register(search)
    result = await broker.invoke(call("c1", "search.web"))
    assert result.status is ERROR
    assert result.code == "INVALID_QUERY"
    assert result.error is not None
    assert result.error.message == "empty query"
    assert result.error.details == {"field": "q"}


@pytest.mark.parametrize("returned", [{"ok": True}, None, "done", b"bytes", 42])
async def test_provider_returning_a_non_result_is_capability_error(returned: Any) -> None:
    async def wrong(c: ActionCall) -> Any:
        return returned

    broker = ActionBroker()
    broker.register(RecordingProvider("wrong.cap", behaviour=wrong))
    result = await broker.invoke(call("c1", "wrong.cap"))
    assert result.status is ERROR
    assert result.code == ErrorCode.CAPABILITY_ERROR
    assert result.id == "c1"


async def test_function_returning_unserialisable_output_is_capability_error() -> None:
    @capability("odd.out")
    async def odd(args: dict[str, Any]) -> Any:
        return {"when": object()}

    broker = ActionBroker()
    broker.register(odd)
    result = await broker.invoke(call("c1", "odd.out"))
    assert result.code == ErrorCode.CAPABILITY_ERROR


async def test_result_id_always_equals_the_call_id() -> None:
    async def other_id(c: ActionCall) -> ActionResult:
        return ActionResult.success("someone-else", {"v": 1})

    async def other_id_failure(c: ActionCall) -> ActionResult:
        return ActionResult.failure("someone-else", "NOPE")

    broker = ActionBroker()
    broker.register(RecordingProvider("a.cap", behaviour=other_id))
    broker.register(RecordingProvider("b.cap", behaviour=other_id_failure))
    result = await broker.invoke(call("mine", "a.cap"))
    assert result.id == "mine"
    assert result.json() == {"v": 1}
    result = await broker.invoke(call("mine2", "b.cap"))
    assert result.id == "mine2"
    assert result.code == "NOPE"
    # and from the cache
    assert (await broker.invoke(call("mine", "a.cap"))).id == "mine"


async def test_bad_calls_do_not_affect_other_calls(
    autojump_clock: trio.testing.MockClock,
) -> None:
    @capability("good.cap", schema={"type": "object", "required": ["n"]})
    async def good(args: dict[str, Any]) -> Any:
        await trio.sleep(0.1)
        return {"n": args["n"]}

    @capability("raise.cap")
    async def raiser(args: dict[str, Any]) -> Any:
        await trio.sleep(0.05)
        raise ValueError("boom")

    hanging = Hanging()
    broker = ActionBroker()
    broker.register(good)
    broker.register(raiser)
    broker.register(hanging)
    results: dict[str, ActionResult] = {}
    finished: dict[str, float] = {}

    async def run(c: ActionCall) -> None:
        results[c.id] = await broker.invoke(c)
        finished[c.id] = trio.current_time()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(run, call("hang", "test.hang", timeout_ms=10_000))
        nursery.start_soon(run, call("raise", "raise.cap"))
        nursery.start_soon(run, ActionCall("not-json", "good.cap", b"{oops"))
        nursery.start_soon(run, call("no-n", "good.cap", {"m": 1}))
        nursery.start_soon(run, call("unknown", "nobody.home"))
        for i in range(3):
            nursery.start_soon(run, call(f"good{i}", "good.cap", {"n": i}))
    assert results["hang"].status is TIMEOUT
    assert results["raise"].code == ErrorCode.CAPABILITY_ERROR
    assert results["not-json"].code == ErrorCode.INVALID_PARAMS
    assert results["no-n"].code == ErrorCode.INVALID_PARAMS
    assert results["unknown"].code == ErrorCode.PROVIDER_UNAVAILABLE
    for i in range(3):
        assert results[f"good{i}"].ok
        assert results[f"good{i}"].json() == {"n": i}
        assert finished[f"good{i}"] == pytest.approx(0.1, abs=1e-9)  # not held up by the hang
    assert finished["hang"] == pytest.approx(10.0, abs=1e-9)
    assert all(r.id == call_id for call_id, r in results.items())
    assert hanging.cancelled == 1
    # the broker still works afterwards
    assert (await broker.invoke(call("after", "good.cap", {"n": 9}))).json() == {"n": 9}


def test_function_provider_rejects_bad_schemas() -> None:
    with pytest.raises(CapabilityError):
        capability("bad.schema", metadata={"schema": "[1, 2]"})(_noop)
    with pytest.raises(CapabilityError):
        capability("bad.schema", schema={"type": "no-such-type"})(_noop)
    with pytest.raises(CapabilityError):
        FunctionProvider("not callable", CapabilityDescriptor("x.y"))  # type: ignore[arg-type]


async def test_json_output_roundtrip_through_the_broker() -> None:
    @capability("echo")
    async def echo(args: dict[str, Any]) -> Any:
        return args

    broker = ActionBroker()
    broker.register(echo)
    args = {"text": "h\u00e9llo", "list": [1, 2.5, None, True], "nested": {"a": {"b": []}}}
    result = await broker.invoke(call("c1", "echo", args))
    assert result.ok
    assert json.loads(result.output) == args
