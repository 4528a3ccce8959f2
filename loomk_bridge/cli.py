"""``loomk bridge serve``: a kernel serving the bridge until Ctrl+C or SIGTERM."""

from __future__ import annotations

import argparse
import sys
from typing import Any

import trio

import loomk
from loomk_bridge.errors import BridgeError
from loomk_bridge.server import BridgeServer, parse_address

__all__ = ["COMMAND", "BridgeCommand"]


class BridgeCommand:
    """The ``bridge`` subcommand of ``loomk``."""

    name = "bridge"
    help = "serve Loom's gRPC bridge (loom.v1.Bridge) from a kernel"

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        actions = parser.add_subparsers(dest="bridge_action", metavar="ACTION", required=True)
        serve = actions.add_parser(
            "serve",
            help="run a kernel with the bridge until Ctrl+C / SIGTERM",
            description="Run a kernel that serves loom.v1.Bridge, so agents in other "
            "processes (Loom's SDKs, loomk_bridge.connect) join its bus. Prints the address "
            "it listens on, then serves until Ctrl+C or SIGTERM.",
        )
        serve.add_argument(
            "--address",
            metavar="HOST:PORT",
            help="where to listen (default: bridge_address from the config, "
            "LOOMK_BRIDGE_ADDRESS or LOOM_BRIDGE_ADDR, else 127.0.0.1:50051; port 0 picks "
            "a free port)",
        )

    def run(self, args: argparse.Namespace) -> int:
        settings: dict[str, Any] = {}
        if args.address is not None:
            try:
                parse_address(args.address)
            except BridgeError as error:
                print(f"loomk bridge serve: {error}", file=sys.stderr)
                return 2
            settings["bridge_address"] = args.address

        async def main(kernel: loomk.Kernel) -> None:
            server = kernel.edges.get("bridge")
            if not isinstance(server, BridgeServer):  # no address configured anywhere
                print("loomk bridge serve: no bridge address", file=sys.stderr)
                return
            print(f"loomk bridge listening on {server.address}", flush=True)
            await trio.sleep_forever()

        if "bridge_address" not in settings:
            config = loomk.Config.load()
            settings["bridge_address"] = config.bridge_address or "127.0.0.1:50051"
        try:
            loomk.run(main, **settings)
        except (BridgeError, loomk.LoomkError) as error:
            print(f"loomk bridge serve: {error}", file=sys.stderr)
            return 1
        except KeyboardInterrupt:
            pass
        return 0


COMMAND = BridgeCommand()
