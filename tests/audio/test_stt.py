"""Speech to text on real synthetic speech: pocketsphinx (grammar and LM), Vosk (Korean),
and the STT agent on a real kernel, fed like a live microphone with VAD and wake events."""

from __future__ import annotations

import logging
import sys
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from audio_support import Samples, Speech, pad, silence, tone

from loomk import Event, Kernel
from loomk.testing import capture_events, open_test_kernel
from loomk_audio._sphinx import phrases_grammar
from loomk_audio.errors import AudioDependencyMissing, AudioModelNotFound
from loomk_audio.events import (
    AUDIO_END,
    AUDIO_TOPIC,
    AUDIO_VOICED,
    QUERY_TOPIC,
    SPEECH_END,
    SPEECH_START,
    TRANSCRIPT_FINAL,
    TRANSCRIPT_PARTIAL,
    TRANSCRIPT_TOPIC,
    USER_QUERY,
    VAD_TOPIC,
    VOICED_TOPIC,
    WAKE_DETECTED,
    WAKE_TOPIC,
    audio_chunk_event,
    audio_end_event,
)
from loomk_audio.stt import (
    SampleRing,
    SphinxRecognizer,
    SttAgent,
    SttSettings,
    VoskRecognizer,
    open_recognizer,
)
from loomk_audio.wake import WakeAgent, WakeWordDetector

RATE = 16_000
COMMANDS = (
    "turn on the kitchen lights",
    "set a timer for five minutes",
    "what time is it",
    "what is the weather in paris",
)
# the pipeline's default: the open model, its slips on known commands fixed by a grammar
RESCORED = SttSettings(rescore_grammar=phrases_grammar(COMMANDS))


def decode(
    recognizer: SphinxRecognizer | VoskRecognizer, samples: Samples, piece: int = 1280
) -> str:
    recognizer.start()
    for at in range(0, len(samples), piece):
        recognizer.feed(samples[at : at + piece])
    return recognizer.finish()


@pytest.fixture(scope="module")
def grammar() -> SphinxRecognizer:
    return SphinxRecognizer(phrases=COMMANDS)


@pytest.fixture(scope="module")
def lm() -> SphinxRecognizer:
    return SphinxRecognizer()


# ---- recognisers -------------------------------------------------------------------------


@pytest.mark.parametrize("text", COMMANDS[:3])
@pytest.mark.parametrize("voice", ["slt", "kal16"])
def test_a_grammar_gives_the_exact_command(
    speech: Speech, grammar: SphinxRecognizer, text: str, voice: str
) -> None:
    samples = pad(silence(0.3), speech.flite(text, voice), silence(0.3))
    assert decode(grammar, samples) == text


def test_the_open_lm_gives_the_exact_sentence_and_streams(
    speech: Speech, lm: SphinxRecognizer
) -> None:
    samples = pad(silence(0.3), speech.flite("what is the weather in paris", "slt"), silence(0.3))
    lm.start()
    half = len(samples) // 2
    lm.feed(samples[:half])
    so_far = lm.partial()
    lm.feed(samples[half:])
    assert lm.finish() == "what is the weather in paris"
    assert so_far  # words were recognised before the end
    assert decode(lm, samples, piece=len(samples)) == "what is the weather in paris"


def test_a_jsgf_grammar_string_is_used_as_given(speech: Speech) -> None:
    jsgf = "#JSGF V1.0;\ngrammar lights;\npublic <cmd> = turn (on | off) the kitchen lights;\n"
    recognizer = SphinxRecognizer(grammar=jsgf)
    samples = pad(silence(0.3), speech.flite("turn off the kitchen lights"), silence(0.3))
    assert decode(recognizer, samples) == "turn off the kitchen lights"


def test_phrases_with_unknown_words_fail_clearly_or_are_dropped(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with pytest.raises(ValueError, match="zxqvbn"):
        SphinxRecognizer(phrases=["play zxqvbn", "what time is it"])
    with caplog.at_level(logging.WARNING, logger="loomk_audio.stt"):
        recognizer = SphinxRecognizer(
            phrases=["play zxqvbn", "what time is it"], unknown_words="drop"
        )
    assert recognizer.grammar is not None
    assert "zxqvbn" not in recognizer.grammar
    assert "what time is it" in recognizer.grammar
    assert "zxqvbn" in caplog.text


@pytest.fixture(scope="module")
def korean() -> VoskRecognizer:
    return VoskRecognizer("ko", phrases=["오늘 날씨 어때", "음악 틀어 줘", "부엌 불 켜 줘"])


def test_vosk_recognises_a_korean_phrase_with_a_grammar(
    speech: Speech, korean: VoskRecognizer
) -> None:
    samples = pad(silence(0.3), speech.espeak("오늘 날씨 어때", "ko", 160), silence(0.3))
    assert decode(korean, samples, piece=4000) == "오늘 날씨 어때"
    assert (korean.engine, korean.language) == ("vosk", "ko")


def test_missing_engines_and_models_say_what_to_install(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with pytest.raises(AudioModelNotFound):
        VoskRecognizer(tmp_path)
    with pytest.raises(AudioModelNotFound):
        SttAgent(settings=SttSettings(vosk_model=str(tmp_path / "none")))
    monkeypatch.setitem(sys.modules, "vosk", None)  # as if not installed
    with pytest.raises(AudioDependencyMissing) as caught:
        open_recognizer(SttSettings(vosk_model="ko"))
    assert caught.value.package == "vosk"


def test_the_ring_keeps_the_last_samples_by_stream_position() -> None:
    ring = SampleRing(10)
    ring.append(np.arange(7, dtype=np.int16))
    ring.append(np.arange(7, 15, dtype=np.int16))
    assert (ring.start, ring.end) == (5, 15)
    assert ring.slice(0, 100).tolist() == list(range(5, 15))
    assert ring.slice(8, 12).tolist() == [8, 9, 10, 11]
    ring.append(np.arange(15, 40, dtype=np.int16))
    assert ring.slice(28, 40).tolist() == list(range(30, 40))
    assert len(ring.slice(5, 5)) == 0
    ring.append(np.arange(40, 41, dtype=np.int16))
    ring.append(np.arange(41, 53, dtype=np.int16))  # longer than the ring, ending mid-way
    assert ring.slice(0, 100).tolist() == list(range(43, 53))
    assert ring.slice(45, 48).tolist() == [45, 46, 47]


# ---- the agent, fed like a live microphone -----------------------------------------------


@dataclass(frozen=True)
class Mark:
    """An event published once the audio up to ``due_ms`` has been."""

    due_ms: int
    topic: str
    event: Event


def speech_segments(samples: Samples, gap_ms: int = 300) -> list[tuple[int, int]]:
    """(start_ms, end_ms) of speech by frame energy (20 ms frames), gaps under ``gap_ms``
    bridged: a stand-in for the VAD."""
    frames = samples[: len(samples) // 320 * 320].reshape(-1, 320).astype(np.float64)
    voiced = np.sqrt((frames**2).mean(axis=1)) > 300
    segments: list[tuple[int, int]] = []
    for index in np.flatnonzero(voiced):
        start, end = int(index) * 20, int(index) * 20 + 20
        if segments and start - segments[-1][1] < gap_ms:
            segments[-1] = (segments[-1][0], end)
        else:
            segments.append((start, end))
    return segments


def vad_marks(samples: Samples, stream: str) -> list[Mark]:
    """What a VAD would publish: each start 60 ms in, its voiced frames as they come (they
    tell the STT how far speech is confirmed), each end after 300 ms of quiet."""
    marks = []
    for start, end in speech_segments(samples):
        meta = {"stream": stream}
        begin = Event(SPEECH_START, source="vad", metadata={**meta, "stream_ms": str(start)})
        over = Event(
            SPEECH_END, source="vad", metadata={**meta, "stream_ms": str(end), "reason": "silence"}
        )
        marks += [Mark(start + 60, VAD_TOPIC, begin), Mark(end + 300, VAD_TOPIC, over)]
        for frame in range(start, end, 20):  # the voiced frames, as far as speech goes
            voiced_meta = {**meta, "stream_ms": str(frame), "frame_ms": "20"}
            voiced = Event(AUDIO_VOICED, source="vad", metadata=voiced_meta)
            marks.append(Mark(max(frame + 20, start + 60), VOICED_TOPIC, voiced))
    return marks


def wake_mark(at_ms: int, stream: str, session: str = "sess_test") -> Mark:
    metadata = {"stream": stream, "stream_ms": str(at_ms), "phrase": "hey jarvis"}
    event = Event(WAKE_DETECTED, source="wake", metadata={**metadata, "session_id": session})
    return Mark(at_ms, WAKE_TOPIC, event)


async def live(
    kernel: Kernel,
    samples: Samples,
    stream: str,
    marks: list[Mark],
    ends: tuple[str, ...] = ("vad", "wake"),
) -> None:
    """Publish ``samples`` in 100 ms chunks, each mark after the chunk that reaches its due
    time, then the audio_end of the source and of the stages in ``ends``."""
    pending = sorted(marks, key=lambda m: m.due_ms)
    step = RATE // 10
    for at in range(0, len(samples), step):
        chunk = samples[at : at + step].astype("<i2").tobytes()
        await kernel.bus.publish(
            AUDIO_TOPIC, audio_chunk_event(chunk, sample_rate=RATE, channels=1, stream=stream)
        )
        reached = (at + step) * 1000 // RATE
        while pending and pending[0].due_ms <= reached:
            mark = pending.pop(0)
            await kernel.bus.publish(mark.topic, mark.event)
    for mark in pending:
        await kernel.bus.publish(mark.topic, mark.event)
    await kernel.bus.publish(AUDIO_TOPIC, audio_end_event(stream=stream))
    for source in ends:
        topic = {"vad": VAD_TOPIC, "wake": WAKE_TOPIC}[source]
        ended = Event(AUDIO_END, source=source, metadata={"stream": stream})
        await kernel.bus.publish(topic, ended)


WakeAt = Callable[[Samples], int]


@pytest.fixture(scope="module")
def wake_at() -> WakeAt:
    """Where openWakeWord fires in a clip (stream ms), as the wake agent would say."""

    def at(samples: Samples) -> int:
        [hit] = WakeWordDetector().feed(samples)
        return hit.stream_ms

    return at


async def transcripts(kernel: Kernel, run: Awaitable[None]) -> list[Event]:
    """Await ``run`` (publishing a stream) and return the transcript events up to the
    stream's audio_end on ``transcript``."""
    with capture_events(kernel.bus, TRANSCRIPT_TOPIC) as out:
        await run
        while not out.of_type(AUDIO_END):
            await out.wait_for(len(out) + 1)
    return [e for e in out.events if e.type != AUDIO_END]


async def test_a_one_breath_command_after_the_wake_word_is_transcribed_without_it(
    speech: Speech, wake_at: WakeAt
) -> None:
    samples = pad(silence(0.5), speech.flite("hey jarvis, what time is it", "slt"), silence(1.0))
    wake_ms = wake_at(samples)
    async with open_test_kernel() as kernel:
        agent = SttAgent(settings=RESCORED)
        await kernel.spawn(agent)
        bad = Event("audio_chunk", b"\x01", metadata={"stream": "desk"})
        await kernel.bus.publish(AUDIO_TOPIC, bad)  # skipped and counted
        marks = [*vad_marks(samples, "desk"), wake_mark(wake_ms, "desk")]
        events = await transcripts(kernel, live(kernel, samples, "desk", marks))
    [final] = [e for e in events if e.type == TRANSCRIPT_FINAL]
    assert final.payload == b"what time is it"
    metadata = final.metadata
    assert metadata["text"] == "what time is it"
    assert metadata["session_id"] == "sess_test"
    assert (metadata["engine"], metadata["language"], metadata["sample_rate"]) == (
        "pocketsphinx",
        "en-us",
        "16000",
    )
    assert metadata["stream"] == "desk"
    assert int(metadata["stream_ms"]) == wake_ms - 320  # decoded from the pre-roll
    assert 1000 <= int(metadata["duration_ms"]) <= 2500
    assert metadata["reason"] == "silence"
    float(metadata["eou_at"])
    float(metadata["decode_ms"])  # how long the end took: a figure for the benchmark
    assert (final.source, final.priority) == ("stt", 70)
    assert agent.skipped_chunks == 1


async def test_the_wake_agent_turns_the_sessions_transcript_into_a_query(speech: Speech) -> None:
    """The whole chain with the real wake agent, whose events come when they come: the STT
    still decodes from its buffer and closes the stream once every stage has ended it."""
    samples = pad(silence(0.5), speech.flite("hey jarvis, what time is it", "slt"), silence(1.0))
    async with open_test_kernel() as kernel:
        await kernel.spawn_many([WakeAgent(), SttAgent(settings=RESCORED)])
        with capture_events(kernel.bus, QUERY_TOPIC) as queries:
            await live(kernel, samples, "den", vad_marks(samples, "den"), ends=("vad",))
            # no wake audio_end from the test: the wake agent passes its own on
            query, ended = await queries.wait_for(2)
    assert query.type == USER_QUERY
    assert query.payload == b"what time is it"
    assert query.metadata["session_id"].startswith("sess_")
    assert float(query.metadata["decode_ms"]) >= 0
    assert ended.type == AUDIO_END


async def test_wake_then_a_pause_keeps_the_session_open_for_the_command(
    speech: Speech, wake_at: WakeAt
) -> None:
    wake = pad(silence(0.5), speech.flite("hey jarvis", "slt"))
    samples = pad(wake, silence(1.2), speech.flite("what time is it", "slt"), silence(1.0))
    wake_ms = wake_at(pad(wake, silence(0.5)))
    async with open_test_kernel() as kernel:
        agent = SttAgent()
        await kernel.spawn(agent)
        marks = [*vad_marks(samples, "hall"), wake_mark(wake_ms, "hall", "sess_pause")]
        events = await transcripts(kernel, live(kernel, samples, "hall", marks))
    finals = [e for e in events if e.type == TRANSCRIPT_FINAL]
    assert [e.payload for e in finals] == [b"what time is it"]
    assert finals[0].metadata["session_id"] == "sess_pause"


async def test_a_session_without_speech_closes_after_the_timeout(
    speech: Speech, wake_at: WakeAt
) -> None:
    wake = pad(silence(0.5), speech.flite("hey jarvis", "slt"))
    samples = pad(wake, silence(3.5), speech.flite("what time is it", "slt"), silence(1.0))
    wake_ms = wake_at(pad(wake, silence(0.5)))
    async with open_test_kernel() as kernel:
        agent = SttAgent()
        await kernel.spawn(agent)
        marks = [*vad_marks(samples, "hall"), wake_mark(wake_ms, "hall")]
        events = await transcripts(kernel, live(kernel, samples, "hall", marks))
    assert events == []  # the command came 3.5 s later: a new wake is needed


async def test_without_a_gate_every_utterance_is_transcribed_with_partials(
    speech: Speech,
) -> None:
    long = "set a timer for five minutes and then turn on the kitchen lights"
    samples = pad(
        silence(0.5),
        speech.flite("what time is it", "slt"),
        silence(1.0),
        speech.flite(long, "slt"),
        silence(1.0),
    )
    blip = pad(silence(0.5), np.full(1600, 8000, dtype=np.int16), silence(0.5))  # 100 ms
    async with open_test_kernel() as kernel:
        agent = SttAgent(settings=SttSettings(gate="none"))
        await kernel.spawn(agent)
        run = live(kernel, pad(samples, blip), "lab", vad_marks(pad(samples, blip), "lab"))
        events = await transcripts(kernel, run)
    finals = [e for e in events if e.type == TRANSCRIPT_FINAL]
    assert len(finals) == 2  # the 100 ms blip is too short to transcribe
    assert finals[0].payload == b"what time is it"
    assert "session_id" not in finals[0].metadata
    second = events.index(finals[1])
    partials = events[events.index(finals[0]) + 1 : second]
    assert len(partials) >= 3  # ~4 s of speech: a partial every 500 ms of audio
    assert all(e.type == TRANSCRIPT_PARTIAL for e in partials)
    assert all(e.metadata["stream"] == "lab" and e.metadata["text"] for e in partials)
    assert finals[1].metadata["text"].endswith("turn on the kitchen lights")


async def test_an_utterance_is_cut_at_the_maximum_length(speech: Speech) -> None:
    samples = pad(silence(0.5), speech.flite("what is the weather in paris", "slt"), silence(1.0))
    settings = SttSettings(gate="none", max_utterance_ms=1000)
    async with open_test_kernel() as kernel:
        await kernel.spawn(SttAgent(settings=settings))
        events = await transcripts(kernel, live(kernel, samples, "mic", vad_marks(samples, "mic")))
    [final] = [e for e in events if e.type == TRANSCRIPT_FINAL]
    assert final.metadata["reason"] == "max_length"
    assert final.metadata["duration_ms"] == "1000"
    assert final.metadata["text"].startswith("what")
    assert not final.metadata["text"].endswith("paris")


class _FlakyRecognizer:
    """A recogniser that fails as it decodes (``broken``), or hears "hello"."""

    engine = "fake"
    language = "en-us"

    def __init__(self, *, broken: bool) -> None:
        self.broken = broken
        self.closed = False

    def start(self) -> None:
        pass

    def feed(self, samples: Samples) -> None:
        if self.broken:
            raise RuntimeError("the engine broke")

    def partial(self) -> str:
        return ""

    def finish(self) -> str:
        return "hello"

    def close(self) -> None:
        self.closed = True


async def test_a_recogniser_that_fails_is_let_go_and_the_next_utterance_decoded(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    made: list[_FlakyRecognizer] = []

    def make(settings: SttSettings) -> _FlakyRecognizer:
        made.append(_FlakyRecognizer(broken=not made))  # the first one breaks
        return made[-1]

    monkeypatch.setattr("loomk_audio.stt.open_recognizer", make)
    samples = pad(silence(0.5), tone(0.5), silence(1.0), tone(0.5), silence(1.0))
    async with open_test_kernel() as kernel:
        agent = SttAgent(settings=SttSettings(gate="none"))
        await kernel.spawn(agent)
        run = live(kernel, samples, "flaky", vad_marks(samples, "flaky"), ends=("vad",))
        events = await transcripts(kernel, run)
    assert [e.payload for e in events if e.type == TRANSCRIPT_FINAL] == [b"hello"]
    assert agent.failed_decodes == 1
    broken, *others = made
    assert broken.closed  # its worker (if it had one) is not left running
    assert others
    assert not any(r.broken for r in others)
