"""``loomk bridge serve`` as a user runs it: prints where it listens, serves, stops cleanly."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
LOOMK = str(Path(sys.executable).with_name("loomk"))

_HEARTBEAT = """
import asyncio, sys
from grpclib.client import Channel
from loomk_bridge._proto import bridge_pb2
from loomk_bridge._proto.bridge_grpc import BridgeStub

async def main(host, port):
    channel = Channel(host, int(port))
    try:
        reply = await BridgeStub(channel).Heartbeat(bridge_pb2.HeartbeatRequest(timestamp_ms=7))
        print(reply.timestamp_ms, reply.status)
    finally:
        channel.close()

asyncio.run(main(*sys.argv[1].rsplit(":", 1)))
"""


def _env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith(("LOOMK_", "LOOM_"))}


@pytest.mark.e2e
@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_bridge_serve_listens_answers_and_stops_on_a_signal(
    tmp_path: Path, signum: signal.Signals
) -> None:
    server = subprocess.Popen(
        [LOOMK, "bridge", "serve", "--address", "127.0.0.1:0"],
        cwd=tmp_path,
        env=_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert server.stdout is not None
        line = server.stdout.readline().strip()
        assert line.startswith("loomk bridge listening on 127.0.0.1:"), line
        address = line.rsplit(" ", 1)[1]
        client = subprocess.run(
            [sys.executable, "-c", _HEARTBEAT, address],
            capture_output=True,
            text=True,
            timeout=60,
            env=_env(),
        )
        assert client.stdout.split() == ["7", "ok"], client.stderr
        server.send_signal(signum)
        _, err = server.communicate(timeout=60)
    finally:
        server.kill()
    assert server.returncode == 0, err
    assert "Traceback" not in err


@pytest.mark.e2e
def test_bridge_serve_reads_looms_address_variable_and_refuses_a_bad_one(tmp_path: Path) -> None:
    bad = subprocess.run(
        [LOOMK, "bridge", "serve", "--address", "nowhere"],
        cwd=tmp_path,
        env=_env(),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert bad.returncode == 2
    assert "HOST:PORT" in bad.stderr
    assert "Traceback" not in bad.stderr
    taken = subprocess.Popen(
        [LOOMK, "bridge", "serve"],
        cwd=tmp_path,
        env={**_env(), "LOOM_BRIDGE_ADDR": "127.0.0.1:0"},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert taken.stdout is not None
        line = taken.stdout.readline().strip()
        taken.send_signal(signal.SIGTERM)
        taken.communicate(timeout=60)
    finally:
        taken.kill()
    assert taken.returncode == 0
    # port 0 from the variable picked a free port; without it, the default 50051
    assert line.startswith("loomk bridge listening on 127.0.0.1:"), line
    assert not line.endswith(":50051"), line


@pytest.mark.e2e
def test_bench_bridge_prints_a_table_and_writes_json(tmp_path: Path) -> None:
    import json

    out = tmp_path / "bridge.json"
    done = subprocess.run(
        # few calls: the run is a smoke test of the command, not a measurement
        [LOOMK, "bench", "bridge", "--quick", "--calls", "20", "--json", str(out)],
        cwd=tmp_path,
        env=_env(),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    assert "events, 100 per frame" in done.stdout
    assert "ForwardAction calls" in done.stdout
    figures = json.loads(out.read_text())
    assert [figures[key]["count"] for key in ("frames", "batches", "calls")] == [5_000, 5_000, 20]
    for key in ("frames", "batches", "calls"):
        assert figures[key]["loomk_per_s"] > 0
        assert figures[key]["bare_per_s"] > 0
        assert figures[key]["ratio"] == pytest.approx(
            figures[key]["loomk_per_s"] / figures[key]["bare_per_s"]
        )
    gain = figures["batches"]["loomk_per_s"] / figures["frames"]["loomk_per_s"]
    assert figures["batching_gain"] == pytest.approx(gain)
