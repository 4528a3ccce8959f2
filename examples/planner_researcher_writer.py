"""Loom's planner / researcher / writer, in one process or in three linked by the bridge.

    python examples/planner_researcher_writer.py               # one process
    python examples/planner_researcher_writer.py --processes 3 # three, through the bridge

The planner turns a user question into a research request; the researcher looks it up with
its ``research.search`` capability and hands a draft to the writer; the writer prints it and
``SUMMARY: OK``. The agents are the same ``loomk.Agent`` s either way. With ``--processes 3``
this process runs the planner and a bridge server on a free loopback port, and starts the
researcher and the writer as two more processes whose kernels link to it
(``loomk_bridge.connect``): their agents subscribe and answer across process boundaries as
they would in one kernel. That mode needs the bridge extra: ``pip install 'loomk[bridge]'``.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Awaitable, Callable

import trio

import loomk
from loomk import Context, Event, Kernel

QUESTION = "What is Loom?"
TIMEOUT_S = 60.0

NOTES = {
    "loom": "Loom is an event-driven runtime for always-on AI agents: events in, "
    "actions out, state in the middle",
}


@loomk.capability("research.search", description="Look a question up in the notes")
async def research_search(args: dict[str, str]) -> dict[str, str]:
    query = args["query"].lower()
    found = [text for key, text in NOTES.items() if key in query]
    return {"summary": found[0] if found else f"nothing is known about {args['query']!r}"}


@loomk.agent("planner", topics=["topic.planner"])
async def planner(ctx: Context, event: Event) -> None:
    """A user question becomes a research request."""
    if event.type == "user.question":
        await ctx.emit("topic.research", Event("research.request", event.payload))


@loomk.agent("researcher", topics=["topic.research"], capabilities=["research.search"])
async def researcher(ctx: Context, event: Event) -> None:
    """A research request is looked up, and a draft goes to the writer."""
    if event.type != "research.request":
        return
    result = await ctx.invoke("research.search", {"query": event.payload.decode()}, timeout_s=10)
    summary = result.json()["summary"] if result.ok else f"no research ({result.code})"
    await ctx.emit("topic.writer", Event("writer.draft", f"Draft based on {summary}".encode()))


@loomk.agent("writer", topics=["topic.writer"])
async def writer(ctx: Context, event: Event) -> None:
    """A draft is printed, and the run is over."""
    if event.type == "writer.draft":
        print(event.payload.decode() + "\nSUMMARY: OK", flush=True)
        await ctx.emit("topic.done", Event("writer.done", b""))


async def ask_and_wait(kernel: Kernel) -> None:
    """Seed the question and wait for the writer to be done."""
    async with kernel.bus.subscribe("topic.done") as done:
        await kernel.bus.publish(
            "topic.planner", Event("user.question", QUESTION.encode(), source="user")
        )
        with trio.fail_after(TIMEOUT_S):
            await done.receive()


async def one_process(kernel: Kernel) -> None:
    kernel.broker.register(research_search)
    for agent in (planner, researcher, writer):
        await kernel.spawn(agent)
    await ask_and_wait(kernel)


async def three_processes(kernel: Kernel) -> None:
    """The planner and the bridge here; the researcher and the writer in processes of their
    own, started once the bridge listens and asked once both have joined."""
    bridge = kernel.edge("bridge")
    address: str = bridge.address  # type: ignore[attr-defined]
    await kernel.spawn(planner)
    async with trio.open_nursery() as nursery:
        for role in ("researcher", "writer"):
            command = [sys.executable, __file__, "--role", role, "--connect", address]
            nursery.start_soon(run_child, command)
        with trio.fail_after(TIMEOUT_S):
            while not (joined(kernel, "researcher") and joined(kernel, "writer")):
                await bridge.wait_changed()  # type: ignore[attr-defined]
        await ask_and_wait(kernel)
        nursery.cancel_scope.cancel()  # which stops the other two processes


def joined(kernel: Kernel, agent_id: str) -> bool:
    """Whether ``agent_id`` of a linked process is listed here, and its link is streaming."""
    info = kernel.directory.get(agent_id)
    via = info.metadata.get("loomk.via", "") if info is not None else ""
    return bool(via) and kernel.edge("bridge").streaming(via)  # type: ignore[attr-defined]


async def run_child(command: list[str]) -> None:
    """Run ``command`` until cancelled, then stop it (SIGTERM: it shuts down cleanly); one
    that ends before that is an error."""
    process = await trio.lowlevel.open_process(command)
    try:
        status = await process.wait()
    finally:
        process.terminate()
        with trio.CancelScope(shield=True):
            await process.wait()
    raise RuntimeError(f"{' '.join(command[2:])} ended early, with status {status}")


def linked_role(role: str, address: str) -> Callable[[Kernel], Awaitable[None]]:
    """The main of a process that runs one agent, linked to the bridge at ``address``."""

    async def main(kernel: Kernel) -> None:
        from loomk_bridge import connect

        if role == "researcher":
            kernel.broker.register(research_search)
        await kernel.spawn(researcher if role == "researcher" else writer)
        async with connect(kernel, address, name=f"{role}-process"):
            await trio.sleep_forever()  # until the planner's process stops this one

    return main


def cli() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--processes", type=int, choices=(1, 3), default=1)
    parser.add_argument("--role", choices=("researcher", "writer"), help=argparse.SUPPRESS)
    parser.add_argument("--connect", metavar="HOST:PORT", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.role and not args.connect:
        parser.error("--role needs --connect HOST:PORT of the planner's bridge")
    if args.role:
        loomk.run(linked_role(args.role, args.connect), state_temporary=True)
    elif args.processes == 3:
        loomk.run(three_processes, bridge_address="127.0.0.1:0", state_temporary=True)
    else:
        loomk.run(one_process, state_temporary=True)


if __name__ == "__main__":
    cli()
