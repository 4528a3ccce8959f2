"""What NATS itself achieves on this machine: the baseline a cluster benchmark compares to.

Plain asyncio and nats-py, no loomk, one process subscribing and another publishing, so the
numbers show what the server and the client library cost before loomk adds anything. Run as
``python -m loomk.cluster._bench_baseline MODE URL COUNT``; each mode prints JSON lines on
stdout:

- ``core-sub``: subscribes to ``bench.core``, prints ``{"ready": true}`` once the server has
  the subscription, then ``{"received": N, "seconds": T}`` (first to last message) after COUNT
  messages or 2 s without one (core NATS drops messages for a slow consumer).
- ``core-pub``: publishes COUNT messages of about 100 bytes on ``bench.core`` as fast as it
  can, flushes, prints ``{"sent": N, "seconds": T}``.
- ``js-sub``/``js-pub``: the same through JetStream (stream ``BENCH`` on ``bench.js``, file
  storage, created by whichever comes first). The publisher keeps a bounded window of
  unacknowledged ``publish_async`` calls; the subscriber is a durable push consumer acking
  every 100th message (ack policy all) and counts unique stream sequence numbers.

``run_baseline`` runs both processes from trio and returns their rates.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
from typing import Any

import trio

__all__ = ["read_line", "run_baseline"]

CORE_SUBJECT = "bench.core"
JS_SUBJECT = "bench.js"
JS_STREAM = "BENCH"
PAYLOAD = b"x" * 100
PUBLISH_WINDOW = 4096
"""JetStream publishes in flight at once, unacknowledged (``publish_async_max_pending``)."""
ACK_EVERY = 100
IDLE_S = 2.0
"""A subscriber that has seen messages gives up after this long without one."""
FIRST_MESSAGE_S = 60.0
"""A subscriber that has seen none gives up after this long."""
MODES = ("core-sub", "core-pub", "js-sub", "js-pub")


def _emit(line: dict[str, Any]) -> None:
    print(json.dumps(line), flush=True)


async def _ensure_stream(js: Any) -> None:
    import nats.js.api
    import nats.js.errors

    try:
        await js.stream_info(JS_STREAM)
    except nats.js.errors.NotFoundError:
        await js.add_stream(
            name=JS_STREAM, subjects=[JS_SUBJECT], storage=nats.js.api.StorageType.FILE
        )


class _Counter:
    """Counts messages from a subscription callback and notices when they stop coming."""

    def __init__(self, count: int) -> None:
        self.count = count
        self.received = 0
        self.first = 0.0
        self.last = 0.0
        self.done = asyncio.Event()
        self.sequences: set[int] = set()

    def mark(self) -> None:
        now = time.perf_counter()
        if self.received == 0:
            self.first = now
        self.last = now
        self.received += 1

    async def wait(self) -> None:
        """Until ``done`` or the idle/first-message timeout."""
        while not self.done.is_set():
            seen = self.received
            timeout = IDLE_S if seen else FIRST_MESSAGE_S
            try:
                await asyncio.wait_for(self.done.wait(), timeout)
            except TimeoutError:
                if self.received == seen:
                    return

    def result(self, received: int) -> dict[str, Any]:
        return {"received": received, "seconds": self.last - self.first}


async def _core_sub(url: str, count: int) -> None:
    import nats

    nc = await nats.connect(url)
    counter = _Counter(count)

    async def on_message(_msg: Any) -> None:
        counter.mark()
        if counter.received >= count:
            counter.done.set()

    await nc.subscribe(CORE_SUBJECT, cb=on_message, pending_msgs_limit=max(count, 65536))
    await nc.flush()
    _emit({"ready": True})
    await counter.wait()
    _emit(counter.result(counter.received))
    await nc.drain()


async def _core_pub(url: str, count: int) -> None:
    import nats

    nc = await nats.connect(url)
    start = time.perf_counter()
    for _ in range(count):
        await nc.publish(CORE_SUBJECT, PAYLOAD)
    await nc.flush()
    _emit({"sent": count, "seconds": time.perf_counter() - start})
    await nc.close()


async def _js_sub(url: str, count: int) -> None:
    import nats
    import nats.js.api

    nc = await nats.connect(url)
    js = nc.jetstream()
    await _ensure_stream(js)
    counter = _Counter(count)

    async def on_message(msg: Any) -> None:
        counter.mark()
        counter.sequences.add(msg.metadata.sequence.stream)
        if counter.received % ACK_EVERY == 0 or len(counter.sequences) >= count:
            await msg.ack()
        if len(counter.sequences) >= count:
            counter.done.set()

    durable = f"bench-{os.getpid()}"
    sub = await js.subscribe(
        JS_SUBJECT,
        durable=durable,
        cb=on_message,
        manual_ack=True,
        flow_control=True,
        idle_heartbeat=5.0,
        config=nats.js.api.ConsumerConfig(
            ack_policy=nats.js.api.AckPolicy.ALL,
            deliver_policy=nats.js.api.DeliverPolicy.NEW,
            max_ack_pending=10 * ACK_EVERY,
        ),
    )
    await nc.flush()
    _emit({"ready": True})
    await counter.wait()
    _emit(counter.result(len(counter.sequences)))
    await sub.unsubscribe()
    await js.delete_consumer(JS_STREAM, durable)
    await nc.close()


async def _js_pub(url: str, count: int) -> None:
    import nats

    nc = await nats.connect(url)
    js = nc.jetstream(publish_async_max_pending=PUBLISH_WINDOW)
    await _ensure_stream(js)
    start = time.perf_counter()
    acks = [await js.publish_async(JS_SUBJECT, PAYLOAD) for _ in range(count)]
    await asyncio.wait_for(js.publish_async_completed(), FIRST_MESSAGE_S)
    seconds = time.perf_counter() - start
    for ack in acks:
        ack.result()  # raises the first failed publish
    _emit({"sent": count, "seconds": seconds})
    await nc.close()


_RUNNERS = {"core-sub": _core_sub, "core-pub": _core_pub, "js-sub": _js_sub, "js-pub": _js_pub}


def _module_command(mode: str, url: str, count: int) -> list[str]:
    return [sys.executable, "-m", "loomk.cluster._bench_baseline", mode, url, str(count)]


async def read_line(stream: trio.abc.ReceiveStream, buffer: bytearray) -> bytes:
    """One line from ``stream`` (without its newline); ``buffer`` keeps what came after it."""
    while b"\n" not in buffer:
        chunk = await stream.receive_some()
        if not chunk:
            raise RuntimeError(f"the subscriber ended its output: {bytes(buffer)!r}")
        buffer += chunk
    line, _, rest = bytes(buffer).partition(b"\n")
    buffer[:] = rest
    return line


async def run_baseline(url: str, count: int, mode: str) -> dict[str, float]:
    """Run ``{mode}-sub`` and then ``{mode}-pub`` (``mode`` is ``core`` or ``js``) as processes.

    Returns ``events_per_s`` (messages received / the subscriber's first-to-last seconds),
    ``publish_per_s`` (the publisher's rate), ``received`` and ``sent``.
    """
    if mode not in ("core", "js"):
        raise ValueError(f"mode must be 'core' or 'js', not {mode!r}")
    sub = await trio.lowlevel.open_process(
        _module_command(f"{mode}-sub", url, count), stdout=subprocess.PIPE
    )
    try:
        assert sub.stdout is not None
        buffer = bytearray()
        with trio.fail_after(30):
            ready = json.loads(await read_line(sub.stdout, buffer))
        if not ready.get("ready"):
            raise RuntimeError(f"the subscriber did not get ready: {ready!r}")
        pub = await trio.run_process(
            _module_command(f"{mode}-pub", url, count), capture_stdout=True
        )
        published = json.loads(pub.stdout.decode().strip().splitlines()[-1])
        with trio.fail_after(FIRST_MESSAGE_S + 30):
            got = json.loads(await read_line(sub.stdout, buffer))
            await sub.wait()
    finally:
        if sub.returncode is None:
            sub.kill()
            with trio.CancelScope(shield=True):
                await sub.wait()
    received = float(got["received"])
    sub_seconds = float(got["seconds"])
    pub_seconds = float(published["seconds"])
    return {
        "events_per_s": received / sub_seconds if sub_seconds > 0 else float("inf"),
        "publish_per_s": float(published["sent"]) / pub_seconds if pub_seconds > 0 else 0.0,
        "received": received,
        "sent": float(published["sent"]),
        "seconds": sub_seconds,
    }


def main(argv: list[str] | None = None) -> None:
    """``MODE URL COUNT``: run one side of the baseline with asyncio."""
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 3 or args[0] not in MODES:
        sys.exit(f"usage: python -m loomk.cluster._bench_baseline {{{','.join(MODES)}}} URL COUNT")
    mode, url, count = args
    asyncio.run(_RUNNERS[mode](url, int(count)))


if __name__ == "__main__":
    main()
