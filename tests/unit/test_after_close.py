"""After the kernel has shut down, every collaboration call and every publish raises
:class:`KernelClosed`, whose message names the call and says the kernel is not running.

Loom-era code that keeps a collaborator or an agent's context past shutdown used to get
``cannot subscribe to 'thread.*.reply'``: true, but about nothing the caller asked for.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from loomk import Context, Event, Kernel, KernelClosed
from loomk.collab import Collaborator
from loomk.testing import ScriptedAgent, open_test_kernel

Call = Callable[[Collaborator], Awaitable[Any]]

COLLABORATION: list[Any] = [
    pytest.param(
        lambda c: c.request("svc.x", b"q", timeout_s=1), "request on 'svc.x'", id="request"
    ),
    pytest.param(lambda c: c.fanout(["svc.a", "svc.b"], b"q", timeout_s=1), "fanout", id="fanout"),
    pytest.param(lambda c: c.barrier("b", 2, timeout_s=1), "at barrier 'b'", id="barrier"),
    pytest.param(
        lambda c: c.contract_net("job", b"cfp", window_s=1),
        "contract-net round 'job'",
        id="contract_net",
    ),
]


async def closed_kernel() -> tuple[Kernel, Context]:
    """A kernel that has shut down, and the context its agent had while it ran."""
    contexts: list[Context] = []

    async def keep(ctx: Context) -> None:
        contexts.append(ctx)

    async with open_test_kernel() as kernel:
        await kernel.spawn(ScriptedAgent("keeper", on_start=keep))
        kernel.collaborator()  # made while running, used after
    assert kernel.closed
    return kernel, contexts[0]


def assert_names_the_call(error: KernelClosed, call: str) -> None:
    assert error.code == "KERNEL_CLOSED"
    assert call in error.message
    assert "the kernel is not running" in error.message
    assert "subscribe" not in error.message


@pytest.mark.parametrize(("call", "named"), COLLABORATION)
async def test_a_collaboration_call_after_close_says_the_kernel_is_not_running(
    call: Call, named: str
) -> None:
    kernel, _ = await closed_kernel()
    with pytest.raises(KernelClosed) as info:
        await call(kernel.collaborator("kernel"))
    assert_names_the_call(info.value, named)


@pytest.mark.parametrize(("call", "named"), COLLABORATION)
async def test_an_agents_collaboration_call_after_close_says_so_too(call: Call, named: str) -> None:
    _, ctx = await closed_kernel()
    with pytest.raises(KernelClosed) as info:
        await call(ctx)  # type: ignore[arg-type]  # Context has the same calls
    assert_names_the_call(info.value, named)


async def test_a_collaborator_made_before_close_refuses_after() -> None:
    async with open_test_kernel() as kernel:
        collaborator = kernel.collaborator("early")
        await collaborator.fanout([], b"q", timeout_s=1)  # works while running
    with pytest.raises(KernelClosed) as info:
        await collaborator.request("svc.x", b"q", timeout_s=1)
    assert_names_the_call(info.value, "request")
    assert kernel.collab_service.closed


async def test_publish_and_subscribe_after_close_say_the_kernel_is_not_running() -> None:
    kernel, _ = await closed_kernel()
    with pytest.raises(KernelClosed) as info:
        await kernel.bus.publish("news", Event("x"))
    assert "cannot publish to 'news'" in info.value.message
    assert "the kernel is not running" in info.value.message
    with pytest.raises(KernelClosed) as info:
        kernel.bus.subscribe("news")
    assert "cannot subscribe to 'news'" in info.value.message
    assert "the kernel is not running" in info.value.message


async def test_an_agents_emit_and_invoke_after_close_raise_instead_of_vanishing() -> None:
    _, ctx = await closed_kernel()
    with pytest.raises(KernelClosed) as info:  # not held in an outbox no one will commit
        await ctx.emit("news", Event("x"))
    assert "the kernel is not running" in info.value.message
    with pytest.raises(KernelClosed) as info:  # refused before the capability runs
        await ctx.invoke("time.now")
    assert_names_the_call(info.value, "invoke 'time.now'")


@pytest.mark.parametrize(
    ("call", "named"),
    [
        (lambda k: k.spawn(ScriptedAgent("a"), restrat="temporary"), "'restrat'"),
        (lambda k: k.spawn_many([ScriptedAgent("a")], windows_s=1), "'windows_s'"),
        (lambda k: k.subscribe_agent("a", "x", overflw="block"), "'overflw'"),
    ],
    ids=["spawn", "spawn_many", "subscribe_agent"],
)
async def test_an_unknown_option_is_a_typed_error_naming_it(call: Any, named: str) -> None:
    from loomk import AgentError

    async with open_test_kernel() as kernel:
        await kernel.spawn(ScriptedAgent("a"))
        with pytest.raises(AgentError, match=rf"takes no option {named}; did you mean"):
            await call(kernel)
