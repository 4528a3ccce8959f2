"""Audio sources: a WAV file or a microphone, published on the bus as ``audio_chunk`` events.

Both publish what Loom's microphone publishes (PCM16 LE chunks, metadata ``sample_rate``,
``channels``, ``device``, ``encoding``, ``frame_samples``, priority 90, topic ``audio.mic``,
source ``mic.primary``) plus ``stream`` and ``offset_frames`` (frames of the stream before the
chunk), in the audio's own rate and channel count: the stages resample and downmix. When the
stream ends (the file's end, a device error, the source being cancelled) they publish
``audio_end`` on the same topic, so the stages close what they hold for it.

Publishing waits while a lossless subscriber (the VAD) is full, so a file published as fast
as possible (``realtime=False``) loses nothing.
"""

from __future__ import annotations

from contextlib import suppress
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

import trio

from loomk import Event
from loomk.errors import KernelClosed
from loomk_audio._mic import InputDevice, OpenMic, input_devices, open_mic, open_portaudio
from loomk_audio.events import AUDIO_TOPIC, DEFAULT_STREAM, audio_chunk_event, audio_end_event
from loomk_audio.pcm import read_wav

if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt

    Samples = npt.NDArray[np.int16]

__all__ = [
    "AudioPublisher",
    "InputDevice",
    "MicSource",
    "SourceStats",
    "WavSource",
    "list_input_devices",
]

# How long a source that is cancelled or failed may still try to publish its ``audio_end``.
END_GRACE_SECONDS = 0.5


class AudioPublisher(Protocol):
    """Where a source publishes: an :class:`~loomk.EventBus` (``kernel.bus``)."""

    async def publish(self, topic: str, event: Event) -> int: ...


@dataclass(frozen=True, slots=True)
class SourceStats:
    """What a source published: chunks, frames (samples per channel), and their format."""

    chunks: int
    frames: int
    sample_rate: int
    channels: int

    @property
    def seconds(self) -> float:
        """The audio published, in seconds."""
        return self.frames / self.sample_rate if self.sample_rate else 0.0


def _frames_per_chunk(rate: int, chunk_ms: int) -> int:
    if chunk_ms <= 0:
        raise ValueError(f"chunk_ms must be > 0, got {chunk_ms}")
    return max(1, rate * chunk_ms // 1000)


async def _publish_end(bus: AudioPublisher, topic: str, end: Event, *, gracefully: bool) -> None:
    """Publish ``end``: normally as any event; after a cancellation or failure shielded, for
    at most :data:`END_GRACE_SECONDS`, and not at all once the bus is closed."""
    if gracefully:
        await bus.publish(topic, end)
        return
    deadline = trio.current_time() + END_GRACE_SECONDS
    with trio.CancelScope(shield=True, deadline=deadline), suppress(KernelClosed):
        await bus.publish(topic, end)


class WavSource:
    """A WAV file played onto the bus as one stream (``stream``, default ``wav.<stem>``).

    The file is read when the source is made, so a missing or unreadable file fails here
    (``FileNotFoundError``, :class:`~loomk_audio.errors.AudioFormatError`, naming the path)
    before anything is published. With ``realtime`` the chunks are paced by the trio clock,
    each published when its audio would have been recorded; without, as fast as the bus
    takes them.
    """

    def __init__(
        self,
        path: str | Path,
        *,
        topic: str = AUDIO_TOPIC,
        stream: str | None = None,
        source: str = DEFAULT_STREAM,
        chunk_ms: int = 20,
        realtime: bool = True,
    ) -> None:
        self.path = Path(path)
        self.samples, self.sample_rate, self.channels = read_wav(self.path)
        self.topic = topic
        self.stream = stream or f"wav.{self.path.stem}"
        self.source = source
        self.chunk_ms = chunk_ms
        self.realtime = realtime
        self.frames_per_chunk = _frames_per_chunk(self.sample_rate, chunk_ms)

    @property
    def frames(self) -> int:
        """The file's length in frames (samples per channel)."""
        return len(self.samples) // self.channels

    def describe(self) -> str:
        """What is played, for people."""
        seconds = self.frames / self.sample_rate
        return (
            f"{self.path.name} ({seconds:.1f} s, {self.sample_rate} Hz, "
            f"{self.channels} channel(s)) as stream {self.stream!r}"
        )

    async def run(self, bus: AudioPublisher) -> SourceStats:
        """Publish the whole file, then ``audio_end``; returns what was published."""
        end = audio_end_event(source=self.source, stream=self.stream)
        try:
            stats = await self._publish_chunks(bus)
        except BaseException:
            await _publish_end(bus, self.topic, end, gracefully=False)
            raise
        await _publish_end(bus, self.topic, end, gracefully=True)
        return stats

    async def _publish_chunks(self, bus: AudioPublisher) -> SourceStats:
        step, channels, rate = self.frames_per_chunk, self.channels, self.sample_rate
        started = trio.current_time()
        chunks = 0
        for offset in range(0, self.frames, step):
            frames = min(step, self.frames - offset)
            if self.realtime:  # due when its last sample would have been recorded
                await trio.sleep_until(started + (offset + frames) / rate)
            pcm = self.samples[offset * channels : (offset + frames) * channels]
            chunk = audio_chunk_event(
                pcm.astype("<i2").tobytes(),
                sample_rate=rate,
                channels=channels,
                source=self.source,
                device=f"file:{self.path.name}",
                stream=self.stream,
                offset_frames=offset,
            )
            await bus.publish(self.topic, chunk)
            chunks += 1
        return SourceStats(chunks, self.frames, rate, channels)


class MicSource:
    """A microphone (PortAudio through PyAudio) published onto the bus until cancelled.

    ``device`` is a case-insensitive part of the device's name (Loom's ``MIC_DEVICE``; None:
    the default input device). The device is opened when :meth:`run` starts, at
    ``sample_rate`` and ``channels`` if it takes them, else at a format it does (the chunks
    say which). No input device, or none matching ``device``, raises
    :class:`~loomk_audio.errors.AudioDeviceError` saying how to fix it. Reads are blocking
    reads in a worker thread; the stream is closed however :meth:`run` ends.
    """

    def __init__(
        self,
        *,
        device: str | None = None,
        sample_rate: int = 16_000,
        channels: int = 1,
        chunk_ms: int = 20,
        topic: str = AUDIO_TOPIC,
        source: str = DEFAULT_STREAM,
        stream: str | None = None,
        quiet: bool = True,
    ) -> None:
        if channels < 1:
            raise ValueError(f"channels must be >= 1, got {channels}")
        _frames_per_chunk(sample_rate, chunk_ms)  # validates chunk_ms
        self.device = device
        self.sample_rate = sample_rate
        self.channels = channels
        self.chunk_ms = chunk_ms
        self.topic = topic
        self.source = source
        self.stream = stream or source
        self.quiet = quiet
        self._mic: OpenMic | None = None

    @property
    def is_open(self) -> bool:
        """Whether the device is open (only while :meth:`run` runs)."""
        return self._mic is not None and not self._mic.closed

    @property
    def opened_device(self) -> InputDevice | None:
        """The device :meth:`run` opened last, once it has."""
        return self._mic.device if self._mic is not None else None

    def describe(self) -> str:
        """Which device is (or will be) recorded, for people."""
        if self._mic is not None:
            mic = self._mic
            return (
                f"audio input device {mic.device.name!r} ({mic.sample_rate} Hz, "
                f"{mic.channels} channel(s)) as stream {self.stream!r}"
            )
        if self.device is None:
            return f"the default audio input device as stream {self.stream!r}"
        return f"the audio input device matching {self.device!r} as stream {self.stream!r}"

    async def run(self, bus: AudioPublisher, *, max_frames: int | None = None) -> SourceStats:
        """Record and publish until cancelled (or, given ``max_frames``, until that many
        frames are published), then publish ``audio_end``; returns what was published."""
        wanted_frames = _frames_per_chunk(self.sample_rate, self.chunk_ms)
        mic = await trio.to_thread.run_sync(
            partial(
                open_mic,
                self.device,
                self.sample_rate,
                self.channels,
                wanted_frames,
                quiet=self.quiet,
            )
        )
        self._mic = mic
        end = audio_end_event(source=self.source, stream=self.stream)
        try:
            stats = await self._publish_chunks(bus, mic, max_frames)
        except BaseException:
            await self._close(mic)
            await _publish_end(bus, self.topic, end, gracefully=False)
            raise
        await self._close(mic)
        await _publish_end(bus, self.topic, end, gracefully=True)
        return stats

    async def _publish_chunks(
        self, bus: AudioPublisher, mic: OpenMic, max_frames: int | None
    ) -> SourceStats:
        step = _frames_per_chunk(mic.sample_rate, self.chunk_ms)
        offset = chunks = 0
        while max_frames is None or offset < max_frames:
            frames = step if max_frames is None else min(step, max_frames - offset)
            pcm = await trio.to_thread.run_sync(mic.read, frames)
            chunk = audio_chunk_event(
                pcm,
                sample_rate=mic.sample_rate,
                channels=mic.channels,
                source=self.source,
                device=mic.device.name,
                stream=self.stream,
                offset_frames=offset,
            )
            await bus.publish(self.topic, chunk)
            offset += frames
            chunks += 1
        return SourceStats(chunks, offset, mic.sample_rate, mic.channels)

    @staticmethod
    async def _close(mic: OpenMic) -> None:
        with trio.CancelScope(shield=True):
            await trio.to_thread.run_sync(mic.close)


def list_input_devices(*, quiet: bool = True) -> list[InputDevice]:
    """The devices PortAudio can record from (empty on a machine without one). Blocks
    briefly while PortAudio scans; call it from a worker thread inside trio."""
    portaudio = open_portaudio(quiet=quiet)
    try:
        return input_devices(portaudio)
    finally:
        portaudio.terminate()
