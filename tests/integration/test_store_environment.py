"""The store's environment failing, seen from real programs: ``store_child.py`` in subprocesses.

- A data directory held by another running program: a second program's ``loomk.run`` fails
  at once with ``DataDirInUse`` and its ``main`` never runs (before, it started normally, each
  of its handlers failed, its agents gave up, its events were lost and it exited 0), and so
  does ``open_kernel`` in this process.
- A write the file system refuses (a file size limit, as a full disk refuses): with
  ``state_fault = "stop"`` the program stops with ``StoreError`` and a non-zero status; with
  ``"agent"`` only the agent that wrote fails and the program goes on.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from loomk import DataDirInUse, open_kernel

pytestmark = pytest.mark.e2e

CHILD = Path(__file__).with_name("store_child.py")
WAIT_LIMIT_S = 60


def child_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith(("LOOMK_", "VLLM_"))}


def run_child(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(CHILD), *args],
        env=child_env(),
        capture_output=True,
        text=True,
        timeout=WAIT_LIMIT_S,
        check=False,
    )


@contextmanager
def held_by_another_program(data_dir: Path) -> Iterator[None]:
    """A kernel in another process holds ``data_dir`` for the duration."""
    holder = subprocess.Popen(
        [sys.executable, str(CHILD), "hold", str(data_dir)],
        env=child_env(),
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert holder.stdin is not None
    assert holder.stdout is not None
    assert holder.stderr is not None
    try:
        assert holder.stdout.readline().strip() == "ready"
        yield
    finally:
        holder.stdin.close()  # the holder's main returns: its kernel closes
        status = holder.wait(timeout=WAIT_LIMIT_S)
        errors = holder.stderr.read()
        holder.stdout.close()
        holder.stderr.close()
        assert status == 0, errors


def test_a_second_program_on_a_held_data_dir_fails_at_once_and_main_never_runs(
    tmp_path: Path,
) -> None:
    data_dir = tmp_path / "data"
    with held_by_another_program(data_dir):
        second = run_child("run", str(data_dir))
    assert second.returncode == 1
    assert "main ran" not in second.stdout
    assert "loomk.errors.DataDirInUse: data directory in use" in second.stderr
    assert str(data_dir) in second.stderr
    assert "another data_dir" in second.stderr  # and how to get out of it
    after = run_child("run", str(data_dir))  # free again once the holder is gone
    assert (after.returncode, after.stdout) == (0, "main ran\n"), after.stderr


async def test_open_kernel_on_a_data_dir_another_program_holds_raises_before_the_body(
    tmp_path: Path,
) -> None:
    data_dir = tmp_path / "data"
    body_ran = False
    with held_by_another_program(data_dir), pytest.raises(DataDirInUse) as caught:
        async with open_kernel(data_dir=data_dir, env={}, log_level="critical"):
            body_ran = True
    assert not body_ran
    assert str(data_dir) in str(caught.value)


def test_a_write_the_file_system_refuses_stops_the_program_with_store_error(
    tmp_path: Path,
) -> None:
    data_dir = tmp_path / "data"
    result = run_child("full-disk", str(data_dir), "stop")
    assert result.returncode == 1
    assert "kernel still running" not in result.stdout
    last_line = result.stderr.strip().splitlines()[-1]
    assert last_line.startswith("loomk.errors.StoreError: writing to the store in ")
    assert str(data_dir) in last_line
    assert "File too large" in last_line


def test_with_state_fault_agent_a_refused_write_fails_only_the_agent(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    result = run_child("full-disk", str(data_dir), "agent")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].startswith("agent failed: StoreError('writing to the store in ")
    assert "File too large" in lines[0]
    assert lines[1] == "kernel still running"
