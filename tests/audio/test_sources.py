"""WavSource: a WAV file published as Loom's ``audio_chunk`` events, paced or fast."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import trio
import trio.testing
from audio_support import Speech, pad, silence, tone

from loomk import Event, EventBus, QoS
from loomk.testing import capture_events
from loomk_audio.errors import AudioFormatError
from loomk_audio.events import AUDIO_CHUNK, AUDIO_END, AUDIO_TOPIC
from loomk_audio.pcm import write_wav
from loomk_audio.sources import SourceStats, WavSource


class ClockedBus:
    """Publishes on a bus and notes the trio time of each publish."""

    def __init__(self, bus: EventBus) -> None:
        self.bus = bus
        self.times: list[float] = []

    async def publish(self, topic: str, event: Event) -> int:
        self.times.append(trio.current_time())
        return await self.bus.publish(topic, event)


def payload_samples(events: list[Event]) -> np.ndarray:
    return np.frombuffer(b"".join(e.payload for e in events), dtype="<i2")


async def test_a_wav_is_published_whole_in_chunks_with_loom_metadata_then_ended(
    speech: Speech, autojump_clock: trio.testing.MockClock
) -> None:
    samples = pad(speech.flite("what time is it"), silence(0.0123))  # not whole chunks
    path = speech.save("src-what-time.wav", samples)
    source = WavSource(path, realtime=False)
    bus = EventBus()

    started = trio.current_time()
    with capture_events(bus, ">") as published:
        stats = await source.run(bus)

    assert trio.current_time() == started  # not paced: no waiting for the audio's time
    chunk_frames = 320
    chunks = math.ceil(len(samples) / chunk_frames)
    assert stats == SourceStats(chunks, len(samples), 16_000, 1)
    assert set(published.topics) == {AUDIO_TOPIC}
    events = published.events
    assert [e.type for e in events] == [AUDIO_CHUNK] * chunks + [AUDIO_END]
    body = events[:-1]
    assert np.array_equal(payload_samples(body), samples)
    first = body[0]
    assert first.priority == 90
    assert first.source == "mic.primary"
    assert dict(first.metadata) == {
        "sample_rate": "16000",
        "channels": "1",
        "device": "file:src-what-time.wav",
        "encoding": "pcm_s16le",
        "frame_samples": "320",
        "stream": "wav.src-what-time",
        "offset_frames": "0",
    }
    assert [int(e.metadata["offset_frames"]) for e in body] == list(
        range(0, len(samples), chunk_frames)
    )
    assert body[-1].metadata["frame_samples"] == str(len(samples) % chunk_frames)
    assert events[-1].metadata["stream"] == "wav.src-what-time"
    assert source.stream == "wav.src-what-time"


async def test_a_stereo_file_is_published_in_its_own_rate_and_channels(tmp_path: Path) -> None:
    left = tone(0.5, hz=300)
    stereo = np.stack([left, -left], axis=1).reshape(-1)  # interleaved
    path = write_wav(tmp_path / "two.wav", stereo, 22_050, channels=2)
    source = WavSource(
        path, topic="room.audio", stream="desk", source="mic.desk", chunk_ms=30, realtime=False
    )
    bus = EventBus()

    with capture_events(bus, "room.audio") as published:
        stats = await source.run(bus)

    frames = len(left)
    per_chunk = 22_050 * 30 // 1000
    assert stats == SourceStats(math.ceil(frames / per_chunk), frames, 22_050, 2)
    chunks = published.of_type(AUDIO_CHUNK)
    assert np.array_equal(payload_samples(chunks), stereo)
    assert {e.metadata["sample_rate"] for e in chunks} == {"22050"}
    assert {e.metadata["channels"] for e in chunks} == {"2"}
    assert chunks[0].metadata["frame_samples"] == str(2 * per_chunk)  # every channel
    assert chunks[1].metadata["offset_frames"] == str(per_chunk)
    assert {e.metadata["stream"] for e in published.events} == {"desk"}
    assert {e.source for e in published.events} == {"mic.desk"}


async def test_realtime_chunks_are_paced_by_the_trio_clock(
    speech: Speech, autojump_clock: trio.testing.MockClock
) -> None:
    samples = tone(1.0)
    path = speech.save("src-one-second.wav", samples)
    bus = ClockedBus(EventBus())
    started = trio.current_time()

    stats = await WavSource(path, chunk_ms=20).run(bus)

    assert stats.chunks == 50
    chunk_times = [t - started for t in bus.times[:-1]]  # the last publish is audio_end
    # each chunk goes out when its last sample would have been recorded
    assert chunk_times == pytest.approx([0.02 * (i + 1) for i in range(50)])
    assert trio.current_time() - started == pytest.approx(1.0)


async def test_fast_publishing_waits_for_a_slow_lossless_reader_and_loses_nothing(
    speech: Speech, autojump_clock: trio.testing.MockClock
) -> None:
    samples = tone(2.0)
    path = speech.save("src-two-seconds.wav", samples)
    bus = EventBus()
    received: list[Event] = []

    async def slow_reader(subscription_ready: trio.Event) -> None:
        async with bus.subscribe(AUDIO_TOPIC, qos=QoS.BATCHED, capacity=4) as subscription:
            subscription_ready.set()
            async for _topic, event in subscription:
                await trio.sleep(0.01)  # slower than the source, on the mock clock
                received.append(event)
                if event.type == AUDIO_END:
                    return

    async with trio.open_nursery() as nursery:
        ready = trio.Event()
        nursery.start_soon(slow_reader, ready)
        await ready.wait()
        started = trio.current_time()
        await WavSource(path, realtime=False).run(bus)
        publishing_took = trio.current_time() - started

    assert len(received) == 100 + 1
    assert np.array_equal(payload_samples(received[:-1]), samples)
    # it waited for the reader (10 ms an event, 4 queued), not for the audio's 2 s
    assert publishing_took == pytest.approx((101 - 4 - 1) * 0.01, abs=0.015)


async def test_a_cancelled_source_still_ends_its_stream(
    speech: Speech, autojump_clock: trio.testing.MockClock
) -> None:
    path = speech.save("src-ten-seconds.wav", silence(10.0))
    bus = EventBus()

    with capture_events(bus, AUDIO_TOPIC) as published:
        with trio.move_on_after(1.005):
            await WavSource(path).run(bus)

    types = [e.type for e in published.events]
    assert types == [AUDIO_CHUNK] * 50 + [AUDIO_END]


async def test_a_missing_file_fails_before_anything_is_published(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere.wav"
    with pytest.raises(FileNotFoundError, match=r"nowhere\.wav"):
        WavSource(missing)


async def test_a_file_that_is_not_a_wav_fails_naming_it(tmp_path: Path) -> None:
    notes = tmp_path / "notes.wav"
    notes.write_text("these are not samples")
    with pytest.raises(AudioFormatError, match=r"notes\.wav"):
        WavSource(notes)


async def test_chunk_ms_must_be_positive(speech: Speech) -> None:
    path = speech.save("src-short.wav", silence(0.1))
    with pytest.raises(ValueError, match="chunk_ms"):
        WavSource(path, chunk_ms=0)
