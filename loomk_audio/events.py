"""The voice pipeline's topics, event types and metadata keys, as Loom names them.

Every stage talks only through the bus. Topics and types follow Loom's audio stack (``audio.mic``
and ``audio_chunk``, ``vad.speech_start``, ``transcript.final``, ``wake_word_detected``,
``user.query``, ``tts.start``/``done``/``error``), so Loom components joined through the
bridge interoperate. loomk adds a few keys Loom lacks: ``stream`` (which audio stream an event
belongs to, so several microphones or files share the topics) and ``stream_ms`` (where in that
stream, in milliseconds of audio), which let the stages line up without wall clocks.
"""

from __future__ import annotations

from collections.abc import Mapping

from loomk import Event

__all__ = [
    "AUDIO_CHUNK",
    "AUDIO_END",
    "AUDIO_LANE_CAPACITY",
    "AUDIO_TOPIC",
    "AUDIO_VOICED",
    "DEFAULT_STREAM",
    "ENCODING",
    "QUERY_TOPIC",
    "SPEECH_END",
    "SPEECH_START",
    "STREAM_KEY",
    "STREAM_MS_KEY",
    "TRANSCRIPT_FINAL",
    "TRANSCRIPT_PARTIAL",
    "TRANSCRIPT_TOPIC",
    "TTS_DONE",
    "TTS_ERROR",
    "TTS_START",
    "TTS_TOPIC",
    "USER_QUERY",
    "VAD_TOPIC",
    "VOICED_TOPIC",
    "VOICE_LATENCY",
    "VOICE_TOPIC",
    "WAKE_DETECTED",
    "WAKE_TOPIC",
    "audio_chunk_event",
    "audio_end_event",
    "stream_ms_of",
    "stream_of",
]

# topics (Loom's defaults)
AUDIO_TOPIC = "audio.mic"
VOICED_TOPIC = "audio.voiced"
VAD_TOPIC = "vad"
TRANSCRIPT_TOPIC = "transcript"
WAKE_TOPIC = "wake"
QUERY_TOPIC = "query"
TTS_TOPIC = "tts"
VOICE_TOPIC = "voice"  # loomk: the assistant's turns and per-stage latencies

# event types
AUDIO_CHUNK = "audio_chunk"
AUDIO_VOICED = "audio_voiced"
AUDIO_END = "audio_end"  # loomk: a stream ended (end of a WAV file, a closed device)
SPEECH_START = "vad.speech_start"
SPEECH_END = "vad.speech_end"
WAKE_DETECTED = "wake_word_detected"
TRANSCRIPT_PARTIAL = "transcript.partial"
TRANSCRIPT_FINAL = "transcript.final"
USER_QUERY = "user.query"
TTS_START = "tts.start"
TTS_DONE = "tts.done"
TTS_ERROR = "tts.error"
VOICE_LATENCY = "voice.latency"

ENCODING = "pcm_s16le"
AUDIO_LANE_CAPACITY = 128
"""How many audio chunks the VAD and the wake word queue (2.6 s of 20 ms chunks): a source
that runs ahead waits, so the audio the speech recogniser keeps (10 s) still holds what
their late events point back to, even when a long file is played as fast as possible."""
DEFAULT_STREAM = "mic.primary"

# metadata keys loomk adds to Loom's
STREAM_KEY = "stream"
STREAM_MS_KEY = "stream_ms"


def audio_chunk_event(
    pcm: bytes,
    *,
    sample_rate: int,
    channels: int,
    source: str = DEFAULT_STREAM,
    device: str = "",
    stream: str | None = None,
    offset_frames: int | None = None,
) -> Event:
    """An ``audio_chunk`` as Loom's microphone publishes it: PCM16 LE interleaved, metadata
    ``sample_rate``, ``channels``, ``device``, ``encoding``, ``frame_samples`` (all samples,
    every channel), priority 90; plus ``stream`` (default: the source) and, when given,
    ``offset_frames`` (frames of this stream before the chunk)."""
    metadata = {
        "sample_rate": str(sample_rate),
        "channels": str(channels),
        "device": device,
        "encoding": ENCODING,
        "frame_samples": str(len(pcm) // 2),
        STREAM_KEY: stream or source,
    }
    if offset_frames is not None:
        metadata["offset_frames"] = str(offset_frames)
    return Event(AUDIO_CHUNK, pcm, source=source, metadata=metadata, priority=90)


def audio_end_event(*, source: str = DEFAULT_STREAM, stream: str | None = None) -> Event:
    """The ``audio_end`` that closes a stream: stages finish what they hold for it (an open
    utterance is ended, resamplers flushed)."""
    return Event(AUDIO_END, source=source, metadata={STREAM_KEY: stream or source}, priority=90)


def stream_of(event: Event) -> str:
    """The audio stream an event belongs to: its ``stream`` metadata, else its source."""
    metadata: Mapping[str, str] = event.metadata
    return metadata.get(STREAM_KEY) or event.source or DEFAULT_STREAM


def stream_ms_of(event: Event) -> int | None:
    """Where in its stream an event happened (``stream_ms``), if it says."""
    value = event.metadata.get(STREAM_MS_KEY)
    try:
        return int(value) if value is not None else None
    except ValueError:
        return None
