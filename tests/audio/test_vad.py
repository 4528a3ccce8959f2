"""The VAD: Loom's start/hangover state machine on real speech, alone and on a kernel."""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np
import numpy.typing as npt
import pytest
import trio
import trio.testing
from audio_support import Speech, pad, silence, tone, white_noise
from scipy.signal import resample_poly

from loomk import Event, EventBus, Kernel
from loomk.testing import EventCapture, capture_events, open_test_kernel
from loomk_audio.events import (
    AUDIO_END,
    AUDIO_TOPIC,
    AUDIO_VOICED,
    SPEECH_END,
    SPEECH_START,
    VAD_TOPIC,
    VOICED_TOPIC,
    audio_chunk_event,
    audio_end_event,
)
from loomk_audio.sources import WavSource
from loomk_audio.vad import (
    END_OF_STREAM,
    MAX_LENGTH,
    SILENCE,
    SpeechEnd,
    SpeechStart,
    VadAgent,
    VadResult,
    VadSettings,
    VoiceActivity,
    VoicedFrame,
)

Samples = npt.NDArray[np.int16]
Segment = tuple[int, int, str]  # (start ms, end ms, reason)

LOOM_TEST = VadSettings(mode=1, frame_ms=20, min_start_ms=40, hangover_ms=100)
SENTENCE = "turn on the kitchen lights"


# ---- helpers --------------------------------------------------------------------------


def trimmed(samples: Samples) -> Samples:
    """``samples`` without the synthesizer's own leading and trailing quiet."""
    loud = np.nonzero(np.abs(samples) > 300)[0]
    return samples[loud[0] : loud[-1] + 1]


def speech_span_ms(samples: Samples, offset_ms: int) -> tuple[int, int]:
    """Where the audible part of a clip is, once placed at ``offset_ms``."""
    loud = np.nonzero(np.abs(samples) > 300)[0]
    return offset_ms + loud[0] * 1000 // 16_000, offset_ms + loud[-1] * 1000 // 16_000


def run_machine(
    samples: Samples, settings: VadSettings | None = None, piece: int | None = None
) -> list[VadResult]:
    """Everything a fresh machine says about ``samples`` fed in pieces, then ended."""
    machine = VoiceActivity(settings)
    step = piece or len(samples) or 1
    results: list[VadResult] = []
    for start in range(0, len(samples), step):
        results += machine.feed(samples[start : start + step])
    return results + machine.finish()


def segments_of(results: list[VadResult]) -> list[Segment]:
    """The utterances the results describe, as (start, end, reason)."""
    starts = [r.stream_ms for r in results if isinstance(r, SpeechStart)]
    ends = [(r.stream_ms, r.reason) for r in results if isinstance(r, SpeechEnd)]
    assert len(starts) == len(ends)
    return [(start, end, reason) for start, (end, reason) in zip(starts, ends, strict=True)]


def resampled(samples: Samples, rate: int) -> Samples:
    """16 kHz ``samples`` at ``rate``."""
    divisor = np.gcd(rate, 16_000)
    out: npt.NDArray[np.float64] = resample_poly(
        samples.astype(np.float64), rate // divisor, 16_000 // divisor
    )
    return np.clip(np.rint(out), -32768, 32767).astype(np.int16)


def chunk_events(
    samples: Samples, *, stream: str, rate: int = 16_000, channels: int = 1, chunk_ms: float = 20
) -> list[Event]:
    """Interleaved ``samples`` as ``audio_chunk`` events of ``chunk_ms``, then ``audio_end``."""
    frames = max(1, int(rate * chunk_ms / 1000))
    total = len(samples) // channels
    events = [
        audio_chunk_event(
            samples[start * channels : (start + frames) * channels].tobytes(),
            sample_rate=rate,
            channels=channels,
            stream=stream,
            offset_frames=start,
        )
        for start in range(0, total, frames)
    ]
    return [*events, audio_end_event(stream=stream)]


@contextmanager
def vad_output(bus: EventBus) -> Iterator[tuple[EventCapture, EventCapture]]:
    """Record what a VAD publishes: (``vad`` events, ``audio_voiced`` events)."""
    with capture_events(bus, VAD_TOPIC) as vad, capture_events(bus, VOICED_TOPIC) as voiced:
        yield vad, voiced


def segments_on_bus(events: list[Event], stream: str) -> list[Segment]:
    """The utterances ``speech_start``/``speech_end`` events describe for ``stream``."""
    mine = [e for e in events if e.metadata["stream"] == stream]
    starts = [int(e.metadata["stream_ms"]) for e in mine if e.type == SPEECH_START]
    ends = [
        (int(e.metadata["stream_ms"]), e.metadata["reason"]) for e in mine if e.type == SPEECH_END
    ]
    assert len(starts) == len(ends), mine
    return [(start, end, reason) for start, (end, reason) in zip(starts, ends, strict=True)]


async def publish_all(kernel: Kernel, events: list[Event]) -> None:
    for event in events:
        await kernel.bus.publish(AUDIO_TOPIC, event)


def sentinel_events(speech: Speech, stream: str) -> list[Event]:
    """A stream of unbroken speech that the VAD can only end at its ``audio_end``."""
    return chunk_events(trimmed(speech.flite("okay")), stream=stream)


async def drain_through(
    kernel: Kernel, vad: EventCapture, speech: Speech, stream: str = "sentinel"
) -> None:
    """Publish a last stream of unbroken speech and wait for the VAD to end it: the VAD
    takes its events in order, so everything published before has been handled."""
    await publish_all(kernel, sentinel_events(speech, stream))
    while not any(
        e.type == SPEECH_END
        and e.metadata["stream"] == stream
        and e.metadata["reason"] == END_OF_STREAM
        for e in vad.events
    ):
        await vad.wait_for(len(vad) + 1)


# ---- the state machine alone ----------------------------------------------------------


def test_loom_tone_test_starts_and_ends_within_500_ms() -> None:
    samples = pad(silence(0.05), tone(0.2, hz=200, amplitude=0.5), silence(0.15))

    results = run_machine(samples, LOOM_TEST)

    segments = segments_of(results)
    assert segments
    first_start, first_end, reason = segments[0]
    assert 0 <= first_start < first_end <= 500
    assert reason == SILENCE


def test_a_quiet_tone_at_mode_3_starts_at_most_once() -> None:
    samples = pad(silence(0.05), tone(0.2, amplitude=0.1), silence(0.15))
    settings = VadSettings(mode=3, frame_ms=20, min_start_ms=40, hangover_ms=100)

    results = run_machine(samples, settings)

    assert sum(isinstance(r, SpeechStart) for r in results) <= 1


def test_a_padded_sentence_is_one_segment_around_the_speech(speech: Speech) -> None:
    clip = speech.flite(SENTENCE)
    samples = pad(silence(1.0), clip, silence(1.0))
    begin, end = speech_span_ms(clip, 1000)

    results = run_machine(samples)

    [(start_ms, end_ms, reason)] = segments_of(results)
    assert begin - 60 <= start_ms <= begin + 60
    assert end - 20 <= end_ms <= end + 120
    assert reason == SILENCE
    voiced = [r for r in results if isinstance(r, VoicedFrame)]
    assert voiced[0].stream_ms == start_ms  # the pre-roll comes first, from the start
    assert all(len(f.samples) == 320 for f in voiced)
    assert voiced[-1].stream_ms + 20 == end_ms
    stream_order = [f.stream_ms for f in voiced]
    assert stream_order == sorted(set(stream_order))


def test_a_segment_ends_after_the_hangover_and_starts_after_min_start() -> None:
    settings = VadSettings(mode=3, frame_ms=30, min_start_ms=60, hangover_ms=200)
    machine = VoiceActivity(settings)
    assert (machine.min_start_frames, machine.hangover_frames) == (2, 7)  # Loom's ceil rules
    assert VoiceActivity(VadSettings(min_start_ms=10, frame_ms=30)).min_start_frames == 1


class _Loudness:
    """A classifier with no memory: voiced when a sample is louder than 1000."""

    frame_samples = 320

    def is_voiced(self, frame: Samples) -> bool:
        return bool(np.abs(frame).max() > 1000)


def test_a_finished_stream_leaves_no_voiced_frames_to_the_next() -> None:
    machine = VoiceActivity(VadSettings(min_start_ms=60, gate_dbfs=None), classifier=_Loudness())
    # two voiced frames at the end of a stream: short of the three that open an utterance
    assert machine.feed(pad(silence(0.2), tone(0.04))) == []
    assert machine.finish() == []

    # two more at the start of the next stream must not add up to an utterance with them
    results = machine.feed(pad(tone(0.04), silence(0.3))) + machine.finish()

    assert results == []


def test_chunking_does_not_change_what_is_found(speech: Speech) -> None:
    samples = pad(silence(0.5), speech.flite(SENTENCE), silence(0.7), speech.flite("okay"))
    whole = run_machine(samples)

    for piece in (112, 528, 1, 320 * 7 + 3):  # 7 ms, 33 ms, single samples, odd sizes
        pieces = run_machine(samples, piece=piece)
        assert segments_of(pieces) == segments_of(whole)
        voiced = [(r.stream_ms, r.samples.tobytes()) for r in pieces if isinstance(r, VoicedFrame)]
        assert voiced == [
            (r.stream_ms, r.samples.tobytes()) for r in whole if isinstance(r, VoicedFrame)
        ]
    assert len(segments_of(whole)) == 2


def test_silence_and_quiet_noise_are_not_speech() -> None:
    assert run_machine(silence(3.0)) == []
    assert run_machine(white_noise(3.0, dbfs=-60)) == []
    assert run_machine(pad(silence(0.5), white_noise(2.0, dbfs=-60))) == []


def test_the_level_gate_is_what_keeps_a_new_quiet_noise_floor_out() -> None:
    # WebRTC VAD calls the first ~100 ms of any new noise speech; the gate overrules it
    ungated = run_machine(white_noise(1.0, dbfs=-60), VadSettings(gate_dbfs=None))
    assert segments_of(ungated)


def test_a_monologue_is_cut_into_bounded_utterances(speech: Speech) -> None:
    sentences = [
        trimmed(speech.flite(text))
        for text in (SENTENCE, "what is the weather in paris", "set a timer for five minutes")
    ]
    monologue = np.concatenate(sentences * 12)  # about 53 s without a pause
    assert len(monologue) > 50 * 16_000

    segments = segments_of(run_machine(monologue))

    assert len(segments) == 4
    assert [reason for _, _, reason in segments] == [MAX_LENGTH] * 3 + [END_OF_STREAM]
    assert all(end - start <= 15_000 for start, end, _ in segments)
    for (_, previous_end, _), (next_start, _, _) in itertools.pairwise(segments):
        assert 0 <= next_start - previous_end <= 60  # the voice goes on: nothing is lost

    shorter = segments_of(run_machine(monologue, VadSettings(max_utterance_ms=4_000)))
    assert len(shorter) >= 13
    assert all(end - start <= 4_000 for start, end, _ in shorter)


def test_silero_finds_the_sentence_and_ignores_loud_noise(speech: Speech) -> None:
    silero = VadSettings(backend="silero")
    clip = speech.flite(SENTENCE)
    begin, end = speech_span_ms(clip, 1000)

    [(start_ms, end_ms, reason)] = segments_of(
        run_machine(pad(silence(1.0), clip, silence(1.0)), silero, piece=333)
    )

    assert begin - 100 <= start_ms <= begin + 100
    assert end - 100 <= end_ms <= end + 150
    assert reason == SILENCE
    noise = white_noise(3.0, dbfs=-20)
    assert run_machine(noise, silero) == []
    assert segments_of(run_machine(noise))  # where WebRTC VAD hears speech
    assert silero.classified_frame_ms == 32


def test_settings_follow_loom() -> None:
    assert VadSettings(mode=9).mode == 3
    assert VadSettings(mode=-1).mode == 0
    assert VadSettings(frame_ms=25).frame_ms == 20
    defaults = VadSettings()
    assert (defaults.mode, defaults.frame_ms, defaults.min_start_ms, defaults.hangover_ms) == (
        2,
        20,
        60,
        200,
    )
    assert (defaults.input_topic, defaults.voiced_topic, defaults.vad_topic) == (
        "audio.mic",
        "audio.voiced",
        "vad",
    )
    from_env = VadSettings.from_env(
        {"VAD_MODE": "1", "VAD_FRAME_MS": "30", "VAD_HANGOVER_MS": "x", "VAD_TOPIC": "v2"}
    )
    assert (from_env.mode, from_env.frame_ms, from_env.hangover_ms) == (1, 30, 200)
    assert from_env.vad_topic == "v2"
    with pytest.raises(ValueError, match="backend"):
        VadSettings(backend="energy")  # type: ignore[arg-type]  # what a typo gives


# ---- the agent on a kernel ------------------------------------------------------------


async def test_the_agent_publishes_loom_events_for_the_loom_tone(speech: Speech) -> None:
    samples = pad(silence(0.05), tone(0.2), silence(0.15))
    async with open_test_kernel() as kernel:
        agent = VadAgent(settings=LOOM_TEST)
        with vad_output(kernel.bus) as (vad, voiced):
            await kernel.spawn(agent)
            await publish_all(kernel, chunk_events(samples, stream="tone"))
            await drain_through(kernel, vad, speech)

    tone_events = [e for e in vad.events if e.metadata["stream"] == "tone"]
    # the stream's audio_end is passed on last, once its results are out
    assert tone_events[-1].type == AUDIO_END
    start, end = tone_events[0], tone_events[-2]
    assert (start.type, end.type) == (SPEECH_START, SPEECH_END)
    assert int(end.metadata["stream_ms"]) <= 500
    for event in (start, end):
        assert event.source == "vad"
        assert event.priority == 70
        assert {k: event.metadata[k] for k in ("frame_ms", "mode", "sample_rate")} == {
            "frame_ms": "20",
            "mode": "1",
            "sample_rate": "16000",
        }
    assert end.metadata["reason"] == SILENCE
    frames = [e for e in voiced.events if e.metadata["stream"] == "tone"]
    assert frames
    first = frames[0]
    assert first.type == AUDIO_VOICED
    assert first.priority == 80
    assert first.source == "vad"
    assert len(first.payload) == 640
    assert {k: first.metadata[k] for k in ("sample_rate", "channels", "encoding", "frame_ms")} == {
        "sample_rate": "16000",
        "channels": "1",
        "encoding": "pcm_s16le",
        "frame_ms": "20",
    }
    assert first.metadata["stream_ms"] == start.metadata["stream_ms"]  # the pre-roll's start


async def test_any_chunking_rate_and_channel_count_finds_the_same_segments(
    speech: Speech,
) -> None:
    samples = pad(silence(0.5), speech.flite(SENTENCE), silence(0.7), speech.flite("okay"))
    expected = segments_of(run_machine(samples))
    at_22k = resampled(samples, 22_050)
    stereo_22k = np.stack([at_22k, at_22k], axis=1).reshape(-1)
    at_48k = resampled(samples, 48_000)
    streams = {
        "whole": chunk_events(samples, stream="whole", chunk_ms=60_000),
        "7ms": chunk_events(samples, stream="7ms", chunk_ms=7),
        "33ms": chunk_events(samples, stream="33ms", chunk_ms=33),
        "22k-stereo": chunk_events(stereo_22k, stream="22k-stereo", rate=22_050, channels=2),
        "22k-stereo-7ms": chunk_events(
            stereo_22k, stream="22k-stereo-7ms", rate=22_050, channels=2, chunk_ms=7
        ),
        "48k-33ms": chunk_events(at_48k, stream="48k-33ms", rate=48_000, chunk_ms=33),
    }
    async with open_test_kernel() as kernel:
        agent = VadAgent()
        with vad_output(kernel.bus) as (vad, _voiced):
            await kernel.spawn(agent)
            for events in streams.values():
                await publish_all(kernel, events)
            await drain_through(kernel, vad, speech)

    found = {name: segments_on_bus(vad.events, name) for name in streams}
    assert len(expected) == 2
    for name in ("whole", "7ms", "33ms"):  # the same samples: exactly the same
        assert found[name] == expected, name
    # resampled chunk by chunk as if whole
    assert found["22k-stereo-7ms"] == found["22k-stereo"]
    for name in ("22k-stereo", "48k-33ms"):  # resampled twice: within a frame or two
        assert len(found[name]) == len(expected), name
        for (start, end, _), (want_start, want_end, _) in zip(found[name], expected, strict=True):
            assert abs(start - want_start) <= 40, name
            assert abs(end - want_end) <= 40, name
    stats = agent.stats()
    sentinel_chunks = len(sentinel_events(speech, "sentinel")) - 1
    assert stats.chunks == sum(len(events) - 1 for events in streams.values()) + sentinel_chunks
    assert stats.skipped == 0
    assert stats.segments == 6 * 2 + 1  # and the sentinel's


async def test_bad_chunks_are_skipped_and_counted_and_the_stream_goes_on(speech: Speech) -> None:
    clip = pad(silence(0.5), speech.flite(SENTENCE), silence(0.5))
    good = chunk_events(clip, stream="mic")
    odd = Event("audio_chunk", b"\x01\x02\x03", metadata={"stream": "mic"})
    slow = audio_chunk_event(bytes(640), sample_rate=1000, channels=1, stream="mic")
    opus = audio_chunk_event(bytes(640), sample_rate=16_000, channels=1, stream="mic")
    opus = opus.with_metadata(encoding="opus")
    events = [good[0], odd, slow, opus, *good[1:]]
    async with open_test_kernel() as kernel:
        agent = VadAgent()
        with vad_output(kernel.bus) as (vad, _voiced):
            await kernel.spawn(agent)
            await publish_all(kernel, events)
            await drain_through(kernel, vad, speech)
        assert kernel.directory.get("vad") is not None  # still running

    # the bad chunks changed nothing: the segment is where the clean stream has it
    assert segments_on_bus(vad.events, "mic") == segments_of(run_machine(clip))
    stats = agent.stats()
    assert stats.skipped == 3
    assert stats.chunks == len(events) - 1 + len(sentinel_events(speech, "sentinel")) - 1


async def test_audio_end_closes_an_open_utterance_and_forgets_the_stream(
    speech: Speech,
) -> None:
    unbroken = trimmed(speech.flite(SENTENCE))
    async with open_test_kernel() as kernel:
        agent = VadAgent()
        with vad_output(kernel.bus) as (vad, _voiced):
            await kernel.spawn(agent)
            events = chunk_events(unbroken, stream="cut-off")
            await publish_all(kernel, events[:-1])
            await drain_through(kernel, vad, speech, stream="first")
            assert "cut-off" in agent.open_streams
            assert [e.type for e in vad.events if e.metadata["stream"] == "cut-off"] == [
                SPEECH_START
            ]
            await publish_all(kernel, events[-1:])
            await drain_through(kernel, vad, speech, stream="second")

    [(_, end_ms, reason)] = segments_on_bus(vad.events, "cut-off")
    assert reason == END_OF_STREAM
    whole_frames_ms = len(unbroken) // 320 * 20
    assert whole_frames_ms - 200 < end_ms <= whole_frames_ms  # within the hangover of the end
    assert "cut-off" not in agent.open_streams


@pytest.mark.parametrize("realtime", [False, True], ids=["fast", "paced"])
async def test_a_wav_source_through_the_agent_gives_speech_start_and_end(
    speech: Speech, autojump_clock: trio.testing.MockClock, realtime: bool
) -> None:
    clip = speech.flite(SENTENCE)
    path = speech.save("vad-kitchen.wav", pad(silence(1.0), clip, silence(1.0)))
    begin, end = speech_span_ms(clip, 1000)
    published_at: dict[str, float] = {}

    def note_time(topic: str, event: Event) -> bool:
        published_at.setdefault(event.type, trio.current_time())
        return True

    async with open_test_kernel() as kernel:
        kernel.bus.attach_handler(VAD_TOPIC, note_time)
        with vad_output(kernel.bus) as (vad, voiced):
            await kernel.spawn(VadAgent())
            started = trio.current_time()
            source = WavSource(path, realtime=realtime)
            await source.run(kernel.bus)
            await drain_through(kernel, vad, speech)

    [(start_ms, end_ms, reason)] = segments_on_bus(vad.events, "wav.vad-kitchen")
    assert begin - 60 <= start_ms <= begin + 60
    assert end - 20 <= end_ms <= end + 120
    assert reason == SILENCE
    frames = [e for e in voiced.events if e.metadata["stream"] == "wav.vad-kitchen"]
    assert sum(len(e.payload) for e in frames) // 32 == pytest.approx(end_ms - start_ms, abs=200)
    start_at = published_at[SPEECH_START] - started
    end_at = published_at[SPEECH_END] - started
    if realtime:  # each decision comes as soon as its audio has arrived, not before
        assert start_ms / 1000 < start_at <= (start_ms + 60 + 40) / 1000
        assert (end_ms + 200) / 1000 <= end_at <= (end_ms + 200 + 40) / 1000
    else:  # as fast as the kernel goes: the mock clock never moves
        assert start_at == end_at == 0


async def test_the_silero_agent_classifies_off_the_event_loop_and_finds_the_sentence(
    speech: Speech,
) -> None:
    clip = speech.flite(SENTENCE)
    path = speech.save("vad-silero.wav", pad(silence(1.0), clip, silence(1.0)))
    begin, end = speech_span_ms(clip, 1000)
    async with open_test_kernel() as kernel:
        with vad_output(kernel.bus) as (vad, _voiced):
            await kernel.spawn(VadAgent(settings=VadSettings(backend="silero")))
            await WavSource(path, realtime=False).run(kernel.bus)
            await drain_through(kernel, vad, speech)
    [(start_ms, end_ms, reason)] = segments_on_bus(vad.events, "wav.vad-silero")
    assert begin - 100 <= start_ms <= begin + 100
    assert end - 100 <= end_ms <= end + 150
    assert reason == SILENCE
    assert vad.events[-1].type == AUDIO_END  # passed on after the stream's results
