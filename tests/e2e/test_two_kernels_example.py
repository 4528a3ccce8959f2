"""examples/two_kernels.py and the README's cluster program run as a user would run them:
two kernels in two processes sharing a bus through a real nats-server."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from support import run_python

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.e2e


def test_the_two_kernels_share_events_requests_and_a_capability(tmp_path: Path) -> None:
    result = run_python(str(ROOT / "examples/two_kernels.py"), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    out = result.stdout
    lines = out.splitlines()
    assert lines[0].startswith("NATS: started nats-server on nats://127.0.0.1:")
    front_pid, worker_pid = re.findall(r"pid (\d+)", lines[2])
    assert front_pid != worker_pid
    # the worker's agents are listed here, on its node
    assert "  directory: packer     on worker" in lines
    assert "  directory: thermostat on worker" in lines
    assert "  directory: checkout   on front" in lines
    # realtime readings, then a request answered from the other process
    assert f"  thermostat answered: 3 readings, average 21.5 C (pid {worker_pid})" in lines
    # a capability only the worker has, invoked from the front's agent
    assert "  checkout: stock.check on the worker -> 4 kettle(s)" in lines
    # batched orders: each packed once, by the worker, its count kept in its state
    assert f"  shipment.ready: order 1 (1 x kettle) packed, 1 so far (pid {worker_pid})" in lines
    assert f"  shipment.ready: order 2 (2 x teapot) packed, 2 so far (pid {worker_pid})" in lines
    assert "2 capability calls to the worker" in out
    assert lines[-1].endswith("its agents and capability gone: True")
    assert "Traceback" not in result.stderr


def test_a_worker_without_a_server_is_a_usage_error(tmp_path: Path) -> None:
    result = run_python(str(ROOT / "examples/two_kernels.py"), "--role", "worker", cwd=tmp_path)
    assert result.returncode == 2
    assert "--nats" in result.stderr


def test_the_readme_cluster_program_runs_as_written(tmp_path: Path) -> None:
    text = (ROOT / "README.md").read_text()
    start = text.index("```python\n", text.index("## Cluster")) + len("```python\n")
    script = tmp_path / "cluster_program.py"
    script.write_text(text[start : text.index("```", start)])
    result = run_python(str(script), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout == "order b'1 kettle'\n"
    assert "Traceback" not in result.stderr


def test_the_readme_commands_of_the_example_are_its_own(tmp_path: Path) -> None:
    """The README's two commands: the first runs as written; the second's option exists."""
    readme = (ROOT / "README.md").read_text()
    commands = [
        line.split("#")[0].split()
        for line in readme.splitlines()
        if line.startswith("python examples/two_kernels.py")
    ]
    assert commands == [
        ["python", "examples/two_kernels.py"],
        ["python", "examples/two_kernels.py", "--nats", "nats://host:4222"],
    ]
    result = run_python(str(ROOT / "examples/two_kernels.py"), "--help", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "--nats URL" in result.stdout
