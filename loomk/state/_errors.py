"""Every failure of the database as a typed loomk error that names the path and the way out.

plyvel raises its own ``IOError``, ``CorruptionError`` and ``Error`` (with LevelDB's message as
bytes), and the file system raises ``OSError``. Code that uses the store sees only
:class:`~loomk.errors.StoreError` and its subclasses: :class:`~loomk.errors.DataDirInUse`
when another kernel holds the directory, :class:`~loomk.errors.StoreCorrupted` when the data
on disk is damaged. The original exception is kept as ``__cause__`` for debugging.
"""

from __future__ import annotations

from pathlib import Path

import plyvel

from loomk.errors import DataDirInUse, StoreCorrupted, StoreError

__all__ = ["describe", "repair_hint", "store_error"]


def describe(error: BaseException) -> str:
    """plyvel's messages arrive as bytes: decode them for people."""
    if error.args and isinstance(error.args[0], bytes):
        return error.args[0].decode("utf-8", "replace")
    if isinstance(error, OSError) and error.strerror:
        return error.strerror
    return str(error)


def repair_hint(path: Path) -> str:
    """What an operator does about a damaged database in ``path``."""
    return (
        f"stop every kernel using it, then `loomk state check {path}` describes the damage "
        f"and `loomk state repair {path}` salvages what can be read"
    )


def store_error(path: Path, doing: str, error: BaseException) -> StoreError:
    """The typed error for ``error``, met while ``doing`` (e.g. "reading") the store in ``path``."""
    cause = describe(error)
    failure: StoreError
    if isinstance(error, plyvel.IOError) and _is_lock_error(cause):
        failure = DataDirInUse(
            f"data directory in use: {path} is held by another kernel ({cause}); stop that "
            "kernel, or give this one another data_dir (or state_temporary=True)"
        )
    elif isinstance(error, plyvel.CorruptionError):
        failure = StoreCorrupted(
            f"the store in {path} is corrupted ({doing} it: {cause}); {repair_hint(path)}"
        )
    else:
        failure = StoreError(
            f"{doing} the store in {path} failed: {cause}; check the file system there "
            "(free space, permissions)"
        )
    failure.__cause__ = error
    return failure


def _is_lock_error(text: str) -> bool:
    """LevelDB's account of a LOCK file another process (or this one) holds."""
    return "/LOCK" in text and ("lock" in text or "temporarily unavailable" in text)
