"""``loomk mcp serve`` driven by the official SDK's client, as any MCP client would: started
as a subprocess over stdio, and over Streamable HTTP with ``--http``."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path

import mcp_types as types
import pytest
import trio
from mcp.client.session import ClientSession
from mcp.client.stdio import StdioServerParameters, stdio_client
from mcp.client.streamable_http import streamable_http_client
from support import capture_component_logs

from loomk.mcp.serve import serve_http, tool_names
from loomk.testing import open_test_kernel

DEADLINE_S = 60


def serve_env(tmp_path: Path) -> dict[str, str]:
    """The environment of a served kernel: no leftover LOOMK_/Loom variables, temporary
    state, quiet logs, run in ``tmp_path`` (so no stray loomk.toml is read)."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("LOOMK_") and k not in {"LOOM_BRIDGE_ADDR", "VLLM_BASE_URL"}
    }
    env.update(LOOMK_STATE_TEMPORARY="true", LOOMK_LOG_LEVEL="warning")
    return env


async def check_session(session: ClientSession) -> None:
    """What every transport must give: the built-in tools, a call, a failing call."""
    await session.initialize()
    listed = await session.list_tools()
    tools = {tool.name: tool for tool in listed.tools}
    assert {"time_now", "math_eval"} <= set(tools)  # names MCP clients accept
    assert all(re.fullmatch(r"[a-zA-Z0-9_-]{1,64}", name) for name in tools)
    assert tools["math_eval"].title == "math.eval"  # the capability's own name
    assert tools["math_eval"].description
    assert tools["math_eval"].input_schema.get("type") == "object"
    assert "expression" in tools["math_eval"].input_schema.get("properties", {})

    result = await session.call_tool("math_eval", {"expression": "2+3"})
    assert not result.is_error
    (content,) = result.content
    assert isinstance(content, types.TextContent)
    assert json.loads(content.text)["value"] == 5

    by_capability = await session.call_tool("math.eval", {"expression": "1+1"})
    assert not by_capability.is_error  # the capability's own name is accepted too

    bad = await session.call_tool("math_eval", {"expression": "2+"})
    assert bad.is_error
    assert isinstance(bad.content[0], types.TextContent)
    assert bad.content[0].text.split(":")[0].isupper()  # "CODE: message"

    unknown = await session.call_tool("no.such.tool", {})
    assert unknown.is_error
    assert isinstance(unknown.content[0], types.TextContent)
    assert "PROVIDER_UNAVAILABLE" in unknown.content[0].text


def test_tool_names_fit_mcp_clients_and_never_collide() -> None:
    names = tool_names(["time.now", "math.eval", "docs:search", "plain_name", "a-b"])
    assert names == {
        "time.now": "time_now",
        "math.eval": "math_eval",
        "docs:search": "docs_search",
        "plain_name": "plain_name",
        "a-b": "a-b",
    }
    # a capability already named a_b keeps it; a.b and a:b each get a hashed name
    clash = tool_names(["a:b", "a.b", "a_b"])
    assert clash["a_b"] == "a_b"
    assert len(set(clash.values())) == 3
    assert clash == tool_names(["a_b", "a.b", "a:b"])  # not the order given
    assert all(re.fullmatch(r"a_b_[0-9a-f]{8}", clash[n]) for n in ("a.b", "a:b"))
    long = tool_names(["x." * 40])["x." * 40]
    assert re.fullmatch(r"[a-zA-Z0-9_-]{1,64}", long)


async def test_http_beyond_loopback_logs_that_it_has_no_authentication() -> None:
    async with open_test_kernel() as kernel:
        with trio.fail_after(DEADLINE_S), capture_component_logs("loomk.mcp.serve") as records:
            async with trio.open_nursery() as nursery:

                def ready(url: str) -> None:
                    nursery.cancel_scope.cancel()

                nursery.start_soon(lambda: serve_http(kernel, "0.0.0.0:0", ready=ready))
    warnings = [r for r in records if r["log_level"] == "warning"]
    assert warnings, records
    assert "no authentication" in warnings[0]["event"]


@pytest.mark.e2e
async def test_stdio(tmp_path: Path) -> None:
    params = StdioServerParameters(
        command=sys.executable,
        args=["-m", "loomk.cli", "mcp", "serve"],
        env=serve_env(tmp_path),
        cwd=str(tmp_path),
    )
    with trio.fail_after(DEADLINE_S):
        async with stdio_client(params) as (read, write), ClientSession(read, write) as session:
            await check_session(session)


@contextmanager
def http_server(tmp_path: Path) -> Iterator[str]:
    """``loomk mcp serve --http 127.0.0.1:0`` running; its URL (from the line it prints)."""
    process = subprocess.Popen(
        [sys.executable, "-m", "loomk.cli", "mcp", "serve", "--http", "127.0.0.1:0"],
        env=serve_env(tmp_path),
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        line = process.stdout.readline()  # bounded: the process prints it or exits
        assert line.startswith("loomk mcp serving on http://127.0.0.1:"), line + (
            process.stderr.read() if process.stderr and process.poll() is not None else ""
        )
        yield line.split()[-1]
    finally:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        for stream in (process.stdout, process.stderr):
            if stream is not None:
                stream.close()


@asynccontextmanager
async def http_session(url: str) -> AsyncIterator[ClientSession]:
    async with streamable_http_client(url) as (read, write), ClientSession(read, write) as session:
        yield session


# The SDK's HTTP client leaves httpx2's streaming async generators to the garbage collector
# when a session closes; under trio each is reported as an unraisable ResourceWarning (a
# client-side leak in the test process, not the server under test).
@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
@pytest.mark.filterwarnings("ignore::ResourceWarning")
@pytest.mark.e2e
async def test_streamable_http(tmp_path: Path) -> None:
    with http_server(tmp_path) as url:
        assert url.endswith("/mcp")
        with trio.fail_after(DEADLINE_S):
            async with http_session(url) as session:
                await check_session(session)
            async with http_session(url) as again:  # a second client after the first left
                await again.initialize()
                assert (await again.call_tool("math_eval", {"expression": "6*7"})).is_error is False


@pytest.mark.e2e
def test_a_bad_http_address_is_refused(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "loomk.cli", "mcp", "serve", "--http", "nowhere"],
        env=serve_env(tmp_path),
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2
    assert "--http must be HOST:PORT" in result.stderr
    assert result.stdout == ""


@pytest.mark.e2e
def test_stdio_mode_writes_nothing_but_the_protocol_to_stdout(tmp_path: Path) -> None:
    """A client that closes stdin at once: the kernel starts, logs (to stderr) and stops,
    and stdout stays empty."""
    env = {**serve_env(tmp_path), "LOOMK_LOG_LEVEL": "debug"}
    result = subprocess.run(
        [sys.executable, "-m", "loomk.cli", "mcp", "serve"],
        env=env,
        cwd=tmp_path,
        input="",
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout == ""
    assert result.stderr  # the debug logs went there
