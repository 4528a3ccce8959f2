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
            print(f"security: {security(kernel.config)}", flush=True)
            await trio.sleep_forever()

        try:
            loomk.run(main, config=config)
        except loomk.LoomkError as error:
            print(f"loomk bridge serve: {error}", file=sys.stderr)
            return 1
        except KeyboardInterrupt:
            pass
        return 0


def security(config: loomk.Config) -> str:
    """What protects a bridge served with ``config``, in one line (never a secret)."""
    parts = []
    if config.bridge_tls_cert:
        mutual = " with client certificates" if config.bridge_tls_client_ca else ""
        parts.append(f"TLS{mutual}")
    else:
        parts.append("plaintext")
    parts.append("bearer token" if config.bridge_token else "no token")
    acl = config.bridge_acl
    if acl:
        named = len([agent for agent in acl if agent != "*"])
        default = ", a default for the others" if "*" in acl else ", nothing for the others"
        bound = len([entry for entry in acl.values() if entry.token])
        tokens = f", {bound} bound to a token" if bound else ""
        parts.append(f"bridge_acl for {named} agent id(s){tokens}{default}")
    else:
        parts.append("no bridge_acl (every agent may do everything)")
    return "; ".join(parts)


COMMAND = BridgeCommand()
