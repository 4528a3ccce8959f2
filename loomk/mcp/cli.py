"""``loomk mcp serve``: a kernel whose capabilities any MCP client can call.

Over stdio by default (an MCP client such as a desktop assistant starts ``loomk mcp
serve`` and speaks to its stdin and stdout; nothing but the protocol is written to
stdout), or over Streamable HTTP with ``--http HOST:PORT`` (it prints the URL, then
serves until Ctrl+C or SIGTERM). The kernel's settings come from ``loomk.toml`` and the
``LOOMK_*`` variables as usual, so its ``mcp_servers``, bridge and models are there too.
"""

from __future__ import annotations

import argparse
import importlib.util
import sys

import loomk

__all__ = ["COMMAND", "McpCommand"]


class McpCommand:
    """The ``mcp`` subcommand of ``loomk``."""

    name = "mcp"
    help = "serve the kernel's capabilities as MCP tools (stdio or Streamable HTTP)"

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        actions = parser.add_subparsers(dest="mcp_action", metavar="ACTION", required=True)
        serve = actions.add_parser(
            "serve",
            help="run a kernel and serve its capabilities as MCP tools",
            description="Run a kernel (settings from loomk.toml and LOOMK_* variables) and "
            "serve its capabilities as MCP tools: over stdin/stdout by default, for an MCP "
            "client that starts this command; with --http, over Streamable HTTP at "
            "http://HOST:PORT/mcp until Ctrl+C or SIGTERM. Logs go to stderr.",
        )
        serve.add_argument(
            "--http",
            metavar="HOST:PORT",
            help="serve Streamable HTTP on this address instead of stdio (port 0 picks a "
            "free port; the URL is printed)",
        )

    def run(self, args: argparse.Namespace) -> int:
        try:
            config = loomk.Config.load()
        except loomk.ConfigError as error:
            print(f"loomk mcp serve: {error}", file=sys.stderr)
            return 2
        address: str | None = args.http
        if address is not None and loomk.config.split_address(address) is None:
            print(f"loomk mcp serve: --http must be HOST:PORT, got {address!r}", file=sys.stderr)
            return 2
        try:
            from loomk.mcp.serve import serve_http, serve_stdio
        except ImportError as error:  # the extra is missing
            print(
                f"loomk mcp serve: {error}; to install it: pip install 'loomk[mcp]'",
                file=sys.stderr,
            )
            return 1
        if address is not None and importlib.util.find_spec("hypercorn") is None:
            print(
                "loomk mcp serve: --http needs hypercorn; to install it: pip install 'loomk[mcp]'",
                file=sys.stderr,
            )
            return 1

        async def main(kernel: loomk.Kernel) -> None:
            if address is None:
                await serve_stdio(kernel)
                return

            def ready(url: str) -> None:
                print(f"loomk mcp serving on {url}", flush=True)

            await serve_http(kernel, address, ready=ready)

        try:
            loomk.run(main, config=config)
        except (loomk.LoomkError, OSError) as error:
            print(f"loomk mcp serve: {error}", file=sys.stderr)
            return 1
        except KeyboardInterrupt:
            pass
        return 0


COMMAND = McpCommand()
