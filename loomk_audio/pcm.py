"""PCM: reading audio chunks whatever their format, into 16 kHz mono frames the stages use.

Every stage (VAD, wake word, speech recognition) works on 16 kHz mono 16-bit audio. Chunks on
the bus may come at any rate and channel count (a 48 kHz stereo microphone, a 22 kHz WAV, a
Loom client through the bridge): :class:`AudioInput` keeps one stream's conversion state, so
resampling is continuous across chunks (no clicks at chunk edges) and :class:`FrameSplitter`
carries the samples that do not fill a frame into the next chunk (Loom dropped them).
"""

from __future__ import annotations

import io
import math
import wave
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from loomk import Event
from loomk_audio._riff import FLOAT, WaveError, parse_wave
from loomk_audio.errors import AudioFormatError
from loomk_audio.events import ENCODING

if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt

    Samples = npt.NDArray[np.int16]

__all__ = [
    "MAX_SAMPLE_RATE",
    "MIN_SAMPLE_RATE",
    "TARGET_RATE",
    "AudioInput",
    "ChunkFormat",
    "FrameSplitter",
    "StreamResampler",
    "chunk_format",
    "downmix",
    "read_wav",
    "to_wav_bytes",
    "write_wav",
]

TARGET_RATE = 16_000
MIN_SAMPLE_RATE = 4_000
MAX_SAMPLE_RATE = 384_000
MAX_CHANNELS = 32


@dataclass(frozen=True, slots=True)
class ChunkFormat:
    """How an ``audio_chunk`` payload is laid out."""

    sample_rate: int
    channels: int


def chunk_format(event: Event) -> ChunkFormat:
    """The format an ``audio_chunk`` declares (Loom's defaults: 16 kHz, mono), or
    :class:`AudioFormatError` for a rate, channel count, encoding or payload that cannot be
    read as PCM16."""
    metadata = event.metadata
    try:
        rate = int(metadata.get("sample_rate") or TARGET_RATE)
        channels = int(metadata.get("channels") or 1)
    except ValueError as error:
        raise AudioFormatError(
            f"audio chunk with a malformed sample_rate or channels: {error}"
        ) from None
    if not MIN_SAMPLE_RATE <= rate <= MAX_SAMPLE_RATE:
        raise AudioFormatError(
            f"audio chunk at {rate} Hz: rates from {MIN_SAMPLE_RATE} to {MAX_SAMPLE_RATE} are read"
        )
    if not 1 <= channels <= MAX_CHANNELS:
        raise AudioFormatError(f"audio chunk with {channels} channels (1 to {MAX_CHANNELS})")
    encoding = metadata.get("encoding") or ENCODING
    if encoding != ENCODING:
        raise AudioFormatError(f"audio chunk encoded as {encoding!r}; only {ENCODING} is read")
    if len(event.payload) % (2 * channels):
        raise AudioFormatError(
            f"audio chunk of {len(event.payload)} bytes is not whole {channels}-channel "
            "16-bit frames"
        )
    return ChunkFormat(rate, channels)


def downmix(samples: Samples, channels: int) -> Samples:
    """Interleaved samples of ``channels`` channels as mono (their mean)."""
    import numpy as np

    if channels == 1:
        return samples
    frames = samples.reshape(-1, channels).astype(np.int32)
    mixed: Samples = (frames.sum(axis=1) // channels).astype(np.int16)
    return mixed


class StreamResampler:
    """Polyphase resampling of a stream delivered in pieces, as if it were one array.

    Each piece is filtered with enough history before it and lookahead after it that the
    output equals resampling the whole stream at once; the price is a delay of the lookahead
    (at most one ``down`` period: 20 ms from 22,050 Hz, 0.6 ms from 48 kHz).
    """

    def __init__(self, rate_in: int, rate_out: int = TARGET_RATE) -> None:
        import numpy as np

        divisor = math.gcd(rate_in, rate_out)
        self.up = rate_out // divisor
        self.down = rate_in // divisor
        half = math.ceil(10 * max(self.up, self.down) / self.up) + 1  # scipy's filter reach
        self._context = self.down * math.ceil(half / self.down)
        self._buffer: npt.NDArray[np.float64] = np.zeros(self._context, dtype=np.float64)
        self.identity = self.up == self.down

    def feed(self, samples: Samples) -> Samples:
        """Resampled output for ``samples`` (mono), as far as the lookahead allows."""
        import numpy as np

        if self.identity:
            return samples
        self._buffer = np.concatenate((self._buffer, samples.astype(np.float64)))
        return self._run(final=False)

    def flush(self) -> Samples:
        """The output still held back by the lookahead (at the end of a stream)."""
        import numpy as np

        if self.identity:
            return np.zeros(0, dtype=np.int16)
        self._buffer = np.concatenate((self._buffer, np.zeros(self._context)))
        return self._run(final=True)

    def _run(self, *, final: bool) -> Samples:
        import numpy as np
        from scipy.signal import resample_poly

        context, down = self._context, self.down
        usable = len(self._buffer) - 2 * context
        if final:
            usable = max(usable, 0)
            n = math.ceil(usable / down) * down
            pad = n - usable
            if pad:
                self._buffer = np.concatenate((self._buffer, np.zeros(pad)))
        else:
            n = (usable // down) * down
        if n <= 0:
            return np.zeros(0, dtype=np.int16)
        block = self._buffer[: 2 * context + n]
        out = resample_poly(block, self.up, down)
        start = context * self.up // down
        produced = out[start : start + n * self.up // down]
        self._buffer = self._buffer[n:]
        result: Samples = np.clip(np.rint(produced), -32768, 32767).astype(np.int16)
        return result


class AudioInput:
    """One stream's chunks, turned into 16 kHz mono samples, with the stream's position.

    Chunks of a different rate or channel count from the one before restart the resampler
    (a new device). ``position`` counts the 16 kHz samples handed out so far.
    """

    def __init__(self, rate_out: int = TARGET_RATE) -> None:
        self.rate_out = rate_out
        self.position = 0
        self._format: ChunkFormat | None = None
        self._resampler: StreamResampler | None = None

    def feed(self, event: Event) -> Samples:
        """The chunk's samples at :attr:`rate_out`, mono; :class:`AudioFormatError` (and
        nothing changed) for a chunk that cannot be read."""
        import numpy as np

        found = chunk_format(event)
        if found != self._format:
            self._format = found
            self._resampler = StreamResampler(found.sample_rate, self.rate_out)
        assert self._resampler is not None
        samples = np.frombuffer(event.payload, dtype="<i2").astype(np.int16)
        out = self._resampler.feed(downmix(samples, found.channels))
        self.position += len(out)
        return out

    def flush(self) -> Samples:
        """The samples the resampler still holds back (at the end of the stream)."""
        import numpy as np

        if self._resampler is None:
            return np.zeros(0, dtype=np.int16)
        out = self._resampler.flush()
        self.position += len(out)
        return out

    def position_ms(self) -> int:
        """:attr:`position` in milliseconds."""
        return self.position * 1000 // self.rate_out


class FrameSplitter:
    """Cuts a stream of samples into frames of ``size``, carrying the rest to the next call."""

    def __init__(self, size: int) -> None:
        import numpy as np

        if size <= 0:
            raise ValueError("frame size must be positive")
        self.size = size
        self._rest: Samples = np.zeros(0, dtype=np.int16)

    def frames(self, samples: Samples) -> list[Samples]:
        """The whole frames ``samples`` completes, in order."""
        import numpy as np

        if len(self._rest):
            samples = np.concatenate((self._rest, samples))
        whole = len(samples) // self.size * self.size
        self._rest = samples[whole:].copy()
        return [samples[i : i + self.size] for i in range(0, whole, self.size)]

    @property
    def pending(self) -> int:
        """Samples held until the next frame fills."""
        return len(self._rest)


def read_wav(source: str | Path | bytes) -> tuple[Samples, int, int]:
    """(interleaved int16 samples, sample rate, channels) of a WAV file or its bytes:
    8-, 16-, 24- and 32-bit integer or 32/64-bit float samples, in the plain or the
    extensible header; :class:`AudioFormatError` for anything else."""
    import numpy as np

    content = source if isinstance(source, bytes) else Path(source).read_bytes()
    try:
        wav = parse_wave(content)
    except WaveError as error:
        raise AudioFormatError(f"not a PCM WAV file ({error}): {_name(source)}") from None
    rate, channels, width = wav.sample_rate, wav.channels, wav.bits // 8
    if not MIN_SAMPLE_RATE <= rate <= MAX_SAMPLE_RATE or not 1 <= channels <= MAX_CHANNELS:
        raise AudioFormatError(f"WAV at {rate} Hz with {channels} channels: {_name(source)}")
    if width < 1 or wav.bits % 8:
        raise AudioFormatError(f"WAV with {wav.bits}-bit samples: {_name(source)}")
    raw = wav.data[: len(wav.data) // (width * channels) * width * channels]
    if wav.encoding == FLOAT:
        if width not in (4, 8):
            raise AudioFormatError(f"WAV with {wav.bits}-bit float samples: {_name(source)}")
        floats = np.frombuffer(raw, dtype="<f4" if width == 4 else "<f8")
        scaled = np.clip(np.nan_to_num(floats), -1.0, 1.0) * 32767
        return scaled.astype(np.int16), rate, channels
    if width == 2:
        samples = np.frombuffer(raw, dtype="<i2").astype(np.int16)
    elif width == 1:
        samples = ((np.frombuffer(raw, dtype=np.uint8).astype(np.int16) - 128) << 8).astype(
            np.int16
        )
    elif width == 3:
        b = np.frombuffer(raw, dtype=np.uint8).reshape(-1, 3)
        samples = (b[:, 2].astype(np.int8).astype(np.int16) << 8) | b[:, 1]
        samples = samples.astype(np.int16)
    elif width == 4:
        samples = (np.frombuffer(raw, dtype="<i4") >> 16).astype(np.int16)
    else:
        raise AudioFormatError(f"WAV with {8 * width}-bit samples: {_name(source)}")
    return samples, rate, channels


def _name(source: str | Path | bytes) -> str:
    return "<bytes>" if isinstance(source, bytes) else str(source)


def to_wav_bytes(samples: Samples, rate: int, channels: int = 1) -> bytes:
    """``samples`` (int16, interleaved) as the bytes of a WAV file."""
    out = io.BytesIO()
    with wave.open(out, "wb") as handle:
        handle.setnchannels(channels)
        handle.setsampwidth(2)
        handle.setframerate(rate)
        handle.writeframes(samples.astype("<i2").tobytes())
    return out.getvalue()


def write_wav(path: str | Path, samples: Samples, rate: int, channels: int = 1) -> Path:
    """Write ``samples`` as a WAV file at ``path`` (its folder must exist)."""
    target = Path(path)
    target.write_bytes(to_wav_bytes(samples, rate, channels))
    return target
