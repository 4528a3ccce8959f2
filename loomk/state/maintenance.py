"""For operators: check a data directory's database, and repair a damaged one.

``loomk state check DATA_DIR`` and ``loomk state repair DATA_DIR`` run these. Both need the
directory to themselves: a kernel using it makes them fail with
:class:`~loomk.errors.DataDirInUse` (LevelDB's repair does not take the lock itself, so
:func:`repair_store` holds it while LevelDB works).

- :func:`check_store` opens the database as a kernel would (paranoid checks, so a damaged
  log or manifest is reported), reads every entry with its checksum verified, and compares
  the database's count of write batches with the watermark of acknowledged ones (see
  :mod:`loomk.state._watermark`), which catches a log cut short. Opening lets LevelDB fold
  its log into a table, as every kernel start does.
- :func:`repair_store` first lets LevelDB's own recovery move the log into a table (it
  checks every record and skips damaged ones, which LevelDB's repair would keep unchecked),
  then runs LevelDB's repair (``plyvel.repair_db``): it rebuilds the manifest from the files
  it finds, keeps every entry it can read and sets damaged files aside in ``DATA_DIR/lost``.
  What could not be saved is accepted as lost: the watermark is set to what the database
  holds, so kernels open it again.
"""

from __future__ import annotations

import fcntl
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import plyvel

from loomk.errors import DataDirInUse, StoreCorrupted, StoreError
from loomk.state import _watermark
from loomk.state._errors import describe, store_error

__all__ = ["StoreCheck", "StoreRepair", "check_store", "repair_store"]

_LEVELDB_FILES = ("CURRENT", "MANIFEST-*", "*.log", "*.ldb", "*.sst")


@dataclass(frozen=True, slots=True)
class StoreCheck:
    """What :func:`check_store` found in one data directory."""

    path: Path
    problem: str
    """What is wrong, for people; empty when the database is healthy."""
    keys: int
    """Entries read (up to the damage, if any), the store's own bookkeeping left out."""
    size_bytes: int
    """The size of the database's files."""
    batches: int
    """Write batches the database holds (its own count)."""
    acknowledged: int | None
    """Write batches acknowledged as durable (the watermark), if it has one."""
    readable: bool
    """Whether the database opened and every entry read back intact (it may still miss
    acknowledged commits)."""

    @property
    def healthy(self) -> bool:
        """Whether the database opened, every entry read back intact and no acknowledged
        commit is missing."""
        return not self.problem


@dataclass(frozen=True, slots=True)
class StoreRepair:
    """What :func:`repair_store` did to one data directory."""

    path: Path
    before: StoreCheck
    after: StoreCheck
    repaired: bool
    """Whether LevelDB's repair ran (a healthy database is left alone)."""
    lost_batches: int
    """Acknowledged write batches the repaired database does not account for."""


def check_store(path: str | os.PathLike[str]) -> StoreCheck:
    """Check the database in ``path``; damage is reported in the result, not raised.

    Raises :class:`~loomk.errors.DataDirInUse` if a kernel holds it and
    :class:`~loomk.errors.StoreError` if ``path`` holds no database or cannot be read.
    """
    path = _existing_database(Path(path).absolute())
    try:
        mark = _watermark.read(path)
    except StoreCorrupted as error:
        mark, unreadable_mark = None, str(error)
    else:
        unreadable_mark = ""

    def found(problem: str, keys: int = 0, batches: int = 0, readable: bool = False) -> StoreCheck:
        problem = problem or unreadable_mark
        return StoreCheck(path, problem, keys, _size(path), batches, mark, readable)

    if not (path / "CURRENT").is_file():
        return found("its CURRENT file is missing")
    try:
        db = plyvel.DB(str(path), create_if_missing=False, paranoid_checks=True)
    except plyvel.CorruptionError as error:
        return found(f"it cannot be opened: {describe(error)}")
    except (plyvel.Error, OSError) as error:
        raise _opening_failed(path, error) from error
    keys = 0
    try:
        batches = _watermark.decode_count(db.get(_watermark.COUNT_KEY, verify_checksums=True))
        for key, _value in db.iterator(verify_checksums=True, fill_cache=False):
            if key[:1] != b"\x00":
                keys += 1
    except plyvel.CorruptionError as error:
        return found(f"an entry cannot be read: {describe(error)}", keys)
    except ValueError:
        return found("its count of write batches is unreadable", keys)
    except plyvel.Error as error:
        raise store_error(path, "reading", error) from error
    finally:
        db.close()
    if mark is not None and batches < mark:
        return found(
            f"acknowledged commits are missing: it holds {batches} write batches but "
            f"{mark} were acknowledged (its write-ahead log was cut short or lost)",
            keys,
            batches,
            readable=True,
        )
    return found("", keys, batches, readable=True)


def repair_store(path: str | os.PathLike[str]) -> StoreRepair:
    """Repair the database in ``path`` with LevelDB's repair if it is damaged, and accept
    what could not be saved (kernels open it again afterwards).

    Raises :class:`~loomk.errors.DataDirInUse` if a kernel holds it and
    :class:`~loomk.errors.StoreError` if ``path`` holds no database.
    """
    path = _existing_database(Path(path).absolute())
    before = check_store(path)
    if before.healthy:
        return StoreRepair(path, before, before, repaired=False, lost_batches=0)
    _recover_the_log(path)
    with _held(path):
        try:
            plyvel.repair_db(str(path))
        except plyvel.Error as error:
            raise store_error(path, "repairing", error) from error
    after = check_store(path)
    if after.readable and not after.healthy:
        # all that is left is the watermark: what the repair kept is what there is
        _watermark.write(path, after.batches)
        after = check_store(path)
    lost = max(0, (before.acknowledged or 0) - after.batches) if after.healthy else 0
    return StoreRepair(path, before, after, repaired=True, lost_batches=lost)


def _recover_the_log(path: Path) -> None:
    """Let LevelDB's own recovery move the log into a table first: it checks each record and
    skips damaged ones, where its repair would keep them unchecked (damaged values)."""
    try:
        db = plyvel.DB(str(path), create_if_missing=False, paranoid_checks=False)
    except plyvel.CorruptionError:
        return  # the manifest or CURRENT is damaged too: the repair rebuilds them
    except (plyvel.Error, OSError) as error:
        raise _opening_failed(path, error) from error
    db.close()


def _opening_failed(path: Path, error: BaseException) -> StoreError:
    """The error for a database that could not be opened, for an operator's command."""
    failure = store_error(path, "opening", error)
    if isinstance(failure, DataDirInUse):
        return _in_use(path, describe(error))
    return failure


def _in_use(path: Path, cause: str) -> DataDirInUse:
    return DataDirInUse(
        f"data directory in use: {path} is held by a running kernel ({cause}); "
        "stop it before checking or repairing"
    )


def _existing_database(path: Path) -> Path:
    """``path``, if it holds a LevelDB database; :class:`StoreError` saying why not."""
    if not path.is_dir():
        what = "not a directory" if path.exists() else "no such directory"
        raise StoreError(f"no loomk state in {path}: {what}")
    if not any(next(path.glob(pattern), None) for pattern in _LEVELDB_FILES):
        raise StoreError(f"no loomk state in {path}: it holds no LevelDB database")
    return path


@contextmanager
def _held(path: Path) -> Iterator[None]:
    """Hold the database's LOCK (as LevelDB does) so no kernel opens it meanwhile."""
    lock = path / "LOCK"
    fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as error:
            raise _in_use(path, error.strerror or str(error)) from error
        yield
    finally:
        os.close(fd)  # releases the lock


def _size(path: Path) -> int:
    return sum(entry.stat().st_size for entry in path.iterdir() if entry.is_file())
