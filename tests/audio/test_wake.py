"""Wake word: openWakeWord on real synthetic speech, and the wake agent on a real kernel."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
from audio_support import Samples, Speech, pad, silence, white_noise

from loomk import Event, Kernel
from loomk.testing import capture_events, open_test_kernel
from loomk_audio._oww import resolve_model, shipped_models
from loomk_audio.errors import AudioModelNotFound
from loomk_audio.events import (
    AUDIO_END,
    AUDIO_TOPIC,
    QUERY_TOPIC,
    TRANSCRIPT_FINAL,
    TRANSCRIPT_TOPIC,
    USER_QUERY,
    WAKE_DETECTED,
    WAKE_TOPIC,
    audio_chunk_event,
    audio_end_event,
)
from loomk_audio.wake import WakeAgent, WakeHit, WakeSettings, WakeWordDetector

RATE = 16_000


@pytest.fixture(scope="module", autouse=True)
def _openwakeword_loaded() -> None:
    """Import openWakeWord once for the module (the first model pays ~1.5 s)."""
    WakeWordDetector()


def detect(
    samples: Samples, piece: int = 1000, models: str = "hey_jarvis", refractory_ms: int = 2000
) -> list[WakeHit]:
    detector = WakeWordDetector(models, refractory_ms=refractory_ms)
    hits: list[WakeHit] = []
    for at in range(0, len(samples), piece):
        hits += detector.feed(samples[at : at + piece])
    return hits


@pytest.mark.parametrize(
    "make",
    [
        lambda s: s.flite("hey jarvis, what time is it", "slt"),
        lambda s: s.flite("hey jarvis, turn on the kitchen lights", "kal16"),
        lambda s: s.espeak("hey jarvis, what is the weather in paris", "en-us"),
    ],
    ids=["flite-slt", "flite-kal16", "espeak-en-us"],
)
def test_hey_jarvis_wakes_once_near_the_end_of_the_phrase(speech: Speech, make: object) -> None:
    clip = make(speech)  # type: ignore[operator]
    samples = pad(silence(1.0), clip, silence(1.0))
    hits = detect(samples)
    assert len(hits) == 1
    [hit] = hits
    assert hit.model == "hey_jarvis"
    assert hit.phrase == "hey jarvis"
    assert hit.score >= 0.5
    # "hey jarvis" takes the first ~0.6-0.9 s of the clip, which starts at 1 s
    assert 1300 <= hit.stream_ms <= 2600


@pytest.mark.parametrize(
    "make",
    [
        lambda s: s.flite("turn on the kitchen lights"),
        lambda s: s.flite("what is the weather in paris", "kal16"),
        lambda s: s.espeak("what is the weather in paris"),
        lambda s: silence(3.0),
        lambda s: white_noise(3.0, dbfs=-30.0),
    ],
    ids=["lights", "weather-kal16", "weather-espeak", "silence", "white-noise"],
)
def test_other_sounds_do_not_wake(speech: Speech, make: object) -> None:
    samples = pad(silence(0.5), make(speech), silence(0.5))  # type: ignore[operator]
    assert detect(samples) == []


def test_hits_do_not_depend_on_how_the_audio_is_cut(speech: Speech) -> None:
    samples = pad(silence(1.0), speech.flite("hey jarvis"), silence(1.0))
    whole = detect(samples, piece=len(samples))
    assert [h.stream_ms for h in detect(samples, piece=333)] == [h.stream_ms for h in whole]
    assert whole[0].stream_ms % 80 == 0  # the end of an 80 ms frame


def test_the_refractory_period_gives_one_hit_per_utterance(speech: Speech) -> None:
    phrase = speech.flite("hey jarvis")
    twice = pad(silence(1.0), phrase, silence(2.5), phrase, silence(1.0))
    hits = detect(twice)
    assert len(hits) == 2  # re-armed for the second utterance
    assert hits[1].stream_ms - hits[0].stream_ms >= 2500
    deaf = detect(twice, refractory_ms=6000)
    assert [h.stream_ms for h in deaf] == [hits[0].stream_ms]


def test_models_by_name_version_or_path_and_several_at_once(speech: Speech) -> None:
    path = resolve_model("hey_jarvis").model
    samples = pad(silence(1.0), speech.flite("hey jarvis"), silence(1.0))
    assert len(detect(samples, models="hey_jarvis_v0.1")) == 1
    assert len(detect(samples, models=str(path))) == 1
    detector = WakeWordDetector(["alexa", "hey_jarvis"])
    hits = detector.feed(samples)
    assert [h.model for h in hits] == ["hey_jarvis"]
    assert detector.scores["alexa"] < 0.5


def test_a_missing_model_names_the_installed_ones(tmp_path: Path) -> None:
    with pytest.raises(AudioModelNotFound) as caught:
        WakeWordDetector("hey_loom")
    assert "hey_jarvis" in str(caught.value)
    assert "alexa" in str(caught.value)
    with pytest.raises(AudioModelNotFound):
        WakeWordDetector(str(tmp_path / "nothing.tflite"))
    with pytest.raises(AudioModelNotFound):
        WakeAgent(settings=WakeSettings(models=("okay_loom",)))
    assert {"alexa", "hey_jarvis", "hey_mycroft", "hey_rhasspy", "okay_nabu"} <= set(
        shipped_models()
    )


def test_the_tflite_alias_does_not_outlive_model_loading() -> None:
    before = sys.modules.get("tflite_runtime")
    WakeWordDetector("alexa")
    assert sys.modules.get("tflite_runtime") is before


# ---- the agent ---------------------------------------------------------------------------


async def play(kernel: Kernel, samples: Samples, stream: str, rate: int = RATE) -> None:
    """Publish ``samples`` as 100 ms audio chunks, then ``audio_end``."""
    step = rate // 10
    for at in range(0, len(samples), step):
        chunk = samples[at : at + step].astype("<i2").tobytes()
        event = audio_chunk_event(chunk, sample_rate=rate, channels=1, stream=stream)
        await kernel.bus.publish(AUDIO_TOPIC, event)
    await kernel.bus.publish(AUDIO_TOPIC, audio_end_event(stream=stream))


def transcript(text: str, stream: str, **metadata: str) -> Event:
    return Event(
        TRANSCRIPT_FINAL,
        text.encode(),
        source="stt",
        metadata={"text": text, "stream": stream, **metadata},
    )


async def test_the_agent_opens_a_session_and_turns_its_transcript_into_a_query(
    speech: Speech,
) -> None:
    samples = pad(silence(0.5), speech.espeak("hey jarvis, what time is it"), silence(1.0))
    async with open_test_kernel() as kernel:
        agent = WakeAgent()
        await kernel.spawn(agent)
        with (
            capture_events(kernel.bus, WAKE_TOPIC) as wake,
            capture_events(kernel.bus, QUERY_TOPIC) as queries,
        ):
            bad = Event("audio_chunk", b"\x00\x01\x02", metadata={"stream": "kitchen"})
            await kernel.bus.publish(AUDIO_TOPIC, bad)  # odd bytes: skipped, not fatal
            await play(kernel, samples, "kitchen")
            detected, ended = await wake.wait_for(2)
            assert detected.type == WAKE_DETECTED
            assert ended.type == AUDIO_END  # passed on once detection was done with it
            metadata = detected.metadata
            assert metadata["phrase"] == "hey jarvis"
            assert metadata["model"] == "hey_jarvis"
            assert float(metadata["score"]) >= 0.5
            assert metadata["session_id"].startswith("sess_")
            assert metadata["stream"] == "kitchen"
            assert 700 <= int(metadata["stream_ms"]) <= 2000
            assert detected.priority == 65
            assert detected.source == "wake"
            assert agent.skipped_chunks == 1

            session = metadata["session_id"]
            await kernel.bus.publish(TRANSCRIPT_TOPIC, transcript("not ours", "kitchen"))
            timing = {"decode_ms": "42.0", "eou_at": "12.5", "session_id": session}
            await kernel.bus.publish(
                TRANSCRIPT_TOPIC, transcript("what time is it", "kitchen", **timing)
            )
            stt_end = Event(AUDIO_END, source="stt", metadata={"stream": "kitchen"})
            await kernel.bus.publish(TRANSCRIPT_TOPIC, stt_end)
            query, query_end = await queries.wait_for(2)
        assert query.type == USER_QUERY
        assert query.payload == b"what time is it"
        assert query.metadata["text"] == "what time is it"
        assert query.metadata["session_id"] == session
        assert query.metadata["stream"] == "kitchen"
        assert (query.metadata["decode_ms"], query.metadata["eou_at"]) == ("42.0", "12.5")
        assert (query.priority, query.source) == (60, "wake")
        assert query_end.type == AUDIO_END
        assert query_end.metadata["stream"] == "kitchen"


async def test_other_speech_opens_no_session(speech: Speech) -> None:
    samples = pad(silence(0.5), speech.flite("turn on the kitchen lights"), silence(0.5))
    async with open_test_kernel() as kernel:
        await kernel.spawn(WakeAgent())
        with capture_events(kernel.bus, WAKE_TOPIC) as wake:
            await play(kernel, samples, "hall")
            [ended] = await wake.wait_for(1)
        assert ended.type == AUDIO_END


async def test_resampled_audio_of_another_rate_wakes_too(speech: Speech) -> None:
    from scipy.signal import resample_poly

    samples = pad(silence(0.5), speech.flite("hey jarvis, play some music"), silence(1.0))
    at_48k = np.clip(resample_poly(samples.astype(float), 3, 1), -32768, 32767).astype(np.int16)
    async with open_test_kernel() as kernel:
        await kernel.spawn(WakeAgent())
        with capture_events(kernel.bus, WAKE_TOPIC, event_types=[WAKE_DETECTED]) as wake:
            await play(kernel, at_48k, "usb", rate=48_000)
            [detected] = await wake.wait_for(1)
        assert 700 <= int(detected.metadata["stream_ms"]) <= 2000


# ---- Loom's transcript wake (phrases mode) -----------------------------------------------


async def _phrases(texts: list[str], expect_queries: int) -> tuple[list[Event], list[Event]]:
    """Feed transcripts to a phrases-mode wake agent: (wake events, queries)."""
    async with open_test_kernel() as kernel:
        await kernel.spawn(WakeAgent(settings=WakeSettings(mode="phrases")))
        with (
            capture_events(kernel.bus, WAKE_TOPIC) as wake,
            capture_events(kernel.bus, QUERY_TOPIC) as queries,
        ):
            for text in texts:
                await kernel.bus.publish(TRANSCRIPT_TOPIC, transcript(text, "mic.primary"))
            await kernel.bus.publish(
                TRANSCRIPT_TOPIC, Event(AUDIO_END, source="stt", metadata={"stream": "mic.primary"})
            )
            await queries.wait_for(expect_queries + 1)  # the audio_end comes last
        return wake.events, [q for q in queries.events if q.type == USER_QUERY]


async def test_loom_hey_loom_whats_up_wakes_and_asks_at_once() -> None:
    wakes, queries = await _phrases(["Hey loom what's up"], 1)
    [wake] = wakes
    assert wake.type == WAKE_DETECTED
    assert wake.metadata["phrase"] == "hey loom"
    assert wake.metadata["text"] == "Hey loom what's up"
    [query] = queries
    assert query.metadata["text"].startswith("what")
    assert query.metadata["session_id"] == wake.metadata["session_id"]


async def test_loom_hey_loom_then_the_question_in_the_next_transcript() -> None:
    wakes, queries = await _phrases(["hey loom", "what time is it", "and another"], 1)
    [wake] = wakes
    [query] = queries
    assert query.metadata["text"] == "what time is it"
    assert query.payload == b"what time is it"
    assert query.metadata["session_id"] == wake.metadata["session_id"]


async def test_loom_transcripts_without_the_phrase_are_ignored() -> None:
    wakes, queries = await _phrases(["what is the weather in paris", "  "], 0)
    assert (wakes, queries) == ([], [])


async def test_the_phrases_mode_needs_no_wake_model() -> None:
    agent = WakeAgent(settings=WakeSettings(mode="phrases", models=("no_such_model",)))
    assert [t.pattern for t in agent.declared_topics()] == [TRANSCRIPT_TOPIC]
