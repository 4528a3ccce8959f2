"""The durable store (``loomk.state.store.Store``) on a real LevelDB in ``tmp_path``.

Opening (directory creation, ``DataDirInUse``, corruption as ``StoreError``), durability
across close and reopen, atomic commits, group commit from many tasks, ``delete_prefix``,
closing, and where the write runs (``sync=True``: a worker thread; ``sync=False``: the trio
thread). Worker threads are made observable without mocks by holding every token of trio's
default thread limiter: a write that needs a thread then cannot start until they are released.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
import trio
import trio.testing
from store_support import running

from loomk import KernelClosed
from loomk.errors import DataDirInUse, StoreCorrupted, StoreError
from loomk.state import Store

settle = trio.testing.wait_all_tasks_blocked
WAIT_LIMIT_S = 5.0


def contents(path: Path) -> dict[bytes, bytes]:
    """Everything in the (closed) store at ``path``, read by a fresh open."""
    store = Store.open(path)
    try:
        return dict(store.scan(b""))
    finally:
        store.close_now()


@asynccontextmanager
async def threads_held() -> AsyncIterator[None]:
    """Hold every token of trio's default thread limiter: ``to_thread`` calls wait."""
    limiter = trio.to_thread.current_default_thread_limiter()
    borrowers = [object() for _ in range(int(limiter.total_tokens))]
    for borrower in borrowers:
        await limiter.acquire_on_behalf_of(borrower)
    try:
        yield
    finally:
        for borrower in borrowers:
            limiter.release_on_behalf_of(borrower)


# --- opening ----------------------------------------------------------------------------


def test_the_store_and_its_errors_are_exported_from_loomk() -> None:
    import loomk
    from loomk import errors

    assert loomk.Store is Store
    assert loomk.StoreError is StoreError
    assert getattr(loomk, "DataDirInUse", None) is errors.DataDirInUse  # in loomk.__all__
    missing = [name for name in loomk.__all__ if not hasattr(loomk, name)]
    assert missing == []  # so that ``from loomk import *`` works


def test_open_creates_the_directory_and_its_parents(tmp_path: Path) -> None:
    path = tmp_path / "deep" / "er" / "db"
    assert not path.exists()
    store = Store.open(path)
    try:
        assert path.is_dir()
        assert (path / "CURRENT").is_file()
        assert store.path == path
        assert store.get(b"missing") is None
        assert store.scan(b"") == []
        assert not store.closed
    finally:
        store.close_now()
    assert store.closed


def test_a_second_open_of_the_same_directory_is_refused_with_data_dir_in_use(
    tmp_path: Path,
) -> None:
    path = tmp_path / "db"
    first = Store.open(path)
    try:
        with pytest.raises(DataDirInUse) as caught:
            Store.open(path)
        message = str(caught.value)
        assert "data directory in use" in message
        assert str(path) in message
        assert isinstance(caught.value, StoreError)  # callers catching StoreError see it too
        assert caught.value.code == "DATA_DIR_IN_USE"
    finally:
        first.close_now()
    again = Store.open(path)  # released with the first store
    again.close_now()


def test_a_directory_held_by_another_process_is_refused_with_data_dir_in_use(
    tmp_path: Path,
) -> None:
    path = tmp_path / "db"
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, plyvel\n"
            "db = plyvel.DB(sys.argv[1], create_if_missing=True)\n"
            "print('ready', flush=True)\n"
            "sys.stdin.read()\n",
            str(path),
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None
        assert holder.stdout.readline().strip() == "ready"
        with pytest.raises(DataDirInUse) as caught:
            Store.open(path)
        assert "data directory in use" in str(caught.value)
        assert str(path) in str(caught.value)
    finally:
        assert holder.stdin is not None
        holder.stdin.close()
        assert holder.wait(timeout=WAIT_LIMIT_S) == 0
        assert holder.stdout is not None
        holder.stdout.close()
    Store.open(path).close_now()  # free again once the other process is gone


def _corrupt_current_without_newline(path: Path) -> None:
    (path / "CURRENT").write_bytes(b"garbage")


def _corrupt_current_pointing_nowhere(path: Path) -> None:
    (path / "CURRENT").write_bytes(b"MANIFEST-999999\n")


def _truncate_manifest(path: Path) -> None:
    manifest = next(path.glob("MANIFEST-*"))
    manifest.write_bytes(manifest.read_bytes()[:3])


def _garble_manifest(path: Path) -> None:
    manifest = next(path.glob("MANIFEST-*"))
    manifest.write_bytes(b"\xff" * max(64, manifest.stat().st_size))


@pytest.mark.parametrize(
    "corrupt",
    [
        _corrupt_current_without_newline,
        _corrupt_current_pointing_nowhere,
        _truncate_manifest,
        _garble_manifest,
    ],
)
async def test_a_corrupted_database_gives_store_error_naming_the_path_and_cause(
    tmp_path: Path, corrupt: Callable[[Path], None]
) -> None:
    path = tmp_path / "db"
    async with running(path) as store:
        await store.commit({b"k": b"v"})
    corrupt(path)
    with pytest.raises(StoreError) as caught:
        Store.open(path)
    error = caught.value
    assert not isinstance(error, DataDirInUse)
    message = str(error)
    assert str(path) in message
    assert "Corruption" in message  # LevelDB's own account of what is wrong
    assert error.__cause__ is not None  # the plyvel error is kept for debugging
    assert isinstance(error, StoreCorrupted)
    assert error.code == "STORE_CORRUPTED"
    assert f"loomk state repair {path}" in message  # and what an operator does about it


def test_a_path_that_is_a_file_gives_store_error_naming_the_path(tmp_path: Path) -> None:
    path = tmp_path / "not-a-dir"
    path.write_text("I am a file")
    with pytest.raises(StoreError) as caught:
        Store.open(path)
    assert str(path) in str(caught.value)
    assert not isinstance(caught.value, DataDirInUse)


# --- durability and atomicity -----------------------------------------------------------


@pytest.mark.parametrize("sync", [True, False])
async def test_committed_data_is_readable_after_close_and_reopen(
    tmp_path: Path, sync: bool
) -> None:
    path = tmp_path / "db"
    raw = bytes(range(256))
    async with running(path, sync=sync) as store:
        await store.commit({b"a/1": b"one", b"a/2": b"two", b"bin": raw, b"empty": b""})
        await store.commit({b"a/2": b"TWO"}, [b"a/1"])
        assert store.get(b"a/2") == b"TWO"  # readable at once, before the close
        assert store.get(b"a/1") is None
    assert store.closed
    assert contents(path) == {b"a/2": b"TWO", b"bin": raw, b"empty": b""}
    async with running(path, sync=sync) as again:  # and writable after the reopen
        await again.commit({b"later": b"yes"})
    assert contents(path)[b"later"] == b"yes"


async def test_a_commit_applies_its_puts_and_deletes_together(tmp_path: Path) -> None:
    path = tmp_path / "db"
    async with running(path) as store:
        await store.commit({b"p/old1": b"1", b"p/old2": b"2", b"p/keep": b"k"})
        await store.commit({b"p/new": b"n", b"p/keep": b"K"}, [b"p/old1", b"p/old2", b"p/none"])
        assert store.scan(b"p/") == [(b"p/keep", b"K"), (b"p/new", b"n")]
        stats = store.stats()
        assert stats.commits == 2
        assert stats.operations == 3 + 5


async def test_a_commit_that_fails_leaves_none_of_its_operations_behind(tmp_path: Path) -> None:
    """Not acknowledged means wholly absent (store docstring): no half-applied commit."""
    path = tmp_path / "db"
    async with running(path) as store:
        await store.commit({b"existing": b"old"})
        with pytest.raises((StoreError, TypeError)):
            await store.commit(
                {b"first": b"written?", b"second": 5},  # type: ignore[dict-item]
                [b"existing"],
            )
        assert store.get(b"first") is None
        assert store.get(b"existing") == b"old"
    assert contents(path) == {b"existing": b"old"}


async def test_a_commit_grouped_with_a_failing_one_is_acknowledged_if_and_only_if_written(
    tmp_path: Path,
) -> None:
    """An innocent commit that shares a batch with a bad one must not be half-reported:
    either it is acknowledged and durable, or it fails and is absent."""
    path = tmp_path / "db"
    outcome: dict[str, str] = {}

    async def attempt(name: str, puts: dict[bytes, Any]) -> None:
        try:
            await store.commit(puts)
        except (StoreError, TypeError):
            outcome[name] = "failed"
        else:
            outcome[name] = "acknowledged"

    with trio.fail_after(WAIT_LIMIT_S):
        async with (
            running(path, sync=True) as store,
            trio.open_nursery() as nursery,  # leaving it waits for the three outcomes
            threads_held(),  # released first, on the way out
        ):
            nursery.start_soon(attempt, "first", {b"first": b"1"})
            await settle()  # the writer took "first" and waits for a thread
            nursery.start_soon(attempt, "innocent", {b"innocent": b"1"})
            await settle()
            nursery.start_soon(attempt, "bad", {b"bad": 5})  # not bytes: the write fails
            await settle()  # "innocent" and "bad" now wait together for the next batch
    assert outcome["first"] == "acknowledged"
    assert outcome["bad"] == "failed"
    stored = contents(path)
    assert b"bad" not in stored
    written = b"innocent" in stored
    assert outcome["innocent"] == ("acknowledged" if written else "failed"), (outcome, stored)


class _DiskFailsOnce(Store):
    """A store whose first batch write fails as a dying disk's would (the one fault a real
    LevelDB cannot be made to show on demand here)."""

    failed = False

    def _write_batch(self, generation: Any) -> None:
        if not self.failed:
            self.failed = True
            raise OSError("I/O error")
        super()._write_batch(generation)


async def test_after_a_failed_write_the_store_refuses_everything_later(tmp_path: Path) -> None:
    """Fail-stop: once a batch failed, no later commit is written, so none is ever durable
    while one submitted before it is lost."""
    path = tmp_path / "db"
    store = _DiskFailsOnce.open(path)
    outcome: dict[str, str] = {}

    async def attempt(name: str) -> None:
        try:
            await store.commit({name.encode(): b"1"})
        except StoreError as error:
            outcome[name] = f"failed: {error.__cause__!r}"
        else:
            outcome[name] = "acknowledged"

    async with trio.open_nursery() as nursery:
        await nursery.start(store.run)
        async with trio.open_nursery() as callers:
            callers.start_soon(attempt, "first")  # its batch fails
            await settle()
            callers.start_soon(attempt, "queued")  # already waiting for the next batch
        with pytest.raises(StoreError, match="I/O error"):
            store.submit({b"later": b"1"})
        await store.aclose()
    assert outcome == {
        "first": "failed: OSError('I/O error')",
        "queued": "failed: OSError('I/O error')",
    }
    assert contents(path) == {}


# --- group commit -----------------------------------------------------------------------


@pytest.mark.parametrize("sync", [True, False])
async def test_concurrent_commits_from_many_tasks_share_batches_and_all_become_durable(
    tmp_path: Path, sync: bool
) -> None:
    path = tmp_path / "db"
    tasks = 200
    async with running(path, sync=sync) as store:
        async with trio.open_nursery() as nursery:
            for i in range(tasks):
                puts = {f"k/{i:03d}".encode(): str(i).encode(), f"m/{i:03d}".encode(): b"x"}
                nursery.start_soon(store.commit, puts, [f"gone/{i}".encode()])
        stats = store.stats()
        assert stats.commits == tasks
        assert 1 <= stats.batches < stats.commits
        assert stats.operations == tasks * 3
    stored = contents(path)
    assert len(stored) == tasks * 2
    assert all(stored[f"k/{i:03d}".encode()] == str(i).encode() for i in range(tasks))


async def test_a_backlog_over_the_batch_limit_is_split_into_batches_written_in_order(
    tmp_path: Path,
) -> None:
    path = tmp_path / "db"

    async def commit(i: int, size: int) -> None:
        puts = {f"bulk/{i}/{j:05d}".encode(): b"v" for j in range(size)}
        puts[b"last" if size else b"tail"] = str(i).encode()
        await store.commit(puts)

    async with running(path, sync=True) as store:
        async with trio.open_nursery() as nursery, threads_held():
            nursery.start_soon(commit, 0, 6000)
            await settle()  # commit 0 is being written (waiting for a thread)
            for i in (1, 2, 3, 4):
                nursery.start_soon(commit, i, 6000)
                await settle()  # pending in this order: 24k operations, over two batches
            nursery.start_soon(commit, 5, 0)
            await settle()
            assert store.stats().commits == 0  # nothing acknowledged while no thread ran
            # leaving the nursery waits for every commit, now that threads are free
        stats = store.stats()
        assert stats.commits == 6
        assert stats.batches >= 3
        assert store.get(b"last") == b"4"  # the batches went in commit order
        assert store.get(b"tail") == b"5"
    assert len(contents(path)) == 5 * 6000 + 2


# --- where the write runs -----------------------------------------------------------------


async def test_sync_commits_are_written_in_a_worker_thread(tmp_path: Path) -> None:
    path = tmp_path / "db"
    done = trio.Event()

    async def commit() -> None:
        await store.commit({b"k": b"v"})
        done.set()

    async with running(path, sync=True) as store:
        assert store.sync
        async with trio.open_nursery() as nursery, threads_held():
            nursery.start_soon(commit)
            await settle()
            # no thread available: the write cannot happen, the commit is not acknowledged
            assert not done.is_set()
            assert store.get(b"k") is None
            limiter = trio.to_thread.current_default_thread_limiter()
            assert limiter.statistics().tasks_waiting == 1
        assert done.is_set()
        assert store.get(b"k") == b"v"
    assert contents(path) == {b"k": b"v"}


async def test_unsynced_commits_are_written_on_the_trio_thread(tmp_path: Path) -> None:
    path = tmp_path / "db"
    async with running(path, sync=False) as store:
        assert not store.sync
        async with threads_held():
            with trio.fail_after(WAIT_LIMIT_S):
                await store.commit({b"k": b"v"})  # needs no thread
            assert store.get(b"k") == b"v"
    assert contents(path) == {b"k": b"v"}


async def test_scan_in_thread_returns_what_scan_returns(tmp_path: Path) -> None:
    async with running(tmp_path / "db") as store:
        await store.commit({b"p/2": b"b", b"p/1": b"a", b"q/1": b"c", b"p": b"no"})
        expected = [(b"p/1", b"a"), (b"p/2", b"b")]
        assert store.scan(b"p/") == expected
        assert await store.scan_in_thread(b"p/") == expected
        assert await store.scan_in_thread(b"none/") == []


# --- delete_prefix ----------------------------------------------------------------------


async def test_delete_prefix_deletes_that_prefix_only_and_returns_the_count(
    tmp_path: Path,
) -> None:
    path = tmp_path / "db"
    async with running(path) as store:
        await store.commit(
            {
                b"a/x/1": b"1",
                b"a/x/2": b"2",
                b"a/x/s/deep": b"3",
                b"a/xy/1": b"other agent",
                b"a/x": b"no slash",
                b"b/x/1": b"other prefix",
            }
        )
        assert await store.delete_prefix(b"a/x/") == 3
        assert store.scan(b"a/x/") == []
        commits = store.stats().commits
        assert await store.delete_prefix(b"a/x/") == 0
        assert store.stats().commits == commits  # nothing to delete: no empty commit
    assert contents(path) == {
        b"a/xy/1": b"other agent",
        b"a/x": b"no slash",
        b"b/x/1": b"other prefix",
    }


# --- closing ----------------------------------------------------------------------------


async def test_after_aclose_commits_and_reads_raise_kernel_closed(tmp_path: Path) -> None:
    async with running(tmp_path / "db") as store:
        await store.commit({b"k": b"v"})
    assert store.closed
    with trio.fail_after(WAIT_LIMIT_S):  # refused at once, never left waiting
        with pytest.raises(KernelClosed):
            await store.commit({b"k": b"w"})
        with pytest.raises(KernelClosed):
            await store.commit({}, [b"k"])
    with pytest.raises(KernelClosed):
        store.get(b"k")
    with pytest.raises(KernelClosed):
        store.scan(b"")
    with pytest.raises(KernelClosed):
        await store.delete_prefix(b"")
    await store.aclose()  # idempotent
    assert contents(tmp_path / "db") == {b"k": b"v"}


async def test_aclose_writes_the_pending_commits_before_closing(tmp_path: Path) -> None:
    path = tmp_path / "db"
    acknowledged: list[int] = []
    closed = trio.Event()

    async def commit(i: int) -> None:
        await store.commit({f"k{i}".encode(): b"v"})
        acknowledged.append(i)

    async def close() -> None:
        await store.aclose()
        closed.set()

    store = Store.open(path, sync=True)
    async with trio.open_nursery() as nursery:
        await nursery.start(store.run)
        async with threads_held():
            for i in range(5):
                nursery.start_soon(commit, i)
            await settle()
            nursery.start_soon(close)
            await settle()
            assert acknowledged == []
            assert not closed.is_set()  # waiting for the pending commits
            with trio.fail_after(WAIT_LIMIT_S), pytest.raises(KernelClosed):  # closing: refused
                await store.commit({b"late": b"v"})
        with trio.fail_after(WAIT_LIMIT_S):
            await closed.wait()
    assert sorted(acknowledged) == [0, 1, 2, 3, 4]
    assert contents(path) == {f"k{i}".encode(): b"v" for i in range(5)}
