"""A kernel registers the built-in capabilities unless ``builtin_capabilities`` is off."""

from __future__ import annotations

from pathlib import Path

import loomk
from loomk import ProviderKind

BUILTINS = ["math.eval", "time.now", "weather.get", "web.search"]


async def test_a_kernel_starts_with_the_builtins(tmp_path: Path) -> None:
    async with loomk.open_kernel(
        env={}, cwd=tmp_path, log_level="critical", state_temporary=True
    ) as kernel:
        assert [d.name for d in kernel.capabilities.list()] == BUILTINS
        assert all(d.provider is ProviderKind.PROVIDER_NATIVE for d in kernel.capabilities.list())
        result = await kernel.broker.invoke(
            loomk.ActionCall("c1", "math.eval", b'{"expression": "6 * 7"}')
        )
        assert result.ok
        assert result.json()["value"] == 42


async def test_they_can_be_left_out(tmp_path: Path) -> None:
    async with loomk.open_kernel(
        env={"LOOMK_BUILTIN_CAPABILITIES": "false"},
        cwd=tmp_path,
        log_level="critical",
        state_temporary=True,
    ) as kernel:
        assert kernel.capabilities.list() == []
        result = await kernel.broker.invoke(loomk.ActionCall("c1", "math.eval", b"{}"))
        assert result.code == "PROVIDER_UNAVAILABLE"
