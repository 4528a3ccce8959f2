"""The program ``test_crash.py`` kills: a kernel whose agent commits several keys per event.

Run as ``python crash_child.py DATA_DIR``. It opens a kernel on ``DATA_DIR`` (``state_sync``
on), reads how far the stored history goes, and feeds its ``counter`` agent the next sequence
numbers as fast as it can, forever. For event ``n`` the agent's handler writes, in one
handler (so one commit): ``last = n``, ``count += 1``, ``sum += n``, ``pair = [n, n]``,
``k{n % 7} = n``, deletes ``k{(n + 3) % 7}``, and ``blob`` = a value whose size depends on
``n``. It emits ``ack`` with ``n``; the outbox holds that event until the handler's state is
committed, and a plain task prints ``ack n`` when it receives it, so a printed ack means
"durable".

Stdout, one line per write(2), in this order: ``boot`` (kernel open, store not yet),
``ready L`` (store open, stored ``last`` is ``L``), then ``ack n`` lines. Errors (a failed
handler, say) are logged on stderr, which the test expects to stay empty.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

import trio

from loomk import Agent, Context, Event
from loomk.testing import open_test_kernel

AGENT_ID = "counter"
IN_TOPIC = "crash.in"
ACK_TOPIC = "crash.ack"


def blob_for(n: int) -> bytes:
    """The ``blob`` value the handler of ``n`` stores (0 to 4095 bytes)."""
    return bytes([n % 251]) * ((n * 37) % 4096)


class Counter(Agent):
    topics = (IN_TOPIC,)

    async def on_event(self, ctx: Context, event: Event) -> None:
        n = int(event.payload)
        state = ctx.state
        state["last"] = n
        await trio.lowlevel.checkpoint()  # the handler is suspended between its writes
        state["count"] = state.get("count", 0) + 1
        state["sum"] = state.get("sum", 0) + n
        await ctx.emit(ACK_TOPIC, Event("ack", str(n).encode()))
        state["pair"] = [n, n]
        state[f"k{n % 7}"] = n
        gone = f"k{(n + 3) % 7}"
        if gone in state:
            del state[gone]
        await trio.lowlevel.checkpoint()
        state["blob"] = blob_for(n)


def say(line: str) -> None:
    os.write(1, (line + "\n").encode())  # one write(2) per line: never half a line in the pipe


async def print_acks(subscription: Any) -> None:
    async for _topic, event in subscription:
        say(f"ack {int(event.payload)}")


async def main(data_dir: Path) -> None:
    # durable commits, as in production; errors are logged for the parent test to report
    async with open_test_kernel(
        cwd=data_dir.parent,  # no scratch directory: a SIGKILL would leave it behind
        data_dir=data_dir,
        state_temporary=False,
        state_sync=True,
        log_level="error",
    ) as kernel:
        say("boot")
        stored = json.loads(kernel.agent_state(AGENT_ID).persistent_state)
        last = stored.get("last", 0)
        say(f"ready {last}")
        acks = kernel.bus.subscribe(ACK_TOPIC)
        kernel.start_soon(print_acks, acks)
        await kernel.spawn(Counter(AGENT_ID))
        n = last
        while True:
            n += 1
            await kernel.bus.publish(IN_TOPIC, Event("tick", str(n).encode()))


if __name__ == "__main__":
    trio.run(main, Path(sys.argv[1]))
