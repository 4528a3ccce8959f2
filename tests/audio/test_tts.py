"""``tts.speak`` with real engines (espeak-ng, pyttsx3, flite) into WAV files.

Pacing and barge-in run on an autojumping ``MockClock``: the WAV sink plays on the trio clock,
so "half a second into the answer" is exact and costs no real time. Those tests set no
timeout: a worker thread or subprocess (synthesis) leaves every task blocked, and the clock
would jump straight to a timeout's deadline.
"""

from __future__ import annotations

import json
import math
import os
import sys
import time
import types
import wave
from pathlib import Path

import numpy as np
import pytest
import trio
import trio.testing

from loomk import EventBus
from loomk.actions.types import ActionCall, ActionResult, ActionStatus, ErrorCode
from loomk.errors import ConfigError
from loomk.testing import capture_events, open_test_kernel
from loomk_audio.errors import AudioDependencyMissing, AudioDeviceError
from loomk_audio.events import TTS_DONE, TTS_ERROR, TTS_START, TTS_TOPIC
from loomk_audio.pcm import read_wav
from loomk_audio.tts import (
    TTS_PLAYBACK_ERROR,
    TTS_SYNTH_ERROR,
    TTS_TIMEOUT,
    DeviceSink,
    Synthesized,
    TtsProvider,
    TtsSettings,
    make_engine,
)

SENTENCE = "turn on the kitchen lights"
LONG_ANSWER = (
    "The weather in Paris today is mild, with light clouds in the morning, a little sun in "
    "the afternoon and a gentle breeze from the west until the evening."
)


def provider(tmp_path: Path, **settings: object) -> tuple[TtsProvider, EventBus]:
    """A provider writing WAV files into ``tmp_path``, with its bus."""
    bus = EventBus()
    options: dict[str, object] = {"output": "wav", "out_dir": tmp_path, "realtime": False}
    options.update(settings)
    return TtsProvider(bus, TtsSettings(**options)), bus  # type: ignore[arg-type]


async def speak(
    tts: TtsProvider, payload: bytes | str, call_id: str = "call-1", **headers: str
) -> ActionResult:
    data = payload.encode() if isinstance(payload, str) else payload
    return await tts.invoke(ActionCall(call_id, "tts.speak", data, headers=headers))


def text_payload(text: str) -> bytes:
    return json.dumps({"text": text}).encode()


def wav_info(path: str | Path) -> tuple[int, int, int, int]:
    """(channels, sample width in bytes, rate, frames) of a WAV file."""
    with wave.open(str(path), "rb") as handle:
        return (
            handle.getnchannels(),
            handle.getsampwidth(),
            handle.getframerate(),
            handle.getnframes(),
        )


def samples_of(result: ActionResult) -> np.ndarray:
    samples, _, _ = read_wav(result.json()["wav_path"])
    return samples


@pytest.mark.parametrize(
    ("engine", "rate"), [("espeak-ng", 22_050), ("pyttsx3", 22_050), ("flite", 16_000)]
)
async def test_each_engine_speaks_a_mono_16_bit_wav(tmp_path: Path, engine: str, rate: int) -> None:
    tts, _ = provider(tmp_path, engine=engine)
    result = await speak(tts, text_payload(SENTENCE))
    assert result.ok, result.error
    out = result.json()
    channels, width, found_rate, frames = wav_info(out["wav_path"])
    assert (channels, width, found_rate) == (1, 2, rate)
    seconds = frames / rate
    assert 0.8 < seconds < 3.5, seconds  # five words
    assert out["played_ms"] == round(seconds * 1000)
    assert out["engine"] == engine
    assert out["sample_rate"] == rate
    assert out["sink"] == out["player"] == "wav"
    assert out["interrupted"] is False
    samples = samples_of(result)
    assert np.sqrt(np.mean(samples.astype(np.float64) ** 2)) > 500  # speech, not silence


async def test_flite_speech_round_trips_through_pocketsphinx(tmp_path: Path) -> None:
    from pocketsphinx import Decoder

    tts, _ = provider(tmp_path, engine="flite", voice="slt")
    said = "what is the weather in paris"
    result = await speak(tts, said)
    assert result.ok, result.error
    samples, rate, _ = read_wav(result.json()["wav_path"])
    assert rate == 16_000
    decoder = Decoder(samprate=16_000, loglevel="FATAL")
    decoder.start_utt()
    decoder.process_raw(samples.tobytes(), full_utt=True)
    decoder.end_utt()
    assert decoder.hyp() is not None
    assert decoder.hyp().hypstr == said


async def test_start_and_done_events_carry_the_metadata(tmp_path: Path) -> None:
    tts, bus = provider(tmp_path, engine="espeak-ng", voice="en-us")
    with capture_events(bus, TTS_TOPIC) as events:
        result = await speak(tts, text_payload(SENTENCE), "call-7", rate="1.5", stream="kitchen")
    assert result.ok
    out = result.json()
    start, done = events.events
    assert (start.type, done.type) == (TTS_START, TTS_DONE)
    assert start.payload == done.payload == SENTENCE.encode()
    for event in (start, done):
        meta = event.metadata
        assert meta["engine"] == "espeak-ng"
        assert meta["voice"] == "en-us"
        assert (meta["rate"], meta["volume"]) == ("1.5", "1")
        assert meta["player"] == meta["sink"] == "wav"
        assert (meta["call_id"], meta["stream"]) == ("call-7", "kitchen")
    meta = done.metadata
    assert meta["sample_rate"] == "22050"
    assert meta["wav_path"] == out["wav_path"]
    assert Path(meta["wav_path"]).parent == tmp_path
    assert meta["interrupted"] == "false"
    assert int(meta["played_ms"]) == out["played_ms"] > 500
    total = int(meta["total_ms"])
    assert int(meta["synthesis_ms"]) + int(meta["playback_ms"]) in (total - 1, total, total + 1)
    assert float(meta["first_audio_at"]) == out["first_audio_at"]
    assert out["rate"] == 1.5
    assert out["synthesis_ms"] == int(meta["synthesis_ms"])


@pytest.mark.parametrize("payload", [b"", b"   \n", b'{"text": "  "}', b'"\\t"'])
async def test_blank_text_is_ok_and_says_nothing(tmp_path: Path, payload: bytes) -> None:
    tts, bus = provider(tmp_path, engine="espeak-ng")
    with capture_events(bus, TTS_TOPIC) as events:
        result = await speak(tts, payload)
    assert result.ok
    assert result.output == b""
    assert len(events) == 0
    assert list(tmp_path.iterdir()) == []


async def test_raw_utf8_and_json_strings_are_spoken(tmp_path: Path) -> None:
    tts, _ = provider(tmp_path, engine="espeak-ng")
    raw = await speak(tts, "-v hello there", "raw")  # stdin, so "-v" is text, not an option
    quoted = await speak(tts, b'"hello there"', "quoted")
    assert raw.ok
    assert quoted.ok
    assert len(samples_of(raw)) > len(samples_of(quoted)) > 0


@pytest.mark.parametrize(
    ("payload", "headers"),
    [
        (b"\xff\xfe not utf-8", {}),
        (b'{"txt": "hello"}', {}),
        (b'{"text": 5}', {}),
        (b"hello", {"rate": "fast"}),
        (b"hello", {"volume": "nan"}),
        (b"hello", {"sample_rate": "44.1"}),
        (b"hello", {"sample_rate": "1000000"}),
    ],
)
async def test_bad_payloads_and_headers_are_invalid_params(
    tmp_path: Path, payload: bytes, headers: dict[str, str]
) -> None:
    tts, bus = provider(tmp_path, engine="espeak-ng")
    with capture_events(bus, TTS_TOPIC) as events:
        result = await speak(tts, payload, **headers)
    assert result.status is ActionStatus.ACTION_ERROR
    assert result.code == ErrorCode.INVALID_PARAMS
    assert len(events) == 0


async def test_rate_and_volume_are_clamped_and_reach_the_engine(tmp_path: Path) -> None:
    tts, _ = provider(tmp_path, engine="espeak-ng")

    async def spoken(**headers: str) -> tuple[ActionResult, np.ndarray]:
        result = await speak(tts, text_payload(SENTENCE), **headers)
        assert result.ok, result.error
        return result, samples_of(result)

    _, normal = await spoken()
    fastest, fast = await spoken(rate="2")
    beyond, too_fast = await spoken(rate="9")
    _, slow = await spoken(rate="0.5")
    assert len(fast) < 0.7 * len(normal) < len(normal) < 0.7 * len(slow)
    assert beyond.json()["rate"] == fastest.json()["rate"] == 2.0
    assert np.array_equal(too_fast, fast)  # 9 is clamped to 2

    def rms(samples: np.ndarray) -> float:
        return float(np.sqrt(np.mean(samples.astype(np.float64) ** 2)))

    _, quiet = await spoken(volume="0.5")
    _, loud = await spoken(volume="2")
    _, beyond_loud = await spoken(volume="50")
    assert rms(quiet) * 2.5 < rms(loud)
    assert np.array_equal(beyond_loud, loud)


async def test_pyttsx3_rate_volume_and_voice(tmp_path: Path) -> None:
    tts, _ = provider(tmp_path, engine="pyttsx3")
    normal = samples_of(await speak(tts, SENTENCE))
    fast_and_quiet = samples_of(await speak(tts, SENTENCE, rate="2", volume="0.5"))
    assert len(fast_and_quiet) < 0.7 * len(normal)
    assert np.abs(fast_and_quiet).max() < 0.8 * np.abs(normal).max()
    assert np.array_equal(samples_of(await speak(tts, SENTENCE)), normal)  # repeatable
    assert (await speak(tts, SENTENCE, voice="xx-no-such-voice")).code == TTS_SYNTH_ERROR


async def test_flite_rate_and_volume(tmp_path: Path) -> None:
    tts, _ = provider(tmp_path, engine="flite")
    normal = samples_of(await speak(tts, SENTENCE))
    fast_and_quiet = samples_of(await speak(tts, SENTENCE, rate="2", volume="0.5"))
    assert len(fast_and_quiet) < 0.7 * len(normal)
    assert np.abs(fast_and_quiet).max() < 0.6 * np.abs(normal).max()


async def test_sample_rate_header_resamples(tmp_path: Path) -> None:
    tts, bus = provider(tmp_path, engine="espeak-ng")
    native = await speak(tts, SENTENCE)
    with capture_events(bus, TTS_TOPIC, event_types=[TTS_DONE]) as done:
        at_16k = await speak(tts, SENTENCE, sample_rate="16000")
    assert at_16k.json()["sample_rate"] == 16_000
    assert done.events[0].metadata["sample_rate"] == "16000"
    _, _, rate, frames = wav_info(at_16k.json()["wav_path"])
    native_frames = wav_info(native.json()["wav_path"])[3]
    assert rate == 16_000
    assert abs(frames / 16_000 - native_frames / 22_050) < 0.01


async def test_unknown_voice_is_a_synthesis_error(tmp_path: Path) -> None:
    tts, bus = provider(tmp_path, engine="espeak-ng")
    with capture_events(bus, TTS_TOPIC) as events:
        result = await speak(tts, SENTENCE, voice="xx-no-such-voice")
    assert result.status is ActionStatus.ACTION_ERROR
    assert result.code == TTS_SYNTH_ERROR
    assert "xx-no-such-voice" in result.error.message  # type: ignore[union-attr]
    start, error = events.events
    assert (start.type, error.type) == (TTS_START, TTS_ERROR)
    assert error.metadata["error"] == result.error.message  # type: ignore[union-attr]
    flite, _ = provider(tmp_path, engine="flite")
    assert (await speak(flite, SENTENCE, voice="nobody")).code == TTS_SYNTH_ERROR


async def test_a_job_longer_than_the_timeout_is_tts_timeout(tmp_path: Path) -> None:
    # Real clock: synthesis takes ~30 ms, then the answer (~8 s) plays in real time.
    tts, bus = provider(tmp_path, engine="espeak-ng", realtime=True, timeout_ms=300)
    began = trio.current_time()
    with capture_events(bus, TTS_TOPIC) as events:
        result = await speak(tts, LONG_ANSWER)
    assert trio.current_time() - began < 5  # the answer lasts about 9 s
    assert result.status is ActionStatus.ACTION_TIMEOUT
    assert result.code == TTS_TIMEOUT
    start, error = events.events
    assert (start.type, error.type) == (TTS_START, TTS_ERROR)
    assert error.metadata["timeout_ms"] == "300"
    assert "300 ms" in error.metadata["error"]
    assert int(error.metadata["played_ms"]) <= 300


class _Silent:
    """An engine that never finishes: the timeout must cover synthesis too."""

    name = "silent"
    default_voice = "none"

    async def synthesize(self, text: str, *, voice: str, rate: float, volume: float) -> Synthesized:
        await trio.sleep_forever()
        raise AssertionError("unreachable")


async def test_the_timeout_covers_synthesis(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    settings = TtsSettings(output="wav", out_dir=tmp_path, timeout_ms=20_000)
    tts = TtsProvider(EventBus(), settings, engine=_Silent())
    began = trio.current_time()
    result = await speak(tts, SENTENCE)
    assert result.code == TTS_TIMEOUT
    assert trio.current_time() - began == pytest.approx(20.0)


async def test_interrupt_cuts_a_long_answer_short(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    whole, _ = provider(tmp_path / "whole", engine="espeak-ng", timeout_ms=None)
    full = await speak(whole, LONG_ANSWER)
    full_ms = full.json()["played_ms"]
    assert full_ms > 5_000

    tts, bus = provider(
        tmp_path / "cut", engine="espeak-ng", realtime=True, timeout_ms=None, chunk_ms=20
    )
    results: list[ActionResult] = []
    cut: list[int] = []
    heard: list[float] = []
    with capture_events(bus, TTS_TOPIC) as events:

        async def answer() -> None:
            results.append(await speak(tts, LONG_ANSWER))

        async def barge_in() -> None:
            await events.wait_for(1)  # tts.start: the utterance is registered
            [playback] = tts.speaker.active
            await playback.audible.wait()
            heard.append(trio.current_time())
            await trio.sleep(0.51)  # 26 chunks of 20 ms have started by then
            cut.append(tts.interrupt(reason="user spoke"))

        async with trio.open_nursery() as nursery:
            nursery.start_soon(answer)
            nursery.start_soon(barge_in)

    [result] = results
    assert cut == [1]
    assert result.ok
    out = result.json()
    assert out["interrupted"] is True
    assert out["first_audio_at"] == heard[0]
    assert out["played_ms"] == 520
    assert out["playback_ms"] == 510
    channels, _, rate, frames = wav_info(out["wav_path"])
    assert frames == 26 * rate // 50 < wav_info(full.json()["wav_path"])[3]
    assert channels == 1
    start, done = events.events
    assert (start.type, done.type) == (TTS_START, TTS_DONE)
    assert done.metadata["interrupted"] == "true"
    assert done.metadata["interrupt_reason"] == "user spoke"
    assert done.metadata["played_ms"] == "520"
    assert tts.speaker.active == ()
    assert tts.interrupt() == 0  # nothing left to cut


class _Replay:
    """espeak-ng speech made beforehand and replayed with no subprocess, so that two answers
    start at the same instant of an autojumping clock (a subprocess in flight lets the clock
    jump through the other answer's pacing)."""

    name = "espeak-ng"
    default_voice = "en-us"

    def __init__(self) -> None:
        self.speech: dict[str, Synthesized] = {}

    async def prepare(self, text: str) -> None:
        engine = make_engine("espeak-ng")
        self.speech[text] = await engine.synthesize(text, voice="en-us", rate=1.0, volume=1.0)

    async def synthesize(self, text: str, *, voice: str, rate: float, volume: float) -> Synthesized:
        await trio.lowlevel.checkpoint()
        return self.speech[text]


async def test_interrupt_of_one_stream_leaves_the_others(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    replay = _Replay()
    await replay.prepare(SENTENCE)
    settings = TtsSettings(output="wav", out_dir=tmp_path, timeout_ms=None)
    tts = TtsProvider(EventBus(), settings, engine=replay)
    results: dict[str, ActionResult] = {}

    async def answer(stream: str) -> None:
        results[stream] = await speak(tts, SENTENCE, f"call-{stream}", stream=stream)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(answer, "kitchen")
        nursery.start_soon(answer, "hall")
        await trio.testing.wait_all_tasks_blocked()  # both are playing, on the clock
        assert {playback.stream for playback in tts.speaker.active} == {"kitchen", "hall"}
        await trio.sleep(0.205)  # 11 chunks of 20 ms have started
        assert tts.interrupt(stream="kitchen") == 1
    kitchen, hall = results["kitchen"].json(), results["hall"].json()
    assert kitchen["first_audio_at"] == hall["first_audio_at"]
    assert kitchen["interrupted"] is True
    assert kitchen["played_ms"] == 220
    assert hall["interrupted"] is False
    assert hall["played_ms"] == round(replay.speech[SENTENCE].duration_ms)


async def test_auto_output_falls_back_to_wav_without_a_device(tmp_path: Path) -> None:
    try:
        DeviceSink().close()
    except AudioDeviceError:
        pass
    else:
        pytest.skip("this machine has a sound output device")
    settings = TtsSettings(engine="espeak-ng", output="auto", out_dir=tmp_path, realtime=False)
    tts = TtsProvider(EventBus(), settings)
    assert tts.sink.name == "wav"
    result = await speak(tts, "hello")
    assert Path(result.json()["wav_path"]).parent == tmp_path
    with pytest.raises(AudioDeviceError, match="no sound output device"):
        TtsProvider(EventBus(), TtsSettings(engine="espeak-ng", output="device"))


def test_a_missing_engine_fails_at_construction(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))  # neither espeak-ng nor flite on PATH
    settings = {"output": "wav", "out_dir": tmp_path}
    with pytest.raises(AudioDependencyMissing, match="apt-get install espeak-ng") as missing:
        TtsProvider(EventBus(), TtsSettings(engine="espeak-ng", **settings))  # type: ignore[arg-type]
    assert missing.value.package == "espeak-ng"
    with pytest.raises(AudioDependencyMissing, match="apt-get install flite"):
        TtsProvider(EventBus(), TtsSettings(engine="flite", **settings))  # type: ignore[arg-type]
    # auto takes the next engine: pyttsx3 loads the espeak-ng library, not the program
    auto = TtsProvider(EventBus(), TtsSettings(engine="auto", **settings))  # type: ignore[arg-type]
    assert auto.engine.name == "pyttsx3"


def test_settings_are_checked() -> None:
    with pytest.raises(ConfigError, match="engine"):
        TtsSettings(engine="piper")
    with pytest.raises(ConfigError, match="output"):
        TtsSettings(output="speaker")
    with pytest.raises(ConfigError, match="timeout_ms"):
        TtsSettings(timeout_ms=0)
    with pytest.raises(ConfigError, match="rate"):
        TtsSettings(rate=math.nan)
    assert (TtsSettings(rate=5).rate, TtsSettings(volume=0.1).volume) == (2.0, 0.5)


def test_descriptor_is_tts_speak_native() -> None:
    tts = TtsProvider(EventBus(), TtsSettings(engine="espeak-ng", output="wav"))
    descriptor = tts.descriptor
    assert (descriptor.name, descriptor.version, descriptor.provider.name) == (
        "tts.speak",
        "0.1.0",
        "PROVIDER_NATIVE",
    )
    assert descriptor.schema() == {
        "type": "object",
        "properties": {"text": {"type": "string", "description": "What to say"}},
        "required": ["text"],
    }


async def test_events_are_published_on_the_settings_topic(tmp_path: Path) -> None:
    bus = EventBus()
    settings = TtsSettings(
        engine="espeak-ng", output="wav", out_dir=tmp_path, topic="speech", realtime=False
    )
    tts = TtsProvider(bus, settings)
    with capture_events(bus, "speech") as events, capture_events(bus, TTS_TOPIC) as default:
        await speak(tts, "hi")
    assert [event.type for event in events.events] == [TTS_START, TTS_DONE]
    assert len(default) == 0
    assert Path(events.events[1].metadata["wav_path"]).is_file()


_NULL_ALSA = """
pcm.!default { type asym  playback.pcm "nullout"  capture.pcm "nullout" }
pcm.nullout  { type null }
"""

_SPEAK_ON_DEVICE = """
import json, sys, trio
from loomk import EventBus
from loomk.actions.types import ActionCall
from loomk_audio.tts import TtsProvider, TtsSettings

async def main():
    tts = TtsProvider(EventBus(), TtsSettings(engine="espeak-ng", output="auto"))
    try:
        result = await tts.invoke(ActionCall("c", "tts.speak", sys.argv[1].encode()))
    finally:
        tts.close()
    print(json.dumps({"sink": tts.sink.name, "out": result.json()}))

trio.run(main)
"""


async def test_device_sink_plays_through_portaudio(tmp_path: Path) -> None:
    # A machine without a sound card, given an ALSA config whose default device discards
    # what it is sent (it is not paced, so this checks the PyAudio path, not the timing).
    config = tmp_path / "asound.conf"
    config.write_text(_NULL_ALSA)
    env = {**os.environ, "ALSA_CONFIG_PATH": f"/usr/share/alsa/alsa.conf:{config}"}
    done = await trio.run_process(
        [sys.executable, "-c", _SPEAK_ON_DEVICE, SENTENCE],
        env=env,
        capture_stdout=True,
        capture_stderr=True,
    )
    report = json.loads(done.stdout.decode().strip().splitlines()[-1])
    assert report["sink"] == "device"
    out = report["out"]
    assert out["player"] == "device"
    assert out["wav_path"] is None
    assert out["interrupted"] is False
    assert 800 < out["played_ms"] < 3_500


async def test_a_failed_write_is_a_playback_error(tmp_path: Path) -> None:
    out_dir = tmp_path / "gone"
    tts, bus = provider(out_dir, engine="espeak-ng")
    out_dir.rmdir()  # removed after the provider made it
    with capture_events(bus, TTS_TOPIC) as events:
        result = await speak(tts, SENTENCE)
    assert result.code == TTS_PLAYBACK_ERROR
    assert [event.type for event in events.events] == [TTS_START, TTS_ERROR]


class _FakeStream:
    """A PortAudio output stream that takes real time to play each write, as a device does."""

    def __init__(self, calls: list[str], rate: int) -> None:
        self.calls = calls
        self.rate = rate

    def write(self, data: bytes) -> None:
        self.calls.append("write")
        time.sleep(len(data) / 2 / self.rate)

    def stop_stream(self) -> None:
        self.calls.append("stop")

    def close(self) -> None:
        self.calls.append("close")


def _fake_pyaudio(calls: list[str]) -> types.ModuleType:
    module = types.ModuleType("pyaudio")

    class PyAudio:
        def get_device_count(self) -> int:
            return 1

        def get_device_info_by_index(self, index: int) -> dict[str, object]:
            return {"index": index, "name": "Fake Speaker", "maxOutputChannels": 2}

        def get_default_output_device_info(self) -> dict[str, object]:
            return self.get_device_info_by_index(0)

        def open(self, *, rate: int, **options: object) -> _FakeStream:
            assert options["output"] is True
            return _FakeStream(calls, rate)

        def terminate(self) -> None:
            calls.append("terminate")

    module.PyAudio = PyAudio  # type: ignore[attr-defined]
    module.paInt16 = 8  # type: ignore[attr-defined]
    return module


async def test_an_interrupt_stops_device_writes_within_one_chunk(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    calls: list[str] = []
    monkeypatch.setitem(sys.modules, "pyaudio", _fake_pyaudio(calls))
    settings = TtsSettings(engine="espeak-ng", output="device", device="speaker", chunk_ms=20)
    tts = TtsProvider(EventBus(), settings)
    assert tts.sink.name == "device"
    results: list[ActionResult] = []
    stopped: list[float] = []

    async def answer() -> None:
        results.append(await speak(tts, LONG_ANSWER))
        stopped.append(trio.current_time())

    async with trio.open_nursery() as nursery:
        nursery.start_soon(answer)
        await trio.testing.wait_all_tasks_blocked()
        [playback] = tts.speaker.active
        await playback.audible.wait()
        await trio.sleep(0.1)
        assert tts.interrupt() == 1
        cut_at = trio.current_time()
    out = results[0].json()
    assert out["interrupted"] is True
    assert stopped[0] - cut_at < 0.25  # one 20 ms chunk, with room for a slow machine
    heard_ms = (cut_at - out["first_audio_at"]) * 1000
    assert out["played_ms"] <= heard_ms + 60  # at most the chunk in flight, of ~9 s
    assert calls[-1] == "close"
    assert "stop" not in calls  # closed at once, not drained
    tts.close()
    assert calls[-1] == "terminate"


async def test_the_kernel_broker_runs_tts_speak(tmp_path: Path) -> None:
    async with open_test_kernel() as kernel:
        settings = TtsSettings(engine="flite", output="wav", out_dir=tmp_path, realtime=False)
        tts = TtsProvider(kernel.bus, settings)
        kernel.broker.register(tts)
        with capture_events(kernel.bus, TTS_TOPIC) as events:
            call = ActionCall("call-9", "tts.speak", text_payload("hello"), version="0.1.0")
            result = await kernel.broker.invoke(call)
            await events.wait_for(2)
    assert result.ok, result.error
    assert result.json()["engine"] == "flite"
    assert [event.type for event in events.events] == [TTS_START, TTS_DONE]
