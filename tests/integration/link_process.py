"""A process whose kernel links to a bridge server and offers ``slow.op``, which announces
itself on ``slow.started`` and then never answers (the test kills this process mid-call).

Usage: python link_process.py HOST:PORT
"""

from __future__ import annotations

import sys
from typing import Any

import trio

import loomk
from loomk_bridge.link import connect


async def main(kernel: loomk.Kernel) -> None:
    @loomk.capability("slow.op")
    async def slow(args: Any) -> Any:
        await kernel.bus.publish("slow.started", loomk.Event("started", b""))
        await trio.sleep_forever()

    kernel.broker.register(slow)
    async with connect(kernel, sys.argv[1], name="slow-process") as link:
        await link.wait_connected()
        await trio.sleep_forever()


if __name__ == "__main__":
    loomk.run(main, state_temporary=True, log_level="critical")
