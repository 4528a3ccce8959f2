"""The command line, the demo and signal handling, run as a user would: in subprocesses."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.e2e


def _run(*args: str, cwd: Path = ROOT, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LOOMK_")}
    return subprocess.run(
        args, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout, check=False
    )


def test_make_demo_runs_agents_offline_and_reports_what_happened() -> None:
    result = _run(sys.executable, "examples/smart_home.py")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[3:5] == ["  too hot in the attic: 36.5 C", "  too hot in the attic: 38.0 C"]
    assert "supervisor: system.agent.restarted ValueError(" in result.stdout
    assert "directory: alarm.heat -> ['alarm']" in lines
    assert "alarm state: {'warnings': 2}" in lines
    assert "alarm      running        7        1        1" in lines
    assert "notifier   running        2        0        0" in lines
    # the assistant: request/reply, routed to the local model, offline
    assert "    -> [Local] Turning on the kitchen lights." in lines
    assert '       action: lights.set {"room": "kitchen", "on": true}' in lines
    assert "    -> [Local] 21.5 plus 13 is 34.5." in lines
    assert '       action: timer.set {"seconds": 300}' in lines
    assert any(line.startswith("    -> [LocalFallback] Sorry") for line in lines)
    assert "llm.generate:0.1.0" in result.stdout
    assert result.stderr == ""


def test_bus_example_runs_offline_and_reports_what_happened(tmp_path: Path) -> None:
    # from a directory of its own: the example keeps its state in ./.loomk, locked while
    # it runs, which another run in the repository (a developer's, another test run's) holds
    result = _run(sys.executable, str(ROOT / "examples/hello_bus.py"), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "ALERT on alerts.attic.heat: attic at 36.5 C" in out
    assert "sensors.attic.temp = 36.5 C" in out
    assert "display showed frames 192..199 (8 of 200)" in out
    assert "camera.front.frame           200         8        0  {'evicted': 192}" in out
    assert "Traceback" not in result.stderr


def test_bench_bus_prints_a_table_and_writes_json(tmp_path: Path) -> None:
    target = tmp_path / "out" / "bus.json"
    result = _run(
        sys.executable, "-m", "loomk.cli", "bench", "bus", "--quick", "--json", str(target)
    )
    assert result.returncode == 0, result.stderr
    assert "trio channels" in result.stdout
    assert "ratio" in result.stdout
    assert "... throughput 1 -> 100" in result.stderr  # progress is shown
    figures = json.loads(target.read_text())
    widths = [row["subscribers"] for row in figures["throughput"]]
    assert widths == [1, 10, 100]
    for row in figures["throughput"]:
        assert row["loomk_per_s"] > 0
        assert row["baseline_per_s"] > 0
        assert row["ratio"] == pytest.approx(row["loomk_per_s"] / row["baseline_per_s"])
    assert {row["side"] for row in figures["latency"]} == {"loomk", "baseline"}


def test_bench_bus_with_the_dashboard_compares_a_served_kernel_with_a_plain_one(
    tmp_path: Path,
) -> None:
    target = tmp_path / "bus.json"
    result = _run(
        sys.executable,
        "-m",
        "loomk.cli",
        "bench",
        "bus",
        "--quick",
        "--dashboard",
        "--json",
        str(target),
    )
    assert result.returncode == 0, result.stderr
    assert "serving the dashboard to one client" in result.stdout
    compared = json.loads(target.read_text())["dashboard"]
    assert compared["with_dashboard_per_s"] > 0
    assert compared["without_per_s"] > 0
    assert compared["frames_received"] >= 2  # the client was served: hello and a snapshot
    assert compared["ratio"] == pytest.approx(
        compared["with_dashboard_per_s"] / compared["without_per_s"]
    )


def test_the_demo_serves_the_dashboard_when_asked() -> None:
    result = _run(
        sys.executable, "examples/smart_home.py", "--dashboard", "127.0.0.1:0", "--linger", "0"
    )
    assert result.returncode == 0, result.stderr
    first = result.stdout.splitlines()[0]
    assert re.fullmatch(
        r"dashboard: http://127\.0\.0\.1:\d+/  \(Prometheus metrics: http://127\.0\.0\.1:\d+/metrics\)",
        first,
    ), first
    assert "    -> [Local] Turning on the kitchen lights." in result.stdout


def test_config_command_lists_settings_and_reports_bad_environment(tmp_path: Path) -> None:
    result = _run(sys.executable, "-m", "loomk.cli", "config", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "bus_realtime_capacity" in result.stdout
    assert "LOOMK_BUS_REALTIME_CAPACITY" in result.stdout

    env = {k: v for k, v in os.environ.items() if not k.startswith("LOOMK_")}
    env["LOOMK_BUS_REALTIME_CAPACITY"] = "many"
    bad = subprocess.run(
        [sys.executable, "-m", "loomk.cli", "config"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert bad.returncode == 2
    assert "bus_realtime_capacity" in bad.stderr
    assert "LOOMK_BUS_REALTIME_CAPACITY" in bad.stderr
    assert "Traceback" not in bad.stderr


def _start_program(code: str, cwd: Path) -> subprocess.Popen[str]:
    """Run ``code`` in ``cwd``, a directory of its own: ``loomk.run`` keeps its state in
    ``./.loomk`` and locks it, so two programs in one directory would collide."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("LOOMK_")}
    return subprocess.Popen(
        [sys.executable, "-c", code],
        cwd=cwd,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


_SIGNAL_PROGRAM = textwrap.dedent(
    """
    import sys, trio, loomk

    async def main(kernel):
        async def cleanup():
            try:
                await trio.sleep_forever()
            finally:
                print("edge task cancelled", flush=True)
        kernel.start_soon(cleanup)
        await trio.testing.wait_all_tasks_blocked()
        print("ready", flush=True)
        await trio.sleep_forever()

    import trio.testing
    result = loomk.run(main)
    print(f"run returned {result!r}", flush=True)
    """
)


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_a_signal_shuts_the_kernel_down_cleanly(signum: signal.Signals, tmp_path: Path) -> None:
    process = _start_program(_SIGNAL_PROGRAM, tmp_path)
    try:
        assert process.stdout is not None
        assert process.stdout.readline().strip() == "ready"
        process.send_signal(signum)
        out, err = process.communicate(timeout=60)
    finally:
        process.kill()
    assert process.returncode == 0, err
    assert out.splitlines() == ["edge task cancelled", "run returned None"]
    assert "Traceback" not in err


def _code_block(document: str, heading: str, language: str = "python") -> str:
    """The first ``language`` code block after ``heading`` in a Markdown file of the repo."""
    text = (ROOT / document).read_text()
    fence = f"```{language}\n"
    start = text.index(fence, text.index(heading)) + len(fence)
    return text[start : text.index("```", start)]


def test_the_readme_embedding_example_runs_as_documented(tmp_path: Path) -> None:
    script = tmp_path / "example.py"
    script.write_text(_code_block("README.md", "## Embedding loomk"))
    result = _run(sys.executable, str(script), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == "sensors.kitchen.temp b'22.0'"
    assert "published=2," in lines[1]
    assert "matched=2," in lines[1]
    assert "delivered=1," in lines[1]
    assert "'replaced': 1" in lines[1]


def _pytest(directory: Path, test_file: str) -> subprocess.CompletedProcess[str]:
    """Run pytest on ``test_file`` in ``directory``, as a user would in their project."""
    command = ["-m", "pytest", "-q", "-p", "no:cacheprovider", "-W", "error", test_file]
    return _run(sys.executable, *command, cwd=directory)


def test_the_readme_testing_example_passes_under_pytest(tmp_path: Path) -> None:
    (tmp_path / "test_echo.py").write_text(_code_block("README.md", "## Testing your agents"))
    result = _pytest(tmp_path, "test_echo.py")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "1 passed" in result.stdout


def test_the_complete_example_of_the_testing_guide_passes_under_pytest_trio(
    tmp_path: Path,
) -> None:
    heading = "## A complete example"
    (tmp_path / "pyproject.toml").write_text(_code_block("docs/testing.md", heading, "toml"))
    (tmp_path / "test_heat_alarm.py").write_text(_code_block("docs/testing.md", heading))
    result = _pytest(tmp_path, "test_heat_alarm.py")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "4 passed" in result.stdout


def test_bench_agents_prints_tables_and_writes_json(tmp_path: Path) -> None:
    target = tmp_path / "agents.json"
    result = _run(
        sys.executable, "-m", "loomk.cli", "bench", "agents", "--quick", "--json", str(target)
    )
    assert result.returncode == 0, result.stderr
    assert "KiB/agent" in result.stdout
    assert "bus-only" in result.stdout
    figures = json.loads(target.read_text())
    assert [row["agents"] for row in figures["spawn"]] == [200, 1000]
    for row in figures["spawn"]:
        assert row["seconds"] > 0
        assert row["rss_bytes_per_agent"] > 0
    assert [row["agents"] for row in figures["delivery"]] == [1, 10, 100]
    for row in figures["delivery"]:
        assert row["ratio"] == pytest.approx(row["runtime_per_s"] / row["bus_per_s"])


_STUBBORN_PROGRAM = textwrap.dedent(
    """
    import trio, trio.testing, loomk

    class Stubborn(loomk.Agent):
        topics = ["work"]
        async def on_event(self, ctx, event):
            await trio.sleep_forever()  # never finishes: the graceful stop would wait
        async def on_stop(self, ctx):
            await trio.sleep_forever()  # and neither does its clean-up

    async def main(kernel):
        async def edge():
            try:
                await trio.sleep_forever()
            finally:
                print("shutting down", flush=True)
        kernel.start_soon(edge)
        await kernel.spawn(Stubborn("stubborn"))
        await kernel.bus.publish("work", loomk.Event("job"))
        await trio.testing.wait_all_tasks_blocked()
        print("ready", flush=True)
        await trio.sleep_forever()

    print(f"run returned {loomk.run(main, shutdown_timeout_s=3600)!r}", flush=True)
    """
)


def test_a_second_signal_abandons_a_graceful_shutdown_that_hangs(tmp_path: Path) -> None:
    process = _start_program(_STUBBORN_PROGRAM, tmp_path)
    try:
        assert process.stdout is not None
        assert process.stdout.readline().strip() == "ready"
        process.send_signal(signal.SIGINT)
        assert process.stdout.readline().strip() == "shutting down"  # graceful stop began
        process.send_signal(signal.SIGINT)  # the agent would hold it for an hour
        out, err = process.communicate(timeout=60)
    finally:
        process.kill()
    assert process.returncode == 0, err
    assert out.splitlines() == ["run returned None"]
    assert "Traceback" not in err


def test_bench_state_prints_a_table_and_writes_json(tmp_path: Path) -> None:
    target = tmp_path / "state.json"
    result = _run(
        sys.executable, "-m", "loomk.cli", "bench", "state", "--quick", "--json", str(target)
    )
    assert result.returncode == 0, result.stderr
    assert "acknowledged state writes/s" in result.stdout
    rows = json.loads(target.read_text())["results"]
    assert [row["sync"] for row in rows] == [False, True]
    for row in rows:
        assert row["writes"] == 20 * 10 * 5
        assert row["ratio"] == pytest.approx(row["loomk_per_s"] / row["baseline_per_s"])


def test_bench_collab_prints_tables_and_writes_json(tmp_path: Path) -> None:
    target = tmp_path / "collab.json"
    result = _run(
        sys.executable, "-m", "loomk.cli", "bench", "collab", "--quick", "--json", str(target)
    )
    assert result.returncode == 0, result.stderr
    assert "request/reply between two agents" in result.stdout
    assert "broker invocations of a no-op provider" in result.stdout
    figures = json.loads(target.read_text())
    trips = figures["round_trips"]
    assert trips["count"] == 500
    assert trips["ratio"] == pytest.approx(trips["per_s"] / trips["baseline_per_s"])
    assert 0 < trips["p50_us"] <= trips["p99_us"]
    calls = figures["invocations"]
    assert calls["count"] == 1_000
    assert calls["ratio"] == pytest.approx(calls["per_s"] / calls["baseline_per_s"])


def test_bench_batch_prints_its_table_and_writes_json(tmp_path: Path) -> None:
    target = tmp_path / "batch.json"
    result = _run(
        sys.executable, "-m", "loomk.cli", "bench", "batch", "--quick", "--json", str(target)
    )
    assert result.returncode == 0, result.stderr
    assert "batch handlers (on_batch) against per-event baselines" in result.stdout
    rows = json.loads(target.read_text())["results"]
    assert [(row["what"], row["count"]) for row in rows] == [
        ("delivery 1 -> 1", 20_000),
        ("delivery 1 -> 1", 20_000),
        ("state writes, sync off", 20 * 10 * 5),
    ]
    for row in rows:
        assert row["ratio"] == pytest.approx(row["loomk_per_s"] / row["baseline_per_s"])


def test_the_config_command_never_shows_the_api_key(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("LOOMK_", "VLLM_"))}
    env["VLLM_API_KEY"] = "sk-do-not-print"
    shown = subprocess.run(
        [sys.executable, "-m", "loomk.cli", "config"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert shown.returncode == 0, shown.stderr
    assert "llm_api_key" in shown.stdout
    assert "sk-do-not-print" not in shown.stdout + shown.stderr


def test_importing_loomk_does_not_load_the_http_client() -> None:
    """A kernel without a model endpoint never needs httpx or the LLM client."""
    code = (
        "import sys, loomk; "
        "print(sorted(m for m in ('httpx', 'loomk.llm.client') if m in sys.modules))"
    )
    result = _run(sys.executable, "-c", code)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


def test_importing_loomk_does_not_load_the_testing_kit() -> None:
    """``loomk.testing`` (and trio.testing with it) loads only when a test imports it."""
    code = "import sys, loomk; print('loomk.testing' in sys.modules)"
    result = _run(sys.executable, "-c", code)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "False"
    result = _run(sys.executable, "-c", "import loomk.testing; print(loomk.testing.__all__[0])")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "EventCapture"


def test_the_readme_s_dashboard_commands_run_as_written() -> None:
    """The README's three commands: ``make demo DASHBOARD=1`` runs the demo with the
    dashboard on 127.0.0.1:8765 (checked with ``make -n``: the whole demo is another test's),
    ``loomk top`` on that address shows the demo's agents (with ``--once``, so that it
    ends), and the bench runs as written."""
    readme = (ROOT / "README.md").read_text()
    start = readme.index("```sh\n", readme.index("## Dashboard and metrics")) + len("```sh\n")
    block = readme[start : readme.index("```", start)]
    demo, top, bench = [line.split("#")[0].strip() for line in block.strip().splitlines()]
    assert demo == "make demo DASHBOARD=1"
    planned = _run("make", "-n", *demo.split()[1:])
    assert planned.returncode == 0, planned.stderr
    assert "examples/smart_home.py --dashboard 127.0.0.1:8765" in planned.stdout
    env = {k: v for k, v in os.environ.items() if not k.startswith("LOOMK_")}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    home = subprocess.Popen(
        [sys.executable, "examples/smart_home.py", "--dashboard", "127.0.0.1:8765"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert home.stdout is not None
        assert home.stdout.readline().startswith("dashboard: http://127.0.0.1:8765/")
        shown = subprocess.run(
            ["bash", "-c", f"{top} --once"],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert shown.returncode == 0, shown.stderr
        assert "alarm" in shown.stdout
    finally:
        home.send_signal(signal.SIGINT)
        home.communicate(timeout=30)  # waits, and closes its output pipe
    ran = subprocess.run(
        ["bash", "-c", bench], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300
    )
    assert ran.returncode == 0, ran.stderr
    assert "serving the dashboard to one client" in ran.stdout
