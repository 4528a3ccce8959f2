"""Wake word: an acoustic detector (openWakeWord) and the agent that opens voice sessions.

Two ways to wake, as :class:`WakeSettings.mode` says:

- ``acoustic`` (default): each audio stream runs an openWakeWord model (``hey_jarvis``
  unless told otherwise) on 80 ms frames; a score over the threshold opens a session
  (``wake_word_detected`` with a ``session_id``), which the speech recogniser decodes.
- ``phrases``: Loom's transcript-based wake. Every utterance is transcribed (STT with
  ``gate='none'``) and a transcript that starts with (or contains) a wake phrase, matched
  fuzzily, wakes; the rest of it, or the next transcript, is the query.

Either way the wake agent turns transcripts into queries (Loom's split of work): the final
transcript of a session it opened becomes ``user.query`` on ``query``.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import trio

from loomk import Agent, Context, Event, QoS, Topic
from loomk_audio._fuzzy import find_phrase
from loomk_audio._oww import FRAME_SAMPLES, WakeModelFiles, load_model, resolve_model
from loomk_audio.errors import AudioFormatError
from loomk_audio.events import (
    AUDIO_CHUNK,
    AUDIO_END,
    AUDIO_LANE_CAPACITY,
    AUDIO_TOPIC,
    QUERY_TOPIC,
    STREAM_KEY,
    STREAM_MS_KEY,
    TRANSCRIPT_FINAL,
    TRANSCRIPT_TOPIC,
    USER_QUERY,
    WAKE_DETECTED,
    WAKE_TOPIC,
    stream_ms_of,
    stream_of,
)
from loomk_audio.pcm import TARGET_RATE, AudioInput, FrameSplitter

if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt

    Samples = npt.NDArray[np.int16]

__all__ = [
    "SESSION_KEY",
    "STT_SOURCE",
    "WAKE_SOURCE",
    "WakeAgent",
    "WakeHit",
    "WakeSettings",
    "WakeWordDetector",
    "new_session_id",
    "resolve_models",
]

SESSION_KEY = "session_id"
WAKE_SOURCE = "wake"
STT_SOURCE = "stt"  # the source of the speech recogniser's events (its audio_end too)
# transcript metadata a query carries on, for the assistant's latency figures
_CARRIED_KEYS = ("decode_ms", "eou_at", "duration_ms", "language", "engine", STREAM_MS_KEY)
WAKE_PRIORITY = 65
QUERY_PRIORITY = 60
_MAX_OPEN_SESSIONS = 64  # sessions waiting for their transcript (oldest forgotten first)


def new_session_id() -> str:
    """A voice session id, ``sess_<hex>`` (Loom's form)."""
    return f"sess_{os.urandom(8).hex()}"


@dataclass(frozen=True, slots=True)
class WakeHit:
    """One detection: which model, what it is said as, its score, and where in the stream
    (``stream_ms``: the end of the 80 ms frame that scored, in 16 kHz stream time)."""

    model: str
    phrase: str
    score: float
    stream_ms: int


class WakeWordDetector:
    """One audio stream's wake word detector: openWakeWord models fed 16 kHz mono audio.

    ``models`` is a wake word (``hey_jarvis``, ``alexa``, ``hey_mycroft``, ``hey_rhasspy``,
    ``okay_nabu``; ``hey_jarvis_v0.1`` spellings too), the path of a ``.tflite`` model, or
    several of them. ``feed`` takes samples in pieces of any size; whole 1280-sample frames
    are scored and the rest carried to the next call. A score of at least ``threshold`` is a
    hit; after a hit that model is deaf for ``refractory_ms`` of stream time and until its
    score has fallen below the threshold again, so one utterance gives one hit (the model is
    never reset: a reset back-fills seconds of zeros, which costs ~0.5 s on the next frame).

    Building one is blocking (the first in a process imports openWakeWord, ~1.5-2 s; later
    ones take ~0.1 s): build it in a worker thread in async code.
    """

    def __init__(
        self,
        models: str | Path | Sequence[str | Path] = "hey_jarvis",
        *,
        threshold: float = 0.5,
        refractory_ms: int = 2000,
    ) -> None:
        if not 0.0 < threshold <= 1.0:
            raise ValueError(f"wake threshold must be in (0, 1], got {threshold}")
        self.files = resolve_models(models)
        self.threshold = threshold
        self.refractory_ms = refractory_ms
        self.position = 0  # 16 kHz samples fed so far
        self.scores: dict[str, float] = {f.name: 0.0 for f in self.files}  # the last frame's
        self._model: Any = load_model(self.files)
        self._keys = dict(zip(self._model.models, self.files, strict=True))  # output -> files
        self._frames = FrameSplitter(FRAME_SAMPLES)
        self._deaf_until = dict.fromkeys(self._keys, -1)  # no hits before this position
        self._armed = dict.fromkeys(self._keys, True)  # False from a hit until a low score

    @property
    def names(self) -> list[str]:
        """The wake words it listens for (``["hey_jarvis"]``)."""
        return [f.name for f in self.files]

    def feed(self, samples: Samples) -> list[WakeHit]:
        """Score the whole frames ``samples`` completes; the hits among them, in order."""
        hits: list[WakeHit] = []
        end = self.position - self._frames.pending
        for frame in self._frames.frames(samples):
            end += FRAME_SAMPLES
            predictions = self._model.predict(frame)
            for key, files in self._keys.items():
                score = float(predictions[key])
                self.scores[files.name] = score
                if score < self.threshold:
                    self._armed[key] = True
                    continue
                if not self._armed[key] or end < self._deaf_until[key]:
                    continue
                self._armed[key] = False
                self._deaf_until[key] = end + self.refractory_ms * TARGET_RATE // 1000
                hits.append(WakeHit(files.name, files.phrase, score, end * 1000 // TARGET_RATE))
        self.position += len(samples)
        return hits


def resolve_models(models: str | Path | Sequence[str | Path]) -> tuple[WakeModelFiles, ...]:
    """The files of one wake word or several (see :func:`~loomk_audio._oww.resolve_model`);
    :class:`~loomk_audio.errors.AudioModelNotFound` names the installed ones."""
    many = [models] if isinstance(models, str | Path) else list(models)
    if not many:
        raise ValueError("at least one wake word model is needed")
    return tuple(resolve_model(m) for m in many)


@dataclass(frozen=True, slots=True)
class WakeSettings:
    """How the wake agent wakes (see the module docstring for the two modes).

    ``acoustic``: ``models`` (shipped names or .tflite paths), ``threshold``,
    ``refractory_ms``. ``phrases``: Loom's ``WAKE_*`` settings (``phrases``,
    ``max_distance``, ``match_anywhere``, ``jw_threshold``, ``min_query_chars``).
    """

    mode: Literal["acoustic", "phrases"] = "acoustic"
    models: tuple[str, ...] = ("hey_jarvis",)
    threshold: float = 0.5
    refractory_ms: int = 2000
    phrases: tuple[str, ...] = ("hey loom", "loom")
    max_distance: int = 1
    match_anywhere: bool = True
    jw_threshold: float = 0.90
    min_query_chars: int = 4
    audio_topic: str = AUDIO_TOPIC
    transcript_topic: str = TRANSCRIPT_TOPIC
    wake_topic: str = WAKE_TOPIC
    query_topic: str = QUERY_TOPIC


class WakeAgent(Agent):
    """Opens voice sessions on a wake word and turns their transcripts into ``user.query``.

    Publishes ``wake_word_detected`` on ``wake`` (metadata ``phrase``, ``session_id``,
    ``stream``; acoustic adds ``model``, ``score``, ``stream_ms``; phrases adds ``text``)
    and ``user.query`` on ``query`` (metadata ``session_id``, ``text``, ``stream``; payload
    the text). Unreadable audio chunks are skipped and counted in ``skipped_chunks``.
    """

    batch_max = 64

    def __init__(self, agent_id: str = "wake", settings: WakeSettings | None = None) -> None:
        super().__init__(agent_id)
        self.settings = settings = settings or WakeSettings()
        if settings.mode not in ("acoustic", "phrases"):
            raise ValueError(f"wake mode must be 'acoustic' or 'phrases', got {settings.mode!r}")
        acoustic = settings.mode == "acoustic"
        self.files = resolve_models(settings.models) if acoustic else ()  # fails early
        transcripts = Topic(
            settings.transcript_topic, QoS.BATCHED, event_types=[TRANSCRIPT_FINAL, AUDIO_END]
        )
        audio = Topic(
            settings.audio_topic,
            QoS.BATCHED,
            event_types=[AUDIO_CHUNK, AUDIO_END],
            capacity=AUDIO_LANE_CAPACITY,
        )
        # transcripts first: a lane is emptied before the next, and audio played fast keeps
        # the audio lane full, which would hold a waiting query back to the end of the file
        self.topics = (transcripts, audio) if self.files else (transcripts,)  # type: ignore[misc]
        self.skipped_chunks = 0
        self._inputs: dict[str, AudioInput] = {}
        self._warned: set[str] = set()  # streams whose unreadable chunk was logged
        self._detectors: dict[str, WakeWordDetector] = {}
        self._sessions: dict[str, str] = {}  # open session id -> stream
        self._armed: dict[str, str] = {}  # phrases mode: stream -> session awaiting its query

    async def on_start(self, ctx: Context) -> None:
        """Load openWakeWord now (in a thread) rather than on the first audio."""
        if self.files:
            await trio.to_thread.run_sync(load_model, self.files)

    async def on_batch(self, ctx: Context, events: list[Event]) -> None:
        """Audio in stream order, per stream, then transcripts, in arrival order."""
        pending: dict[str, list[Samples]] = {}
        for event in events:
            if event.type == TRANSCRIPT_FINAL:
                await self._flush_audio(ctx, pending)
                await self._on_transcript(ctx, event)
            elif event.type == AUDIO_CHUNK:
                samples = self._read_chunk(ctx, event)
                if samples is not None:
                    pending.setdefault(stream_of(event), []).append(samples)
            elif event.type == AUDIO_END:
                await self._flush_audio(ctx, pending)
                await self._on_end(ctx, event)
        await self._flush_audio(ctx, pending)

    def _read_chunk(self, ctx: Context, event: Event) -> Samples | None:
        stream = stream_of(event)
        audio = self._inputs.get(stream)
        if audio is None:
            audio = self._inputs[stream] = AudioInput()
        try:
            return audio.feed(event)
        except AudioFormatError as error:
            self.skipped_chunks += 1
            if stream not in self._warned:  # once per stream: a bad source sends 50 a second
                self._warned.add(stream)
                ctx.log.warning("wake.bad_chunk", stream=stream, error=str(error))
            return None

    async def _flush_audio(self, ctx: Context, pending: dict[str, list[Samples]]) -> None:
        """Run each stream's pending audio through its detector (in a worker thread)."""
        import numpy as np

        for stream, pieces in pending.items():
            detector = self._detectors.get(stream)
            if detector is None:
                detector = await trio.to_thread.run_sync(self._new_detector)
                self._detectors[stream] = detector
            samples = np.concatenate(pieces) if len(pieces) > 1 else pieces[0]
            hits = await trio.to_thread.run_sync(detector.feed, samples)
            for hit in hits:
                await self._open_session(ctx, stream, hit)
        pending.clear()

    def _new_detector(self) -> WakeWordDetector:
        settings = self.settings
        return WakeWordDetector(
            self.settings.models,
            threshold=settings.threshold,
            refractory_ms=settings.refractory_ms,
        )

    async def _on_end(self, ctx: Context, event: Event) -> None:
        """A stream ended: from the source (``audio.mic``), once detection has finished with
        it, pass ``audio_end`` on to ``wake``; from STT (``transcript``: every transcript of
        it is out), pass it on to ``query``. Every stage passes ``audio_end`` on when it is
        done with a stream, so the last stage knows when a stream's turns are all done."""
        stream = stream_of(event)
        ended = Event(AUDIO_END, source=WAKE_SOURCE, metadata={STREAM_KEY: stream})
        if self.files and event.source != STT_SOURCE:
            self._warned.discard(stream)
            self._inputs.pop(stream, None)
            self._detectors.pop(stream, None)
            await ctx.emit(self.settings.wake_topic, ended)
            return
        self._armed.pop(stream, None)
        for session in [s for s, of in self._sessions.items() if of == stream]:
            del self._sessions[session]
        await ctx.emit(self.settings.query_topic, ended)

    async def _open_session(self, ctx: Context, stream: str, hit: WakeHit) -> None:
        session = self._remember_session(stream)
        metadata = {
            "phrase": hit.phrase,
            "model": hit.model,
            "score": f"{hit.score:.3f}",
            SESSION_KEY: session,
            STREAM_KEY: stream,
            STREAM_MS_KEY: str(hit.stream_ms),
        }
        wake = Event(WAKE_DETECTED, source=WAKE_SOURCE, metadata=metadata, priority=WAKE_PRIORITY)
        await ctx.emit(self.settings.wake_topic, wake)

    def _remember_session(self, stream: str) -> str:
        session = new_session_id()
        self._sessions[session] = stream
        while len(self._sessions) > _MAX_OPEN_SESSIONS:
            del self._sessions[next(iter(self._sessions))]
        return session

    async def _on_transcript(self, ctx: Context, event: Event) -> None:
        text = (event.metadata.get("text") or event.payload.decode("utf-8", "replace")).strip()
        if not text:
            return
        stream = stream_of(event)
        session = event.metadata.get(SESSION_KEY, "")
        if session and session in self._sessions:
            del self._sessions[session]
            await self._query(ctx, session, text, stream, event)
        elif self.settings.mode == "phrases":
            await self._detect_phrase(ctx, event, text, stream)

    async def _detect_phrase(self, ctx: Context, event: Event, text: str, stream: str) -> None:
        """Loom's transcript wake: an armed stream's transcript is the query; otherwise a
        transcript with a wake phrase wakes, and its rest is the query if long enough."""
        armed = self._armed.pop(stream, None)
        if armed is not None:
            await self._query(ctx, armed, text, stream, event)
            return
        settings = self.settings
        found = find_phrase(
            text,
            settings.phrases,
            max_distance=settings.max_distance,
            match_anywhere=settings.match_anywhere,
            jw_threshold=settings.jw_threshold,
        )
        if found is None:
            return
        session = new_session_id()
        metadata = {"phrase": found.phrase, "text": text, SESSION_KEY: session, STREAM_KEY: stream}
        at = stream_ms_of(event)
        if at is not None:
            metadata[STREAM_MS_KEY] = str(at)
        wake = Event(WAKE_DETECTED, source=WAKE_SOURCE, metadata=metadata, priority=WAKE_PRIORITY)
        await ctx.emit(settings.wake_topic, wake)
        if len(found.remainder.replace(" ", "")) >= settings.min_query_chars:
            await self._query(ctx, session, found.remainder, stream, event)
        else:
            self._armed[stream] = session

    async def _query(
        self, ctx: Context, session: str, text: str, stream: str, transcript: Event
    ) -> None:
        """Publish ``user.query``; it carries the transcript's timing (``decode_ms``,
        ``eou_at`` ...) on, so the assistant can measure end of speech → answer."""
        metadata = {SESSION_KEY: session, "text": text, STREAM_KEY: stream}
        for key in _CARRIED_KEYS:
            value = transcript.metadata.get(key)
            if value is not None:
                metadata[key] = value
        query = Event(
            USER_QUERY,
            text.encode(),
            source=WAKE_SOURCE,
            metadata=metadata,
            priority=QUERY_PRIORITY,
        )
        await ctx.emit(self.settings.query_topic, query)
