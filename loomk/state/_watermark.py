"""How the store notices acknowledged commits that the database lost (a truncated log).

LevelDB keeps recent commits in its write-ahead log. A log cut short on disk (a damaged file
system, a careless copy) reads to LevelDB exactly like a crash in the middle of a write, so
the database opens without the lost commits and says nothing, paranoid checks or not. The
store therefore counts what it writes, in two places:

- the database stores, under :data:`COUNT_KEY`, how many batches it has taken so far:
  in every batch, atomically with it, when commits are synced; in one synced write when the
  store closes, when they are not;
- once that count is durable, it is written to the file :data:`FILE_NAME` beside the
  database (the *watermark*): after every synced batch, or after that write at closing.

On opening, a database whose count is below the watermark has lost acknowledged commits.
The watermark is written only after what it counts is durable, so a crash can leave it
behind the database but never ahead of it: a database that merely crashed opens normally.
"""

from __future__ import annotations

import os
from pathlib import Path

from loomk.errors import StoreCorrupted

__all__ = [
    "COUNT_KEY",
    "FILE_NAME",
    "Watermark",
    "decode_count",
    "encode_count",
    "read",
    "write",
]

COUNT_KEY = b"\x00loomk/batches"
"""The database's count of written batches (keys starting with ``\\x00`` are the store's)."""

FILE_NAME = "LOOMK-WATERMARK"
"""The watermark file, in the database's directory (LevelDB ignores names it does not know)."""

_WIDTH = 20  # digits: one fixed-size write in place, never a partly rewritten number


def encode_count(count: int) -> bytes:
    """How a count is stored, in the database and in the watermark file."""
    return b"%0*d\n" % (_WIDTH, count)


def decode_count(raw: bytes | None) -> int:
    """The count stored as ``raw`` (0 for a database that has none yet)."""
    if not raw:
        return 0
    return int(raw)


def read(directory: Path) -> int | None:
    """The watermark of the database in ``directory``; None if it has none (yet).

    Raises :class:`StoreCorrupted` if the file is there but does not hold a count.
    """
    path = directory / FILE_NAME
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return None
    if not raw:  # created, never written: nothing was acknowledged through it
        return None
    try:
        return decode_count(raw)
    except ValueError:
        raise StoreCorrupted(
            f"the watermark {path} is unreadable ({raw[:40]!r}); "
            f"`loomk state repair {directory}` rewrites it from the database"
        ) from None


def write(directory: Path, count: int) -> None:
    """Set the watermark of the database in ``directory`` (for repair: accept what is left),
    replacing whatever the file held."""
    fd = os.open(directory / FILE_NAME, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        os.write(fd, encode_count(count))
        os.fsync(fd)
    finally:
        os.close(fd)


class Watermark:
    """The open watermark file of one store: raised in place as batches become durable."""

    __slots__ = ("_fd", "path")

    def __init__(self, fd: int, path: Path) -> None:
        self._fd = fd
        self.path = path

    @classmethod
    def open(cls, directory: Path) -> Watermark:
        """Open (creating if needed) the watermark file in ``directory``."""
        path = directory / FILE_NAME
        return cls(os.open(path, os.O_RDWR | os.O_CREAT, 0o644), path)

    def advance(self, count: int) -> None:
        """Record that ``count`` batches are durable (one write in place, no fsync: the
        batches are fsync'd already, and a watermark lost in a crash only lags behind)."""
        os.pwrite(self._fd, encode_count(count), 0)

    def close(self, count: int | None = None) -> None:
        """Close the file, recording ``count`` first if given."""
        try:
            if count is not None:
                self.advance(count)
        finally:
            os.close(self._fd)
