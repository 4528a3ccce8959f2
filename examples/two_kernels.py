"""Two kernels in two processes sharing one bus through NATS: offline, in a few seconds.

    python examples/two_kernels.py                          # starts a nats-server of its own
    python examples/two_kernels.py --nats nats://host:4222  # or uses yours

``LOOMK_CLUSTER_NATS_URL``, when set, is taken as ``--nats``. It needs
``pip install 'loomk[cluster]'`` and, unless given a server, Debian's ``nats-server``
(``apt-get install nats-server``; ``LOOMK_NATS_SERVER`` names another).

This process runs the *front* kernel; it starts the *worker* kernel as a second process
(this script again, with ``--role worker``). Both share, through NATS:

- ``sensor.>`` as **realtime** (core NATS, at most once): the front sends kitchen
  temperatures, and asks the worker's thermostat for their average with a request
  (``ctx.request``'s reply comes back over NATS);
- ``order.>`` as **batched** (JetStream: stored, acknowledged by the worker only once its
  packer has handled and committed each order, sent again if it crashed first);
- ``shipment.>`` as realtime: the worker says what it packed.

The front's checkout agent checks the stock with ``ctx.invoke("stock.check", ...)``, a
capability only the worker's kernel has: the call goes to it over NATS request/reply. In
the end the front stops the worker, which says goodbye, and its agents leave the front's
directory.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any

import trio

import loomk
from loomk import Context, Event, Kernel

SHARE = "sensor.>=realtime, order.>=batched, shipment.>=realtime"
TIMEOUT_S = 20.0
READINGS = (21.0, 21.5, 22.0)
CARTS = ({"item": "kettle", "count": 1}, {"item": "teapot", "count": 2})
STOCK = {"kettle": 4, "teapot": 2}
SETTINGS: dict[str, Any] = {"cluster_share": SHARE, "state_temporary": True, "log_level": "warning"}

# ---- the worker's kernel --------------------------------------------------------------------


@loomk.capability("stock.check", description="How many of an item the warehouse holds")
async def stock_check(args: dict[str, str]) -> dict[str, object]:
    return {"item": args["item"], "in_stock": STOCK.get(args["item"], 0)}


@loomk.agent("thermostat", topics=["sensor.>"])
async def thermostat(ctx: Context, event: Event) -> None:
    """Keeps the readings it hears; answers a request for their average."""
    if event.type == "temp":
        ctx.memory.append(float(event.payload))
    elif event.type == "average?":
        readings = ctx.memory.items()
        average = sum(readings) / len(readings) if readings else 0.0
        text = f"{len(readings)} readings, average {average:.1f} C (pid {os.getpid()})"
        await ctx.reply(event, Event("average", text.encode()))


@loomk.agent("packer", topics=["order.>"])
async def packer(ctx: Context, event: Event) -> None:
    """Packs each order once; the count is durable state, committed with the shipment."""
    order = json.loads(event.payload)
    ctx.state["packed"] = ctx.state.get("packed", 0) + 1
    text = f"order {order['id']} ({order['count']} x {order['item']}) packed"
    text += f", {ctx.state['packed']} so far (pid {os.getpid()})"
    await ctx.emit("shipment.ready", Event("shipment", text.encode()))


async def worker(kernel: Kernel) -> None:
    """The worker's main: its capability and agents, until the front stops it."""
    kernel.broker.register(stock_check)
    for agent in (thermostat, packer):
        await kernel.spawn(agent)
    await trio.sleep(10 * TIMEOUT_S)  # the front ends it long before (SIGTERM: a clean stop)


# ---- the front's kernel ---------------------------------------------------------------------


@loomk.agent("checkout", topics=["checkout.cart"])
async def checkout(ctx: Context, event: Event) -> None:
    """Checks the stock on the worker's kernel, then places the order (batched, shared)."""
    cart = json.loads(event.payload)
    result = await ctx.invoke("stock.check", {"item": cart["item"]}, timeout_s=5)
    if not result.ok:
        print(f"  checkout: stock.check failed: {result.code}")
        return
    stock = result.json()
    print(f"  checkout: stock.check on the worker -> {stock['in_stock']} {stock['item']}(s)")
    if stock["in_stock"] >= cart["count"]:
        await ctx.emit("order.new", Event("order", json.dumps(cart).encode()))


async def front(url: str, started_here: bool) -> None:
    """The front's kernel: joins, starts the worker, talks to it, stops it."""
    async with (
        loomk.open_kernel(cluster_nats_url=url, cluster_node="front", **SETTINGS) as kernel,
        trio.open_nursery() as nursery,
    ):
        link = kernel.edge("cluster")
        await kernel.spawn(checkout)
        with trio.move_on_after(TIMEOUT_S):
            await link.wait_connected()  # type: ignore[attr-defined]
        if not link.connected:  # type: ignore[attr-defined]
            raise SystemExit(f"cannot reach NATS at {url}: {link.last_error}")  # type: ignore[attr-defined]
        print(f"front: joined {'this' if started_here else 'the'} NATS server as node 'front'")
        command = [sys.executable, __file__, "--role", "worker", "--nats", url]
        worker_process = await nursery.start(run_worker, command)
        print(f"front (pid {os.getpid()}): started the worker's kernel, pid {worker_process.pid}")

        with trio.fail_after(TIMEOUT_S):  # until its agents and capability are announced
            while not (
                "stock.check" in kernel.capabilities
                and {"packer", "thermostat"} <= {a.agent_id for a in kernel.directory.all()}
            ):
                await link.wait_changed()  # type: ignore[attr-defined]
        for info in sorted(kernel.directory.all(), key=lambda a: a.agent_id):
            where = info.metadata.get("loomk.node", "front")
            print(f"  directory: {info.agent_id:<10} on {where}")
        print("  capability stock.check is served by the worker's kernel")

        print("sensor.> (realtime, core NATS): three kitchen readings, then a request")
        for reading in READINGS:
            await kernel.bus.publish("sensor.kitchen.temp", Event("temp", str(reading).encode()))
        ask = kernel.collaborator("front")
        answer = await ask.request("sensor.kitchen.average", Event("average?", b""), timeout_s=5)
        print(f"  thermostat answered: {answer.payload.decode()}")

        print("order.> (batched, JetStream), after a capability call to the other kernel")
        async with kernel.bus.subscribe("shipment.ready") as shipments:
            for number, cart in enumerate(CARTS, 1):
                order = {"id": number, **cart}
                await kernel.bus.publish("checkout.cart", Event("cart", json.dumps(order).encode()))
                with trio.fail_after(TIMEOUT_S):
                    _topic, shipment = await shipments.receive()
                print(f"  shipment.ready: {shipment.payload.decode()}")

        stats = link.stats()  # type: ignore[attr-defined]
        print(f"front: {stats.link.sent} events sent, {stats.link.received} received, ", end="")
        print(f"{stats.calls_out} capability calls to the worker")
        worker_process.terminate()
        with trio.fail_after(TIMEOUT_S):
            while "worker" in link.peers():  # type: ignore[attr-defined]
                await link.wait_changed()  # type: ignore[attr-defined]
        gone = "packer" not in kernel.directory and "stock.check" not in kernel.capabilities
        print(f"front: the worker left (said goodbye); its agents and capability gone: {gone}")


async def run_worker(
    command: list[str], *, task_status: trio.TaskStatus[trio.Process] = trio.TASK_STATUS_IGNORED
) -> None:
    """Run the worker's process; it must exit cleanly once terminated (SIGTERM)."""
    process = await trio.lowlevel.open_process(command)
    task_status.started(process)
    try:
        status = await process.wait()
    finally:
        process.terminate()
        with trio.CancelScope(shield=True):
            await process.wait()
    if status != 0:
        raise RuntimeError(f"the worker exited with status {status}")


async def main(url: str | None) -> None:
    if url:
        print(f"NATS: using {url}")
        await front(url, started_here=False)
        return
    from loomk.cluster.nats_server import open_nats_server

    async with open_nats_server() as server:
        print(f"NATS: started nats-server on {server.url} (JetStream in a temporary directory)")
        await front(server.url, started_here=True)


def cli() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--nats",
        metavar="URL",
        default=os.environ.get("LOOMK_CLUSTER_NATS_URL", ""),
        help="a NATS server to use (default: $LOOMK_CLUSTER_NATS_URL, else start one)",
    )
    parser.add_argument("--role", choices=("worker",), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.role:
        if not args.nats:
            parser.error("--role worker needs --nats URL")
        loomk.run(worker, cluster_nats_url=args.nats, cluster_node="worker", **SETTINGS)
    else:
        trio.run(main, args.nats)


if __name__ == "__main__":
    cli()
