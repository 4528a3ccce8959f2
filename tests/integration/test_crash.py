"""Crash test of the durable state: a kernel in a subprocess is SIGKILLed many times.

``crash_child.py`` runs a kernel whose agent writes several keys per event (one handler, so
one commit) and prints ``ack n`` only once handler ``n`` is committed (its ``ack`` event is
held by the outbox until then). Each round starts the child on the same data directory, kills
it with SIGKILL at a point chosen by a seeded random plan (while it starts, while it opens
the store, after a number of acks, after a number of bytes of output) and then opens the
directory in this process and checks that:

1. it opens (not corrupted, the LOCK went with the killed process);
2. every ack the child printed, including those still in the pipe when it died, is stored
   (``last >= max acked``) and nothing stored before is lost;
3. the stored state is exactly what a whole number of handlers leaves (``count``, ``sum``,
   ``pair``, the ``k*`` keys, ``blob`` and nothing else all agree with ``last``), so no
   handler is half applied;
4. the child continued the stored history: its acks are consecutive from the stored
   ``last + 1``.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import trio

from loomk.testing import open_test_kernel

pytestmark = pytest.mark.e2e

CHILD = Path(__file__).with_name("crash_child.py")
AGENT_ID = "counter"  # as in crash_child.py
SEED = 20_260_611
ROUNDS = 30
MAX_ACKS = 200  # an "acks" round kills after 1..MAX_ACKS acks
MAX_BYTES = 2_000  # a "bytes" round kills after 1..MAX_BYTES bytes of output
ROUND_TIMEOUT_S = 30


def blob_for(n: int) -> bytes:
    """What handler ``n`` stores as ``blob`` (the child's formula, restated)."""
    return bytes([n % 251]) * ((n * 37) % 4096)


def expected_state(last: int) -> dict[str, Any]:
    """The state ``last`` whole handlers (of events 1..last, in order) leave."""
    state: dict[str, Any] = {}
    for n in range(1, last + 1):
        state["last"] = n
        state["count"] = state.get("count", 0) + 1
        state["sum"] = state.get("sum", 0) + n
        state["pair"] = [n, n]
        state[f"k{n % 7}"] = n
        state.pop(f"k{(n + 3) % 7}", None)
    if last:
        state["blob"] = blob_for(last)
    return state


@dataclass
class Round:
    mode: str  # spawn | boot | ready | acks | bytes
    target: int = 0  # acks to read ("acks") or bytes to read ("bytes") before the kill


@dataclass
class Seen:
    """What the parent read of one child's stdout."""

    lines: list[str] = field(default_factory=list)
    buffer: bytes = b""
    read: int = 0

    def feed(self, chunk: bytes) -> list[str]:
        self.read += len(chunk)
        self.buffer += chunk
        *complete, self.buffer = self.buffer.split(b"\n")
        new = [line.decode() for line in complete]
        self.lines += new
        return new

    @property
    def acks(self) -> list[int]:
        return [int(line.split()[1]) for line in self.lines if line.startswith("ack ")]

    def check_protocol(self, last: int, label: str) -> None:
        """``boot``, ``ready {last}``, then acks consecutive from ``last + 1``: the child
        found the stored history and continued it, one handler per event, in order."""
        acks = len(self.lines) - 2
        want = ["boot", f"ready {last}", *(f"ack {n}" for n in range(last + 1, last + 1 + acks))]
        if self.lines != want[: len(self.lines)]:
            bad = next(i for i, (a, b) in enumerate(zip(self.lines, want, strict=False)) if a != b)
            raise AssertionError(
                f"{label}: line {bad} of the child is {self.lines[bad]!r}, expected {want[bad]!r}"
            )
        assert self.buffer == b"", f"{label}: half a line in the pipe: {self.buffer!r}"


def make_plan(rng: random.Random) -> list[Round]:
    """Kills while starting (before the kernel, in the store's open, just after it) at fixed
    rounds, early and once history exists; the others after random acks or random bytes."""
    fixed = {0: Round("spawn"), 1: Round("boot"), 2: Round("ready")}
    fixed |= {11: Round("spawn"), 17: Round("boot"), 23: Round("ready")}
    plan = []
    for index in range(ROUNDS):
        if index in fixed:
            plan.append(fixed[index])
        elif rng.random() < 0.75:
            plan.append(Round("acks", rng.randint(1, MAX_ACKS)))
        else:
            plan.append(Round("bytes", rng.randint(1, MAX_BYTES)))
    return plan


def child_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("LOOMK_")}


async def run_and_kill(data_dir: Path, stderr_path: Path, plan: Round) -> tuple[Seen, int]:
    """Start the child, SIGKILL it where ``plan`` says, return all it printed and its status."""
    seen = Seen()
    with stderr_path.open("wb") as stderr:
        proc = await trio.lowlevel.open_process(
            [sys.executable, str(CHILD), str(data_dir)],
            stdout=subprocess.PIPE,
            stderr=stderr,
            env=child_env(),
        )
    assert proc.stdout is not None
    try:
        with trio.fail_after(ROUND_TIMEOUT_S):
            if plan.mode != "spawn":
                await _read_until_trigger(proc.stdout, seen, plan, stderr_path)
            os.kill(proc.pid, signal.SIGKILL)
            await proc.wait()
            while chunk := await proc.stdout.receive_some():  # what it printed before dying
                seen.feed(chunk)
    finally:
        if proc.returncode is None:  # timed out or failed: never leave the child behind
            proc.kill()
            with trio.CancelScope(shield=True):
                await proc.wait()
        await proc.stdout.aclose()
    assert proc.returncode is not None
    return seen, proc.returncode


async def _read_until_trigger(
    stdout: trio.abc.ReceiveStream, seen: Seen, plan: Round, stderr_path: Path
) -> None:
    acked = 0
    while True:
        max_bytes = plan.target - seen.read if plan.mode == "bytes" else 65536
        chunk = await stdout.receive_some(max_bytes)
        if not chunk:
            raise AssertionError(
                f"the child ended before the kill ({plan}); it printed {seen.lines[-5:]}, "
                f"stderr:\n{stderr_path.read_text()}"
            )
        for line in seen.feed(chunk):
            if plan.mode == "boot" and line == "boot":
                return
            if plan.mode == "ready" and line.startswith("ready "):
                return
            if plan.mode == "acks" and line.startswith("ack "):
                acked += 1
                if acked == plan.target:
                    return
        if plan.mode == "bytes" and seen.read >= plan.target:
            return


@dataclass(frozen=True)
class Stored:
    state: dict[str, Any]
    public: dict[str, Any]  # agent_state().persistent_state, decoded
    last_update_ms: int
    keys: list[bytes]


async def read_stored(data_dir: Path) -> Stored:
    """Open the data directory with a kernel in this process and read everything in it."""
    async with open_test_kernel(data_dir=data_dir, state_temporary=False) as kernel:
        snapshot = kernel.agent_state(AGENT_ID)
        return Stored(
            state=kernel.state.load(AGENT_ID),
            public=json.loads(snapshot.persistent_state),
            last_update_ms=snapshot.last_update_ms,
            keys=[key for key, _ in kernel.state.store.scan(b"")],
        )


def _short(value: Any) -> Any:
    return f"<{len(value)} bytes>" if isinstance(value, bytes) else value


def check_stored(stored: Stored, previous_last: int, acks: list[int], label: str) -> int:
    """Assert a consistent, complete state; returns its ``last``."""
    last = stored.state.get("last", 0)
    assert isinstance(last, int), f"{label}: last = {last!r}"
    assert last >= previous_last, f"{label}: stored history went back from {previous_last}"
    if acks:
        assert last >= max(acks), f"{label}: acked up to {max(acks)} but only {last} is stored"
    want = expected_state(last)
    if stored.state != want:
        wrong = {
            key: (_short(stored.state.get(key)), _short(want.get(key)))
            for key in sorted(stored.state.keys() | want.keys())
            if stored.state.get(key) != want.get(key)
        }
        raise AssertionError(
            f"{label}: the stored state is not that of {last} whole handlers; "
            f"(stored, expected) by key: {wrong}"
        )
    want_keys = sorted(f"a/{AGENT_ID}/s/{key}".encode() for key in want)
    if last:
        want_keys = sorted([*want_keys, f"a/{AGENT_ID}/meta".encode()])
    assert stored.keys == want_keys, f"{label}: unexpected keys in the store"
    assert stored.public.get("last", 0) == last
    assert stored.public.get("pair", [0, 0]) == [last, last]
    assert (stored.last_update_ms > 0) == (last > 0), f"{label}: {stored.last_update_ms}"
    return last


async def test_acknowledged_writes_survive_sigkill_and_no_handler_is_half_applied(
    tmp_path: Path,
) -> None:
    data_dir = tmp_path / "state"
    plan = make_plan(random.Random(SEED))
    last = 0
    total_acks = 0
    for index, round_plan in enumerate(plan):
        label = f"round {index} ({round_plan.mode} {round_plan.target}, seed {SEED})"
        stderr_path = tmp_path / f"child-{index}.stderr"
        seen, status = await run_and_kill(data_dir, stderr_path, round_plan)
        errors = stderr_path.read_text()
        assert status == -signal.SIGKILL, f"{label}: exit {status}: {errors}"
        assert errors == "", f"{label}: the child logged errors:\n{errors}"
        seen.check_protocol(last, label)
        acks = seen.acks
        if round_plan.mode == "acks":
            assert len(acks) >= round_plan.target

        with trio.fail_after(ROUND_TIMEOUT_S):
            stored = await read_stored(data_dir)
        last = check_stored(stored, last, acks, label)
        total_acks += len(acks)

    assert sum(r.target for r in plan if r.mode == "acks") <= total_acks <= last
