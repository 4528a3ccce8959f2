"""The ``box`` fixture: the SDK-made toolbox over stdio, then over Streamable HTTP."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
import trio
from mcp_support import Toolbox

# The SDK's HTTP client (httpx2) leaves its response streams' async generators to the
# garbage collector when a session ends, which warns; that is the SDK's, not loomk's.
_SDK_WARNING = pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")


@pytest.fixture(params=["stdio", pytest.param("http", marks=_SDK_WARNING)])
async def box(request: pytest.FixtureRequest) -> AsyncIterator[Toolbox]:
    """The toolbox over the transport of the test's parameter (an HTTP one running)."""
    async with trio.open_nursery() as nursery:
        toolbox = Toolbox(request.param, nursery)
        if toolbox.transport == "http":
            await toolbox.start()
        yield toolbox
        nursery.cancel_scope.cancel()
