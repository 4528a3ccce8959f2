"""Voice activity detection: where speech starts and ends in each audio stream.

Loom's VAD, reproduced: every frame is classified voiced or not (WebRTC VAD by default,
Silero as an option); ``min_start_ms`` of consecutive voiced frames open an utterance
(``vad.speech_start``, then those frames as ``audio_voiced``: the pre-roll), voiced frames
inside it go out as ``audio_voiced``, and ``hangover_ms`` of unvoiced frames close it
(``vad.speech_end``). Unvoiced frames inside an utterance are not forwarded, as in Loom.

What loomk changes, and why:

- frames are carried across chunks (Loom dropped each chunk's remainder, so 25 ms chunks
  lost a fifth of the audio) and any rate or channel count is read (resampled and downmixed
  by :class:`~loomk_audio.pcm.AudioInput`; Loom took 8/16/32/48 kHz only);
- one classifier per stream, kept (Loom made a fresh WebRTC VAD per chunk);
- utterances are bounded: after ``max_utterance_ms`` one ends (reason ``max_length``) and
  the next starts when the voice goes on, so a monologue never grows an unbounded buffer
  downstream;
- each stream (metadata ``stream``) has its own state, ``audio_end`` closes an open
  utterance (reason ``end_of_stream``), and events say where in the stream they are
  (``stream_ms``), so several microphones or files can share the topics;
- the VAD subscribes losslessly (``QoS.BATCHED``), not Realtime: a file published as fast as
  the bus takes it must not lose frames, and a dropped frame would shift every later
  ``stream_ms``. A live microphone is paced by its hardware, so the queue stays short.

:class:`VoiceActivity` is the state machine alone (no bus), used by :class:`VadAgent` and
by benchmarks.
"""

from __future__ import annotations

import math
import time
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Final, Literal

import trio

from loomk import Agent, Context, Event, QoS, Topic
from loomk_audio._vad_backends import (
    SILERO_FRAME_SAMPLES,
    WEBRTC_FRAME_MS,
    FrameClassifier,
    SileroClassifier,
    WebRtcClassifier,
)
from loomk_audio.errors import AudioFormatError
from loomk_audio.events import (
    AUDIO_CHUNK,
    AUDIO_END,
    AUDIO_LANE_CAPACITY,
    AUDIO_TOPIC,
    AUDIO_VOICED,
    ENCODING,
    SPEECH_END,
    SPEECH_START,
    STREAM_KEY,
    STREAM_MS_KEY,
    VAD_TOPIC,
    VOICED_TOPIC,
    audio_end_event,
    stream_of,
)
from loomk_audio.pcm import TARGET_RATE, AudioInput, FrameSplitter

if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt

    Samples = npt.NDArray[np.int16]

__all__ = [
    "BACKENDS",
    "END_OF_STREAM",
    "MAX_LENGTH",
    "SILENCE",
    "FrameClassifier",
    "SpeechEnd",
    "SpeechStart",
    "VadAgent",
    "VadBackend",
    "VadResult",
    "VadSettings",
    "VadStats",
    "VoiceActivity",
    "VoicedFrame",
    "make_classifier",
]

VadBackend = Literal["webrtc", "silero"]
BACKENDS: Final[tuple[VadBackend, ...]] = ("webrtc", "silero")

# why an utterance ended (metadata ``reason`` of ``vad.speech_end``)
SILENCE: Final = "silence"
MAX_LENGTH: Final = "max_length"
END_OF_STREAM: Final = "end_of_stream"

VAD_SOURCE = "vad"
START_PRIORITY = 70
VOICED_PRIORITY = 80
_FULL_SCALE = 32768.0  # 0 dBFS


@dataclass(frozen=True, slots=True)
class VadSettings:
    """How the VAD decides, and where it listens and speaks (Loom's names and defaults).

    ``mode`` is clamped to 0 to 3 and a ``frame_ms`` other than 10, 20 or 30 becomes 20, as in
    Loom. The Silero backend always uses 32 ms frames (its model's only size) and
    ``silero_threshold`` instead of ``mode``.

    ``gate_dbfs`` (loomk's; None turns it off) makes a frame quieter than that RMS level
    unvoiced whatever the classifier says: WebRTC VAD calls the first 80 to 100 ms of any
    new noise floor speech, even noise at -60 dBFS, which would open an utterance in a quiet
    room. Speech, even quiet, is far louder than -55 dBFS.
    """

    mode: int = 2
    frame_ms: int = 20
    min_start_ms: int = 60
    hangover_ms: int = 200
    max_utterance_ms: int = 15_000
    backend: VadBackend = "webrtc"
    silero_threshold: float = 0.5
    gate_dbfs: float | None = -55.0
    input_topic: str = AUDIO_TOPIC
    voiced_topic: str = VOICED_TOPIC
    vad_topic: str = VAD_TOPIC

    def __post_init__(self) -> None:
        object.__setattr__(self, "mode", min(max(self.mode, 0), 3))
        if self.frame_ms not in WEBRTC_FRAME_MS:
            object.__setattr__(self, "frame_ms", 20)
        if self.backend not in BACKENDS:
            raise ValueError(f"unknown VAD backend {self.backend!r}: use one of {BACKENDS}")
        if self.min_start_ms < 0 or self.hangover_ms < 0:
            raise ValueError("min_start_ms and hangover_ms must be >= 0")
        if self.max_utterance_ms <= 0:
            raise ValueError(f"max_utterance_ms must be > 0, got {self.max_utterance_ms}")
        if self.gate_dbfs is not None and not -120.0 <= self.gate_dbfs <= 0.0:
            raise ValueError(f"gate_dbfs must be in [-120, 0] dBFS, got {self.gate_dbfs}")
        if not 0.0 < self.silero_threshold < 1.0:
            raise ValueError(f"silero_threshold must be in (0, 1), got {self.silero_threshold}")

    @property
    def classified_frame_ms(self) -> int:
        """The frame length the backend classifies: ``frame_ms``, or 32 for Silero."""
        if self.backend == "silero":
            return SILERO_FRAME_SAMPLES * 1000 // TARGET_RATE
        return self.frame_ms

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> VadSettings:
        """Settings from Loom's variables (``VAD_MODE``, ``VAD_FRAME_MS``,
        ``VAD_MIN_START_MS``, ``VAD_HANGOVER_MS``, ``VAD_INPUT_TOPIC``, ``VAD_VOICED_TOPIC``,
        ``VAD_TOPIC``) and loomk's (``VAD_MAX_UTTERANCE_MS``, ``VAD_BACKEND``); a missing or
        malformed number keeps its default, as in Loom."""
        defaults = cls()

        def number(name: str, default: int) -> int:
            try:
                return int(env[name])
            except (KeyError, ValueError):
                return default

        return cls(
            mode=number("VAD_MODE", defaults.mode),
            frame_ms=number("VAD_FRAME_MS", defaults.frame_ms),
            min_start_ms=number("VAD_MIN_START_MS", defaults.min_start_ms),
            hangover_ms=number("VAD_HANGOVER_MS", defaults.hangover_ms),
            max_utterance_ms=number("VAD_MAX_UTTERANCE_MS", defaults.max_utterance_ms),
            backend=_backend(env.get("VAD_BACKEND") or defaults.backend),
            input_topic=env.get("VAD_INPUT_TOPIC") or defaults.input_topic,
            voiced_topic=env.get("VAD_VOICED_TOPIC") or defaults.voiced_topic,
            vad_topic=env.get("VAD_TOPIC") or defaults.vad_topic,
        )


def _backend(name: str) -> VadBackend:
    if name not in BACKENDS:
        raise ValueError(f"unknown VAD backend {name!r}: use one of {BACKENDS}")
    return name


def make_classifier(settings: VadSettings) -> FrameClassifier:
    """A new classifier of the backend ``settings`` name (one per stream: they adapt)."""
    if settings.backend == "silero":
        return SileroClassifier(settings.silero_threshold)
    return WebRtcClassifier(settings.mode, settings.frame_ms)


@dataclass(frozen=True, slots=True)
class SpeechStart:
    """An utterance began; ``stream_ms`` is where its first (pre-roll) frame begins."""

    stream_ms: int


@dataclass(frozen=True, slots=True, eq=False)
class VoicedFrame:
    """A voiced frame of an utterance (16 kHz mono), beginning at ``stream_ms``."""

    samples: Samples
    stream_ms: int


@dataclass(frozen=True, slots=True)
class SpeechEnd:
    """An utterance ended; ``stream_ms`` is where its last voiced frame ends, ``reason`` is
    :data:`SILENCE`, :data:`MAX_LENGTH` or :data:`END_OF_STREAM`."""

    stream_ms: int
    reason: str


VadResult = SpeechStart | VoicedFrame | SpeechEnd


@dataclass(slots=True)
class VadStats:
    """Counters of a VAD: what it read, skipped and found, and what classifying cost."""

    chunks: int = 0
    skipped: int = 0
    frames: int = 0
    voiced_frames: int = 0
    segments: int = 0
    classify_seconds: float = 0.0

    @property
    def microseconds_per_frame(self) -> float:
        """Mean classifier time per frame (0.0 before the first frame)."""
        return self.classify_seconds / self.frames * 1e6 if self.frames else 0.0


class VoiceActivity:
    """Loom's VAD state machine over one stream of 16 kHz mono samples, without a bus.

    :meth:`feed` takes samples in pieces of any length (frames are carried across pieces)
    and returns what happened, in order; :meth:`finish` ends the stream. Positions
    (``stream_ms``) count from the first sample fed. ``stats`` may be shared by several
    machines to total them.
    """

    def __init__(
        self,
        settings: VadSettings | None = None,
        classifier: FrameClassifier | None = None,
        stats: VadStats | None = None,
    ) -> None:
        self.settings = settings or VadSettings()
        self.classifier = classifier or make_classifier(self.settings)
        self.stats = stats if stats is not None else VadStats()
        self.frame_samples = self.classifier.frame_samples
        self.frame_ms = self.frame_samples * 1000 // TARGET_RATE
        self.min_start_frames = math.ceil(
            max(self.settings.min_start_ms, self.frame_ms) / self.frame_ms
        )
        self.hangover_frames = math.ceil(self.settings.hangover_ms / self.frame_ms)
        self.max_utterance_frames = max(1, self.settings.max_utterance_ms // self.frame_ms)
        gate = self.settings.gate_dbfs
        # the gate as a sum of squared samples over a frame, so a frame costs one dot product
        self._gate_energy = (
            -1.0 if gate is None else self.frame_samples * (_FULL_SCALE * 10 ** (gate / 20)) ** 2
        )
        self._splitter = FrameSplitter(self.frame_samples)
        self._position = 0  # samples of the stream consumed as whole frames
        self._in_speech = False
        self._consecutive = 0
        self._countdown = 0
        self._pre_roll: deque[VoicedFrame] = deque(maxlen=self.min_start_frames)
        self._utterance_start = 0  # sample where the open utterance's first frame begins
        self._last_voiced_end = 0  # sample where the latest voiced frame ends

    @property
    def in_speech(self) -> bool:
        """Whether an utterance is open."""
        return self._in_speech

    def feed(self, samples: Samples) -> list[VadResult]:
        """Run the frames ``samples`` completes through the machine."""
        results: list[VadResult] = []
        for frame in self._splitter.frames(samples):
            self._step(frame, results)
        return results

    def finish(self) -> list[VadResult]:
        """The stream ended: close an open utterance (:data:`END_OF_STREAM`) and start
        over; the samples short of a frame are dropped."""
        results: list[VadResult] = []
        if self._in_speech:
            self._end(END_OF_STREAM, results)
        self._splitter = FrameSplitter(self.frame_samples)
        self._position = 0
        self._last_voiced_end = 0
        self._consecutive = 0  # voiced frames of the old stream do not open the new one's
        self._countdown = 0
        self._pre_roll.clear()
        return results

    def _step(self, frame: Samples, results: list[VadResult]) -> None:
        begin = self._position
        self._position = end = begin + len(frame)
        started = time.perf_counter()
        voiced = self.classifier.is_voiced(frame)  # always: it adapts to what it hears
        if voiced and self._gate_energy > 0:
            wide = frame.astype("float64")
            voiced = float(wide @ wide) >= self._gate_energy
        stats = self.stats
        stats.classify_seconds += time.perf_counter() - started
        stats.frames += 1
        if voiced:
            stats.voiced_frames += 1
            self._consecutive += 1
            self._countdown = self.hangover_frames
            self._last_voiced_end = end
            voiced_frame = VoicedFrame(frame, _ms(begin))
            if self._in_speech:
                results.append(voiced_frame)
            else:
                self._pre_roll.append(voiced_frame)
                if self._consecutive >= self.min_start_frames:
                    self._start(results)
        else:
            self._consecutive = 0
            if self._in_speech:
                if self._countdown > 0:
                    self._countdown -= 1
                if self._countdown <= 0:
                    self._end(SILENCE, results)
                    return
            else:
                self._pre_roll.clear()
        if self._in_speech and (end - self._utterance_start) // self.frame_samples >= (
            self.max_utterance_frames
        ):
            self._end(MAX_LENGTH, results)

    def _start(self, results: list[VadResult]) -> None:
        self._in_speech = True
        self._utterance_start = self._position - len(self._pre_roll) * self.frame_samples
        results.append(SpeechStart(_ms(self._utterance_start)))
        results.extend(self._pre_roll)
        self._pre_roll.clear()

    def _end(self, reason: str, results: list[VadResult]) -> None:
        self._in_speech = False
        self._consecutive = 0
        self._countdown = 0
        self._pre_roll.clear()
        self.stats.segments += 1
        results.append(SpeechEnd(_ms(self._last_voiced_end), reason))


def _ms(sample: int) -> int:
    return sample * 1000 // TARGET_RATE


@dataclass(slots=True)
class _Stream:
    """What the agent keeps per stream: its converter and its machine."""

    audio: AudioInput
    activity: VoiceActivity
    warned: bool = field(default=False)


@dataclass(slots=True)
class _Outcome:
    """What one event of a batch gave: results to publish, the end of the stream to pass
    on, or the reason a chunk could not be read (to log)."""

    stream: str
    results: list[VadResult]
    ended: bool = False
    problem: str | None = None


class VadAgent(Agent):
    """The VAD on the bus: ``audio_chunk``/``audio_end`` in, ``vad.speech_*`` and
    ``audio_voiced`` out, one :class:`VoiceActivity` per stream (metadata ``stream``).

    It takes its events in batches (:meth:`on_batch`): at 50 chunks a second per stream a
    scheduler round trip per chunk would cost more than the classifying. A chunk that cannot
    be read (odd length, bad rate, unknown encoding) is skipped and counted, and logged once
    per stream; the agent goes on with the next. After a stream's ``audio_end`` its state is
    gone: chunks that come later under the same name start a new stream at 0 ms.
    """

    batch_max = 64  # results go out when a batch commits: their lag stays short

    def __init__(self, agent_id: str = "vad", settings: VadSettings | None = None) -> None:
        super().__init__(agent_id)
        self.settings = settings or VadSettings()
        self.topics = (  # type: ignore[misc]  # per instance: the input topic is a setting
            Topic(
                self.settings.input_topic,
                qos=QoS.BATCHED,
                event_types=(AUDIO_CHUNK, AUDIO_END),
                capacity=AUDIO_LANE_CAPACITY,
            ),
        )
        self._streams: dict[str, _Stream] = {}
        self._stats = VadStats()

    def stats(self) -> VadStats:
        """A snapshot of the counters, every stream together."""
        return replace(self._stats)

    @property
    def open_streams(self) -> list[str]:
        """The streams the agent holds state for (seen, and not ended by ``audio_end``)."""
        return list(self._streams)

    async def on_start(self, ctx: Context) -> None:
        # a missing engine fails the start, not a later batch (in a thread: Silero loads a model)
        await trio.to_thread.run_sync(make_classifier, self.settings)

    async def on_batch(self, ctx: Context, events: list[Event]) -> None:
        # WebRTC classifies a frame in microseconds; Silero in about a millisecond, which
        # over a batch would hold the event loop: it classifies in a worker thread
        if self.settings.backend == "silero":
            outcomes = await trio.to_thread.run_sync(self._classify, events)
        else:
            outcomes = self._classify(events)
        for outcome in outcomes:
            if outcome.problem is not None:
                ctx.log.warning("vad.chunk_skipped", stream=outcome.stream, reason=outcome.problem)
            for result in outcome.results:
                await self._publish(ctx, outcome.stream, result)
            if outcome.ended:  # passed on once the stream's results are out
                ended = audio_end_event(source=VAD_SOURCE, stream=outcome.stream)
                await ctx.emit(self.settings.vad_topic, ended)

    def _classify(self, events: list[Event]) -> list[_Outcome]:
        """What each event of the batch gives, in order (no awaiting, so it can run in a
        worker thread: only this agent's handler touches its streams)."""
        outcomes = []
        for event in events:
            stream = stream_of(event)
            if event.type == AUDIO_END:
                state = self._streams.pop(stream, None)
                results = []
                if state is not None:
                    results = state.activity.feed(state.audio.flush()) + state.activity.finish()
                outcomes.append(_Outcome(stream, results, ended=True))
            else:
                outcomes.append(self._read_chunk(stream, event))
        return outcomes

    def _read_chunk(self, stream: str, event: Event) -> _Outcome:
        state = self._streams.get(stream)
        if state is None:
            activity = VoiceActivity(self.settings, stats=self._stats)
            state = self._streams[stream] = _Stream(AudioInput(), activity)
        self._stats.chunks += 1
        try:
            samples = state.audio.feed(event)
        except AudioFormatError as error:
            self._stats.skipped += 1
            if state.warned:
                return _Outcome(stream, [])
            state.warned = True  # logged once per stream
            return _Outcome(stream, [], problem=str(error))
        return _Outcome(stream, state.activity.feed(samples))

    async def _publish(self, ctx: Context, stream: str, result: VadResult) -> None:
        settings = self.settings
        common = {
            "sample_rate": str(TARGET_RATE),
            "frame_ms": str(settings.classified_frame_ms),
            STREAM_KEY: stream,
            STREAM_MS_KEY: str(result.stream_ms),
        }
        if isinstance(result, VoicedFrame):
            metadata = {**common, "channels": "1", "encoding": ENCODING}
            event = Event(
                AUDIO_VOICED,
                result.samples.tobytes(),
                source=VAD_SOURCE,
                metadata=metadata,
                priority=VOICED_PRIORITY,
            )
            await ctx.emit(settings.voiced_topic, event)
            return
        metadata = {**common, "mode": str(settings.mode), "backend": settings.backend}
        if isinstance(result, SpeechEnd):
            metadata["reason"] = result.reason
            event_type = SPEECH_END
        else:
            event_type = SPEECH_START
        event = Event(event_type, source=VAD_SOURCE, metadata=metadata, priority=START_PRIORITY)
        await ctx.emit(settings.vad_topic, event)
