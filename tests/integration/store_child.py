"""A second program for the store tests, run as ``python store_child.py MODE DATA_DIR [...]``.

- ``hold``: open a kernel on DATA_DIR, print ``ready``, keep it until stdin closes;
- ``run``: ``loomk.run(main)`` on DATA_DIR; ``main`` prints ``main ran``;
- ``full-disk POLICY``: ``loomk.run`` with ``state_fault=POLICY`` on DATA_DIR; once the kernel
  is open, files may not grow past 64 KiB (``RLIMIT_FSIZE``, as a full disk would refuse
  them), and an agent stores a value larger than that, so the write really fails.
"""

from __future__ import annotations

import resource
import signal
import sys
from pathlib import Path

import trio

import loomk


class BigWriter(loomk.Agent):
    """On ``write``, stores one value too large for the file size limit."""

    topics = ("write",)

    async def on_event(self, ctx: loomk.Context, event: loomk.Event) -> None:
        ctx.state["big"] = "x" * 200_000


async def hold(kernel: loomk.Kernel) -> None:
    print("ready", flush=True)
    await trio.wrap_file(sys.stdin).read()


async def main_ran(kernel: loomk.Kernel) -> None:
    print("main ran", flush=True)


async def full_disk(kernel: loomk.Kernel) -> None:
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a refused write fails with EFBIG instead
    resource.setrlimit(resource.RLIMIT_FSIZE, (64 * 1024, resource.RLIM_INFINITY))
    handle = await kernel.spawn(BigWriter("writer"), restart="temporary")
    await kernel.bus.publish("write", loomk.Event("write"))
    await handle.wait_finished()  # its commit fails: the agent fails (or the kernel stops)
    print(f"agent {handle.status}: {handle.last_error!r}", flush=True)
    await trio.testing.wait_all_tasks_blocked()
    print("kernel still running", flush=True)


if __name__ == "__main__":
    import trio.testing

    mode, data_dir = sys.argv[1], Path(sys.argv[2])
    settings: dict[str, object] = {"data_dir": data_dir, "log_level": "critical"}
    if mode == "hold":
        loomk.run(hold, **settings)
    elif mode == "run":
        loomk.run(main_ran, **settings)
    elif mode == "full-disk":
        loomk.run(full_disk, state_fault=sys.argv[3], **settings)
    else:
        raise SystemExit(f"unknown mode {mode!r}")
