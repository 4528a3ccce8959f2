"""An MCP server's tools as capabilities, called by an agent: offline, in one process.

Run it with ``python examples/mcp_tools.py`` (it needs ``pip install 'loomk[mcp]'
mcp-server-time``). The kernel starts the reference ``mcp-server-time`` server over stdio
(from this Python's own bin directory, so no PATH lookup), lists the tools it offers as
capabilities (``time:get_current_time``, ``time:convert_time``), and an agent answers a
question on ``ask.time`` by invoking ``time:convert_time`` through ``ctx.invoke``, exactly as
it would any other capability. Zones without daylight saving time keep the answer the same
every day of the year.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import trio

import loomk
from loomk import Event, Kernel, ProviderKind

TIME_SERVER = {
    "name": "time",
    "command": str(Path(sys.executable).parent / "mcp-server-time"),
    "args": ["--local-timezone", "UTC"],  # no guessing of this machine's zone
}
QUESTION = {"source_timezone": "UTC", "time": "12:00", "target_timezone": "Asia/Tokyo"}


class Clock(loomk.Agent):
    """Answers ``ask.time`` questions with the MCP server's ``convert_time`` tool."""

    topics = ("ask.time",)

    async def on_event(self, ctx: loomk.Context, event: Event) -> None:
        result = await ctx.invoke("time:convert_time", json.loads(event.payload))
        if not result.ok:  # an MCP failure is an ordinary failed action: code and message
            assert result.error is not None
            answer = {"error": f"{result.error.code}: {result.error.message}"}
        else:
            # an MCP tool's text answer is {"result": text}; this server's text is JSON
            answer = json.loads(result.json()["result"])["target"]
        await ctx.emit("answer.time", Event("time", json.dumps(answer).encode()))


async def main(kernel: Kernel) -> None:
    mcp = kernel.capabilities.by_kind(ProviderKind.PROVIDER_MCP)
    tools = sorted(d.name for d in mcp if "mcp_tool" in d.metadata)  # not resources, prompts
    print("MCP tools:", ", ".join(tools))
    answers = kernel.bus.subscribe("answer.time")
    await kernel.spawn(Clock("clock"))
    await kernel.bus.publish("ask.time", Event("question", json.dumps(QUESTION).encode()))
    with trio.fail_after(30):
        async for _topic, event in answers:
            answer = json.loads(event.payload)
            if "error" in answer:
                print("the tool failed:", answer["error"])
            else:
                hour = answer["datetime"][11:16]  # 2026-12-03T21:00:00+09:00
                print(f"12:00 in UTC is {hour} in {answer['timezone']}")
            break


if __name__ == "__main__":
    # mcp_servers starts the kernel's MCP edge: kernel.mcp manages the servers while it runs
    loomk.run(main, mcp_servers=[TIME_SERVER], state_temporary=True)
