"""``loomk state check`` / ``loomk state repair`` (and ``check_store`` / ``repair_store``) on
real databases damaged on disk: a write-ahead log cut short, bytes flipped in the log or in a
table. The commands run as an operator runs them, in subprocesses.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from store_support import flip_bytes, running, the_log

from loomk import DataDirInUse, StoreError, check_store, repair_store
from loomk.state import Store

pytestmark = pytest.mark.e2e

COMMITS = 300


async def healthy_database(path: Path) -> None:
    """``COMMITS`` acknowledged commits, each of one new key."""
    async with running(path, sync=True) as store:
        for n in range(COMMITS):
            await store.commit({b"k%04d" % n: b"value %d " % n * 6})


async def log_cut_short(path: Path) -> None:
    await healthy_database(path)
    log = the_log(path)
    log.write_bytes(log.read_bytes()[: log.stat().st_size // 2])


async def log_garbled(path: Path) -> None:
    await healthy_database(path)
    log = the_log(path)
    flip_bytes(log, log.stat().st_size // 2)


async def table_garbled(path: Path) -> None:
    await healthy_database(path)
    Store.open(path).close_now()  # LevelDB moves its log into a table on opening
    (table,) = path.glob("*.ldb")
    flip_bytes(table, table.stat().st_size // 2)


def loomk_cli(*args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LOOMK_")}
    return subprocess.run(
        [sys.executable, "-m", "loomk.cli", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def readable_keys(path: Path) -> int:
    store = Store.open(path)
    try:
        return len(store.scan(b""))
    finally:
        store.close_now()


# --- check ----------------------------------------------------------------------------------


async def test_check_of_a_healthy_database(tmp_path: Path) -> None:
    path = tmp_path / "db"
    await healthy_database(path)
    check = check_store(path)
    assert check.healthy
    assert check.readable
    assert (check.keys, check.batches, check.acknowledged) == (COMMITS, COMMITS, COMMITS)
    assert check.path == path
    assert check.size_bytes > 0


@pytest.mark.parametrize(
    ("damage", "problem", "readable"),
    [
        (log_cut_short, "acknowledged commits are missing", True),
        (log_garbled, "it cannot be opened: Corruption: checksum mismatch", False),
        (table_garbled, "an entry cannot be read: Corruption: block checksum mismatch", False),
    ],
)
async def test_check_reports_the_damage(
    tmp_path: Path, damage: object, problem: str, readable: bool
) -> None:
    path = tmp_path / "db"
    await damage(path)  # type: ignore[operator]
    check = check_store(path)
    assert not check.healthy
    assert problem in check.problem
    assert check.readable is readable


async def test_check_refuses_a_database_in_use_and_a_directory_without_one(
    tmp_path: Path,
) -> None:
    path = tmp_path / "db"
    await healthy_database(path)
    store = Store.open(path)
    try:
        with pytest.raises(DataDirInUse, match="data directory in use"):
            check_store(path)
    finally:
        store.close_now()
    with pytest.raises(StoreError, match="no such directory"):
        check_store(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(StoreError, match="holds no LevelDB database"):
        check_store(tmp_path / "empty")


# --- repair ---------------------------------------------------------------------------------


async def test_repair_of_a_log_cut_short_accepts_the_loss_and_the_store_opens_again(
    tmp_path: Path,
) -> None:
    path = tmp_path / "db"
    await log_cut_short(path)
    with pytest.raises(StoreError, match="lost acknowledged commits"):
        Store.open(path)
    repair = repair_store(path)
    assert repair.repaired
    assert repair.after.healthy
    assert 0 < repair.lost_batches < COMMITS
    assert repair.after.batches == COMMITS - repair.lost_batches
    assert readable_keys(path) == repair.after.keys == repair.after.batches
    async with running(path, sync=True) as store:  # and it takes commits again
        await store.commit({b"after": b"repair"})


@pytest.mark.parametrize("damage", [log_garbled, table_garbled])
async def test_repair_of_garbled_data_keeps_what_can_be_read(
    tmp_path: Path, damage: object
) -> None:
    path = tmp_path / "db"
    await damage(path)  # type: ignore[operator]
    repair = repair_store(path)
    assert repair.repaired
    assert not repair.before.healthy
    assert repair.after.healthy, repair.after.problem
    assert 0 < readable_keys(path) < COMMITS  # what sat in the damaged block is gone
    assert (path / "lost").is_dir()  # LevelDB set the damaged files aside


async def test_repair_leaves_a_healthy_database_alone(tmp_path: Path) -> None:
    path = tmp_path / "db"
    await healthy_database(path)
    repair = repair_store(path)
    assert not repair.repaired
    assert repair.after.healthy
    assert not (path / "lost").exists()


async def test_repair_refuses_a_database_another_program_holds(tmp_path: Path) -> None:
    path = tmp_path / "db"
    await log_garbled(path)
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import fcntl, sys\n"  # LevelDB's own lock: fcntl on LOCK
            "lock = open(sys.argv[1] + '/LOCK', 'a')\n"
            "fcntl.lockf(lock, fcntl.LOCK_EX)\n"
            "print('ready', flush=True)\n"
            "sys.stdin.read()\n",
            str(path),
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert holder.stdin is not None
    assert holder.stdout is not None
    try:
        assert holder.stdout.readline().strip() == "ready"
        with pytest.raises(DataDirInUse, match="stop it before checking or repairing"):
            repair_store(path)
        assert not (path / "lost").exists()  # LevelDB's repair never ran
    finally:
        holder.stdin.close()
        assert holder.wait(timeout=60) == 0
        holder.stdout.close()


# --- the commands ---------------------------------------------------------------------------


async def test_the_state_commands_exit_codes_and_output(tmp_path: Path) -> None:
    path = tmp_path / "db"
    await table_garbled(path)

    damaged = loomk_cli("state", "check", str(path))
    assert damaged.returncode == 1, damaged.stderr
    assert damaged.stdout.startswith(f"damaged: {path}: an entry cannot be read: Corruption")
    assert f"loomk state repair {path}" in damaged.stdout

    repaired = loomk_cli("state", "repair", str(path))
    assert repaired.returncode == 0, repaired.stderr
    lines = repaired.stdout.splitlines()
    assert lines[0].startswith("was damaged: an entry cannot be read: Corruption")
    assert lines[1].startswith(f"repaired: {path}: ")

    healthy = loomk_cli("state", "check", str(path))
    assert healthy.returncode == 0, healthy.stderr
    assert healthy.stdout.startswith(f"ok: {path}: ")
    assert " keys, " in healthy.stdout

    again = loomk_cli("state", "repair", str(path))
    assert again.returncode == 0
    assert again.stdout.startswith(f"ok: {path}: nothing to repair")


async def test_the_state_commands_cannot_work_on_a_database_in_use_or_missing(
    tmp_path: Path,
) -> None:
    path = tmp_path / "db"
    await healthy_database(path)
    store = Store.open(path)  # this process holds it; the command runs in another
    try:
        for action in ("check", "repair"):
            held = loomk_cli("state", action, str(path))
            assert held.returncode == 2
            assert held.stderr.startswith(f"loomk: data directory in use: {path}")
            assert "Traceback" not in held.stderr
    finally:
        store.close_now()
    missing = loomk_cli("state", "check", str(tmp_path / "missing"))
    assert missing.returncode == 2
    assert "no loomk state in" in missing.stderr
