"""MCP servers' tools as broker capabilities, against real servers in subprocesses.

``mcp-server-time`` (a third-party server) and the SDK-made ``toolbox`` over stdio and
Streamable HTTP (the ``box`` fixture runs a test over both): listing (with pagination),
calls and their answers, ``isError``, schema checks before sending, resources, prompts,
``tools/list_changed``, JSON-RPC error codes, timeouts, removal (and the server's process
gone after it).
"""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path
from types import SimpleNamespace
from typing import Any, cast

import mcp_types as types
import trio
from mcp_support import (
    TIME_SERVER,
    Toolbox,
    invoke,
    process_gone,
    tool_pid,
    toolbox,
)

import loomk
from loomk import ActionCall, ActionStatus, ProviderKind
from loomk.config import Config, McpServerSettings
from loomk.mcp import open_mcp
from loomk.mcp._adapter import ADAPTER_VERSION, extra_providers
from loomk.testing import open_test_kernel


async def test_the_time_server_tools_answer_through_the_broker() -> None:
    time_server = McpServerSettings("time", command=TIME_SERVER)
    async with open_test_kernel() as kernel, open_mcp(kernel, [time_server]) as mcp:
        info = mcp.info("time")
        assert info.state == "ready"
        assert {"get_current_time", "convert_time"} <= set(info.tools)
        descriptor = next(
            d for d in kernel.broker.list_capabilities() if d.name == "time:get_current_time"
        )
        assert descriptor.version == "0.1.0"
        assert descriptor.provider is ProviderKind.PROVIDER_MCP
        assert descriptor.metadata["mcp_server"] == "time"
        assert descriptor.metadata["mcp_tool"] == "get_current_time"
        assert descriptor.metadata["desc"]
        assert "timezone" in json.loads(descriptor.metadata["schema"])["properties"]

        result = await invoke(kernel.broker, "time:get_current_time", {"timezone": "UTC"})
        assert result.ok, result.error
        answer = json.loads(result.json()["result"])
        assert answer["timezone"] == "UTC"
        assert datetime.fromisoformat(answer["datetime"]).utcoffset().total_seconds() == 0
        assert mcp.stats().servers["time"].ok == 1


async def test_toolbox_tools_are_listed_across_pages_and_answer(box: Toolbox) -> None:
    async with open_test_kernel() as kernel, open_mcp(kernel, [box.settings()]) as mcp:
        info = mcp.info("box")
        assert (info.server_name, info.server_version) == ("toolbox", "1.2.3")
        numbered = [t for t in info.tools if t[0] == "n" and t[1:].isdigit()]
        assert len(numbered) == 12
        assert len(info.tools) > 15
        assert all(f"box:{t}" in kernel.broker for t in info.tools)

        echoed = await invoke(kernel.broker, "box:echo", {"text": "hi", "times": 2})
        assert echoed.json()["result"] == "hi hi"
        added = await invoke(kernel.broker, "box:add", {"a": 2, "b": 3})
        assert added.json()["structured"] == {"sum": 5}

        failed = await invoke(kernel.broker, "box:fail", {"message": "boom"})
        assert failed.status is ActionStatus.ACTION_ERROR
        assert failed.code == "TOOL_ERROR"
        assert "boom" in failed.error.message


async def test_arguments_off_the_schema_never_reach_the_server() -> None:
    async with open_test_kernel() as kernel, open_mcp(kernel, [toolbox()]):
        wrong = await invoke(kernel.broker, "box:echo", {"text": 5})
        assert wrong.code == "INVALID_PARAMS"
        assert "text" in wrong.error.message
        missing = await invoke(kernel.broker, "box:echo", {})
        assert missing.code == "INVALID_PARAMS"
        not_json = await kernel.broker.invoke(ActionCall("raw", "box:echo", b"{not json"))
        assert not_json.code == "INVALID_PARAMS"
        counted = await invoke(kernel.broker, "box:calls")
        assert counted.json()["structured"] == {"result": 1}  # only this call arrived


async def test_resources_and_prompts_are_capabilities_listed_across_pages(
    box: Toolbox,
) -> None:
    async with open_test_kernel() as kernel, open_mcp(kernel, [box.settings()]):
        listed = await invoke(kernel.broker, "box:resources.list")  # one a page
        assert [r["uri"] for r in listed.json()["resources"]] == ["note://hello", "note://bye"]
        assert listed.json()["resources"][0]["mimeType"] == "text/plain"
        read = await invoke(kernel.broker, "box:resources.read", {"uri": "note://hello"})
        assert read.json()["result"] == "hello from a resource"
        prompts = await invoke(kernel.broker, "box:prompts.list")  # one a page
        assert [p["name"] for p in prompts.json()["prompts"]] == ["greet", "farewell"]
        prompt = await invoke(
            kernel.broker, "box:prompts.get", {"name": "greet", "arguments": {"name": "Ann"}}
        )
        assert prompt.json()["result"] == "Please greet Ann warmly."
        other = await invoke(
            kernel.broker, "box:prompts.get", {"name": "farewell", "arguments": {"name": "Bo"}}
        )
        assert other.json()["result"] == "Please bid Bo farewell."
        no_uri = await invoke(kernel.broker, "box:resources.read", {})
        assert no_uri.code == "INVALID_PARAMS"


async def test_a_tool_list_change_registers_and_unregisters(box: Toolbox) -> None:
    async with open_test_kernel() as kernel, open_mcp(kernel, [box.settings()]) as mcp:
        changed = trio.Event()
        stop = kernel.broker.watch(lambda: changed.set() if "box:fresh" in kernel.broker else None)
        with trio.fail_after(10):
            assert (await invoke(kernel.broker, "box:grow", {"name": "fresh"})).ok
            await changed.wait()
        stop()
        assert "fresh" in mcp.info("box").tools
        assert (await invoke(kernel.broker, "box:fresh", {"x": 4})).json()["result"] == "fresh:4"

        gone = trio.Event()
        stop = kernel.broker.watch(lambda: gone.set() if "box:fresh" not in kernel.broker else None)
        with trio.fail_after(10):
            assert (await invoke(kernel.broker, "box:shrink", {"name": "fresh"})).ok
            await gone.wait()
        stop()
        assert "fresh" not in mcp.info("box").tools


async def test_a_call_past_the_timeout_ends_with_action_timeout(box: Toolbox) -> None:
    settings = box.settings(timeout_s=2.5)
    async with open_test_kernel() as kernel, open_mcp(kernel, [settings]) as mcp:
        with trio.fail_after(10):
            slow = await invoke(kernel.broker, "box:nap", {"seconds": 30})
        assert slow.status is ActionStatus.ACTION_TIMEOUT
        assert slow.code == "TIMEOUT"
        assert "2.5" in slow.error.message
        assert (await invoke(kernel.broker, "box:echo", {"text": "still here"})).ok
        assert mcp.stats().servers["box"].timeouts == 1


async def test_remove_unregisters_and_the_name_can_be_added_again() -> None:
    async with open_test_kernel() as kernel, open_mcp(kernel) as mcp:
        await mcp.add(toolbox())
        assert mcp.servers() == ["box"]
        assert await mcp.remove("box")
        assert not [d for d in kernel.broker.list_capabilities() if d.name.startswith("box:")]
        assert mcp.servers() == []
        assert not await mcp.remove("box")
        await mcp.add(toolbox())
        assert (await invoke(kernel.broker, "box:echo", {"text": "again"})).ok
        info = await mcp.reconnect("box")
        assert info.state == "ready"
        assert (await invoke(kernel.broker, "box:echo", {"text": "after"})).ok
    assert "box:echo" not in kernel.broker  # closing unregisters too


async def test_a_protocol_version_can_be_asked_for() -> None:
    old = toolbox(protocol_version="2024-11-05")
    async with open_test_kernel() as kernel, open_mcp(kernel, [old]) as mcp:
        assert mcp.info("box").protocol_version == "2024-11-05"
        assert (await invoke(kernel.broker, "box:echo", {"text": "old"})).ok


async def test_json_rpc_errors_have_their_codes() -> None:
    """An unknown tool is ``-32602`` "Unknown tool" by the spec: ``TOOL_NOT_FOUND``; another
    ``-32602`` (an unknown resource) is ``INVALID_PARAMS``."""
    async with open_test_kernel() as kernel, open_mcp(kernel, [toolbox()]):
        with trio.fail_after(10):
            changed = trio.Event()
            stop = kernel.broker.watch(
                lambda: changed.set() if "box:fresh" in kernel.broker else None
            )
            assert (await invoke(kernel.broker, "box:grow", {"name": "fresh"})).ok
            await changed.wait()
            stop()
            stale = kernel.broker.resolve("box:fresh", ADAPTER_VERSION)
            assert stale is not None
            gone = trio.Event()
            stop = kernel.broker.watch(
                lambda: gone.set() if "box:fresh" not in kernel.broker else None
            )
            assert (await invoke(kernel.broker, "box:shrink", {"name": "fresh"})).ok
            await gone.wait()
            stop()
        result = await stale.invoke(ActionCall.with_args("stale", "box:fresh", {"x": 1}))
        assert result.code == "TOOL_NOT_FOUND"
        assert "Unknown tool: fresh" in result.error.message

        unknown = await invoke(kernel.broker, "box:resources.read", {"uri": "note://nope"})
        assert unknown.code == "INVALID_PARAMS"
        assert "-32602" in unknown.error.message


def test_a_capability_name_that_cannot_be_made_is_skipped() -> None:
    """``extra_providers`` runs in the manager's change callback, so it must not raise: a
    name that makes no capability name skips that capability."""
    capabilities = types.ServerCapabilities(resources=types.ResourcesCapability())
    stand_in = cast(Any, SimpleNamespace(name="-bad"))
    assert extra_providers(stand_in, capabilities, lambda _result: None) == []


async def test_the_server_process_is_gone_after_remove_and_after_close() -> None:
    async with open_test_kernel() as kernel:
        with trio.fail_after(30):
            async with open_mcp(kernel, [toolbox()]) as mcp:
                removed = await tool_pid(kernel.broker)
                assert await mcp.remove("box")
                assert process_gone(removed)
                await mcp.add(toolbox())
                closed = await tool_pid(kernel.broker)
                assert not process_gone(closed)
            assert process_gone(closed)


async def test_the_server_process_is_gone_after_the_kernel_with_the_edge_stops(
    tmp_path: Path,
) -> None:
    config = Config.load(
        env={},
        cwd=tmp_path,
        state_temporary=True,
        log_level="error",
        mcp_servers=[toolbox().as_table(reveal_secrets=True)],
    )
    with trio.fail_after(60):
        async with loomk.open_kernel(config) as kernel:
            pid = await tool_pid(kernel.broker)
            assert not process_gone(pid)
    assert process_gone(pid)
