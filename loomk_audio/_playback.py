"""Where speech goes (a sound device or WAV files), and the registry that can cut it short.

A sink plays in small chunks (20 ms by default), each one a checkpoint, so cancelling the
cancel scope around a playback stops it within one chunk. That is how barge-in works: every
utterance in progress is a :class:`Playback` with its own ``trio.CancelScope`` in a
:class:`Speaker`, and :meth:`Speaker.interrupt` cancels those scopes. No flag is polled.

* :class:`DeviceSink` writes to a sound device through PyAudio. Each blocking write runs in a
  worker thread; a cancelled playback waits for the write in progress (one chunk), then
  closes the stream, which discards what PortAudio still buffers.
* :class:`WavSink` writes one WAV file per utterance. By default it "plays" in real time:
  chunk ``i`` is written at ``start + i x chunk`` on the trio clock (so a test's
  ``MockClock`` drives it), and only what was played is written, so an interrupted answer
  leaves a shorter file. ``realtime=False`` writes the whole utterance at once. Chunks are
  written from the trio thread: they are a few hundred bytes, and a worker thread would let
  an autojumping ``MockClock`` move time while the write is in flight.
"""

from __future__ import annotations

import itertools
import re
import wave
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, Protocol

import trio

from loomk_audio._deps import require
from loomk_audio._mic import quiet_native_logging
from loomk_audio._synth import Samples
from loomk_audio.errors import AudioDeviceError

__all__ = [
    "DEFAULT_CHUNK_MS",
    "DeviceSink",
    "Playback",
    "Progress",
    "Sink",
    "Speaker",
    "WavSink",
]

DEFAULT_CHUNK_MS = 20


@dataclass(slots=True)
class Progress:
    """How far one playback got; the sink updates it as it plays, so it is right even when
    the playback is cancelled half-way. ``audible`` is set when the first chunk plays."""

    sample_rate: int
    audible: trio.Event = field(default_factory=trio.Event)
    frames_played: int = 0
    first_audio_at: float | None = None  # trio time of the first chunk played
    path: Path | None = None  # the WAV file, for a WAV sink

    def chunk_starts(self) -> None:
        """A sink calls this as it hands a chunk over: the first one marks the audio's start."""
        if self.first_audio_at is None:
            self.first_audio_at = trio.current_time()
            self.audible.set()

    @property
    def played_ms(self) -> int:
        """Milliseconds of audio played (chunks handed to the device or written)."""
        return round(self.frames_played * 1000 / self.sample_rate)


class Sink(Protocol):
    """Plays mono 16-bit speech."""

    @property
    def name(self) -> str:
        """``device`` or ``wav``."""
        ...

    async def play(self, samples: Samples, progress: Progress, *, label: str) -> None:
        """Play ``samples`` at ``progress.sample_rate``, updating ``progress`` chunk by chunk;
        ``label`` names the utterance (a WAV sink puts it in the file name)."""
        ...

    def close(self) -> None:
        """Release the device, if any."""
        ...


def _chunks(samples: Samples, size: int) -> Iterator[tuple[int, Samples]]:
    for offset in range(0, len(samples), size):
        yield offset, samples[offset : offset + size]


def _chunk_frames(sample_rate: int, chunk_ms: int) -> int:
    return max(1, sample_rate * chunk_ms // 1000)


_UNSAFE = re.compile(r"[^A-Za-z0-9_.-]+")


class WavSink:
    """One WAV file per utterance in ``out_dir``, named ``tts-<counter>-<label>.wav``."""

    name = "wav"

    def __init__(
        self, out_dir: Path, *, realtime: bool = True, chunk_ms: int = DEFAULT_CHUNK_MS
    ) -> None:
        if not 1 <= chunk_ms <= 1000:
            raise ValueError(f"chunk_ms must be 1 to 1000, got {chunk_ms}")
        self.out_dir = Path(out_dir)
        self.out_dir.mkdir(parents=True, exist_ok=True)
        self.realtime = realtime
        self.chunk_ms = chunk_ms
        self._counter = itertools.count(1)

    def next_path(self, label: str) -> Path:
        """A file name not taken yet in :attr:`out_dir`."""
        safe = _UNSAFE.sub("_", label)[:64] or "speech"
        while True:
            path = self.out_dir / f"tts-{next(self._counter):05d}-{safe}.wav"
            if not path.exists():
                return path

    async def play(self, samples: Samples, progress: Progress, *, label: str) -> None:
        """Write ``samples`` to a new WAV file, paced on the trio clock when
        :attr:`realtime`; the file is closed (its header right) however this ends."""
        rate = progress.sample_rate
        path = self.next_path(label)
        with path.open("wb") as file, wave.open(file, "wb") as out:
            out.setnchannels(1)
            out.setsampwidth(2)
            out.setframerate(rate)
            progress.path = path
            start = trio.current_time()
            for offset, chunk in _chunks(samples, _chunk_frames(rate, self.chunk_ms)):
                if self.realtime:
                    await trio.sleep_until(start + offset / rate)
                progress.chunk_starts()
                out.writeframes(chunk.astype("<i2").tobytes())
                progress.frames_played += len(chunk)
            if self.realtime:
                await trio.sleep_until(start + len(samples) / rate)  # the last chunk's end
            else:
                await trio.lowlevel.checkpoint()

    def close(self) -> None:
        """Nothing to release."""


class DeviceSink:
    """A sound output device through PyAudio: the one whose name contains ``device``
    (case-insensitive), or the default output device.

    Raises :class:`AudioDeviceError` when there is no such device (a machine without a
    sound card has none) and :class:`AudioDependencyMissing` without PyAudio.
    """

    name = "device"

    def __init__(self, device: str | None = None, *, chunk_ms: int = DEFAULT_CHUNK_MS) -> None:
        if not 1 <= chunk_ms <= 1000:
            raise ValueError(f"chunk_ms must be 1 to 1000, got {chunk_ms}")
        self._pyaudio: Any = require(
            "pyaudio",
            pip="pyaudio",
            apt="portaudio19-dev",
            purpose="playing speech on a sound device",
        )
        self.chunk_ms = chunk_ms
        self._closed = False
        quiet_native_logging()  # ALSA and JACK print pages to stderr when probing otherwise
        self._audio: Any = self._pyaudio.PyAudio()
        try:
            self.index, self.device_name = _find_output(self._audio, device)
        except BaseException:
            self._audio.terminate()
            raise

    async def play(self, samples: Samples, progress: Progress, *, label: str) -> None:
        """Write ``samples`` to the device chunk by chunk, each write in a worker thread."""
        stream: Any = await trio.to_thread.run_sync(
            partial(
                self._audio.open,
                format=self._pyaudio.paInt16,
                channels=1,
                rate=progress.sample_rate,
                output=True,
                output_device_index=self.index,
            )
        )
        try:
            for _, chunk in _chunks(samples, _chunk_frames(progress.sample_rate, self.chunk_ms)):
                progress.chunk_starts()
                await trio.to_thread.run_sync(stream.write, chunk.astype("<i2").tobytes())
                progress.frames_played += len(chunk)
            await trio.to_thread.run_sync(stream.stop_stream)  # waits until it is all heard
        finally:
            # Closing an active stream discards what is still buffered (PortAudio aborts it).
            with trio.CancelScope(shield=True):
                await trio.to_thread.run_sync(stream.close)

    def close(self) -> None:
        """Release PortAudio (idempotent)."""
        if not self._closed:
            self._closed = True
            self._audio.terminate()


def _find_output(audio: Any, wanted: str | None) -> tuple[int, str]:
    """(index, name) of the output device whose name contains ``wanted``, or the default."""
    outputs: list[tuple[int, str]] = []
    for index in range(audio.get_device_count()):
        info = audio.get_device_info_by_index(index)
        if int(info.get("maxOutputChannels", 0)) > 0:
            outputs.append((index, str(info.get("name", ""))))
    if not outputs:
        raise AudioDeviceError(
            "no sound output device (PortAudio lists none): play speech into WAV files "
            "instead (output='wav')"
        )
    if wanted:
        for index, name in outputs:
            if wanted.lower() in name.lower():
                return index, name
        names = ", ".join(name for _, name in outputs)
        raise AudioDeviceError(f"no output device named like {wanted!r}; there are: {names}")
    try:
        info = audio.get_default_output_device_info()
    except OSError as error:
        raise AudioDeviceError(f"no default sound output device ({error})") from None
    return int(info["index"]), str(info.get("name", ""))


@dataclass(eq=False, slots=True)
class Playback:
    """One utterance in progress (being synthesised or played), cut short by cancelling
    :attr:`scope`; :attr:`audible` is set when its first chunk plays (what a barge-in
    detector or an echo gate may wait for)."""

    call_id: str
    stream: str
    scope: trio.CancelScope = field(default_factory=trio.CancelScope)
    audible: trio.Event = field(default_factory=trio.Event)
    reason: str = ""

    def interrupt(self, reason: str) -> bool:
        """Cancel this utterance (True), unless it was already cancelled (False)."""
        if self.scope.cancel_called:
            return False
        self.reason = reason
        self.scope.cancel()
        return True

    @property
    def interrupted(self) -> bool:
        """Whether an interrupt, not the end of the speech, ended this playback."""
        return self.scope.cancelled_caught


class Speaker:
    """The utterances in progress, so that a barge-in can cut them all (or one stream's).

    Share one ``Speaker`` between providers to interrupt all the speech of a kernel at once.
    """

    def __init__(self) -> None:
        self._active: list[Playback] = []

    @contextmanager
    def track(self, call_id: str, stream: str) -> Iterator[Playback]:
        """Register an utterance for as long as the ``with`` lasts; the caller runs the
        utterance inside ``playback.scope``."""
        playback = Playback(call_id, stream)
        self._active.append(playback)
        try:
            yield playback
        finally:
            self._active.remove(playback)

    @property
    def active(self) -> tuple[Playback, ...]:
        """The utterances in progress, oldest first."""
        return tuple(self._active)

    def interrupt(self, reason: str = "barge-in", *, stream: str | None = None) -> int:
        """Cut every utterance in progress (or only those of ``stream``); how many were cut."""
        return sum(
            playback.interrupt(reason)
            for playback in self._active
            if stream is None or playback.stream == stream
        )
