"""MCP servers that misbehave at the start, for the tests: ``python broken.py MODE``.

``garbage`` writes lines that are not JSON-RPC on stdout; ``exit`` exits at once with status
3; ``hang`` reads requests and never answers; ``version`` answers ``initialize`` with a
protocol version nobody speaks (``1999-01-01``); ``brief`` finishes the handshake (no
tools) and exits as soon as its tool list is sent, like a server that dies right after each
start; ``strict`` refuses every request (JSON-RPC error ``-32600``) until it has seen
``notifications/initialized``, then lists one tool, ``ok``, which answers ``"initialized"``.
"""

from __future__ import annotations

import json
import sys


def strict() -> None:
    """The ``strict`` mode: no request before ``notifications/initialized``."""
    initialized = False
    tool = {"name": "ok", "inputSchema": {"type": "object"}}
    for line in sys.stdin:
        message = json.loads(line)
        method, ident = message.get("method"), message.get("id")
        if method == "notifications/initialized":
            initialized = True
        if ident is None or "method" not in message:
            continue  # a notification or an answer
        if method == "initialize":
            result: dict[str, object] = {
                "protocolVersion": message["params"]["protocolVersion"],
                "capabilities": {"tools": {}},
                "serverInfo": {"name": "strict", "version": "0.0.1"},
            }
        elif not initialized:
            error = {"code": -32600, "message": f"{method} before notifications/initialized"}
            print(json.dumps({"jsonrpc": "2.0", "id": ident, "error": error}), flush=True)
            continue
        elif method == "tools/list":
            result = {"tools": [tool]}
        elif method == "tools/call":
            result = {"content": [{"type": "text", "text": "initialized"}]}
        else:
            result = {}
        print(json.dumps({"jsonrpc": "2.0", "id": ident, "result": result}), flush=True)


def main(mode: str) -> None:
    if mode == "exit":
        sys.exit(3)
    if mode == "strict":
        strict()
        return
    if mode == "garbage":
        print("Server starting... hello there!", flush=True)
    for line in sys.stdin:
        if mode == "brief":
            request = json.loads(line)
            method, ident = request.get("method"), request.get("id")
            if method == "initialize":
                result = {
                    "protocolVersion": request["params"]["protocolVersion"],
                    "capabilities": {"tools": {}},
                    "serverInfo": {"name": "brief", "version": "0.0.1"},
                }
                print(json.dumps({"jsonrpc": "2.0", "id": ident, "result": result}), flush=True)
            elif method == "tools/list":
                answer = {"jsonrpc": "2.0", "id": ident, "result": {"tools": []}}
                print(json.dumps(answer), flush=True)
                return
        elif mode == "version":
            request = json.loads(line)
            if request.get("method") == "initialize":
                answer = {
                    "jsonrpc": "2.0",
                    "id": request["id"],
                    "result": {
                        "protocolVersion": "1999-01-01",
                        "capabilities": {"tools": {}},
                        "serverInfo": {"name": "ancient", "version": "0.0.1"},
                    },
                }
                print(json.dumps(answer), flush=True)
        elif mode == "garbage":
            print("not json either", flush=True)


if __name__ == "__main__":
    main(sys.argv[1])
