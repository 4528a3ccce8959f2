"""The voice pipeline: the stages as supervised agents on one kernel, and a way to feed it.

:func:`open_voice_pipeline` registers the speech output (``tts.speak``) and, unless someone
else provides them, the simulated home's ``lights.set`` and ``timer.set``; then it spawns the
stages as agents, each restarted by its supervisor if it fails:

* the VAD reads ``audio.mic`` and publishes ``vad`` (speech start and end) and
  ``audio.voiced`` (the voiced frames: speech recognition reads only where they are);
* the wake word reads ``audio.mic`` and publishes ``wake``;
* speech recognition reads ``audio.mic``, ``vad``, ``audio.voiced`` and ``wake`` and
  publishes ``transcript``;
* the wake stage turns its sessions' transcripts into ``user.query`` on ``query``;
* the assistant answers them (router, tools, ``tts.speak``) and publishes ``voice``;

plus barge-in, which cuts the answer short when someone speaks over it. Every stage passes a
stream's ``audio_end`` on once it has finished with that stream, so ``audio_end`` on ``voice``
means every turn of the stream is done: :meth:`VoicePipeline.listen` feeds a WAV file and
returns its turns that way, with no timing guesswork.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field, replace
from functools import partial
from pathlib import Path

import trio

from loomk import CapabilityProvider, Event, Kernel, QoS
from loomk.llm import understand
from loomk_audio.assistant import VOICE_TURN, BargeIn, BargeInMode, VoiceAssistant
from loomk_audio.events import AUDIO_END, VOICE_TOPIC, stream_of
from loomk_audio.grammar import command_grammar
from loomk_audio.home import Home
from loomk_audio.metrics import voice_families
from loomk_audio.sources import WavSource
from loomk_audio.stats import VoiceStats, VoiceStatsSnapshot
from loomk_audio.stt import SttAgent, SttSettings
from loomk_audio.tts import TtsProvider, TtsSettings
from loomk_audio.vad import VadAgent, VadSettings
from loomk_audio.wake import WakeAgent, WakeSettings

__all__ = ["VoicePipeline", "VoiceSettings", "open_voice_pipeline"]

TURN_TYPES = (VOICE_TURN, AUDIO_END)


@dataclass(frozen=True, slots=True)
class VoiceSettings:
    """Every stage's settings, and how barge-in and the home tools behave."""

    vad: VadSettings = field(default_factory=VadSettings)
    wake: WakeSettings = field(default_factory=WakeSettings)
    stt: SttSettings = field(default_factory=SttSettings)
    tts: TtsSettings = field(default_factory=TtsSettings)
    barge_in: BargeInMode = "speech"
    home: bool = True  # provide lights.set / timer.set when no one else does
    command_rescoring: bool = True  # the open model's text is checked against the commands
    prefix: str = "voice"  # agent ids: voice.vad, voice.wake, voice.stt, voice.assistant, ...


class VoicePipeline:
    """A running pipeline (made by :func:`open_voice_pipeline`)."""

    def __init__(
        self, kernel: Kernel, settings: VoiceSettings, tts: TtsProvider, home: Home | None
    ) -> None:
        self.kernel = kernel
        self.settings = settings
        self.tts = tts
        self.home = home
        self.voice_stats = VoiceStats()
        prefix = settings.prefix
        self.agent_ids = tuple(
            f"{prefix}.{stage}" for stage in ("vad", "wake", "stt", "assistant", "barge_in")
        )

    def stats(self) -> VoiceStatsSnapshot:
        """Turns, interruptions, barge-ins and per-stage latencies so far."""
        return self.voice_stats.snapshot()

    async def listen(self, path: str | Path, *, realtime: bool = False) -> list[Event]:
        """Play the WAV file at ``path`` into the pipeline as its own stream (paced in real
        time, or as fast as the stages take it) and return the ``voice.turn`` events it led
        to, once every stage has finished with it."""
        # read in a thread: a long recording is tens of megabytes
        source = await trio.to_thread.run_sync(partial(WavSource, path, realtime=realtime))
        turns: list[Event] = []
        async with self.kernel.bus.subscribe(
            VOICE_TOPIC, qos=QoS.BATCHED, event_types=TURN_TYPES
        ) as subscription:
            await source.run(self.kernel.bus)
            async for _topic, event in subscription:
                if stream_of(event) != source.stream:
                    continue
                if event.type == AUDIO_END:
                    break
                turns.append(event)
        return turns


@asynccontextmanager
async def open_voice_pipeline(
    kernel: Kernel, settings: VoiceSettings | None = None
) -> AsyncIterator[VoicePipeline]:
    """Start the pipeline on ``kernel`` (see the module notes); leaving stops its agents and
    unregisters what it registered. A missing package, model or engine fails here, naming
    what to install: the speech output before any agent starts, the stages' engines as the
    :class:`~loomk.AgentStartError` of the stage that loads them (its cause is the audio
    error); nothing is left running either way.

    Loom's transcript-phrase wake mode (``WakeSettings(mode="phrases")``) needs every
    utterance transcribed, so the speech recogniser's gate is opened for it."""
    settings = settings or VoiceSettings()
    if settings.wake.mode == "phrases" and settings.stt.gate == "wake":
        settings = replace(settings, stt=replace(settings.stt, gate="none"))
    stt = settings.stt
    if (
        settings.command_rescoring
        and stt.engine == "pocketsphinx"
        and not stt.restricted
        and stt.rescore_grammar is None
    ):
        grammar = await trio.to_thread.run_sync(command_grammar)
        settings = replace(settings, stt=replace(stt, rescore_grammar=grammar))
    # the local model's sentence engine loads on first use (~150 ms): not on the event loop
    await trio.to_thread.run_sync(understand, "what time is it")
    # a worker thread: making the sink opens PortAudio (it scans the sound devices), and
    # flite's engine lists its voices with a subprocess
    tts = await trio.to_thread.run_sync(TtsProvider, kernel.bus, settings.tts)
    registered: list[CapabilityProvider] = []  # what this call registered, to unregister
    started: list[str] = []  # the agents this call started, to stop
    pipeline = VoicePipeline(kernel, settings, tts, None)
    try:
        providers: list[CapabilityProvider] = [tts]
        if settings.home:
            home = pipeline.home = Home(kernel)
            providers += [
                p for p in home.providers() if kernel.broker.resolve(p.descriptor.name) is None
            ]
        vad_id, wake_id, stt_id, assistant_id, barge_id = pipeline.agent_ids
        agents = [
            VadAgent(vad_id, settings=settings.vad),
            WakeAgent(wake_id, settings=settings.wake),
            SttAgent(stt_id, settings=settings.stt),
            VoiceAssistant(
                assistant_id, stats=pipeline.voice_stats, query_topic=settings.wake.query_topic
            ),
            BargeIn(
                barge_id,
                output=tts,
                mode=settings.barge_in,
                stats=pipeline.voice_stats,
                vad_topic=settings.vad.vad_topic,
                wake_topic=settings.wake.wake_topic,
            ),
        ]
        for provider in providers:
            kernel.broker.register(provider)
            registered.append(provider)
        for agent in agents:  # one by one: only what this pipeline started is stopped
            await kernel.spawn(agent)
            started.append(agent.agent_id)
        remove_metrics = kernel.metrics.register(
            f"voice:{settings.prefix}", lambda: voice_families(pipeline.stats(), settings.prefix)
        )
        try:
            yield pipeline
        finally:
            remove_metrics()
    finally:
        try:
            for agent_id in reversed(started):
                if kernel.directory.get(agent_id) is not None and not kernel.closed:
                    await kernel.stop_agent(agent_id)
            for provider in registered:
                descriptor = provider.descriptor
                kernel.broker.unregister(descriptor.name, descriptor.version)
        finally:
            tts.close()  # releases a sound device's PortAudio
