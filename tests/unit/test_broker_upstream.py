"""The broker's upstream (where calls go that no local provider takes) and the repeat cache.

An upstream that cannot be reached answers ``PROVIDER_UNAVAILABLE``: the call did not run.
Caching that answer would hand a caller that retries the same call (same id) after the link
is back the stale failure; the broker keeps every other upstream outcome, as it does a
provider's.
"""

from __future__ import annotations

from loomk.actions import ActionBroker, ActionCall, ActionResult, ActionStatus, ErrorCode


class FlakyUpstream:
    """An upstream (the broker's ``Upstream`` protocol) that answers with ``answers`` in
    turn, then succeeds; it records every call it is asked to run."""

    def __init__(self, *answers: ActionResult) -> None:
        self._answers = list(answers)
        self.calls: list[str] = []

    async def invoke(self, call: ActionCall) -> ActionResult:
        self.calls.append(call.id)
        if self._answers:
            return self._answers.pop(0)
        return ActionResult.success(call.id, {"ran": len(self.calls)})


def _down(call_id: str) -> ActionResult:
    return ActionResult.failure(
        call_id, ErrorCode.PROVIDER_UNAVAILABLE, "the link is not connected (connecting)"
    )


def _no_provider_over_there(call_id: str) -> ActionResult:
    """What a bridge answers for a capability nobody offers there (Loom's code)."""
    return ActionResult.failure(
        call_id,
        "BROKER_ERROR",
        "no provider for capability far.op",
        details={"reason": ErrorCode.PROVIDER_UNAVAILABLE},
    )


async def test_an_unreachable_upstream_is_not_cached_and_the_retry_runs() -> None:
    for failure in (_down("c1"), _no_provider_over_there("c1")):
        broker = ActionBroker()
        upstream = FlakyUpstream(failure)
        broker.set_upstream(upstream)
        call = ActionCall.with_args("c1", "far.op", {"x": 1})
        first = await broker.invoke(call)
        again = await broker.invoke(call)  # the same call, once the link is back
        assert first.status is ActionStatus.ACTION_ERROR
        assert again.status is ActionStatus.ACTION_OK, failure
        assert again.json() == {"ran": 2}
        assert upstream.calls == ["c1", "c1"]
        # the success is kept as usual: a third repeat is answered from the cache
        assert (await broker.invoke(call)).json() == {"ran": 2}
        assert upstream.calls == ["c1", "c1"]
        assert broker.stats().upstream.cached == 1


async def test_other_upstream_failures_are_kept_like_a_provider_s() -> None:
    broker = ActionBroker()
    upstream = FlakyUpstream(ActionResult.failure("c2", ErrorCode.CAPABILITY_ERROR, "it broke"))
    broker.set_upstream(upstream)
    call = ActionCall.with_args("c2", "far.op", {})
    first = await broker.invoke(call)
    again = await broker.invoke(call)
    assert first.error is not None
    assert first.error.code == ErrorCode.CAPABILITY_ERROR
    assert again == first  # the call ran once: its repeat gets the same outcome
    assert upstream.calls == ["c2"]
