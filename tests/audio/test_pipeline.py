"""The whole voice pipeline on a real kernel: the shipped spoken commands in, spoken answers
out (checked by transcribing them back), barge-in, bad input, several streams at once."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import trio
from audio_support import Speech, pad, silence, white_noise
from prometheus_client.parser import text_string_to_metric_families
from scipy.signal import resample_poly

from loomk import Event
from loomk.testing import capture_events, open_test_kernel
from loomk_audio import TtsSettings, VoiceSettings, WakeSettings, open_voice_pipeline
from loomk_audio.assistant import BARGE_IN, BargeInMode
from loomk_audio.events import (
    AUDIO_TOPIC,
    TTS_START,
    TTS_TOPIC,
    VOICE_LATENCY,
    VOICE_TOPIC,
    audio_chunk_event,
)
from loomk_audio.grammar import command_grammar
from loomk_audio.pcm import read_wav, write_wav
from loomk_audio.stt import SphinxRecognizer, SttSettings

ROOT = Path(__file__).resolve().parents[2]
CLIPS = ROOT / "examples" / "audio"


def transcribe(path: str) -> str:
    """What pocketsphinx's open model hears in a WAV file (resampled to 16 kHz)."""
    samples, rate, _channels = read_wav(path)
    if rate != 16_000:
        g = np.gcd(rate, 16_000)
        samples = resample_poly(samples.astype(float), 16_000 // g, rate // g).astype(np.int16)
    recognizer = SphinxRecognizer()
    recognizer.start()
    recognizer.feed(samples)
    return recognizer.finish()


def settings(
    out: Path, *, grammar: bool = False, barge_in: BargeInMode = "speech", **tts: object
) -> VoiceSettings:
    """Answers written at once to ``out`` (unless told otherwise); with ``grammar``, speech
    is recognised under the command grammar, whose text is exact on flite's voice (the open
    model's is not always, and depends on what the decoder heard before)."""
    options: dict[str, object] = {"out_dir": out, "realtime": False} | tts
    stt = SttSettings(grammar=command_grammar()) if grammar else SttSettings()
    return VoiceSettings(  # type: ignore[arg-type]
        tts=TtsSettings(**options), stt=stt, barge_in=barge_in
    )


async def test_a_spoken_command_is_answered_aloud_with_the_answer_s_words(tmp_path: Path) -> None:
    # flite speaks the answer here: pocketsphinx understands its voice (not espeak-ng's)
    async with (
        open_test_kernel() as kernel,
        open_voice_pipeline(kernel, settings(tmp_path, engine="flite")) as pipeline,
    ):
        with capture_events(kernel.bus, VOICE_TOPIC, event_types=[VOICE_LATENCY]) as latency:
            turns = await pipeline.listen(CLIPS / "kitchen_lights.wav")
        assert pipeline.home is not None
        lights = dict(pipeline.home.lights)
        stats = pipeline.stats()
        metrics = {
            (sample.name, sample.labels.get("stage", "")): sample.value
            for family in text_string_to_metric_families(kernel.metrics.render_prometheus())
            for sample in family.samples
        }
    assert "voice:voice" not in kernel.metrics.sources()  # gone with the pipeline
    assert metrics[("voice_turns_total", "")] == stats.turns == 1
    for stage, spread in stats.latency.items():
        assert metrics[("voice_stage_latency_max_seconds", stage)] == spread.max_ms / 1000

    [turn] = turns
    meta = turn.metadata
    assert meta["transcript"] == "turn on the kitchen lights"
    assert (meta["route"], meta["intent"]) == ("Local", "lights")
    assert meta["answer"] == turn.payload.decode() == "Turning on the kitchen lights."
    assert json.loads(meta["actions"]) == [{"capability": "lights.set", "status": "ACTION_OK"}]
    assert lights == {"kitchen": True}  # the tool ran through the broker
    assert meta["interrupted"] == "false"
    assert meta["session_id"].startswith("sess_")
    assert transcribe(meta["wav_path"]) == "turning on the kitchen lights"
    # every stage's latency is published and kept in the stats
    [published] = latency.events
    stages = {"stt", "route", "tools", "tts", "first_audio", "turn"}
    assert {key.removesuffix("_ms") for key in published.metadata if key.endswith("_ms")} == stages
    assert stats.turns == 1
    assert set(stats.latency) == stages


async def test_each_shipped_command_gets_its_answer_and_the_clip_without_wake_word_none(
    tmp_path: Path,
) -> None:
    async with (
        open_test_kernel() as kernel,
        open_voice_pipeline(kernel, settings(tmp_path, grammar=True)) as pipeline,
    ):
        heard = {}
        for clip in ("twelve_times_seven", "timer", "what_time", "no_wake_word"):
            heard[clip] = [
                (t.metadata["transcript"], t.metadata["answer"])
                for t in await pipeline.listen(CLIPS / f"{clip}.wav")
            ]
        assert pipeline.home is not None
        timers = [timer.seconds for timer in pipeline.home.timers.values()]
        lights = pipeline.home.lights

    assert heard["twelve_times_seven"] == [
        ("what is twelve times seven", "Twelve times seven is 84.")
    ]
    assert heard["timer"] == [("set a timer for five minutes", "Timer set for 5 minutes.")]
    [(transcript, answer)] = heard["what_time"]
    assert transcript == "what time is it"
    assert answer.startswith("It's ")
    assert heard["no_wake_word"] == []  # "turn off the kitchen lights", without the wake word
    assert timers == [300]
    assert lights == {}


async def test_speech_over_the_answer_cuts_it_short(tmp_path: Path, speech: Speech) -> None:
    answers = tmp_path / "answers"
    async with (
        open_test_kernel() as kernel,
        open_voice_pipeline(kernel, settings(answers, grammar=True, realtime=True)) as pipeline,
    ):
        with (
            capture_events(kernel.bus, TTS_TOPIC, event_types=[TTS_START]) as speaking,
            capture_events(kernel.bus, VOICE_TOPIC, event_types=[BARGE_IN]) as barge_ins,
        ):
            first: list[Event] = []

            async def ask_the_time() -> None:
                first.extend(await pipeline.listen(CLIPS / "what_time.wav"))

            async with trio.open_nursery() as nursery:
                nursery.start_soon(ask_the_time)
                await speaking.wait_for(1)  # the answer is being spoken: talk over it
                # (in real time: the clip's speech starts 0.5 s in, into the answer)
                second = await pipeline.listen(CLIPS / "kitchen_lights.wav", realtime=True)
        stats = pipeline.stats()

    [cut] = first
    assert cut.metadata["interrupted"] == "true"
    samples, rate, _ = read_wav(cut.metadata["wav_path"])
    played = len(samples) / rate
    whole = len(speech.espeak(cut.metadata["answer"])) / 16_000  # "It's 2:05 PM." in full
    assert 0 < played < 0.8 * whole, (played, whole)
    [answered] = second
    assert answered.metadata["interrupted"] == "false"
    assert answered.metadata["transcript"] == "turn on the kitchen lights"
    [barge_in] = barge_ins.events
    assert barge_in.metadata["cause"] == "vad.speech_start"
    assert (stats.barge_ins, stats.interrupted, stats.turns) == (1, 1, 2)


async def test_bad_audio_is_skipped_resampled_or_ignored_and_the_agent_keeps_listening(
    tmp_path: Path, speech: Speech
) -> None:
    command, _rate, _ = read_wav(CLIPS / "what_time.wav")
    stereo_44k = resample_poly(command.astype(float), 441, 160).astype(np.int16)
    stereo_44k = np.repeat(stereo_44k, 2)  # the same samples on both channels
    noisy = speech.save("noise.wav", pad(silence(0.5), white_noise(3.0, dbfs=-30), silence(1)))
    async with (
        open_test_kernel() as kernel,
        open_voice_pipeline(kernel, settings(tmp_path)) as pipeline,
    ):
        # chunks no stage can read: odd length, an absurd rate, another encoding
        for metadata in ({}, {"sample_rate": "1000"}, {"encoding": "opus"}):
            event = audio_chunk_event(b"\x01\x02\x03", sample_rate=16_000, channels=1)
            broken = Event(event.type, event.payload, metadata={**event.metadata, **metadata})
            await kernel.bus.publish(AUDIO_TOPIC, broken)
        assert await pipeline.listen(noisy) == []
        assert await pipeline.listen(speech.save("silence.wav", silence(2.0))) == []
        path = tmp_path / "stereo.wav"
        write_wav(path, stereo_44k, 44_100, channels=2)
        turns = await pipeline.listen(path)
    [turn] = turns
    assert turn.metadata["transcript"] == "what time is it"


async def test_several_streams_at_once_are_each_answered(tmp_path: Path) -> None:
    clips = ["kitchen_lights", "twelve_times_seven", "timer"]
    answers: dict[str, list[str]] = {}
    async with (
        open_test_kernel() as kernel,
        open_voice_pipeline(kernel, settings(tmp_path, grammar=True)) as pipeline,
    ):

        async def listen(clip: str) -> None:
            turns = await pipeline.listen(CLIPS / f"{clip}.wav")
            answers[clip] = [t.metadata["answer"] for t in turns]

        async with trio.open_nursery() as nursery:
            for clip in clips:
                nursery.start_soon(listen, clip)
    assert answers == {
        "kitchen_lights": ["Turning on the kitchen lights."],
        "twelve_times_seven": ["Twelve times seven is 84."],
        "timer": ["Timer set for 5 minutes."],
    }


async def test_a_missing_wake_model_fails_at_start_naming_the_installed_ones(
    tmp_path: Path,
) -> None:
    from loomk_audio import AudioModelNotFound, WakeSettings

    bad = VoiceSettings(wake=WakeSettings(models=("hey_loom",)), tts=TtsSettings(out_dir=tmp_path))
    async with open_test_kernel() as kernel:
        with pytest.raises(AudioModelNotFound, match="hey_jarvis"):
            async with open_voice_pipeline(kernel, bad):
                pass
        assert kernel.broker.resolve("tts.speak") is None  # nothing left registered


async def test_loom_s_transcript_phrases_can_wake_the_agent_instead(
    tmp_path: Path, speech: Speech
) -> None:
    # every utterance is transcribed (the pipeline opens the recogniser's gate for this
    # mode) and the wake stage looks for the phrase in the text, as Loom's wake does: the
    # command said without the phrase is ignored; "hey jarvis" alone arms the next one
    said = pad(
        silence(0.5),
        speech.flite("turn off the kitchen lights"),
        silence(1.0),
        speech.flite("hey jarvis"),
        silence(1.0),
        speech.flite("what time is it"),
        silence(1.2),
    )
    phrases = WakeSettings(mode="phrases", phrases=("hey jarvis", "jarvis"))
    voice = VoiceSettings(wake=phrases, tts=TtsSettings(out_dir=tmp_path, realtime=False))
    async with open_test_kernel() as kernel, open_voice_pipeline(kernel, voice) as pipeline:
        with capture_events(kernel.bus, "transcript", event_types=["transcript.final"]) as heard:
            turns = await pipeline.listen(speech.save("armed.wav", said))
        lights = pipeline.home.lights if pipeline.home else None
    first, wake, command = (e.payload.decode() for e in heard.events)
    assert first == "turn off the kitchen lights"
    assert wake.endswith("jarvis")  # "hey jarvis" or near it: the phrase matches fuzzily
    assert command == "what time is it"
    [turn] = turns
    assert turn.metadata["transcript"] == "what time is it"
    assert turn.metadata["answer"].startswith("It's ")
    assert lights == {}  # the first command had no wake phrase: nothing was switched


async def test_what_the_local_model_cannot_answer_goes_to_the_configured_endpoint(
    tmp_path: Path, speech: Speech
) -> None:
    from openai_server import responses_json, serve_openai

    said = pad(
        silence(0.5), speech.flite("hey jarvis, tell me a story about dragons"), silence(1.2)
    )
    async with serve_openai() as fake:
        fake.script("responses", responses_json("Once upon a time, a dragon slept."))
        async with (
            open_test_kernel(llm_base_url=fake.base_url, llm_api_key="sk-test") as kernel,
            open_voice_pipeline(kernel, settings(tmp_path)) as pipeline,
        ):
            turns = await pipeline.listen(speech.save("story.wav", said))
    [turn] = turns
    assert turn.metadata["route"] == "Cloud"
    assert turn.metadata["answer"] == "Once upon a time, a dragon slept."
    assert turn.metadata["wav_path"]
    [request] = fake.requests
    assert turn.metadata["transcript"] in json.dumps(request.json())  # what was heard was asked


async def test_the_assistant_listens_where_the_wake_stage_puts_queries(tmp_path: Path) -> None:
    voice = VoiceSettings(
        wake=WakeSettings(query_topic="kitchen.query"),
        tts=TtsSettings(out_dir=tmp_path, realtime=False),
    )
    async with open_test_kernel() as kernel, open_voice_pipeline(kernel, voice) as pipeline:
        with capture_events(kernel.bus, "kitchen.query", event_types=["user.query"]) as asked:
            turns = await pipeline.listen(CLIPS / "kitchen_lights.wav")
    assert [e.payload.decode() for e in asked.events] == ["turn on the kitchen lights"]
    [turn] = turns
    assert turn.metadata["answer"] == "Turning on the kitchen lights."


async def test_a_long_file_played_fast_loses_nothing_the_stages_point_back_to(
    tmp_path: Path, speech: Speech
) -> None:
    # the command, then 30 s of talk: the source may not run so far ahead of the VAD and
    # the wake word that the recogniser's 10 s of audio no longer holds what they point to
    talk = speech.flite("and then we went down to the river and talked for a very long time")
    said = pad(
        silence(0.5),
        speech.flite("hey jarvis, what time is it"),
        *[talk] * (30 * 16_000 // len(talk) + 1),
    )
    async with (
        open_test_kernel() as kernel,
        open_voice_pipeline(kernel, settings(tmp_path, barge_in="off")) as pipeline,
    ):
        turns = await pipeline.listen(speech.save("monologue.wav", said))
    [turn] = turns
    assert turn.metadata["transcript"] == "what time is it"
    assert turn.metadata["interrupted"] == "false"
