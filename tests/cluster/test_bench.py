"""``loomk bench cluster`` with tiny counts: every side is measured, the report holds what
the table and the JSON show, and JetStream between two kernels loses nothing (no timing
is asserted: the figures depend on the machine)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from loomk.cluster._bench_kernel import HEAD, PAYLOAD_BYTES, Tally, payload, round_number
from loomk.cluster.bench import SCENARIO, format_report, run_cluster_bench
from loomk.cluster.nats_server import find_nats_server

pytestmark = pytest.mark.skipif(find_nats_server() is None, reason="needs nats-server")

SIDES = ["bus", "nats-py core", "loomk core", "nats-py js", "loomk js"]


def test_a_tally_counts_distinct_events_and_their_latency() -> None:
    tally = Tally(2)
    first = payload(3, 0)
    assert len(first) == PAYLOAD_BYTES
    assert round_number(first) == 3
    assert HEAD.unpack_from(first)[:2] == (3, 0)
    assert not tally.mark(first)
    assert not tally.mark(first)  # a duplicate does not complete the round
    assert tally.mark(payload(3, 1))
    result = tally.result()
    assert (result["received"], result["unique"], result["duplicates"]) == (3, 2, 1)
    assert 0 < result["p50_us"] <= result["p99_us"] <= result["max_us"]


def test_a_small_run_measures_every_side_and_loses_nothing_through_jetstream() -> None:
    progress: list[str] = []
    report = run_cluster_bench(
        events=300,
        js_events=200,
        rate=200,
        latency_seconds=0.1,
        repeats=1,
        progress=progress.append,
    )
    assert [t.side for t in report.throughput] == SIDES
    assert [lat.side for lat in report.latency] == ["bus", "nats-py core", "loomk core", "loomk js"]
    sizes = {"bus": 300, "nats-py core": 300, "loomk core": 300, "nats-py js": 200, "loomk js": 200}
    for row in report.throughput:
        assert row.sent == sizes[row.side], row
        assert row.received + row.lost == row.sent, row
        assert row.events_per_s > 0, row
        assert row.publish_per_s > 0, row
    js = report.side("loomk js")
    assert (js.received, js.lost, js.duplicates) == (200, 0, 0)
    assert report.targets["js_nothing_lost"] is True
    for lat in report.latency:
        assert lat.sent == 20, lat
        assert lat.rate_per_s == 200, lat
        assert 0 < lat.p50_us <= lat.p99_us <= lat.max_us, lat
    figures = json.loads(json.dumps(report.as_dict()))
    assert [t["side"] for t in figures["throughput"]] == SIDES
    assert figures["core_ratio"] == pytest.approx(report.core_ratio)
    assert set(figures["targets"]) == {"core_half_of_nats_py", "js_20k_per_s", "js_nothing_lost"}
    table = format_report(report)
    for side in SIDES:
        assert f" {side} " in table
    assert "nothing lost: yes" in table
    assert len(progress) == 4
    assert progress[0].startswith("run 1/1: nats-py alone")


def test_the_command_writes_its_json(tmp_path: Path) -> None:
    """``loomk bench cluster`` is registered through the entry point and runs end to end."""
    out = tmp_path / "cluster.json"
    args = ["--events", "200", "--js-events", "100", "--rate", "100", "--latency-seconds", "0.1"]
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "loomk.cli",
            "bench",
            "cluster",
            "--quick",
            *args,
            "--json",
            str(out),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert "loomk core / nats-py core:" in result.stdout
    figures = json.loads(out.read_text())
    assert [t["side"] for t in figures["throughput"]] == SIDES
    assert figures["targets"]["js_nothing_lost"] is True
    assert [o.flag for o in SCENARIO.options] == [
        "--events",
        "--js-events",
        "--rate",
        "--latency-seconds",
        "--repeats",
    ]
