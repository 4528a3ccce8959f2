"""What the ``loom.v1`` wire can carry, checked where values enter the kernel.

Whatever an event or a capability call holds may leave the process as protobuf, so it is
refused on the way in rather than breaking a bridge or a store later:

- strings must be valid UTF-8: a Python ``str`` can hold a lone surrogate (from bytes
  decoded with ``surrogateescape``, or half a UTF-16 pair), which UTF-8 cannot encode;
- strings must not hold NUL: topics become NATS subjects, and C-string consumers (logs,
  stores, subjects) cut text at a NUL;
- ``timestamp_ms`` and ``timeout_ms`` are int64.

The common case is decided by ``text.isascii() and "\\x00" not in text`` (a flag read and a
``memchr``: ASCII text cannot hold a surrogate); hot paths (``Event.__init__``) test it
inline and call :func:`text_problem` only when it fails, for the precise answer.
"""

from __future__ import annotations

import re
import reprlib

__all__ = ["INT64_MAX", "INT64_MIN", "short_repr", "text_problem"]

INT64_MIN = -(2**63)
INT64_MAX = 2**63 - 1

_UNSAFE = re.compile("[\x00\ud800-\udfff]")
_REPR = reprlib.Repr()
_REPR.maxstring = 80
_REPR.maxother = 80


def text_problem(text: str) -> str:
    """Why ``text`` cannot go on the wire and what to do, or "" when it can."""
    if text.isascii() and "\x00" not in text:
        return ""
    found = _UNSAFE.search(text)
    if found is None:
        return ""
    char, at = found.group(), found.start()
    if char == "\x00":
        return f"contains a NUL character at index {at}: remove it"
    return (
        f"contains a lone surrogate {char!r} at index {at}, which is not valid UTF-8: "
        "decode bytes with errors='replace', or repair the text before sending it"
    )


def short_repr(value: object) -> str:
    """``repr(value)`` cut to a readable length, for error messages (safe on huge or deeply
    nested values: a message must not fail or swamp the log)."""
    return _REPR.repr(value)
