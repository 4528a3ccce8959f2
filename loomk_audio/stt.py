"""Speech to text: recognisers behind one small protocol, and the agent that streams to them.

:class:`SttAgent` keeps the last seconds of every audio stream and decodes while the user
speaks (in a worker thread, never on the trio thread), so when the utterance ends only its
tail is left to decode: the final transcript comes tens of milliseconds after the end of
speech, not a whole decode later. What it decodes depends on ``gate``:

- ``"wake"`` (default): a voice session opens at ``wake_word_detected``; decoding starts a
  little before the wake (``preroll_ms``: the command may already have begun when the wake
  model fires) and ends at the first end of speech after it. The wake phrase the transcript
  starts with is stripped; if nothing is left (the user said only "hey jarvis" and paused),
  the session stays open for the next utterance until ``no_speech_timeout_ms`` of silence.
- ``"none"``: every utterance the VAD reports is transcribed (Loom's behaviour; what the
  wake agent's ``phrases`` mode needs).

Engines: pocketsphinx (English, the default: open LM, or a grammar) and Vosk (a Vosk model
folder, or ``"ko"`` for the installed Korean one).
"""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal, Protocol

import trio

from loomk import Agent, Context, Event, QoS, Topic
from loomk_audio._fuzzy import strip_wake_phrase
from loomk_audio._sphinx import SphinxRecognizer
from loomk_audio._sphinx_process import ProcessRecognizer
from loomk_audio._vosk import VoskRecognizer, resolve_vosk_model
from loomk_audio.errors import AudioFormatError
from loomk_audio.events import (
    AUDIO_CHUNK,
    AUDIO_END,
    AUDIO_TOPIC,
    AUDIO_VOICED,
    SPEECH_END,
    SPEECH_START,
    STREAM_KEY,
    STREAM_MS_KEY,
    TRANSCRIPT_FINAL,
    TRANSCRIPT_PARTIAL,
    TRANSCRIPT_TOPIC,
    VAD_TOPIC,
    VOICED_TOPIC,
    WAKE_DETECTED,
    WAKE_TOPIC,
    stream_ms_of,
    stream_of,
)
from loomk_audio.pcm import TARGET_RATE, AudioInput
from loomk_audio.wake import SESSION_KEY, STT_SOURCE

if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt

    Samples = npt.NDArray[np.int16]

__all__ = [
    "STT_SOURCE",
    "Recognizer",
    "SampleRing",
    "SphinxRecognizer",
    "SttAgent",
    "SttSettings",
    "VoskRecognizer",
    "open_recognizer",
]

TRANSCRIPT_PRIORITY = 70
_MAX_ENDED_STREAMS = 4  # ended streams waiting for the other stages' audio_end
_STAGES = ("vad", "wake")  # sources whose audio_end says that stage is done with a stream


class Recognizer(Protocol):
    """A streaming speech recogniser for one utterance at a time, 16 kHz mono int16.

    Its methods block (they decode): call them from a worker thread in async code.
    """

    engine: str
    language: str

    def start(self) -> None:
        """Begin an utterance."""

    def feed(self, samples: Samples) -> None:
        """Decode the next samples of the utterance."""

    def partial(self) -> str:
        """The text so far."""

    def finish(self) -> str:
        """End the utterance; its final text ("" for nothing)."""

    def close(self) -> None:
        """Let go of what it holds (a worker process); it is not used again."""


@dataclass(frozen=True, slots=True)
class SttSettings:
    """What the STT agent decodes, with which engine, and when.

    Engine: pocketsphinx unless ``vosk_model`` is set (a Vosk model folder, ``"ko"`` or
    ``"auto"``). ``grammar`` (JSGF text) or ``phrases`` (a command list; Vosk's phrase
    list) restrict recognition; ``unknown_words`` says what a phrase with words the
    pocketsphinx dictionary lacks does (``"error"`` or ``"drop"`` it with a warning).

    Timing, all in stream milliseconds: ``preroll_ms`` before the wake (None: 320 with the
    open LM, 160 with a grammar: with flite one-breath commands, 0 loses the first word and
    320 lets the wake word's tail force a grammar onto a wrong command),
    ``speech_pad_ms`` around VAD boundaries, ``max_utterance_ms``, ``no_speech_timeout_ms``
    (a session with no speech closes), ``min_utterance_ms`` (shorter ones are skipped),
    ``partial_interval_ms`` (audio between ``transcript.partial`` events), ``buffer_ms``
    (audio kept per stream). ``await_ends_from``: see :meth:`awaited_ends`.

    ``rescore_grammar`` (JSGF text; pocketsphinx's open model only): each utterance is
    decoded again under it, and a command close to what the open model heard replaces it
    (see :class:`~loomk_audio._sphinx.SphinxRecognizer`); the voice pipeline sets it to
    the local model's commands (:func:`loomk_audio.grammar.command_grammar`).

    ``decode_in_processes`` (pocketsphinx): each recogniser decodes in a worker process of
    its own. pocketsphinx holds the GIL while it decodes, so in-process the decoding of every
    stream shares one core; with several streams at once, workers use every core (each costs
    a process of ~150 MB and ~1 s to start).

    ``recognizers``: how many recognisers are made when the agent starts. One is used per
    utterance being decoded, and more are made when more streams speak at once; making one
    takes 0.4-1 s, which delays the first utterance of every extra stream: give the number
    of streams that may speak at once.
    """

    gate: Literal["wake", "none"] = "wake"
    vosk_model: str | None = None
    grammar: str | None = None
    phrases: tuple[str, ...] = ()
    unknown_words: Literal["error", "drop"] = "error"
    language: str | None = None
    preroll_ms: int | None = None
    speech_pad_ms: int = 150
    max_utterance_ms: int = 8000
    no_speech_timeout_ms: int = 3000
    min_utterance_ms: int = 200
    partial_interval_ms: int = 500
    buffer_ms: int = 10_000
    audio_topic: str = AUDIO_TOPIC
    vad_topic: str = VAD_TOPIC
    voiced_topic: str = VOICED_TOPIC
    wake_topic: str = WAKE_TOPIC
    transcript_topic: str = TRANSCRIPT_TOPIC
    await_ends_from: tuple[str, ...] | None = None
    rescore_grammar: str | None = None
    decode_in_processes: bool = False
    recognizers: int = 1

    def awaited_ends(self) -> tuple[str, ...]:
        """Whose ``audio_end`` finishes a stream: ``await_ends_from``, or by default the
        source's (``"audio"``), the VAD's and, with ``gate='wake'``, the wake word's (every
        stage passes ``audio_end`` on once done with a stream, so the events they publish
        about its end still reach this agent before it closes the stream)."""
        if self.await_ends_from is not None:
            return self.await_ends_from
        return ("audio", "vad", "wake") if self.gate == "wake" else ("audio", "vad")

    @property
    def engine(self) -> str:
        """``"vosk"`` or ``"pocketsphinx"``."""
        return "vosk" if self.vosk_model else "pocketsphinx"

    @property
    def restricted(self) -> bool:
        """Whether recognition is restricted to a grammar or phrase list."""
        return bool(self.grammar or self.phrases)

    def effective_preroll_ms(self) -> int:
        """``preroll_ms``, or its default for the engine and grammar."""
        if self.preroll_ms is not None:
            return self.preroll_ms
        return 160 if self.restricted else 320


def open_recognizer(settings: SttSettings) -> Recognizer:
    """A new recogniser as ``settings`` say (blocking: it may load a model).

    :class:`~loomk_audio.errors.AudioDependencyMissing` when the engine's package is not
    installed, :class:`~loomk_audio.errors.AudioModelNotFound` when its model is not there.
    """
    if settings.vosk_model:
        return VoskRecognizer(
            settings.vosk_model, phrases=settings.phrases, language=settings.language or ""
        )
    if settings.decode_in_processes:
        return ProcessRecognizer(
            rescore=settings.rescore_grammar,
            grammar=settings.grammar,
            phrases=settings.phrases,
            unknown_words=settings.unknown_words,
            language=settings.language or "en-us",
        )
    return SphinxRecognizer(
        rescore=settings.rescore_grammar,
        grammar=settings.grammar,
        phrases=settings.phrases,
        unknown_words=settings.unknown_words,
        language=settings.language or "en-us",
    )


class SampleRing:
    """The last ``capacity`` samples of a stream, addressed by stream position."""

    def __init__(self, capacity: int) -> None:
        import numpy as np

        self.capacity = capacity
        self.end = 0  # stream position after the newest sample
        self._data: Samples = np.zeros(capacity, dtype=np.int16)

    @property
    def start(self) -> int:
        """The oldest stream position still held."""
        return max(0, self.end - self.capacity)

    def append(self, samples: Samples) -> None:
        """Add the stream's next samples (dropping the oldest beyond capacity)."""
        import numpy as np

        n = len(samples)
        if n >= self.capacity:  # position p is kept at index p % capacity
            self._data[:] = np.roll(samples[-self.capacity :], (self.end + n) % self.capacity)
        elif n:
            at = self.end % self.capacity
            first = min(n, self.capacity - at)
            self._data[at : at + first] = samples[:first]
            self._data[: n - first] = samples[first:]
        self.end += n

    def slice(self, begin: int, stop: int) -> Samples:
        """The samples from position ``begin`` to ``stop``, clipped to what is held."""
        import numpy as np

        begin, stop = max(begin, self.start), min(stop, self.end)
        if stop <= begin:
            return np.zeros(0, dtype=np.int16)
        at, length = begin % self.capacity, stop - begin
        if at + length <= self.capacity:
            return self._data[at : at + length].copy()
        return np.concatenate((self._data[at:], self._data[: at + length - self.capacity]))


@dataclass(slots=True)
class _Utterance:
    """Audio being decoded: from ``start``, fed up to ``fed``, until ``end`` once known."""

    recognizer: Recognizer
    start: int
    fed: int
    next_partial: int
    end: int | None = None
    eou_at: float = 0.0  # trio time at which the end became known
    reason: str = "silence"
    last_partial: str = ""


@dataclass(slots=True)
class _Speech:
    """A stretch of speech the VAD reported (stream positions); ``end`` None while open."""

    start: int
    end: int | None = None


@dataclass(slots=True)
class _Session:
    """A voice session opened by a wake word; ``resume_from`` is where its next utterance
    may start after one that held only the wake phrase."""

    session_id: str
    phrase: str
    opened_at: int
    resume_from: int


@dataclass(slots=True)
class _Stream:
    """One audio stream's state."""

    ring: SampleRing
    audio: AudioInput = field(default_factory=AudioInput)
    speech: list[_Speech] = field(default_factory=list)  # recent, oldest first
    done_until: int = 0  # gate 'none': speech starting before this has been taken
    session: _Session | None = None
    utterance: _Utterance | None = None
    ended: bool = False  # the source's audio_end came: no more audio
    ends: set[str] = field(default_factory=set)  # the stages that said the stream ended
    voiced_until: int = 0  # the end of the latest voiced frame the VAD published
    vad_until: int = 0  # the furthest position the VAD has said anything about
    warned: bool = False  # an unreadable chunk of it was logged

    @property
    def in_speech(self) -> bool:
        """Whether the VAD's latest speech is still open."""
        return bool(self.speech) and self.speech[-1].end is None


_MAX_SPEECH = 32  # VAD stretches remembered per stream


def _samples(ms: int) -> int:
    return ms * TARGET_RATE // 1000


def _ms(samples: int) -> int:
    return samples * 1000 // TARGET_RATE


class SttAgent(Agent):
    """Transcribes speech from ``audio.mic`` as the VAD and the wake word delimit it.

    Subscribes ``audio.mic`` (``audio_chunk``, ``audio_end``), ``vad`` (speech start and
    end, ``audio_end``), ``audio.voiced`` (only where the VAD's voiced frames are: how far
    speech is confirmed) and, with ``gate='wake'``, ``wake`` (``wake_word_detected``,
    ``audio_end``), all batched. Each subscription is its own lane, so events of different
    topics do not come in publish order: the agent decides by stream position
    (``stream_ms``), not by arrival, keeping the last seconds of audio and the VAD's recent
    speech per stream.

    Publishes ``transcript.partial`` and ``transcript.final`` on ``transcript`` (source
    ``stt``, priority 70; payload and metadata ``text``; metadata ``sample_rate``,
    ``duration_ms``, ``language``, ``engine``, ``stream``, ``stream_ms`` (where the decoded
    audio starts), ``session_id`` when gated; the final adds ``reason`` (silence,
    max_length, end_of_stream), ``decode_ms``, from the end of the utterance to the text,
    and ``eou_at``, the ``trio.current_time()`` at which the end of the utterance was
    handled). Once the source, the VAD and the wake word have all passed ``audio_end`` on,
    the stream's last utterance is finished and ``audio_end`` goes on to ``transcript``.

    Unreadable chunks are skipped and counted in ``skipped_chunks``; a failed decode is
    logged and counted in ``failed_decodes``.
    """

    batch_max = 64

    def __init__(self, agent_id: str = "stt", settings: SttSettings | None = None) -> None:
        super().__init__(agent_id)
        self.settings = settings = settings or SttSettings()
        if settings.gate not in ("wake", "none"):
            raise ValueError(f"STT gate must be 'wake' or 'none', got {settings.gate!r}")
        if settings.vosk_model:
            resolve_vosk_model(settings.vosk_model)  # AudioModelNotFound now, not at start
        vad_types = [SPEECH_START, SPEECH_END, AUDIO_END]
        topics = [
            Topic(settings.audio_topic, QoS.BATCHED, event_types=[AUDIO_CHUNK, AUDIO_END]),
            Topic(settings.vad_topic, QoS.BATCHED, event_types=vad_types),
            # the VAD's voiced frames say how far it has confirmed speech (see _advance)
            Topic(settings.voiced_topic, QoS.BATCHED, event_types=[AUDIO_VOICED]),
        ]
        if settings.gate == "wake":
            wake_types = [WAKE_DETECTED, AUDIO_END]
            topics.append(Topic(settings.wake_topic, QoS.BATCHED, event_types=wake_types))
        self.topics = tuple(topics)  # type: ignore[misc]  # per-instance, from the settings
        self.skipped_chunks = 0
        self.failed_decodes = 0
        self._streams: dict[str, _Stream] = {}
        self._idle: list[Recognizer] = []

    async def on_start(self, ctx: Context) -> None:
        """Load the engine now (in a thread), not at the first utterance."""
        while len(self._idle) < max(1, self.settings.recognizers):
            self._idle.append(await trio.to_thread.run_sync(open_recognizer, self.settings))

    async def on_batch(self, ctx: Context, events: list[Event]) -> None:
        """Take in the batch, then decode what it made decodable (one thread hop per
        stream and step, not per chunk)."""
        touched: dict[str, None] = {}
        for event in events:
            name = stream_of(event)
            if event.type == AUDIO_CHUNK:
                await self._read_chunk(ctx, name, event)
            elif event.type in (SPEECH_START, SPEECH_END):
                self._on_vad(name, event)
            elif event.type == AUDIO_VOICED:
                self._on_voiced(name, event)
            elif event.type == WAKE_DETECTED:
                await self._on_wake(name, event)
            elif event.type == AUDIO_END:
                await self._advance(ctx, name)
                await self._on_end(ctx, name, event)
            touched[name] = None
        async with trio.open_nursery() as nursery:  # streams decode side by side
            for name in touched:
                nursery.start_soon(self._advance, ctx, name)

    async def on_stop(self, ctx: Context) -> None:
        """Let the recognisers go (worker processes end)."""
        held = [
            *self._idle,
            *(s.utterance.recognizer for s in self._streams.values() if s.utterance),
        ]
        self._idle = []
        for recognizer in held:
            await trio.to_thread.run_sync(recognizer.close)

    # ---- input ---------------------------------------------------------------------------

    def _new_stream(self, name: str) -> _Stream:
        state = self._streams[name] = _Stream(SampleRing(_samples(self.settings.buffer_ms)))
        return state

    async def _read_chunk(self, ctx: Context, name: str, event: Event) -> None:
        state = self._streams.get(name)
        if state is not None and state.ended:  # the name is reused: a new stream
            await self._close_stream(ctx, name)
            state = None
        if state is None:
            state = self._new_stream(name)
        try:
            samples = state.audio.feed(event)
        except AudioFormatError as error:
            self.skipped_chunks += 1
            if not state.warned:  # once per stream: a bad source sends 50 a second
                state.warned = True
                ctx.log.warning("stt.bad_chunk", stream=name, error=str(error))
            return
        state.ring.append(samples)

    def _on_vad(self, name: str, event: Event) -> None:
        """Remember the VAD's speech; what it means is worked out in :meth:`_advance`."""
        state = self._streams.get(name)
        at = stream_ms_of(event)
        if state is None or at is None:
            return
        position = _samples(at)
        state.vad_until = max(state.vad_until, position)
        speech = state.speech
        if event.type == SPEECH_START:
            if not state.in_speech:
                speech.append(_Speech(position))
        elif state.in_speech:
            speech[-1].end = max(position, speech[-1].start)
        else:  # an end without its start (it came before this agent did)
            speech.append(_Speech(position, position))
        del speech[: max(0, len(speech) - _MAX_SPEECH)]

    def _on_voiced(self, name: str, event: Event) -> None:
        """Move the stream's horizon of confirmed speech to the frame's end."""
        state = self._streams.get(name)
        at = stream_ms_of(event)
        if state is None or at is None:
            return
        try:
            frame_ms = int(event.metadata.get("frame_ms") or 0)
        except ValueError:
            frame_ms = 0
        end = _samples(at + max(frame_ms, 0))
        state.voiced_until = max(state.voiced_until, end)
        state.vad_until = max(state.vad_until, end)

    async def _on_wake(self, name: str, event: Event) -> None:
        """Open a session: decode from the pre-roll before the wake."""
        state = self._streams.get(name)
        at = stream_ms_of(event)
        if state is None or at is None:
            return
        await self._drop_utterance(state)
        wake = _samples(at)
        phrase = event.metadata.get("phrase") or "hey jarvis"
        session_id = event.metadata.get(SESSION_KEY) or ""
        state.session = _Session(session_id, phrase, wake, wake)
        start = max(wake - _samples(self.settings.effective_preroll_ms()), state.ring.start)
        await self._open_utterance(state, start)

    async def _on_end(self, ctx: Context, name: str, event: Event) -> None:
        """``audio_end`` from the source (no more audio), the VAD or the wake word (that
        stage is done with the stream). When every stage awaited has said so, the stream is
        finished: see :meth:`_close_stream`."""
        stage = event.source if event.source in _STAGES else "audio"
        state = self._streams.get(name)
        if state is None:
            if stage != "audio":
                return  # a stream already closed (or never seen): nothing to wait for
            state = self._new_stream(name)
        state.ends.add(stage)
        state.ended = state.ended or stage == "audio"
        if state.ended and state.ends.issuperset(self.settings.awaited_ends()):
            await self._close_stream(ctx, name)
            return
        waiting = [n for n, s in self._streams.items() if s.ended]
        for old in waiting[: max(0, len(waiting) - _MAX_ENDED_STREAMS)]:
            await self._close_stream(ctx, old)  # a stage that never says: stop waiting

    async def _close_stream(self, ctx: Context, name: str) -> None:
        """Finish the stream's utterance with the audio there is, forget the stream, and
        pass ``audio_end`` on to ``transcript``: every transcript of it is out."""
        state = self._streams.get(name)
        if state is None:
            return
        state.ended = True
        await self._advance(ctx, name)
        utterance = state.utterance
        if utterance is not None:
            if utterance.end is None:
                self._ends_at(utterance, state.ring.end, "end_of_stream")
            await self._finish(ctx, name, state)
        await self._drop_utterance(state)
        del self._streams[name]
        ended = Event(AUDIO_END, source=STT_SOURCE, metadata={STREAM_KEY: name})
        await ctx.emit(self.settings.transcript_topic, ended)

    # ---- deciding and decoding -----------------------------------------------------------

    async def _advance(self, ctx: Context, name: str) -> None:
        """Open, feed and finish utterances as far as the audio and the VAD's speech allow."""
        state = self._streams.get(name)
        settings = self.settings
        while state is not None:
            utterance = state.utterance
            if utterance is None:
                utterance = await self._next_utterance(ctx, name, state)
                if utterance is None:
                    return
            if utterance.end is None and not self._find_end(state, utterance):
                await self._drop_utterance(state)  # no speech after the wake
                state.session = None
                return
            limit = utterance.start + _samples(settings.max_utterance_ms)
            if utterance.end is not None and utterance.end > limit:
                utterance.end, utterance.reason = limit, "max_length"
            # Until its end is known, an utterance is fed only as far as the VAD has
            # confirmed speech (plus the pad): what a decoder hears must not depend on how
            # far the audio ran ahead of the VAD's events (their lanes drain separately),
            # or the same audio would give different words from one run to the next.
            horizon = state.voiced_until + _samples(settings.speech_pad_ms)
            stop = min(
                state.ring.end, limit, utterance.end if utterance.end is not None else horizon
            )
            try:
                await self._decode(ctx, name, state, utterance, stop)
            except Exception as error:  # an engine failure must not stop the agent
                self.failed_decodes += 1
                ctx.log.error("stt.decode_failed", stream=name, error=repr(error))
                state.utterance = state.session = None
                await _discard(utterance.recognizer)
                return
            if utterance.end is None and utterance.fed >= limit:
                self._ends_at(utterance, limit, "max_length")
            if utterance.end is None:  # still speaking, or silence after the wake
                if self._silent_too_long(state, utterance.start):
                    await self._drop_utterance(state)
                    state.session = None
                return
            if utterance.fed < utterance.end and not state.ended:
                return  # the end is known; its audio has not all come yet
            await self._finish(ctx, name, state)

    async def _next_utterance(self, ctx: Context, name: str, state: _Stream) -> _Utterance | None:
        """The next utterance to decode, opened, if the VAD has reported its speech."""
        pad = _samples(self.settings.speech_pad_ms)
        shortest = _samples(self.settings.min_utterance_ms)
        if self.settings.gate == "none":
            for speech in state.speech:
                if speech.start < state.done_until:
                    continue
                state.done_until = speech.start + 1  # taken: this speech is not opened again
                if speech.end is not None and speech.end - speech.start < shortest:
                    continue  # too short to be speech (Loom skips < 200 ms)
                return await self._open_utterance(state, max(speech.start - pad, state.ring.start))
            return None
        session = state.session
        if session is None:
            return None
        timeout = _samples(self.settings.no_speech_timeout_ms)
        for speech in state.speech:
            if speech.start > session.resume_from:
                if speech.start - session.resume_from >= timeout:
                    break  # too late: the session timed out before it
                start = max(speech.start - pad, session.resume_from, state.ring.start)
                return await self._open_utterance(state, start)
        else:
            if not self._silent_too_long(state, session.resume_from):
                return None
        ctx.log.debug("stt.no_speech", stream=name, session_id=session.session_id)
        state.session = None
        return None

    def _find_end(self, state: _Stream, utterance: _Utterance) -> bool:
        """Set the utterance's end from the VAD's speech, if it has come: gated, the first
        end of speech at least ``min_utterance_ms`` after the utterance starts; otherwise
        the end of the speech it was opened for. False when a gated utterance turns out to
        hold no speech: the next speech starts ``no_speech_timeout_ms`` or more after it."""
        settings = self.settings
        shortest = _samples(settings.min_utterance_ms)
        timeout = _samples(settings.no_speech_timeout_ms)
        gated = settings.gate == "wake"
        last = utterance.start  # the last sign of speech, for the timeout
        for speech in state.speech:
            if gated and speech.end is not None and speech.end < utterance.start + shortest:
                last = max(last, speech.end)  # over before this utterance really began
                continue
            if not gated and speech.start < utterance.start:
                continue
            if gated and speech.start - last >= timeout:
                return False
            if speech.end is not None:
                pad = _samples(settings.speech_pad_ms)
                self._ends_at(utterance, speech.end + pad, "silence")
            return True
        return True

    @staticmethod
    def _ends_at(utterance: _Utterance, end: int, reason: str) -> None:
        utterance.end = max(end, utterance.start)
        utterance.reason = reason
        utterance.eou_at = trio.current_time()

    def _silent_too_long(self, state: _Stream, since: int) -> bool:
        """No speech reported since ``since`` (or the last speech after it) for
        ``no_speech_timeout_ms`` of stream time (never on an ended stream)."""
        if state.ended or state.in_speech:
            return False
        last = max([since, *(s.end for s in state.speech if s.end is not None)])
        # measured on the VAD's clock, not the audio's, for the reason given in _advance
        return state.vad_until - last >= _samples(self.settings.no_speech_timeout_ms)

    async def _decode(
        self, ctx: Context, name: str, state: _Stream, utterance: _Utterance, stop: int
    ) -> None:
        """Feed the utterance's recogniser up to ``stop`` (in a thread); publish partials."""
        if stop <= utterance.fed:
            return
        samples = state.ring.slice(utterance.fed, stop)
        begin = stop - len(samples)  # later than ``fed`` if audio fell out of the ring
        interval = _samples(self.settings.partial_interval_ms)
        texts = await trio.to_thread.run_sync(
            _feed_with_partials,
            utterance.recognizer,
            samples,
            begin,
            utterance.next_partial,
            interval,
        )
        utterance.fed = stop
        while utterance.next_partial <= stop:
            utterance.next_partial += interval
        for text in texts:
            shown = self._shown_text(state, text)
            if shown and shown != utterance.last_partial:
                utterance.last_partial = shown
                event = self._transcript(TRANSCRIPT_PARTIAL, name, state, utterance, shown)
                await ctx.emit(self.settings.transcript_topic, event)

    async def _open_utterance(self, state: _Stream, start: int) -> _Utterance:
        recognizer = self._idle.pop() if self._idle else None
        if recognizer is None:
            recognizer = await trio.to_thread.run_sync(open_recognizer, self.settings)
        await trio.to_thread.run_sync(recognizer.start)
        interval = _samples(self.settings.partial_interval_ms)
        state.utterance = _Utterance(recognizer, start, start, next_partial=start + interval)
        return state.utterance

    async def _drop_utterance(self, state: _Stream) -> None:
        utterance, state.utterance = state.utterance, None
        if utterance is None:
            return
        try:
            await trio.to_thread.run_sync(utterance.recognizer.finish)
        except Exception:  # a failed engine (a dead worker) is not reused
            self.failed_decodes += 1
            await _discard(utterance.recognizer)
            return
        self._idle.append(utterance.recognizer)

    async def _finish(self, ctx: Context, name: str, state: _Stream) -> None:
        """Decode the utterance's tail and publish its final transcript (if any text)."""
        utterance = state.utterance
        assert utterance is not None
        assert utterance.end is not None
        began = time.perf_counter()
        failed = False
        try:
            await self._decode(ctx, name, state, utterance, min(utterance.end, state.ring.end))
            text = await trio.to_thread.run_sync(utterance.recognizer.finish)
        except Exception as error:  # an engine failure must not stop the agent
            self.failed_decodes += 1
            ctx.log.error("stt.decode_failed", stream=name, error=repr(error))
            text, failed = "", True
        decode_ms = (time.perf_counter() - began) * 1000
        state.utterance = None
        if failed:  # not reused: the next utterance gets a fresh recogniser
            await _discard(utterance.recognizer)
        else:
            self._idle.append(utterance.recognizer)
        shown = self._shown_text(state, text)
        session = state.session
        if not shown:
            if session is not None and utterance.reason == "silence":
                session.resume_from = utterance.end  # only the wake phrase: wait for more
            else:
                state.session = None
            return
        event = self._transcript(TRANSCRIPT_FINAL, name, state, utterance, shown)
        metadata = dict(event.metadata)
        metadata.update(
            decode_ms=f"{decode_ms:.1f}", eou_at=repr(utterance.eou_at), reason=utterance.reason
        )
        await ctx.emit(self.settings.transcript_topic, event.replace(metadata=metadata))
        state.session = None

    def _shown_text(self, state: _Stream, text: str) -> str:
        """The text as published: without the wake phrase in a session."""
        if state.session is None:
            return " ".join(text.split())
        return strip_wake_phrase(text, state.session.phrase)

    def _transcript(
        self, kind: str, name: str, state: _Stream, utterance: _Utterance, text: str
    ) -> Event:
        recognizer = utterance.recognizer
        end = max(utterance.end or 0, utterance.fed)
        metadata = {
            "sample_rate": str(TARGET_RATE),
            "duration_ms": str(_ms(end - utterance.start)),
            "language": recognizer.language,
            "text": text,
            "engine": recognizer.engine,
            STREAM_KEY: name,
            STREAM_MS_KEY: str(_ms(utterance.start)),
        }
        if state.session is not None and state.session.session_id:
            metadata[SESSION_KEY] = state.session.session_id
        return Event(
            kind, text.encode(), source=STT_SOURCE, metadata=metadata, priority=TRANSCRIPT_PRIORITY
        )


async def _discard(recognizer: Recognizer) -> None:
    """Let a recogniser that failed go (a worker process ends); a failure to close it too
    changes nothing."""
    with contextlib.suppress(Exception):
        await trio.to_thread.run_sync(recognizer.close)


def _feed_with_partials(
    recognizer: Recognizer, samples: Samples, begin: int, next_partial: int, interval: int
) -> list[str]:
    """Feed ``samples`` (from stream position ``begin``), reading the partial text at each
    ``next_partial`` boundary (every ``interval`` samples) crossed. Runs in a worker thread."""
    while next_partial <= begin:
        next_partial += interval
    texts: list[str] = []
    at = 0
    while at < len(samples):
        cut = min(len(samples), next_partial - begin)
        recognizer.feed(samples[at:cut])
        at = cut
        if begin + at >= next_partial:
            texts.append(recognizer.partial())
            next_partial += interval
    return texts
