"""The kernel's durable store: one LevelDB database (plyvel) per data directory.

Writes are group-committed: every caller of :meth:`Store.commit` hands over its operations
and waits; one writer task folds all pending operations into a single ``WriteBatch`` and
acknowledges them together once it is written. With ``sync`` on (the default) that batch is
fsync'd in a worker thread, one thread crossing per batch however many writes it carries;
with ``sync`` off a small batch is written on the trio thread and a big one in a worker
thread, where LevelDB works without the GIL while agents go on.
A commit that was acknowledged survives a crash of the process (with ``sync``, of the
machine too); one that was not is either wholly there or wholly absent.

The database is opened with LevelDB's paranoid checks (a damaged log or manifest is
reported, not skipped) and read with checksums verified. Every failure is a typed
:class:`~loomk.errors.StoreError` naming the path (see :mod:`loomk.state._errors`); acknowledged
commits lost from a truncated log are caught by the watermark (:mod:`loomk.state._watermark`).
Keys starting with ``\x00`` are the store's own bookkeeping: scans leave them out.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from time import perf_counter
from typing import Any

import plyvel
import trio

from loomk.errors import KernelClosed, StoreCorrupted, StoreError
from loomk.state import _watermark
from loomk.state._errors import repair_hint, store_error
from loomk.telemetry.metrics import Histogram, HistogramSnapshot

__all__ = ["Store", "StoreStats", "Ticket"]

_MAX_BATCH_OPS = 10_000  # a bigger backlog is written as several batches, in order
# Unsynced batches at least this big are written in a worker thread: LevelDB's write runs
# without the GIL there (~1 µs per operation), which outweighs the ~160 µs thread crossing.
_THREAD_BATCH_OPS = 256


@dataclass(frozen=True, slots=True)
class StoreStats:
    """What the store has written."""

    commits: int
    batches: int
    operations: int
    commit_latency: HistogramSnapshot = field(default_factory=lambda: Histogram().snapshot())
    """Seconds from a batch's first commit to its acknowledgement (the longest wait of
    any commit in it), one observation per batch written."""


class _Generation:
    """The commits that will be written in one batch, and the event that acknowledges them.

    Each commit goes into the LevelDB write batch as it is submitted (on the trio thread),
    so writing it is one call that runs without the GIL; sharing one event per batch keeps
    a commit as cheap as filling the batch.
    """

    __slots__ = ("batch", "commits", "done", "error", "first", "size")

    def __init__(self, batch: Any) -> None:
        self.batch = batch  # a plyvel WriteBatch
        self.first = 0.0  # when its first commit came (perf_counter)
        self.commits = 0
        self.size = 0
        self.done = trio.Event()
        self.error: BaseException | None = None


Ticket = _Generation
"""What :meth:`Store.submit` returns: the batch a commit will be written in."""


class Store:
    """A LevelDB database with a group-committing writer. Use :meth:`open`, then run
    :meth:`run` in a nursery for the writer, and :meth:`aclose` at the end."""

    def __init__(
        self,
        db: plyvel.DB,
        path: Path,
        *,
        sync: bool,
        count: int = 0,
        watermark: _watermark.Watermark | None = None,
    ) -> None:
        self._db = db
        self.path = path
        self.sync = sync
        self._count = count  # batches the database holds (its COUNT_KEY)
        self._opened_at = count
        self._watermark = watermark
        self._open = self._new_generation()  # what commits join now
        self._sealed: list[_Generation] = []  # full generations waiting for the writer
        self._wakeup = trio.Event()
        self._closing = False
        self._closed = False
        self._stopped = trio.Event()
        self._commits = 0
        self._commit_latency = Histogram()
        self._batches = 0
        self._operations = 0
        # The first write error: later commits fail too, so a commit is never durable
        # while one submitted before it is lost.
        self._failure: Exception | None = None

    @classmethod
    def open(cls, path: Path, *, sync: bool = True, watermark: bool = True) -> Store:
        """Open (creating if needed) the database in ``path``, and lock it.

        Raises :class:`~loomk.errors.DataDirInUse` when another kernel holds it,
        :class:`~loomk.errors.StoreCorrupted` when it is damaged (including acknowledged
        commits missing, see :mod:`loomk.state._watermark`) and :class:`StoreError` when it
        cannot be opened otherwise; each names the path and the cause. ``watermark=False``
        counts nothing and keeps no watermark file, for a throw-away directory (one already
        there is still checked).
        """
        path = Path(path)
        try:
            path.mkdir(parents=True, exist_ok=True)
            db = plyvel.DB(str(path), create_if_missing=True, paranoid_checks=True)
        except (plyvel.Error, OSError) as error:
            raise store_error(path, "opening", error) from error
        try:
            count = _watermark.decode_count(db.get(_watermark.COUNT_KEY, verify_checksums=True))
            mark = _watermark.read(path)
            if mark is not None and count < mark:
                raise StoreCorrupted(
                    f"the store in {path} lost acknowledged commits: it holds {count} write "
                    f"batches but {mark} were acknowledged (its write-ahead log was cut short "
                    f"or lost); {repair_hint(path)}, accepting the loss"
                )
            tracker = _watermark.Watermark.open(path) if watermark else None
        except BaseException as error:
            db.close()
            if isinstance(error, plyvel.Error | OSError):
                raise store_error(path, "opening", error) from error
            if isinstance(error, ValueError):  # the count itself is damaged
                raise StoreCorrupted(
                    f"the store in {path} is corrupted (its count of write batches is "
                    f"unreadable); {repair_hint(path)}"
                ) from error
            raise
        return cls(db, path, sync=sync, count=count, watermark=tracker)

    # ---- reading (synchronous: LevelDB reads take microseconds) -------------------------

    def get(self, key: bytes) -> bytes | None:
        """The value under ``key``, or None."""
        self._check_open()
        try:
            value: bytes | None = self._db.get(key, verify_checksums=True)
        except plyvel.Error as error:
            raise store_error(self.path, "reading", error) from error
        return value

    def scan(self, prefix: bytes) -> list[tuple[bytes, bytes]]:
        """Every (key, value) whose key starts with ``prefix``, in key order (the store's
        own keys, which start with ``\x00``, left out)."""
        self._check_open()
        try:
            items = list(self._db.iterator(prefix=prefix, verify_checksums=True))
        except plyvel.Error as error:
            raise store_error(self.path, "reading", error) from error
        if prefix[:1] in (b"", b"\x00"):
            items = [item for item in items if item[0][:1] != b"\x00"]
        return items

    async def scan_in_thread(self, prefix: bytes) -> list[tuple[bytes, bytes]]:
        """:meth:`scan` in a worker thread, for prefixes that may hold many keys."""
        self._check_open()
        return await trio.to_thread.run_sync(self.scan, prefix)

    # ---- writing ------------------------------------------------------------------------

    async def commit(self, puts: Mapping[bytes, bytes], deletes: Iterable[bytes] = ()) -> None:
        """Write ``puts`` and ``deletes`` atomically; returns once they are durable.

        Cancelling the wait does not withdraw the commit: it may still be written.
        """
        await self.acknowledged(self.submit(puts, deletes))

    def submit(self, puts: Mapping[bytes, bytes], deletes: Iterable[bytes] = ()) -> Ticket:
        """Queue an atomic commit without waiting; :meth:`acknowledged` waits for it.

        Commits are written in the order they are submitted, so a later one is never
        durable without every earlier one.
        """
        if self._closing:
            raise KernelClosed(f"the store in {self.path} is closed")
        if self._failure is not None:
            raise self._failed(self._failure)
        deletes = tuple(deletes)
        _check_operations(self.path, puts, deletes)  # all of it, before any joins the batch
        generation = self._open
        if generation.size >= _MAX_BATCH_OPS:  # full: the next batch takes the rest
            generation = self._open = self._seal_and_open()
        batch = generation.batch
        for key in deletes:
            batch.delete(key)
        for key, value in puts.items():
            batch.put(key, value)
        if not generation.commits:
            generation.first = perf_counter()
        generation.commits += 1
        generation.size += len(puts) + len(deletes)
        self._wakeup.set()
        return generation

    async def acknowledged(self, ticket: Ticket) -> None:
        """Wait until the commit of ``ticket`` is durable; :class:`StoreError` if it failed."""
        await ticket.done.wait()
        if ticket.error is not None:
            raise self._failed(ticket.error)

    def _failed(self, error: BaseException) -> StoreError:
        return store_error(self.path, "writing to", error)

    async def delete_prefix(self, prefix: bytes) -> int:
        """Delete every key starting with ``prefix`` in one commit; returns how many went."""
        keys = [key for key, _ in await self.scan_in_thread(prefix)]
        if keys:
            await self.commit({}, keys)
        return len(keys)

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """The writer: group-commit what is pending until :meth:`aclose` (then flush)."""
        task_status.started()
        try:
            while True:
                if self._sealed:
                    await self._write(self._sealed.pop(0))
                elif self._open.commits:
                    generation, self._open = self._open, self._new_generation()
                    await self._write(generation)
                elif self._closing:
                    return
                else:
                    await self._wakeup.wait()
                    self._wakeup = trio.Event()
        finally:
            self._stopped.set()

    def _new_generation(self) -> _Generation:
        return _Generation(self._db.write_batch(sync=self.sync))

    def _seal_and_open(self) -> _Generation:
        self._sealed.append(self._open)
        return self._new_generation()

    async def _write(self, generation: _Generation) -> None:
        try:
            if self._failure is not None:  # fail-stop: nothing after a failed batch
                raise self._failure
            if self.sync or generation.size >= _THREAD_BATCH_OPS:
                await trio.to_thread.run_sync(self._write_batch, generation)
            else:
                self._write_batch(generation)
        except Exception as error:  # every waiter gets it, as a StoreError
            generation.error = error
            self._failure = error
        else:
            self._commits += generation.commits
            self._batches += 1
            self._operations += generation.size
            if generation.commits:
                self._commit_latency.observe(perf_counter() - generation.first)
        generation.done.set()

    def _write_batch(self, generation: _Generation) -> None:
        """Write the batch: atomic in LevelDB, fsync'd when the store syncs (set on it).

        With a watermark, a synced batch also carries the database's new count of batches
        and is then acknowledged on the watermark; unsynced batches are counted in memory,
        and the count is written once, synced, when the store closes.
        """
        watermark = self._watermark
        if watermark is None:
            generation.batch.write()
            return
        count = self._count + 1
        if self.sync:
            generation.batch.put(_watermark.COUNT_KEY, _watermark.encode_count(count))
            generation.batch.write()
            watermark.advance(count)
        else:
            generation.batch.write()
        self._count = count

    # ---- lifecycle ----------------------------------------------------------------------

    @property
    def closed(self) -> bool:
        """True once :meth:`aclose` has finished."""
        return self._closed

    def stats(self) -> StoreStats:
        """Counts of what was written."""
        return StoreStats(
            self._commits, self._batches, self._operations, self._commit_latency.snapshot()
        )

    async def aclose(self) -> None:
        """Refuse new commits, let the writer flush what is pending, close the database.

        Run it while the writer task is still running (the kernel does).
        """
        if self._closed:
            return
        self._closing = True
        self._wakeup.set()
        await self._stopped.wait()
        for generation in [*self._sealed, self._open]:  # the writer is gone: none written
            if generation.commits:
                generation.error = KernelClosed("the store closed before this was written")
                generation.done.set()
        self._sealed.clear()
        try:
            unsynced = self._count > self._opened_at and not self.sync
            if unsynced and self._watermark is not None and self._failure is None:
                await trio.to_thread.run_sync(self._acknowledge_all, self._watermark)
        finally:
            self.close_now()

    def _acknowledge_all(self, watermark: _watermark.Watermark) -> None:
        """Make every batch written durable, then say so on the watermark: unsynced batches
        were acknowledged to their callers without an fsync, closing makes them durable.
        (Synced ones moved the watermark as they were written.)"""
        try:
            key, count = _watermark.COUNT_KEY, _watermark.encode_count(self._count)
            self._db.put(key, count, sync=True)  # fsyncs the log, and all written before
            watermark.advance(self._count)
        except (plyvel.Error, OSError) as error:
            raise store_error(self.path, "writing to", error) from error

    def close_now(self) -> None:
        """Close the database without flushing (the writer must be gone)."""
        if not self._closed:
            self._closed = True
            try:
                if self._watermark is not None:
                    self._watermark.close()
            finally:
                self._db.close()

    def _check_open(self) -> None:
        if self._closed:
            raise KernelClosed(f"the store in {self.path} is closed")


def _check_operations(path: Path, puts: Mapping[bytes, bytes], deletes: tuple[bytes, ...]) -> None:
    """Refuse a malformed commit before it joins a batch (it would fail the others too)."""
    for key, value in puts.items():
        if key.__class__ is not bytes or value.__class__ is not bytes:
            raise StoreError(
                f"a commit to the store in {path} was refused: keys and values are bytes, "
                f"got {key!r}: {type(value).__name__}"
            )
    for key in deletes:
        if key.__class__ is not bytes:
            raise StoreError(
                f"a commit to the store in {path} was refused: keys are bytes, got {key!r}"
            )
