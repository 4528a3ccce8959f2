"""A dashboard feed client for ``loomk bench bus --dashboard``, run in a process of its own
(as a browser would be): it reads every frame of a feed, says ``ready`` once the first
arrives, and prints how many it read when its standard input closes.

``python -m loomk.bench._feed_reader ws://HOST:PORT/ws``
"""

from __future__ import annotations

import sys

import trio


async def _read(url: str) -> int:
    from trio_websocket import ConnectionClosed, open_websocket_url

    frames = 0
    async with trio.open_nursery() as nursery:

        async def until_stdin_closes() -> None:
            await trio.to_thread.run_sync(sys.stdin.read)
            nursery.cancel_scope.cancel()

        nursery.start_soon(until_stdin_closes)
        async with open_websocket_url(url) as connection:
            try:
                while True:
                    await connection.get_message()
                    frames += 1
                    if frames == 1:
                        print("ready", flush=True)
            except ConnectionClosed:
                pass
    return frames


def main() -> None:
    """Read the feed at ``sys.argv[1]`` until standard input closes; print the frame count."""
    print(trio.run(_read, sys.argv[1]), flush=True)


if __name__ == "__main__":
    main()
