"""A kernel registers the built-in capabilities unless ``builtin_capabilities`` is off;
``llm.generate`` (the local model, offline) is always there."""

from __future__ import annotations

import loomk
from loomk import ProviderKind
from loomk.testing import open_test_kernel

BUILTINS = ["llm.generate", "math.eval", "time.now", "weather.get", "web.search"]


async def test_a_kernel_starts_with_the_builtins() -> None:
    async with open_test_kernel() as kernel:
        assert [d.name for d in kernel.capabilities.list()] == BUILTINS
        assert all(d.provider is ProviderKind.PROVIDER_NATIVE for d in kernel.capabilities.list())
        result = await kernel.broker.invoke(
            loomk.ActionCall("c1", "math.eval", b'{"expression": "6 * 7"}')
        )
        assert result.ok
        assert result.json()["value"] == 42


async def test_they_can_be_left_out() -> None:
    async with open_test_kernel(env={"LOOMK_BUILTIN_CAPABILITIES": "false"}) as kernel:
        assert [d.name for d in kernel.capabilities.list()] == ["llm.generate"]  # the model
        result = await kernel.broker.invoke(loomk.ActionCall("c1", "math.eval", b"{}"))
        assert result.code == "PROVIDER_UNAVAILABLE"


async def test_llm_generate_answers_offline_with_the_local_model() -> None:
    async with open_test_kernel() as kernel:
        result = await kernel.broker.invoke(
            loomk.ActionCall.with_args("g1", "llm.generate", {"input": "turn off the lights"})
        )
    assert result.ok
    output = result.json()
    assert output["provider"] == "local"
    assert output["text"] == "Turning off the lights."
    assert output["actions"] == [{"capability": "lights.set", "args": {"on": False}}]
