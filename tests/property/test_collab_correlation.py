"""Many concurrent requests, answered in any order, each get exactly their own reply, and
nothing is left registered afterwards, whatever ends the calls (answer or timeout)."""

from __future__ import annotations

import trio
from hypothesis import given, settings
from hypothesis import strategies as st

from loomk import CollabTimeout, Envelope, Event, Kernel
from loomk.testing import run_test_kernel


@settings(max_examples=25, deadline=None)
@given(
    delays=st.lists(st.integers(min_value=0, max_value=20), min_size=1, max_size=30),
    unanswered=st.sets(st.integers(min_value=0, max_value=29), max_size=5),
)
def test_concurrent_requests_get_their_own_replies(delays: list[int], unanswered: set[int]) -> None:
    async def scenario(kernel: Kernel) -> None:
        baseline = len(kernel.bus.subscription_stats())
        requests = kernel.bus.subscribe("svc.echo", capacity=1000)

        async def responder() -> None:
            async with trio.open_nursery() as replies:
                async for _, request in requests:
                    index = int(request.payload)
                    if index in unanswered:
                        continue
                    replies.start_soon(answer, request, delays[index])

        async def answer(request: Event, delay: int) -> None:
            await trio.sleep(delay / 10)  # virtual time: answers come back in any order
            envelope = Envelope.from_event(request)
            reply = Event("collab.reply", b"re:" + request.payload)
            await kernel.bus.publish(envelope.reply_topic(), envelope.attach_to_event(reply))

        results: dict[int, bytes | None] = {}

        async def ask(index: int) -> None:
            caller = kernel.collaborator(f"caller-{index}")
            try:
                reply = await caller.request("svc.echo", str(index).encode(), timeout_s=5)
            except CollabTimeout:
                results[index] = None
            else:
                results[index] = reply.payload

        kernel.start_soon(responder)
        async with trio.open_nursery() as callers:
            for index in range(len(delays)):
                callers.start_soon(ask, index)
        expected = {
            i: (None if i in unanswered else f"re:{i}".encode()) for i in range(len(delays))
        }
        assert results == expected
        assert kernel.collab_service.waiting == 0
        requests.close()
        assert len(kernel.bus.subscription_stats()) == baseline  # no call left one behind
        assert not [t for t in kernel.bus.topics() if t.endswith(".reply")]

    run_test_kernel(scenario, autojump=True, builtin_capabilities=False)
