"""A pocketsphinx recogniser whose decoding runs in a worker process (see
:mod:`loomk_audio._sphinx_worker`), so several streams decode on several cores.

Its methods block on the worker's pipe, as :class:`~loomk_audio._sphinx.SphinxRecognizer`'s
block on decoding: call them from a worker thread. A worker that dies or fails makes the
call raise :class:`~loomk_audio.errors.AudioError`, naming what happened.
"""

from __future__ import annotations

import contextlib
import json
import struct
import subprocess
import sys
from collections.abc import Sequence
from typing import IO, TYPE_CHECKING, Literal

from loomk_audio.errors import AudioError

if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt

    Samples = npt.NDArray[np.int16]

__all__ = ["ProcessRecognizer"]

_ERROR = 0xFFFFFFFF


class ProcessRecognizer:
    """pocketsphinx in a worker process: the same arguments and methods as
    :class:`~loomk_audio._sphinx.SphinxRecognizer`, plus :meth:`close`. Building it starts
    the worker and waits until its model is loaded (blocking, ~0.5-1 s)."""

    engine = "pocketsphinx"

    def __init__(
        self,
        *,
        grammar: str | None = None,
        phrases: Sequence[str] = (),
        unknown_words: Literal["error", "drop"] = "error",
        language: str = "en-us",
        rescore: str | None = None,
    ) -> None:
        self.language = language
        settings = {
            "grammar": grammar,
            "phrases": list(phrases),
            "unknown_words": unknown_words,
            "language": language,
            "rescore": rescore,
        }
        self._process = subprocess.Popen(
            [sys.executable, "-m", "loomk_audio._sphinx_worker"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
        )
        try:
            self._write(json.dumps(settings).encode() + b"\n")
            self._answer()  # ready, or the error that stopped it loading
        except BaseException:
            self.close()
            raise

    @property
    def pid(self) -> int:
        """The worker's process id."""
        return self._process.pid

    def _write(self, data: bytes) -> None:
        pipe = self._pipe(self._process.stdin)
        try:
            pipe.write(data)
            pipe.flush()
        except (BrokenPipeError, OSError) as error:
            raise self._gone(error) from None

    def _answer(self) -> str:
        pipe = self._pipe(self._process.stdout)
        header = pipe.read(4)
        if len(header) < 4:
            raise self._gone(None)
        (size,) = struct.unpack(">I", header)
        if size == _ERROR:
            (length,) = struct.unpack(">I", pipe.read(4))
            raise AudioError(f"pocketsphinx worker failed: {pipe.read(length).decode()}")
        return pipe.read(size).decode()

    @staticmethod
    def _pipe(pipe: IO[bytes] | None) -> IO[bytes]:
        assert pipe is not None
        return pipe

    def _gone(self, error: BaseException | None) -> AudioError:
        code = self._process.poll()
        return AudioError(
            f"the pocketsphinx worker process ended (exit code {code}"
            f"{f', {error}' if error else ''})"
        )

    def _request(self, op: bytes, payload: bytes = b"") -> str:
        self._write(op + struct.pack(">I", len(payload)) + payload)
        return self._answer()

    def start(self) -> None:
        """Begin an utterance."""
        self._request(b"S")

    def feed(self, samples: Samples) -> None:
        """Decode the next samples of the utterance (in the worker)."""
        if len(samples):
            self._request(b"F", samples.astype("<i2").tobytes())

    def partial(self) -> str:
        """The text so far."""
        return self._request(b"P")

    def finish(self) -> str:
        """End the utterance; its final text."""
        return self._request(b"E")

    def close(self) -> None:
        """Stop the worker (it also stops by itself when this process ends)."""
        process = self._process
        if process.stdin is not None:
            with contextlib.suppress(OSError):  # a dead worker's pipe
                process.stdin.close()
        try:
            process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        if process.stdout is not None:
            process.stdout.close()
