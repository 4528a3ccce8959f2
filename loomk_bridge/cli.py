"""``loomk bridge serve``: a kernel serving the bridge until Ctrl+C or SIGTERM."""

from __future__ import annotations

import argparse
import sys

import trio

import loomk
from loomk_bridge.errors import BridgeError
from loomk_bridge.server import DEFAULT_ADDRESS, BridgeServer, parse_address

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
        try:
            config = loomk.Config.load()
            address = args.address or config.bridge_address or DEFAULT_ADDRESS
            parse_address(address)
            config = config.replace(bridge_address=address)
        except (BridgeError, loomk.ConfigError) as error:
            print(f"loomk bridge serve: {error}", file=sys.stderr)
            return 2

        async def main(kernel: loomk.Kernel) -> None:
            server = kernel.edge("bridge")
            assert isinstance(server, BridgeServer)
            print(f"loomk bridge listening on {server.address}", flush=True)
            await trio.sleep_forever()

        try:
            loomk.run(main, config=config)
        except loomk.LoomkError as error:
            print(f"loomk bridge serve: {error}", file=sys.stderr)
            return 1
        except KeyboardInterrupt:
            pass
        return 0


COMMAND = BridgeCommand()
