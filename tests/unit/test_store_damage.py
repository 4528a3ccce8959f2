"""A real LevelDB damaged on disk: every failure is a typed error naming the path.

The damage is done to the files themselves, as a failing disk or a careless copy would: a
write-ahead log cut short after its commits were acknowledged, bytes flipped in the log or in
a table (``.ldb``), a watermark file overwritten. Before this change the store opened a cut
or garbled log silently without the commits it held, and reads of a damaged table raised
plyvel's own exceptions.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import trio
from store_support import flip_bytes, running, the_log

from loomk.errors import StoreCorrupted, StoreError
from loomk.state import Store

WATERMARK = "LOOMK-WATERMARK"


async def write_commits(path: Path, count: int, *, sync: bool = True) -> None:
    """``count`` acknowledged commits, one after another (each its own batch)."""
    async with running(path, sync=sync) as store:
        for n in range(count):
            await store.commit({b"n": b"%d" % n, b"k%04d" % n: b"v" * 40})


def into_a_table(path: Path) -> Path:
    """Reopen the database so that LevelDB moves its log into a table; that table."""
    Store.open(path).close_now()
    (table,) = path.glob("*.ldb")
    return table


# --- the write-ahead log ------------------------------------------------------------------


@pytest.mark.parametrize("sync", [True, False])
async def test_a_log_cut_short_after_acknowledged_commits_is_refused_not_opened_without_them(
    tmp_path: Path, sync: bool
) -> None:
    path = tmp_path / "db"
    await write_commits(path, 200, sync=sync)
    log = the_log(path)
    log.write_bytes(log.read_bytes()[: log.stat().st_size // 3])
    with pytest.raises(StoreCorrupted) as caught:
        Store.open(path)
    message = str(caught.value)
    assert str(path) in message
    assert "lost acknowledged commits" in message
    assert "but 200 were acknowledged" in message
    assert f"loomk state repair {path}" in message


async def test_a_refused_store_leaves_the_directory_unlocked(tmp_path: Path) -> None:
    path = tmp_path / "db"
    await write_commits(path, 50)
    log = the_log(path)
    log.write_bytes(log.read_bytes()[:100])
    for _ in range(2):  # the failed open released LevelDB's lock: the same error again
        with pytest.raises(StoreCorrupted, match="lost acknowledged commits"):
            Store.open(path)


async def test_bytes_flipped_in_the_log_are_reported_not_skipped(tmp_path: Path) -> None:
    path = tmp_path / "db"
    await write_commits(path, 200)
    log = the_log(path)
    flip_bytes(log, log.stat().st_size // 2)
    with pytest.raises(StoreCorrupted) as caught:
        Store.open(path)
    message = str(caught.value)
    assert str(path) in message
    assert "checksum mismatch" in message  # LevelDB's paranoid check of the log
    assert caught.value.__cause__ is not None


async def test_a_crash_leaves_the_watermark_behind_the_database_never_ahead(
    tmp_path: Path,
) -> None:
    """A store that was not closed (its process died) opens normally: the watermark only
    moves after what it counts is durable."""
    path = tmp_path / "db"
    store = Store.open(path, sync=True)
    async with trio.open_nursery() as nursery:
        await nursery.start(store.run)
        for n in range(20):
            await store.commit({b"n": b"%d" % n})
        nursery.cancel_scope.cancel()  # the writer dies with nothing pending
    store.close_now()  # as the OS would on exit: no flush, no final watermark
    assert int((path / WATERMARK).read_bytes()) == 20
    again = Store.open(path)
    try:
        assert again.get(b"n") == b"19"
    finally:
        again.close_now()


async def test_an_unsynced_store_acknowledges_on_the_watermark_when_it_closes(
    tmp_path: Path,
) -> None:
    path = tmp_path / "db"
    async with running(path, sync=False) as store:
        for n in range(5):
            await store.commit({b"n": b"%d" % n})
        assert (path / WATERMARK).read_bytes() == b""  # not durable yet: not counted
    assert int((path / WATERMARK).read_bytes()) == 5


async def test_a_database_without_a_watermark_opens_and_gets_one(tmp_path: Path) -> None:
    """Databases written before the watermark existed (or with it removed) still open."""
    path = tmp_path / "db"
    await write_commits(path, 3)
    (path / WATERMARK).unlink()
    async with running(path, sync=True) as store:
        assert store.get(b"n") == b"2"
        await store.commit({b"n": b"3"})
    assert int((path / WATERMARK).read_bytes()) == 4


async def test_an_unreadable_watermark_is_reported_with_the_way_out(tmp_path: Path) -> None:
    path = tmp_path / "db"
    await write_commits(path, 3)
    (path / WATERMARK).write_bytes(b"not a number")
    with pytest.raises(StoreCorrupted) as caught:
        Store.open(path)
    assert str(path / WATERMARK) in str(caught.value)
    assert f"loomk state repair {path}" in str(caught.value)


async def test_the_stores_own_count_is_left_out_of_scans(tmp_path: Path) -> None:
    path = tmp_path / "db"
    async with running(path, sync=True) as store:
        await store.commit({b"a": b"1"})
        assert store.scan(b"") == [(b"a", b"1")]
        assert await store.delete_prefix(b"") == 1  # and out of deletions
        assert store.scan(b"") == []


# --- tables -------------------------------------------------------------------------------


async def damaged_table(path: Path) -> None:
    """A database whose one table has bytes flipped inside its data."""
    async with running(path, sync=True) as store:
        await store.commit({b"a/%04d" % n: b"value %d " % n * 8 for n in range(2000)})
    table = into_a_table(path)
    flip_bytes(table, table.stat().st_size // 3)


async def test_reads_of_a_damaged_table_raise_store_corrupted_naming_the_path(
    tmp_path: Path,
) -> None:
    path = tmp_path / "db"
    await damaged_table(path)
    store = Store.open(path)  # LevelDB reads tables only when asked for their data
    try:
        with pytest.raises(StoreCorrupted) as caught:
            store.scan(b"a/")
        message = str(caught.value)
        assert str(path) in message
        assert "reading it" in message
        assert f"loomk state check {path}" in message
        with pytest.raises(StoreCorrupted):
            await store.scan_in_thread(b"")
        failures = 0
        for n in range(2000):  # some keys sit in the damaged block, the rest read fine
            try:
                store.get(b"a/%04d" % n)
            except StoreCorrupted:
                failures += 1
        assert 0 < failures < 2000
    finally:
        store.close_now()


def test_no_plyvel_exception_escapes_the_stores_public_methods(tmp_path: Path) -> None:
    """StoreError (and its subclasses) is all a caller needs to catch."""
    path = tmp_path / "not-a-dir"
    path.write_text("a file")
    with pytest.raises(StoreError) as caught:
        Store.open(path)
    assert not isinstance(caught.value, StoreCorrupted)
    assert str(path) in str(caught.value)
