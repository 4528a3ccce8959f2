"""A pocketsphinx recogniser in a process of its own (``python -m loomk_audio._sphinx_worker``).

pocketsphinx holds the GIL while it decodes, so the decoders of several streams in one
process share one core. :class:`~loomk_audio._sphinx_process.ProcessRecognizer` runs each in
this worker instead, which takes requests on stdin and answers on stdout:

request: one op byte (``S`` start, ``F`` feed, ``P`` partial, ``E`` finish), a 4-byte
big-endian length, that many bytes (``F``: 16 kHz mono int16 samples); the first line of
stdin, before any request, is the recogniser's settings as JSON.
answer: a 4-byte big-endian length, then the text as UTF-8 (empty for ``S`` and ``F``), or
length ``0xFFFFFFFF`` followed by a length-prefixed error message.

It exits when stdin closes, so it never outlives the process that started it.
"""

from __future__ import annotations

import json
import struct
import sys
from typing import BinaryIO

import numpy as np

from loomk_audio._sphinx import SphinxRecognizer

ERROR = 0xFFFFFFFF


def _read_exact(stream: BinaryIO, size: int) -> bytes | None:
    data = b""
    while len(data) < size:
        chunk = stream.read(size - len(data))
        if not chunk:
            return None
        data += chunk
    return data


def _fail(answers: BinaryIO, error: Exception) -> None:
    message = str(error).encode()
    answers.write(struct.pack(">II", ERROR, len(message)) + message)
    answers.flush()


def serve(requests: BinaryIO, answers: BinaryIO) -> None:
    """Answer requests until ``requests`` closes."""
    settings = json.loads(requests.readline())
    try:
        recognizer = SphinxRecognizer(**settings)
    except Exception as error:  # a bad setting: told to the parent, which raises it there
        _fail(answers, error)
        return
    answers.write(struct.pack(">I", 0))  # ready
    answers.flush()
    while True:
        header = _read_exact(requests, 5)
        if header is None:
            return
        op, size = header[:1], struct.unpack(">I", header[1:])[0]
        payload = _read_exact(requests, size) if size else b""
        if payload is None:
            return
        try:
            if op == b"S":
                recognizer.start()
                text = ""
            elif op == b"F":
                recognizer.feed(np.frombuffer(payload, dtype="<i2").astype(np.int16))
                text = ""
            elif op == b"P":
                text = recognizer.partial()
            elif op == b"E":
                text = recognizer.finish()
            else:
                raise ValueError(f"unknown request {op!r}")
        except Exception as error:  # told to the parent, which raises it there
            _fail(answers, error)
            continue
        else:
            encoded = text.encode()
            answers.write(struct.pack(">I", len(encoded)) + encoded)
        answers.flush()


if __name__ == "__main__":
    serve(sys.stdin.buffer, sys.stdout.buffer)
