"""Contract-net (Loom's ``contract_net``, plus the execute phase Loom only documented).

Bidders are agents on ``thread.*.broadcast`` proposing with ``ctx.propose`` and reporting with
``ctx.report``, and plain bus publishers where the order or form of proposals must be exact.
Covers the call for proposals, ranking (ties in arrival order, missing or invalid score 0.0),
awards, the execute phase (results, missing awardees), the window, the summary, validation
and that nothing outlives a round. Every timeout runs on a MockClock.
"""

from __future__ import annotations

from typing import Any

import pytest
import trio
import trio.testing
from collab_support import (
    assert_nothing_left,
    of_type,
    settle,
    start_call,
    subscriptions,
)

from loomk import Agent, CollabError, Context, Envelope, Event, EventBus
from loomk.collab import ContractNetResult
from loomk.testing import ScriptedAgent, capture_events, open_test_kernel


class Bidder(Agent):
    """Proposes ``score`` on every call for proposals; when awarded, reports ``{id}:done``
    (unless ``reports`` is False). Gates hold the proposal or the report back."""

    topics = ("thread.*.broadcast",)

    def __init__(
        self,
        agent_id: str,
        score: float,
        *,
        reports: bool = True,
        propose_gate: trio.Event | None = None,
        report_gate: trio.Event | None = None,
    ) -> None:
        super().__init__(agent_id)
        self.score = score
        self.reports = reports
        self.propose_gate = propose_gate
        self.report_gate = report_gate
        self.awards: list[Event] = []
        self.awarded = trio.Event()

    async def on_event(self, ctx: Context, event: Event) -> None:
        if event.type == "collab.cfp":
            if self.propose_gate is not None:
                await self.propose_gate.wait()
            bid = Event("bid", self.agent_id.encode(), metadata={"bidder": self.agent_id})
            await ctx.propose(event, self.score, bid)
        elif event.type == "collab.award" and event.metadata["award_to"] == ctx.sender:
            self.awards.append(event)
            self.awarded.set()
            if not self.reports:
                return
            if self.report_gate is not None:
                await self.report_gate.wait()
            await ctx.report(event, Event("done", f"{self.agent_id}:done".encode()))


async def plain_bidders(
    bus: EventBus,
    bids: list[tuple[str | None, str | None]],
    *,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    """On a call for proposals, publish ``bids`` (sender, score) in order, Loom-style: the
    call's envelope (with the bid's sender when not None), ``score`` metadata when not None."""
    async with bus.subscribe("thread.*.broadcast", event_types=["collab.cfp"]) as cfps:
        task_status.started()
        async for _, cfp in cfps:
            for sender, score in bids:
                envelope = Envelope.from_event(cfp)
                if sender is not None:
                    envelope.sender = sender
                metadata = {} if score is None else {"score": score}
                proposal = envelope.attach_to_event(Event("collab.proposal", metadata=metadata))
                await bus.publish(envelope.reply_topic(), proposal)


def senders(events: list[Event]) -> list[str]:
    return [event.metadata["sender"] for event in events]


# --- a whole round ------------------------------------------------------------------------


async def test_best_bid_is_awarded_and_reports(autojump_clock: trio.testing.MockClock) -> None:
    bidders = [Bidder("a", 0.7), Bidder("b", 0.9), Bidder("c", 0.5)]
    async with open_test_kernel() as kernel:
        broadcast = capture_events(kernel.bus, "thread.*.broadcast")
        await kernel.spawn_many(bidders)
        before = subscriptions(kernel)
        result = await kernel.collaborator("mgr").contract_net(
            "job1", b"task", window_s=2, max_awards=1, execute_timeout_s=5
        )
        assert trio.current_time() == 2.0  # the window in full; the result came at once
        await settle()
        assert_nothing_left(kernel, before, "thread.job1.reply")
    assert isinstance(result, ContractNetResult)
    assert result.thread_id == "job1"
    assert sorted(senders(result.proposals)) == ["agent.a", "agent.b", "agent.c"]
    assert all(p.type == "collab.proposal" for p in result.proposals)
    [winner] = result.winners
    assert winner.metadata["sender"] == "agent.b"
    assert float(winner.metadata["score"]) == 0.9
    assert list(result.results) == ["agent.b"]
    report = result.results["agent.b"]
    assert report.type == "collab.result"
    assert report.payload == b"b:done"
    assert report.metadata["correlation_id"] == "job1"
    assert (result.missing, result.complete) == ([], True)
    assert [b.awards != [] for b in bidders] == [False, True, False]

    assert [event.type for event in broadcast.events] == [
        "collab.cfp",
        "collab.award",
        "collab.summary",
    ]
    assert {topic for topic, _ in broadcast.items} == {"thread.job1.broadcast"}
    (_, cfp), (_, award), (_, summary) = broadcast.items
    assert cfp.payload == b"task"
    assert cfp.priority == 50
    assert cfp.tags == ("collab",)
    assert cfp.source == "mgr"
    envelope = {
        "thread_id": "job1",
        "correlation_id": "job1",
        "sender": "mgr",
        "reply_to": "thread.job1.reply",
    }
    assert cfp.metadata.items() >= envelope.items()
    assert award.priority == 60
    assert award.tags == ("collab",)
    assert award.metadata.items() >= envelope.items()  # the coordinator's envelope keys
    assert award.metadata["award_to"] == "agent.b"
    assert award.metadata["bidder"] == "b"  # the winner's metadata
    assert award.metadata["score"] == winner.metadata["score"]
    assert summary.priority == 40
    assert summary.tags == ("collab",)
    assert (
        summary.metadata.items()
        >= {
            "winners": "1",
            "max_awards": "1",
            "proposals": "3",
            "results": "1",
        }.items()
    )


async def test_several_awards_ranked_by_score_from_an_agent(
    autojump_clock: trio.testing.MockClock,
) -> None:
    rounds: list[ContractNetResult] = []

    async def go(ctx: Context, event: Event) -> None:
        rounds.append(await ctx.contract_net("job2", "task", window_s=1, max_awards=3))

    bidders = [Bidder("a", 0.7), Bidder("b", 0.9), Bidder("c", 0.5), Bidder("d", 0.8)]
    async with open_test_kernel() as kernel:
        broadcast = capture_events(kernel.bus, "thread.job2.broadcast")
        await kernel.spawn_many(bidders)
        await kernel.spawn(ScriptedAgent("mgr", {"go": go}))
        await kernel.bus.publish("in.mgr", Event("go"))
        await bidders[0].awarded.wait()
        await settle()
        assert trio.current_time() == 1.0
    [result] = rounds
    assert senders(result.winners) == ["agent.b", "agent.d", "agent.a"]
    assert sorted(result.results) == ["agent.a", "agent.b", "agent.d"]
    assert result.complete
    assert [len(b.awards) for b in bidders] == [1, 1, 0, 1]
    awards = of_type(broadcast.items, "collab.award")
    assert [event.metadata["award_to"] for _, event in awards] == ["agent.b", "agent.d", "agent.a"]
    assert {event.metadata["sender"] for _, event in awards} == {"agent.mgr"}
    [(_, summary)] = of_type(broadcast.items, "collab.summary")
    assert (summary.metadata["winners"], summary.metadata["results"]) == ("3", "3")


async def test_ties_keep_arrival_order_and_bad_scores_rank_as_zero(
    autojump_clock: trio.testing.MockClock,
) -> None:
    bids: list[tuple[str | None, str | None]] = [
        ("x1", None),
        ("x2", "abc"),
        ("x3", "0"),
        ("x4", "-1"),
        ("x5", "nan"),
        ("x6", "0.5"),
        ("x7", "0.5"),
    ]
    async with open_test_kernel() as kernel:
        await kernel.start(plain_bidders, kernel.bus, bids)
        result = await kernel.collaborator("mgr").contract_net(
            "job3", b"", window_s=2, max_awards=7, execute_timeout_s=1
        )
        assert trio.current_time() == 3.0  # the window, then the execute timeout
    assert senders(result.proposals) == ["x1", "x2", "x3", "x4", "x5", "x6", "x7"]
    ranked = ["x6", "x7", "x1", "x2", "x3", "x5", "x4"]
    assert senders(result.winners) == ranked
    assert result.results == {}
    assert result.missing == ranked  # plain bidders never report


async def test_max_awards_caps_the_winners(autojump_clock: trio.testing.MockClock) -> None:
    bids: list[tuple[str | None, str | None]] = [("x1", "1"), ("x2", "3"), ("x3", "2")]
    async with open_test_kernel() as kernel:
        broadcast = capture_events(kernel.bus, "thread.job.broadcast")
        await kernel.start(plain_bidders, kernel.bus, bids)
        result = await kernel.collaborator("mgr").contract_net(
            "job", b"", window_s=1, max_awards=2, execute_timeout_s=1
        )
        await settle()
    assert senders(result.winners) == ["x2", "x3"]
    assert len(of_type(broadcast.items, "collab.award")) == 2


async def test_loom_style_bidders_are_all_ranked(autojump_clock: trio.testing.MockClock) -> None:
    """Loom's contract_net_selects_top_score: bidders answer with the call's envelope as it
    is (so with the coordinator's sender); scores 10/80/50, one award: 80 wins."""
    bids: list[tuple[str | None, str | None]] = [(None, "10"), (None, "80"), (None, "50")]
    async with open_test_kernel() as kernel:
        await kernel.start(plain_bidders, kernel.bus, bids)
        result = await kernel.collaborator("mgr").contract_net(
            "loom", b"", window_s=0.3, max_awards=1, execute_timeout_s=1
        )
    assert len(result.proposals) == 3
    [winner] = result.winners
    assert winner.metadata["score"] == "80"


# --- the execute phase and the window -----------------------------------------------------


async def test_an_awardee_that_never_reports_is_missing(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with open_test_kernel() as kernel:
        broadcast = capture_events(kernel.bus, "thread.job.broadcast")
        await kernel.spawn_many([Bidder("a", 0.9, reports=False), Bidder("b", 0.5)])
        result = await kernel.collaborator("mgr").contract_net(
            "job", b"", window_s=1, max_awards=2, execute_timeout_s=3
        )
        assert trio.current_time() == 4.0
        await settle()
    assert senders(result.winners) == ["agent.a", "agent.b"]
    assert list(result.results) == ["agent.b"]
    assert result.missing == ["agent.a"]
    assert not result.complete
    [(_, summary)] = of_type(broadcast.items, "collab.summary")
    assert summary.metadata["results"] == "1"


async def test_the_execute_phase_ends_with_the_last_report(
    autojump_clock: trio.testing.MockClock,
) -> None:
    gate = trio.Event()
    slow = Bidder("slow", 0.5, report_gate=gate)
    async with open_test_kernel() as kernel:
        await kernel.spawn_many([Bidder("fast", 0.9), slow])
        collab = kernel.collaborator("mgr")
        async with trio.open_nursery() as nursery:
            call = start_call(
                nursery,
                lambda: collab.contract_net(
                    "job", b"", window_s=1, max_awards=2, execute_timeout_s=30
                ),
            )
            await slow.awarded.wait()
            await settle()
            assert not call.done.is_set()  # one of two results is in
            gate.set()
        result = call.result()
        assert call.ended_at == 1.0
        assert sorted(result.results) == ["agent.fast", "agent.slow"]


async def test_a_bidder_past_the_window_is_cut_and_sends_nothing(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """The call for proposals carries the window as its deadline: a bidder's handler still
    running when it passes is cut short, and its proposal never goes out."""
    late_gate, report_gate = trio.Event(), trio.Event()
    early = Bidder("early", 0.5, report_gate=report_gate)
    late = Bidder("late", 0.9, propose_gate=late_gate)
    async with open_test_kernel() as kernel:
        late_handle = (await kernel.spawn_many([early, late]))[1]
        collab = kernel.collaborator("mgr")
        async with trio.open_nursery() as nursery:
            call = start_call(
                nursery,
                lambda: collab.contract_net(
                    "job", b"", window_s=1, max_awards=1, execute_timeout_s=30
                ),
            )
            await early.awarded.wait()  # the window is over
            assert trio.current_time() == 1.0
            late_gate.set()  # the best bid, too late
            await settle()
            assert late_handle.timed_out == 1  # cut at the window's end: nothing sent
            assert kernel.bus.stats("thread.job.reply").dropped == {}
            report_gate.set()
        result = call.result()
    assert senders(result.proposals) == ["agent.early"]
    assert senders(result.winners) == ["agent.early"]
    assert list(result.results) == ["agent.early"]
    assert late.awards == []


async def test_proposals_after_the_window_are_ignored(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """A peer that ignores deadlines (Loom's do) may still propose late: not counted."""
    late_gate = trio.Event()

    async def late_bidder(task_status: trio.TaskStatus[None]) -> None:
        async with kernel.bus.subscribe("thread.*.broadcast", event_types=["collab.cfp"]) as cfps:
            task_status.started()
            async for _, cfp in cfps:
                await late_gate.wait()
                envelope = Envelope.from_event(cfp)
                envelope.sender = "loom.late"
                proposal = envelope.attach_to_event(
                    Event("collab.proposal", metadata={"score": "0.9"})
                )
                await kernel.bus.publish(envelope.reply_topic(), proposal)

    early = Bidder("early", 0.5)
    async with open_test_kernel() as kernel:
        await kernel.spawn(early)
        await kernel.start(late_bidder)
        async with trio.open_nursery() as nursery:
            call = start_call(
                nursery,
                lambda: kernel.collaborator("mgr").contract_net(
                    "job", b"", window_s=1, max_awards=1, execute_timeout_s=30
                ),
            )
            await early.awarded.wait()
            late_gate.set()
            await settle()
            assert kernel.bus.stats("thread.job.reply").dropped == {"unclaimed": 1}
        result = call.result()
    assert senders(result.proposals) == ["agent.early"]
    assert senders(result.winners) == ["agent.early"]


async def test_no_proposals_no_awards(autojump_clock: trio.testing.MockClock) -> None:
    async with open_test_kernel() as kernel:
        broadcast = capture_events(kernel.bus, "thread.job.broadcast")
        result = await kernel.collaborator("mgr").contract_net(
            "job", b"", window_s=2, execute_timeout_s=10
        )
        assert trio.current_time() == 2.0  # no execute phase without winners
        await settle()
    assert (result.proposals, result.winners, result.results, result.missing) == ([], [], {}, [])
    assert result.complete
    assert [event.type for event in broadcast.events] == ["collab.cfp", "collab.summary"]
    summary = broadcast.items[1][1]
    assert (summary.metadata["winners"], summary.metadata["proposals"]) == ("0", "0")


async def test_nothing_left_after_cancellation(autojump_clock: trio.testing.MockClock) -> None:
    async with open_test_kernel() as kernel:
        await kernel.spawn(Bidder("a", 0.5))
        before = subscriptions(kernel)
        with trio.move_on_after(0.5):
            await kernel.collaborator("mgr").contract_net("job", b"", window_s=1)
        assert trio.current_time() == 0.5
        assert_nothing_left(kernel, before, "thread.job.reply")


@pytest.mark.parametrize(
    "options",
    [
        {"window_s": 0},
        {"window_s": -1},
        {"max_awards": 0},
        {"max_awards": -1},
        {"max_awards": True},
        {"execute_timeout_s": 0},
        {"thread_id": "a.b"},
        {"thread_id": ""},
    ],
)
async def test_invalid_arguments(
    autojump_clock: trio.testing.MockClock, options: dict[str, Any]
) -> None:
    arguments: dict[str, Any] = {"thread_id": "job", "window_s": 1, "max_awards": 1, **options}
    thread_id = arguments.pop("thread_id")
    async with open_test_kernel() as kernel:
        seen = capture_events(kernel.bus, "thread.>")
        with pytest.raises(CollabError):
            await kernel.collaborator("mgr").contract_net(thread_id, b"", **arguments)
        await settle()
        assert seen.items == []
        assert trio.current_time() == 0.0
